//! Draws without replacement for AWRS after a rejection: the tokens not rejected yet, sampled
//! in proportion to their weights.
//!
//! Most steps reject a handful of tokens, so building an O(V) structure after the first
//! rejection (a sum tree over 49k tokens is ~1 MiB and ~100 us) would cost more than the whole
//! rest of the step. [`Remaining`] starts from the per-block sums the softmax pass already wrote:
//! a draw scans the block sums and then one block (a few hundred additions, well under a
//! microsecond), and a removal re-adds one block. Past [`TREE_AFTER`] removals, when the model
//! disagrees with the constraint badly enough that many more draws may follow, it switches to a
//! sum tree: O(log V) per draw.

use super::softmax::BLOCK;

/// Removals after which [`Remaining`] builds a sum tree.
pub(super) const TREE_AFTER: usize = 128;

/// The tokens still in the draw (see the module docs).
pub(super) struct Remaining<'a, T> {
    weights: &'a [T],
    blocks: Vec<f64>,
    removed: Vec<bool>, // sized on the first removal
    block_removals: Vec<u16>,
    removals: usize,
    tree: Option<SumTree>,
}

impl<'a, T: Copy + Into<f64>> Remaining<'a, T> {
    /// All of `weights`; `blocks` are their per-[`BLOCK`] sums if already known.
    pub fn new(weights: &'a [T], blocks: Option<&[f64]>) -> Self {
        let blocks = blocks.map_or_else(
            || {
                weights
                    .chunks(BLOCK)
                    .map(|c| c.iter().map(|&w| w.into()).sum())
                    .collect()
            },
            <[f64]>::to_vec,
        );
        Self {
            weights,
            block_removals: vec![0; blocks.len()],
            blocks,
            removed: Vec::new(),
            removals: 0,
            tree: None,
        }
    }

    /// Takes `token` out of later draws.
    pub fn remove(&mut self, token: usize) {
        if let Some(tree) = self.tree.as_mut() {
            tree.remove(token);
            return;
        }
        if self.removed.is_empty() {
            self.removed = vec![false; self.weights.len()];
        }
        if std::mem::replace(&mut self.removed[token], true) {
            return;
        }
        self.removals += 1;
        if self.removals >= TREE_AFTER {
            let live: Vec<f64> = self
                .weights
                .iter()
                .zip(&self.removed)
                .map(|(&w, &gone)| if gone { 0.0 } else { w.into() })
                .collect();
            self.tree = Some(SumTree::new(&live));
            return;
        }
        // Re-added, not decremented: no drift, and an emptied block is exactly 0.
        let b = token / BLOCK;
        self.block_removals[b] += 1;
        self.blocks[b] = self.block_range(b).map(|t| self.live(t)).sum();
    }

    fn block_range(&self, b: usize) -> std::ops::Range<usize> {
        b * BLOCK..((b + 1) * BLOCK).min(self.weights.len())
    }

    fn live(&self, t: usize) -> f64 {
        if self.removed.get(t).copied().unwrap_or(false) {
            0.0
        } else {
            self.weights[t].into()
        }
    }

    /// A token drawn in proportion to the remaining weights (`None` if none has mass).
    pub fn draw(&self, coin: f64) -> Option<usize> {
        if let Some(tree) = &self.tree {
            return tree.draw(coin);
        }
        let total: f64 = self.blocks.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let x = coin * total;
        let mut acc = 0.0;
        let mut last = None;
        for (b, &sum) in self.blocks.iter().enumerate() {
            if sum <= 0.0 {
                continue;
            }
            last = Some(b);
            if x < acc + sum {
                let range = self.block_range(b);
                let start = range.start;
                let mut pick = None;
                if self.block_removals[b] == 0 {
                    for (i, &w) in self.weights[range].iter().enumerate() {
                        let w: f64 = w.into();
                        if w > 0.0 {
                            acc += w;
                            pick = Some(start + i);
                            if x < acc {
                                return pick;
                            }
                        }
                    }
                } else {
                    let removed = &self.removed[range.clone()];
                    for (i, (&w, &gone)) in self.weights[range].iter().zip(removed).enumerate() {
                        let w: f64 = w.into();
                        if w > 0.0 && !gone {
                            acc += w;
                            pick = Some(start + i);
                            if x < acc {
                                return pick;
                            }
                        }
                    }
                }
                // Rounding inside the block: its last live token.
                return pick;
            }
            acc += sum;
        }
        // x rounded up to the total: the last live token.
        let b = last?;
        self.block_range(b).rev().find(|&t| self.live(t) > 0.0)
    }
}

/// A sum tree over token weights: exact sampling proportional to weight, removal in O(log V).
pub(super) struct SumTree {
    leaves: usize,
    node: Vec<f64>, // node[1] = total; node[leaves + i] = weight of token i
}

impl SumTree {
    pub fn new<T: Copy + Into<f64>>(weights: &[T]) -> Self {
        let leaves = weights.len().next_power_of_two();
        let mut node = vec![0.0; 2 * leaves];
        for (dst, &w) in node[leaves..leaves + weights.len()].iter_mut().zip(weights) {
            *dst = w.into();
        }
        for i in (1..leaves).rev() {
            node[i] = node[2 * i] + node[2 * i + 1];
        }
        Self { leaves, node }
    }

    fn total(&self) -> f64 {
        self.node[1]
    }

    pub fn remove(&mut self, token: usize) {
        let mut i = self.leaves + token;
        self.node[i] = 0.0;
        while i > 1 {
            i /= 2;
            // Recomputed, not decremented: no drift, and an all-removed subtree is exactly 0.
            self.node[i] = self.node[2 * i] + self.node[2 * i + 1];
        }
    }

    /// A token drawn proportionally to the remaining weights (`None` if none is left).
    pub fn draw(&self, coin: f64) -> Option<usize> {
        if self.total() <= 0.0 {
            return None;
        }
        let mut target = coin * self.total();
        let mut node = 1;
        while node < self.leaves {
            let (left, right) = (self.node[2 * node], self.node[2 * node + 1]);
            // Rounding may point into an empty child: take the other one (never empty here).
            if (target < left && left > 0.0) || right <= 0.0 {
                node *= 2;
            } else {
                target -= left;
                node = 2 * node + 1;
            }
        }
        Some(node - self.leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rng;
    use super::*;

    #[test]
    fn sum_tree_draws_only_live_tokens() {
        let probs = [0.1, 0.0, 0.4, 0.5];
        let mut tree = SumTree::new(&probs);
        tree.remove(3);
        tree.remove(2);
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert_eq!(tree.draw(rng.uniform()), Some(0));
        }
        tree.remove(0);
        assert_eq!(tree.draw(0.5), None);
    }

    /// Blocked draws (before and after the switch to a sum tree) have the law of the
    /// remaining weights: exact frequencies over many coins on a vocabulary of several blocks.
    #[test]
    fn remaining_draws_follow_the_remaining_weights() {
        let n = 3 * BLOCK + 17;
        let weights: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 * 0.5).collect();
        for removals in [0, 5, TREE_AFTER + 3] {
            let mut r = Remaining::new(&weights, None);
            let mut gone = vec![false; n];
            for k in 0..removals {
                let t = (k * 104_729) % n;
                r.remove(t);
                gone[t] = true;
            }
            let live: Vec<f64> = (0..n)
                .map(|t| if gone[t] { 0.0 } else { f64::from(weights[t]) })
                .collect();
            let total: f64 = live.iter().sum();
            // Inverse CDF on a grid of coins: each token's share of the grid is its weight.
            let grid = 200_000;
            let mut counts = vec![0usize; n];
            for i in 0..grid {
                let t = r.draw((f64::from(i) + 0.5) / f64::from(grid)).unwrap();
                assert!(
                    !gone[t] && weights[t] > 0.0,
                    "drew a removed or massless token"
                );
                counts[t] += 1;
            }
            for t in 0..n {
                let want = live[t] / total * f64::from(grid);
                assert!(
                    (counts[t] as f64 - want).abs() <= 1.0,
                    "token {t}: {} vs {want}",
                    counts[t]
                );
            }
        }
        let mut r = Remaining::new(&[0.0f32, 2.0, 0.0], None);
        r.remove(1);
        assert_eq!(r.draw(0.3), None);
    }
}
