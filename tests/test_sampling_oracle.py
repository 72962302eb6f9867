"""The Rust reference of stochastic verification (``TokenTree.verify_stochastic``, called by
``sampling.verify_stochastic_ref``), the plain-Python oracle (``stochastic_oracle.py``) and the
torch fast path (``sampling.verify_stochastic_batch``) take the same decisions, coin by coin, at
odd vocabulary sizes (1..600, across multiples of the CDF chunk), on random trees with
zero-probability children, children holding all the mass (``z == 0``) and coins on boundaries."""

from __future__ import annotations

from collections.abc import Callable

import fastdec._core as core
import numpy as np
import pytest
import torch
from fastdec import sampling
from hypothesis import given, settings
from hypothesis import strategies as st
from stochastic_oracle import CDF_CHUNK, verify_stochastic_oracle
from test_sampling import Case, cases

ODD_VOCABS = st.sampled_from([1, 2, 3, 255, 256, 257, 511, 512, 513, 600]) | st.integers(1, 600)
DTYPES = ["float32", "float64", "bfloat16"]


def test_oracle_chunk_matches_the_library() -> None:
    assert CDF_CHUNK == sampling.CDF_CHUNK


def decisions(case: Case, probs: torch.Tensor) -> list[tuple[list[int], int] | str]:
    """Every implementation's decision on one case ("no mass" for a rejected stop row)."""
    host = probs.float().numpy() if probs.dtype != torch.float64 else probs.numpy()
    tree = core.TokenTree(case.tokens, case.parents)
    calls = [
        lambda: verify_stochastic_oracle(case.tokens, case.parents, host, case.coins),
        lambda: sampling.verify_stochastic_ref(case.tokens, case.parents, probs, case.coins),
        lambda: sampling.verify_stochastic_batch(
            [(np.array(case.tokens), np.array(case.parents))], probs[None], case.coins[None]
        )[0],
        lambda: core.verify_stochastic_batch([tree], host[None], case.coins[None])[0],
    ]

    def native() -> tuple[list[int], int]:
        nodes, num, bonus = tree.verify_stochastic(host, case.coins)
        assert num == len(nodes) - 1
        return nodes.tolist(), bonus

    return [outcome(call) for call in [*calls, native]]


def outcome(call: Callable[[], tuple[list[int], int]]) -> tuple[list[int], int] | str:
    """The call's decision, or "no mass" for a rejected stop row (other errors by message)."""
    try:
        return call()
    except ValueError as e:
        return "no mass" if "no mass" in str(e) else f"ValueError: {e}"


@settings(max_examples=150, deadline=None)
@given(cases(max_nodes=10, vocabs=ODD_VOCABS), st.sampled_from(DTYPES))
def test_rust_equals_oracle_and_torch(case: Case, dtype: str) -> None:
    got = decisions(case, torch.from_numpy(case.probs).to(getattr(torch, dtype)))
    assert all(g == got[0] for g in got), got


@settings(max_examples=40, deadline=None)
@given(st.lists(cases(max_nodes=8, vocabs=st.just(257)), min_size=1, max_size=4), st.integers(0, 2))
def test_batches_agree(batch: list[Case], pad: int) -> None:
    """Padded batches: rows past a tree's nodes hold NaN and invalid coins, never read."""
    n = max(len(c.tokens) for c in batch) + pad
    probs = torch.full((len(batch), n, 257), float("nan"))
    coins = torch.full((len(batch), n, 2), 2.0, dtype=torch.float64)
    for b, c in enumerate(batch):
        probs[b, : len(c.tokens)] = torch.from_numpy(c.probs)
        coins[b, : len(c.tokens)] = torch.from_numpy(c.coins)
    try:
        want = [verify_stochastic_oracle(c.tokens, c.parents, c.probs, c.coins) for c in batch]
    except ValueError:
        with pytest.raises(ValueError, match="no mass"):
            core.verify_stochastic_batch(
                [core.TokenTree(c.tokens, c.parents) for c in batch], probs.numpy(), coins
            )
        return
    trees = [core.TokenTree(c.tokens, c.parents) for c in batch]
    assert core.verify_stochastic_batch(trees, probs.numpy(), coins.numpy()) == want
    assert core.verify_stochastic_batch(core.DraftBatch(trees), probs.numpy(), coins.numpy()) == want
    pairs = [(np.array(c.tokens), np.array(c.parents)) for c in batch]
    assert (
        sampling.verify_stochastic_batch(pairs, torch.nan_to_num(probs), torch.where(coins < 1, coins, 0.5))
        == want
    )


def test_chunked_order() -> None:
    """A row whose sequential and chunked CDFs differ: 1.0, then 256 values of 2^-53 in the next
    chunk (lost to rounding one by one, 2^-45 together); the coin lands between the two."""
    row = np.zeros(2 * CDF_CHUNK)
    row[0] = 1.0
    row[CDF_CHUNK:] = 2.0**-53
    z = 1.0 + 2.0**-45
    case = Case([1], [-1], row[None].astype(np.float64), np.array([[0.0, (1.0 + 2.0**-46) / z]]))  # type: ignore[arg-type]
    got = decisions(case, torch.from_numpy(case.probs))
    assert all(g == got[0] for g in got), got
    assert got[0][1] >= CDF_CHUNK  # type: ignore[index]


def test_duplicate_siblings_rejected() -> None:
    tokens, parents = [0, 1, 1], [-1, 0, 0]
    probs = np.full((3, 4), 0.25)
    coins = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="repeats token 1"):
        sampling.verify_stochastic_ref(tokens, parents, probs, coins)
    with pytest.raises(ValueError, match="repeats token 1"):
        sampling.verify_stochastic_batch(
            [(np.array(tokens), np.array(parents))], torch.tensor(probs)[None], coins[None]
        )
    with pytest.raises(ValueError, match="distinct tokens"):
        core.TokenTree(tokens, parents)


def test_native_rejects() -> None:
    tree = core.TokenTree([0, 1, 2], [-1, 0, 0])
    probs = np.full((3, 4), 0.25, dtype=np.float32)
    coins = np.full((3, 2), 0.5)
    assert tree.verify_stochastic(probs, coins)[2] == 3
    assert tree.verify_stochastic(probs[:, ::-1].copy()[:, ::-1], coins)[2] == 3  # non-contiguous
    with pytest.raises(TypeError, match="float32 or float64"):
        tree.verify_stochastic(probs.astype(np.int64), coins)
    with pytest.raises(ValueError, match=r"coins must have shape \(3, 2\)"):
        tree.verify_stochastic(probs, coins[:2])
    with pytest.raises(ValueError, match="probs has length"):
        tree.verify_stochastic(probs[:2], coins)
    with pytest.raises(ValueError, match=r"coins must lie in \[0, 1\)"):
        tree.verify_stochastic(probs, np.full((3, 2), 1.0))
    with pytest.raises(ValueError, match="below vocab_size"):
        tree.verify_stochastic(probs[:, :2], coins)
    bad = probs.copy()
    bad[0, 1] = -1.0
    with pytest.raises(ValueError, match="finite and non-negative"):
        tree.verify_stochastic(bad, coins)
    with pytest.raises(ValueError, match="no mass"):
        tree.verify_stochastic(np.zeros((3, 4)), coins)
    with pytest.raises(ValueError, match="exceeds the maximum of 2 nodes"):
        core.verify_stochastic_batch([tree], probs[None, :2], coins[None, :2])
    with pytest.raises(TypeError, match="list of TokenTree"):
        core.verify_stochastic_batch([1], probs[None], coins[None])
