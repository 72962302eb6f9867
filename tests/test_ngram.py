"""fastdec.NgramDrafter against naive references on random token streams."""

from __future__ import annotations

import threading

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st


def pld_lenient_reference(ids: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """The earliest earlier occurrence of the last n tokens (n = max_n..min_n), then up to k
    tokens after it."""
    length = len(ids)
    for n in range(max_n, min_n - 1, -1):
        if n > length:
            continue
        gram = ids[-n:]
        for idx in range(length - n):  # windows ending before the last token
            if ids[idx : idx + n] == gram:
                return ids[idx + n : idx + n + k]
    return []


def pld_reference(ids: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """Spec-Bench's find_candidate_pred_tokens, transcribed: the earliest window of the last n
    tokens whose k-token continuation fits and does not start inside the suffix."""
    length = len(ids)
    for n in range(max_n, min_n - 1, -1):
        if n > length:
            continue
        gram = ids[-n:]
        for idx in range(length - n + 1):
            if ids[idx : idx + n] == gram:
                start, end = idx + n, idx + n + k
                if end <= length and start < length - n:
                    return ids[start:end]
    return []


def occurrences(ids: list[int], n: int) -> list[int]:
    """End positions of the earlier occurrences of the last n tokens, most recent first."""
    length = len(ids)
    gram = ids[-n:]
    return [e for e in range(length - 2, n - 2, -1) if ids[e - n + 1 : e + 1] == gram]


def recent_reference(ids: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    for n in range(max_n, min_n - 1, -1):
        if n <= len(ids) and (occ := occurrences(ids, n)):
            return ids[occ[0] + 1 : occ[0] + 1 + k]
    return []


def tree_reference(
    ids: list[int], min_n: int, max_n: int, k: int, max_matches: int, decay: float, budget: int
) -> ref.Tree | None:
    for n in range(max_n, min_n - 1, -1):
        if n <= len(ids) and (occ := occurrences(ids, n)):
            chains, weight = [], np.float32(1.0)
            for e in occ[:max_matches]:
                cont = ids[e + 1 : e + 1 + k]
                chains.append(
                    ref.Tree([ids[-1], *cont], list(range(-1, len(cont))), [weight] * (len(cont) + 1))
                )
                weight = np.float32(weight * np.float32(decay))
            return ref.fuse(chains, budget if budget > 0 else None, "sum")
    return None


def propose_reference(ids: list[int], mode: str, cfg: dict[str, int], budget: int) -> ref.Tree:
    k = min(cfg["num_pred"], budget - 1)
    if k > 0 and mode == "tree":
        tree = tree_reference(ids, cfg["min_n"], cfg["max_n"], k, cfg["max_matches"], 0.9, budget)
        if tree is not None:
            return tree
    draft: list[int] = []
    if k > 0 and mode == "pld":
        draft = pld_lenient_reference(ids, cfg["min_n"], cfg["max_n"], k)
    elif k > 0 and mode == "pld_strict":
        draft = pld_reference(ids, cfg["min_n"], cfg["max_n"], k)
    elif k > 0 and mode == "recent":
        draft = recent_reference(ids, cfg["min_n"], cfg["max_n"], k)
    return ref.Tree([ids[-1], *draft], list(range(-1, len(draft))), None)


configs = st.fixed_dictionaries(
    {
        "min_n": st.integers(1, 2),
        "max_n": st.integers(2, 4),
        "num_pred": st.integers(1, 12),
        "max_matches": st.integers(1, 6),
    }
)


def assert_same(tree: fastdec.TokenTree, want: ref.Tree) -> None:
    assert tree.tokens.tolist() == want.tokens
    assert tree.parents.tolist() == want.parents
    if want.scores is not None:
        assert tree.scores is not None
        np.testing.assert_array_equal(tree.scores, np.asarray(want.scores, dtype=np.float32))


@settings(max_examples=150)
@given(
    mode=st.sampled_from(["pld", "pld_strict", "recent", "tree"]),
    cfg=configs,
    vocab=st.integers(2, 8),
    ids=st.data(),
    budget=st.integers(1, 40),
    cut=st.floats(0, 1),
)
def test_propose_matches_reference(
    mode: str, cfg: dict[str, int], vocab: int, ids: st.DataObject, budget: int, cut: float
) -> None:
    seq = ids.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=150))
    drafter = fastdec.NgramDrafter(mode, decay=0.9, **cfg)
    want = propose_reference(seq, mode, cfg, budget)
    assert_same(drafter.propose_for(np.array(seq, dtype=np.int32), budget), want)
    # The incremental index gives the same draft however the sequence arrived.
    split = max(1, int(cut * len(seq)))
    drafter.start("r", seq[:split])
    for i in range(split, len(seq), 3):
        drafter.accept("r", np.array(seq[i : i + 3], dtype=np.int32))
    assert_same(drafter.propose("r", budget), want)


def test_pld_example() -> None:
    d = fastdec.NgramDrafter("pld_strict", num_pred=3)
    # "a b c d a b" -> the earliest "a b" (at 0) is followed by "c d a"
    assert d.propose_for([1, 2, 3, 4, 1, 2], 10).tokens.tolist() == [2, 3, 4, 1]
    # a continuation shorter than num_pred does not count for pld_strict, but does for "pld"
    strict = fastdec.NgramDrafter("pld_strict", num_pred=4)
    assert strict.propose_for([1, 2, 3, 1, 2], 10).tokens.tolist() == [2]
    assert fastdec.NgramDrafter("pld", num_pred=4).propose_for([1, 2, 3, 1, 2], 10).tokens.tolist() == [
        2,
        3,
        1,
        2,
    ]
    assert fastdec.NgramDrafter("pld").propose_for([1, 2, 3, 4, 1, 2, 3], 10).tokens.tolist() == [
        3,
        4,
        1,
        2,
        3,
    ]
    r = fastdec.NgramDrafter("recent", num_pred=3)
    assert r.propose_for([1, 2, 3, 1, 2], 10).tokens.tolist() == [2, 3, 1, 2]


def test_lifecycle_and_stats() -> None:
    d = fastdec.NgramDrafter("pld")
    d.start(7, [5, 6, 7, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 5, 6])
    tree = d.propose(7, 64)
    assert tree.root_token == 6
    assert tree.tokens.tolist()[1:] == [7, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    d.accept(7, [7, 5, 6])
    stats = d.request_stats(7)
    assert (stats["steps"], stats["drafted"], stats["emitted"]) == (1, 10, 3)
    assert stats["mean_accepted"] == 3.0
    d.stop(7)
    assert d.stats()["emitted"] == 3  # stopped requests still count in the totals
    assert d.num_requests == 0


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda d: d.propose("nope", 8), KeyError),
        (lambda d: d.accept(99, [1]), KeyError),
        (lambda d: d.stop("nope"), KeyError),
        (lambda d: d.request_stats(3), KeyError),
        (lambda d: d.start("a", [1, -2]), ValueError),
        (lambda d: d.start(1.5, [1]), TypeError),
        (lambda d: d.start(2**70, [1]), ValueError),
        (lambda d: d.propose_for([], 8), ValueError),
        (lambda d: d.propose_for([1, 2], 0), ValueError),
        (lambda d: d.propose_for([1, 2], -1), ValueError),
        (lambda d: d.propose_for([1, 2], 10**6), ValueError),
        (lambda d: d.accept("a", [1], topk_ids=np.zeros(3, dtype=np.int32)), TypeError),
    ],
)
def test_bad_input(call: object, exc: type[Exception]) -> None:
    d = fastdec.NgramDrafter()
    d.start("a", [1, 2, 3])
    with pytest.raises(exc, match=r"\S"):
        call(d)  # type: ignore[operator]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "bogus"},
        {"min_n": 0},
        {"min_n": 3, "max_n": 2},
        {"max_n": 17},
        {"num_pred": 0},
        {"max_matches": 0},
        {"decay": 0.0},
        {"decay": 1.5},
        {"max_requests": 0},
        {"max_context": 1},
        {"mode": "tree", "max_matches": 1000, "num_pred": 100},
    ],
)
def test_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.NgramDrafter(**kwargs)  # type: ignore[arg-type]


def test_memory_stays_under_cap_after_a_million_tokens() -> None:
    max_context = 4096
    d = fastdec.NgramDrafter("tree", max_context=max_context)
    d.start(0, [1])
    rng = np.random.default_rng(0)
    peak = 0
    for _ in range(100):
        d.accept(0, rng.integers(0, 50_000, size=10_000).astype(np.int32))
        peak = max(peak, d.memory_bytes())
    # tokens + chains + three hash maps of at most max_context entries each, with slack for
    # hash-table growth (capacity <= 2x entries, 24 bytes + a control byte per entry)
    bound = max_context * (4 + 3 * 4 + 3 * 2 * 25) + 64 * 1024
    assert 0 < peak <= bound, (peak, bound)
    assert d.propose(0, 16).num_nodes >= 1


def test_lru_eviction_over_capacity() -> None:
    d = fastdec.NgramDrafter(max_requests=2)
    d.start("a", [1, 2])
    d.start("b", [1, 2])
    d.propose("a", 4)  # "b" is now the least recently used
    d.start("c", [1, 2])
    assert d.num_requests == 2
    d.propose("a", 4)
    d.propose("c", 4)
    with pytest.raises(KeyError, match="evicted"):
        d.propose("b", 4)


def test_threads_share_one_drafter() -> None:
    rng = np.random.default_rng(1)
    streams = [rng.integers(0, 6, size=400).astype(np.int32) for _ in range(8)]
    expected = []
    single = fastdec.NgramDrafter("tree")
    for i, s in enumerate(streams):
        single.start(i, s[:50])
        single.accept(i, s[50:])
        expected.append(single.propose(i, 32))
    shared = fastdec.NgramDrafter("tree")
    results: dict[int, list[fastdec.TokenTree]] = {}

    def work(i: int) -> None:
        out = []
        for _ in range(20):
            shared.start(i, streams[i][:50])
            for j in range(50, 400, 7):
                shared.accept(i, streams[i][j : j + 7])
                shared.propose(i, 32)
            out.append(shared.propose(i, 32))
        results[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(not t.is_alive() for t in threads)
    for i in range(8):
        assert all(tree == expected[i] for tree in results[i])
