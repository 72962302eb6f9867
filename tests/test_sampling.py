"""Stochastic verification (docs/design.md#stochastic) and HF-compatible warping.

* ``warp_probs`` equals the softmax of transformers' own processors chain, bit for bit.
* ``verify_stochastic`` / ``verify_stochastic_batch`` make the reference's decisions, coin by coin,
  on hypothesis trees (coins on the exact cumulative boundaries included).

The law of the output, by exact enumeration, is checked in ``test_sampling_lossless.py``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pytest
import torch
from fastdec import sampling
from hypothesis import given, settings
from hypothesis import strategies as st

Verifier = Callable[..., tuple[list[int], int]]

# ------------------------------------------------------------------------------------------------
# warp_probs


def hf_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Softmax of transformers' processors, built the way ``generate`` builds them for sampling."""
    import transformers.generation.logits_process as lp

    procs: list[object] = []
    if temperature != 1.0:
        procs.append(lp.TemperatureLogitsWarper(float(temperature)))
    if top_k is not None and top_k != 0:
        procs.append(lp.TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        procs.append(lp.TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    scores = logits.float().reshape(-1, logits.shape[-1])
    ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)
    scores = lp.LogitsProcessorList(procs)(ids, scores)
    return torch.softmax(scores, dim=-1).reshape(logits.shape)


WARP_PARAMS = [
    (1.0, None, None),
    (0.7, None, None),
    (1.3, 3, None),
    (1.0, 1, None),
    (0.7, 3, 0.8),
    (0.5, None, 0.9),
    (2.0, 50, 0.95),
    (1.0, 0, 0.5),
    (0.9, 10_000, 0.0),
    (1.0, None, 1.0),
]


@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 4, 50), (1, 1000)])
@pytest.mark.parametrize("kind", ["normal", "ties", "inf", "half"])
@pytest.mark.parametrize(("temperature", "top_k", "top_p"), WARP_PARAMS)
def test_warp_probs_matches_hf(
    shape: tuple[int, ...], kind: str, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, kind)).encode()))
    if kind == "ties":  # few distinct values: ties at the k-th logit and in the top-p sort
        logits = torch.randint(-2, 3, shape, generator=gen).float()
    else:
        logits = torch.randn(shape, generator=gen) * 3
    if kind == "inf":  # already-masked tokens (a grammar, a banned token)
        logits[..., ::3] = -math.inf
    if kind == "half":
        logits = logits.half()
    got = sampling.warp_probs(logits, temperature, top_k, top_p)
    assert got.dtype == torch.float32
    assert got.shape == logits.shape
    assert torch.equal(got, hf_probs(logits, temperature, top_k, top_p))
    assert torch.allclose(got.sum(-1), torch.ones(shape[:-1]))


def test_warp_probs_ties_kept_at_kth() -> None:
    probs = sampling.warp_probs(torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0]), 1.0, top_k=2)
    assert (probs > 0).tolist() == [True, True, True, True, False]
    # top_p = 0 keeps only the most likely token (min_tokens_to_keep=1)
    assert sampling.warp_probs(torch.tensor([0.0, 2.0, 1.0]), 1.0, None, 0.0).tolist() == [0.0, 1.0, 0.0]


def test_warp_probs_matches_generate() -> None:
    """The processed scores ``generate(do_sample=True)`` samples from, on a tiny random model."""
    import transformers as tr

    torch.manual_seed(0)
    config = tr.LlamaConfig(
        vocab_size=48,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = tr.LlamaForCausalLM(config).eval()
    for temperature, top_k, top_p in [(0.7, 3, 0.8), (1.5, 20, 0.9), (0.8, 0, 0.6)]:
        out = model.generate(
            torch.tensor([[1, 2, 3]]),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=4,
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        for logits, scores in zip(out.logits, out.scores, strict=True):
            got = sampling.warp_probs(logits, temperature, top_k, top_p)
            assert torch.equal(got, torch.softmax(scores, dim=-1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": math.nan}, "temperature=nan"),
        ({"temperature": math.inf}, "temperature=inf"),
        ({"temperature": True}, "temperature=True"),
        ({"top_k": -1}, "top_k=-1"),
        ({"top_k": 2.0}, "top_k=2.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_p": -0.1}, "top_p=-0.1"),
        ({"top_p": math.nan}, "top_p=nan"),
        ({"logits": torch.tensor(1.0)}, "logits"),
        ({"logits": torch.tensor([1, 2])}, "logits"),
    ],
)
def test_warp_probs_rejects(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"logits": torch.zeros(4), "temperature": 1.0, "top_k": None, "top_p": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sampling.warp_probs(**args)  # type: ignore[arg-type]


def test_draw_coins() -> None:
    a = sampling.draw_coins(torch.Generator().manual_seed(7), (3, 5, 2))
    b = sampling.draw_coins(torch.Generator().manual_seed(7), [3, 5, 2])
    assert a.dtype == torch.float64
    assert a.device.type == "cpu"
    assert a.shape == (3, 5, 2)
    assert torch.equal(a, b)
    assert bool(((a >= 0) & (a < 1)).all())


# ------------------------------------------------------------------------------------------------
# fast == reference, decision by decision


@dataclass
class Case:
    tokens: list[int]
    parents: list[int]
    probs: npt.NDArray[np.float32]  # [n, vocab]
    coins: npt.NDArray[np.float64]  # [n, 2]


def children(parents: list[int]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        kids[parents[i]].append(i)
    return kids


PROB_KINDS = ("dirichlet", "sparse", "onehot", "children_only", "deficient", "zero_child")
COIN0_KINDS = ("uniform", "zero", "boundary", "below", "max")
COIN1_KINDS = ("uniform", "zero", "boundary", "below", "max")
MAX_BELOW_ONE = 1.0 - 2.0**-53


@st.composite
def cases(
    draw: st.DrawFn,
    max_nodes: int = 12,
    big_vocab: bool = False,
    vocabs: st.SearchStrategy[int] | None = None,
) -> Case:
    """A parents-first tree with distinct sibling tokens, target rows and coins near the edges.
    ``big_vocab``: vocabularies of a few CDF chunks, so the chunked summation order matters;
    ``vocabs`` overrides the vocabulary sizes."""
    chunk = sampling.CDF_CHUNK
    if vocabs is None:
        vocabs = st.integers(chunk - 3, 3 * chunk + 5) if big_vocab else st.integers(1, 7)
    vocab = draw(vocabs)
    n = draw(st.integers(1, max_nodes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parents, tokens = [-1], [int(rng.integers(vocab))]
    used: list[set[int]] = [set()]
    for i in range(1, n):
        open_nodes = [u for u in range(i) if len(used[u]) < vocab]
        u = open_nodes[int(rng.integers(len(open_nodes)))] if draw(st.booleans()) else open_nodes[-1]
        t = int(rng.choice(sorted(set(range(vocab)) - used[u])))
        used[u].add(t)
        used.append(set())
        parents.append(u)
        tokens.append(t)
    kids = children(parents)

    probs = np.zeros((n, vocab), dtype=np.float32)
    for u in range(n):
        kind = draw(st.sampled_from(PROB_KINDS), label=f"probs kind {u}")
        child_toks = [tokens[c] for c in kids[u]]
        if kind == "dirichlet":
            row = rng.dirichlet(np.ones(vocab))
        elif kind == "sparse":
            row = rng.dirichlet(np.ones(vocab)) * (rng.random(vocab) < 0.5)
            if row.sum() == 0:
                row[int(rng.integers(vocab))] = 1.0
        elif kind == "onehot":
            row = np.eye(vocab)[int(rng.integers(vocab))]
        elif kind == "zero_child":  # a child with probability 0 (never accepted, no fallback target)
            row = rng.dirichlet(np.ones(vocab))
            if child_toks:
                row[child_toks[int(rng.integers(len(child_toks)))]] = 0.0
            if row.sum() == 0:
                row[int(rng.integers(vocab))] = 1.0
        else:  # the children hold all the mass (exactly, or 0.9 of it: the Z == 0 fallback)
            row = np.zeros(vocab)
            if child_toks:
                row[child_toks] = rng.dirichlet(np.ones(len(child_toks)))
            else:
                row[int(rng.integers(vocab))] = 1.0
        probs[u] = (row / row.sum() * (0.9 if kind == "deficient" else 1.0)).astype(np.float32)

    coins = np.zeros((n, 2))
    for u in range(n):
        p64 = probs[u].astype(np.float64)
        bounds = list(np.cumsum([p64[tokens[c]] for c in kids[u]]))
        coins[u, 0] = edge_coin(draw, rng, COIN0_KINDS, bounds, f"coin0 {u}")
        masked = p64.copy()
        masked[[tokens[c] for c in kids[u]]] = 0.0
        cum = sampling._chunked_cdf(masked)
        z = cum[-1]
        coins[u, 1] = edge_coin(draw, rng, COIN1_KINDS, list(cum / z) if z > 0 else [], f"coin1 {u}")
    return Case(tokens, parents, probs, coins)


def edge_coin(
    draw: st.DrawFn, rng: np.random.Generator, kinds: tuple[str, ...], bounds: list[float], label: str
) -> float:
    kind = draw(st.sampled_from(kinds), label=label)
    inside = [b for b in bounds if 0.0 <= b < 1.0]
    if kind in ("boundary", "below") and inside:
        b = inside[int(rng.integers(len(inside)))]
        return b if kind == "boundary" else max(0.0, float(np.nextafter(b, 0.0)))
    if kind == "zero":
        return 0.0
    if kind == "max":
        return MAX_BELOW_ONE
    return float(rng.random())


@given(cases(), st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
def test_fast_equals_reference(case: Case, dtype: str) -> None:
    probs = torch.from_numpy(case.probs).to(getattr(torch, dtype))
    coins = torch.from_numpy(case.coins)
    tokens = np.array(case.tokens, dtype=np.int32)
    parents = np.array(case.parents, dtype=np.int32)
    try:
        want = sampling.verify_stochastic_ref(case.tokens, case.parents, probs, coins)
    except ValueError:  # a row that float16 flushed to zero: both reject it
        with pytest.raises(ValueError, match="no mass"):
            sampling.verify_stochastic(tokens, parents, probs, coins)
        return
    got = sampling.verify_stochastic(tokens, parents, probs, coins)
    assert got == want
    assert sampling.verify_stochastic(tokens, parents, probs, case.coins) == want
    nodes, bonus = want
    assert nodes[0] == 0
    assert all(case.parents[b] == a for a, b in pairwise(nodes))
    assert bonus not in {case.tokens[c] for c in children(case.parents)[nodes[-1]]}
    assert float(probs[nodes[-1], bonus]) > 0


@settings(max_examples=40, deadline=None)
@given(cases(big_vocab=True), st.sampled_from(["float32", "bfloat16"]))
def test_fast_equals_reference_over_chunks(case: Case, dtype: str) -> None:
    """Vocabularies of 1..4 CDF chunks, coins on the chunked CDF's boundaries: same decisions."""
    test_fast_equals_reference.hypothesis.inner_test(case, dtype)  # type: ignore[attr-defined]


def test_chunked_cdf_is_sequential_within_a_chunk() -> None:
    """One chunk or less: the chunked order is the plain sequential sum (np.cumsum)."""
    rng = np.random.default_rng(0)
    for v in (1, 7, sampling.CDF_CHUNK):
        row = rng.random(v)
        assert np.array_equal(sampling._chunked_cdf(row), np.cumsum(row))
    row = rng.random(3 * sampling.CDF_CHUNK + 1)
    cdf = sampling._chunked_cdf(row)
    assert np.all(np.diff(cdf) >= 0)
    assert cdf[-1] == pytest.approx(row.sum(), rel=1e-12)


@given(st.lists(cases(max_nodes=8), min_size=1, max_size=4), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_batch_equals_reference(batch: list[Case], pad: int, seed: int) -> None:
    vocab = max(c.probs.shape[1] for c in batch)
    max_nodes = max(len(c.tokens) for c in batch) + pad
    rng = np.random.default_rng(seed)
    probs = torch.from_numpy(rng.random((len(batch), max_nodes, vocab)).astype(np.float32))  # padding
    coins = torch.from_numpy(rng.random((len(batch), max_nodes, 2)))
    trees = []
    want = []
    for b, c in enumerate(batch):
        n, v = c.probs.shape
        probs[b, :n] = 0.0
        probs[b, :n, :v] = torch.from_numpy(c.probs)
        coins[b, :n] = torch.from_numpy(c.coins)
        trees.append((np.array(c.tokens), np.array(c.parents)))
        want.append(sampling.verify_stochastic_ref(c.tokens, c.parents, probs[b, :n], c.coins))
    assert sampling.verify_stochastic_batch(trees, probs, coins) == want


def test_fallback_when_children_hold_all_mass() -> None:
    # children (tokens 1, 2) hold all of row 0's mass, but only 0.75 < coin: no child passes the
    # coin, Z == 0, so the last child with mass (node 2) is accepted and the walk goes on there.
    tokens, parents = [0, 1, 2, 0], [-1, 0, 0, 2]
    probs = torch.tensor([[0.0, 0.5, 0.25], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    coins = torch.tensor([[0.9, 0.1], [0.0, 0.0], [0.99, 0.5], [0.5, 0.5]], dtype=torch.float64)
    assert sampling.verify_stochastic_ref(tokens, parents, probs, coins) == ([0, 2], 2)
    assert sampling.verify_stochastic(np.array(tokens), np.array(parents), probs, coins) == ([0, 2], 2)
    probs[0, 2] = 0.0  # node 2 has no mass: node 1 is the last child with some
    assert sampling.verify_stochastic_ref(tokens, parents, probs, coins) == ([0, 1], 0)
    assert sampling.verify_stochastic(np.array(tokens), np.array(parents), probs, coins) == ([0, 1], 0)
    probs[0] = 0.0
    for verify in (sampling.verify_stochastic_ref, sampling.verify_stochastic):
        with pytest.raises(ValueError, match="no mass"):
            verify(np.array(tokens), np.array(parents), probs, coins)


@pytest.mark.cuda
@given(cases())
def test_fast_on_cuda(case: Case) -> None:
    probs = torch.from_numpy(case.probs)
    want = sampling.verify_stochastic_ref(case.tokens, case.parents, probs, case.coins)
    got = sampling.verify_stochastic(np.array(case.tokens), np.array(case.parents), probs.cuda(), case.coins)
    assert got == want


# ------------------------------------------------------------------------------------------------
# bad inputs


def good() -> dict[str, object]:
    return {
        "tokens": np.array([0, 1, 2]),
        "parents": np.array([-1, 0, 0]),
        "probs": torch.full((3, 4), 0.25),
        "coins": torch.full((3, 2), 0.5, dtype=torch.float64),
    }


BAD_INPUTS: dict[str, dict[str, object]] = {
    "probs 1-D": {"probs": torch.full((4,), 0.25)},
    "probs 3-D": {"probs": torch.full((1, 3, 4), 0.25)},
    "probs rows": {"probs": torch.full((2, 4), 0.25)},
    "probs empty vocab": {"probs": torch.zeros((3, 0))},
    "coins shape": {"coins": torch.full((3, 3), 0.5)},
    "coins rows": {"coins": torch.full((4, 2), 0.5)},
    "coin one": {"coins": torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 0.5]])},
    "coin negative": {"coins": torch.tensor([[-0.1, 0.5], [0.5, 0.5], [0.5, 0.5]])},
    "coin nan": {"coins": torch.tensor([[0.5, math.nan], [0.5, 0.5], [0.5, 0.5]])},
    "lengths": {"tokens": np.array([0, 1])},
    "root parent": {"parents": np.array([0, 0, 0])},
    "late parent": {"parents": np.array([-1, 1, 0])},
    "dup sibling": {"tokens": np.array([0, 1, 1])},
    "token range": {"tokens": np.array([0, 1, 4])},
    "negative token": {"tokens": np.array([0, -1, 2])},
    "float tokens": {"tokens": np.array([0.0, 1.0, 2.0])},
    "negative prob": {"probs": torch.tensor([[0.5, 0.5, -0.25, 0.25]] * 3)},
    "nan prob": {"probs": torch.tensor([[0.5, math.nan, 0.25, 0.25]] * 3)},
}


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
@pytest.mark.parametrize("verify", [sampling.verify_stochastic_ref, sampling.verify_stochastic])
def test_bad_inputs(bad: str, verify: Verifier) -> None:
    args = good()
    assert verify(**args) == ([0], 3)  # coin0 0.5 < 0.25 + 0.25 fails; bonus from {0, 3} with coin 0.5
    args.update(BAD_INPUTS[bad])
    with pytest.raises(ValueError):  # noqa: PT011  (the messages vary by case)
        verify(**args)


def test_bad_batch_inputs() -> None:
    trees = [(np.array([0, 1]), np.array([-1, 0]))] * 2
    probs = torch.full((2, 3, 4), 0.25)
    coins = torch.full((2, 3, 2), 0.5)
    assert sampling.verify_stochastic_batch(trees, probs, coins) == [([0], 2), ([0], 2)]
    with pytest.raises(ValueError, match="batch 2 but 1 trees"):
        sampling.verify_stochastic_batch(trees[:1], probs, coins)
    with pytest.raises(ValueError, match="shape"):
        sampling.verify_stochastic_batch(trees, probs[0], coins)
    with pytest.raises(ValueError, match="coins must have shape"):
        sampling.verify_stochastic_batch(trees, probs, coins[:, :2])
    with pytest.raises(ValueError, match="has 4 nodes"):
        sampling.verify_stochastic_batch([(np.arange(4), np.arange(-1, 3))] * 2, probs, coins)
    with pytest.raises(ValueError, match="floating"):
        sampling.verify_stochastic_batch(trees, probs.numpy(), coins)  # type: ignore[arg-type]
