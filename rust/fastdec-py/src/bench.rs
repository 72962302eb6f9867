//! `_time_tree_step`: the per-step tree work timed inside Rust, so that `benches/tree_step.py`
//! can report Rust, Python and NumPy percentiles from one run (criterion reports means only).

use std::mem::MaybeUninit;
use std::time::Instant;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::to_py;
use crate::template::PyTreeTemplate;

/// Benchmark helper: nanoseconds of each per-step set (fill, positions, float32 mask, leaf
/// paths, greedy verification) timed inside Rust; ``tokens``/``target_argmax`` are ``[steps, N]``.
// Each step allocates its outputs, as the Python API does.
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
    let n = template.inner().num_nodes();
    if tokens.shape() != target_argmax.shape() || tokens.shape()[1] != n {
        return Err(PyValueError::new_err(format!(
            "tokens and target_argmax must both be [steps, {n}]"
        )));
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
            let mut times = Vec::with_capacity(tokens.len() / n);
            for (tok, am) in tokens.chunks_exact(n).zip(argmax.chunks_exact(n)) {
                let t0 = Instant::now();
                let tree = template.fill(fastdec_core::token_ids_from_i32(tok, "tokens")?)?;
                let pos = tree.position_ids(prefix_len)?;
                let mut mask = Vec::<MaybeUninit<f32>>::with_capacity(n * (mask_prefix_len + n));
                mask.resize(n * (mask_prefix_len + n), MaybeUninit::uninit());
                tree.write_additive_mask(mask_prefix_len, &mut mask)?;
                let paths = tree.leaf_paths().len();
                let verdict = tree.verify_greedy(am)?;
                std::hint::black_box((pos, mask, paths, verdict));
                times.push(t0.elapsed().as_nanos() as u64);
            }
            Ok(times)
        })
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, times))
}
