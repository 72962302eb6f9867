"""Losslessness of stochastic verification (docs/design.md#stochastic) by exact enumeration.

Markov targets whose probabilities are multiples of ``1/G`` and coins swept over the midpoints of a
grid that contains every decision boundary, so the law of the first ``T`` emitted tokens is computed
exactly (``Fraction``) and compared with ``Π p(x_t | x_{t-1})``; a deliberately wrong verifier is
shown to fail the same check. The coin-by-coin agreement of the fast verifiers with the reference
is checked in ``test_sampling.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from itertools import product

import numpy as np
import numpy.typing as npt
import pytest
import torch
from fastdec import sampling
from reference import children

Verifier = Callable[..., tuple[list[int], int]]
Law = dict[tuple[int, ...], Fraction]


def draft_tree(root: int, q: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """A deterministic drafter: the 2 likeliest continuations by ``q``, two levels deep."""

    def top2(t: int) -> list[int]:
        return [int(x) for x in np.argsort(-q[t], kind="stable")[:2]]

    tokens, parents = [root], [-1]
    for a in top2(root):
        tokens.append(a)
        parents.append(0)
        node = len(tokens) - 1
        for b in top2(a):
            tokens.append(b)
            parents.append(node)
    return tokens, parents


def step_law(
    verify: Verifier,
    tokens: list[int],
    parents: list[int],
    probs: torch.Tensor,
    table: list[list[Fraction]],
    g: int,
) -> Law:
    """The exact law of the tokens one verification step emits (accepted drafts, then the bonus).

    Treats ``verify`` as a black box whose decision at node ``u`` reads only ``coins[u]``: coin 0
    when ``u`` has children, coin 1 at the stop node. Each coin a decision reads is swept over the
    midpoints of a grid of equal cells that contains all of its boundaries (multiples of ``1/g``
    for acceptance; for the bonus, ``k/m`` with ``m/g`` the mass left without the children, and
    ``k/g`` for the wrong variants), so the law is exact; unread coins are left at 0.5.
    """
    kids = children(parents)
    law: Law = defaultdict(Fraction)

    def rec(assigned: dict[tuple[int, int], float], weight: Fraction) -> None:
        coins = np.full((len(tokens), 2), 0.5)
        for (u, j), value in assigned.items():
            coins[u, j] = value
        nodes, bonus = verify(tokens, parents, probs, coins)
        # the first coin the walk reads that is still free: branch on it
        need = next(((u, 0) for u in nodes if kids[u] and (u, 0) not in assigned), None)
        if need is None and (nodes[-1], 1) not in assigned:
            need = (nodes[-1], 1)
        if need is None:
            law[(*(tokens[u] for u in nodes[1:]), bonus)] += weight
            return
        u, j = need
        cells = g
        if j == 1:
            left = 1 - sum(table[tokens[u]][tokens[c]] for c in kids[u])
            cells = math.lcm(g, int(left * g)) if left > 0 else g
        for k in range(cells):
            rec({**assigned, need: (k + 0.5) / cells}, weight / cells)

    rec({}, Fraction(1))
    return dict(law)


def generation_law(
    verify: Verifier,
    table: list[list[Fraction]],
    probs_table: torch.Tensor,
    q: npt.NDArray[np.float64],
    start: int,
    num_tokens: int,
    g: int,
) -> Law:
    """The exact law of the first ``num_tokens`` tokens of speculative generation from ``start``."""
    steps: dict[int, Law] = {}
    law: Law = defaultdict(Fraction)

    def rec(prefix: tuple[int, ...], weight: Fraction) -> None:
        if len(prefix) >= num_tokens:
            law[prefix[:num_tokens]] += weight
            return
        root = prefix[-1] if prefix else start
        if root not in steps:
            tokens, parents = draft_tree(root, q)
            steps[root] = step_law(verify, tokens, parents, probs_table[tokens], table, g)
        for emitted, w in steps[root].items():
            rec(prefix + emitted, weight * w)

    rec((), Fraction(1))
    return {k: v for k, v in law.items() if v}


def target_law(table: list[list[Fraction]], start: int, num_tokens: int) -> Law:
    vocab = len(table)
    law: Law = {}
    for seq in product(range(vocab), repeat=num_tokens):
        w = Fraction(1)
        for prev, x in zip((start, *seq), seq, strict=False):
            w *= table[prev][x]
        if w:
            law[seq] = w
    return law


def random_table(rng: np.random.Generator, vocab: int, g: int) -> list[list[Fraction]]:
    """Rows of multiples of ``1/g`` summing to exactly 1, some with zeros."""
    rows = []
    for _ in range(vocab):
        counts = rng.multinomial(g, rng.dirichlet(np.full(vocab, 0.7)))
        rows.append([Fraction(int(c), g) for c in counts])
    return rows


def as_probs(table: list[list[Fraction]]) -> torch.Tensor:
    return torch.tensor([[float(x) for x in row] for row in table], dtype=torch.float32)


def tv(a: Law, b: Law) -> float:
    return float(sum(abs(a.get(k, Fraction(0)) - b.get(k, Fraction(0))) for k in a.keys() | b.keys()) / 2)


def verify_bonus_with_children(
    tokens: list[int], parents: list[int], probs: torch.Tensor, coins: npt.ArrayLike
) -> tuple[list[int], int]:
    """WRONG: the accepted path of the reference, but the bonus drawn from the full ``p_u``."""
    nodes, _ = sampling.verify_stochastic_ref(tokens, parents, probs, coins)
    row = probs[nodes[-1]].double().numpy()
    cum = np.cumsum(row)
    coin = float(np.asarray(coins)[nodes[-1], 1])
    return nodes, int(min(np.searchsorted(cum, coin * cum[-1], side="right"), np.flatnonzero(row)[-1]))


def verify_not_renormalised(
    tokens: list[int], parents: list[int], probs: torch.Tensor, coins: npt.ArrayLike
) -> tuple[list[int], int]:
    """WRONG: the children are excluded but the coin is not rescaled (the rest goes to the last token)."""
    nodes, _ = sampling.verify_stochastic_ref(tokens, parents, probs, coins)
    u = nodes[-1]
    row = probs[u].double().numpy().copy()
    row[[tokens[c] for c in children(parents)[u]]] = 0.0
    coin = float(np.asarray(coins)[u, 1])
    return nodes, int(min(np.searchsorted(np.cumsum(row), coin, side="right"), np.flatnonzero(row)[-1]))


@pytest.mark.parametrize(("seed", "vocab", "g"), [(0, 4, 8), (1, 5, 10), (2, 5, 8), (3, 4, 10)])
def test_lossless_exact(seed: int, vocab: int, g: int) -> None:
    rng = np.random.default_rng(seed)
    table = random_table(rng, vocab, g)
    q = rng.random((vocab, vocab))  # the drafter's own (different) table
    start, num_tokens = int(rng.integers(vocab)), 3
    want = target_law(table, start, num_tokens)
    got = generation_law(sampling.verify_stochastic_ref, table, as_probs(table), q, start, num_tokens, g)
    assert got == want  # exact, as Fractions
    assert sum(got.values()) == 1
    if seed == 0:  # the fast path, through the same harness
        got_fast = generation_law(sampling.verify_stochastic, table, as_probs(table), q, start, num_tokens, g)
        assert got_fast == want
    # the harness is sensitive: both wrong variants give another law (on the cheaper g = 8 tables)
    for wrong in (verify_bonus_with_children, verify_not_renormalised) if g == 8 else ():
        bad = generation_law(wrong, table, as_probs(table), q, start, num_tokens, g)
        assert sum(bad.values()) == 1
        assert tv(bad, want) > 0.01, wrong.__name__


def warped_table(rng: np.random.Generator, vocab: int, g: int) -> tuple[list[list[Fraction]], torch.Tensor]:
    """Logits whose warp (temperature 0.7, top-k 3, top-p 0.8) is an exact table of ``k/g`` rows.

    Each row keeps 3 or 2 tokens (each of mass > 0.21) and, with 2, a third, small one that
    top-k keeps and top-p then removes; the other tokens fall to top-k. Logits are ``0.7 * log w``
    so that temperature 0.7 turns them back into ``log w``.
    """
    assert vocab >= 4
    table, logits = [], []
    for _ in range(vocab):
        order = [int(t) for t in rng.permutation(vocab)]
        size = int(rng.integers(2, 4))
        least = math.floor(0.21 * g) + 1  # every kept token has mass > 0.21 > 1 - top_p
        counts = np.full(size, least) + rng.multinomial(g - least * size, np.ones(size) / size)
        weights = np.full(vocab, 0.01)  # dropped by top-k
        if size == 2:
            weights[order[2]] = 0.05  # in the top 3, then dropped by top-p (0.05 / 1.05 < 0.2)
        row = [Fraction(0)] * vocab
        for t, c in zip(order[:size], counts, strict=True):
            weights[t] = c / g
            row[t] = Fraction(int(c), g)
        table.append(row)
        logits.append(0.7 * np.log(weights))
    return table, torch.tensor(np.array(logits), dtype=torch.float32)


@pytest.mark.parametrize(("seed", "g"), [(10, 10), (11, 8)])
def test_lossless_exact_warped(seed: int, g: int) -> None:
    rng = np.random.default_rng(seed)
    vocab, num_tokens = 5, 3
    table, logits = warped_table(rng, vocab, g)
    probs = sampling.warp_probs(logits, 0.7, 3, 0.8)
    assert torch.allclose(probs, as_probs(table), atol=1e-6, rtol=0)  # the warped table is `table`
    assert ((probs > 0).sum(-1) < 4).all()  # top-k and top-p both cut
    q = rng.random((vocab, vocab))
    start = int(rng.integers(vocab))
    got = generation_law(sampling.verify_stochastic_ref, table, probs, q, start, num_tokens, g)
    assert got == target_law(table, start, num_tokens)
    # Without the warp the law is far off (approximately computed: this grid does not resolve
    # the unwarped boundaries), so the check above does test the warp.
    unwarped = torch.softmax(logits, dim=-1)
    assert (
        tv(generation_law(sampling.verify_stochastic_ref, table, unwarped, q, start, num_tokens, g), got)
        > 0.01
    )
