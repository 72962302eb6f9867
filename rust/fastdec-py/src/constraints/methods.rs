//! The methods every constraint class has, written once over the core's `Constraint` trait:
//! the bitmask as numpy, a mask row written in place, and AWRS steps from logits or
//! probabilities. `Regex` and `Grammar` call these with their own constraint and state.

use fastdec_core::constraints::{Constraint, Estimator, Rng};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::{array1_from, f32_vec, maybe_detach};
use crate::error::to_py;

/// `(token or None at a dead end, weight, checks)`.
pub type SampleTuple = (Option<u32>, f64, u32);

/// The allowed-token bitmask as int32 words, ceil(V / 32) of them.
pub fn mask_array<'py, C: Constraint>(
    py: Python<'py>,
    c: &C,
    state: &mut C::State,
) -> PyResult<Bound<'py, PyArray1<i32>>> {
    let vocab_len = c.vocab().len();
    let mut words = vec![0u32; vocab_len.div_ceil(32)];
    maybe_detach(py, vocab_len, || c.fill_mask(state, &mut words)).map_err(to_py)?;
    let as_i32: Vec<i32> = words.into_iter().map(|w| w as i32).collect();
    Ok(array1_from(py, &as_i32))
}

/// Writes the mask into row `row` of an int32 array `[rows, ceil(V / 32)]`.
pub fn fill_mask_row<C: Constraint>(
    py: Python<'_>,
    c: &C,
    state: &mut C::State,
    out: &Bound<'_, PyAny>,
    row: usize,
) -> PyResult<()> {
    let vocab_len = c.vocab().len();
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
    maybe_detach(py, vocab_len, || c.fill_mask(state, &mut buf)).map_err(to_py)?;
    for (dst, w) in view.row_mut(row).iter_mut().zip(buf) {
        *dst = w as i32;
    }
    Ok(())
}

/// One AWRS step from logits at a temperature (see `Constraint::sample`).
#[allow(clippy::too_many_arguments)]
pub fn sample<C: Constraint>(
    py: Python<'_>,
    c: &C,
    state: &mut C::State,
    logits: &Bound<'_, PyAny>,
    temperature: f64,
    estimator: &str,
    seed: u64,
    mask_after: usize,
) -> PyResult<SampleTuple> {
    let est = self::estimator(estimator)?;
    let logits = f32_vec(logits, "logits")?;
    let s = maybe_detach(py, logits.len(), || {
        c.sample(
            state,
            &logits,
            temperature,
            est,
            mask_after,
            &mut Rng::new(seed),
        )
    })
    .map_err(to_py)?;
    Ok((s.token, s.weight, s.checks))
}

/// One AWRS step from float64 probabilities (see `Constraint::sample_probs`).
pub fn sample_probs<C: Constraint>(
    py: Python<'_>,
    c: &C,
    state: &mut C::State,
    probs: &Bound<'_, PyAny>,
    estimator: &str,
    seed: u64,
) -> PyResult<SampleTuple> {
    let est = self::estimator(estimator)?;
    let probs = f64_vec(probs)?;
    let s = maybe_detach(py, probs.len(), || {
        c.sample_probs(state, &probs, est, &mut Rng::new(seed))
    })
    .map_err(to_py)?;
    Ok((s.token, s.weight, s.checks))
}

/// The AWRS weight estimator named `name`.
pub fn estimator(name: &str) -> PyResult<Estimator> {
    match name {
        "none" => Ok(Estimator::None),
        "two-run" => Ok(Estimator::TwoRun),
        "geometric" => Ok(Estimator::Geometric),
        _ => Err(PyValueError::new_err(format!(
            "invalid estimator={name:?}: expected 'none', 'two-run' or 'geometric'"
        ))),
    }
}

/// A float64 numpy array (copied in one go) or any sequence of floats.
pub fn f64_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    if let Ok(arr) = obj.cast::<PyArray1<f64>>() {
        return Ok(arr.readonly().as_array().iter().copied().collect());
    }
    obj.extract()
}
