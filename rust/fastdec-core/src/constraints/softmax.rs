//! The weights AWRS draws from: the softmax of `logits / temperature`, exactly in float64 or
//! in one fused float32 pass (a vectorised exp, AVX2 where the CPU has it) that also writes the
//! per-[`BLOCK`] partial sums the draws start from.

use crate::{Error, Result};

/// Softmax of `logits / temperature` into `out` (float64 weights, normalised).
///
/// # Errors
/// A non-positive or non-finite temperature, NaN logits, or no finite logit.
pub fn softmax_into(logits: &[f32], temperature: f64, out: &mut Vec<f64>) -> Result<()> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::arg("temperature", temperature, "a finite float > 0"));
    }
    if logits.is_empty() {
        return Err(Error::Empty { what: "logits" });
    }
    if let Some(index) = logits.iter().position(|x| x.is_nan()) {
        return Err(Error::InvalidValue {
            what: "logit",
            index,
            value: "NaN".into(),
            expected: "a number (-inf masks a token)",
        });
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() {
        return Err(Error::arg(
            "logits",
            max,
            "at least one finite logit and none +inf",
        ));
    }
    let inv_t = 1.0 / temperature;
    out.clear();
    out.extend(
        logits
            .iter()
            .map(|&x| ((f64::from(x) - f64::from(max)) * inv_t).exp()),
    );
    let total: f64 = out.iter().sum();
    let scale = 1.0 / total;
    for w in out.iter_mut() {
        *w *= scale;
    }
    Ok(())
}

/// `exp((logit - max) / temperature)` per token as float32 (a vectorisable exp, relative error
/// about 2e-7, 0 below e^-87, where float32 itself would be denormal), and their float64 sum.
///
/// # Errors
/// As [`softmax_into`].
pub fn exp_weights(logits: &[f32], temperature: f64, out: &mut Vec<f32>) -> Result<f64> {
    let mut blocks = Vec::new();
    exp_weights_blocked(logits, temperature, out, &mut blocks)
}

/// Tokens per block of [`exp_weights_blocked`]'s partial sums.
pub(super) const BLOCK: usize = 256;

/// [`exp_weights`], also writing each block of [`BLOCK`] tokens' sum (the first draw then finds
/// its block in a few hundred additions instead of scanning the vocabulary).
///
/// # Errors
/// As [`softmax_into`].
pub fn exp_weights_blocked(
    logits: &[f32],
    temperature: f64,
    out: &mut Vec<f32>,
    blocks: &mut Vec<f64>,
) -> Result<f64> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::arg("temperature", temperature, "a finite float > 0"));
    }
    if logits.is_empty() {
        return Err(Error::Empty { what: "logits" });
    }
    // One pass for the maximum and for NaNs; the NaN's position is looked up only when there
    // is one.
    #[cfg(target_arch = "x86_64")]
    let (max, nan) = if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), all `max_pass_avx2` requires.
        #[allow(unsafe_code)]
        unsafe {
            max_pass_avx2(logits)
        }
    } else {
        max_pass(logits)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (max, nan) = max_pass(logits);
    if nan {
        let index = logits.iter().position(|x| x.is_nan()).unwrap_or(0);
        return Err(Error::InvalidValue {
            what: "logit",
            index,
            value: "NaN".into(),
            expected: "a number (-inf masks a token)",
        });
    }
    if max.is_infinite() {
        return Err(Error::arg(
            "logits",
            max,
            "at least one finite logit and none +inf",
        ));
    }
    let inv_t = (1.0 / temperature) as f32;
    out.clear();
    out.resize(logits.len(), 0.0);
    blocks.clear();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), all `exp_pass_avx2` requires.
        #[allow(unsafe_code)]
        return Ok(unsafe { exp_pass_avx2(logits, max, inv_t, out, blocks) });
    }
    Ok(exp_pass(logits, max, inv_t, out, blocks))
}

/// The largest logit and whether any is NaN (a NaN fails both comparisons), in eight lanes
/// so the loop vectorises.
#[allow(clippy::inline_always)] // inlined into `max_pass_avx2`, compiled for its features
#[inline(always)]
fn max_pass(logits: &[f32]) -> (f32, bool) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut nan = [false; 8];
    let chunks = logits.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let x = c[i];
            nan[i] |= x.is_nan();
            lanes[i] = if x > lanes[i] { x } else { lanes[i] };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    (
        max,
        nan.iter().any(|&b| b) || rest.iter().any(|x| x.is_nan()),
    )
}

/// [`max_pass`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_pass_avx2(logits: &[f32]) -> (f32, bool) {
    max_pass(logits)
}

/// [`exp_pass`] compiled for AVX2 (8 floats per instruction instead of SSE2's 4; about 2x on
/// this pass). No FMA: contraction would change the last bits, and a seed must give the same
/// token on every x86-64 machine.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_pass_avx2(
    logits: &[f32],
    max: f32,
    inv_t: f32,
    out: &mut [f32],
    blocks: &mut Vec<f64>,
) -> f64 {
    exp_pass(logits, max, inv_t, out, blocks)
}

/// The weights `exp((x - max) * inv_t)` into `out` (as long as `logits`), each block's sum into
/// `blocks`, and the total. Inlined into each caller so it is compiled for the caller's target
/// features.
#[allow(clippy::inline_always)] // without it the AVX2 caller would call the SSE2 copy
#[inline(always)]
fn exp_pass(logits: &[f32], max: f32, inv_t: f32, out: &mut [f32], blocks: &mut Vec<f64>) -> f64 {
    // Two passes: the exp alone vectorises (~1 ns per token); summing into float64 in the same
    // loop kept it scalar (4x slower).
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = fast_exp((x - max) * inv_t);
    }
    let mut total = 0.0;
    for block in out.chunks(BLOCK) {
        let mut sums = [0.0f64; 8];
        let chunks = block.chunks_exact(8);
        let mut sum: f64 = chunks.remainder().iter().map(|&w| f64::from(w)).sum();
        for c in chunks {
            for i in 0..8 {
                sums[i] += f64::from(c[i]);
            }
        }
        sum += sums.iter().sum::<f64>();
        blocks.push(sum);
        total += sum;
    }
    total
}

/// `e^x` for `x <= 0` in float32: `2^k * p(r)` with `r = x - k ln 2` in `[-ln2/2, ln2/2]` and a
/// degree-6 Taylor polynomial (error below 1 ulp-ish, 2e-7 relative); branch-free, so loops over
/// it vectorise. `x < -87` gives 0 (and `-inf`, a masked logit, too).
#[allow(clippy::inline_always)] // part of `exp_pass`'s loop body (see there)
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    let xc = if x < -87.0 { -87.0 } else { x }; // NaN-free input: a plain select vectorises
    let shifted = xc * LOG2E + ROUND;
    let k = shifted - ROUND;
    // The integer k sits in the low mantissa bits of `shifted`: integer ops, no float-to-int cast
    // (Rust's saturating `as` keeps loops scalar).
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits((k_int.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rng;
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = f64::from(x).exp();
            let got = f64::from(fast_exp(x));
            assert!((got - want).abs() <= 4e-7 * want, "x={x}: {got} vs {want}");
            x += 0.001_7;
        }
        assert!(fast_exp(-88.0) == 0.0 && fast_exp(f32::NEG_INFINITY) == 0.0);
        let logits: Vec<f32> = (0..1003).map(|i| (i % 17) as f32 * 0.37 - 3.0).collect();
        let mut w = Vec::new();
        let total = exp_weights(&logits, 0.7, &mut w).unwrap();
        let mut exact = Vec::new();
        softmax_into(&logits, 0.7, &mut exact).unwrap();
        for (a, b) in w.iter().zip(&exact) {
            assert!((f64::from(*a) / total - b).abs() <= 1e-6 * b);
        }
    }

    /// The AVX2 copies compute bit for bit what the portable ones do: a seed gives the same
    /// token on every x86-64 machine.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_passes_equal_portable_passes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = Rng::new(5);
        for n in [1usize, 7, 255, 256, 1000, 49_152] {
            let logits: Vec<f32> = (0..n)
                .map(|_| (rng.uniform() as f32 - 0.5) * 40.0)
                .collect();
            let (max, nan) = max_pass(&logits);
            // SAFETY: AVX2 was detected above.
            #[allow(unsafe_code)]
            let fast = unsafe { max_pass_avx2(&logits) };
            assert!(fast.0.to_bits() == max.to_bits() && fast.1 == nan);
            let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            let ta = exp_pass(&logits, max, 0.7, &mut a, &mut ba);
            // SAFETY: as above.
            #[allow(unsafe_code)]
            let tb = unsafe { exp_pass_avx2(&logits, max, 0.7, &mut b, &mut bb) };
            assert!(ta.to_bits() == tb.to_bits(), "n={n}");
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(ba.iter().zip(&bb).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
