//! Naive, obviously-correct models of the token-tree algorithms (docs/design.md#trees, #greedy).
//!
//! Nothing here calls fastdec-core code: every model works from plain `parents` / `tokens`
//! vectors by walking parent pointers, scanning lists and enumerating, so that the property
//! tests can compare the optimised implementation against it.

#![allow(dead_code)] // each test binary uses a different subset

use std::cmp::Ordering;
use std::collections::HashSet;

/// The largest token id (`i32::MAX`), restated so that the model does not depend on the crate.
pub const MAX_TOKEN: u32 = 2_147_483_647;

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// Node ids on the path root -> `i`, found by walking parent pointers.
pub fn node_path(parents: &[i32], i: usize) -> Vec<usize> {
    let mut path = vec![i];
    let mut j = i;
    while parents[j] >= 0 {
        j = parents[j] as usize;
        path.push(j);
    }
    path.reverse();
    path
}

/// Depth of every node = length of its root path - 1.
pub fn depths(parents: &[i32]) -> Vec<i32> {
    (0..parents.len())
        .map(|i| node_path(parents, i).len() as i32 - 1)
        .collect()
}

/// Children of every node, ascending (nodes are visited in ascending order).
pub fn children_lists(parents: &[i32]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); parents.len()];
    for (i, &p) in parents.iter().enumerate().skip(1) {
        out[p as usize].push(i);
    }
    out
}

/// `A[i][j]`: `j` lies on the root path of `i` (inclusive).
pub fn ancestor_matrix(parents: &[i32]) -> Vec<Vec<bool>> {
    let n = parents.len();
    (0..n)
        .map(|i| {
            let mut row = vec![false; n];
            for j in node_path(parents, i) {
                row[j] = true;
            }
            row
        })
        .collect()
}

/// Nodes without children, ascending.
pub fn leaves(parents: &[i32]) -> Vec<usize> {
    children_lists(parents)
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_empty())
        .map(|(i, _)| i)
        .collect()
}

/// Token sequence on the root path of `i` (root token first).
pub fn token_path(tokens: &[u32], parents: &[i32], i: usize) -> Vec<u32> {
    node_path(parents, i)
        .into_iter()
        .map(|j| tokens[j])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The error a constructor must report, reduced to the facts the model can predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Empty,
    TooManyNodes,
    LengthMismatch {
        expected: usize,
        got: usize,
    },
    RootParent {
        parent: i64,
    },
    ParentNotBefore {
        node: usize,
        parent: i64,
    },
    DuplicateSibling {
        parent: usize,
        first: usize,
        second: usize,
        token: u32,
    },
    InvalidValue {
        index: usize,
    },
    InvalidArgument,
    IndexOutOfRange {
        index: i64,
    },
}

/// The first problem of a parent array, checked in the documented order.
pub fn validate_parents(parents: &[i32], max_nodes: usize) -> Option<Expected> {
    if parents.is_empty() {
        return Some(Expected::Empty);
    }
    if parents.len() > max_nodes {
        return Some(Expected::TooManyNodes);
    }
    if parents[0] != -1 {
        return Some(Expected::RootParent {
            parent: i64::from(parents[0]),
        });
    }
    for (node, &p) in parents.iter().enumerate().skip(1) {
        if p < 0 || i64::from(p) >= node as i64 {
            return Some(Expected::ParentNotBefore {
                node,
                parent: i64::from(p),
            });
        }
    }
    None
}

/// The first sibling pair with equal tokens: lowest parent, then the lowest later sibling that
/// repeats an earlier one, paired with the earliest sibling carrying its token.
pub fn first_duplicate_sibling(tokens: &[u32], parents: &[i32]) -> Option<Expected> {
    let children = children_lists(parents);
    for (parent, kids) in children.iter().enumerate() {
        for (k, &second) in kids.iter().enumerate() {
            if let Some(&first) = kids[..k].iter().find(|&&c| tokens[c] == tokens[second]) {
                return Some(Expected::DuplicateSibling {
                    parent,
                    first,
                    second,
                    token: tokens[second],
                });
            }
        }
    }
    None
}

/// Whether some parent has two children with the same token.
pub fn has_duplicate_siblings(tokens: &[u32], parents: &[i32]) -> bool {
    let mut seen = HashSet::new();
    (1..tokens.len()).any(|i| !seen.insert((parents[i], tokens[i])))
}

/// `TokenTree::new(tokens, parents)`: lengths, parents, token range, then sibling tokens.
pub fn validate_tree(tokens: &[u32], parents: &[i32], max_nodes: usize) -> Option<Expected> {
    if tokens.len() != parents.len() {
        return Some(Expected::LengthMismatch {
            expected: parents.len(),
            got: tokens.len(),
        });
    }
    if let Some(e) = validate_parents(parents, max_nodes) {
        return Some(e);
    }
    if let Some(index) = tokens.iter().position(|&t| t > MAX_TOKEN) {
        return Some(Expected::InvalidValue { index });
    }
    first_duplicate_sibling(tokens, parents)
}

// ---------------------------------------------------------------------------------------------
// Greedy verification (Medusa/EAGLE path form, docs/design.md#greedy)
// ---------------------------------------------------------------------------------------------

/// Per root-to-leaf path, the number of accepted drafts is the cumulative product of
/// `token[path[t + 1]] == argmax[path[t]]`; the longest wins and the bonus is the argmax at the
/// last accepted node. Also asserts that every maximal row accepts the same nodes.
pub fn verify_greedy(tokens: &[u32], parents: &[i32], argmax: &[i32]) -> (Vec<i32>, i32) {
    let mut best: Option<Vec<usize>> = None;
    for leaf in leaves(parents) {
        let path = node_path(parents, leaf);
        let mut acc = 0;
        while acc + 1 < path.len()
            && i64::from(tokens[path[acc + 1]]) == i64::from(argmax[path[acc]])
        {
            acc += 1;
        }
        let accepted = path[..=acc].to_vec();
        match &best {
            Some(b) if b.len() > accepted.len() => {}
            Some(b) if b.len() == accepted.len() => {
                assert_eq!(
                    b, &accepted,
                    "two maximal rows disagree: siblings are not distinct"
                );
            }
            _ => best = Some(accepted),
        }
    }
    let accepted = best.expect("a tree has at least one leaf");
    let bonus = argmax[*accepted.last().unwrap()];
    (accepted.into_iter().map(|i| i as i32).collect(), bonus)
}

// ---------------------------------------------------------------------------------------------
// Tries and best-first selection
// ---------------------------------------------------------------------------------------------

/// A trie stored as a list of token paths (root token first) with linear-scan lookup; nodes are
/// numbered in first-insertion order.
#[derive(Debug, Clone, PartialEq)]
pub struct NaiveTrie {
    pub paths: Vec<Vec<u32>>,
    pub parents: Vec<i32>,
    pub scores: Vec<f32>,
}

impl NaiveTrie {
    pub fn new(root: u32, root_score: f32) -> Self {
        NaiveTrie {
            paths: vec![vec![root]],
            parents: vec![-1],
            scores: vec![root_score],
        }
    }

    /// Inserts `path` (its proper prefix must be present) or combines `score` into it.
    pub fn insert(&mut self, path: &[u32], score: f32, combine: fn(f32, f32) -> f32) -> usize {
        if let Some(k) = self.paths.iter().position(|p| p == path) {
            self.scores[k] = combine(self.scores[k], score);
            return k;
        }
        let prefix = &path[..path.len() - 1];
        let parent = self
            .paths
            .iter()
            .position(|p| p == prefix)
            .expect("prefix inserted first");
        self.paths.push(path.to_vec());
        self.parents.push(parent as i32);
        self.scores.push(score);
        self.paths.len() - 1
    }

    pub fn tokens(&self) -> Vec<u32> {
        self.paths.iter().map(|p| *p.last().unwrap()).collect()
    }
}

/// Trie of every root-to-node token path of `tokens`/`parents`, in node order.
pub fn trie_of(tokens: &[u32], parents: &[i32]) -> NaiveTrie {
    let mut trie = NaiveTrie::new(tokens[0], 0.0);
    for i in 1..tokens.len() {
        trie.insert(&token_path(tokens, parents, i), 0.0, |a, _| a);
    }
    trie
}

/// `a` ranks above `b`: higher score (IEEE total order), then lower id.
fn ranks_above(a: (f32, usize), b: (f32, usize)) -> bool {
    match a.0.total_cmp(&b.0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.1 < b.1,
    }
}

/// Best-first selection by brute force: keep the root, then repeatedly scan all nodes for the
/// best one (score desc, id asc) whose parent is kept and whose depth is allowed.
pub fn best_first_keep(
    parents: &[i32],
    scores: &[f32],
    budget: usize,
    max_depth: Option<usize>,
) -> Vec<bool> {
    let n = parents.len();
    let depth = depths(parents);
    let mut keep = vec![false; n];
    keep[0] = true;
    let mut kept = 1;
    while kept < budget {
        let mut best: Option<usize> = None;
        for i in 1..n {
            let allowed = max_depth.is_none_or(|d| depth[i] as usize <= d);
            if !keep[i]
                && keep[parents[i] as usize]
                && allowed
                && best.is_none_or(|b| ranks_above((scores[i], i), (scores[b], b)))
            {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        keep[b] = true;
        kept += 1;
    }
    keep
}

/// The kept nodes renumbered in their original order: `(tokens, parents, kept old ids)`.
pub fn subtree(tokens: &[u32], parents: &[i32], keep: &[bool]) -> (Vec<u32>, Vec<i32>, Vec<usize>) {
    let old: Vec<usize> = (0..tokens.len()).filter(|&i| keep[i]).collect();
    let new_parents = old
        .iter()
        .map(|&i| {
            if parents[i] < 0 {
                -1
            } else {
                old.iter().position(|&o| o as i32 == parents[i]).unwrap() as i32
            }
        })
        .collect();
    (old.iter().map(|&i| tokens[i]).collect(), new_parents, old)
}

/// A drafter: the children `(token, edge score)` of a token path.
pub type ExpandFn<'a> = dyn Fn(&[u32]) -> Vec<(u32, f32)> + 'a;

/// How edge scores become path scores (mirrors `ScoreMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    LogProb,
    Prob,
    Path,
}

impl Mode {
    pub fn root(self) -> f32 {
        match self {
            Mode::LogProb | Mode::Path => 0.0,
            Mode::Prob => 1.0,
        }
    }
    pub fn extend(self, parent: f32, edge: f32) -> f32 {
        match self {
            Mode::LogProb => parent + edge,
            Mode::Prob => parent * edge,
            Mode::Path => edge,
        }
    }
}

/// Best-first expansion by brute force: a list of candidates `(parent, token, score, used)`;
/// each step scans it for the best unused one (score desc, age asc), drops it if its parent
/// already has a child with that token, otherwise adds it and expands it.
pub fn best_first_expand(
    root: u32,
    budget: usize,
    max_depth: usize,
    mode: Mode,
    expand: &ExpandFn<'_>,
) -> (Vec<u32>, Vec<i32>, Vec<f32>) {
    let mut tokens = vec![root];
    let mut parents = vec![-1i32];
    let mut scores = vec![mode.root()];
    let mut cands: Vec<(usize, u32, f32, bool)> = Vec::new();
    let mut node = 0;
    while tokens.len() < budget {
        if node_path(&parents, node).len() - 1 < max_depth {
            for (token, edge) in expand(&token_path(&tokens, &parents, node)) {
                cands.push((node, token, mode.extend(scores[node], edge), false));
            }
        }
        let chosen = loop {
            let mut best: Option<usize> = None;
            for (k, c) in cands.iter().enumerate() {
                if !c.3 && best.is_none_or(|b| ranks_above((c.2, k), (cands[b].2, b))) {
                    best = Some(k);
                }
            }
            let Some(b) = best else { break None };
            cands[b].3 = true;
            let (parent, token, score, _) = cands[b];
            let exists =
                (0..tokens.len()).any(|j| parents[j] == parent as i32 && tokens[j] == token);
            if !exists {
                break Some((parent, token, score));
            }
        };
        let Some((parent, token, score)) = chosen else {
            break;
        };
        tokens.push(token);
        parents.push(parent as i32);
        scores.push(score);
        node = tokens.len() - 1;
    }
    (tokens, parents, scores)
}

/// Every node the expansion function can reach within `max_depth`, as `(token path, path
/// score)`, root excluded. Repeated tokens among one node's candidates collapse to the best
/// score (the first to be popped).
pub fn expansion_universe(
    root: u32,
    max_depth: usize,
    mode: Mode,
    expand: &ExpandFn<'_>,
) -> Vec<(Vec<u32>, f32)> {
    let mut out = Vec::new();
    let mut stack = vec![(vec![root], mode.root())];
    while let Some((path, score)) = stack.pop() {
        if path.len() > max_depth {
            continue;
        }
        let mut kids: Vec<(u32, f32)> = Vec::new();
        for (token, edge) in expand(&path) {
            let s = mode.extend(score, edge);
            match kids.iter_mut().find(|k| k.0 == token) {
                Some(k) => k.1 = if s.total_cmp(&k.1).is_gt() { s } else { k.1 },
                None => kids.push((token, s)),
            }
        }
        for (token, s) in kids {
            let mut child = path.clone();
            child.push(token);
            out.push((child.clone(), s));
            stack.push((child, s));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rank templates and Sequoia's objective (docs/design.md#trees)
// ---------------------------------------------------------------------------------------------

/// (length, lexicographic) order of rank paths.
pub fn path_order(a: &[u32], b: &[u32]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Expected accepted drafts: sum over paths of the product of `p(edge depth, rank)`; the edge
/// into depth `t + 1` leaves a parent at depth `t`.
pub fn expected_accepted(paths: &[Vec<u32>], p: &dyn Fn(usize, usize) -> f64) -> f64 {
    paths
        .iter()
        .map(|path| {
            path.iter()
                .enumerate()
                .map(|(t, &r)| p(t, r as usize))
                .product::<f64>()
        })
        .sum()
}

/// Depth-first enumeration of prefix-closed subsets of a (length, lex)-ordered path universe.
struct Search<'a> {
    reach: &'a [f64],
    parent: &'a [Option<usize>],
    limit: usize,
    chosen: Vec<bool>,
    best: f64,
    best_set: Vec<bool>,
}
impl Search<'_> {
    fn go(&mut self, idx: usize, count: usize, value: f64) {
        if value > self.best {
            self.best = value;
            self.best_set.clone_from(&self.chosen);
        }
        if count == self.limit || idx == self.reach.len() {
            return;
        }
        if self.parent[idx].is_none_or(|p| self.chosen[p]) {
            self.chosen[idx] = true;
            self.go(idx + 1, count + 1, value + self.reach[idx]);
            self.chosen[idx] = false;
        }
        self.go(idx + 1, count, value);
    }
}

/// Brute-force maximum of [`expected_accepted`] over every prefix-closed set of rank paths with
/// at most `budget - 1` paths, lengths `<= max_depth` and ranks `< ranks` (any subset of ranks,
/// not only contiguous ones). Returns the value and one maximiser.
pub fn best_rank_tree(
    budget: usize,
    max_depth: usize,
    ranks: usize,
    p: &dyn Fn(usize, usize) -> f64,
) -> (f64, Vec<Vec<u32>>) {
    // Universe of paths in (length, lex) order, so every path comes after its prefix.
    let mut universe: Vec<Vec<u32>> = Vec::new();
    let mut level: Vec<Vec<u32>> = vec![Vec::new()];
    for _ in 0..max_depth {
        let mut next = Vec::new();
        for path in &level {
            for r in 0..ranks as u32 {
                let mut q = path.clone();
                q.push(r);
                next.push(q);
            }
        }
        universe.extend(next.iter().cloned());
        level = next;
    }
    let reach: Vec<f64> = universe
        .iter()
        .map(|q| expected_accepted(std::slice::from_ref(q), p))
        .collect();
    let parent: Vec<Option<usize>> = universe
        .iter()
        .map(|q| {
            if q.len() == 1 {
                None
            } else {
                universe.iter().position(|u| u[..] == q[..q.len() - 1])
            }
        })
        .collect();

    let mut search = Search {
        reach: &reach,
        parent: &parent,
        limit: budget.saturating_sub(1),
        chosen: vec![false; universe.len()],
        best: 0.0,
        best_set: vec![false; universe.len()],
    };
    search.go(0, 0, 0.0);
    let set = universe
        .iter()
        .zip(&search.best_set)
        .filter(|(_, &c)| c)
        .map(|(q, _)| q.clone())
        .collect();
    (search.best, set)
}
