"""fastdec.HybridDrafter: weighted fusion of its parts' trees, lifecycle forwarding."""

from __future__ import annotations

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

f32 = np.float32


def normalized(tree: fastdec.TokenTree, weight: float) -> ref.Tree:
    s = tree.scores
    if s is not None and s[0] > 0:
        scores = [f32(f32(x / s[0]) * f32(weight)) for x in s]
    else:
        scores = [f32(weight)] * tree.num_nodes
    return ref.Tree(tree.tokens.tolist(), tree.parents.tolist(), scores)


def parts() -> list[fastdec.BaseDrafter]:
    return [fastdec.NgramDrafter("tree", max_n=3, num_pred=6), fastdec.NgramDrafter("pld", num_pred=6)]


@settings(max_examples=60, deadline=None)
@given(
    seq=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    budget=st.integers(1, 20),
    weights=st.lists(st.floats(0.125, 3.0, width=32), min_size=2, max_size=2),
)
def test_fusion_matches_reference(seq: list[int], budget: int, weights: list[float]) -> None:
    hybrid = fastdec.HybridDrafter(parts(), weights=weights)
    trees = [normalized(d.propose_for(seq, budget), w) for d, w in zip(parts(), weights, strict=True)]
    want = ref.fuse(trees, budget, "sum")
    got = hybrid.propose_for(seq, budget)
    assert got.tokens.tolist() == want.tokens
    assert got.parents.tolist() == want.parents
    np.testing.assert_array_equal(got.scores, np.asarray(want.scores, dtype=np.float32))
    # the stateful path drafts the same
    hybrid.start("r", seq)
    assert hybrid.propose("r", budget) == got


def test_lifecycle_is_forwarded() -> None:
    a, b = fastdec.NgramDrafter("pld"), fastdec.TrieDrafter()
    hybrid = fastdec.HybridDrafter([a, b])
    hybrid.start(1, [1, 2, 3, 1, 2])
    hybrid.propose(1, 8)
    hybrid.accept(1, [3, 9])
    assert a.request_stats(1)["emitted"] == 2
    assert b.request_stats(1)["emitted"] == 2
    assert hybrid.request_stats(1)["steps"] == 1
    hybrid.stop(1)
    with pytest.raises(KeyError):
        a.propose(1, 4)
    with pytest.raises(KeyError):
        hybrid.propose(1, 4)
    assert b.global_nodes > 1  # the trie part kept the finished output
    assert hybrid.memory_bytes() == a.memory_bytes() + b.memory_bytes()


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"drafters": []}, ValueError),
        ({"drafters": parts(), "weights": [1.0]}, ValueError),
        ({"drafters": parts(), "weights": [1.0, 0.0]}, ValueError),
        ({"drafters": parts(), "weights": [1.0, float("nan")]}, ValueError),
        ({"drafters": [object()]}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        fastdec.HybridDrafter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: fastdec.NgramDrafter("tree"),
        lambda: fastdec.NgramDrafter("pld"),
        lambda: fastdec.TrieDrafter(),
        lambda: fastdec.RecycleDrafter(64),
        lambda: fastdec.HybridDrafter([fastdec.TrieDrafter(), fastdec.NgramDrafter("recent")]),
    ],
)
def test_propose_for_batch_matches_single_calls(make: object) -> None:
    drafter = make()  # type: ignore[operator]
    rng = np.random.default_rng(3)
    contexts = [rng.integers(0, 64, size=int(rng.integers(1, 300))).astype(np.int32) for _ in range(40)]
    budgets = rng.integers(1, 40, size=40).astype(np.int32)
    batch = drafter.propose_for_batch(contexts, budgets)  # 40 >= 8: the parallel path
    assert len(batch) == 40
    for i, (ctx, b) in enumerate(zip(contexts, budgets, strict=True)):
        assert batch[i] == drafter.propose_for(ctx, int(b))
    with pytest.raises(ValueError, match="budgets"):
        drafter.propose_for_batch(contexts, budgets[:3])


def warm_recycle() -> fastdec.RecycleDrafter:
    """k = 2, table 5 -> [10, 11], 10 -> [12, 13], 11 -> [14, 15]: 7 distinct tokens from root 5."""
    d = fastdec.RecycleDrafter(
        100, k=2, template=fastdec.TreeTemplate([[0], [1], [0, 0], [0, 1], [1, 0], [1, 1]])
    )
    d.start("warm", [5])
    d.propose("warm", 8)
    d.accept("warm", [5], topk_ids=np.array([[10, 11]], dtype=np.int32))
    assert d.propose("warm", 8).tokens.tolist() == [5, 10, 11]
    d.accept("warm", [5], topk_ids=np.array([[10, 11], [12, 13], [14, 15]], dtype=np.int32))
    d.stop("warm")
    return d


def test_wants_topk() -> None:
    small = fastdec.RecycleDrafter(64, k=2, template=fastdec.TreeTemplate([[0], [1]]))
    assert small.wants_topk() == 2
    assert fastdec.RecycleDrafter(64).wants_topk() == 8
    assert fastdec.NgramDrafter("pld").wants_topk() is None
    assert fastdec.TrieDrafter().wants_topk() is None
    assert fastdec.HybridDrafter([fastdec.RecycleDrafter(64), fastdec.NgramDrafter("pld")]).wants_topk() == 8
    assert fastdec.HybridDrafter([small, fastdec.RecycleDrafter(64)]).wants_topk() == 8
    assert fastdec.HybridDrafter(parts()).wants_topk() is None
    nested = fastdec.HybridDrafter(
        [fastdec.HybridDrafter([small, fastdec.TrieDrafter()]), fastdec.TrieDrafter()]
    )
    assert nested.wants_topk() == 2


def path(tree: fastdec.TokenTree, i: int) -> list[int]:
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    out = [tokens[i]]
    while parents[i] >= 0:
        i = parents[i]
        out.append(tokens[i])
    return out[::-1]


def test_recycle_part_learns_the_rows_of_its_fused_nodes() -> None:
    """Top-k rows for the fused tree reach the recycle part re-indexed by its own nodes; the nodes
    fusion pruned keep their rows (they were not verified)."""
    recycle = warm_recycle()
    own = recycle.propose_for([5], 8)
    before = {t: recycle.row(t).tolist() for t in own.tokens.tolist()}
    hybrid = fastdec.HybridDrafter([recycle, fastdec.NgramDrafter("pld")])
    hybrid.start(1, [5, 10, 12, 7, 5])  # PLD continues the earlier 5 with 10, 12, 7
    fused = hybrid.propose(1, 5)
    fused_paths = {tuple(path(fused, j)): j for j in range(fused.num_nodes)}
    rows = (60 + np.arange(fused.num_nodes * 2, dtype=np.int32)).reshape(-1, 2)
    hybrid.accept(1, [10, 99], topk_ids=rows)
    kept = 0
    for i, tok in enumerate(own.tokens.tolist()):
        j = fused_paths.get(tuple(path(own, i)))
        want = before[tok] if j is None else rows[j].tolist()
        kept += j is not None
        assert recycle.row(tok).tolist() == want, (i, tok)
    assert 1 < kept < own.num_nodes  # some nodes were routed, some pruned
    # the learnt row drives the next draft from 10
    assert recycle.propose_for([10], 3).tokens.tolist()[1:] == rows[fused_paths[(5, 10)]].tolist()


def test_topk_rows_must_match_the_fused_tree() -> None:
    recycle = warm_recycle()
    hybrid = fastdec.HybridDrafter([recycle, fastdec.NgramDrafter("pld")])
    hybrid.start(1, [5])
    fused = hybrid.propose(1, 5)
    with pytest.raises(ValueError, match="topk_ids"):
        hybrid.accept(1, [10, 99], topk_ids=np.zeros((fused.num_nodes + 1, 2), dtype=np.int32))
    assert recycle.row(5).tolist() == [10, 11]  # nothing changed
    hybrid.accept(1, [10, 99], topk_ids=np.full((fused.num_nodes, 3), 7, dtype=np.int32))  # k 3 > 2
    assert recycle.row(5).tolist() == [7, 7]
