//! Binding of `fastdec_core::constrain`: token vocabularies, regex constraints and AWRS.

use std::sync::Arc;

use fastdec_core::constrain::{awrs, Estimator, MaskFallback, RegexConstraint, Rng, TokenVocab};
use fastdec_core::TokenId;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{array1_from, f32_vec, maybe_detach, token_arg, token_vec};
use crate::error::to_py;

/// Token byte strings of a model's vocabulary (see `fastdec.TokenVocab`).
#[pyclass(name = "TokenVocab", module = "fastdec._core", frozen)]
pub struct PyTokenVocab {
    pub inner: Arc<TokenVocab>,
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

pub fn estimator(name: &str) -> PyResult<Estimator> {
    match name {
        "none" => Ok(Estimator::None),
        "two-run" => Ok(Estimator::TwoRun),
        "geometric" => Ok(Estimator::Geometric),
        _ => Err(PyValueError::new_err(format!(
            "invalid estimator={name:?}: expected 'none', 'two-run' or 'geometric'"
        ))),
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

type SampleTuple = (Option<u32>, f64, u32);

/// A regular-expression constraint on the decoded text (see `fastdec.Regex`).
#[pyclass(name = "Regex", module = "fastdec._core", frozen)]
pub struct PyRegex {
    inner: RegexConstraint,
}

#[pymethods]
impl PyRegex {
    #[new]
    #[pyo3(signature = (pattern, vocab, max_dfa_bytes=fastdec_core::constrain::regex::DFA_SIZE_LIMIT))]
    fn new(
        py: Python<'_>,
        pattern: &str,
        vocab: &PyTokenVocab,
        max_dfa_bytes: usize,
    ) -> PyResult<Self> {
        let v = vocab.inner.clone();
        let inner = py
            .detach(|| RegexConstraint::with_limit(pattern, v, max_dfa_bytes))
            .map_err(to_py)?;
        Ok(Self { inner })
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

    fn is_live(&self, state: u32) -> bool {
        self.inner.is_live(state)
    }

    fn is_complete(&self, state: u32) -> bool {
        self.inner.is_complete(state)
    }

    fn allows(&self, state: u32, token: i128) -> PyResult<bool> {
        Ok(self.inner.allows(state, token_arg(token, "token")?))
    }

    /// The state after `tokens` in order, or None as soon as one is not allowed.
    fn advance(&self, state: u32, tokens: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
        let tokens = token_vec(tokens, "tokens")?;
        let mut s = state;
        for t in tokens {
            match self.inner.advance(s, t) {
                Some(next) => s = next,
                None => return Ok(None),
            }
        }
        Ok(Some(s))
    }

    /// The allowed-token bitmask of `state` as int32 words, ceil(V / 32) of them.
    fn mask<'py>(&self, py: Python<'py>, state: u32) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let mut words = vec![0u32; self.inner.vocab().len().div_ceil(32)];
        maybe_detach(py, self.inner.vocab().len(), || {
            self.inner.fill_mask(state, &mut words)
        })
        .map_err(to_py)?;
        let as_i32: Vec<i32> = words.into_iter().map(|w| w as i32).collect();
        Ok(array1_from(py, &as_i32))
    }

    /// Writes the mask of `state` into row `row` of an int32 array [rows, ceil(V / 32)].
    fn fill_mask(
        &self,
        py: Python<'_>,
        state: u32,
        out: &Bound<'_, PyAny>,
        row: usize,
    ) -> PyResult<()> {
        let arr = out
            .cast::<numpy::PyArray2<i32>>()
            .map_err(|_| PyValueError::new_err("out must be a 2-D int32 numpy array"))?;
        let mut rw = arr
            .try_readwrite()
            .map_err(|e| PyValueError::new_err(format!("out is not writable: {e}")))?;
        let mut view = rw.as_array_mut();
        let words = self.inner.vocab().len().div_ceil(32);
        if view.ncols() != words || row >= view.nrows() {
            return Err(PyValueError::new_err(format!(
                "out has shape {:?}; need {words} columns and more than {row} rows",
                view.shape()
            )));
        }
        let mut buf = vec![0u32; words];
        maybe_detach(py, self.inner.vocab().len(), || {
            self.inner.fill_mask(state, &mut buf)
        })
        .map_err(to_py)?;
        for (dst, w) in view.row_mut(row).iter_mut().zip(buf) {
            *dst = w as i32;
        }
        Ok(())
    }

    /// One AWRS step from `logits` at `temperature`: (token or None, weight, checks).
    #[pyo3(signature = (state, logits, temperature=1.0, estimator="none", seed=0, mask_after=16))]
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
        let est = self::estimator(estimator)?;
        let logits = f32_vec(logits, "logits")?;
        if logits.len() != self.inner.vocab().len() {
            return Err(PyValueError::new_err(format!(
                "logits have {} entries, the vocabulary {}",
                logits.len(),
                self.inner.vocab().len()
            )));
        }
        let c = &self.inner;
        let s = maybe_detach(py, logits.len(), || {
            let mut check = |t: TokenId| c.allows(state, t);
            let mut fill = |mask: &mut [u32]| {
                // The mask has the vocabulary's length by construction.
                let _ = c.fill_mask(state, mask);
            };
            let fallback = (mask_after > 0).then_some(MaskFallback {
                after: mask_after,
                fill: &mut fill,
            });
            awrs::sample_logits_with_mask(
                &logits,
                temperature,
                &mut check,
                fallback,
                est,
                &mut Rng::new(seed),
            )
        })
        .map_err(to_py)?;
        Ok((s.token, s.weight, s.checks))
    }

    /// One AWRS step from probabilities (float64, normalised): (token or None, weight, checks).
    #[pyo3(signature = (state, probs, estimator="none", seed=0))]
    fn sample_probs(
        &self,
        py: Python<'_>,
        state: u32,
        probs: &Bound<'_, PyAny>,
        estimator: &str,
        seed: u64,
    ) -> PyResult<SampleTuple> {
        let est = self::estimator(estimator)?;
        let probs = f64_vec(probs)?;
        self.sample_from(py, state, &probs, est, seed)
    }

    fn __repr__(&self) -> String {
        format!("Regex({:?})", self.inner.pattern())
    }
}

impl PyRegex {
    fn sample_from(
        &self,
        py: Python<'_>,
        state: u32,
        probs: &[f64],
        est: Estimator,
        seed: u64,
    ) -> PyResult<SampleTuple> {
        if probs.len() != self.inner.vocab().len() {
            return Err(PyValueError::new_err(format!(
                "logits/probs have {} entries, the vocabulary {}",
                probs.len(),
                self.inner.vocab().len()
            )));
        }
        let c = &self.inner;
        let s = maybe_detach(py, probs.len(), || {
            let mut check = |t: TokenId| c.allows(state, t);
            awrs::sample(probs, &mut check, est, &mut Rng::new(seed))
        })
        .map_err(to_py)?;
        Ok((s.token, s.weight, s.checks))
    }
}

/// A float64 numpy array (copied in one go) or any sequence of floats.
fn f64_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    if let Ok(arr) = obj.cast::<PyArray1<f64>>() {
        return Ok(arr.readonly().as_array().iter().copied().collect());
    }
    obj.extract()
}

/// AWRS with a Python callable as the constraint: `check(token) -> bool` runs with the GIL, the
/// rest without it is not worth a release (the callback needs it at every check).
#[pyfunction]
#[pyo3(signature = (probs, check, estimator="none", seed=0))]
pub fn awrs_sample(
    probs: &Bound<'_, PyAny>,
    check: &Bound<'_, PyAny>,
    estimator: &str,
    seed: u64,
) -> PyResult<SampleTuple> {
    let est = self::estimator(estimator)?;
    let probs = f64_vec(probs)?;
    let mut err: Option<PyErr> = None;
    let mut f = |t: TokenId| -> bool {
        if err.is_some() {
            return false;
        }
        match check.call1((t,)).and_then(|r| r.is_truthy()) {
            Ok(ok) => ok,
            Err(e) => {
                err = Some(e);
                false
            }
        }
    };
    let s = awrs::sample(&probs, &mut f, est, &mut Rng::new(seed)).map_err(to_py)?;
    if let Some(e) = err {
        return Err(e);
    }
    Ok((s.token, s.weight, s.checks))
}

/// Softmax at a temperature as AWRS computes it (float64), for tests and callers.
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
