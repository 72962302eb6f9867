//! Bindings of static tree templates and Sequoia's optimal templates.

use fastdec_core::{AcceptanceTable, TreeTemplate};
use numpy::{PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::convert::{count, token_arg, token_vec, tokens_as_i32, view1};
use crate::error::to_py;
use crate::tree::PyTokenTree;

/// A static tree of candidate *ranks* (Medusa "choices", Token Recycling "2.2.2").
///
/// Args:
///     paths: rank paths of the non-root nodes, e.g. ``[[0], [1], [0, 0]]``; every proper
///         prefix must be listed. Nodes are ordered by (depth, ranks).
#[pyclass(name = "TreeTemplate", module = "fastdec._core", frozen)]
pub struct PyTreeTemplate {
    inner: TreeTemplate,
    expected: Option<f64>,
}

fn acceptance_table(obj: &Bound<'_, PyAny>) -> PyResult<AcceptanceTable> {
    let (probs, rows, ranks) = if let Ok(arr) = obj.cast::<PyArrayDyn<f64>>() {
        let ro = arr.readonly();
        let dims = ro.shape().to_vec();
        let data: Vec<f64> = ro.as_array().iter().copied().collect();
        match dims.as_slice() {
            [r] => (data, 1, *r),
            [d, r] => (data, *d, *r),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "acceptance must be 1-D or 2-D, got {} dimensions",
                    dims.len()
                )))
            }
        }
    } else if let Ok(v) = obj.extract::<Vec<f64>>() {
        let r = v.len();
        (v, 1, r)
    } else if let Ok(rows) = obj.extract::<Vec<Vec<f64>>>() {
        let r = rows.first().map_or(0, Vec::len);
        if let Some((i, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != r) {
            return Err(PyValueError::new_err(format!(
                "acceptance row {i} has {} entries, row 0 has {r}",
                row.len()
            )));
        }
        let d = rows.len();
        (rows.into_iter().flatten().collect(), d, r)
    } else {
        return Err(PyTypeError::new_err(
            "acceptance must be a float64 array or a (nested) list of floats",
        ));
    };
    AcceptanceTable::new(probs, rows, ranks).map_err(to_py)
}

impl PyTreeTemplate {
    pub fn inner(&self) -> &TreeTemplate {
        &self.inner
    }
}

#[pymethods]
impl PyTreeTemplate {
    #[new]
    fn new(paths: &Bound<'_, PyAny>) -> PyResult<Self> {
        // An int beyond i64 is a bad value, not a conversion failure: ValueError, like -1.
        let paths: Vec<Vec<i64>> = paths.extract().map_err(|e: PyErr| {
            if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(paths.py()) {
                PyValueError::new_err(format!("paths hold a rank out of range: {e}"))
            } else {
                e
            }
        })?;
        let mut ranks = Vec::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            // Ranks are exposed as int32 (`ranks`), so they must fit in it.
            let p: Option<Vec<u32>> = path
                .iter()
                .map(|&r| {
                    u32::try_from(r)
                        .ok()
                        .filter(|&r| r <= fastdec_core::MAX_TOKEN_ID)
                })
                .collect();
            ranks.push(p.ok_or_else(|| {
                PyValueError::new_err(format!(
                    "path {i} {path:?} has a rank outside [0, 2147483647]"
                ))
            })?);
        }
        Ok(PyTreeTemplate {
            inner: TreeTemplate::from_paths(&ranks).map_err(to_py)?,
            expected: None,
        })
    }

    /// Token Recycling's 81-node "2.2.2" template (Luo et al. 2024).
    #[staticmethod]
    fn token_recycling() -> Self {
        PyTreeTemplate {
            inner: TreeTemplate::token_recycling(),
            expected: None,
        }
    }

    /// Sequoia's DP-optimal template; see :func:`optimal_template`.
    #[staticmethod]
    #[pyo3(signature = (acceptance, *, budget, max_depth))]
    fn optimal(
        py: Python<'_>,
        acceptance: &Bound<'_, PyAny>,
        budget: i128,
        max_depth: i128,
    ) -> PyResult<Self> {
        let (budget, max_depth) = (count(budget, "budget")?, count(max_depth, "max_depth")?);
        let table = acceptance_table(acceptance)?;
        let (inner, value) = py
            .detach(|| fastdec_core::optimal_template(&table, budget, max_depth))
            .map_err(to_py)?;
        Ok(PyTreeTemplate {
            inner,
            expected: Some(value),
        })
    }

    /// Expected accepted drafts per step under per-rank (or ``[depth, rank]``) acceptance.
    fn expected_accepted(&self, acceptance: &Bound<'_, PyAny>) -> PyResult<f64> {
        Ok(self.inner.expected_accepted(&acceptance_table(acceptance)?))
    }

    /// Expected accepted drafts under the table the template was optimised for.
    #[getter]
    fn optimal_value(&self) -> Option<f64> {
        self.expected
    }
    #[getter]
    fn num_nodes(&self) -> usize {
        self.inner.num_nodes()
    }
    #[getter]
    fn num_ranks(&self) -> usize {
        self.inner.num_ranks()
    }
    #[getter]
    fn max_depth(&self) -> usize {
        self.inner.shape().max_depth()
    }
    #[getter]
    fn parents<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.shape().parents())
    }
    #[getter]
    fn depth<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.shape().depth())
    }
    #[getter]
    fn ranks<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), tokens_as_i32(slf.get().inner.ranks()))
    }

    fn paths(&self) -> Vec<Vec<u32>> {
        self.inner.paths()
    }

    /// A tree from ``[N]`` tokens (root first) sharing this template's shape and buffers.
    /// Siblings with equal tokens are merged (subtrees united) instead of rejected.
    fn fill(&self, tokens: &Bound<'_, PyAny>) -> PyResult<PyTokenTree> {
        Ok(self
            .inner
            .fill(token_vec(tokens, "tokens")?)
            .map_err(to_py)?
            .into())
    }

    /// Medusa-style fill from ``candidates [max_depth, k] int32``: the node at depth ``d``
    /// with rank ``r`` takes ``candidates[d - 1, r]``.
    fn fill_ranked(&self, root: i128, candidates: &Bound<'_, PyAny>) -> PyResult<PyTokenTree> {
        let root = token_arg(root, "root")?;
        let arr = candidates.cast::<PyArray2<i32>>().map_err(|_| {
            PyTypeError::new_err("candidates must be a 2-D int32 numpy array [max_depth, k]")
        })?;
        let ro = arr.readonly();
        let k = ro.shape()[1];
        let flat: Vec<i32> = ro.as_array().iter().copied().collect();
        let flat = fastdec_core::token_ids_from_i32(&flat, "candidates").map_err(to_py)?;
        Ok(self
            .inner
            .fill_ranked(root, &flat, k)
            .map_err(to_py)?
            .into())
    }

    fn __len__(&self) -> usize {
        self.inner.num_nodes()
    }

    fn __repr__(&self) -> String {
        format!(
            "TreeTemplate(num_nodes={}, max_depth={}, num_ranks={})",
            self.inner.num_nodes(),
            self.inner.shape().max_depth(),
            self.inner.num_ranks()
        )
    }
}

/// The template maximising expected accepted tokens (Sequoia, arXiv 2402.12374).
///
/// Args:
///     acceptance: ``[ranks]`` or ``[depths, ranks]`` probabilities that the rank-``r`` child
///         of an accepted node (at depth ``d``) is accepted; deeper levels reuse the last row.
///     budget: nodes, root included.
///     max_depth: depth limit.
#[pyfunction]
#[pyo3(signature = (acceptance, *, budget, max_depth))]
pub fn optimal_template(
    py: Python<'_>,
    acceptance: &Bound<'_, PyAny>,
    budget: i128,
    max_depth: i128,
) -> PyResult<PyTreeTemplate> {
    PyTreeTemplate::optimal(py, acceptance, budget, max_depth)
}
