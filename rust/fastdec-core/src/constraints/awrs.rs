//! Adaptive weighted rejection sampling (Lipkin et al. 2025, "Fast Controlled Generation from
//! Language Models with Adaptive Weighted Rejection Sampling", arXiv 2504.05410).
//!
//! To sample from the locally constrained distribution `g(x) = p(x) l(x) / Z` without checking
//! the whole vocabulary: draw tokens from `p` *without replacement*, check each, stop at the first
//! that passes. That token is an exact draw from `g` and the expected number of checks is
//! `1 + sum over invalid r of p(r) / (p(r) + Z)` (docs/design.md#awrs). When every token with mass
//! was rejected the step is a dead end.
//!
//! Work per step: one O(V) pass for the softmax and the first draw (an inverse-CDF scan, no sort,
//! no per-token noise); only if that token is rejected is a sum tree over the probabilities built
//! (O(V), exact: every inner node is recomputed from its children, so removed tokens weigh
//! exactly 0), after which each further draw and removal costs O(log V).
//!
//! Importance weights `w` with `E[w 1{X = x}] = p(x) l(x)`, hence `E[w] = Z` (for SMC):
//! * [`Estimator::TwoRun`], the paper's: a second without-replacement run over everything but
//!   the first run's rejections (the accepted token stays in), `w = (1 - m1) / (|R1| + |R2| + 1)`;
//! * [`Estimator::Geometric`], genlm-control's lower-variance one: the run read as rejection
//!   sampling *with* replacement (repeats of rejected tokens are simulated as geometric counts of
//!   "phantom" rejections, so they cost nothing), continued to the second acceptance,
//!   `w = 1 / (R + 1)` with `R` all rejections, phantoms included.
//!
//! Weights are relative to the normalised `p` (multiply by the caller's own normaliser if `p`
//! was not normalised). Checks are memoised within a step.

use super::draws::Remaining;
pub use super::rng::Rng;
pub use super::softmax::{exp_weights, exp_weights_blocked, softmax_into};
use crate::{Error, Result, TokenId};

/// Which importance weight to compute alongside the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// No weight (locally constrained decoding); the cheapest.
    None,
    /// The paper's two-run estimator.
    TwoRun,
    /// The geometric (negative-binomial) estimator of genlm-control.
    Geometric,
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The token, or `None` at a dead end (no token with mass passes).
    pub token: Option<TokenId>,
    /// The importance weight (0 at a dead end; 1 with [`Estimator::None`]).
    pub weight: f64,
    /// Constraint checks made (distinct tokens).
    pub checks: u32,
    /// Of which in the sampling run proper (the rest estimate the weight).
    pub sampling_checks: u32,
}

/// Validates a probability vector (finite, non-negative, some mass).
///
/// # Errors
/// The first bad entry, or no mass at all.
pub fn check_probs(probs: &[f64]) -> Result<()> {
    if probs.is_empty() {
        return Err(Error::Empty { what: "probs" });
    }
    if let Some(index) = probs.iter().position(|p| !(p.is_finite() && *p >= 0.0)) {
        return Err(Error::InvalidValue {
            what: "probability",
            index,
            value: probs[index].to_string(),
            expected: "finite and >= 0",
        });
    }
    if !probs.iter().any(|&p| p > 0.0) {
        return Err(Error::arg("probs", "all zero", "some token with mass"));
    }
    Ok(())
}

/// Memoised constraint checks of one step.
struct Checks<'a, F> {
    check: &'a mut F,
    seen: rustc_hash::FxHashMap<u32, bool>,
}

impl<F: FnMut(TokenId) -> bool> Checks<'_, F> {
    fn get(&mut self, token: usize) -> bool {
        let t = token as u32;
        if let Some(&ok) = self.seen.get(&t) {
            return ok;
        }
        let ok = (self.check)(t);
        self.seen.insert(t, ok);
        ok
    }
}

/// The first draw: inverse CDF by one sequential scan (no tree needed if it passes).
fn first_draw<T: Copy + Into<f64>>(weights: &[T], total: f64, u: f64) -> usize {
    let x = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (t, &w) in weights.iter().enumerate() {
        let p: f64 = w.into();
        if p > 0.0 {
            acc += p;
            last = t;
            if x < acc {
                return t;
            }
        }
    }
    last // rounding: x reached the total
}

/// A draw in proportion to the weights of the tokens the mask allows (`None` if they have no
/// mass). The rejected tokens are forbidden, so they are not in the mask.
fn masked_draw<T: Copy + Into<f64>>(weights: &[T], mask: &[u32], u: f64) -> Option<usize> {
    let allowed = || {
        mask.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                (b != 0).then(|| {
                    let t = b.trailing_zeros() as usize;
                    b &= b - 1;
                    w * 32 + t
                })
            })
        })
    };
    let total: f64 = allowed()
        .filter(|&t| t < weights.len())
        .map(|t| weights[t].into())
        .sum();
    if total <= 0.0 {
        return None;
    }
    let x = u * total;
    let mut acc = 0.0;
    let mut last = None;
    for t in allowed().filter(|&t| t < weights.len()) {
        let w: f64 = weights[t].into();
        if w > 0.0 {
            acc += w;
            last = Some(t);
            if x < acc {
                return Some(t);
            }
        }
    }
    last
}

/// One AWRS step over probabilities `probs` (need not be normalised) with the constraint `check`.
///
/// # Errors
/// Bad probabilities (see [`check_probs`]).
pub fn sample<F: FnMut(TokenId) -> bool>(
    probs: &[f64],
    check: &mut F,
    estimator: Estimator,
    rng: &mut Rng,
) -> Result<Sample> {
    check_probs(probs)?;
    let total: f64 = probs.iter().sum();
    let first = first_draw(probs, total, rng.uniform());
    Ok(sample_weights(
        probs, None, total, first, check, None, estimator, rng,
    ))
}

/// One AWRS step from `logits / temperature` (softmax in one fused, vectorised pass).
///
/// # Errors
/// As [`softmax_into`].
pub fn sample_logits<F: FnMut(TokenId) -> bool>(
    logits: &[f32],
    temperature: f64,
    check: &mut F,
    estimator: Estimator,
    rng: &mut Rng,
) -> Result<Sample> {
    sample_logits_with_mask(logits, temperature, check, None, estimator, rng)
}

/// The default number of rejections before the full-mask fallback. A further check costs about a
/// microsecond (a draw from the remaining tokens and a DFA walk), a full mask 150-700 us on a
/// 49k vocabulary. 32 keeps the mean checks per step under 3 and the p99 step time near twice
/// the median on the benchmark's tasks (`benches/constrained.py`, which also tries others with
/// `--mask-after`: 16 falls back too often, 64 pays too many checks first).
pub const MASK_AFTER: usize = 32;

/// A full-mask fallback: after `after` rejections, `fill(mask)` writes the allowed-token
/// bitmask (`ceil(V / 32)` words) and the token is drawn from the remaining mass under it.
pub struct MaskFallback<'a> {
    /// Rejections before the fallback.
    pub after: usize,
    /// Writes the full mask.
    pub fill: &'a mut dyn FnMut(&mut [u32]),
}

/// [`sample_logits`] with an optional [`MaskFallback`], used without weights only
/// ([`Estimator::None`]): when the model puts most of its mass on forbidden tokens, one mask
/// bounds the cost of a step. The token's law is unchanged: after rejections (all of forbidden
/// tokens), sampling on without replacement until the first allowed token and drawing from the
/// allowed tokens in proportion to `p` give the same law, `p l / Z`.
///
/// # Errors
/// As [`softmax_into`].
pub fn sample_logits_with_mask<F: FnMut(TokenId) -> bool>(
    logits: &[f32],
    temperature: f64,
    check: &mut F,
    fallback: Option<MaskFallback<'_>>,
    estimator: Estimator,
    rng: &mut Rng,
) -> Result<Sample> {
    let mut weights = Vec::new();
    let mut blocks = Vec::new();
    let total = exp_weights_blocked(logits, temperature, &mut weights, &mut blocks)?;
    // The first draw goes through the block sums too (a few hundred additions, no scan of the
    // vocabulary); the largest logit's weight is 1, so there is always a token to draw.
    let remaining = Remaining::new(&weights, Some(&blocks));
    let first = remaining.draw(rng.uniform()).unwrap_or(0);
    let fallback = if estimator == Estimator::None {
        fallback
    } else {
        None
    };
    Ok(sample_weights(
        &weights,
        Some(remaining),
        total,
        first,
        check,
        fallback,
        estimator,
        rng,
    ))
}

/// The sampler over unnormalised weights with their sum `total > 0`.
#[allow(clippy::too_many_arguments)]
fn sample_weights<T: Copy + Into<f64>, F: FnMut(TokenId) -> bool>(
    probs: &[T],
    remaining: Option<Remaining<'_, T>>,
    total: f64,
    first: usize,
    check: &mut F,
    mut fallback: Option<MaskFallback<'_>>,
    estimator: Estimator,
    rng: &mut Rng,
) -> Sample {
    let inv_total = 1.0 / total;
    let p = |i: usize| -> f64 { probs[i].into() * inv_total };
    let mut checks = Checks {
        check,
        seen: rustc_hash::FxHashMap::default(),
    };
    if checks.get(first) && estimator == Estimator::None {
        return Sample {
            token: Some(first as TokenId),
            weight: 1.0,
            checks: 1,
            sampling_checks: 1,
        };
    }
    // Run 1, without replacement.
    let mut tree = remaining.unwrap_or_else(|| Remaining::new(probs, None));
    let mut rejected: Vec<usize> = Vec::new();
    let mut rejected_mass = 0.0;
    let mut accepted = None;
    let mut x = first;
    loop {
        if checks.get(x) {
            accepted = Some(x);
            break;
        }
        rejected.push(x);
        rejected_mass += p(x);
        tree.remove(x);
        if let Some(fb) = fallback.as_mut() {
            if rejected.len() >= fb.after {
                let mut mask = vec![0u32; probs.len().div_ceil(32)];
                (fb.fill)(&mut mask);
                let sampling_checks = checks.seen.len() as u32;
                return Sample {
                    token: masked_draw(probs, &mask, rng.uniform()).map(|t| t as TokenId),
                    weight: 1.0,
                    checks: sampling_checks,
                    sampling_checks,
                };
            }
        }
        match tree.draw(rng.uniform()) {
            Some(next) => x = next,
            None => break,
        }
    }
    let sampling_checks = checks.seen.len() as u32;
    let Some(token) = accepted else {
        return Sample {
            token: None,
            weight: 0.0,
            checks: sampling_checks,
            sampling_checks,
        };
    };
    let weight = match estimator {
        Estimator::None => 1.0,
        Estimator::TwoRun => {
            // Run 2: fresh draws over everything but run 1's rejections (the accepted token is
            // still in), until the first acceptance.
            let mut r2 = 0usize;
            while let Some(y) = tree.draw(rng.uniform()) {
                if checks.get(y) {
                    break;
                }
                r2 += 1;
                tree.remove(y);
            }
            (1.0 - rejected_mass).max(0.0) / (rejected.len() + r2 + 1) as f64
        }
        Estimator::Geometric => {
            // The run as rejection sampling with replacement: before each fresh draw, repeats
            // of the rejected tokens (mass M) come as Geometric(1 - M) - 1 phantom rejections.
            // Count rejections R until the second acceptance; w = 1 / (R + 1).
            // Run 1's draws are that run's fresh draws (each from p without the tokens rejected
            // so far); replay them, adding the phantoms before each, then go on drawing from
            // run 1's tree (rejections removed, the accepted token still in).
            let mut mass = 0.0;
            let mut r = 0u64;
            for &y in &rejected {
                r += phantoms(mass, rng) + 1;
                mass += p(y);
            }
            r += phantoms(mass, rng); // before the first acceptance
            loop {
                r += phantoms(mass, rng);
                let Some(y) = tree.draw(rng.uniform()) else {
                    break; // unreachable: the accepted token is still in
                };
                if checks.get(y) {
                    break; // the second acceptance
                }
                r += 1;
                mass += p(y);
                tree.remove(y);
            }
            1.0 / (r.saturating_add(1)) as f64
        }
    };
    Sample {
        token: Some(token as TokenId),
        weight,
        checks: checks.seen.len() as u32,
        sampling_checks,
    }
}

/// Number of failures before the first success of a Bernoulli(1 - m) sequence: the repeats of
/// rejected tokens (total mass `m`) a with-replacement run draws before its next fresh token.
fn phantoms(m: f64, rng: &mut Rng) -> u64 {
    if m <= 0.0 {
        return 0;
    }
    if m >= 1.0 {
        return u64::MAX / 4; // every draw repeats a rejection: the weight goes to ~0
    }
    let u = 1.0 - rng.uniform(); // (0, 1]
    (u.ln() / m.ln()).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_end_checks_every_token_with_mass() {
        let probs = [0.25, 0.25, 0.0, 0.5];
        let mut n = 0;
        let mut check = |_t: TokenId| {
            n += 1;
            false
        };
        let s = sample(&probs, &mut check, Estimator::TwoRun, &mut Rng::new(3)).unwrap();
        assert_eq!(s.token, None);
        assert!(s.weight == 0.0, "a dead end weighs 0");
        assert_eq!(s.checks, 3);
    }
}
