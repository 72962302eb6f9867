//! Binding of `fastdec_core::constraints`: token vocabularies, regex constraints and AWRS here;
//! grammars in `grammar`, the methods every constraint shares in `methods`, constrained tree
//! pruning and verification in `tree`.

pub mod grammar;
pub mod methods;
pub mod tree;

use std::sync::Arc;

use fastdec_core::constraints::{
    awrs, Constraint, GrammarCompiler, LazyGrammarCompiler, RegexConstraint, Rng, TokenVocab,
};
use fastdec_core::TokenId;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::constraints::methods::{self as ops, SampleTuple};
use crate::constraints::tree::{self as ctree, NodeStates, PyPrunedTree};
use crate::convert::{f32_vec, maybe_detach, token_arg, token_vec};
use crate::error::to_py;
use crate::tree::PyTokenTree;

/// The bytes each token adds to the decoded text, the special tokens (never allowed by a
/// constraint) and the end-of-sequence ids (allowed where the text is complete). The native
/// base of :class:`fastdec.TokenVocab`, which adds the tokenizer constructors.
///
/// Raises:
///     ValueError: an empty vocabulary or a negative id.
///     IndexError: a special or eos id outside the vocabulary.
#[pyclass(name = "TokenVocab", module = "fastdec._core", frozen, subclass)]
pub struct PyTokenVocab {
    pub inner: Arc<TokenVocab>,
    /// llguidance's index of this vocabulary, built by the first grammar over it.
    grammar: LazyGrammarCompiler,
}

impl PyTokenVocab {
    /// The grammar compiler of this vocabulary (built once, without the GIL).
    pub fn grammar_compiler(&self, py: Python<'_>) -> PyResult<Arc<GrammarCompiler>> {
        py.detach(|| self.grammar.get(&self.inner)).map_err(to_py)
    }
}

#[pymethods]
impl PyTokenVocab {
    #[new]
    #[pyo3(signature = (tokens, special=Vec::new(), eos=Vec::new()))]
    fn new(tokens: Vec<Vec<u8>>, special: Vec<i128>, eos: Vec<i128>) -> PyResult<Self> {
        let ids = |v: &[i128], what: &str| -> PyResult<Vec<TokenId>> {
            v.iter().map(|&t| token_arg(t, what)).collect()
        };
        let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        let inner = TokenVocab::new(&refs, &ids(&special, "special")?, &ids(&eos, "eos")?)
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner),
            grammar: LazyGrammarCompiler::default(),
        })
    }

    /// Number of tokens.
    #[getter]
    fn size(&self) -> usize {
        self.inner.len()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The bytes token `token` adds to the text.
    fn token_bytes<'py>(&self, py: Python<'py>, token: i128) -> PyResult<Bound<'py, PyBytes>> {
        let t = token_arg(token, "token")?;
        if t as usize >= self.inner.len() {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "token {token} out of range for {} tokens in the vocabulary",
                self.inner.len()
            )));
        }
        Ok(PyBytes::new(py, self.inner.token_bytes(t)))
    }

    fn is_eos(&self, token: i128) -> PyResult<bool> {
        Ok(self.inner.is_eos(token_arg(token, "token")?))
    }

    fn __repr__(&self) -> String {
        format!("TokenVocab(size={})", self.inner.len())
    }
}

fn probs_of(py: Python<'_>, logits: &Bound<'_, PyAny>, temperature: f64) -> PyResult<Vec<f64>> {
    let logits = f32_vec(logits, "logits")?;
    let mut probs = Vec::new();
    maybe_detach(py, logits.len(), || {
        awrs::softmax_into(&logits, temperature, &mut probs)
    })
    .map_err(to_py)?;
    Ok(probs)
}

/// A regular expression (regex crate syntax) the whole decoded text must match, compiled to
/// a DFA over the vocabulary's token bytes. A sequence's state is an ``int`` (the DFA state):
/// free to copy, and rollback is keeping the old one.
///
/// ``mask_cache_bytes`` (default 64 MiB; 0 turns it off) bounds a cache of full masks by DFA
/// state, least recently used out first: a mask is a function of the state alone, and decoding
/// revisits states, so each state's trie walk is paid once.
///
/// Raises:
///     ValueError: a syntax error (the message marks its position in the pattern) or a pattern
///         whose automata would exceed ``max_dfa_bytes`` (default 256 MiB).
#[pyclass(name = "Regex", module = "fastdec._core", frozen)]
pub struct PyRegex {
    inner: RegexConstraint,
}

#[pymethods]
impl PyRegex {
    #[new]
    #[pyo3(signature = (
        pattern,
        vocab,
        max_dfa_bytes=fastdec_core::constraints::regex::DFA_SIZE_LIMIT,
        mask_cache_bytes=fastdec_core::constraints::regex::MASK_CACHE_BYTES,
    ))]
    fn new(
        py: Python<'_>,
        pattern: &str,
        vocab: &PyTokenVocab,
        max_dfa_bytes: usize,
        mask_cache_bytes: usize,
    ) -> PyResult<Self> {
        let v = vocab.inner.clone();
        let inner = py
            .detach(|| RegexConstraint::with_limit(pattern, v, max_dfa_bytes))
            .map_err(to_py)?
            .with_mask_cache(mask_cache_bytes);
        Ok(Self { inner })
    }

    /// Full masks held by the cache (see ``mask_cache_bytes``).
    #[getter]
    fn cached_masks(&self) -> usize {
        self.inner.cached_masks()
    }

    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().len()
    }

    /// The state of the empty text.
    fn start(&self) -> u32 {
        self.inner.start()
    }

    /// Whether the text can still be extended (or ended) validly.
    fn is_live(&self, state: u32) -> bool {
        self.inner.is_live(state)
    }

    /// Whether the text is complete: end of sequence is allowed here.
    fn is_complete(&self, state: u32) -> bool {
        self.inner.is_complete(state)
    }

    /// Whether ``token`` may follow the text (end of sequence: iff it is complete; other special
    /// tokens never).
    fn allows(&self, state: u32, token: i128) -> PyResult<bool> {
        let t = token_arg(token, "token")?;
        Constraint::allows(&self.inner, &mut { state }, t).map_err(to_py)
    }

    /// The state after ``tokens``, or None as soon as one is not allowed.
    fn advance(&self, state: u32, tokens: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
        let tokens = token_vec(tokens, "tokens")?;
        Constraint::advance(&self.inner, &state, &tokens).map_err(to_py)
    }

    /// The allowed tokens as an int32 bitmask of ``ceil(V / 32)`` words (bit ``t % 32`` of
    /// word ``t // 32``), the layout of llguidance and XGrammar.
    fn mask<'py>(&self, py: Python<'py>, state: u32) -> PyResult<Bound<'py, PyArray1<i32>>> {
        ops::mask_array(py, &self.inner, &mut { state })
    }

    /// Writes the mask of ``state`` into row ``row`` of an int32 array ``[rows, ceil(V / 32)]``.
    fn fill_mask(
        &self,
        py: Python<'_>,
        state: u32,
        out: &Bound<'_, PyAny>,
        row: usize,
    ) -> PyResult<()> {
        ops::fill_mask_row(py, &self.inner, &mut { state }, out, row)
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
        state: u32,
        logits: &Bound<'_, PyAny>,
        temperature: f64,
        estimator: &str,
        seed: u64,
        mask_after: usize,
    ) -> PyResult<SampleTuple> {
        let c = &self.inner;
        ops::sample(
            py,
            c,
            &mut { state },
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
        state: u32,
        probs: &Bound<'_, PyAny>,
        estimator: &str,
        seed: u64,
    ) -> PyResult<SampleTuple> {
        ops::sample_probs(py, &self.inner, &mut { state }, probs, estimator, seed)
    }

    /// The subtree of ``tree`` whose every token the constraint allows after the text in
    /// ``state`` (the root stands for text already there), one walk in Rust; tokens outside the
    /// vocabulary are pruned.
    fn prune_tree(&self, py: Python<'_>, tree: &PyTokenTree, state: u32) -> PyResult<PyPrunedTree> {
        ctree::prune(py, &self.inner, tree, state, NodeStates::Dfa)
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
    ) -> PyResult<(Vec<i32>, Option<u32>, u32)> {
        let r = ctree::verify(py, &self.inner, pruned, logits, probs, seed, |s| match s {
            NodeStates::Dfa(v) => Some(v),
            NodeStates::Grammar(_) => None,
        })?;
        Ok((r.accepted_nodes, r.bonus_token, r.state))
    }

    fn __repr__(&self) -> String {
        format!("Regex({:?})", self.inner.pattern())
    }
}

/// AWRS with a Python predicate as the constraint: the sampler runs without the GIL and takes
/// it only to call ``check``, once per distinct token checked.
// Other Python threads run during the O(V) passes; `check(token) -> bool`.
#[pyfunction]
#[pyo3(signature = (probs, check, estimator="none", seed=0))]
pub fn awrs_sample(
    py: Python<'_>,
    probs: &Bound<'_, PyAny>,
    check: Py<PyAny>,
    estimator: &str,
    seed: u64,
) -> PyResult<SampleTuple> {
    let est = ops::estimator(estimator)?;
    let probs = ops::f64_vec(probs)?;
    let mut err: Option<PyErr> = None;
    let s = py
        .detach(|| {
            let mut f = |t: TokenId| -> bool {
                if err.is_some() {
                    return false;
                }
                Python::attach(
                    |py| match check.bind(py).call1((t,)).and_then(|r| r.is_truthy()) {
                        Ok(ok) => ok,
                        Err(e) => {
                            err = Some(e);
                            false
                        }
                    },
                )
            };
            awrs::sample(&probs, &mut f, est, &mut Rng::new(seed))
        })
        .map_err(to_py)?;
    if let Some(e) = err {
        return Err(e);
    }
    Ok((s.token, s.weight, s.checks))
}

/// Softmax at a temperature in float64, as the AWRS reference uses (for tests).
#[pyfunction]
#[pyo3(name = "_softmax64", signature = (logits, temperature=1.0))]
pub fn softmax64<'py>(
    py: Python<'py>,
    logits: &Bound<'_, PyAny>,
    temperature: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let probs = probs_of(py, logits, temperature)?;
    Ok(PyArray1::from_vec(py, probs))
}
