//! Lossless stochastic tree verification, docs/design.md#stochastic: the *single-coin point-mass* rule, the
//! reference implementation (`fastdec.sampling.verify_stochastic_ref` wraps it; the torch path
//! and `cuda/verify.cu` must take the same decisions).
//!
//! Every fastdec drafter picks its children deterministically, so each child is a point mass. At
//! node `u` with children `x_1..x_k` (ascending node id) and target distribution `p_u`, one coin
//! `c = coins[u][0]` accepts the first child with `c < Σ_{j≤i} p_u(x_j)`; the walk moves to it and
//! repeats. If no child is accepted (or `u` is a leaf) the *bonus token* is drawn from `p_u` with
//! `u`'s children removed and renormalised, by inverse CDF with `coins[u][1]`. Every emitted token
//! then follows `p_u` exactly (distinct siblings and coin-independent drafts required).
//!
//! Decisions are computed in f64 (f32, f16 and bf16 convert exactly) with sums in a fixed order,
//! so that the CPU and the GPU decide alike from the same coins: the children sequentially by node
//! id; the bonus CDF in the *chunked order* a GPU block computes in parallel: the vocabulary in
//! chunks of [`CDF_CHUNK`] tokens, each summed sequentially, `cdf[t]` = the sequential sum of the
//! chunk totals before `t`'s chunk plus the sequential sum within it up to `t`.
//!
//! Rounding fallbacks: when the children carry all of the stop row's mass (`z == 0`), the coin
//! exceeded their float sum only by rounding, so the last child with nonzero probability is
//! accepted and the walk goes on; when `coin * z` rounds up past the last CDF entry, the last
//! token with nonzero mass is the bonus.

use rayon::prelude::*;

use super::batch::TreeBatch;
use super::float_bits::{Bf16Bits, F16Bits};
use super::token_tree::TokenTree;
use super::verify::Verification;
use crate::{Error, Result, TokenId};

/// Tokens per chunk of the bonus CDF's summation order (`CDF_CHUNK` in `fastdec.sampling`,
/// `CHUNK` in `cuda/verify.cu`).
pub const CDF_CHUNK: usize = 256;

/// Chunks summed side by side: independent sequential sums hide the add latency without
/// changing any chunk's own order.
const LANES: usize = 8;

/// Batches whose stop rows hold at least this many probabilities in all (one row per tree at
/// least) verify their trees in parallel: below it, rayon's dispatch costs more than the rows
/// (a 49152-token row takes about 30 us).
const PAR_MIN_WORK: usize = 1 << 16;

/// A probability element type; its values convert to f64 exactly.
pub trait Prob: Copy + Send + Sync {
    /// The value as f64, exactly.
    fn to_f64(self) -> f64;
}

impl Prob for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

impl Prob for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Prob for Bf16Bits {
    fn to_f64(self) -> f64 {
        // bfloat16 is the upper half of an f32.
        f64::from(f32::from_bits(u32::from(self.0) << 16))
    }
}

impl Prob for F16Bits {
    fn to_f64(self) -> f64 {
        let b = self.0;
        let sign = if b & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((b >> 10) & 0x1f);
        let mantissa = f64::from(b & 0x3ff);
        match exp {
            0 => sign * mantissa * 2f64.powi(-24), // subnormal (and zero)
            31 if mantissa == 0.0 => sign * f64::INFINITY,
            31 => f64::NAN,
            _ => sign * (1024.0 + mantissa) * 2f64.powi(exp - 25),
        }
    }
}

/// Where a tree's inputs start in the caller's flat arrays, for error indices.
#[derive(Clone, Copy)]
struct Base {
    prob: usize,
    coin: usize,
    row: usize,
}

impl TokenTree {
    /// Lossless stochastic verification of this tree by the single-coin point-mass rule (see
    /// the module documentation for the rule, the summation order and the rounding fallbacks).
    ///
    /// `probs` is row-major `[num_nodes, vocab_size]`: row `i` is the target distribution of the
    /// token after node `i` (rows should sum to 1; not checked). `coins[i]` are two uniforms in
    /// `[0, 1)`: `[0]` for acceptance at node `i`, `[1]` for the bonus draw there.
    ///
    /// # Errors
    /// [`Error::Empty`] for `vocab_size == 0`; [`Error::LengthMismatch`] if `probs` or `coins`
    /// has the wrong length; [`Error::InvalidValue`] for a token outside the vocabulary, a coin
    /// outside `[0, 1)`, a negative or non-finite probability among the values read (the
    /// children's and the stop rows'), or a stop row with no mass at all.
    pub fn verify_stochastic<P: Prob>(
        &self,
        probs: &[P],
        vocab_size: usize,
        coins: &[[f64; 2]],
    ) -> Result<Verification> {
        let n = self.num_nodes();
        if vocab_size == 0 {
            return Err(Error::Empty { what: "vocabulary" });
        }
        check_len("probs", probs.len(), n.saturating_mul(vocab_size))?;
        check_len("coins", coins.len(), n)?;
        let base = Base {
            prob: 0,
            coin: 0,
            row: 0,
        };
        self.verify_stochastic_at(probs, vocab_size, coins, base)
    }

    /// The walk over exactly this tree's rows; `base` offsets error indices.
    fn verify_stochastic_at<P: Prob>(
        &self,
        probs: &[P],
        vocab: usize,
        coins: &[[f64; 2]],
        base: Base,
    ) -> Result<Verification> {
        if let Some(i) = self.tokens.iter().position(|&t| t as usize >= vocab) {
            return Err(Error::InvalidValue {
                what: "token",
                index: i,
                value: self.tokens[i].to_string(),
                expected: "tokens must be below vocab_size (the length of a probs row)",
            });
        }
        for (i, pair) in coins.iter().enumerate() {
            if let Some(j) = pair.iter().position(|c| !(0.0..1.0).contains(c)) {
                return Err(Error::InvalidValue {
                    what: "coin",
                    index: base.coin + 2 * i + j,
                    value: pair[j].to_string(),
                    expected: "coins must lie in [0, 1)",
                });
            }
        }
        let first_child = self.shape.first_child();
        let next_sibling = self.shape.next_sibling();
        let read = |u: usize, t: usize| -> Result<f64> {
            let at = u * vocab + t;
            let x = probs[at].to_f64();
            if finite_non_negative(x) {
                Ok(x)
            } else {
                Err(bad_prob(base.prob + at, x))
            }
        };
        let mut scratch = Scratch::default();
        let mut accepted_nodes = Vec::with_capacity(self.max_depth() + 1);
        accepted_nodes.push(0);
        let mut u = 0usize;
        loop {
            // Acceptance: the first child whose cumulative probability exceeds the coin.
            let coin = coins[u][0];
            let mut cum = 0.0;
            let mut last_positive = None;
            let mut accepted = None;
            let mut child = first_child[u];
            while child >= 0 {
                let c = child as usize;
                let p = read(u, self.tokens[c] as usize)?;
                cum += p;
                if coin < cum {
                    accepted = Some(c);
                    break;
                }
                if p > 0.0 {
                    last_positive = Some(c);
                }
                child = next_sibling[c];
            }
            let next = if let Some(c) = accepted {
                c
            } else {
                let row = &probs[u * vocab..(u + 1) * vocab];
                let excluded = self.shape.children(u).map(|c| self.tokens[c] as usize);
                match scratch.bonus(row, excluded, coins[u][1]) {
                    Err(t) => return Err(bad_prob(base.prob + u * vocab + t, row[t].to_f64())),
                    Ok(Some(t)) => {
                        return Ok(Verification {
                            accepted_nodes,
                            bonus_token: t as TokenId,
                        })
                    }
                    // z == 0: the children hold all the mass; the coin passed their sum only
                    // by rounding, so the last one with some is accepted.
                    Ok(None) => last_positive.ok_or_else(|| Error::InvalidValue {
                        what: "probs row",
                        index: base.row + u,
                        value: format!("(stop node {u})"),
                        expected: "the stop node's row has no mass",
                    })?,
                }
            };
            accepted_nodes.push(next as i32);
            u = next;
        }
    }
}

impl TreeBatch {
    /// [`verify_stochastic_batch`] over this batch's trees.
    ///
    /// # Errors
    /// As [`verify_stochastic_batch`].
    pub fn verify_stochastic<P: Prob>(
        &self,
        probs: &[P],
        max_nodes: usize,
        vocab_size: usize,
        coins: &[[f64; 2]],
    ) -> Result<Vec<Verification>> {
        let refs: Vec<&TokenTree> = self.trees().iter().collect();
        verify_stochastic_batch(&refs, probs, max_nodes, vocab_size, coins)
    }
}

/// [`TokenTree::verify_stochastic`] for a batch of trees padded to `max_nodes`: `probs` is
/// row-major `[batch, max_nodes, vocab_size]` and `coins` `[batch, max_nodes]`; rows past a
/// tree's nodes are ignored. Large batches verify their trees in parallel.
///
/// # Errors
/// As [`TokenTree::verify_stochastic`] (indices into the flat arrays), and
/// [`Error::TooManyNodes`] for a tree of more than `max_nodes` nodes. The first failing tree's
/// error is returned.
pub fn verify_stochastic_batch<P: Prob>(
    trees: &[&TokenTree],
    probs: &[P],
    max_nodes: usize,
    vocab_size: usize,
    coins: &[[f64; 2]],
) -> Result<Vec<Verification>> {
    if vocab_size == 0 {
        return Err(Error::Empty { what: "vocabulary" });
    }
    let rows = trees.len().saturating_mul(max_nodes);
    check_len("probs", probs.len(), rows.saturating_mul(vocab_size))?;
    check_len("coins", coins.len(), rows)?;
    if let Some(t) = trees.iter().find(|t| t.num_nodes() > max_nodes) {
        return Err(Error::TooManyNodes {
            what: "tree in the padded batch",
            num_nodes: t.num_nodes(),
            max: max_nodes,
        });
    }
    let one = |(b, tree): (usize, &&TokenTree)| {
        let (row, n) = (b * max_nodes, tree.num_nodes());
        let base = Base {
            prob: row * vocab_size,
            coin: 2 * row,
            row,
        };
        let p = &probs[row * vocab_size..(row + n) * vocab_size];
        tree.verify_stochastic_at(p, vocab_size, &coins[row..row + n], base)
    };
    // Collect every result, then keep the first error: the same error whatever the scheduling.
    let results: Vec<Result<Verification>> =
        if trees.len() > 1 && trees.len() * vocab_size >= PAR_MIN_WORK {
            trees.par_iter().enumerate().map(one).collect()
        } else {
            trees.iter().enumerate().map(one).collect()
        };
    results.into_iter().collect()
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

fn finite_non_negative(x: f64) -> bool {
    // False for NaN as well.
    (0.0..=f64::MAX).contains(&x)
}

fn bad_prob(index: usize, x: f64) -> Error {
    Error::InvalidValue {
        what: "probability",
        index,
        value: x.to_string(),
        expected: "probs must be finite and non-negative",
    }
}

/// Buffers of the bonus draw, reused across the stop rows of one walk.
#[derive(Default)]
struct Scratch {
    masked: Vec<f64>,
    totals: Vec<f64>,
}

impl Scratch {
    /// The bonus token drawn from `row` without the `excluded` tokens by inverse chunked CDF with
    /// `coin`: `Ok(None)` when no mass remains (`z == 0`), `Err(t)` for the first invalid value.
    fn bonus<P: Prob>(
        &mut self,
        row: &[P],
        excluded: impl Iterator<Item = usize>,
        coin: f64,
    ) -> std::result::Result<Option<usize>, usize> {
        let masked = &mut self.masked;
        masked.clear();
        masked.extend(row.iter().map(|x| x.to_f64()));
        // One branch-free pass (it vectorises); the position only on failure.
        if !masked
            .iter()
            .fold(true, |ok, &x| ok & finite_non_negative(x))
        {
            return Err(masked
                .iter()
                .position(|&x| !finite_non_negative(x))
                .unwrap_or(0));
        }
        for t in excluded {
            masked[t] = 0.0;
        }
        chunk_totals(masked, &mut self.totals);
        let mut z = 0.0;
        for &total in &self.totals {
            z += total;
        }
        // Sums of finite non-negative values: never NaN (at worst an overflow to infinity).
        if z <= 0.0 {
            return Ok(None);
        }
        let x = coin * z;
        let mut offset = 0.0;
        for (c, &total) in self.totals.iter().enumerate() {
            // Within a chunk `offset + acc` only grows, and equals `offset + total` from the
            // chunk's last positive token on: the first chunk passing this test holds the token.
            if total > 0.0 && x < offset + total {
                let start = c * CDF_CHUNK;
                let mut acc = 0.0;
                for (t, &m) in masked[start..].iter().take(CDF_CHUNK).enumerate() {
                    acc += m;
                    if m > 0.0 && x < offset + acc {
                        return Ok(Some(start + t));
                    }
                }
            }
            offset += total;
        }
        // Rounding guard: `x` rounded up to `z`; the last token with mass (z > 0: there is one).
        Ok(masked.iter().rposition(|&m| m > 0.0))
    }
}

/// Every chunk's sequential sum, [`LANES`] chunks side by side.
fn chunk_totals(masked: &[f64], totals: &mut Vec<f64>) {
    totals.clear();
    let mut groups = masked.chunks_exact(LANES * CDF_CHUNK);
    for group in groups.by_ref() {
        let mut acc = [0.0f64; LANES];
        for i in 0..CDF_CHUNK {
            for (lane, a) in acc.iter_mut().enumerate() {
                *a += group[lane * CDF_CHUNK + i];
            }
        }
        totals.extend_from_slice(&acc);
    }
    for chunk in groups.remainder().chunks(CDF_CHUNK) {
        let mut acc = 0.0;
        for &m in chunk {
            acc += m;
        }
        totals.push(acc);
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the conversions and decisions are exact: compared exactly
mod tests {
    use super::*;

    fn tree(tokens: &[u32], parents: &[i32]) -> TokenTree {
        TokenTree::new(tokens.to_vec(), parents.to_vec()).unwrap()
    }

    #[test]
    fn docstring_example() {
        // sampling.verify_stochastic_ref's doctest: coin 0.3 fails 0.25, passes 0.25 + 0.25.
        let t = tree(&[0, 1, 2], &[-1, 0, 0]);
        let probs = [0.25f32, 0.25, 0.5, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let r = t
            .verify_stochastic(&probs, 3, &[[0.3, 0.9], [0.0, 0.5], [0.0, 0.5]])
            .unwrap();
        assert_eq!((r.accepted_nodes, r.bonus_token), (vec![0, 2], 1));
    }

    #[test]
    fn fallback_when_children_hold_all_mass() {
        let t = tree(&[0, 1, 2, 0], &[-1, 0, 0, 2]);
        let mut probs = vec![
            0.0f64, 0.5, 0.25, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0,
        ];
        let coins = [[0.9, 0.1], [0.0, 0.0], [0.99, 0.5], [0.5, 0.5]];
        let r = t.verify_stochastic(&probs, 3, &coins).unwrap();
        assert_eq!((r.accepted_nodes, r.bonus_token), (vec![0, 2], 2));
        probs[2] = 0.0; // node 2 has no mass: node 1 is the last child with some
        let r = t.verify_stochastic(&probs, 3, &coins).unwrap();
        assert_eq!((r.accepted_nodes, r.bonus_token), (vec![0, 1], 0));
        probs[..3].fill(0.0);
        let e = t.verify_stochastic(&probs, 3, &coins).unwrap_err();
        assert!(e.to_string().contains("no mass"), "{e}");
    }

    #[test]
    fn chunked_order_differs_from_sequential() {
        // 1.0 then 2^-53 * 256 tiny values: sequentially each tiny value is lost to rounding,
        // chunked they add up in their own chunk first. The coin lands between the two sums.
        let v = 2 * CDF_CHUNK;
        let mut row = vec![0.0f64; v];
        row[0] = 1.0;
        for x in &mut row[CDF_CHUNK..] {
            *x = 2f64.powi(-53);
        }
        let t = TokenTree::chain(vec![1]).unwrap();
        let z = 1.0 + 2f64.powi(-45); // the chunked total
        let coin = (1.0 + 2f64.powi(-46)) / z;
        let r = t.verify_stochastic(&row, v, &[[0.0, coin]]).unwrap();
        assert!(r.bonus_token as usize >= CDF_CHUNK);
    }

    #[test]
    fn rejects_bad_inputs() {
        let t = tree(&[0, 1, 2], &[-1, 0, 0]);
        let probs = [0.25f32; 12];
        let coins = [[0.5; 2]; 3];
        assert_eq!(
            t.verify_stochastic(&probs, 4, &coins).unwrap().bonus_token,
            3
        );
        let err = |p: &[f32], v: usize, c: &[[f64; 2]]| t.verify_stochastic(p, v, c).unwrap_err();
        assert!(matches!(
            err(&probs, 3, &coins),
            Error::LengthMismatch { .. }
        ));
        assert!(matches!(err(&probs[..0], 0, &coins), Error::Empty { .. }));
        assert!(matches!(
            err(&probs, 4, &coins[..2]),
            Error::LengthMismatch { .. }
        ));
        assert!(matches!(
            err(&probs[..6], 2, &coins),
            Error::InvalidValue { index: 2, .. }
        ));
        for bad in [1.0, -1e-300, f64::NAN] {
            let mut c = coins;
            c[1][1] = bad;
            assert!(matches!(
                err(&probs, 4, &c),
                Error::InvalidValue { index: 3, .. }
            ));
        }
        for bad in [-0.25f32, f32::NAN, f32::INFINITY] {
            let mut p = probs;
            p[2] = bad; // a child's probability
            assert!(matches!(
                err(&p, 4, &coins),
                Error::InvalidValue { index: 2, .. }
            ));
            let mut p = probs;
            p[3] = bad; // in the stop row
            assert!(matches!(
                err(&p, 4, &coins),
                Error::InvalidValue { index: 3, .. }
            ));
            let mut p = probs;
            p[7] = bad; // never read
            assert!(t.verify_stochastic(&p, 4, &coins).is_ok());
        }
    }

    #[test]
    fn half_types_convert_exactly() {
        // Positive finite f16 bit patterns are ordered like their values; the negative ones
        // mirror them; the all-ones exponent is infinity or NaN.
        let mut prev = -1.0;
        for bits in 0..0x7c00u16 {
            let h = F16Bits(bits).to_f64();
            assert!(h > prev, "{bits:#x}");
            assert_eq!(F16Bits(bits | 0x8000).to_f64(), -h);
            prev = h;
        }
        assert_eq!(F16Bits(0x7c00).to_f64(), f64::INFINITY);
        assert!(F16Bits(0x7e00).to_f64().is_nan());
        assert_eq!(F16Bits(0x3c00).to_f64(), 1.0);
        assert_eq!(F16Bits(0x0001).to_f64(), 2f64.powi(-24));
        assert_eq!(F16Bits(0x0400).to_f64(), 2f64.powi(-14));
        assert_eq!(F16Bits(0x7bff).to_f64(), 65504.0);
        assert_eq!(F16Bits(0x3555).to_f64(), 0.333_251_953_125);
        assert_eq!(Bf16Bits(0x3f80).to_f64(), 1.0);
        assert_eq!(Bf16Bits(0x3eab).to_f64(), 0.333_984_375);
        assert_eq!(Bf16Bits(0xc000).to_f64(), -2.0);
    }

    #[test]
    fn batch_matches_per_tree_and_ignores_padding() {
        let trees = [tree(&[0, 1], &[-1, 0]), tree(&[2, 0, 1], &[-1, 0, 0])];
        let refs: Vec<&TokenTree> = trees.iter().collect();
        let (m, v) = (4, 3);
        let probs: Vec<f32> = (0..2 * m * v).map(|i| ((i * 7) % 5) as f32 / 4.0).collect();
        let coins: Vec<[f64; 2]> = (0..2 * m).map(|i| [(i as f64) / 9.0, 0.4]).collect();
        let got = verify_stochastic_batch(&refs, &probs, m, v, &coins).unwrap();
        for (b, t) in trees.iter().enumerate() {
            let n = t.num_nodes();
            let want = t
                .verify_stochastic(
                    &probs[b * m * v..(b * m + n) * v],
                    v,
                    &coins[b * m..b * m + n],
                )
                .unwrap();
            assert_eq!(got[b], want);
        }
        let batch = TreeBatch::new(trees.to_vec());
        assert_eq!(batch.verify_stochastic(&probs, m, v, &coins).unwrap(), got);
        let e = verify_stochastic_batch(&refs, &probs[..2 * 2 * v], 2, v, &coins[..4]);
        assert!(matches!(e, Err(Error::TooManyNodes { .. })));
    }
}
