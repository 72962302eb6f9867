//! Binding of `fastdec_core::constraints::grammar`: JSON Schema and Lark grammar constraints
//! (llguidance) with the same methods as `Regex`; a state is an opaque `GrammarState`.

use std::sync::{Arc, Mutex, MutexGuard};

use fastdec_core::constraints::{GrammarConstraint, GrammarSource, GrammarState};
use numpy::PyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::constraints::methods::{self as ops, SampleTuple};
use crate::constraints::tree::{self as ctree, NodeStates, PyPrunedTree};
use crate::constraints::PyTokenVocab;
use crate::convert::{token_arg, token_vec};
use crate::error::to_py;
use crate::tree::PyTokenTree;

/// The parse state of one sequence under a :class:`Grammar`: an immutable value (methods
/// return new states), so tree nodes and particles may share one.
#[pyclass(name = "GrammarState", module = "fastdec._core", frozen)]
pub struct PyGrammarState {
    // Checking a token runs the parser forward and back, which needs `&mut`.
    inner: Mutex<GrammarState>,
}

impl PyGrammarState {
    fn new(state: GrammarState) -> Self {
        Self {
            inner: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GrammarState> {
        relock(&self.inner)
    }
}

#[pymethods]
impl PyGrammarState {
    fn __repr__(&self) -> String {
        "GrammarState(...)".to_owned()
    }
}

/// A Lark grammar (llguidance's dialect: ``start: ...``, regex terminals ``/.../``,
/// ``%json {...}`` for an embedded JSON Schema) the whole decoded text must match, compiled by
/// llguidance over the vocabulary. Same methods as :class:`Regex`; a state is a
/// :class:`GrammarState`. Checking a token costs about a microsecond.
///
/// Raises:
///     ValueError: a grammar llguidance rejects (the message shows the line and column), or a
///         vocabulary without an end-of-sequence id.
#[pyclass(name = "Grammar", module = "fastdec._core", frozen, subclass)]
pub struct PyGrammar {
    inner: Arc<GrammarConstraint>,
}

/// Locks `m`. llguidance catches its own panics, so a poisoned lock still holds a valid state.
fn relock<'a, T>(m: &'a Mutex<T>) -> MutexGuard<'a, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_state(py: Python<'_>, s: GrammarState) -> PyResult<Py<PyGrammarState>> {
    Py::new(py, PyGrammarState::new(s))
}

#[pymethods]
impl PyGrammar {
    #[new]
    fn new(py: Python<'_>, grammar: &str, vocab: &PyTokenVocab) -> PyResult<Self> {
        let compiler = vocab.grammar_compiler(py)?;
        let inner = py
            .detach(|| GrammarConstraint::lark(compiler, grammar))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The grammar, or the JSON Schema text of a :class:`JsonSchema`.
    #[getter]
    fn source(&self) -> &str {
        match self.inner.source() {
            GrammarSource::JsonSchema(s) | GrammarSource::Lark(s) => s,
        }
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().len()
    }

    /// The state of the empty text.
    fn start(&self, py: Python<'_>) -> PyResult<Py<PyGrammarState>> {
        new_state(py, self.inner.start())
    }

    /// Whether the text can still be extended (or ended) validly.
    fn is_live(&self, state: &PyGrammarState) -> bool {
        self.inner.is_live(&state.lock())
    }

    /// Whether the text is complete: end of sequence is allowed here.
    fn is_complete(&self, state: &PyGrammarState) -> bool {
        self.inner.is_complete(&mut state.lock())
    }

    /// Whether ``token`` may follow the text (end of sequence: iff it is complete; other special
    /// tokens never).
    fn allows(&self, state: &PyGrammarState, token: i128) -> PyResult<bool> {
        let t = token_arg(token, "token")?;
        self.inner.allows(&mut state.lock(), t).map_err(to_py)
    }

    /// The state after ``tokens``, or None as soon as one is not allowed.
    fn advance(
        &self,
        py: Python<'_>,
        state: &PyGrammarState,
        tokens: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyGrammarState>>> {
        let tokens = token_vec(tokens, "tokens")?;
        let next = self.inner.advance(&state.lock(), &tokens).map_err(to_py)?;
        next.map(|s| new_state(py, s)).transpose()
    }

    /// The allowed tokens as an int32 bitmask of ``ceil(V / 32)`` words (bit ``t % 32`` of
    /// word ``t // 32``), the layout of llguidance and XGrammar.
    fn mask<'py>(
        &self,
        py: Python<'py>,
        state: &PyGrammarState,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        ops::mask_array(py, &*self.inner, &mut state.lock())
    }

    /// Writes the mask of ``state`` into row ``row`` of an int32 array ``[rows, ceil(V / 32)]``.
    fn fill_mask(
        &self,
        py: Python<'_>,
        state: &PyGrammarState,
        out: &Bound<'_, PyAny>,
        row: usize,
    ) -> PyResult<()> {
        ops::fill_mask_row(py, &*self.inner, &mut state.lock(), out, row)
    }

    /// One AWRS step: ``(token or None at a dead end, weight, checks)``; ``estimator`` is
    /// ``"none"``, ``"two-run"`` or ``"geometric"``. Without weights, after ``mask_after``
    /// rejections (default 32; 0: never) the token is drawn under the full mask instead (same
    /// law; bounds the cost when the model disagrees with the constraint).
    #[pyo3(signature = (state, logits, temperature=1.0, estimator="none", seed=0, mask_after=fastdec_core::constraints::awrs::MASK_AFTER))]
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        py: Python<'_>,
        state: &PyGrammarState,
        logits: &Bound<'_, PyAny>,
        temperature: f64,
        estimator: &str,
        seed: u64,
        mask_after: usize,
    ) -> PyResult<SampleTuple> {
        let c = &*self.inner;
        ops::sample(
            py,
            c,
            &mut state.lock(),
            logits,
            temperature,
            estimator,
            seed,
            mask_after,
        )
    }

    /// One AWRS step from probabilities (float64, normalised): ``(token or None, weight,
    /// checks)``.
    #[pyo3(signature = (state, probs, estimator="none", seed=0))]
    fn sample_probs(
        &self,
        py: Python<'_>,
        state: &PyGrammarState,
        probs: &Bound<'_, PyAny>,
        estimator: &str,
        seed: u64,
    ) -> PyResult<SampleTuple> {
        ops::sample_probs(py, &*self.inner, &mut state.lock(), probs, estimator, seed)
    }

    /// The subtree of ``tree`` whose every token the constraint allows after the text in
    /// ``state`` (the root stands for text already there), one walk in Rust; tokens outside the
    /// vocabulary are pruned.
    fn prune_tree(
        &self,
        py: Python<'_>,
        tree: &PyTokenTree,
        state: &PyGrammarState,
    ) -> PyResult<PyPrunedTree> {
        let s = state.lock().clone();
        ctree::prune(py, &*self.inner, tree, s, NodeStates::Grammar)
    }

    /// Verifies a tree from :meth:`prune_tree` against the target's rows at its nodes: greedy
    /// from ``logits`` (float32 ``[num_nodes, vocab_size]``; the allowed token of highest
    /// logit, lowest id among ties) or sampled from ``probs`` (float32/float64, one AWRS draw
    /// per visited node from ``seed``). Returns ``(accepted_nodes, bonus_token, state)``:
    /// accepted node ids root first, the token after them (None at a dead end: nothing allowed
    /// has mass) and the state after it.
    #[pyo3(signature = (pruned, *, logits=None, probs=None, seed=0))]
    fn verify_tree(
        &self,
        py: Python<'_>,
        pruned: &PyPrunedTree,
        logits: Option<&Bound<'_, PyAny>>,
        probs: Option<&Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<(Vec<i32>, Option<u32>, Py<PyGrammarState>)> {
        let r = ctree::verify(py, &*self.inner, pruned, logits, probs, seed, |s| match s {
            NodeStates::Grammar(v) => Some(v),
            NodeStates::Dfa(_) => None,
        })?;
        Ok((r.accepted_nodes, r.bonus_token, new_state(py, r.state)?))
    }

    fn __repr__(&self) -> String {
        match self.inner.source() {
            GrammarSource::Lark(s) => format!("Grammar({s:?})"),
            GrammarSource::JsonSchema(s) => format!("JsonSchema({s:?})"),
        }
    }
}

/// A JSON Schema the decoded text must satisfy (llguidance's compiler: ``$ref``, ``anyOf``,
/// formats, ``additionalProperties``, ...; see its ``docs/json_schema.md``).
///
/// Args:
///     schema: the schema as JSON text, a dict, or a bool.
///     vocab: the model's vocabulary.
///     whitespace_flexible: allow any JSON whitespace between tokens (llguidance's default);
///         False allows none beyond the separators ``,`` and ``:``. An ``"x-guidance"`` entry
///         in the schema overrides it.
///
/// Raises:
///     ValueError: text that is not JSON (with line and column) or a schema llguidance rejects
///         (with the JSON pointer of the offending subschema, e.g. ``at /properties/a``).
///     TypeError: a schema that is neither text, a dict nor a bool.
#[pyclass(name = "JsonSchema", module = "fastdec._core", frozen, extends = PyGrammar)]
pub struct PyJsonSchema;

#[pymethods]
impl PyJsonSchema {
    #[new]
    #[pyo3(signature = (schema, vocab, *, whitespace_flexible=true))]
    fn new(
        py: Python<'_>,
        schema: &Bound<'_, PyAny>,
        vocab: &PyTokenVocab,
        whitespace_flexible: bool,
    ) -> PyResult<PyClassInitializer<Self>> {
        let json = py.import("json")?;
        let mut value = if schema.is_instance_of::<PyString>() {
            json.call_method1("loads", (schema,)).map_err(|e| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "invalid schema: not valid JSON: {e}"
                ))
            })?
        } else if schema.is_instance_of::<pyo3::types::PyDict>()
            || schema.is_instance_of::<pyo3::types::PyBool>()
        {
            schema.clone()
        } else {
            return Err(PyTypeError::new_err(format!(
                "schema must be a JSON string, a dict or a bool, got {}",
                schema.get_type().name()?
            )));
        };
        // llguidance reads its options from "x-guidance"; the caller's own entry wins.
        if let Ok(d) = value.cast::<pyo3::types::PyDict>() {
            if !d.contains("x-guidance")? {
                let d = d.copy()?;
                let opts = pyo3::types::PyDict::new(py);
                opts.set_item("whitespace_flexible", whitespace_flexible)?;
                d.set_item("x-guidance", opts)?;
                value = d.into_any();
            }
        }
        let text: String = json.call_method1("dumps", (value,))?.extract()?;
        let compiler = vocab.grammar_compiler(py)?;
        let inner = py
            .detach(|| GrammarConstraint::json_schema(compiler, &text))
            .map_err(to_py)?;
        Ok(PyClassInitializer::from(PyGrammar {
            inner: Arc::new(inner),
        })
        .add_subclass(Self))
    }
}
