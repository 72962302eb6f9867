"""Constrained tree pruning and verification in Rust (``Regex.prune_tree`` / ``verify_tree``,
the same for ``Grammar``) against the same algorithm over the constraint protocol in Python
(``fastdec.generation.constraint_tree``, which ``CallbackConstraint`` runs):

* pruning keeps the same nodes, and greedy verification takes the same decisions, on hypothesis
  trees, vocabularies of odd sizes and logits with ties and ``-inf``;
* sampled verification is lossless: over many seeds, the law of (path, bonus) equals the exact
  law of drawing each token from the target restricted to the constraint (chi-square, fixed
  seeds).
"""

from __future__ import annotations

import itertools

import fastdec
import numpy as np
import pytest
from fastdec.generation import constraint_tree
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

ALPHABET = [b"a", b"b", b"c", b"ab", b"ba", b"abc", b"cc", b" ", b"b "]
PATTERNS = [r"(ab|c)*b?", r"[ab]{0,6}c", r"(a|bc| )*", r"abc", r"c+"]  # the last: the mask often decides
EOS = 0


def vocab_of(size: int) -> fastdec.TokenVocab:
    """Token 0 is eos; token ``i`` is ``ALPHABET[(i - 1) % 9]`` (repeats are distinct ids)."""
    words = [b"</s>"] + [ALPHABET[i % len(ALPHABET)] for i in range(size - 1)]
    return fastdec.TokenVocab(words, special=[EOS], eos=[EOS])


def constraint_of(kind: str, pattern: str, vocab: fastdec.TokenVocab) -> object:
    if kind == "regex":
        return fastdec.Regex(pattern, vocab)
    return fastdec.Grammar(f"start: /{pattern}/", vocab)


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, list[int], list[int], np.ndarray, int]:
    size = draw(st.sampled_from([1, 2, 3, 5, 10, 31, 33, 64, 65]))
    n = draw(st.integers(1, 14))
    tokens = [draw(st.integers(0, size - 1))]
    parents = [-1]
    for _ in range(1, n):
        i = len(tokens)
        p = draw(st.integers(0, i - 1))
        siblings = {tokens[j] for j in range(1, i) if parents[j] == p}
        t = draw(st.integers(0, size + 2))  # a few ids outside the vocabulary
        if t in siblings:
            continue
        tokens.append(t)
        parents.append(p)
    # Small integer logits make ties common; some -inf.
    m = len(tokens)
    logits = np.array(draw(st.lists(st.integers(-3, 3), min_size=m * size, max_size=m * size)), np.float32)
    logits = logits.reshape(m, size)
    logits[logits == -3] = -np.inf
    prefix = draw(st.integers(0, 3))
    return size, tokens, parents, logits, prefix


def start_state(c: object, size: int, prefix: int) -> object | None:
    """The state after a short allowed prefix (the first allowed token, ``prefix`` times)."""
    state = c.start()  # type: ignore[attr-defined]
    for _ in range(prefix):
        allowed = [t for t in range(1, size) if c.allows(state, t)]  # type: ignore[attr-defined]
        if not allowed:
            break
        state = c.advance(state, [allowed[0]])  # type: ignore[attr-defined]
    return state


@pytest.mark.parametrize("kind", ["regex", "grammar"])
@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_prune_and_greedy_verify_equal_the_protocol_version(kind: str, pattern: str, case: tuple) -> None:
    size, tokens, parents, logits, prefix = case
    c = constraint_of(kind, pattern, vocab_of(size))
    state = start_state(c, size, prefix)
    tree = fastdec.TokenTree(tokens, parents)
    pruned = c.prune_tree(tree, state)  # type: ignore[attr-defined]
    want_tree, want_states = constraint_tree.prune_tree(tree, c, state)
    assert pruned.tree == want_tree
    assert pruned.changed == (want_tree is not tree)
    n = want_tree.num_nodes
    keep = _kept_rows(tree, want_tree)
    rows = np.ascontiguousarray(logits[keep])
    assert rows.shape[0] == n
    got = c.verify_tree(pruned, logits=rows)  # type: ignore[attr-defined]
    want = constraint_tree.verify_tree(want_tree, want_states, c, logits=rows, seed=lambda: 0)
    assert got[:2] == (want[0], want[1])
    if kind == "regex":
        assert got[2] == want[2]
    else:  # grammar states are opaque: compare what they allow
        assert [c.allows(got[2], t) for t in range(size)] == [c.allows(want[2], t) for t in range(size)]  # type: ignore[attr-defined]


def _kept_rows(tree: fastdec.TokenTree, kept: fastdec.TokenTree) -> list[int]:
    """The original node id of each kept node (matched by token path)."""

    def paths(t: fastdec.TokenTree) -> list[tuple[int, ...]]:
        toks, pars = t.tokens.tolist(), t.parents.tolist()
        out: list[tuple[int, ...]] = []
        for i in range(len(toks)):
            out.append((*out[pars[i]], toks[i]) if i else (toks[0],))
        return out

    index = {p: i for i, p in enumerate(paths(tree))}
    return [index[p] for p in paths(kept)]


def test_greedy_falls_back_to_the_full_mask() -> None:
    """When none of the top candidates is allowed, the full mask decides (lowest id on ties)."""
    size = 40
    vocab = vocab_of(size)
    rx = fastdec.Regex("c+", vocab)
    c_ids = [t for t in range(size) if vocab.token_bytes(t) in (b"c", b"cc")]
    logits = np.full((1, size), 5.0, np.float32)  # 31 forbidden tokens ahead of every "c"
    logits[0, c_ids] = 1.0
    logits[0, c_ids[-1]] = 2.0
    pruned = rx.prune_tree(fastdec.TokenTree([5], [-1]), rx.start())
    assert rx.verify_tree(pruned, logits=logits)[:2] == ([0], c_ids[-1])
    logits[0, c_ids[-1]] = 1.0  # a tie among the allowed: the lowest id
    assert rx.verify_tree(pruned, logits=logits)[:2] == ([0], c_ids[0])


def test_dead_end_and_errors() -> None:
    vocab = vocab_of(10)
    rx = fastdec.Regex("abc", vocab)
    abc = [t for t in range(10) if vocab.token_bytes(t) == b"abc"]
    done = rx.advance(rx.start(), abc)
    assert rx.is_complete(done)
    pruned = rx.prune_tree(fastdec.TokenTree([5], [-1]), done)
    logits = np.full((1, 10), -np.inf, np.float32)
    path, bonus, _ = rx.verify_tree(pruned, logits=logits)
    assert (path, bonus) == ([0], EOS)  # only eos is allowed; its logit does not matter
    with pytest.raises(ValueError, match="exactly one of logits"):
        rx.verify_tree(pruned)
    with pytest.raises(ValueError, match="target rows"):
        rx.verify_tree(pruned, logits=np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        rx.verify_tree(pruned, logits=np.full((1, 10), np.nan, np.float32))
    with pytest.raises(TypeError, match="float32"):
        rx.verify_tree(pruned, logits=np.zeros((1, 10), np.float64))
    other = fastdec.Regex("abc", vocab)
    with pytest.raises(ValueError, match="another constraint"):
        other.verify_tree(pruned, logits=np.zeros((1, 10), np.float32))
    grammar = fastdec.Grammar("start: /abc/", vocab)
    with pytest.raises(ValueError, match="another constraint"):
        grammar.verify_tree(pruned, logits=np.zeros((1, 10), np.float32))


def test_sampled_verification_is_lossless() -> None:
    """Chi-square of (path, bonus) over 6000 seeds against the exact law: at each node the
    token is drawn from the target restricted to the constraint."""
    size = 9
    vocab = vocab_of(size)
    rx = fastdec.Regex(r"(ab|c)*b?", vocab)
    rng = np.random.default_rng(7)
    tokens, parents = [3, 1, 2, 4, 3, 8], [-1, 0, 0, 1, 1, 3]  # some nodes are pruned
    tree = fastdec.TokenTree(tokens, parents)
    state = rx.start()
    pruned = rx.prune_tree(tree, state)
    kept, states = constraint_tree.prune_tree(tree, rx, state)
    probs = rng.dirichlet(np.ones(size), size=kept.num_nodes)
    law = _exact_law(rx, kept, states, probs)
    counts: dict[tuple, int] = {}
    for seed in range(6000):
        path, bonus, _ = rx.verify_tree(pruned, probs=probs, seed=seed)
        counts[(tuple(path), bonus)] = counts.get((tuple(path), bonus), 0) + 1
    assert set(counts) <= set(law)
    keys = sorted(law, key=str)
    observed = np.array([counts.get(k, 0) for k in keys])
    expected = np.array([law[k] for k in keys]) * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def _exact_law(c: object, tree: fastdec.TokenTree, states: list, probs: np.ndarray) -> dict[tuple, float]:
    """P(path, bonus) by enumeration: g_u(x) = p_u(x) allowed(x) / Z at every node."""
    toks, pars = tree.tokens.tolist(), tree.parents.tolist()
    kids = {u: {toks[i]: i for i in range(1, len(toks)) if pars[i] == u} for u in range(len(toks))}
    law: dict[tuple, float] = {}

    def walk(u: int, path: tuple[int, ...], mass: float) -> None:
        allowed = np.array([c.allows(states[u], t) for t in range(probs.shape[1])])  # type: ignore[attr-defined]
        g = probs[u] * allowed
        g = g / g.sum()
        for t in itertools.compress(range(len(g)), g > 0):
            if t in kids[u]:
                walk(kids[u][t], (*path, kids[u][t]), mass * g[t])
            else:
                law[(path, t)] = law.get((path, t), 0.0) + mass * g[t]

    walk(0, (0,), 1.0)
    return law
