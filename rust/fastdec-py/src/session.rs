//! Binding of the draft session (see `fastdec.DraftSession`).

use fastdec_core::drafter::RequestId;
use fastdec_core::session::rows::Token;
use std::sync::{Mutex, PoisonError};

use fastdec_core::session::{
    DraftLength, DraftSession, LengthConfig, LengthStats, RowState, SessionConfig,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{count, i32_vec};
use crate::drafter::{to_request_id, PyBaseDrafter, PyDraftBatch};
use crate::error::to_py;

/// One owner of every engine's requests: recognises each batch row's request (by the engine's
/// id, or from its tokens when the engine passes none), feeds it only the tokens new to it,
/// finishes and evicts requests under one cap, and drafts the whole batch in one call per
/// engine step (GIL released), with a learnt draft length.
///
/// ``DraftSession(drafter, k, *, tree_budget=k + 1, max_requests=1024, grace_steps=4, max_gap=k +
/// 9, adaptive=True, explore=0.05, min_steps=16, window=128, streak_bins=6, match_bins=5,
/// pad=True)`` (the last seven set the draft length, see :class:`DraftLength`); ``step(rows,
/// counts, sampled, *, max_len=None, ids=None)`` returns one draft (a list of at most ``k`` token
/// ids) per row. ``rows``: the engine's ``[R, C]`` int32 / int64 token rows (read in place: only
/// the tokens new to each row and a few sampled positions are read); ``counts[i]``: row ``i``'s
/// tokens, drafts excluded; ``sampled[i]``: tokens it emitted last step (0: a partial prefill, no
/// draft); ``max_len``: the model's length limit (no draft runs past it); ``ids``: the engine's
/// request id per row (int or str), or ``None`` (rows are recognised by content and a request
/// missing for ``grace_steps`` steps is finished). ``finish(ids)`` finishes requests (their outputs
/// reach a trie drafter's shared memory).
#[pyclass(name = "DraftSession", module = "fastdec._core", frozen)]
pub struct PyDraftSession {
    inner: DraftSession,
    drafter: Py<PyBaseDrafter>,
}

/// Reads an `[R, C]` token array in place and runs `f` on batch row `i`'s first `counts[i]`
/// tokens of array row `slots[i]` (default `i`: vLLM 0.34 keeps requests in fixed slots and
/// maps batch rows to them).
fn with_rows<T, R>(
    rows: &Bound<'_, PyArray2<T>>,
    counts: Option<&[usize]>,
    slots: Option<&[usize]>,
    f: impl FnOnce(&[&[T]]) -> R,
) -> PyResult<R>
where
    T: numpy::Element + Token,
{
    let ro: PyReadonlyArray2<'_, T> = rows.readonly();
    let view = ro.as_array();
    let (r, c) = (view.shape()[0], view.shape()[1]);
    let batch = slots.map_or(counts.map_or(r, <[_]>::len), <[_]>::len);
    let full = vec![c; batch];
    let counts = counts.unwrap_or(&full);
    if let Some(slots) = slots {
        if counts.len() != slots.len() {
            return Err(PyValueError::new_err(format!(
                "counts has length {}, slots {}",
                counts.len(),
                slots.len()
            )));
        }
        if let Some((i, &s)) = slots.iter().enumerate().find(|&(_, &s)| s >= r) {
            return Err(PyIndexError::new_err(format!(
                "slots[{i}] = {s}: the token rows have only {r} rows"
            )));
        }
    } else if counts.len() > r {
        return Err(PyValueError::new_err(format!(
            "counts has {} rows, the token rows only {r}",
            counts.len()
        )));
    }
    let stride = view.strides()[1];
    if stride != 1 && c > 1 {
        return Err(PyValueError::new_err(
            "rows must be contiguous along each row (numpy.ascontiguousarray)",
        ));
    }
    let mut slices = Vec::with_capacity(counts.len());
    for (i, &n) in counts.iter().enumerate() {
        if n > c {
            return Err(PyIndexError::new_err(format!(
                "counts[{i}] = {n} exceeds the rows' width {c}"
            )));
        }
        let row = view.row(slots.map_or(i, |s| s[i]));
        // SAFETY-free: a row of a C-contiguous-along-rows view is a slice
        let s = row.to_slice().ok_or_else(|| {
            PyValueError::new_err(
                "rows must be contiguous along each row (numpy.ascontiguousarray)",
            )
        })?;
        slices.push(&s[..n]);
    }
    Ok(f(&slices))
}

fn keys_arg(ids: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<RequestId>>> {
    ids.map(|obj| {
        obj.try_iter()?
            .map(|o| to_request_id(&o?))
            .collect::<PyResult<Vec<RequestId>>>()
    })
    .transpose()
}

/// Runs `$f` on the rows as slices: a 2-D int32 / int64 array read in place (each row's first
/// `counts[i]` tokens, or all of them without counts), or a list of token lists (copied).
macro_rules! dispatch_rows {
    ($rows:expr, $counts:expr, $slots:expr, $f:expr) => {{
        let rows: &Bound<'_, PyAny> = $rows;
        let counts: Option<Vec<usize>> = $counts.map(|c| counts_arg(c, "counts")).transpose()?;
        let slots: Option<&[usize]> = $slots;
        if let Ok(a) = rows.cast::<PyArray2<i32>>() {
            with_rows(a, counts.as_deref(), slots, $f)?
        } else if let Ok(a) = rows.cast::<PyArray2<i64>>() {
            with_rows(a, counts.as_deref(), slots, $f)?
        } else if slots.is_some() {
            return Err(PyTypeError::new_err(
                "slots index the rows of a 2-D int32 or int64 numpy array, not a list of token lists",
            ));
        } else if rows.cast::<numpy::PyUntypedArray>().is_ok() {
            return Err(PyTypeError::new_err(
                "rows must be a 2-D int32 or int64 numpy array [rows, max_len], or a list of token lists",
            ));
        } else {
            let owned: Vec<Vec<i64>> = rows.extract().map_err(|_| {
                PyTypeError::new_err(
                    "rows must be a 2-D int32 or int64 numpy array [rows, max_len], or a list of token lists",
                )
            })?;
            let mut slices: Vec<&[i64]> = owned.iter().map(Vec::as_slice).collect();
            if let Some(c) = counts.as_deref() {
                if c.len() != slices.len() {
                    return Err(PyValueError::new_err(format!(
                        "counts has {} rows, the token rows {}",
                        c.len(),
                        slices.len()
                    )));
                }
                for (i, (s, &n)) in slices.iter_mut().zip(c).enumerate() {
                    if n > s.len() {
                        return Err(PyIndexError::new_err(format!(
                            "counts[{i}] = {n} exceeds row {i}'s {} tokens",
                            s.len()
                        )));
                    }
                    *s = &s[..n];
                }
            }
            ($f)(&slices)
        }
    }};
}

/// A row's last token (0 for an empty row): what vLLM 0.34 fills a short draft with.
fn last_token<T: Token>(row: &[T]) -> i64 {
    row.last().map_or(0, |&t| t.value())
}

fn counts_arg(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<Vec<usize>> {
    i32_vec(obj, what)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            usize::try_from(v)
                .map_err(|_| PyValueError::new_err(format!("{what}[{i}] = {v}: must be >= 0")))
        })
        .collect()
}

#[pymethods]
impl PyDraftSession {
    #[new]
    #[pyo3(signature = (drafter, k, *, tree_budget = None, max_requests = 1024, grace_steps = 4,
        max_gap = None, adaptive = true, explore = 0.05, min_steps = 16, window = 128,
        streak_bins = 6, match_bins = 5, pad = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        drafter: &Bound<'_, PyBaseDrafter>,
        k: i128,
        tree_budget: Option<i128>,
        max_requests: i128,
        grace_steps: i128,
        max_gap: Option<i128>,
        adaptive: bool,
        explore: f64,
        min_steps: i128,
        window: i128,
        streak_bins: i128,
        match_bins: i128,
        pad: bool,
    ) -> PyResult<Self> {
        let k = count(k, "k")?;
        let mut config = SessionConfig::new(k);
        if let Some(b) = tree_budget {
            config.tree_budget = count(b, "tree_budget")?;
        }
        config.max_requests = count(max_requests, "max_requests")?;
        config.grace_steps = count(grace_steps, "grace_steps")? as u64;
        if let Some(g) = max_gap {
            config.max_gap = count(g, "max_gap")?;
        }
        config.length = LengthConfig {
            enabled: adaptive,
            explore,
            min_steps: count(min_steps, "min_steps")?,
            window: count(window, "window")?,
            streak_bins: count(streak_bins, "streak_bins")?,
            match_bins: count(match_bins, "match_bins")?,
            pad,
            ..LengthConfig::new(k)
        };
        let inner = DraftSession::new(drafter.get().inner.clone(), config).map_err(to_py)?;
        Ok(PyDraftSession {
            inner,
            drafter: drafter.clone().unbind(),
        })
    }

    /// The drafter this session drafts with.
    #[getter]
    fn drafter(&self, py: Python<'_>) -> Py<PyBaseDrafter> {
        self.drafter.clone_ref(py)
    }

    /// ``k``: the most draft tokens per row.
    #[getter]
    fn k(&self) -> usize {
        self.inner.config().length.k
    }

    /// Requests started so far.
    #[getter]
    fn started(&self) -> u64 {
        self.inner.stats().started
    }

    /// Requests finished so far (by the engine, by absence, for the cap, or restarted).
    #[getter]
    fn stopped(&self) -> u64 {
        self.inner.stats().stopped
    }

    #[getter]
    fn grace_steps(&self) -> u64 {
        self.inner.config().grace_steps
    }

    #[getter]
    fn max_requests(&self) -> usize {
        self.inner.config().max_requests
    }

    #[getter]
    fn adaptive(&self) -> bool {
        self.inner.config().length.enabled
    }

    /// One engine step for the whole batch (see the class): one draft per row, a list of at most
    /// ``k`` token ids. ``offsets[i]``: where row ``i``'s tokens start in its request (with ``ids``);
    /// ``slots[i]``: the array row that holds batch row ``i`` (vLLM 0.34's ``idx_mapping``; default
    /// ``i``); ``width``: an ``[R, width]`` int64 array instead, each draft cut to ``width`` and
    /// filled with its row's last token (vLLM 0.34's fixed-``K`` layout); ``now``: the step's time
    /// on any monotonic clock, for the draft-length controller (default: the session's own).
    #[pyo3(signature = (rows, counts, sampled, *, max_len = None, ids = None, now = None, offsets = None, slots = None, width = None))]
    #[allow(clippy::too_many_arguments)]
    fn step<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        counts: Option<&Bound<'py, PyAny>>,
        sampled: &Bound<'py, PyAny>,
        max_len: Option<i128>,
        ids: Option<&Bound<'py, PyAny>>,
        now: Option<f64>,
        offsets: Option<&Bound<'py, PyAny>>,
        slots: Option<&Bound<'py, PyAny>>,
        width: Option<i128>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sampled = counts_arg(sampled, "sampled")?;
        let keys = keys_arg(ids)?;
        let offsets = offsets.map(|o| counts_arg(o, "offsets")).transpose()?;
        let slots = slots.map(|o| counts_arg(o, "slots")).transpose()?;
        let k = self.inner.config().length.k;
        let limit = max_len.map(|m| count(m, "max_len")).transpose()?;
        let width = width.map(|w| count(w, "width")).transpose()?;
        let cap = width.map_or(k, |w| w.min(k));
        let session = &self.inner;
        let (drafts, lasts) = dispatch_rows!(rows, counts, slots.as_deref(), |r: &[&[_]]| {
            let room: Vec<usize> = r
                .iter()
                .zip(
                    offsets
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .chain(std::iter::repeat(&0)),
                )
                .map(|(row, &o)| limit.map_or(cap, |m| m.saturating_sub(o + row.len()).min(cap)))
                .collect();
            let lasts: Vec<i64> = if width.is_some() {
                r.iter().map(|row| last_token(row)).collect()
            } else {
                Vec::new()
            };
            run(py, r.len(), || {
                session.step(keys.as_deref(), r, offsets.as_deref(), &sampled, &room, now)
            })
            .map(|d| (d, lasts))
        })
        .map_err(to_py)?;
        if let Some(w) = width {
            // vLLM 0.34's layout: K tokens a row, a short draft filled with the row's last token
            let mut flat = Vec::with_capacity(drafts.len() * w);
            for (d, &last) in drafts.iter().zip(&lasts) {
                flat.extend(d.iter().map(|&t| i64::from(t)));
                flat.resize(flat.len() + w - d.len(), last);
            }
            let array = numpy::ndarray::Array2::from_shape_vec((drafts.len(), w), flat)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            return Ok(numpy::PyArray2::from_owned_array(py, array).into_any());
        }
        Ok(PyList::new(
            py,
            drafts
                .iter()
                .map(|d| PyList::new(py, d).map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any())
    }

    /// :meth:`step` for engines that verify trees: one tree of at most ``budget`` nodes per row
    /// (default ``tree_budget``; root = the row's last token; a row that does not draft, or
    /// every row at ``budget=1``, gets its root alone), as a :class:`DraftBatch`. ``rows`` may
    /// also be a list of token lists (e.g. SGLang's tails, with ``offsets``: each tail's
    /// position in its request).
    #[pyo3(signature = (rows, counts, sampled, *, ids = None, offsets = None, budget = None))]
    #[allow(clippy::too_many_arguments)]
    fn step_trees<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        counts: Option<&Bound<'py, PyAny>>,
        sampled: &Bound<'py, PyAny>,
        ids: Option<&Bound<'py, PyAny>>,
        offsets: Option<&Bound<'py, PyAny>>,
        budget: Option<i128>,
    ) -> PyResult<PyDraftBatch> {
        let sampled = counts_arg(sampled, "sampled")?;
        let budget = budget.map(|b| count(b, "budget")).transpose()?;
        let keys = keys_arg(ids)?;
        let offsets = offsets.map(|o| counts_arg(o, "offsets")).transpose()?;
        let session = &self.inner;
        let trees = dispatch_rows!(rows, counts, None, |r: &[&[_]]| {
            run(py, r.len(), || {
                session.step_trees(keys.as_deref(), r, offsets.as_deref(), &sampled, budget)
            })
        })
        .map_err(to_py)?;
        Ok(PyDraftBatch::from_trees(trees))
    }

    /// Finishes the requests with these engine ids (unknown ids are ignored).
    fn finish(&self, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let keys = ids
            .try_iter()?
            .map(|o| to_request_id(&o?))
            .collect::<PyResult<Vec<RequestId>>>()?;
        self.inner.finish(&keys).map_err(to_py)
    }

    /// Finishes every live request.
    fn finish_all(&self) -> PyResult<()> {
        self.inner.finish_all().map_err(to_py)
    }

    /// Per row of the last step, the session's id of its request (-1: none).
    fn last_rows<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.last_rows())
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Counters: steps, rows drafted for, tokens drafted and accepted, requests started /
    /// stopped / evicted / live, microseconds in ``step``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("steps", s.steps)?;
        d.set_item("rows", s.rows)?;
        d.set_item("drafted", s.drafted)?;
        d.set_item("accepted", s.accepted)?;
        d.set_item("started", s.started)?;
        d.set_item("stopped", s.stopped)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("restarted", s.restarted)?;
        d.set_item("live", s.live)?;
        d.set_item("step_us", s.step_ns as f64 / 1e3)?;
        let per_row = PyDict::new(py);
        for (rows, serial, pooled) in &s.propose_ns_per_row {
            per_row.set_item(rows, (serial, pooled))?;
        }
        d.set_item("propose_ns_per_row", per_row)?;
        Ok(d)
    }

    /// The draft-length controller's measurements (see :meth:`DraftLength.stats`).
    fn length_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        length_dict(py, &self.inner.length_stats())
    }
}

fn length_dict<'py>(py: Python<'py>, s: &LengthStats) -> PyResult<Bound<'py, PyDict>> {
    {
        let d = PyDict::new(py);
        d.set_item("tau", s.tau)?;
        d.set_item("step_fixed_seconds", s.cost[0])?;
        d.set_item("seconds_per_row", s.cost[1])?;
        d.set_item("seconds_per_drafting_step", s.cost[2])?;
        d.set_item("seconds_per_drafting_row", s.cost[3])?;
        d.set_item("seconds_per_token", s.cost[4])?;
        d.set_item("tokens_per_second", s.tokens_per_second)?;
        d.set_item("acceptance", s.acceptance)?;
        d.set_item("acceptance_by_depth", s.acceptance_by_depth.clone())?;
        d.set_item("steps", s.steps)?;
        // width (rows + draft tokens) -> (decayed steps, seconds beyond the line)
        let curve = PyDict::new(py);
        for &(width, n, extra) in &s.curve {
            curve.set_item(width, (n, extra))?;
        }
        d.set_item("width_seconds", curve)?;
        Ok(d)
    }
}

/// Runs a step with the GIL released for batches worth it.
fn run<T: Send>(py: Python<'_>, rows: usize, f: impl FnOnce() -> T + Send) -> T {
    if rows >= 8 {
        py.detach(f)
    } else {
        f()
    }
}

/// How many tokens of each linear draft are worth verifying, learnt from what the engine
/// accepted and what its steps cost (the controller inside :class:`DraftSession`; the README's
/// vLLM section says how). ``DraftLength(k, *, bins=8, streak_bins=6, match_bins=5, window=128,
/// min_steps=16, explore=0.05, decay=0.998, shrink=8.0, enabled=True, pad=True)``. A row's state is its
/// ``streak`` (tokens its chains predicted in a row up to the latest miss) and ``matched`` (the
/// longest of the windows of 2, 4, 8, 16 tokens ending its text that it held earlier too).
/// Tree loops (``generate(budget="auto")``, llama.cpp's) keep their own controller: their
/// forward's cost per tree size is not the line this one fits over a batched step's rows and
/// tokens.
#[pyclass(name = "DraftLength", module = "fastdec._core", frozen)]
pub struct PyDraftLength {
    inner: Mutex<DraftLength>,
}

impl PyDraftLength {
    fn lock(&self) -> std::sync::MutexGuard<'_, DraftLength> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn tokens_of(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<Vec<u32>> {
    crate::convert::token_vec(obj, what)
}

#[pymethods]
impl PyDraftLength {
    #[new]
    #[pyo3(signature = (k, *, bins = 8, streak_bins = 6, match_bins = 5, window = 128,
        min_steps = 16, explore = 0.05, decay = 0.998, shrink = 8.0, enabled = true,
        pad = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        k: i128,
        bins: i128,
        streak_bins: i128,
        match_bins: i128,
        window: i128,
        min_steps: i128,
        explore: f64,
        decay: f64,
        shrink: f64,
        enabled: bool,
        pad: bool,
    ) -> PyResult<Self> {
        let config = LengthConfig {
            k: count(k, "k")?,
            bins: count(bins, "bins")?,
            streak_bins: count(streak_bins, "streak_bins")?,
            match_bins: count(match_bins, "match_bins")?,
            window: count(window, "window")?,
            min_steps: count(min_steps, "min_steps")?,
            explore,
            decay,
            shrink,
            enabled,
            pad,
        };
        Ok(PyDraftLength {
            inner: Mutex::new(DraftLength::new(config).map_err(to_py)?),
        })
    }

    /// ``k``: the most draft tokens per row.
    #[getter]
    fn k(&self) -> usize {
        self.lock().config().k
    }

    /// ``False``: always the full chain.
    #[getter]
    fn enabled(&self) -> bool {
        self.lock().config().enabled
    }

    /// The share of rows drafted in full (half) or not at all (half) whatever ``tau`` says.
    #[getter]
    fn get_explore(&self) -> f64 {
        self.lock().config().explore
    }

    #[setter]
    fn set_explore(&self, value: f64) -> PyResult<()> {
        self.lock().set_explore(value).map_err(to_py)
    }

    /// The cumulative acceptance a draft token must reach to be verified.
    #[getter]
    fn tau(&self) -> f64 {
        self.lock().tau()
    }

    /// Estimated chance that a draft token at ``depth`` with ``confidence``, of a row in state
    /// (``streak``, ``matched``), is accepted, given that every token before it was.
    #[pyo3(signature = (depth, confidence, streak = 0, matched = 0))]
    fn probability(&self, depth: usize, confidence: f64, streak: u32, matched: u32) -> f64 {
        self.lock()
            .probability(depth, confidence, RowState { streak, matched })
    }

    /// Records what a row's output says of its previous chain (``chain``: the tokens proposed,
    /// drafted or not; ``emitted``: the tokens the row gained since; ``streak``, ``matched``:
    /// the row's state when the chain was proposed); returns how many leading chain tokens
    /// matched.
    #[pyo3(signature = (chain, confidences, emitted, streak = 0, matched = 0))]
    fn observe(
        &self,
        chain: &Bound<'_, PyAny>,
        confidences: Vec<f64>,
        emitted: &Bound<'_, PyAny>,
        streak: u32,
        matched: u32,
    ) -> PyResult<usize> {
        let chain = tokens_of(chain, "chain")?;
        let emitted = tokens_of(emitted, "emitted")?;
        let row = RowState { streak, matched };
        Ok(self.lock().observe(&chain, &confidences, &emitted, row))
    }

    /// Records one engine step: each row's draft length, the seconds taken, tokens emitted;
    /// ``prefill``: the step also prefilled a request (its time then prices no step width).
    #[pyo3(signature = (drafts, seconds, emitted, prefill = false))]
    fn observe_step(&self, drafts: Vec<usize>, seconds: f64, emitted: usize, prefill: bool) {
        self.lock()
            .observe_step_with(&drafts, seconds, emitted, prefill);
    }

    /// How many leading tokens of a chain with these confidences, of a row in state
    /// (``streak``, ``matched``), to draft (a batch of one).
    #[pyo3(signature = (confidences, streak = 0, matched = 0))]
    fn cut(&self, confidences: Vec<f64>, streak: u32, matched: u32) -> usize {
        self.lock()
            .cut_batch(&[confidences.as_slice()], &[RowState { streak, matched }])[0]
    }

    /// How many leading tokens of each row's chain (given by its confidences and the row's
    /// ``streaks`` and ``matched``, 0 for every row where None) to draft. ``room``: the most
    /// tokens each row may get; past its chain's end, filler, drafted when the measured cost
    /// says a wider step is cheaper (``None``: the chains alone). ``batch_rows``: the engine
    /// step's rows, drafting or not (default: one per chain).
    #[pyo3(signature = (chains, streaks = None, matched = None, room = None, batch_rows = None))]
    fn cut_batch(
        &self,
        chains: Vec<Vec<f64>>,
        streaks: Option<Vec<u32>>,
        matched: Option<Vec<u32>>,
        room: Option<Vec<usize>>,
        batch_rows: Option<usize>,
    ) -> PyResult<Vec<usize>> {
        if let Some(r) = &room {
            if r.len() != chains.len() {
                return Err(PyValueError::new_err(format!(
                    "room has {} entries for {} chains",
                    r.len(),
                    chains.len()
                )));
            }
        }
        let per_row = |v: Option<Vec<u32>>, name: &str| match v {
            None => Ok(vec![0; chains.len()]),
            Some(v) if v.len() == chains.len() => Ok(v),
            Some(v) => Err(PyValueError::new_err(format!(
                "{name} has {} entries for {} chains",
                v.len(),
                chains.len()
            ))),
        };
        let rows: Vec<RowState> = per_row(streaks, "streaks")?
            .into_iter()
            .zip(per_row(matched, "matched")?)
            .map(|(streak, matched)| RowState { streak, matched })
            .collect();
        let views: Vec<&[f64]> = chains.iter().map(Vec::as_slice).collect();
        let batch = batch_rows.unwrap_or(chains.len());
        Ok(self.lock().cut_step(&views, &rows, room.as_deref(), batch))
    }

    /// ``tau``, the fitted seconds (``step_fixed_seconds``, ``seconds_per_row``,
    /// ``seconds_per_drafting_step``, ``seconds_per_drafting_row``, ``seconds_per_token``),
    /// ``tokens_per_second``, ``acceptance`` overall and ``acceptance_by_depth``, ``steps``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        length_dict(py, &self.lock().stats())
    }
}
