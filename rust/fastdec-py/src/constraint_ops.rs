//! What every constraint class does the same way once it can check one token and fill a mask:
//! the bitmask as numpy, a mask row written in place, and AWRS steps from logits or
//! probabilities. Each class supplies `check` and `fill` closures over its own state.

use fastdec_core::constrain::{awrs, Estimator, MaskFallback, Rng};
use fastdec_core::{Result, TokenId};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::{array1_from, f32_vec, maybe_detach};
use crate::error::to_py;

/// `(token or None at a dead end, weight, checks)`.
pub type SampleTuple = (Option<u32>, f64, u32);

/// The allowed-token bitmask as int32 words, ceil(V / 32) of them.
pub fn mask_array<'py>(
    py: Python<'py>,
    vocab_len: usize,
    fill: impl FnOnce(&mut [u32]) -> Result<()> + Send,
) -> PyResult<Bound<'py, PyArray1<i32>>> {
    let mut words = vec![0u32; vocab_len.div_ceil(32)];
    maybe_detach(py, vocab_len, || fill(&mut words)).map_err(to_py)?;
    let as_i32: Vec<i32> = words.into_iter().map(|w| w as i32).collect();
    Ok(array1_from(py, &as_i32))
}

/// Writes the mask into row `row` of an int32 array `[rows, ceil(V / 32)]`.
pub fn fill_mask_row(
    py: Python<'_>,
    vocab_len: usize,
    out: &Bound<'_, PyAny>,
    row: usize,
    fill: impl FnOnce(&mut [u32]) -> Result<()> + Send,
) -> PyResult<()> {
    let arr = out
        .cast::<numpy::PyArray2<i32>>()
        .map_err(|_| PyValueError::new_err("out must be a 2-D int32 numpy array"))?;
    let mut rw = arr
        .try_readwrite()
        .map_err(|e| PyValueError::new_err(format!("out is not writable: {e}")))?;
    let mut view = rw.as_array_mut();
    let words = vocab_len.div_ceil(32);
    if view.ncols() != words || row >= view.nrows() {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}; need {words} columns and more than {row} rows",
            view.shape()
        )));
    }
    let mut buf = vec![0u32; words];
    maybe_detach(py, vocab_len, || fill(&mut buf)).map_err(to_py)?;
    for (dst, w) in view.row_mut(row).iter_mut().zip(buf) {
        *dst = w as i32;
    }
    Ok(())
}

fn check_len(got: usize, vocab_len: usize, what: &str) -> PyResult<()> {
    if got == vocab_len {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{what} have {got} entries, the vocabulary {vocab_len}"
        )))
    }
}

/// One AWRS step from logits at a temperature, with the full mask as the fallback after
/// `mask_after` rejections when no weight is wanted (0: never).
#[allow(clippy::too_many_arguments)]
pub fn sample_logits(
    py: Python<'_>,
    vocab_len: usize,
    logits: &Bound<'_, PyAny>,
    temperature: f64,
    est: Estimator,
    seed: u64,
    mask_after: usize,
    mut check: impl FnMut(TokenId) -> bool + Send,
    mut fill: impl FnMut(&mut [u32]) + Send,
) -> PyResult<SampleTuple> {
    let logits = f32_vec(logits, "logits")?;
    check_len(logits.len(), vocab_len, "logits")?;
    let s = maybe_detach(py, logits.len(), || {
        let fallback = (mask_after > 0).then_some(MaskFallback {
            after: mask_after,
            fill: &mut fill,
        });
        awrs::sample_logits_with_mask(
            &logits,
            temperature,
            &mut check,
            fallback,
            est,
            &mut Rng::new(seed),
        )
    })
    .map_err(to_py)?;
    Ok((s.token, s.weight, s.checks))
}

/// One AWRS step from float64 probabilities.
pub fn sample_probs(
    py: Python<'_>,
    vocab_len: usize,
    probs: &[f64],
    est: Estimator,
    seed: u64,
    mut check: impl FnMut(TokenId) -> bool + Send,
) -> PyResult<SampleTuple> {
    check_len(probs.len(), vocab_len, "logits/probs")?;
    let s = maybe_detach(py, probs.len(), || {
        awrs::sample(probs, &mut check, est, &mut Rng::new(seed))
    })
    .map_err(to_py)?;
    Ok((s.token, s.weight, s.checks))
}
