//! Bindings of the drafters (see `fastdec.NgramDrafter`).

use std::sync::Arc;

use fastdec_core::drafter::{
    DraftStats, Drafter, HybridDrafter, NgramConfig, NgramDrafter, NgramMode, RecycleDrafter,
    RequestId, TrieConfig, TrieDrafter,
};
use fastdec_core::parallel::MeasuredPool;
use fastdec_core::TreeTemplate;
use numpy::{PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};

use crate::convert::{count, maybe_detach, token_vec};
use crate::error::to_py;
use crate::template::PyTreeTemplate;
use crate::tree::PyTokenTree;

pub(crate) fn to_request_id(obj: &Bound<'_, PyAny>) -> PyResult<RequestId> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(RequestId::Str(s.to_str()?.to_owned()));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj
            .extract::<i64>()
            .map(RequestId::Int)
            .map_err(|_| PyValueError::new_err(format!("request id {obj} does not fit in int64")));
    }
    Err(PyTypeError::new_err("request ids must be int or str"))
}

fn stats_dict<'py>(py: Python<'py>, s: &DraftStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("steps", s.steps)?;
    d.set_item("drafted", s.drafted)?;
    d.set_item("emitted", s.emitted)?;
    d.set_item("mean_accepted", s.mean_accepted())?;
    d.set_item("propose_us", s.propose_ns as f64 / 1e3)?;
    d.set_item("accept_us", s.accept_ns as f64 / 1e3)?;
    Ok(d)
}

/// Reads `topk_ids` (`[num_nodes, k]` int32) into a flat vector and `k`.
fn topk_arg(topk: Option<&Bound<'_, PyAny>>) -> PyResult<Option<(Vec<u32>, usize)>> {
    let Some(obj) = topk else { return Ok(None) };
    let arr = obj
        .cast::<PyArray2<i32>>()
        .map_err(|_| PyTypeError::new_err("topk_ids must be a 2-D int32 array [num_nodes, k]"))?;
    let ro = arr.readonly();
    let k = ro.shape()[1];
    let flat: Vec<i32> = ro.as_array().iter().copied().collect();
    Ok(Some((
        fastdec_core::token_ids_from_i32(&flat, "topk_ids").map_err(to_py)?,
        k,
    )))
}

/// The initializer of a concrete drafter class over the shared base holding `inner`.
fn extend_base<S>(inner: Arc<dyn Drafter>, sub: S) -> PyClassInitializer<S>
where
    S: pyo3::PyClass<BaseType = PyBaseDrafter>,
{
    PyClassInitializer::from(PyBaseDrafter {
        inner,
        pool: MeasuredPool::default(),
    })
    .add_subclass(sub)
}

/// The lifecycle every fastdec drafter shares (the :class:`fastdec.Drafter` protocol).
///
/// ``start(request_id, prompt_ids)``; each step ``propose(request_id, budget)`` (a tree of at
/// most ``budget`` nodes whose root is the last token) and ``accept(request_id, emitted,
/// topk_ids=None)`` with the tokens the step emitted (accepted drafts, then the bonus token)
/// and optionally the target's top-k at every verified node (``[num_nodes, k] int32``);
/// ``stop(request_id)``. Request ids are int or str; an unknown id raises ``KeyError``.
// Concrete drafters extend this class with their constructor and extras.
#[pyclass(
    name = "BaseDrafter",
    module = "fastdec._core",
    subclass,
    frozen,
    weakref
)]
pub struct PyBaseDrafter {
    pub(crate) inner: Arc<dyn Drafter>,
    /// Loop or rayon's pool for the batch calls, as measured on this drafter's earlier batches.
    pool: MeasuredPool,
}

#[pymethods]
impl PyBaseDrafter {
    fn start(
        &self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        prompt_ids: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_request_id(request_id)?;
        let prompt = token_vec(prompt_ids, "prompt_ids")?;
        maybe_detach(py, prompt.len(), || self.inner.start(id, &prompt)).map_err(to_py)
    }

    fn propose(&self, request_id: &Bound<'_, PyAny>, budget: i128) -> PyResult<PyTokenTree> {
        let id = to_request_id(request_id)?;
        Ok(self
            .inner
            .propose(&id, count(budget, "budget")?)
            .map_err(to_py)?
            .into())
    }

    #[pyo3(signature = (request_id, emitted, topk_ids = None))]
    fn accept(
        &self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        emitted: &Bound<'_, PyAny>,
        topk_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let id = to_request_id(request_id)?;
        let emitted = token_vec(emitted, "emitted")?;
        let topk = topk_arg(topk_ids)?;
        let topk_ref = topk.as_ref().map(|(v, k)| (v.as_slice(), *k));
        let work = emitted.len() + topk.as_ref().map_or(0, |(v, _)| v.len());
        maybe_detach(py, work, || self.inner.accept(&id, &emitted, topk_ref)).map_err(to_py)
    }

    fn stop(&self, request_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.stop(&to_request_id(request_id)?).map_err(to_py)
    }

    /// A stateless proposal from a whole context (its last token is the root).
    fn propose_for(
        &self,
        py: Python<'_>,
        context_ids: &Bound<'_, PyAny>,
        budget: i128,
    ) -> PyResult<PyTokenTree> {
        let context = token_vec(context_ids, "context_ids")?;
        let budget = count(budget, "budget")?;
        Ok(maybe_detach(py, context.len(), || {
            self.inner.propose_for(&context, budget)
        })
        .map_err(to_py)?
        .into())
    }

    /// Totals: steps, drafted, emitted, mean_accepted (bonus included), propose_us, accept_us.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.inner.stats())
    }

    fn request_stats<'py>(
        &self,
        py: Python<'py>,
        request_id: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let stats = self
            .inner
            .request_stats(&to_request_id(request_id)?)
            .map_err(to_py)?;
        stats_dict(py, &stats)
    }

    /// Heap bytes held by the drafter's tables and request states.
    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    /// How many top-k columns ``accept(..., topk_ids=...)`` learns from (Token Recycling: its
    /// ``k``; a hybrid: the largest over its parts), or ``None`` if it ignores ``topk_ids``, so
    /// callers can skip computing them. ``topk_ids`` rows belong to the nodes of the tree the
    /// last ``propose`` returned, columns best first; any ``k >= 1`` is accepted (the first
    /// ``min(k, wants_topk())`` columns are used).
    fn wants_topk(&self) -> Option<usize> {
        self.inner.wants_topk()
    }

    /// Writes the state shared across requests (Token Recycling's table, the trie's shared
    /// outputs; nothing for n-grams) to ``path``: magic, format version, kind, payload and
    /// checksum. Per-request state is not saved.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save_file(&path)).map_err(to_py)
    }

    /// Replaces the shared state with the one saved at ``path``; a foreign, truncated,
    /// corrupted or differently configured file raises ``ValueError``, an unreadable one
    /// ``OSError``.
    fn load(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.load_file(&path)).map_err(to_py)
    }

    /// Stateless proposals for many contexts (GIL released; a loop or rayon's pool, whichever
    /// this drafter's earlier batches of that size measured faster).
    fn propose_for_batch(
        &self,
        py: Python<'_>,
        contexts: &Bound<'_, PyAny>,
        budgets: &Bound<'_, PyAny>,
    ) -> PyResult<PyDraftBatch> {
        let contexts = contexts
            .try_iter()?
            .map(|obj| token_vec(&obj?, "context_ids"))
            .collect::<PyResult<Vec<_>>>()?;
        let budgets = crate::convert::i32_vec(budgets, "budgets")?
            .into_iter()
            .map(|b| count(i128::from(b), "budget"))
            .collect::<PyResult<Vec<_>>>()?;
        let trees = py
            .detach(|| {
                self.inner
                    .propose_for_batch(&contexts, &budgets, &self.pool)
            })
            .map_err(to_py)?;
        Ok(PyDraftBatch::new(trees))
    }

    /// Proposals for many requests (GIL released; a loop or rayon's pool, whichever this
    /// drafter's earlier batches of that size measured faster).
    fn propose_batch(
        &self,
        py: Python<'_>,
        request_ids: &Bound<'_, PyAny>,
        budgets: &Bound<'_, PyAny>,
    ) -> PyResult<PyDraftBatch> {
        let ids = request_ids
            .try_iter()?
            .map(|obj| to_request_id(&obj?))
            .collect::<PyResult<Vec<_>>>()?;
        let budgets = crate::convert::i32_vec(budgets, "budgets")?
            .into_iter()
            .map(|b| count(i128::from(b), "budget"))
            .collect::<PyResult<Vec<_>>>()?;
        let trees = py
            .detach(|| self.inner.propose_batch(&ids, &budgets, &self.pool))
            .map_err(to_py)?;
        Ok(PyDraftBatch::new(trees))
    }
}

/// Drafts for a batch in one flat ragged layout: tree ``b`` is
/// ``tokens[cu_num_nodes[b]:cu_num_nodes[b + 1]]`` (parents local to each tree), and
/// ``batch[b]`` is its :class:`TokenTree`. Arrays are read-only views. ``propose_batch``
/// returns one; ``DraftBatch(trees)`` builds one from any trees.
#[pyclass(name = "DraftBatch", module = "fastdec._core", frozen)]
pub struct PyDraftBatch {
    pub(crate) inner: fastdec_core::TreeBatch,
}

impl PyDraftBatch {
    pub(crate) fn from_trees(trees: Vec<fastdec_core::TokenTree>) -> Self {
        Self::new(trees)
    }

    fn new(trees: Vec<fastdec_core::TokenTree>) -> Self {
        PyDraftBatch {
            inner: fastdec_core::TreeBatch::new(trees),
        }
    }
}

#[pymethods]
impl PyDraftBatch {
    #[new]
    fn py_new(trees: Vec<PyRef<'_, PyTokenTree>>) -> Self {
        PyDraftBatch::new(trees.iter().map(|t| t.inner.clone()).collect())
    }
    #[getter]
    fn tokens<'py>(slf: &Bound<'py, Self>) -> Bound<'py, numpy::PyArray1<i32>> {
        crate::convert::view1(slf.as_any(), slf.get().inner.tokens())
    }
    #[getter]
    fn parents<'py>(slf: &Bound<'py, Self>) -> Bound<'py, numpy::PyArray1<i32>> {
        crate::convert::view1(slf.as_any(), slf.get().inner.parents())
    }
    #[getter]
    fn cu_num_nodes<'py>(slf: &Bound<'py, Self>) -> Bound<'py, numpy::PyArray1<i32>> {
        crate::convert::view1(slf.as_any(), slf.get().inner.cu_num_nodes())
    }
    /// The padded view: ``(tokens, parents, depth, num_nodes)``, the first three
    /// ``[len, width] int64`` (``width`` = the largest tree's node count; pad slots hold token 0,
    /// parent -1, depth 0) and ``num_nodes`` ``[len] int64``, the real nodes per tree.
    #[allow(clippy::type_complexity)]
    fn padded<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, numpy::PyArray2<i64>>,
        Bound<'py, numpy::PyArray2<i64>>,
        Bound<'py, numpy::PyArray2<i64>>,
        Bound<'py, numpy::PyArray1<i64>>,
    )> {
        let p = crate::convert::maybe_detach(py, self.inner.tokens().len(), || self.inner.padded());
        let shape = [p.rows, p.width];
        Ok((
            numpy::PyArray1::from_vec(py, p.tokens).reshape(shape)?,
            numpy::PyArray1::from_vec(py, p.parents).reshape(shape)?,
            numpy::PyArray1::from_vec(py, p.depth).reshape(shape)?,
            numpy::PyArray1::from_vec(py, p.num_nodes),
        ))
    }
    fn __len__(&self) -> usize {
        self.inner.len()
    }
    fn __getitem__(&self, index: isize) -> PyResult<PyTokenTree> {
        let trees = self.inner.trees();
        let n = trees.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "batch index {index} out of range for {n} trees"
            )));
        }
        Ok(trees[i as usize].clone().into())
    }
    fn __repr__(&self) -> String {
        format!(
            "DraftBatch(num_trees={}, num_nodes={})",
            self.inner.len(),
            self.inner.tokens().len()
        )
    }
}

/// Prompt-lookup / n-gram drafter over an incremental per-request index.
///
/// Args:
///     mode: ``"pld"`` is prompt lookup decoding (for n = max_n..min_n, the earliest earlier
///         occurrence of the last n tokens; a chain of the up to ``num_pred`` tokens after it:
///         Spec-Bench's published PLD figure); ``"pld_strict"`` is Spec-Bench's ``pld.py`` to
///         the letter (an occurrence counts only if a full ``num_pred`` tokens follow it);
///         ``"recent"`` takes the most recent occurrence of the longest matching suffix;
///         ``"tree"`` merges the continuations of the ``max_matches`` most recent occurrences
///         (occurrence i weighs ``decay**i``) into a tree pruned best-first to the budget.
///     min_n, max_n: suffix lengths matched (1 <= min_n <= max_n <= 16).
///     num_pred: draft tokens per continuation.
///     max_requests: active requests kept; starting one more evicts the least recently used.
///     max_context: tokens indexed per request; beyond it the index keeps the newest half.
///
/// Propose and accept cost O(max_n) hash operations plus the draft, whatever the context length.
#[pyclass(name = "NgramDrafter", module = "fastdec._core", extends = PyBaseDrafter, frozen)]
pub struct PyNgramDrafter {
    inner: Arc<NgramDrafter>,
}

#[pymethods]
impl PyNgramDrafter {
    #[new]
    #[pyo3(signature = (mode = "pld", *, min_n = 1, max_n = 3, num_pred = 10, max_matches = 16, decay = 0.9, max_requests = 1024, max_context = 1_048_576))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        mode: &str,
        min_n: i128,
        max_n: i128,
        num_pred: i128,
        max_matches: i128,
        decay: f32,
        max_requests: i128,
        max_context: i128,
    ) -> PyResult<PyClassInitializer<Self>> {
        let config = NgramConfig {
            mode: NgramMode::parse(mode).map_err(to_py)?,
            min_n: count(min_n, "min_n")?,
            max_n: count(max_n, "max_n")?,
            num_pred: count(num_pred, "num_pred")?,
            max_matches: count(max_matches, "max_matches")?,
            decay,
            max_requests: count(max_requests, "max_requests")?,
            max_context: count(max_context, "max_context")?,
        };
        let inner = Arc::new(NgramDrafter::new(config).map_err(to_py)?);
        Ok(extend_base(inner.clone(), PyNgramDrafter { inner }))
    }

    #[getter]
    fn num_requests(&self) -> usize {
        self.inner.num_requests()
    }

    #[getter]
    fn mode(&self) -> &'static str {
        match self.inner.config().mode {
            NgramMode::Pld => "pld",
            NgramMode::PldStrict => "pld_strict",
            NgramMode::Recent => "recent",
            NgramMode::Tree => "tree",
        }
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "NgramDrafter(mode={:?}, min_n={}, max_n={}, num_pred={})",
            self.mode(),
            c.min_n,
            c.max_n,
            c.num_pred
        )
    }
}

/// Token Recycling (Luo et al. 2024): a ``[vocab_size, k]`` table of candidate next tokens,
/// shared by all requests, overwritten after each step with the target's top-k at every
/// verified node (``accept(..., topk_ids=...)``; accepted-path rows win duplicates), and read by
/// filling ``template`` (default: the 81-node "2.2.2" template). Without ``topk_ids`` the table
/// still learns emitted bigrams into empty rows. Nodes without a candidate are left out;
/// ``budget`` keeps the first nodes in template order. Memory: ``vocab_size * k * 4`` bytes.
#[pyclass(name = "RecycleDrafter", module = "fastdec._core", extends = PyBaseDrafter, frozen)]
pub struct PyRecycleDrafter {
    inner: Arc<RecycleDrafter>,
}

#[pymethods]
impl PyRecycleDrafter {
    #[new]
    #[pyo3(signature = (vocab_size, *, k = 8, template = None, max_requests = 1024))]
    fn new(
        vocab_size: i128,
        k: i128,
        template: Option<PyRef<'_, PyTreeTemplate>>,
        max_requests: i128,
    ) -> PyResult<PyClassInitializer<Self>> {
        let template = template.map_or_else(TreeTemplate::token_recycling, |t| t.inner().clone());
        let inner = Arc::new(
            RecycleDrafter::new(
                count(vocab_size, "vocab_size")?,
                count(k, "k")?,
                template,
                count(max_requests, "max_requests")?,
            )
            .map_err(to_py)?,
        );
        Ok(extend_base(inner.clone(), PyRecycleDrafter { inner }))
    }

    /// Row ``token`` of the table, -1 where no candidate is known yet.
    fn row<'py>(&self, py: Python<'py>, token: i128) -> PyResult<Bound<'py, numpy::PyArray1<i32>>> {
        let token = crate::convert::token_arg(token, "token")?;
        let row = self.inner.row(token).map_err(to_py)?;
        Ok(numpy::PyArray1::from_iter(
            py,
            row.into_iter()
                .map(|t| if t == u32::MAX { -1 } else { t as i32 }),
        ))
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[getter]
    fn k(&self) -> usize {
        self.inner.k()
    }

    fn __repr__(&self) -> String {
        format!(
            "RecycleDrafter(vocab_size={}, k={}, template_nodes={})",
            self.inner.vocab_size(),
            self.inner.k(),
            self.inner.template().num_nodes()
        )
    }
}

/// Trie retrieval (Lookahead/PIA, with SuffixDecoding's local/global split).
///
/// Every window of up to ``depth`` tokens is counted in a per-request trie (prompt and output)
/// and, once a request stops, its output in one shared trie (cross-request sharing). A draft
/// matches the longest context suffix (up to ``max_match`` tokens) with continuations and
/// expands them best-first by empirical path probability; the local and shared candidate trees
/// are fused with weights ``1 - output_weight`` and ``output_weight`` and pruned to the budget.
/// Shorter matching suffixes contribute too, each with ``match_decay`` times the weight of the
/// next longer one, counted from the longer match of the two tries (0: the longest only; at most
/// ``match_parts`` lengths per trie), and probabilities are
/// smoothed as ``count / (sibling total + smoothing)``. Each shorter match expands at most
/// ``part_budget_decay`` times as many nodes as the next longer one (its nodes weigh less, so
/// fewer make the final cut).
/// Tries above their node cap halve their counts and drop nodes below 1; a request keeps at most
/// ``max_context`` tokens of history (the oldest half is dropped beyond).
#[pyclass(name = "TrieDrafter", module = "fastdec._core", extends = PyBaseDrafter, frozen)]
pub struct PyTrieDrafter {
    inner: Arc<TrieDrafter>,
}

#[pymethods]
impl PyTrieDrafter {
    #[new]
    #[pyo3(signature = (*, depth = 28, max_match = 16, output_weight = 0.5, max_local_nodes = 1_048_576, max_global_nodes = 4_194_304, max_requests = 1024, max_context = 1_048_576, match_decay = 0.8, smoothing = 0.5, match_parts = 3, part_budget_decay = 0.5))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        depth: i128,
        max_match: i128,
        output_weight: f32,
        max_local_nodes: i128,
        max_global_nodes: i128,
        max_requests: i128,
        max_context: i128,
        match_decay: f32,
        smoothing: f32,
        match_parts: i128,
        part_budget_decay: f32,
    ) -> PyResult<PyClassInitializer<Self>> {
        let config = TrieConfig {
            match_parts: count(match_parts, "match_parts")?,
            part_budget_decay,
            match_decay,
            smoothing,
            depth: count(depth, "depth")?,
            max_match: count(max_match, "max_match")?,
            output_weight,
            max_local_nodes: count(max_local_nodes, "max_local_nodes")?,
            max_global_nodes: count(max_global_nodes, "max_global_nodes")?,
            max_requests: count(max_requests, "max_requests")?,
            max_context: count(max_context, "max_context")?,
        };
        let inner = Arc::new(TrieDrafter::new(config).map_err(to_py)?);
        Ok(extend_base(inner.clone(), PyTrieDrafter { inner }))
    }

    /// Nodes in the shared trie of finished requests' outputs.
    #[getter]
    fn global_nodes(&self) -> usize {
        self.inner.global_nodes()
    }
}

/// Fuses the trees of several fastdec drafters under one budget.
///
/// Each part drafts with the full budget; its scores are divided by its root score (a tree
/// without scores counts 1 per node) and multiplied by its weight; equal paths add up
/// (:meth:`TokenTree.fuse`) and the fused tree is pruned best-first to the budget. The
/// lifecycle (start/accept/stop) is forwarded to every part. ``topk_ids`` (rows for the fused
/// tree) reaches each part that wants them (:meth:`wants_topk`) re-indexed by the nodes of the
/// tree that part proposed: a part node gets the row of the fused node with the same token
/// path; nodes that pruning dropped were not verified and teach the part nothing.
#[pyclass(name = "HybridDrafter", module = "fastdec._core", extends = PyBaseDrafter, frozen)]
pub struct PyHybridDrafter {}

#[pymethods]
impl PyHybridDrafter {
    #[new]
    #[pyo3(signature = (drafters, *, weights = None, max_requests = 1024))]
    fn new(
        drafters: Vec<PyRef<'_, PyBaseDrafter>>,
        weights: Option<Vec<f32>>,
        max_requests: i128,
    ) -> PyResult<PyClassInitializer<Self>> {
        let weights = weights.unwrap_or_else(|| vec![1.0; drafters.len()]);
        if weights.len() != drafters.len() {
            return Err(PyValueError::new_err(format!(
                "weights has length {}, expected {} (one per drafter)",
                weights.len(),
                drafters.len()
            )));
        }
        let parts = drafters
            .iter()
            .map(|d| Arc::clone(&d.inner))
            .zip(weights)
            .collect();
        let inner: Arc<dyn Drafter> = Arc::new(
            HybridDrafter::new(parts, count(max_requests, "max_requests")?).map_err(to_py)?,
        );
        Ok(extend_base(inner, PyHybridDrafter {}))
    }
}
