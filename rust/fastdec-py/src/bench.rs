//! `_time_tree_step`: the binding of `fastdec_core::bench::time_tree_step` for
//! `benches/tree_step.py`.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::to_py;
use crate::template::PyTreeTemplate;

/// Benchmark helper: nanoseconds of each per-step set (fill, positions, float32 mask, leaf
/// paths, greedy verification) timed inside Rust; ``tokens``/``target_argmax`` are ``[steps, N]``.
#[pyfunction]
#[pyo3(signature = (template, tokens, target_argmax, *, prefix_len, mask_prefix_len))]
pub fn _time_tree_step<'py>(
    py: Python<'py>,
    template: PyRef<'py, PyTreeTemplate>,
    tokens: &Bound<'py, PyArray2<i32>>,
    target_argmax: &Bound<'py, PyArray2<i32>>,
    prefix_len: usize,
    mask_prefix_len: usize,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    if tokens.ndim() != 2 {
        return Err(PyValueError::new_err("tokens must be [steps, num_nodes]"));
    }
    let tokens: Vec<i32> = tokens.readonly().as_array().iter().copied().collect();
    let argmax: Vec<i32> = target_argmax
        .readonly()
        .as_array()
        .iter()
        .copied()
        .collect();
    let template = template.inner().clone();
    let times = py
        .detach(|| {
            fastdec_core::bench::time_tree_step(
                &template,
                &tokens,
                &argmax,
                prefix_len,
                mask_prefix_len,
            )
        })
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, times))
}
