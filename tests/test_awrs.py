"""Adaptive weighted rejection sampling and regex constraints (fastdec-core ``constraints``).

* The token law equals ``p * l / Z`` (chi-square, fixed seeds) for each estimator, with a
  Python-predicate constraint and with a regex.
* The weights are unbiased: ``E[w] = Z`` (a z-test on the sample mean).
* The mean number of checks of the sampling run is ``1 + sum over invalid r of p(r) / (p(r) + Z)``.
* Dead ends (no valid token with mass) return no token and weight 0.
* Regex semantics equal Python's ``re`` (brute force over completions) on random patterns.
* Every AWRS token lies inside the full mask; bad patterns raise ValueError with the position.
"""

from __future__ import annotations

import contextlib
import itertools
import re

import fastdec
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

ESTIMATORS = ["none", "two-run", "geometric"]


def random_case(seed: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (some tokens without mass) and a random allowed set with some mass."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab, 0.6))
    p[rng.random(vocab) < 0.15] = 0.0
    p /= p.sum()
    allowed = rng.random(vocab) < 0.4
    if not (p * allowed).sum() > 0:
        allowed[int(np.argmax(p))] = True
    return p, allowed


Draws = tuple[np.ndarray, np.ndarray, np.ndarray]


def run(p: np.ndarray, allowed: np.ndarray, estimator: str, n: int, seed0: int) -> Draws:
    tokens, weights, checks = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    probs = p.tolist()
    ok = allowed.tolist()
    for i in range(n):
        tok, w, c = fastdec.awrs_sample(probs, ok.__getitem__, estimator, seed0 + i)
        assert tok is not None
        tokens[i], weights[i], checks[i] = tok, w, c
    return tokens, weights, checks


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_law_is_p_times_l_over_z(estimator: str, seed: int) -> None:
    p, allowed = random_case(seed, vocab=8)
    g = p * allowed / (p * allowed).sum()
    tokens, _, _ = run(p, allowed, estimator, 6000, seed0=1000 * seed)
    counts = np.bincount(tokens, minlength=len(p))
    assert counts[g == 0].sum() == 0  # never a forbidden or massless token
    live = g > 0
    if live.sum() > 1:
        res = stats.chisquare(counts[live], g[live] * len(tokens))
        assert res.pvalue > 1e-4, (counts, g)


def test_chi_square_has_power() -> None:
    """The same test rejects a wrong law (p restricted, but tilted by +-25%)."""
    p, allowed = random_case(0, vocab=8)
    g = p * allowed / (p * allowed).sum()
    tokens, _, _ = run(p, allowed, "none", 6000, seed0=0)
    counts = np.bincount(tokens, minlength=len(p))
    live = g > 0
    wrong = g[live] * np.linspace(0.75, 1.25, live.sum())
    res = stats.chisquare(counts[live], wrong / wrong.sum() * len(tokens))
    assert res.pvalue < 1e-4


@pytest.mark.parametrize("estimator", ["two-run", "geometric"])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_weights_are_unbiased(estimator: str, seed: int) -> None:
    p, allowed = random_case(seed, vocab=10)
    z = float((p * allowed).sum())
    _, weights, _ = run(p, allowed, estimator, 8000, seed0=7000 * seed)
    se = weights.std(ddof=1) / np.sqrt(len(weights))
    assert abs(weights.mean() - z) < 4.5 * se + 1e-12, (weights.mean(), z, se)
    # properly weighted per token too: E[w 1{X = x}] = p(x) l(x), checked on the likeliest token
    tokens, weights, _ = run(p, allowed, estimator, 8000, seed0=9000 * seed)
    x = int(np.argmax(p * allowed))
    wx = weights * (tokens == x)
    assert abs(wx.mean() - p[x]) < 4.5 * wx.std(ddof=1) / np.sqrt(len(wx)) + 1e-12


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_mean_checks_match_the_formula(seed: int) -> None:
    p, allowed = random_case(seed, vocab=12)
    z = float((p * allowed).sum())
    invalid = p[(~allowed) & (p > 0)]
    want = 1 + float((invalid / (invalid + z)).sum())
    _, _, checks = run(p, allowed, "none", 8000, seed0=11 * seed)
    se = checks.std(ddof=1) / np.sqrt(len(checks))
    assert abs(checks.mean() - want) < 4.5 * se, (checks.mean(), want)


def test_dead_end() -> None:
    p = [0.5, 0.0, 0.5]
    seen: list[int] = []

    def never(t: int) -> bool:
        seen.append(t)
        return False

    for est in ESTIMATORS:
        seen.clear()
        assert fastdec.awrs_sample(p, never, est, 1) == (None, 0.0, 2)
        assert sorted(seen) == [0, 2]  # every token with mass checked once, the massless one not


def test_callback_errors_propagate() -> None:
    def boom(t: int) -> bool:
        raise RuntimeError("checker failed")

    with pytest.raises(RuntimeError, match="checker failed"):
        fastdec.awrs_sample([0.2, 0.8], boom)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probs": [], "check": bool}, "must not be empty"),
        ({"probs": [0.5, float("nan")], "check": bool}, "probability NaN at index 1"),
        ({"probs": [0.0, 0.0], "check": bool}, "some token with mass"),
        ({"probs": [1.0], "check": bool, "estimator": "magic"}, "invalid estimator"),
    ],
)
def test_bad_sampler_inputs(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fastdec.awrs_sample(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# regex constraints

ALPHABET_VOCAB = [b"a", b"b", b"ab", b"ba", b"aa", b"", b"<eos>"]
EOS = 6


def small_vocab() -> fastdec.TokenVocab:
    return fastdec.TokenVocab([*ALPHABET_VOCAB[:-1], b""], special=[5, EOS], eos=[EOS])


@st.composite
def patterns(draw: st.DrawFn, depth: int = 3) -> str:
    """Random regexes over {a, b}: literals, classes, groups, alternation and repetition."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(["a", "b", "[ab]", "(?:ab)", "a?", "b*"]))
    kind = draw(st.sampled_from(["cat", "alt", "star", "plus", "opt"]))
    left = draw(patterns(depth=depth - 1))
    if kind == "cat":
        return left + draw(patterns(depth=depth - 1))
    if kind == "alt":
        return f"(?:{left}|{draw(patterns(depth=depth - 1))})"
    return f"(?:{left})" + {"star": "*", "plus": "+", "opt": "?"}[kind]


def viable(pattern: str, text: str, horizon: int) -> bool:
    """Brute force: some completion of at most ``horizon`` characters matches the whole pattern."""
    for k in range(horizon + 1):
        for tail in itertools.product("ab", repeat=k):
            if re.fullmatch(pattern, text + "".join(tail)):
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(patterns(), st.lists(st.integers(0, 4), max_size=6))
def test_regex_matches_python_re(pattern: str, tokens: list[int]) -> None:
    vocab = small_vocab()
    rx = fastdec.Regex(pattern, vocab)
    # A shortest completion never goes round a loop, so it has at most as many characters as
    # the pattern has literal atoms; keep the brute force small.
    horizon = len(re.findall(r"\[ab\]|[ab]", pattern))
    assume(horizon <= 9)
    state: int | None = rx.start()
    text = ""
    for t in tokens:
        assert state is not None
        nxt = rx.advance(state, [t])
        text += ALPHABET_VOCAB[t].decode()
        want = viable(pattern, text, horizon)
        assert (nxt is not None) == want, (pattern, text)
        assert rx.allows(state, t) == want
        if nxt is None:
            return
        state = nxt
    assert state is not None
    assert rx.is_complete(state) == bool(re.fullmatch(pattern, text))
    assert rx.allows(state, EOS) == rx.is_complete(state)
    assert not rx.allows(state, 5)  # an empty non-eos token is never allowed
    mask = np.frombuffer(rx.mask(state).tobytes(), dtype=np.uint8)
    bits = np.unpackbits(mask, bitorder="little")[: len(ALPHABET_VOCAB)]
    assert bits.tolist() == [int(rx.allows(state, t)) for t in range(len(ALPHABET_VOCAB))]


@settings(max_examples=60, deadline=None)
@given(patterns(), st.lists(st.lists(st.integers(0, 4), max_size=5), min_size=1, max_size=8))
def test_mask_cache_equals_fresh_walks(pattern: str, walks: list[list[int]]) -> None:
    """Masks served from a small cache (evicting as it goes) equal uncached trie walks."""
    vocab = small_vocab()
    cached = fastdec.Regex(pattern, vocab, mask_cache_bytes=3 * 4)  # three one-word masks
    fresh = fastdec.Regex(pattern, vocab, mask_cache_bytes=0)
    for tokens in walks * 2:  # every state twice: hits and misses after evictions
        state = cached.advance(cached.start(), tokens)
        if state is None:
            continue
        assert cached.mask(state).tolist() == fresh.mask(state).tolist()
        assert cached.cached_masks <= 3
    assert fresh.cached_masks == 0


def test_regex_sampling_stays_in_the_mask() -> None:
    rng = np.random.default_rng(0)
    words = [bytes(rng.choice(list(b"0123456789-abc"), size=rng.integers(1, 4)).tolist()) for _ in range(300)]
    vocab = fastdec.TokenVocab([*words, b""], special=[300], eos=[300])
    rx = fastdec.Regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", vocab)
    # the trie-walk mask equals token-by-token checks (duplicate and prefix tokens included)
    for state in (rx.start(), rx.advance(rx.start(), [words.index(b"1")] if b"1" in words else [])):
        assert state is not None
        bits = np.unpackbits(np.frombuffer(rx.mask(state).tobytes(), dtype=np.uint8), bitorder="little")
        assert bits[: len(vocab)].tolist() == [int(rx.allows(state, t)) for t in range(len(vocab))]
    for seed in range(40):
        state: int | None = rx.start()
        text = b""
        for step in range(20):
            assert state is not None
            logits = rng.standard_normal(len(vocab)).astype(np.float32)
            tok, w, checks = rx.sample(state, logits, 1.0, "geometric", seed * 100 + step)
            if tok is None:
                break  # dead end cannot happen for this pattern and vocabulary, but would be legal
            words_mask = np.unpackbits(
                np.frombuffer(rx.mask(state).tobytes(), dtype=np.uint8), bitorder="little"
            )
            assert words_mask[tok] == 1
            assert w > 0
            assert checks >= 1
            if tok == 300:
                assert re.fullmatch(rb"[0-9]{4}-[0-9]{2}-[0-9]{2}", text)
                break
            text += vocab.token_bytes(tok)
            state = rx.advance(state, [tok])


def test_regex_law_over_a_real_pattern() -> None:
    """Regex + AWRS: the law of the first token is p restricted to the mask (chi-square)."""
    vocab = fastdec.TokenVocab([b"1", b"2", b"x", b"12", b"y", b"3"])
    rx = fastdec.Regex(r"[123]+", vocab)
    logits = np.array([0.1, 0.5, 2.0, -0.3, 1.5, 0.0], dtype=np.float32)
    p = fastdec._core._softmax64(logits)
    allowed = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    g = p * allowed / (p * allowed).sum()
    toks = [rx.sample(rx.start(), logits, 1.0, "two-run", s)[0] for s in range(5000)]
    counts = np.bincount(np.array(toks), minlength=6)
    assert counts[~allowed].sum() == 0
    assert stats.chisquare(counts[allowed], g[allowed] * len(toks)).pvalue > 1e-4


def test_bad_regex_names_the_position() -> None:
    vocab = small_vocab()
    with pytest.raises(ValueError, match=r"(?s)invalid regex.*a\(b.*\^.*unclosed group"):
        fastdec.Regex("a(b", vocab)
    with pytest.raises(ValueError, match="exceeded size limit"):
        fastdec.Regex("(a|b)*a(a|b){30}", vocab, max_dfa_bytes=1 << 20)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40), st.lists(st.integers(-5, 10), max_size=4))
def test_no_panic_on_any_state_or_token(state: int, token: int, tokens: list[int]) -> None:
    rx = fastdec.Regex("(ab)+", small_vocab())
    for call in (
        lambda: rx.allows(state, token),
        lambda: rx.advance(state, tokens),
        lambda: rx.is_live(state),
        lambda: rx.is_complete(state),
        lambda: rx.mask(state),
        lambda: rx.sample(state, np.zeros(7, dtype=np.float32), 1.0, "none", 0),
    ):
        with contextlib.suppress(ValueError, IndexError, OverflowError):
            call()


@pytest.mark.parametrize("mask_after", [0, 1, 3])
def test_logits_path_law_over_several_blocks(mask_after: int) -> None:
    """The fused softmax + blocked first draw (vocabularies over 256 tokens): the law of the
    sampled token, binned across block boundaries, is p restricted to the constraint, also when
    the full-mask fallback takes over after ``mask_after`` rejections (0: never)."""
    rng = np.random.default_rng(5)
    words = [bytes([rng.choice(list(b"abcxyz"))]) * int(rng.integers(1, 3)) for _ in range(700)]
    vocab = fastdec.TokenVocab(words)
    rx = fastdec.Regex(r"[abc]+", vocab)
    logits = (rng.standard_normal(700) * 1.5).astype(np.float32)
    p = fastdec._core._softmax64(logits)
    allowed = np.array([set(w) <= set(b"abc") for w in words])
    g = p * allowed / (p * allowed).sum()
    toks = np.array([rx.sample(rx.start(), logits, 1.0, "none", s, mask_after)[0] for s in range(20000)])
    assert allowed[toks].all()
    edges = np.arange(0, 701, 50)  # 14 bins; blocks of the sampler end at 256 and 512
    counts = np.histogram(toks, bins=edges)[0]
    want = np.add.reduceat(g, edges[:-1])
    assert stats.chisquare(counts, want * len(toks)).pvalue > 1e-4
