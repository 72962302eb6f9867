"""fastdec.smc: sequential Monte Carlo over AWRS steps.

* Exact enumeration on a toy problem (4 tokens with EOS, logits that depend on the prefix, a
  regex whose complete texts have at most 3 characters): over many runs at fixed seeds, for both
  weight estimators and ESS thresholds 0 (never resample), 0.5 and 1 (resample whenever the
  weights differ),
  (a) the evidence is unbiased, ``E[Ẑ] = Z = sum_x p(x) l(x)`` (z-test), and
  (b) the population is properly weighted, ``E[(1/N) sum_i w_i 1{x_i = x}] = p(x) l(x)`` for every
      complete ``x`` (per-sequence z-tests, Bonferroni).
  Power checks: the same tests reject resampling that keeps the old weights instead of the
  average, and the LCD frequencies (weights ignored).
* Invariants on random runs (hypothesis): finished particles satisfy the constraint, lengths,
  weights and the evidence agree with each other; dead ends and the ``max_tokens`` cut.
* Determinism for a seed; ValueErrors naming the bad argument; the result's helpers.
* ``HFLM`` on the stories260K model: its KV cache (reordered at every resampling) gives the same
  particles as a ``FunctionLM`` that runs the full forward for every prefix; a cache that does not
  follow the resampling does not. ``generate`` takes the model's eos; the pre-0.2 names still
  work, with a warning.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import fastdec
import numpy as np
import pytest
from fastdec import smc as smc_module
from fastdec.smc import HFLM, FunctionLM, SMCResult, sample
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

# --------------------------------------------------------------------------------------------------
# The toy problem
# --------------------------------------------------------------------------------------------------

TOKENS = [b"a", b"b", b"ab", b""]
EOS = 3
V = len(TOKENS)
VOCAB = fastdec.TokenVocab(TOKENS, special=[EOS], eos=[EOS])
PATTERN = "a[ab]?b|b{2,3}"  # texts ab, aab, abb, bb, bbb: 8 token sequences, 4 tokens at most with EOS
MAX_TOKENS = 4
RX = fastdec.Regex(PATTERN, VOCAB)
# next-token logits keyed by (prefix length, last two tokens; V before the start): a model that
# is fed the wrong history after resampling gives other logits
TABLE = (np.random.default_rng(0).normal(size=(16, V + 1, V + 1, V)) * 1.5).astype(np.float32)


def toy_logits(prefix: tuple[int, ...]) -> np.ndarray:
    padded = (V, V, *prefix)
    return np.asarray(TABLE[len(prefix), padded[-2], padded[-1]])


def log_p(seq: tuple[int, ...]) -> float:
    """``log p(seq)`` under the toy model at temperature 1, in float64 from the float32 logits."""
    total = 0.0
    for k, t in enumerate(seq):
        row = toy_logits(seq[:k]).astype(np.float64)
        total += float(row[t] - np.logaddexp.reduce(row))
    return total


@functools.cache
def exact_target() -> dict[tuple[int, ...], float]:
    """``p(x) l(x)`` for every complete token sequence ``x`` (EOS last) with ``l(x) = 1``."""
    out = {}
    for length in range(MAX_TOKENS):
        for body in itertools.product(range(V - 1), repeat=length):
            state = RX.advance(RX.start(), list(body))
            if state is not None and RX.is_complete(state):
                x = (*body, EOS)
                out[x] = math.exp(log_p(x))
    return out


N_PARTICLES = 4
N_RUNS = 2000
ESTIMATORS = ["geometric", "two-run"]


@functools.cache
def toy_runs(estimator: str, ess_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``N_RUNS`` SMC runs at seeds 0..N_RUNS-1: ``(zhat [R], weighted [R, K], freq [R, K],
    resamples)`` where ``weighted[r, k] = (1/N) sum_i w_i 1{x_i = x_k}`` and ``freq[r, k]`` the
    fraction of particles equal to ``x_k`` (K enumerated sequences)."""
    seqs = list(exact_target())
    where = {x: k for k, x in enumerate(seqs)}
    zhat, weighted, freq = np.zeros(N_RUNS), np.zeros((N_RUNS, len(seqs))), np.zeros((N_RUNS, len(seqs)))
    resamples = 0
    for r in range(N_RUNS):
        res = run_toy(estimator=estimator, ess_threshold=ess_threshold, seed=r)
        assert res.finished.all()  # no dead ends, every sequence ends within MAX_TOKENS
        zhat[r] = math.exp(res.log_evidence)
        for toks, lw in zip(res.tokens, res.log_weights, strict=True):
            k = where[tuple(toks)]  # a KeyError here: a particle outside the support of p * l
            weighted[r, k] += math.exp(lw) / N_PARTICLES
            freq[r, k] += 1 / N_PARTICLES
        resamples += res.resamples
    return zhat, weighted, freq, resamples


def run_toy(**kwargs: Any) -> SMCResult:
    args: dict[str, Any] = {"eos": EOS, "n_particles": N_PARTICLES, "max_tokens": MAX_TOKENS}
    return sample(FunctionLM(toy_logits), RX, **(args | kwargs))


def z_scores(samples: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per-column z statistics of the sample means of ``samples [R, K]`` against ``want [K]``."""
    se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    return np.asarray((samples.mean(axis=0) - want) / se)


def per_sequence_bound(k: int, alpha: float = 1e-4) -> float:
    """The two-sided z bound of ``k`` tests at family-wise level ``alpha`` (Bonferroni)."""
    return float(stats.norm.isf(alpha / (2 * k)))


def test_toy_problem_is_informative() -> None:
    """The enumeration has the expected support, and LCD is far from the target (so the weights
    have something to correct)."""
    target = exact_target()
    assert len(target) == 8
    z = sum(target.values())
    assert 0.05 < z < 0.5
    _, _, freq, _ = toy_runs("geometric", 0.0)
    pi = np.array(list(target.values())) / z
    assert np.abs(freq.mean(axis=0) - pi).max() > 0.1


@pytest.mark.parametrize("ess_threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_evidence_is_unbiased(estimator: str, ess_threshold: float) -> None:
    target = exact_target()
    zhat, _, _, resamples = toy_runs(estimator, ess_threshold)
    z = sum(target.values())
    assert abs(z_scores(zhat[:, None], np.array([z]))[0]) < 4, (zhat.mean(), z)
    if ess_threshold == 0.0:
        assert resamples == 0
    else:
        assert resamples > N_RUNS // 10  # resampling is exercised


@pytest.mark.parametrize("ess_threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_population_is_properly_weighted(estimator: str, ess_threshold: float) -> None:
    target = exact_target()
    _, weighted, _, _ = toy_runs(estimator, ess_threshold)
    want = np.array(list(target.values()))
    z = z_scores(weighted, want)
    assert np.abs(z).max() < per_sequence_bound(len(want)), dict(zip(target, z.round(2), strict=True))


def test_unbiasedness_test_has_power(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resampling that keeps each copy's old weight (no averaging) overestimates Z: caught."""
    right = smc_module._resample

    def keep_weights(log_w: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx, _ = right(log_w, rng)
        return idx, log_w[idx]

    monkeypatch.setattr(smc_module, "_resample", keep_weights)
    zhat = np.array([math.exp(run_toy(ess_threshold=1.0, seed=r).log_evidence) for r in range(500)])
    z = sum(exact_target().values())
    assert z_scores(zhat[:, None], np.array([z]))[0] > 4


def test_per_sequence_test_has_power() -> None:
    """LCD frequencies (the weights ignored, the true Z put in their place) are rejected."""
    target = exact_target()
    z = sum(target.values())
    _, _, freq, _ = toy_runs("geometric", 0.0)
    scores = z_scores(freq * z, np.array(list(target.values())))
    assert np.abs(scores).max() > per_sequence_bound(len(target))


# --------------------------------------------------------------------------------------------------
# Invariants, dead ends, the max_tokens cut
# --------------------------------------------------------------------------------------------------

PATTERNS = [PATTERN, "(ab|b)+a", "a*b", "[ab]{2,}"]


def check_invariants(res: SMCResult, rx: fastdec.Regex, n: int, max_tokens: int) -> None:
    assert len(res.tokens) == n
    assert res.log_weights.shape == (n,)
    assert res.finished.shape == (n,)
    for toks, lw, fin in zip(res.tokens, res.log_weights, res.finished, strict=True):
        assert len(toks) <= max_tokens
        assert EOS not in toks[:-1]
        if fin:
            assert toks[-1] == EOS
            state = rx.advance(rx.start(), toks[:-1])
            assert state is not None
            assert rx.is_complete(state)
            assert rx.advance(state, [EOS]) == state
        elif lw > -np.inf:  # cut off at max_tokens: a viable prefix without EOS
            assert len(toks) == max_tokens
            assert EOS not in toks
            assert rx.advance(rx.start(), toks) is not None
        assert lw <= 1e-9  # every step weight estimates a probability mass <= 1 (and is <= 1 here)
    fin_w = res.log_weights[res.finished]
    want = np.logaddexp.reduce(fin_w) - math.log(n) if fin_w.size else -np.inf
    assert res.log_evidence == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert res.checks >= sum(len(t) for t in res.tokens)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 6),
    max_tokens=st.integers(1, 8),
    ess_threshold=st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]),
    estimator=st.sampled_from(ESTIMATORS),
    pattern=st.sampled_from(PATTERNS),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_invariants(
    seed: int, n: int, max_tokens: int, ess_threshold: float, estimator: str, pattern: str, temperature: float
) -> None:
    rx = fastdec.Regex(pattern, VOCAB)
    kwargs: dict[str, Any] = {
        "eos": [EOS],
        "n_particles": n,
        "max_tokens": max_tokens,
        "ess_threshold": ess_threshold,
        "estimator": estimator,
        "temperature": temperature,
        "seed": seed,
    }
    res = sample(FunctionLM(toy_logits), rx, **kwargs)
    check_invariants(res, rx, n, max_tokens)
    again = sample(FunctionLM(toy_logits), rx, **kwargs)
    assert again.tokens == res.tokens
    np.testing.assert_array_equal(again.log_weights, res.log_weights)
    assert (again.resamples, again.checks, again.log_evidence) == (
        res.resamples,
        res.checks,
        res.log_evidence,
    )


class HistoryConstraint:
    """``RX`` with opaque ``(dfa state, tokens so far)`` states, and CallbackConstraint's EOS
    convention: EOS is appended like any token and a text that ends with it is not complete."""

    vocab_size = V

    def start(self) -> tuple[int, tuple[int, ...]]:
        return RX.start(), ()

    def advance(self, state: tuple[int, tuple[int, ...]], tokens: list[int]) -> Any:
        dfa, hist = state
        for t in tokens:
            if EOS in hist or (t == EOS and not RX.is_complete(dfa)):
                return None
            nxt = dfa if t == EOS else RX.advance(dfa, [t])
            if nxt is None:
                return None
            dfa, hist = nxt, (*hist, t)
        return dfa, hist

    def is_complete(self, state: tuple[int, tuple[int, ...]]) -> bool:
        return RX.is_complete(state[0]) and EOS not in state[1]

    def sample(self, state: tuple[int, tuple[int, ...]], logits: np.ndarray, **kwargs: Any) -> Any:
        assert EOS not in state[1]  # never asked after EOS
        assert len(state[1]) < MAX_TOKENS
        return RX.sample(state[0], logits, **kwargs)


@pytest.mark.parametrize("seed", range(5))
def test_states_are_opaque(seed: int) -> None:
    """Tuple states and an EOS that advance does not keep: the same particles as the int states."""
    want = run_toy(seed=seed, ess_threshold=1.0)
    got = sample(
        FunctionLM(toy_logits),
        HistoryConstraint(),  # type: ignore[arg-type]  # only what sample uses
        eos=EOS,
        n_particles=4,
        max_tokens=4,
        ess_threshold=1.0,
        seed=seed,
    )
    assert got.tokens == want.tokens
    np.testing.assert_array_equal(got.log_weights, want.log_weights)


def test_seeds_differ() -> None:
    runs = [run_toy(seed=s) for s in range(5)]
    assert len({tuple(map(tuple, r.tokens)) for r in runs}) > 1


def test_everything_dies() -> None:
    """Every allowed token has no mass: all particles die at once, no exception."""
    rx = fastdec.Regex("a+", VOCAB)
    lm = FunctionLM(lambda prefix: np.array([-np.inf, 0.0, 0.0, 0.0], dtype=np.float32))
    res = sample(lm, rx, eos=EOS, n_particles=3, max_tokens=5, ess_threshold=1.0)
    assert res.log_evidence == -np.inf
    assert res.tokens == [[], [], []]
    assert not res.finished.any()
    assert (res.log_weights == -np.inf).all()
    assert res.resamples == 0
    with pytest.raises(ValueError, match="no finished particle"):
        res.probabilities()
    with pytest.raises(ValueError, match="no live particle"):
        res.best(include_unfinished=True)


def dies_after_b(prefix: tuple[int, ...]) -> np.ndarray:
    """After a ``b`` only ``b`` has mass, and the pattern below forbids it: a dead end."""
    if prefix and prefix[-1] == 1:
        return np.array([-np.inf, 0.0, -np.inf, -np.inf], dtype=np.float32)
    return np.zeros(V, dtype=np.float32)


def test_some_die() -> None:
    rx = fastdec.Regex("[ab]a", VOCAB)  # "aa" lives, "ba" needs an "a" after "b": none has mass
    res = sample(
        FunctionLM(dies_after_b), rx, eos=EOS, n_particles=16, max_tokens=4, ess_threshold=0.0, seed=3
    )
    dead = res.log_weights == -np.inf
    assert dead.any()
    assert res.finished.any()
    for toks, is_dead, fin in zip(res.tokens, dead, res.finished, strict=True):
        assert toks == ([1] if is_dead else [0, 0, EOS])
        assert fin == (not is_dead)
    check_invariants(res, rx, 16, 4)
    assert res.probabilities()[dead].sum() == 0.0
    # with resampling the dead are replaced at once: every particle finishes
    res = sample(
        FunctionLM(dies_after_b), rx, eos=EOS, n_particles=16, max_tokens=4, ess_threshold=1.0, seed=3
    )
    assert res.finished.all()
    assert res.resamples >= 1


def test_max_tokens_cut() -> None:
    """Particles still running at max_tokens are kept, unfinished; they count 0 in the evidence."""
    rx = fastdec.Regex("a{6}", VOCAB)
    res = sample(FunctionLM(toy_logits), rx, eos=EOS, n_particles=4, max_tokens=3, seed=1)
    assert not res.finished.any()
    assert all(len(t) == 3 for t in res.tokens)
    assert np.isfinite(res.log_weights).all()
    assert res.log_evidence == -np.inf
    probs = res.probabilities(include_unfinished=True)
    assert probs.sum() == pytest.approx(1.0)
    assert res.best(include_unfinished=True) == int(np.argmax(res.log_weights))


def test_result_helpers() -> None:
    res = SMCResult(
        tokens=[[0, EOS], [1, EOS], [1], []],
        log_weights=np.array([math.log(0.1), math.log(0.3), math.log(0.9), -np.inf]),
        finished=np.array([True, True, False, False]),
        log_evidence=math.log(0.1),
        resamples=0,
        checks=3,
    )
    np.testing.assert_allclose(res.probabilities(), [0.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(
        res.probabilities(include_unfinished=True), [0.1 / 1.3, 0.3 / 1.3, 0.9 / 1.3, 0]
    )
    assert res.best() == 1
    assert res.best(include_unfinished=True) == 2
    draws = np.bincount([res.draw(np.random.default_rng(s)) for s in range(400)], minlength=4)
    assert draws[2] == draws[3] == 0
    assert 60 < draws[0] < 140  # Binomial(400, 0.25): mean 100, sd 8.7
    assert res.draw(7) == res.draw(7)


# --------------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"estimator": "none"}, "estimator='none'"),
        ({"estimator": "exact"}, "'exact'"),
        ({"n_particles": 0}, "n_particles=0"),
        ({"n_particles": 2.5}, "n_particles=2.5"),
        ({"n_particles": True}, "n_particles=True"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"ess_threshold": -0.1}, "ess_threshold=-0.1"),
        ({"ess_threshold": 1.5}, "ess_threshold=1.5"),
        ({"ess_threshold": math.nan}, "ess_threshold=nan"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": math.inf}, "temperature=inf"),
        ({"eos": []}, "eos=[]"),
        ({"eos": -1}, "eos id -1"),
        ({"eos": V}, f"eos id {V}"),
        ({"eos": [EOS, 99]}, "eos id 99"),
        ({"eos": "3"}, "eos='3'"),
        ({"eos": [3.0]}, "eos id 3.0"),
        ({"eos": None}, "eos=None"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match="invalid") as err:
        run_toy(**kwargs)
    assert needle in str(err.value)


def test_eos_that_the_constraint_does_not_end_on() -> None:
    """Token 0 ("a") passed as eos is sampled where "aa+" is not complete: ValueError."""
    rx = fastdec.Regex("aa+", VOCAB)
    with pytest.raises(ValueError, match="eos id 0"):
        sample(FunctionLM(toy_logits), rx, eos=0, n_particles=2, max_tokens=4)


def test_logits_of_the_wrong_shape() -> None:
    lm = FunctionLM(lambda prefix: np.zeros(V + 1, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 5\); expected \(2, 4\)"):
        sample(lm, RX, eos=EOS, n_particles=2, max_tokens=4)


# --------------------------------------------------------------------------------------------------
# HFLM on a real model: the KV cache follows the resampling
# --------------------------------------------------------------------------------------------------

# short words only: most tokens are rejected, so weights vary and resampling moves particles
STORIES_PATTERN = r" [a-z]{1,3}( [a-z]{1,3})*\."
STORIES_PROMPT = [1, 403, 407, 261]
STORIES_EOS = 2


@pytest.fixture(scope="module")
def stories(stories_model: tuple[Any, list[bytes]]) -> tuple[Any, fastdec.Regex]:
    from fastdec.vocab import TokenVocab

    model, words = stories_model
    return model, fastdec.Regex(STORIES_PATTERN, TokenVocab.from_llama2c(words))


def full_forward_lm(model: Any, prompt: list[int]) -> FunctionLM:
    """The reference: the whole prompt + prefix through the model, no cache."""
    import torch

    def fn(prefix: tuple[int, ...]) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(model(torch.tensor([prompt + list(prefix)])).logits[0, -1].float().numpy())

    return FunctionLM(fn)


class RecordingHFLM(HFLM):
    def __init__(self, model: Any, prompt_ids: Any) -> None:
        super().__init__(model, prompt_ids)
        self.orders: list[list[int]] = []

    def reorder(self, indices: np.ndarray) -> None:
        self.orders.append(np.asarray(indices).tolist())
        super().reorder(indices)


class StaleCacheHFLM(HFLM):
    """A bug to catch: the cache is broadcast at start but never follows the resampling."""

    def reorder(self, indices: np.ndarray) -> None:
        if self._n == 1:
            super().reorder(indices)


SMC_KW: dict[str, Any] = {
    "eos": STORIES_EOS,
    "n_particles": 4,
    "max_tokens": 10,
    "ess_threshold": 1.0,
}


@pytest.mark.parametrize(("estimator", "seed"), [("geometric", 0), ("geometric", 1), ("two-run", 2)])
def test_hflm_matches_the_full_forward(stories: tuple[Any, fastdec.Regex], estimator: str, seed: int) -> None:
    model, rx = stories
    lm = RecordingHFLM(model, STORIES_PROMPT)
    got = sample(lm, rx, estimator=estimator, seed=seed, **SMC_KW)
    want = sample(full_forward_lm(model, STORIES_PROMPT), rx, estimator=estimator, seed=seed, **SMC_KW)
    assert got.tokens == want.tokens
    np.testing.assert_allclose(got.log_weights, want.log_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.finished, want.finished)
    assert got.resamples == want.resamples > 0
    # start's broadcast, then at least one resampling that really moved particles
    assert lm.orders[0] == [0, 0, 0, 0]
    assert any(order != [0, 1, 2, 3] for order in lm.orders[1:])
    check_invariants(got, rx, 4, 10)


def test_stale_cache_is_caught(stories: tuple[Any, fastdec.Regex]) -> None:
    model, rx = stories
    for seed in range(3):
        got = sample(StaleCacheHFLM(model, STORIES_PROMPT), rx, estimator="geometric", seed=seed, **SMC_KW)
        want = sample(full_forward_lm(model, STORIES_PROMPT), rx, estimator="geometric", seed=seed, **SMC_KW)
        if got.tokens != want.tokens:
            return
    pytest.fail("a cache that ignores resampling gave the reference's particles at every seed")


def test_generate_uses_the_model_eos(stories: tuple[Any, fastdec.Regex]) -> None:
    import torch

    model, rx = stories
    kwargs = {k: v for k, v in SMC_KW.items() if k != "eos"}
    got = smc_module.generate(model, torch.tensor([STORIES_PROMPT]), rx, seed=5, **kwargs)
    want = sample(HFLM(model, STORIES_PROMPT), rx, eos=STORIES_EOS, seed=5, **kwargs)
    assert got.tokens == want.tokens
    np.testing.assert_array_equal(got.log_weights, want.log_weights)
    with pytest.raises(ValueError, match="invalid prompt"):
        smc_module.generate(model, [[1, 2], [3, 4]], rx, **kwargs)
