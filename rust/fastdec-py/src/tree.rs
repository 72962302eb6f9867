//! Bindings of token trees and their verification (greedy, stochastic).

use std::mem::MaybeUninit;

use fastdec_core::{
    fuse, Bf16Bits, F16Bits, MaskDtype, MaskValue, ScoreCombine, ScoreMode, TokenTree,
};
use half::f16;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::convert::{
    array1_from, coin_pairs, count, f32_vec, float_array, i32_vec, maybe_detach, new_array2_uninit,
    token_arg, token_vec, tokens_as_i32, view1, view2, with_floats,
};
use crate::error::to_py;

/// A draft tree: node 0 is the root, ``parents[i] < i``, siblings carry distinct tokens.
///
/// Args:
///     tokens: ``[N]`` token ids (>= 0), ``tokens[0]`` the root.
///     parents: ``[N]`` parent node ids, ``parents[0] == -1`` and ``0 <= parents[i] < i``.
///     scores: optional ``[N]`` float scores (probabilities, log-probabilities, counts) that
///         guide fusion, pruning and best-first selection.
///
/// Raises:
///     ValueError: a malformed tree; the message names the offending node.
///
/// >>> TokenTree([5, 6, 7], [-1, 0, 0]).num_leaves
/// 2
#[pyclass(name = "TokenTree", module = "fastdec._core", frozen)]
pub struct PyTokenTree {
    pub inner: TokenTree,
}

impl From<TokenTree> for PyTokenTree {
    fn from(inner: TokenTree) -> Self {
        PyTokenTree { inner }
    }
}

fn owned2<T: numpy::Element>(
    py: Python<'_>,
    data: Vec<T>,
    rows: usize,
    cols: usize,
) -> Bound<'_, PyArray2<T>> {
    Array2::from_shape_vec((rows, cols), data)
        .expect("rows * cols == len")
        .into_pyarray(py)
}

#[allow(unsafe_code)] // one layout-preserving slice cast, justified below
fn mask_array<'py, T: MaskValue, E: numpy::Element + Send>(
    py: Python<'py>,
    tree: &TokenTree,
    prefix_len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    const {
        assert!(
            std::mem::size_of::<T>() == std::mem::size_of::<E>()
                && std::mem::align_of::<T>() == std::mem::align_of::<E>()
        );
    };
    let (rows, cols) = (tree.num_nodes(), prefix_len + tree.num_nodes());
    let arr = new_array2_uninit(py, rows, cols, |out: &mut [MaybeUninit<E>]| {
        // SAFETY: T and E have the same size and alignment (checked above) and the same bit
        // meaning: f32/f32, f64/f64, F16Bits/half::f16 (both a transparent u16), Bf16Bits/u16.
        let out = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<T>>(), out.len())
        };
        tree.write_additive_mask::<T>(prefix_len, out)
    })
    .map_err(to_py)?;
    Ok(arr.into_any())
}

fn dtype_name(dtype: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = dtype.extract::<String>() {
        return Ok(s);
    }
    // numpy dtypes and scalar types have `.name` / `__name__`; torch dtypes print as torch.float16.
    for attr in ["name", "__name__"] {
        if let Ok(s) = dtype.getattr(attr).and_then(|a| a.extract::<String>()) {
            return Ok(s);
        }
    }
    Ok(dtype.str()?.to_string())
}

#[pymethods]
impl PyTokenTree {
    #[new]
    #[pyo3(signature = (tokens, parents, *, scores = None))]
    fn new(
        tokens: &Bound<'_, PyAny>,
        parents: &Bound<'_, PyAny>,
        scores: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let tokens = token_vec(tokens, "tokens")?;
        let parents = i32_vec(parents, "parents")?;
        let mut tree = TokenTree::new(tokens, parents).map_err(to_py)?;
        if let Some(s) = scores {
            tree = tree.with_scores(f32_vec(s, "scores")?).map_err(to_py)?;
        }
        Ok(tree.into())
    }

    /// A linear draft: ``tokens[0]`` is the root, every later token the child of the one before.
    #[staticmethod]
    fn chain(tokens: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(TokenTree::chain(token_vec(tokens, "tokens")?)
            .map_err(to_py)?
            .into())
    }

    /// Best-first selection of ``budget`` nodes from a scored candidate expansion (EAGLE-2 rerank).
    ///
    /// Args:
    ///     tokens, parents: the candidate tree (parents-first, distinct siblings).
    ///     scores: ``[N]`` per-edge scores: log-probabilities (``score_mode="logprob"``, path
    ///         score = sum), probabilities (``"prob"``, product) or path scores (``"path"``).
    ///     budget: nodes to keep, root included.
    ///     max_depth: drop candidates deeper than this.
    ///
    /// Returns:
    ///     The ancestor-closed subtree of the best candidates in their original order, with
    ///     path scores as ``scores``.
    #[staticmethod]
    #[pyo3(signature = (tokens, parents, scores, *, budget, max_depth = None, score_mode = "logprob"))]
    fn from_candidates(
        py: Python<'_>,
        tokens: &Bound<'_, PyAny>,
        parents: &Bound<'_, PyAny>,
        scores: &Bound<'_, PyAny>,
        budget: i128,
        max_depth: Option<i128>,
        score_mode: &str,
    ) -> PyResult<Self> {
        let budget = count(budget, "budget")?;
        let max_depth = max_depth.map(|d| count(d, "max_depth")).transpose()?;
        let mode = ScoreMode::parse(score_mode).map_err(to_py)?;
        let tokens = token_vec(tokens, "tokens")?;
        let parents = i32_vec(parents, "parents")?;
        let scores = f32_vec(scores, "scores")?;
        let work = tokens.len() * 8;
        maybe_detach(py, work, move || {
            TokenTree::new(tokens, parents)?
                .with_scores(scores)?
                .with_path_scores(mode)?
                .best_first_subtree(budget, max_depth)
        })
        .map(Into::into)
        .map_err(to_py)
    }

    /// Best-first expansion (DySpec): grow the tree one best-scoring node at a time.
    ///
    /// ``expand(path_tokens)`` returns the candidate children ``(token, edge score)`` of the node
    /// reached by ``path_tokens`` (root first); it is called once per added node above
    /// ``max_depth``. Repeated sibling tokens are skipped.
    #[staticmethod]
    #[pyo3(signature = (root, expand, *, budget, max_depth, score_mode = "logprob"))]
    fn best_first(
        root: i128,
        expand: &Bound<'_, PyAny>,
        budget: i128,
        max_depth: i128,
        score_mode: &str,
    ) -> PyResult<Self> {
        let (budget, max_depth) = (count(budget, "budget")?, count(max_depth, "max_depth")?);
        let mode = ScoreMode::parse(score_mode).map_err(to_py)?;
        let root = token_arg(root, "root")?;
        let mut py_err: Option<PyErr> = None;
        let result = TokenTree::best_first_expand(root, budget, max_depth, mode, |path, out| {
            let mut call = || -> PyResult<()> {
                let children = expand.call1((PyList::new(expand.py(), path)?,))?;
                for item in children.try_iter()? {
                    let (token, score): (i64, f64) = item?.extract().map_err(|_| {
                        PyTypeError::new_err(
                            "expand must return an iterable of (token, score) pairs",
                        )
                    })?;
                    let token = u32::try_from(token).map_err(|_| {
                        PyValueError::new_err(format!(
                            "expand returned token {token}; token ids must be >= 0"
                        ))
                    })?;
                    out.push((token, score as f32));
                }
                Ok(())
            };
            call().map_err(|e| {
                py_err = Some(e);
                fastdec_core::Error::Empty {
                    what: "expansion (Python error)",
                }
            })
        });
        match (result, py_err) {
            (_, Some(e)) => Err(e),
            (r, None) => Ok(r.map_err(to_py)?.into()),
        }
    }

    /// Merges trees with one root token: equal prefixes share a node, scores combine.
    ///
    /// Trees without scores count 1.0 per node, so ``combine="sum"`` counts how many trees
    /// propose each path. With ``budget``, the fused tree is pruned best-first by score.
    #[staticmethod]
    #[pyo3(signature = (trees, *, budget = None, combine = "sum"))]
    fn fuse(
        py: Python<'_>,
        trees: Vec<PyRef<'_, PyTokenTree>>,
        budget: Option<i128>,
        combine: &str,
    ) -> PyResult<Self> {
        let budget = budget.map(|b| count(b, "budget")).transpose()?;
        let combine = match combine {
            "sum" => ScoreCombine::Sum,
            "max" => ScoreCombine::Max,
            other => {
                return Err(PyValueError::new_err(format!(
                    "invalid combine = {other}: one of 'sum', 'max'"
                )))
            }
        };
        let refs: Vec<&TokenTree> = trees.iter().map(|t| &t.inner).collect();
        let work: usize = refs.iter().map(|t| t.num_nodes()).sum::<usize>() * 16;
        maybe_detach(py, work, || fuse(&refs, combine, budget))
            .map(Into::into)
            .map_err(to_py)
    }

    #[getter]
    fn num_nodes(&self) -> usize {
        self.inner.num_nodes()
    }
    #[getter]
    fn max_depth(&self) -> usize {
        self.inner.max_depth()
    }
    #[getter]
    fn num_leaves(&self) -> usize {
        self.inner.shape().leaves().len()
    }
    #[getter]
    fn root_token(&self) -> u32 {
        self.inner.root_token()
    }
    /// ``[N] int32`` tokens (read-only view).
    #[getter]
    fn tokens<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), tokens_as_i32(slf.get().inner.tokens()))
    }
    /// ``[N] int32`` parent ids, -1 for the root (read-only view).
    #[getter]
    fn parents<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.parents())
    }
    /// ``[N] int32`` depths, 0 for the root (read-only view).
    #[getter]
    fn depth<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.depth())
    }
    /// ``[N] int32`` lowest-index child of every node, -1 for leaves (read-only view).
    #[getter]
    fn first_child<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.shape().first_child())
    }
    /// ``[N] int32`` next higher-index sibling, -1 for none (read-only view).
    #[getter]
    fn next_sibling<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray1<i32>> {
        view1(slf.as_any(), slf.get().inner.shape().next_sibling())
    }
    /// ``[N] float32`` scores if the tree has them (read-only view).
    #[getter]
    fn scores<'py>(slf: &Bound<'py, Self>) -> Option<Bound<'py, PyArray1<f32>>> {
        slf.get().inner.scores().map(|s| view1(slf.as_any(), s))
    }

    /// ``[num_leaves, max_depth + 1] int32`` root-to-leaf node paths padded with -1
    /// (Medusa/EAGLE "retrieve indices"), one row per leaf in ascending leaf id (read-only view).
    fn leaf_paths<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyArray2<i32>> {
        let shape = slf.get().inner.shape();
        view2(
            slf.as_any(),
            shape.leaf_paths(),
            shape.leaves().len(),
            shape.leaf_path_width(),
        )
    }

    /// ``[N] int32`` position ids ``prefix_len + depth``.
    #[pyo3(signature = (prefix_len = 0))]
    fn position_ids<'py>(
        &self,
        py: Python<'py>,
        prefix_len: i128,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let prefix_len = count(prefix_len, "prefix_len")?;
        Ok(array1_from(
            py,
            &self.inner.position_ids(prefix_len).map_err(to_py)?,
        ))
    }

    /// ``[N, (N + 31) // 32] int32`` packed ancestor-or-self rows: bit ``j % 32`` of word
    /// ``j // 32`` of row ``i`` is set iff node ``j`` is on the path to node ``i``.
    fn ancestor_bits<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i32>> {
        let n = self.inner.num_nodes();
        owned2(
            py,
            self.inner.ancestor_bits().to_i32_words(),
            n,
            n.div_ceil(32),
        )
    }

    /// ``[N, N] bool`` dense ancestor-or-self mask.
    fn ancestor_mask<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<bool>> {
        let n = self.inner.num_nodes();
        let mask = maybe_detach(py, n * n, || self.inner.ancestor_mask());
        owned2(py, mask, n, n)
    }

    /// ``[N, prefix_len + N]`` additive attention mask: 0 where visible (every prefix column
    /// and each node's ancestors-or-self), ``finfo(dtype).min`` elsewhere.
    ///
    /// Args:
    ///     prefix_len: cached tokens before the root.
    ///     dtype: ``"float32"`` (default), ``"float64"``, ``"float16"`` or ``"bfloat16"`` (a
    ///         name, numpy dtype or torch dtype). bfloat16 comes back as ``uint16`` bit
    ///         patterns: ``torch.from_numpy(m).view(torch.bfloat16)``.
    #[pyo3(signature = (prefix_len = 0, dtype = None))]
    fn additive_mask<'py>(
        &self,
        py: Python<'py>,
        prefix_len: i128,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let prefix_len = count(prefix_len, "prefix_len")?;
        let dtype = match dtype {
            None => MaskDtype::Float32,
            Some(d) => MaskDtype::parse(&dtype_name(d)?).map_err(to_py)?,
        };
        self.inner.additive_mask_len(prefix_len).map_err(to_py)?;
        let t = &self.inner;
        match dtype {
            MaskDtype::Float32 => mask_array::<f32, f32>(py, t, prefix_len),
            MaskDtype::Float64 => mask_array::<f64, f64>(py, t, prefix_len),
            MaskDtype::Float16 => mask_array::<F16Bits, f16>(py, t, prefix_len),
            MaskDtype::BFloat16 => mask_array::<Bf16Bits, u16>(py, t, prefix_len),
        }
    }

    /// The leaf whose root-to-leaf path has the largest sum of scores (root excluded; lowest id
    /// on ties): with path-probability scores, the chain a greedy verifier is expected to
    /// accept most of. The deepest leaf for a tree without scores.
    fn likeliest_leaf(&self) -> usize {
        self.inner.likeliest_leaf()
    }

    /// Node ids of the root-to-``leaf`` path (default: the deepest leaf, lowest id on ties).
    #[pyo3(signature = (leaf = None))]
    fn chain_view<'py>(
        &self,
        py: Python<'py>,
        leaf: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let leaf = match leaf {
            None => None,
            Some(l) => Some(usize::try_from(l).map_err(|_| {
                pyo3::exceptions::PyIndexError::new_err(format!(
                    "leaf {l} out of range for {} nodes",
                    self.inner.num_nodes()
                ))
            })?),
        };
        Ok(self.inner.chain_view(leaf).map_err(to_py)?.into_pyarray(py))
    }

    /// SGLang-style fixed-size form: ``tokens [size]``, ``mask [size, size] bool`` (padded
    /// rows see only themselves, so no row is fully masked) and ``positions [size]``.
    #[pyo3(signature = (size, *, pad_id = 0, prefix_len = 0))]
    fn padded<'py>(
        &self,
        py: Python<'py>,
        size: i128,
        pad_id: i128,
        prefix_len: i128,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (size, prefix_len) = (count(size, "size")?, count(prefix_len, "prefix_len")?);
        let pad_id = token_arg(pad_id, "pad_id")?;
        let p = self.inner.padded(size, pad_id, prefix_len).map_err(to_py)?;
        PyTuple::new(
            py,
            [
                p.tokens.into_pyarray(py).into_any(),
                owned2(py, p.mask, size, size).into_any(),
                p.positions.into_pyarray(py).into_any(),
            ],
        )
    }

    /// Greedy verification.
    ///
    /// Args:
    ///     target_argmax: ``[N] int32`` the target's argmax token at every node.
    ///
    /// Returns:
    ///     ``(accepted_nodes, num_accepted, bonus_token)``: accepted node ids root first
    ///     (``[num_accepted + 1] int32``), the number of accepted drafts, and the token to
    ///     emit after them.
    fn verify_greedy<'py>(
        &self,
        py: Python<'py>,
        target_argmax: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, usize, u32)> {
        let argmax = i32_vec(target_argmax, "target_argmax")?;
        let r = self.inner.verify_greedy(&argmax).map_err(to_py)?;
        let num_accepted = r.num_accepted();
        Ok((
            array1_from(py, &r.accepted_nodes),
            num_accepted,
            r.bonus_token,
        ))
    }

    /// Lossless stochastic verification (the single-coin point-mass rule, docs/design.md#stochastic), the
    /// reference ``fastdec.sampling`` and the CUDA kernel reproduce coin for coin. ``probs``:
    /// ``[N, V]`` float32/float64 target probabilities, row ``i`` for the token after node
    /// ``i`` (read in place when C-contiguous); ``coins``: ``[N, 2]`` uniforms in ``[0, 1)``
    /// (``[:, 0]`` acceptance, ``[:, 1]`` bonus). Returns ``(accepted_nodes, num_accepted,
    /// bonus_token)`` as :meth:`verify_greedy`.
    ///
    /// Raises:
    ///     ValueError: mismatched shapes, coins outside ``[0, 1)``, a token outside the
    ///         vocabulary, a bad probability among those read, or a stop row with no mass.
    ///     TypeError: ``probs`` is not a float32 or float64 numpy array.
    fn verify_stochastic<'py>(
        &self,
        py: Python<'py>,
        probs: &Bound<'py, PyAny>,
        coins: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, usize, u32)> {
        let probs = float_array(probs, 2, "probs")?;
        let vocab = probs.shape()[1];
        let coins = coin_pairs(coins, &[self.inner.num_nodes()])?;
        let tree = &self.inner;
        let r = with_floats!(&probs, |p| maybe_detach(py, vocab, || tree
            .verify_stochastic(p, vocab, &coins)))
        .map_err(to_py)?;
        Ok((
            array1_from(py, &r.accepted_nodes),
            r.num_accepted(),
            r.bonus_token,
        ))
    }

    /// The ``budget`` best nodes chosen best-first by score (breadth-first without scores).
    #[pyo3(signature = (budget, *, max_depth = None))]
    fn best_first_subtree(&self, budget: i128, max_depth: Option<i128>) -> PyResult<Self> {
        let budget = count(budget, "budget")?;
        let max_depth = max_depth.map(|d| count(d, "max_depth")).transpose()?;
        Ok(self
            .inner
            .best_first_subtree(budget, max_depth)
            .map_err(to_py)?
            .into())
    }

    fn __len__(&self) -> usize {
        self.inner.num_nodes()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyTokenTree>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("TokenTree is unhashable"))
    }

    fn __repr__(&self) -> String {
        let t = &self.inner;
        let shown: Vec<String> = t.tokens().iter().take(8).map(ToString::to_string).collect();
        let more = if t.num_nodes() > 8 { ", ..." } else { "" };
        format!(
            "TokenTree(num_nodes={}, max_depth={}, num_leaves={}, tokens=[{}{more}])",
            t.num_nodes(),
            t.max_depth(),
            t.shape().leaves().len(),
            shown.join(", ")
        )
    }
}

/// Greedy verification of many trees.
///
/// Args:
///     trees: ``B`` trees.
///     target_argmax: ``[sum of num_nodes] int32``, every tree's per-node argmax concatenated.
///
/// Returns:
///     ``accepted_nodes [B, max(max_depth) + 1]`` (padded with -1), ``num_accepted [B]`` and
///     ``bonus_token [B]``, all int32.
#[pyfunction]
pub fn verify_greedy_batch<'py>(
    py: Python<'py>,
    trees: Vec<PyRef<'py, PyTokenTree>>,
    target_argmax: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let argmax = i32_vec(target_argmax, "target_argmax")?;
    let refs: Vec<&TokenTree> = trees.iter().map(|t| &t.inner).collect();
    let v = maybe_detach(py, argmax.len(), || {
        fastdec_core::verify_greedy_batch_padded(&refs, &argmax)
    })
    .map_err(to_py)?;
    PyTuple::new(
        py,
        [
            owned2(py, v.accepted_nodes, v.rows, v.width).into_any(),
            v.num_accepted.into_pyarray(py).into_any(),
            v.bonus_tokens.into_pyarray(py).into_any(),
        ],
    )
}
