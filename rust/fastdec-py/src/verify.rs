//! Binding of batched stochastic verification (trees as a list or a `DraftBatch`).

use fastdec_core::TokenTree;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::convert::{coin_pairs, float_array, maybe_detach, with_floats};
use crate::drafter::PyDraftBatch;
use crate::error::to_py;
use crate::tree::PyTokenTree;

/// ``TokenTree.verify_stochastic`` for ``B`` trees (or a :class:`DraftBatch`) padded to ``M``
/// nodes, in parallel for large batches: ``probs`` ``[B, M, V]`` float32/float64 and ``coins``
/// ``[B, M, 2]`` (rows past a tree's nodes are ignored). Returns one ``(accepted_nodes,
/// bonus_token)`` per tree.
///
/// Raises:
///     ValueError: as ``TokenTree.verify_stochastic``, or a tree of more than ``M`` nodes.
///     TypeError: ``trees`` or ``probs`` of the wrong type.
#[pyfunction]
pub fn verify_stochastic_batch<'py>(
    py: Python<'py>,
    trees: &Bound<'py, PyAny>,
    probs: &Bound<'py, PyAny>,
    coins: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Vec<i32>, u32)>> {
    let batch;
    let listed: Vec<PyRef<'py, PyTokenTree>>;
    let refs: Vec<&TokenTree> = if let Ok(b) = trees.cast::<PyDraftBatch>() {
        batch = b.clone();
        batch.get().inner.trees().iter().collect()
    } else {
        listed = trees.extract().map_err(|_| {
            PyTypeError::new_err("trees must be a list of TokenTree or a DraftBatch")
        })?;
        listed.iter().map(|t| &t.inner).collect()
    };
    let probs = float_array(probs, 3, "probs")?;
    let (rows, max_nodes, vocab) = (probs.shape()[0], probs.shape()[1], probs.shape()[2]);
    let coins = coin_pairs(coins, &[rows, max_nodes])?;
    let results = with_floats!(&probs, |p| maybe_detach(py, vocab * refs.len(), || {
        fastdec_core::verify_stochastic_batch(&refs, p, max_nodes, vocab, &coins)
    }))
    .map_err(to_py)?;
    Ok(results
        .into_iter()
        .map(|r| (r.accepted_nodes, r.bonus_token))
        .collect())
}
