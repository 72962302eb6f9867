//! `y = x @ w.T + bias` for the few rows of a decoding step, reading the weight once.
//!
//! A decoding step multiplies every weight matrix by 1 row (plain decoding) or a few (a draft
//! tree). On a CPU that is bound by memory bandwidth, not arithmetic: the step reads every
//! weight once and does a handful of multiply-adds per weight. BLAS libraries tune GEMM for
//! large operands; for 2-8 rows MKL on an AVX2 AMD EPYC ran a 4-row product 1.3x and a 3-row
//! product 1.75x slower than one row (SmolLM2-135M, float32, 1 thread), while the weight traffic
//! is the same. This kernel streams each weight row once and keeps one accumulator per input row,
//! so up to [`MAX_ROWS_PER_PASS`] rows cost about what one costs. Larger inputs are done in passes.
//!
//! Every output is a dot product accumulated in 8 float32 lanes (AVX2 + FMA where the CPU has
//! them, checked at run time; plain Rust otherwise) and summed across lanes at the end: the same
//! values as a BLAS call up to float rounding (another summation order). [`linear_rows_ref`] is
//! the obviously-correct reference the tests compare against.

// x, w, y, k, n are the names of the linear algebra; indexed loops over a constant row count
// are what keeps the accumulators in registers.
#![allow(clippy::many_single_char_names, clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Input rows one pass over the weight serves (one accumulator set each).
pub const MAX_ROWS_PER_PASS: usize = 8;
/// Output features per parallel task (a task reads this many weight rows).
const CHUNK: usize = 64;

/// Shapes of one call, checked against the slices.
#[derive(Debug, Clone, Copy)]
pub struct LinearShape {
    /// Input rows.
    pub rows: usize,
    /// Input features (the weight's columns).
    pub in_features: usize,
    /// Output features (the weight's rows).
    pub out_features: usize,
}

impl LinearShape {
    fn check(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &[f32]) -> Result<()> {
        let want = [
            ("x", self.rows * self.in_features, x.len()),
            ("weight", self.out_features * self.in_features, w.len()),
            ("out", self.rows * self.out_features, y.len()),
        ];
        for (what, expected, got) in want {
            if expected != got {
                return Err(Error::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        if let Some(b) = bias {
            if b.len() != self.out_features {
                return Err(Error::LengthMismatch {
                    what: "bias",
                    expected: self.out_features,
                    got: b.len(),
                });
            }
        }
        Ok(())
    }
}

/// `y[r, o] = sum_i x[r, i] * w[o, i] + bias[o]`, all row-major. `parallel` splits the output
/// features over the current rayon pool (the caller picks its size with
/// `rayon::ThreadPool::install`); otherwise all runs on the calling thread.
///
/// # Errors
/// A slice whose length does not match `shape` (`LengthMismatch`, naming it).
pub fn linear_rows(
    shape: LinearShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    parallel: bool,
) -> Result<()> {
    shape.check(x, w, bias, y)?;
    let (rows, k, n) = (shape.rows, shape.in_features, shape.out_features);
    if rows == 0 || n == 0 {
        return Ok(());
    }
    // Work on the transpose [out, rows]: each task owns whole output features, contiguous. For
    // one row that is `y`'s own layout, so `y` is written directly.
    let mut yt = if rows == 1 {
        Vec::new()
    } else {
        vec![0.0f32; n * rows]
    };
    let fast = avx2_fma();
    let body = |(c, block): (usize, &mut [f32])| {
        let first = c * CHUNK;
        let count = block.len() / rows;
        for start in (0..rows).step_by(MAX_ROWS_PER_PASS) {
            let take = (rows - start).min(MAX_ROWS_PER_PASS);
            let xs = &x[start * k..(start + take) * k];
            for o in 0..count {
                let wrow = &w[(first + o) * k..(first + o + 1) * k];
                let out = &mut block[o * rows + start..o * rows + start + take];
                dots(wrow, xs, k, out, fast);
            }
        }
    };
    let buf: &mut [f32] = if rows == 1 { &mut *y } else { &mut yt };
    if parallel {
        buf.par_chunks_mut(CHUNK * rows).enumerate().for_each(body);
    } else {
        buf.chunks_mut(CHUNK * rows).enumerate().for_each(body);
    }
    if rows == 1 {
        if let Some(b) = bias {
            y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        return Ok(());
    }
    for r in 0..rows {
        let dst = &mut y[r * n..(r + 1) * n];
        for (o, v) in dst.iter_mut().enumerate() {
            *v = yt[o * rows + r] + bias.map_or(0.0, |b| b[o]);
        }
    }
    Ok(())
}

/// The reference: one float64 dot product per output, rounded once.
///
/// # Errors
/// As [`linear_rows`].
pub fn linear_rows_ref(
    shape: LinearShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    shape.check(x, w, bias, y)?;
    let (k, n) = (shape.in_features, shape.out_features);
    for r in 0..shape.rows {
        for o in 0..n {
            let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
            for i in 0..k {
                acc += f64::from(x[r * k + i]) * f64::from(w[o * k + i]);
            }
            #[allow(clippy::cast_possible_truncation)]
            {
                y[r * n + o] = acc as f32;
            }
        }
    }
    Ok(())
}

/// Whether this CPU runs the AVX2 + FMA path (read once per call of [`linear_rows`]).
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[j] = dot(wrow, xs row j)` for the `out.len()` rows of `xs` (each `k` long); `fast` from
/// [`avx2_fma`].
fn dots(wrow: &[f32], xs: &[f32], k: usize, out: &mut [f32], fast: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if fast {
            // SAFETY: `fast` says the CPU has AVX2 and FMA; the bounds of every read are
            // asserted inside.
            #[allow(unsafe_code)]
            unsafe {
                avx2::dots(wrow, xs, k, out);
            }
            return;
        }
    }
    dots_portable(wrow, xs, k, out);
}

/// Eight lanes per row in plain Rust (the compiler vectorises it for the baseline ISA).
fn dots_portable(wrow: &[f32], xs: &[f32], k: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let xr = &xs[j * k..(j + 1) * k];
        let mut lanes = [0.0f32; 8];
        let mut wc = wrow.chunks_exact(8);
        let mut xc = xr.chunks_exact(8);
        for (a, b) in (&mut wc).zip(&mut xc) {
            for l in 0..8 {
                lanes[l] = a[l].mul_add(b[l], lanes[l]);
            }
        }
        let mut tail = 0.0f32;
        for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
            tail = a.mul_add(*b, tail);
        }
        *o = lane_sum(&lanes) + tail;
    }
}

/// The lanes summed pairwise, in the order the AVX2 path sums them.
fn lane_sum(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(wrow: &[f32], xs: &[f32], k: usize, out: &mut [f32]) {
        assert!(wrow.len() >= k && xs.len() >= out.len() * k && out.len() <= 8);
        // SAFETY (each arm): the assert above bounds every read; the CPU has AVX2 + FMA.
        unsafe {
            match out.len() {
                1 => dots_r::<1>(wrow, xs, k, out),
                2 => dots_r::<2>(wrow, xs, k, out),
                3 => dots_r::<3>(wrow, xs, k, out),
                4 => dots_r::<4>(wrow, xs, k, out),
                5 => dots_r::<5>(wrow, xs, k, out),
                6 => dots_r::<6>(wrow, xs, k, out),
                7 => dots_r::<7>(wrow, xs, k, out),
                _ => dots_r::<8>(wrow, xs, k, out),
            }
        }
    }

    /// `R` rows at once: `R` accumulators (two sets, over alternate chunks, so that one row's
    /// additions are not one long dependency chain) stay in registers, the row count being a
    /// constant.
    ///
    /// # Safety
    /// AVX2 + FMA; `wrow` holds `k` values, `xs` `R * k`, `out` `R`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_r<const R: usize>(wrow: &[f32], xs: &[f32], k: usize, out: &mut [f32]) {
        let w = wrow.as_ptr();
        let x = xs.as_ptr();
        let mut a = [_mm256_setzero_ps(); R];
        let mut b = [_mm256_setzero_ps(); R];
        let pairs = k / 16 * 16;
        let mut i = 0;
        // SAFETY: every offset read is below k (i + 16 <= pairs <= k), within the bounds the
        // caller guarantees.
        unsafe {
            while i < pairs {
                let w0 = _mm256_loadu_ps(w.add(i));
                let w1 = _mm256_loadu_ps(w.add(i + 8));
                for j in 0..R {
                    a[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.add(j * k + i)), a[j]);
                    b[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.add(j * k + i + 8)), b[j]);
                }
                i += 16;
            }
            if i + 8 <= k {
                let w0 = _mm256_loadu_ps(w.add(i));
                for j in 0..R {
                    a[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.add(j * k + i)), a[j]);
                }
                i += 8;
            }
        }
        for j in 0..R {
            let sum: __m256 = _mm256_add_ps(a[j], b[j]);
            let mut lanes = [0.0f32; 8];
            // SAFETY: lanes holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
            let mut tail = 0.0f32;
            for t in i..k {
                tail = wrow[t].mul_add(xs[j * k + t], tail);
            }
            out[j] = super::lane_sum(&lanes) + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                #[allow(clippy::cast_precision_loss)]
                let v = (s % 2001) as f32 / 1000.0 - 1.0;
                v
            })
            .collect()
    }

    #[test]
    fn matches_the_reference() {
        for &(rows, k, n) in &[
            (1, 8, 3),
            (3, 13, 70),
            (4, 576, 192),
            (9, 40, 130),
            (17, 7, 5),
        ] {
            let shape = LinearShape {
                rows,
                in_features: k,
                out_features: n,
            };
            let x = data(rows * k, 1);
            let w = data(n * k, 2);
            let b = data(n, 3);
            for bias in [None, Some(b.as_slice())] {
                let mut want = vec![0.0; rows * n];
                linear_rows_ref(shape, &x, &w, bias, &mut want).unwrap();
                for parallel in [false, true] {
                    let mut got = vec![0.0; rows * n];
                    linear_rows(shape, &x, &w, bias, &mut got, parallel).unwrap();
                    for (g, e) in got.iter().zip(&want) {
                        #[allow(clippy::cast_precision_loss)]
                        let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                        assert!((g - e).abs() <= tol, "{g} vs {e} ({rows}x{k}x{n})");
                    }
                }
                let mut portable = vec![0.0; n];
                dots_portable(&w[..k], &x[..k], k, &mut portable[..1]);
                let mut fast = vec![0.0; 1];
                dots(&w[..k], &x[..k], k, &mut fast, avx2_fma());
                assert!((portable[0] - fast[0]).abs() <= 1e-6 * (1.0 + fast[0].abs()));
            }
        }
    }

    proptest::proptest! {
        /// Any shape (lane tails, several passes of 8 rows, chunk edges), serial or pooled,
        /// bias or not: within float32 rounding of the float64 reference, and the AVX2 path
        /// agrees with the portable one.
        #[test]
        fn any_shape_matches_the_reference(
            rows in 1usize..20, k in 1usize..80, n in 1usize..150, seed in 0u32..1000,
            with_bias: bool, parallel: bool,
        ) {
            let shape = LinearShape { rows, in_features: k, out_features: n };
            let x = data(rows * k, seed);
            let w = data(n * k, seed + 1);
            let b = data(n, seed + 2);
            let bias = with_bias.then_some(b.as_slice());
            let mut want = vec![0.0; rows * n];
            linear_rows_ref(shape, &x, &w, bias, &mut want).unwrap();
            let mut got = vec![0.0; rows * n];
            linear_rows(shape, &x, &w, bias, &mut got, parallel).unwrap();
            #[allow(clippy::cast_precision_loss)]
            let tol = 2e-6 * (k as f32 + 1.0);
            for (g, e) in got.iter().zip(&want) {
                proptest::prop_assert!((g - e).abs() <= tol, "{} vs {}", g, e);
            }
            let mut portable = vec![0.0; rows.min(MAX_ROWS_PER_PASS)];
            let mut fast = portable.clone();
            dots_portable(&w[..k], &x[..portable.len() * k], k, &mut portable);
            dots(&w[..k], &x[..fast.len() * k], k, &mut fast, avx2_fma());
            for (p, f) in portable.iter().zip(&fast) {
                proptest::prop_assert!((p - f).abs() <= tol, "{} vs {}", p, f);
            }
        }
    }

    #[test]
    fn bad_lengths_are_named() {
        let shape = LinearShape {
            rows: 2,
            in_features: 3,
            out_features: 4,
        };
        let mut y = vec![0.0; 8];
        let err = linear_rows(shape, &[0.0; 5], &[0.0; 12], None, &mut y, false).unwrap_err();
        assert!(
            err.to_string().contains("x has length 5, expected 6"),
            "{err}"
        );
        let err =
            linear_rows(shape, &[0.0; 6], &[0.0; 12], Some(&[0.0; 3]), &mut y, false).unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
    }
}
