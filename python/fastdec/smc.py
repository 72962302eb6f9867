"""Sequential Monte Carlo over AWRS steps: constrained sampling from the *global* conditional.

Locally constrained decoding (LCD) draws every token from ``p_t(x) l_t(x) / Z_t``, the model's
next-token law ``p_t = softmax(logits / temperature)`` restricted to the tokens the constraint
allows (``l_t(x) = 1``) and renormalised. The sequence law this gives is distorted: a prefix that
leaves the constraint little room is as likely as under the unconstrained model, even though few of
its continuations are valid. The target of this module is the global conditional

    ``pi(x) = p(x) l(x) / Z``,   ``Z = sum over complete sequences x of p(x) l(x)``,

where ``x`` ends with an end-of-sequence token, ``p(x)`` is the product of the tempered next-token
probabilities and ``l(x) = 1`` iff the text satisfies the constraint.

Weights (Lipkin et al. 2025, "Fast Controlled Generation from Language Models with Adaptive
Weighted Rejection Sampling", COLM 2025, arXiv 2504.05410). One
AWRS step (``constraint.sample``) returns an exact draw ``x_t ~ p_t l_t / Z_t`` *and* a random
weight ``Ẑ_t``, an unbiased estimate of ``Z_t`` such that the pair is properly weighted:
``E[Ẑ_t 1{x_t = x}] = p_t(x) l_t(x)`` for every token ``x``. A particle's weight is the product of
its step weights, so (the steps draw independent seeds) ``E[w 1{X = x}] = p(x) l(x)``: the weight
corrects LCD to ``pi`` and its mean estimates ``Z``. A dead end (no allowed token with mass) has
weight 0 and kills the particle.

SMC (Naesseth, Lindsten and Schön 2019, "Elements of Sequential Monte Carlo"): ``N``
particles extend in lockstep; when the effective sample size ``(sum w)^2 / sum w^2`` falls below
``ess_threshold * N``, the particles are resampled **systematically** (one uniform, ``N`` evenly
spaced points on the weight CDF: particle ``i`` gets ``N wbar_i`` copies in expectation) and every
weight is set to the average weight. Resampling moves particles out of unpromising prefixes and
keeps ``Ẑ = mean_i w_i`` an unbiased estimate of ``Z`` (Del Moral 2004), which
:attr:`SMCResult.log_evidence` reports; the self-normalised weights
(:meth:`SMCResult.probabilities`) approximate ``pi`` (consistent as ``N`` grows, biased for fixed
``N``).

Particles that emit an EOS id are finished: they keep their weight and take no more AWRS steps.
At ``max_tokens`` steps the unfinished particles are kept with ``finished=False``; their weights
are those of a prefix, so they count for nothing in ``log_evidence`` (which therefore estimates
``Z`` restricted to sequences of at most ``max_tokens`` tokens, EOS included) and are left out of
:meth:`SMCResult.probabilities` unless asked for.

The language model is anything with ``start`` / ``step`` / ``reorder`` (:class:`LanguageModel`):
:class:`FunctionLM` wraps a function of the prefix (tests, toy models), :class:`HFLM` a
transformers causal LM with its KV cache (torch is imported only there). The constraint is any
:class:`fastdec.constraints.Constraint`; only ``vocab_size``, ``start``, ``advance``,
``is_complete`` and ``sample`` are used, states are never mutated and resampled particles share
them. An EOS adds no text, so a particle's state is not advanced past it.

>>> import fastdec, numpy as np
>>> vocab = fastdec.TokenVocab([b"a", b"b", b""], eos=[2])
>>> rx = fastdec.Regex("ab?", vocab)
>>> lm = FunctionLM(lambda prefix: np.zeros(3, dtype=np.float32))
>>> res = sample(lm, rx, eos=2, n_particles=4, max_tokens=4, seed=0)
>>> all(t[-1] == 2 for t in res.tokens), bool(res.finished.all())
(True, True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fastdec.constraints import Constraint

__all__ = [
    "HFLM",
    "FunctionLM",
    "LanguageModel",
    "SMCResult",
    "generate",
    "sample",
]

Logits = npt.NDArray[np.float32]
"""``[n, vocab_size]`` next-token logits, one row per particle."""

DEFAULT_MAX_TOKENS = 256


class LanguageModel(Protocol):
    """The model side of SMC: ``n`` sequences that share a prompt and grow one token at a time.

    ``start(n)`` begins ``n`` sequences (the prompt only) and returns their next-token logits
    ``[n, vocab_size]``; ``step(tokens)`` appends ``tokens[i]`` to sequence ``i`` (``tokens [n]``
    int) and returns the new logits; ``reorder(indices)`` makes sequence ``i`` a copy of old
    sequence ``indices[i]`` (``indices [n]`` int; after resampling, so KV caches follow the
    particles).
    """

    def start(self, n: int) -> npt.NDArray[Any]: ...
    def step(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[Any]: ...
    def reorder(self, indices: npt.NDArray[np.intp]) -> None: ...


@dataclass(frozen=True)
class SMCResult:
    """The final particle population of :func:`sample`.

    Attributes:
        tokens: ``N`` lists of generated token ids (the prompt excluded, the EOS included when
            one was emitted; a dead particle's list stops before its dead end).
        log_weights: ``[N] float64`` unnormalised log weights, ``-inf`` for dead particles. A
            finished particle's weight is properly weighted for ``p(x) l(x)``; an unfinished
            one's for its prefix.
        finished: ``[N] bool``, whether the particle emitted an EOS id (False for dead particles
            and for those still running at ``max_tokens``).
        log_evidence: ``log`` of the SMC estimate of ``Z = sum_x p(x) l(x)`` over complete
            sequences of at most ``max_tokens`` tokens: the log mean of the final weights, with
            unfinished particles counting 0; ``-inf`` when no particle finished.
        resamples: how many times the population was resampled.
        checks: constraint checks made by all AWRS steps together.
    """

    tokens: list[list[int]]
    log_weights: npt.NDArray[np.float64]
    finished: npt.NDArray[np.bool_]
    log_evidence: float
    resamples: int
    checks: int

    def probabilities(self, *, include_unfinished: bool = False) -> npt.NDArray[np.float64]:
        """``[N] float64`` normalised weights: the particle approximation of ``pi``.

        Args:
            include_unfinished: also weigh the particles cut off at ``max_tokens`` (their
                weights target a prefix, not a complete sequence). Dead particles always get 0.

        Raises:
            ValueError: no eligible particle has a positive weight.
        """
        eligible = np.ones_like(self.finished) if include_unfinished else self.finished
        log_w = np.where(eligible, self.log_weights, -np.inf)
        top = float(np.max(log_w, initial=-np.inf))
        if top == -np.inf:
            kind = "live" if include_unfinished else "finished"
            raise ValueError(f"no {kind} particle with a positive weight among {len(self.tokens)}")
        w = np.exp(log_w - top)
        return np.asarray(w / w.sum(), dtype=np.float64)

    def best(self, *, include_unfinished: bool = False) -> int:
        """The index of the particle with the largest weight (the lowest index on ties).

        Raises:
            ValueError: as :meth:`probabilities`.
        """
        return int(np.argmax(self.probabilities(include_unfinished=include_unfinished)))

    def draw(self, rng: np.random.Generator | int | None = None, *, include_unfinished: bool = False) -> int:
        """The index of one particle drawn with probability :meth:`probabilities` (an
        approximate sample from ``pi``).

        Args:
            rng: a numpy ``Generator`` or a seed for one.

        Raises:
            ValueError: as :meth:`probabilities`.
        """
        probs = self.probabilities(include_unfinished=include_unfinished)
        return int(np.random.default_rng(rng).choice(len(probs), p=probs))


class FunctionLM:
    """A :class:`LanguageModel` from a pure function of the generated prefix.

    ``fn(prefix)`` returns the ``[vocab_size]`` next-token logits after the prompt and
    ``prefix`` (a tuple of the generated ids). It is called once per distinct prefix per step
    (no cache), so it suits tests, toy models and reference runs.
    """

    def __init__(self, fn: Callable[[tuple[int, ...]], npt.ArrayLike]) -> None:
        self._fn = fn
        self._prefixes: list[tuple[int, ...]] = []

    def start(self, n: int) -> Logits:
        self._prefixes = [()] * n
        return self._logits()

    def step(self, tokens: npt.NDArray[np.int64]) -> Logits:
        toks = np.asarray(tokens).reshape(-1).tolist()
        if len(toks) != len(self._prefixes):
            raise ValueError(f"step got {len(toks)} tokens for {len(self._prefixes)} sequences")
        self._prefixes = [(*p, int(t)) for p, t in zip(self._prefixes, toks, strict=True)]
        return self._logits()

    def reorder(self, indices: npt.NDArray[np.intp]) -> None:
        self._prefixes = [self._prefixes[int(i)] for i in np.asarray(indices).reshape(-1)]

    def _logits(self) -> Logits:
        memo: dict[tuple[int, ...], Logits] = {}
        for p in self._prefixes:
            if p not in memo:
                memo[p] = np.asarray(self._fn(p), dtype=np.float32).reshape(-1)
        return np.stack([memo[p] for p in self._prefixes])


class HFLM:
    """A :class:`LanguageModel` over a transformers causal LM and its KV cache.

    The ``n`` sequences are the rows of one batch (no padding: every row has the same length).
    ``start`` runs the prompt once (batch 1) and copies its cache to ``n`` rows; ``step`` runs
    one token per row against the cache; ``reorder`` gathers the cache rows with
    ``index_select`` over the batch dimension of every layer (``cache.reorder_cache``, else a
    rebuild of the per-layer tensors). Logits come back as float32 numpy arrays.

    Args:
        model: a ``transformers`` causal LM (``model(input_ids=..., cache=...,
            use_cache=True)`` returning ``.logits [B, S, V]`` and the cache; the keyword is
            ``past_key_values`` before transformers 5.24).
        prompt_ids: ``[L]`` int prompt ids, ``L >= 1``.

    Raises:
        ValueError: an empty prompt or a negative id.
    """

    def __init__(self, model: Any, prompt_ids: npt.ArrayLike) -> None:
        from fastdec._optional import require

        self._torch = require("torch")
        from fastdec.generation import cache

        self._kv = cache  # torch-only helpers: imported here, not with this module
        self._model = model
        self._prompt = _prompt_list(prompt_ids)
        self._cache: Any = None
        self._n = 0

    @property
    def _device(self) -> Any:
        device = getattr(self._model, "device", None)
        return device if device is not None else next(self._model.parameters()).device

    def start(self, n: int) -> Logits:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.tensor([self._prompt], dtype=torch.long, device=self._device)
            out = self._model(input_ids=ids, use_cache=True)
        self._cache, self._n = self._kv.returned(out), 1
        self.reorder(np.zeros(n, dtype=np.intp))
        row = out.logits[0, -1].float().cpu().numpy()
        return np.ascontiguousarray(np.broadcast_to(row, (n, row.size)))

    def step(self, tokens: npt.NDArray[np.int64]) -> Logits:
        torch = self._torch
        toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if toks.size != self._n:
            raise ValueError(f"step got {toks.size} tokens for {self._n} sequences")
        with torch.inference_mode():
            ids = torch.from_numpy(toks).view(-1, 1).to(self._device)
            out = self._kv.run(self._model, self._cache, input_ids=ids, use_cache=True)
        self._cache = self._kv.returned(out)
        return np.ascontiguousarray(out.logits[:, -1].float().cpu().numpy())

    def reorder(self, indices: npt.NDArray[np.intp]) -> None:
        idx_np = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx_np.size == self._n and np.array_equal(idx_np, np.arange(self._n)):
            return
        torch = self._torch
        with torch.inference_mode():
            idx = torch.from_numpy(idx_np).to(self._device)
            self._cache = _reorder_cache(self._cache, idx)
        self._n = idx_np.size


def _reorder_cache(cache: Any, idx: Any) -> Any:
    """The cache with batch row ``i`` a copy of old row ``idx[i]``."""
    if hasattr(cache, "reorder_cache"):  # transformers Cache: index_select on every layer
        cache.reorder_cache(idx)
        return cache
    if isinstance(cache, tuple):  # legacy ((k, v), ...) with [B, H, S, D] tensors
        return tuple(tuple(t.index_select(0, idx) for t in layer) for layer in cache)
    from fastdec.generation.cache import kv_tensors, set_kv_tensors

    set_kv_tensors(cache, [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in kv_tensors(cache)])
    return cache


def sample(
    lm: LanguageModel,
    constraint: Constraint,
    *,
    eos: int | Sequence[int],
    n_particles: int = 5,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    ess_threshold: float = 0.5,
    estimator: str = "geometric",
    temperature: float = 1.0,
    seed: int = 0,
) -> SMCResult:
    """Sequential Monte Carlo with AWRS proposals and weights (see the module docstring).

    Every step, each live particle takes one AWRS step (``constraint.sample`` with
    ``estimator``) and multiplies its weight by the returned ``Ẑ_t``; then, unless every
    particle is finished or dead or ``max_tokens`` steps are done, the population is resampled
    (systematic resampling, every weight set to the mean) when its ESS is below
    ``ess_threshold * n_particles``, and the model takes the step's tokens (finished particles
    repeat their EOS, dead ones feed ``eos[0]``; their logits are ignored).

    Args:
        lm: the model, e.g. :class:`HFLM` or :class:`FunctionLM`; its logits must have
            ``constraint.vocab_size`` columns.
        constraint: a :class:`fastdec.constraints.Constraint`, e.g. a :class:`fastdec.Regex`.
        eos: the end-of-sequence id or ids; each must be an EOS of the constraint (allowed
            exactly where the text is complete).
        n_particles: ``N >= 1``.
        max_tokens: steps at most (EOS included), ``>= 1``.
        ess_threshold: in ``[0, 1]``; 0 never resamples (importance sampling), 1 resamples
            whenever the weights are unequal.
        estimator: ``"geometric"`` (lower variance) or ``"two-run"`` (the paper's); ``"none"``
            gives no weights and is rejected.
        temperature: ``p = softmax(logits / temperature)``, finite and ``> 0``.
        seed: one ``np.random.default_rng(seed)`` draws the resampling uniforms and the 64-bit
            seed of every AWRS step, so a seed fixes the result.

    Returns:
        The final :class:`SMCResult`. If every particle dies, ``log_evidence`` is ``-inf``.

    Raises:
        ValueError: a bad argument (the message names it), logits of the wrong shape, or an
            ``eos`` id sampled where the constraint's text is not complete.
        RuntimeError: the constraint sampled a token its own ``advance`` rejects.

    >>> import fastdec, numpy as np
    >>> vocab = fastdec.TokenVocab([b"a", b"b", b""], eos=[2])
    >>> lm = FunctionLM(lambda prefix: np.array([0.0, 1.0, 0.5], dtype=np.float32))
    >>> res = sample(lm, fastdec.Regex("a+", vocab), eos=2, n_particles=3, max_tokens=8)
    >>> [t[0] for t in res.tokens], float(res.log_evidence) < 0.0
    ([0, 0, 0], True)
    """
    eos_ids = _check_args(constraint, eos, n_particles, max_tokens, ess_threshold, estimator, temperature)
    eos_set = set(eos_ids)
    n = n_particles
    rng = np.random.default_rng(seed)
    states: list[Any] = [constraint.start()] * n
    tokens: list[list[int]] = [[] for _ in range(n)]
    log_w = np.zeros(n)
    finished = np.zeros(n, dtype=bool)
    dead = np.zeros(n, dtype=bool)
    resamples = checks = 0
    logits = _check_logits(lm.start(n), n, constraint.vocab_size)
    for step in range(max_tokens):
        seeds = rng.integers(0, 2**64, size=n, dtype=np.uint64).tolist()
        feed = np.full(n, eos_ids[0], dtype=np.int64)
        for i in range(n):
            if finished[i]:
                feed[i] = tokens[i][-1]
            if finished[i] or dead[i]:
                continue
            tok, w, c = constraint.sample(
                states[i], logits[i], temperature=temperature, estimator=estimator, seed=seeds[i]
            )
            checks += c
            if tok is None or not w > 0.0:  # dead end: weight 0
                dead[i], log_w[i] = True, -np.inf
                continue
            log_w[i] += math.log(w)
            tokens[i].append(tok)
            feed[i] = tok
            finished[i] = tok in eos_set
            states[i] = _advance(constraint, states[i], tok, bool(finished[i]))
        if (finished | dead).all() or step == max_tokens - 1:
            break
        if _ess(log_w) < ess_threshold * n:
            idx, log_w = _resample(log_w, rng)
            states = [states[j] for j in idx]
            tokens = [list(tokens[j]) for j in idx]
            finished, dead, feed = finished[idx], dead[idx], feed[idx]
            lm.reorder(idx)
            resamples += 1
        logits = _check_logits(lm.step(feed), n, constraint.vocab_size)
    return SMCResult(
        tokens=tokens,
        log_weights=log_w,
        finished=finished,
        log_evidence=_log_mean_exp(np.where(finished, log_w, -np.inf)),
        resamples=resamples,
        checks=checks,
    )


def generate(
    model: Any,
    input_ids: npt.ArrayLike,
    constraint: Constraint,
    *,
    eos: int | Sequence[int] | None = None,
    n_particles: int = 5,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    ess_threshold: float = 0.5,
    estimator: str = "geometric",
    temperature: float = 1.0,
    seed: int = 0,
) -> SMCResult:
    """:func:`sample` on a transformers causal LM (:class:`HFLM`) after one prompt.

    Args:
        model: a transformers causal LM; its logits must have ``constraint.vocab_size`` columns.
        input_ids: the prompt, ``[L]`` or ``[1, L]`` int (list, numpy array or tensor).
        eos: end-of-sequence id(s); by default ``model.generation_config.eos_token_id``, else
            ``model.config.eos_token_id``.
        Others: as :func:`sample`.

    Raises:
        ValueError: as :func:`sample`, a batch of several prompts, or no ``eos`` to be found.
    """
    if eos is None:
        gen_config = getattr(model, "generation_config", None)
        eos = getattr(gen_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        if eos is None:
            raise ValueError(
                "eos=None and the model defines no eos_token_id (generation_config or config): pass eos="
            )
    return sample(
        HFLM(model, input_ids),
        constraint,
        eos=eos,
        n_particles=n_particles,
        max_tokens=max_tokens,
        ess_threshold=ess_threshold,
        estimator=estimator,
        temperature=temperature,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _resample(
    log_w: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Systematic resampling: ``(indices [N], new log weights [N])``.

    One uniform ``u`` and the points ``(u + k) / N`` on the CDF of the normalised weights; every
    new weight is the mean old weight, so ``mean_i w_i`` is unchanged and stays unbiased.
    """
    n = log_w.size
    top = float(np.max(log_w))
    w = np.exp(log_w - top)
    cdf = np.cumsum(w / w.sum())
    points = (rng.random() + np.arange(n)) / n
    # A zero weight has an empty CDF step and is never chosen; a point at or above the CDF's
    # (rounded) top goes to the last particle with a positive weight.
    last = int(np.flatnonzero(w)[-1])
    idx = np.minimum(np.searchsorted(cdf, points, side="right"), last)
    return idx.astype(np.intp), np.full(n, _log_mean_exp(log_w))


def _ess(log_w: npt.NDArray[np.float64]) -> float:
    """``(sum w)^2 / sum w^2``; 0 when every weight is 0."""
    top = float(np.max(log_w))
    if top == -np.inf:
        return 0.0
    w = np.exp(log_w - top)
    return float(w.sum() ** 2 / (w * w).sum())


def _log_mean_exp(log_w: npt.NDArray[np.float64]) -> float:
    top = float(np.max(log_w))
    if top == -np.inf:
        return -math.inf
    return top + math.log(float(np.exp(log_w - top).mean()))


def _advance(constraint: Constraint, state: Any, tok: int, is_eos: bool) -> Any:
    """The state after ``tok``. EOS adds no text: the state is kept, and it must be complete (a
    constraint allows EOS exactly there; an id that is not its EOS may be allowed elsewhere)."""
    if is_eos:
        if not constraint.is_complete(state):
            raise ValueError(
                f"eos id {tok} was sampled where the text is not complete: it is not an "
                "end-of-sequence token of the constraint"
            )
        return state
    new = constraint.advance(state, [tok])
    if new is None:
        raise RuntimeError(f"constraint.sample returned token {tok}, which constraint.advance rejects")
    return new


def _check_logits(logits: npt.ArrayLike, n: int, vocab_size: int) -> Logits:
    arr = np.asarray(logits)
    if arr.shape != (n, vocab_size):
        raise ValueError(
            f"the model returned logits of shape {arr.shape}; expected ({n}, {vocab_size}) "
            "(n_particles, constraint.vocab_size)"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_args(
    constraint: Constraint,
    eos: int | Sequence[int],
    n_particles: int,
    max_tokens: int,
    ess_threshold: float,
    estimator: str,
    temperature: float,
) -> list[int]:
    """The validated eos ids; ValueError naming the first bad argument."""
    if estimator == "none":
        raise ValueError(
            "invalid estimator='none': it gives no importance weights, which SMC needs; "
            "use 'geometric' or 'two-run'"
        )
    if estimator not in ("geometric", "two-run"):
        raise ValueError(f"invalid estimator={estimator!r}: expected 'geometric' or 'two-run'")
    if not _is_int(n_particles) or n_particles < 1:
        raise ValueError(f"invalid n_particles={n_particles!r}: expected an int >= 1")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise ValueError(f"invalid max_tokens={max_tokens!r}: expected an int >= 1")
    if not isinstance(ess_threshold, numbers.Real) or not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"invalid ess_threshold={ess_threshold!r}: expected a float in [0, 1]")
    if not isinstance(temperature, numbers.Real) or not 0.0 < float(temperature) < math.inf:
        raise ValueError(f"invalid temperature={temperature!r}: expected a finite float > 0")
    ids = [eos] if _is_int(eos) else eos
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not ids:
        raise ValueError(f"invalid eos={eos!r}: expected an id or a non-empty sequence of ids")
    vocab_size = constraint.vocab_size
    for t in ids:
        if not _is_int(t) or not 0 <= int(t) < vocab_size:
            raise ValueError(f"invalid eos id {t!r}: expected an int in [0, {vocab_size})")
    return [int(t) for t in ids]


def _prompt_list(prompt_ids: npt.ArrayLike) -> list[int]:
    raw = prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else prompt_ids
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise ValueError(
            f"invalid prompt of shape {arr.shape} and dtype {arr.dtype}: expected [L] or [1, L] "
            "non-negative int ids, L >= 1"
        )
    return [int(t) for t in arr]
