//! Building trees by merging and selecting: a trie builder (merge equal prefixes), tree fusion,
//! and best-first selection under a node budget (EAGLE-2 rerank, arXiv `2406.16858`; `DySpec`,
//! arXiv `2410.11744`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use super::shape::TreeShape;
use super::token_tree::TokenTree;
use crate::{Error, Result, TokenId, MAX_NODES};

/// How scores of nodes merged into one are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreCombine {
    /// Add them (votes, counts, probabilities of disjoint events).
    Sum,
    /// Keep the largest.
    Max,
}

impl ScoreCombine {
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            ScoreCombine::Sum => a + b,
            ScoreCombine::Max => a.max(b),
        }
    }
}

/// How per-edge scores become the path score that best-first selection ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreMode {
    /// Edge scores are log-probabilities; a path's score is their sum (root 0).
    LogProb,
    /// Edge scores are probabilities; a path's score is their product (root 1).
    Prob,
    /// Scores already are path scores.
    Path,
}

impl ScoreMode {
    /// Parses `logprob`, `prob` or `path`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "logprob" => Ok(ScoreMode::LogProb),
            "prob" => Ok(ScoreMode::Prob),
            "path" => Ok(ScoreMode::Path),
            _ => Err(Error::arg(
                "score_mode",
                name,
                "one of 'logprob', 'prob', 'path'",
            )),
        }
    }

    fn root(self, given: f32) -> f32 {
        match self {
            ScoreMode::LogProb => 0.0,
            ScoreMode::Prob => 1.0,
            ScoreMode::Path => given,
        }
    }

    /// The child's path score. Saturates at +-`f32::MAX`, so finite inputs never give an
    /// infinite (or, combined later, NaN) score. Computed in f64 and rounded once: since f64
    /// carries more than 2 * 24 + 2 mantissa bits, the result equals the f32 operation whenever
    /// it does not overflow.
    fn extend(self, parent: f32, edge: f32) -> f32 {
        let (p, e) = (f64::from(parent), f64::from(edge));
        let v = match self {
            ScoreMode::LogProb => p + e,
            ScoreMode::Prob => p * e,
            ScoreMode::Path => e,
        };
        v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32
    }
}

/// Incremental trie over token paths from one root: equal prefixes share nodes. Nodes are
/// numbered in insertion order, which is parents-first.
pub(crate) struct TrieBuilder {
    tokens: Vec<TokenId>,
    parents: Vec<i32>,
    scores: Vec<f32>,
    child_of: HashMap<(u32, TokenId), u32>,
    combine: ScoreCombine,
}

impl TrieBuilder {
    pub(crate) fn new(root: TokenId, root_score: f32, combine: ScoreCombine) -> Self {
        TrieBuilder {
            tokens: vec![root],
            parents: vec![-1],
            scores: vec![root_score],
            child_of: HashMap::default(),
            combine,
        }
    }

    pub(crate) fn add_root_score(&mut self, score: f32) {
        self.scores[0] = self.combine.apply(self.scores[0], score);
    }

    /// The child of `parent` with `token`, created if missing; `score` is combined in.
    pub(crate) fn child(&mut self, parent: u32, token: TokenId, score: f32) -> Result<u32> {
        if let Some(&c) = self.child_of.get(&(parent, token)) {
            self.scores[c as usize] = self.combine.apply(self.scores[c as usize], score);
            return Ok(c);
        }
        let id = self.tokens.len();
        if id >= MAX_NODES {
            return Err(Error::TooManyNodes {
                what: "merged tree",
                num_nodes: id + 1,
                max: MAX_NODES,
            });
        }
        self.tokens.push(token);
        self.parents.push(parent as i32);
        self.scores.push(score);
        self.child_of.insert((parent, token), id as u32);
        Ok(id as u32)
    }

    pub(crate) fn finish(self) -> TokenTree {
        TokenTree {
            shape: Arc::new(TreeShape::from_valid_parents(self.parents)),
            tokens: self.tokens,
            scores: Some(self.scores),
        }
    }
}

/// Fuses trees that share a root token into one: equal prefixes merge, scores combine (trees
/// without scores count 1.0 per node, so `Sum` counts votes), then the result is pruned to
/// `budget` nodes best-first by score if given.
///
/// # Errors
/// [`Error::Empty`], [`Error::InvalidArgument`] for differing roots or a zero budget,
/// [`Error::TooManyNodes`].
pub fn fuse(
    trees: &[&TokenTree],
    combine: ScoreCombine,
    budget: Option<usize>,
) -> Result<TokenTree> {
    let Some(first) = trees.first() else {
        return Err(Error::Empty { what: "trees" });
    };
    if budget == Some(0) {
        return Err(Error::arg("budget", 0, "must be >= 1 (the root)"));
    }
    let root = first.root_token();
    let score_of = |t: &TokenTree, i: usize| t.scores().map_or(1.0, |s| s[i]);
    let mut trie = TrieBuilder::new(root, score_of(first, 0), combine);
    let mut map: Vec<u32> = Vec::new();
    for (k, tree) in trees.iter().enumerate() {
        if tree.root_token() != root {
            return Err(Error::arg(
                "trees",
                format!("[.., tree {k} with root token {}, ..]", tree.root_token()),
                format!("all trees must share the root token {root} of tree 0"),
            ));
        }
        if k > 0 {
            trie.add_root_score(score_of(tree, 0));
        }
        map.clear();
        map.push(0);
        for i in 1..tree.num_nodes() {
            let parent = map[tree.parents()[i] as usize];
            map.push(trie.child(parent, tree.tokens()[i], score_of(tree, i))?);
        }
    }
    let fused = trie.finish();
    match budget {
        Some(b) if b < fused.num_nodes() => fused.best_first_subtree(b, None),
        _ => Ok(fused),
    }
}

/// Max-heap entry ordered by score, then by lower id (earlier candidates win ties).
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f32,
    id: u32,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl TokenTree {
    /// Path scores from per-edge scores (`scores[i]` = score of the edge into node `i`).
    ///
    /// # Errors
    /// [`Error::Empty`] if the tree has no scores.
    pub fn with_path_scores(self, mode: ScoreMode) -> Result<TokenTree> {
        let Some(edge) = self.scores.as_deref() else {
            return Err(Error::Empty { what: "scores" });
        };
        let parents = self.parents();
        let mut path = Vec::with_capacity(edge.len());
        path.push(mode.root(edge[0]));
        for i in 1..edge.len() {
            path.push(mode.extend(path[parents[i] as usize], edge[i]));
        }
        self.with_scores(path)
    }

    /// The best `budget` nodes chosen best-first by score: start from the root, repeatedly take
    /// the highest-scoring child of an already chosen node (ties: lower node id). The result is
    /// ancestor-closed and keeps the original node order. Without scores every node ties, so the
    /// lowest node ids win (breadth-first order for level-ordered trees such as templates).
    /// `max_depth` drops deeper nodes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero budget.
    pub fn best_first_subtree(&self, budget: usize, max_depth: Option<usize>) -> Result<TokenTree> {
        if budget == 0 {
            return Err(Error::arg("budget", 0, "must be >= 1 (the root)"));
        }
        let n = self.num_nodes();
        let depth = self.depth();
        let max_depth = max_depth.unwrap_or(usize::MAX);
        let score = |i: usize| self.scores.as_ref().map_or(0.0, |s| s[i]);
        let mut keep = vec![false; n];
        keep[0] = true;
        let mut kept = 1;
        let mut heap = BinaryHeap::new();
        let push_children = |heap: &mut BinaryHeap<Ranked>, node: usize| {
            if (depth[node] as usize) < max_depth {
                for c in self.shape.children(node) {
                    heap.push(Ranked {
                        score: score(c),
                        id: c as u32,
                    });
                }
            }
        };
        push_children(&mut heap, 0);
        while kept < budget {
            let Some(Ranked { id, .. }) = heap.pop() else {
                break;
            };
            keep[id as usize] = true;
            kept += 1;
            push_children(&mut heap, id as usize);
        }
        Ok(self.subtree(&keep))
    }

    /// The nodes with `keep[i]` (ancestor-closed), renumbered in their original order.
    pub(crate) fn subtree(&self, keep: &[bool]) -> TokenTree {
        let mut new_id = vec![-1i32; self.num_nodes()];
        let mut tokens = Vec::new();
        let mut parents = Vec::new();
        let mut scores = Vec::new();
        for i in (0..self.num_nodes()).filter(|&i| keep[i]) {
            new_id[i] = tokens.len() as i32;
            tokens.push(self.tokens[i]);
            let p = self.parents()[i];
            parents.push(if p < 0 { -1 } else { new_id[p as usize] });
            if let Some(s) = &self.scores {
                scores.push(s[i]);
            }
        }
        TokenTree {
            shape: Arc::new(TreeShape::from_valid_parents(parents)),
            tokens,
            scores: self.scores.as_ref().map(|_| scores),
        }
    }

    /// Best-first expansion (DySpec): repeatedly add the best-scoring frontier candidate, then ask
    /// `expand(path_tokens, out)` for that node's children `(token, edge score)`. Stops at
    /// `budget` nodes. Candidates repeating an existing sibling's token are skipped. Node scores
    /// of the result are path scores.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero or too large budget or a NaN score,
    /// [`Error::InvalidValue`] for a token above `MAX_TOKEN_ID`.
    pub fn best_first_expand<F>(
        root: TokenId,
        budget: usize,
        max_depth: usize,
        mode: ScoreMode,
        mut expand: F,
    ) -> Result<TokenTree>
    where
        F: FnMut(&[TokenId], &mut Vec<(TokenId, f32)>) -> Result<()>,
    {
        if budget == 0 || budget > MAX_NODES {
            return Err(Error::arg(
                "budget",
                budget,
                format!("must be in [1, {MAX_NODES}]"),
            ));
        }
        let mut trie = TrieBuilder::new(root, mode.root(0.0), ScoreCombine::Max);
        let mut depth = vec![0usize];
        // Candidates: (parent node, token, path score); the heap ranks them by score then age.
        let mut candidates: Vec<(u32, TokenId, f32)> = Vec::new();
        let mut heap = BinaryHeap::new();
        let mut path = vec![root];
        let mut out = Vec::new();
        let mut node = 0u32;
        loop {
            if trie.tokens.len() >= budget {
                break;
            }
            if depth[node as usize] < max_depth {
                out.clear();
                expand(&path, &mut out)?;
                let parent_score = trie.scores[node as usize];
                for &(token, edge) in &out {
                    if !edge.is_finite() {
                        return Err(Error::arg("score", edge, "expansion scores must be finite"));
                    }
                    if token > crate::MAX_TOKEN_ID {
                        return Err(Error::InvalidValue {
                            what: "token",
                            index: candidates.len(),
                            value: token.to_string(),
                            expected: "token ids must be in [0, 2147483647]",
                        });
                    }
                    let score = mode.extend(parent_score, edge);
                    heap.push(Ranked {
                        score,
                        id: candidates.len() as u32,
                    });
                    candidates.push((node, token, score));
                }
            }
            // Pop until a candidate that is not a duplicate sibling.
            let next = loop {
                let Some(Ranked { id, .. }) = heap.pop() else {
                    break None;
                };
                let (parent, token, score) = candidates[id as usize];
                if !trie.child_of.contains_key(&(parent, token)) {
                    break Some((parent, token, score));
                }
            };
            let Some((parent, token, score)) = next else {
                break;
            };
            node = trie.child(parent, token, score)?;
            depth.push(depth[parent as usize] + 1);
            path.clear();
            let mut j = node as i32;
            while j >= 0 {
                path.push(trie.tokens[j as usize]);
                j = trie.parents[j as usize];
            }
            path.reverse();
        }
        Ok(trie.finish())
    }
}
