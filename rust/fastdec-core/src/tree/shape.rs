//! The token-free part of a tree: parents and every buffer derived from them alone. Shared
//! between trees through `Arc`, so a static template pays for its buffers once.

use std::sync::OnceLock;

use super::float_bits::{Bf16Bits, F16Bits};
use crate::{Error, Result, MAX_NODES};

/// Ancestor-or-self rows packed as bits: bit `j` of row `i` is set iff node `j` lies on the path
/// from the root to node `i` (inclusive). Row `i` = row `parents[i]` | bit `i` (docs/design.md#trees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorBits {
    num_nodes: usize,
    words_per_row: usize,
    bits: Vec<u64>,
}

impl AncestorBits {
    fn new(parents: &[i32]) -> Self {
        let n = parents.len();
        let words_per_row = n.div_ceil(64);
        let mut bits = vec![0u64; n * words_per_row];
        if words_per_row == 1 {
            // Fast path (N <= 64): one word per row, no inner loop.
            for i in 0..n {
                let inherited = if i == 0 { 0 } else { bits[parents[i] as usize] };
                bits[i] = inherited | (1u64 << i);
            }
        } else {
            for i in 0..n {
                let row = i * words_per_row;
                if i > 0 {
                    let p = parents[i] as usize * words_per_row;
                    bits.copy_within(p..p + words_per_row, row);
                }
                bits[row + i / 64] |= 1u64 << (i % 64);
            }
        }
        AncestorBits {
            num_nodes: n,
            words_per_row,
            bits,
        }
    }

    /// Number of 64-bit words per row (`ceil(N / 64)`).
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// The 64-bit words of row `i`.
    pub fn row(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words_per_row..(i + 1) * self.words_per_row]
    }

    /// Whether node `j` is an ancestor of (or equal to) node `i`.
    pub fn get(&self, i: usize, j: usize) -> bool {
        self.row(i)[j / 64] >> (j % 64) & 1 == 1
    }

    /// Rows re-packed as little-endian int32 words, `ceil(N / 32)` per row: the layout of
    /// llguidance/outlines-core token bitmasks, byte-identical to `FlashInfer`'s
    /// `packbits(..., bitorder="little")` of each row.
    pub fn to_i32_words(&self) -> Vec<i32> {
        let n = self.num_nodes;
        let words32 = n.div_ceil(32);
        let mut out = Vec::with_capacity(n * words32);
        for i in 0..n {
            let row = self.row(i);
            for w in 0..words32 {
                let word = row[w / 2];
                let half = if w % 2 == 0 {
                    word as u32
                } else {
                    (word >> 32) as u32
                };
                out.push(half as i32);
            }
        }
        out
    }
}

/// Parents plus their derived buffers, validated once.
#[derive(Debug)]
pub struct TreeShape {
    parents: Vec<i32>,
    depth: Vec<i32>,
    first_child: Vec<i32>,
    next_sibling: Vec<i32>,
    leaves: Vec<i32>,
    max_depth: usize,
    ancestors: OnceLock<AncestorBits>,
    leaf_paths: OnceLock<Vec<i32>>,
    sibling_groups: OnceLock<SiblingGroups>,
    pub(crate) mask_blocks: MaskBlocks,
}

/// Children of every node that has at least two, flattened (CSR): group `g` is
/// `members[offsets[g]..offsets[g + 1]]`, ascending. Used to check sibling distinctness in one
/// tight pass per fill.
#[derive(Debug, Default)]
pub(crate) struct SiblingGroups {
    pub(crate) offsets: Vec<u32>,
    pub(crate) members: Vec<u32>,
}

/// Per-dtype caches of the `[N, N]` additive mask block (filled on first use; only for trees of
/// at most `MASK_CACHE_MAX_NODES` nodes, so a cache holds at most 512 KiB).
#[derive(Debug, Default)]
pub(crate) struct MaskBlocks {
    pub(crate) f32: OnceLock<Vec<f32>>,
    pub(crate) f64: OnceLock<Vec<f64>>,
    pub(crate) f16: OnceLock<Vec<F16Bits>>,
    pub(crate) bf16: OnceLock<Vec<Bf16Bits>>,
}

impl PartialEq for TreeShape {
    fn eq(&self, other: &Self) -> bool {
        self.parents == other.parents
    }
}

impl TreeShape {
    /// Validates `parents` (`parents[0] = -1`, `0 <= parents[i] < i`) and derives depth and the
    /// first-child / next-sibling lists.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::TooManyNodes`], [`Error::RootParent`], [`Error::ParentNotBefore`].
    pub fn new(parents: Vec<i32>) -> Result<Self> {
        if parents.is_empty() {
            return Err(Error::Empty { what: "parents" });
        }
        if parents.len() > MAX_NODES {
            return Err(Error::TooManyNodes {
                what: "tree",
                num_nodes: parents.len(),
                max: MAX_NODES,
            });
        }
        if parents[0] != -1 {
            return Err(Error::RootParent {
                parent: i64::from(parents[0]),
            });
        }
        for (node, &parent) in parents.iter().enumerate().skip(1) {
            if parent < 0 || parent as usize >= node {
                return Err(Error::ParentNotBefore {
                    node,
                    parent: i64::from(parent),
                });
            }
        }
        Ok(Self::from_valid_parents(parents))
    }

    /// Builds from parents already known to be valid (internal builders produce them).
    pub(crate) fn from_valid_parents(parents: Vec<i32>) -> Self {
        let n = parents.len();
        debug_assert!((1..=MAX_NODES).contains(&n) && parents[0] == -1);
        let mut depth = vec![0i32; n];
        let mut first_child = vec![-1i32; n];
        let mut next_sibling = vec![-1i32; n];
        let mut max_depth = 0;
        for i in 1..n {
            let p = parents[i] as usize;
            debug_assert!(p < i);
            depth[i] = depth[p] + 1;
            max_depth = max_depth.max(depth[i] as usize);
        }
        // Walk backwards and push at the head, so that children end up in ascending order.
        for i in (1..n).rev() {
            let p = parents[i] as usize;
            next_sibling[i] = first_child[p];
            first_child[p] = i as i32;
        }
        let leaves = (0..n)
            .filter(|&i| first_child[i] < 0)
            .map(|i| i as i32)
            .collect();
        TreeShape {
            parents,
            depth,
            first_child,
            next_sibling,
            leaves,
            max_depth,
            ancestors: OnceLock::new(),
            leaf_paths: OnceLock::new(),
            sibling_groups: OnceLock::new(),
            mask_blocks: MaskBlocks::default(),
        }
    }

    /// A chain of `n` nodes: `parents = [-1, 0, 1, ..., n-2]`.
    pub(crate) fn chain(n: usize) -> Self {
        Self::from_valid_parents((0..n as i32).map(|i| i - 1).collect())
    }

    /// Number of nodes, root included.
    pub fn num_nodes(&self) -> usize {
        self.parents.len()
    }

    /// `parents[i]`, -1 for the root.
    pub fn parents(&self) -> &[i32] {
        &self.parents
    }

    /// Depth of every node; the root has depth 0.
    pub fn depth(&self) -> &[i32] {
        &self.depth
    }

    /// Largest depth (0 for a root-only tree).
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Lowest-index child of every node, -1 for leaves.
    pub fn first_child(&self) -> &[i32] {
        &self.first_child
    }

    /// Next higher-index sibling of every node, -1 for the last child and the root.
    pub fn next_sibling(&self) -> &[i32] {
        &self.next_sibling
    }

    /// Leaf node ids in ascending order.
    pub fn leaves(&self) -> &[i32] {
        &self.leaves
    }

    /// Children of `node` in ascending order.
    pub fn children(&self, node: usize) -> Children<'_> {
        Children {
            next_sibling: &self.next_sibling,
            cur: self.first_child[node],
        }
    }

    /// Ancestor-or-self bit rows (computed on first use, then cached).
    pub fn ancestor_bits(&self) -> &AncestorBits {
        self.ancestors
            .get_or_init(|| AncestorBits::new(&self.parents))
    }

    /// Width of a leaf-path row: `max_depth + 1`.
    pub fn leaf_path_width(&self) -> usize {
        self.max_depth + 1
    }

    /// Root-to-leaf node paths, one row per leaf (ascending leaf id), `max_depth + 1` wide,
    /// padded with -1 (Medusa/EAGLE "retrieve indices"). Cached after the first call.
    pub fn leaf_paths(&self) -> &[i32] {
        self.leaf_paths.get_or_init(|| {
            let width = self.leaf_path_width();
            let mut out = vec![-1i32; self.leaves.len() * width];
            for (row, &leaf) in out.chunks_exact_mut(width).zip(&self.leaves) {
                let mut node = leaf;
                let mut d = self.depth[leaf as usize] as usize;
                loop {
                    row[d] = node;
                    if d == 0 {
                        break;
                    }
                    node = self.parents[node as usize];
                    d -= 1;
                }
            }
            out
        })
    }

    /// Sibling groups of size >= 2 (computed on first use, then cached).
    pub(crate) fn sibling_groups(&self) -> &SiblingGroups {
        self.sibling_groups.get_or_init(|| {
            let mut g = SiblingGroups {
                offsets: vec![0],
                members: Vec::new(),
            };
            for p in 0..self.num_nodes() {
                let c = self.first_child[p];
                if c >= 0 && self.next_sibling[c as usize] >= 0 {
                    g.members.extend(self.children(p).map(|c| c as u32));
                    g.offsets.push(g.members.len() as u32);
                }
            }
            g
        })
    }

    /// Calls `f(j)` for every node `j` on the path from `node` up to the root (inclusive).
    #[inline]
    pub(crate) fn for_each_ancestor(&self, node: usize, mut f: impl FnMut(usize)) {
        let mut j = node as i32;
        while j >= 0 {
            f(j as usize);
            j = self.parents[j as usize];
        }
    }
}

/// Iterator over the children of one node.
pub struct Children<'a> {
    next_sibling: &'a [i32],
    cur: i32,
}

impl Iterator for Children<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.cur < 0 {
            return None;
        }
        let c = self.cur as usize;
        self.cur = self.next_sibling[c];
        Some(c)
    }
}
