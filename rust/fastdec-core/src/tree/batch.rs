//! A batch of draft trees, one per request of a step: the ragged layout (every tree's nodes
//! back to back, with offsets) that `propose_batch` returns, and the padded `[B, N]` view that
//! batched verification and attention kernels read (N = the largest tree).

use super::TokenTree;

/// Draft trees of one step, ragged and flat: tree `b` is nodes
/// `cu_num_nodes[b]..cu_num_nodes[b + 1]` (parents local to each tree).
#[derive(Debug, Clone, Default)]
pub struct TreeBatch {
    trees: Vec<TokenTree>,
    tokens: Vec<i32>,
    parents: Vec<i32>,
    cu_num_nodes: Vec<i32>,
}

/// The padded `[rows, width]` view of a [`TreeBatch`], row-major. Pad slots hold token 0,
/// parent -1 and depth 0, so a pad node is a root that nothing descends from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedTrees {
    /// Trees in the batch.
    pub rows: usize,
    /// Nodes of the largest tree (0 for an empty batch).
    pub width: usize,
    /// `[rows, width]` tokens.
    pub tokens: Vec<i64>,
    /// `[rows, width]` parents, -1 for roots and pads.
    pub parents: Vec<i64>,
    /// `[rows, width]` depths (root 0).
    pub depth: Vec<i64>,
    /// `[rows]` real nodes per tree.
    pub num_nodes: Vec<i64>,
}

impl TreeBatch {
    /// The batch of `trees`, flattened once.
    pub fn new(trees: Vec<TokenTree>) -> Self {
        let total: usize = trees.iter().map(TokenTree::num_nodes).sum();
        let (mut tokens, mut parents) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let mut cu_num_nodes = Vec::with_capacity(trees.len() + 1);
        cu_num_nodes.push(0);
        for t in &trees {
            // Token ids are below the vocabulary size, far under i32::MAX; the wire format
            // shared with torch and the kernels is signed.
            tokens.extend(t.tokens().iter().map(|&x| x as i32));
            parents.extend_from_slice(t.parents());
            // A tree has at most MAX_NODES nodes and a batch far fewer than 2^31 in all.
            cu_num_nodes.push(tokens.len() as i32);
        }
        TreeBatch {
            trees,
            tokens,
            parents,
            cu_num_nodes,
        }
    }

    /// The trees, in batch order.
    pub fn trees(&self) -> &[TokenTree] {
        &self.trees
    }

    /// Every tree's tokens, back to back.
    pub fn tokens(&self) -> &[i32] {
        &self.tokens
    }

    /// Every tree's parents (local to its tree), back to back.
    pub fn parents(&self) -> &[i32] {
        &self.parents
    }

    /// `[len + 1]` node offsets: tree `b` is `cu_num_nodes[b]..cu_num_nodes[b + 1]`.
    pub fn cu_num_nodes(&self) -> &[i32] {
        &self.cu_num_nodes
    }

    /// Trees in the batch.
    pub fn len(&self) -> usize {
        self.trees.len()
    }

    /// Whether the batch holds no tree.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    /// The padded `[len, width]` view (`width` = the largest tree's node count).
    pub fn padded(&self) -> PaddedTrees {
        let rows = self.trees.len();
        let width = self
            .trees
            .iter()
            .map(TokenTree::num_nodes)
            .max()
            .unwrap_or(0);
        let mut out = PaddedTrees {
            rows,
            width,
            tokens: vec![0; rows * width],
            parents: vec![-1; rows * width],
            depth: vec![0; rows * width],
            num_nodes: Vec::with_capacity(rows),
        };
        for (b, t) in self.trees.iter().enumerate() {
            let n = t.num_nodes();
            let at = b * width;
            for (dst, &x) in out.tokens[at..at + n].iter_mut().zip(t.tokens()) {
                *dst = i64::from(x);
            }
            for (dst, &x) in out.parents[at..at + n].iter_mut().zip(t.parents()) {
                *dst = i64::from(x);
            }
            for (dst, &x) in out.depth[at..at + n].iter_mut().zip(t.depth()) {
                *dst = i64::from(x);
            }
            out.num_nodes.push(n as i64);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A random valid tree: parents before children, distinct tokens among siblings (token =
    /// node id keeps them distinct).
    fn tree(parents: &[usize]) -> TokenTree {
        let parents: Vec<i32> = std::iter::once(-1)
            .chain(
                parents
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| (p % (i + 1)) as i32),
            )
            .collect();
        let tokens = (0..parents.len() as u32).map(|i| i + 7).collect();
        TokenTree::new(tokens, parents).expect("a valid tree")
    }

    proptest! {
        #[test]
        fn padded_rows_are_the_trees(shapes in prop::collection::vec(prop::collection::vec(0usize..64, 0..20), 0..6)) {
            let trees: Vec<TokenTree> = shapes.iter().map(|s| tree(s)).collect();
            let batch = TreeBatch::new(trees.clone());
            let padded = batch.padded();
            let width = trees.iter().map(TokenTree::num_nodes).max().unwrap_or(0);
            prop_assert_eq!((padded.rows, padded.width), (trees.len(), width));
            for (b, t) in trees.iter().enumerate() {
                let (lo, hi) = (batch.cu_num_nodes()[b] as usize, batch.cu_num_nodes()[b + 1] as usize);
                prop_assert_eq!(hi - lo, t.num_nodes());
                prop_assert_eq!(padded.num_nodes[b], t.num_nodes() as i64);
                for i in 0..width {
                    let at = b * width + i;
                    if i < t.num_nodes() {
                        prop_assert_eq!(padded.tokens[at], i64::from(t.tokens()[i]));
                        prop_assert_eq!(padded.parents[at], i64::from(t.parents()[i]));
                        prop_assert_eq!(padded.depth[at], i64::from(t.depth()[i]));
                        prop_assert_eq!(batch.tokens()[lo + i], t.tokens()[i] as i32);
                        prop_assert_eq!(batch.parents()[lo + i], t.parents()[i]);
                    } else {
                        prop_assert_eq!((padded.tokens[at], padded.parents[at], padded.depth[at]), (0, -1, 0));
                    }
                }
            }
        }
    }
}
