//! Static tree templates: trees of child *ranks* (Medusa "choices", Token Recycling's "2.2.2")
//! that become token trees by filling each node with a candidate token.

use std::sync::Arc;

use super::build::{ScoreCombine, TrieBuilder};
use super::shape::TreeShape;
use super::token_tree::{check_token_ids, first_duplicate_sibling, TokenTree};
use crate::{Error, Result, TokenId, MAX_NODES};

/// A tree shape whose nodes carry the rank of the candidate they take from their parent's list.
/// Nodes are ordered by (depth, rank path), as Medusa sorts its choices.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeTemplate {
    shape: Arc<TreeShape>,
    ranks: Vec<u32>,
}

/// Token Recycling's "2.2.2" template (Luo et al. 2024, arXiv 2408.08696): 80 drafts in 6 levels
/// of 8/21/25/15/8/3 nodes, each written as its path of ranks from the root.
const TOKEN_RECYCLING_222: &[&[u32]] = &[
    &[0],
    &[1],
    &[2],
    &[3],
    &[4],
    &[5],
    &[6],
    &[7],
    &[0, 0],
    &[0, 1],
    &[0, 2],
    &[0, 3],
    &[0, 4],
    &[0, 5],
    &[0, 6],
    &[0, 7],
    &[1, 0],
    &[1, 1],
    &[1, 2],
    &[1, 3],
    &[2, 0],
    &[2, 1],
    &[2, 2],
    &[3, 0],
    &[3, 1],
    &[4, 0],
    &[5, 0],
    &[6, 0],
    &[7, 0],
    &[0, 0, 0],
    &[0, 0, 1],
    &[0, 0, 2],
    &[0, 0, 3],
    &[0, 0, 4],
    &[0, 0, 5],
    &[0, 0, 6],
    &[0, 0, 7],
    &[0, 1, 0],
    &[0, 1, 1],
    &[0, 1, 2],
    &[0, 2, 0],
    &[0, 2, 1],
    &[0, 3, 0],
    &[0, 4, 0],
    &[0, 5, 0],
    &[0, 6, 0],
    &[0, 7, 0],
    &[1, 0, 0],
    &[1, 0, 1],
    &[1, 1, 0],
    &[2, 0, 0],
    &[3, 0, 0],
    &[4, 0, 0],
    &[5, 0, 0],
    &[0, 0, 0, 0],
    &[0, 0, 0, 1],
    &[0, 0, 0, 2],
    &[0, 0, 0, 3],
    &[0, 0, 0, 4],
    &[0, 0, 1, 0],
    &[0, 0, 1, 1],
    &[0, 0, 2, 0],
    &[0, 0, 3, 0],
    &[0, 0, 4, 0],
    &[0, 1, 0, 0],
    &[0, 2, 0, 0],
    &[1, 0, 0, 0],
    &[2, 0, 0, 0],
    &[3, 0, 0, 0],
    &[0, 0, 0, 0, 0],
    &[0, 0, 0, 0, 1],
    &[0, 0, 0, 0, 2],
    &[0, 0, 0, 1, 0],
    &[0, 0, 0, 2, 0],
    &[0, 0, 1, 0, 0],
    &[0, 1, 0, 0, 0],
    &[1, 0, 0, 0, 0],
    &[0, 0, 0, 0, 0, 0],
    &[0, 0, 0, 0, 0, 1],
    &[0, 0, 0, 1, 0, 0],
];

impl TreeTemplate {
    /// Builds a template from rank paths (the root is implicit: do not list it). Paths are sorted
    /// by (length, ranks); every proper prefix of a path must be listed too.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty, duplicate or orphan path; [`Error::TooManyNodes`].
    pub fn from_paths<P: AsRef<[u32]>>(paths: &[P]) -> Result<Self> {
        if paths.len() >= MAX_NODES {
            return Err(Error::TooManyNodes {
                what: "template",
                num_nodes: paths.len() + 1,
                max: MAX_NODES,
            });
        }
        let mut sorted: Vec<&[u32]> = paths.iter().map(AsRef::as_ref).collect();
        if let Some(i) = sorted.iter().position(|p| p.is_empty()) {
            return Err(Error::arg(
                "paths",
                format!("[.., {i}: []]"),
                "the root is implicit; paths must not be empty",
            ));
        }
        sorted.sort_unstable_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::arg("paths", format!("{:?}", w[1]), "listed twice"));
        }
        let mut parents = vec![-1i32];
        let mut ranks = vec![0u32];
        for (k, path) in sorted.iter().enumerate() {
            let prefix = &path[..path.len() - 1];
            let parent = if prefix.is_empty() {
                0
            } else {
                // Earlier (shorter) paths hold the prefix; nodes are 1 + sorted index.
                match sorted[..k]
                    .binary_search_by(|q| q.len().cmp(&prefix.len()).then_with(|| (*q).cmp(prefix)))
                {
                    Ok(j) => j + 1,
                    Err(_) => {
                        return Err(Error::arg(
                            "paths",
                            format!("{path:?}"),
                            format!("its parent path {prefix:?} is not listed"),
                        ))
                    }
                }
            };
            parents.push(parent as i32);
            ranks.push(path[path.len() - 1]);
        }
        Ok(TreeTemplate {
            shape: Arc::new(TreeShape::from_valid_parents(parents)),
            ranks,
        })
    }

    /// Token Recycling's 81-node (root + 80) "2.2.2" template.
    pub fn token_recycling() -> Self {
        Self::from_paths(TOKEN_RECYCLING_222).expect("the built-in template is valid")
    }

    /// Number of nodes, root included.
    pub fn num_nodes(&self) -> usize {
        self.ranks.len()
    }
    /// The shared shape.
    pub fn shape(&self) -> &Arc<TreeShape> {
        &self.shape
    }
    /// Rank of every node among its parent's candidates (0 for the root).
    pub fn ranks(&self) -> &[u32] {
        &self.ranks
    }
    /// Number of candidates per node the template needs (`max rank + 1`).
    pub fn num_ranks(&self) -> usize {
        self.ranks
            .iter()
            .skip(1)
            .max()
            .map_or(0, |&r| r as usize + 1)
    }

    /// The rank path of every non-root node, in node order.
    pub fn paths(&self) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = vec![Vec::new()];
        for i in 1..self.num_nodes() {
            let mut p = out[self.shape.parents()[i] as usize].clone();
            p.push(self.ranks[i]);
            out.push(p);
        }
        out.remove(0);
        out
    }

    /// A token tree from one token per template node (`tokens[0]` is the root). Shares the
    /// template's shape, so derived buffers are computed once per template. If siblings repeat
    /// a token (e.g. a drafter table row that is not filled yet), the repeats merge with their
    /// earlier sibling (subtrees merged, earlier node order kept) and the tree gets its own shape.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] or an out-of-range token.
    pub fn fill(&self, tokens: Vec<TokenId>) -> Result<TokenTree> {
        if tokens.len() != self.num_nodes() {
            return Err(Error::LengthMismatch {
                what: "tokens",
                expected: self.num_nodes(),
                got: tokens.len(),
            });
        }
        if first_duplicate_sibling(&self.shape, &tokens).is_none() {
            check_token_ids(&tokens, "token")?;
            return Ok(TokenTree {
                shape: Arc::clone(&self.shape),
                tokens,
                scores: None,
            });
        }
        let mut trie = TrieBuilder::new(tokens[0], 0.0, ScoreCombine::Max);
        let mut map = vec![0u32; tokens.len()];
        for i in 1..tokens.len() {
            map[i] = trie.child(map[self.shape.parents()[i] as usize], tokens[i], 0.0)?;
        }
        let merged = trie.finish();
        TokenTree::from_shape(Arc::clone(merged.shape()), merged.tokens)
    }

    /// Medusa-style fill: the node at depth `d` with rank `r` takes `candidates[(d - 1) * k + r]`,
    /// where `candidates` is `[max_depth, k]` row-major (one candidate list per depth).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `k` is smaller than the template needs or `candidates` has
    /// the wrong size; token errors as for [`TreeTemplate::fill`].
    pub fn fill_ranked(
        &self,
        root: TokenId,
        candidates: &[TokenId],
        k: usize,
    ) -> Result<TokenTree> {
        if k < self.num_ranks() {
            return Err(Error::arg(
                "k",
                k,
                format!("the template uses ranks up to {}", self.num_ranks() - 1),
            ));
        }
        let need = self.shape.max_depth().checked_mul(k);
        if need != Some(candidates.len()) {
            // saturating: a product that overflows usize cannot match any length
            let expected = need.unwrap_or(usize::MAX);
            return Err(Error::LengthMismatch {
                what: "candidates",
                expected,
                got: candidates.len(),
            });
        }
        let depth = self.shape.depth();
        let mut tokens = Vec::with_capacity(self.num_nodes());
        tokens.push(root);
        for i in 1..self.num_nodes() {
            tokens.push(candidates[(depth[i] as usize - 1) * k + self.ranks[i] as usize]);
        }
        self.fill(tokens)
    }

    /// Fills nodes level by level from a successor function: node `i` takes
    /// `next(token of parent, rank of i)` (Token Recycling's adjacency-matrix walk).
    ///
    /// # Errors
    /// Token errors as for [`TreeTemplate::fill`].
    pub fn fill_with(
        &self,
        root: TokenId,
        mut next: impl FnMut(TokenId, u32) -> TokenId,
    ) -> Result<TokenTree> {
        let mut tokens = Vec::with_capacity(self.num_nodes());
        tokens.push(root);
        for i in 1..self.num_nodes() {
            let parent_token = tokens[self.shape.parents()[i] as usize];
            tokens.push(next(parent_token, self.ranks[i]));
        }
        self.fill(tokens)
    }
}
