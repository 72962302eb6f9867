//! `_linear_rows`: the binding of `fastdec_core::linear` for the CPU linear path
//! `fastdec.generation.cpu_linear` calls `rows` (the step's few rows against each weight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fastdec_core::linear::{linear_rows, LinearShape};
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::to_py;

/// A rayon pool per thread count, made on first use and kept (the caller passes torch's
/// thread count, so the kernel uses the cores torch was told to use, not all of them).
fn pool(threads: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = pools.get(&threads) {
        return Ok(Arc::clone(p));
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastdec-linear-{i}"))
        .build()
        .map_err(|e| PyValueError::new_err(format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(threads, Arc::clone(&p));
    Ok(p)
}

/// ``out = x @ weight.T + bias`` for a few float32 rows, reading the weight once (see
/// ``fastdec.generation.cpu_linear``): ``x`` ``[R, K]``, ``weight`` ``[N, K]``, ``bias`` ``[N]``
/// or None, ``out`` ``[R, N]``, all C-contiguous float32; ``threads`` workers (1: this thread).
/// The GIL is released while it runs.
///
/// Raises:
///     ValueError: shapes that do not match, a non-contiguous array, ``threads`` of 0.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, out, threads=1))]
pub fn _linear_rows(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f32>,
    weight: PyReadonlyArray2<'_, f32>,
    bias: Option<PyReadonlyArray1<'_, f32>>,
    mut out: PyReadwriteArray2<'_, f32>,
    threads: usize,
) -> PyResult<()> {
    if threads == 0 {
        return Err(PyValueError::new_err("threads must be at least 1, got 0"));
    }
    let shape = LinearShape {
        rows: x.shape()[0],
        in_features: x.shape()[1],
        out_features: weight.shape()[0],
    };
    if weight.shape()[1] != shape.in_features || out.shape() != [shape.rows, shape.out_features] {
        return Err(PyValueError::new_err(format!(
            "shapes do not match: x {:?}, weight {:?}, out {:?} (expected x [R, K], weight [N, K], \
             out [R, N])",
            x.shape(),
            weight.shape(),
            out.shape()
        )));
    }
    let contiguous = |name: &str| PyValueError::new_err(format!("{name} must be C-contiguous"));
    // `as_slice` also accepts Fortran order, which would be read transposed: C order only.
    for (name, c) in [
        ("x", x.is_c_contiguous()),
        ("weight", weight.is_c_contiguous()),
        ("bias", bias.as_ref().is_none_or(|b| b.is_c_contiguous())),
        ("out", out.is_c_contiguous()),
    ] {
        if !c {
            return Err(contiguous(name));
        }
    }
    let xs = x.as_slice().map_err(|_| contiguous("x"))?;
    let ws = weight.as_slice().map_err(|_| contiguous("weight"))?;
    let bs = match &bias {
        Some(b) => Some(b.as_slice().map_err(|_| contiguous("bias"))?),
        None => None,
    };
    let ys = out.as_slice_mut().map_err(|_| contiguous("out"))?;
    let pool = if threads > 1 {
        Some(pool(threads)?)
    } else {
        None
    };
    py.detach(|| match pool {
        Some(p) => p.install(|| linear_rows(shape, xs, ws, bs, ys, true)),
        None => linear_rows(shape, xs, ws, bs, ys, false),
    })
    .map_err(to_py)
}
