//! Binding of `fastdec_core::constraints::tree_verify`: a draft tree pruned by a constraint (with
//! the state after every kept node, kept on the Rust side) and its verification. `Regex` and
//! `Grammar` each call these with their own constraint and state type.

use std::sync::{Mutex, MutexGuard};

use fastdec_core::constraints::{
    prune_tree, verify_tree, ConstrainedVerification, Constraint, GrammarState, Rng, Target,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::convert::{float_array, not_contiguous, FloatArray};
use crate::error::to_py;
use crate::tree::PyTokenTree;

/// The state after every node of a pruned tree, by kind of constraint.
pub enum NodeStates {
    Dfa(Vec<u32>),
    Grammar(Vec<GrammarState>),
}

/// A draft tree cut down to what a constraint allows after a sequence's text (from
/// ``Regex.prune_tree`` or ``Grammar.prune_tree``); it holds each kept node's state for that
/// constraint's ``verify_tree``.
#[pyclass(name = "PrunedTree", module = "fastdec._core", frozen)]
pub struct PyPrunedTree {
    tree: Py<PyTokenTree>,
    changed: bool,
    // The constraint that pruned it (its address): states mean nothing to another one.
    owner: usize,
    states: Mutex<NodeStates>,
}

#[pymethods]
impl PyPrunedTree {
    /// The kept nodes, renumbered in their original order.
    #[getter]
    fn tree(&self, py: Python<'_>) -> Py<PyTokenTree> {
        self.tree.clone_ref(py)
    }

    /// Whether nodes were removed (the tree's node ids no longer match the proposal).
    #[getter]
    fn changed(&self) -> bool {
        self.changed
    }

    fn __repr__(&self) -> String {
        format!(
            "PrunedTree(num_nodes={}, changed={})",
            self.tree.get().inner.num_nodes(),
            self.changed
        )
    }
}

impl PyPrunedTree {
    fn lock(&self) -> MutexGuard<'_, NodeStates> {
        // Verification leaves states observably unchanged, so a poisoned lock still holds them.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Prunes `tree` under `constraint` from `state` without the GIL; `wrap` files the states.
pub fn prune<C: Constraint>(
    py: Python<'_>,
    constraint: &C,
    tree: &PyTokenTree,
    state: C::State,
    wrap: fn(Vec<C::State>) -> NodeStates,
) -> PyResult<PyPrunedTree> {
    let inner = &tree.inner;
    let pruned = py.detach(move || prune_tree(constraint, inner, &state));
    Ok(PyPrunedTree {
        tree: Py::new(py, PyTokenTree::from(pruned.tree))?,
        changed: pruned.changed,
        owner: std::ptr::from_ref(constraint) as usize,
        states: Mutex::new(wrap(pruned.states)),
    })
}

/// Verifies `pruned` against the target's rows (``logits`` float32 for greedy, or ``probs``
/// float32/float64 for sampling, ``[num_nodes, vocab_size]``) without the GIL; `states` picks
/// this constraint's kind of states out of the tree.
pub fn verify<C: Constraint>(
    py: Python<'_>,
    constraint: &C,
    pruned: &PyPrunedTree,
    logits: Option<&Bound<'_, PyAny>>,
    probs: Option<&Bound<'_, PyAny>>,
    seed: u64,
    states: fn(&mut NodeStates) -> Option<&mut Vec<C::State>>,
) -> PyResult<ConstrainedVerification<C::State>> {
    if pruned.owner != std::ptr::from_ref(constraint) as usize {
        return Err(PyValueError::new_err(
            "this PrunedTree was pruned by another constraint; verify it with that one",
        ));
    }
    let tree = &pruned.tree.get().inner;
    let mut guard = pruned.lock();
    let Some(states) = states(&mut guard) else {
        return Err(PyValueError::new_err(
            "this PrunedTree holds another kind of state",
        ));
    };
    let (arr, logits) = match (logits, probs) {
        (Some(l), None) => (float_array(l, 2, "logits")?, true),
        (None, Some(p)) => (float_array(p, 2, "probs")?, false),
        _ => {
            return Err(PyValueError::new_err(
                "give exactly one of logits (greedy) or probs (sampling)",
            ))
        }
    };
    let target = match (&arr, logits) {
        (FloatArray::F32(a), true) => Target::Logits(a.as_slice().map_err(not_contiguous)?),
        (FloatArray::F64(_), true) => {
            return Err(PyTypeError::new_err(
                "logits must be a float32 numpy array, got dtype float64",
            ))
        }
        (FloatArray::F32(a), false) => Target::Probs32(a.as_slice().map_err(not_contiguous)?),
        (FloatArray::F64(a), false) => Target::Probs64(a.as_slice().map_err(not_contiguous)?),
    };
    py.detach(|| verify_tree(constraint, tree, states, target, &mut Rng::new(seed)))
        .map_err(to_py)
}
