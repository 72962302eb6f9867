//! `TokenTree`: a validated draft tree (tokens + shared shape + optional per-node scores).

use std::sync::Arc;

use super::shape::{AncestorBits, TreeShape};
use crate::{Error, Result, TokenId, MAX_TOKEN_ID};

/// A draft tree: node 0 is the root (the last accepted token), parents come first and siblings
/// carry distinct tokens. Cheap to clone: the shape is shared.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTree {
    pub(crate) shape: Arc<TreeShape>,
    pub(crate) tokens: Vec<TokenId>,
    pub(crate) scores: Option<Vec<f32>>,
}

impl TokenTree {
    /// Builds a tree from per-node tokens and parents.
    ///
    /// # Errors
    /// Any parent-array error of [`TreeShape::new`], [`Error::LengthMismatch`], a token above
    /// [`MAX_TOKEN_ID`], or [`Error::DuplicateSibling`].
    pub fn new(tokens: Vec<TokenId>, parents: Vec<i32>) -> Result<Self> {
        if tokens.len() != parents.len() {
            return Err(Error::LengthMismatch {
                what: "tokens",
                expected: parents.len(),
                got: tokens.len(),
            });
        }
        Self::from_shape(Arc::new(TreeShape::new(parents)?), tokens)
    }

    /// A linear draft: `tokens[0]` is the root, each later token the child of the one before.
    ///
    /// # Errors
    /// [`Error::Empty`] or [`Error::TooManyNodes`].
    pub fn chain(tokens: Vec<TokenId>) -> Result<Self> {
        if tokens.is_empty() {
            return Err(Error::Empty { what: "tokens" });
        }
        if tokens.len() > crate::MAX_NODES {
            return Err(Error::TooManyNodes {
                what: "tree",
                num_nodes: tokens.len(),
                max: crate::MAX_NODES,
            });
        }
        check_token_ids(&tokens, "token")?;
        Ok(TokenTree {
            shape: Arc::new(TreeShape::chain(tokens.len())),
            tokens,
            scores: None,
        })
    }

    /// Attaches a shared, validated shape to tokens, checking token range and sibling distinctness.
    pub(crate) fn from_shape(shape: Arc<TreeShape>, tokens: Vec<TokenId>) -> Result<Self> {
        if tokens.len() != shape.num_nodes() {
            return Err(Error::LengthMismatch {
                what: "tokens",
                expected: shape.num_nodes(),
                got: tokens.len(),
            });
        }
        check_token_ids(&tokens, "token")?;
        if let Some((parent, first, second)) = first_duplicate_sibling(&shape, &tokens) {
            return Err(Error::DuplicateSibling {
                parent,
                first,
                second,
                token: tokens[second],
            });
        }
        Ok(TokenTree {
            shape,
            tokens,
            scores: None,
        })
    }

    /// Attaches per-node scores (probabilities, log-probabilities, counts: any order-preserving
    /// value). Scores guide fusion, pruning and best-first selection.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] or [`Error::InvalidValue`] for a NaN or infinite score.
    pub fn with_scores(mut self, scores: Vec<f32>) -> Result<Self> {
        if scores.len() != self.num_nodes() {
            return Err(Error::LengthMismatch {
                what: "scores",
                expected: self.num_nodes(),
                got: scores.len(),
            });
        }
        // Infinite scores would turn into NaN when combined (inf - inf, inf * 0).
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(Error::InvalidValue {
                what: "score",
                index,
                value: scores[index].to_string(),
                expected: "scores must be finite",
            });
        }
        self.scores = Some(scores);
        Ok(self)
    }

    /// Number of nodes, root included.
    pub fn num_nodes(&self) -> usize {
        self.tokens.len()
    }
    /// Token of every node.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }
    /// The root token.
    pub fn root_token(&self) -> TokenId {
        self.tokens[0]
    }
    /// Per-node scores, if any.
    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }
    /// The shared shape (parents and derived buffers).
    pub fn shape(&self) -> &Arc<TreeShape> {
        &self.shape
    }
    /// `parents[i]`, -1 for the root.
    pub fn parents(&self) -> &[i32] {
        self.shape.parents()
    }
    /// Depth of every node.
    pub fn depth(&self) -> &[i32] {
        self.shape.depth()
    }
    /// Largest depth.
    pub fn max_depth(&self) -> usize {
        self.shape.max_depth()
    }
    /// Ancestor-or-self bit rows.
    pub fn ancestor_bits(&self) -> &AncestorBits {
        self.shape.ancestor_bits()
    }
    /// Root-to-leaf paths padded with -1, `[num_leaves, max_depth + 1]` row-major.
    pub fn leaf_paths(&self) -> &[i32] {
        self.shape.leaf_paths()
    }

    /// The child of `node` carrying `token`, if any.
    pub fn find_child(&self, node: usize, token: TokenId) -> Option<usize> {
        self.shape.children(node).find(|&c| self.tokens[c] == token)
    }

    /// Position ids `prefix_len + depth` for the verification forward (siblings share one).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a position would not fit in int32.
    pub fn position_ids(&self, prefix_len: usize) -> Result<Vec<i32>> {
        let base = checked_prefix(prefix_len, self.max_depth())?;
        Ok(self.depth().iter().map(|&d| base + d).collect())
    }

    /// The leaf whose root-to-leaf path has the largest sum of node scores (root excluded; ties
    /// go to the lowest node id), or the deepest leaf for a tree without scores.
    ///
    /// When scores are path probabilities (a drafter's best-first tree), the sum along a chain
    /// is the number of its tokens a greedy verifier is expected to accept, so this is the
    /// linear draft worth most, where the deepest leaf may end a long but unlikely branch (a
    /// shorter match's continuation, or the shared memory's).
    pub fn likeliest_leaf(&self) -> usize {
        const NONE: usize = usize::MAX;
        let Some(scores) = self.scores() else {
            return self.deepest_leaf();
        };
        let n = self.num_nodes();
        let parents = self.parents();
        // value[i]: node i's score plus its best child's value, leaf[i]: the leaf that path
        // ends at; parents precede children (`TreeShape` checks `parents[i] < i`), so one
        // backward pass sees every child before its parent
        let mut value = vec![0.0f64; n];
        let mut leaf = vec![NONE; n];
        for i in (1..n).rev() {
            if leaf[i] == NONE {
                leaf[i] = i;
            }
            value[i] += f64::from(scores[i]);
            let p = parents[i] as usize;
            // exact comparison: equal sums tie, and the lower leaf id wins
            let better = match value[i].total_cmp(&value[p]) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => leaf[i] < leaf[p],
                std::cmp::Ordering::Less => false,
            };
            if leaf[p] == NONE || better {
                // value[p] holds its best child's value until p itself is reached
                value[p] = value[i];
                leaf[p] = leaf[i];
            }
        }
        if leaf[0] == NONE {
            0
        } else {
            leaf[0]
        }
    }

    fn deepest_leaf(&self) -> usize {
        let depth = self.depth();
        let mut best = 0usize;
        for &l in self.shape.leaves() {
            if depth[l as usize] > depth[best] {
                best = l as usize;
            }
        }
        best
    }

    /// The root-to-leaf path (node ids) ending at `leaf`, or by default at the deepest leaf
    /// (ties go to the lowest leaf id: in rank-ordered templates, the rank-0 chain). This is the
    /// linear draft for consumers that verify chains only.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `leaf` is not a node; [`Error::InvalidArgument`] if it has
    /// children.
    pub fn chain_view(&self, leaf: Option<usize>) -> Result<Vec<i32>> {
        let depth = self.depth();
        let leaf = match leaf {
            Some(l) if l >= self.num_nodes() => {
                return Err(Error::IndexOutOfRange {
                    what: "leaf",
                    index: l as i64,
                    len: self.num_nodes(),
                    of: "nodes",
                })
            }
            Some(l) if self.shape.first_child()[l] >= 0 => {
                return Err(Error::arg("leaf", l, "the node has children; pass a leaf"))
            }
            Some(l) => l,
            None => self.deepest_leaf(),
        };
        let mut path = vec![0i32; depth[leaf] as usize + 1];
        let mut d = path.len();
        self.shape.for_each_ancestor(leaf, |j| {
            d -= 1;
            path[d] = j as i32;
        });
        Ok(path)
    }
}

/// `prefix_len` as the int32 base position, if `prefix_len + max_depth` fits in int32.
pub(crate) fn checked_prefix(prefix_len: usize, max_depth: usize) -> Result<i32> {
    match prefix_len.checked_add(max_depth) {
        Some(last) if i32::try_from(last).is_ok() => Ok(prefix_len as i32),
        _ => Err(Error::arg(
            "prefix_len",
            prefix_len,
            "prefix_len + max_depth must fit in int32",
        )),
    }
}

/// Rejects token ids above [`MAX_TOKEN_ID`], naming the first one and its index.
pub(crate) fn check_token_ids(tokens: &[TokenId], what: &'static str) -> Result<()> {
    match tokens.iter().position(|&t| t > MAX_TOKEN_ID) {
        Some(index) => Err(Error::InvalidValue {
            what,
            index,
            value: tokens[index].to_string(),
            expected: "token ids must be in [0, 2147483647]",
        }),
        None => Ok(()),
    }
}

/// The first `(parent, earlier sibling, later sibling)` whose tokens are equal, if any.
pub(crate) fn first_duplicate_sibling(
    shape: &TreeShape,
    tokens: &[TokenId],
) -> Option<(usize, usize, usize)> {
    let groups = shape.sibling_groups();
    let mut sorted: Vec<(TokenId, u32)> = Vec::new();
    for bounds in groups.offsets.windows(2) {
        let members = &groups.members[bounds[0] as usize..bounds[1] as usize];
        let parent = shape.parents()[members[0] as usize] as usize;
        // Small sibling groups (the common case) compare pairwise; large ones sort.
        if members.len() <= 16 {
            for (k, &c) in members.iter().enumerate().skip(1) {
                let t = tokens[c as usize];
                if let Some(&earlier) = members[..k].iter().find(|&&e| tokens[e as usize] == t) {
                    return Some((parent, earlier as usize, c as usize));
                }
            }
        } else {
            sorted.clear();
            sorted.extend(members.iter().map(|&c| (tokens[c as usize], c)));
            sorted.sort_unstable();
            let dup = sorted
                .windows(2)
                .filter(|w| w[0].0 == w[1].0)
                .map(|w| (w[0].1, w[1].1))
                .min_by_key(|&(_, b)| b);
            if let Some((a, b)) = dup {
                return Some((parent, a as usize, b as usize));
            }
        }
    }
    None
}
