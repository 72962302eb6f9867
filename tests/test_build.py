"""Tree building: best-first selection (EAGLE-2 rerank, DySpec), pruning and fusion vs the reference."""

from __future__ import annotations

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import TreeCase, score_containers, trees

SCORE_MODES = ("logprob", "prob", "path")


def assert_tree(tree: fastdec.TokenTree, expected: ref.Tree) -> None:
    assert np.array_equal(tree.tokens, np.array(expected.tokens, dtype=np.int32))
    assert np.array_equal(tree.parents, np.array(expected.parents, dtype=np.int32))
    if expected.scores is None:
        assert tree.scores is None
    else:
        assert tree.scores is not None
        # bit-exact float32 (also tells -0.0 from 0.0)
        got = tree.scores.view(np.uint32)
        want = np.array(expected.scores, dtype=np.float32).view(np.uint32)
        assert np.array_equal(got, want), (tree.scores, expected.scores)


# --------------------------------------------------------------------------------------------
# from_candidates / best_first_subtree


@given(trees(scores=True), st.data())
def test_from_candidates(case: TreeCase, data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from(SCORE_MODES), label="mode")
    budget = data.draw(st.integers(1, case.n + 3), label="budget")
    max_depth = data.draw(st.one_of(st.none(), st.integers(0, 8)), label="max_depth")
    scores = data.draw(score_containers(case.scores), label="scores container")
    kwargs: dict[str, object] = {"budget": budget, "score_mode": mode}
    if max_depth is not None:
        kwargs["max_depth"] = max_depth
    try:
        expected = ref.from_candidates(case.tokens, case.parents, case.scores, budget, max_depth, mode)
    except ValueError:  # a NaN path score (e.g. 0 * inf)
        with pytest.raises(ValueError, match=r"\S"):
            fastdec.TokenTree.from_candidates(case.tokens, case.parents, scores, **kwargs)
        return
    got = fastdec.TokenTree.from_candidates(case.tokens, case.parents, scores, **kwargs)
    assert_tree(got, expected)
    assert got.num_nodes == min(budget, len(expected.tokens))
    if max_depth is not None:
        assert got.max_depth <= max_depth


def test_from_candidates_default_mode_is_logprob() -> None:
    tokens, parents = [0, 1, 2, 3, 4], [-1, 0, 0, 1, 2]
    scores = [0.0, -0.1, -0.2, -5.0, -0.01]
    got = fastdec.TokenTree.from_candidates(tokens, parents, scores, budget=4)
    # path scores: 0, -0.1, -0.2, -5.1, -0.21 -> keep root, 1, 2, 4
    assert got.tokens.tolist() == [0, 1, 2, 4]
    assert got.parents.tolist() == [-1, 0, 0, 2]
    assert np.array_equal(
        got.scores, np.array([0.0, -0.1, -0.2, np.float32(-0.2) + np.float32(-0.01)], np.float32)
    )
    prob = fastdec.TokenTree.from_candidates(
        tokens, parents, [1.0, 0.9, 0.5, 0.99, 0.1], budget=3, score_mode="prob"
    )
    # path scores: 1, 0.9, 0.5, 0.891, 0.05 -> root, 1, 3
    assert prob.tokens.tolist() == [0, 1, 3]


@given(trees(), st.data())
def test_best_first_subtree(case: TreeCase, data: st.DataObject) -> None:
    tree = fastdec.TokenTree(case.tokens, case.parents, scores=case.scores)
    budget = data.draw(st.integers(1, case.n + 3), label="budget")
    max_depth = data.draw(st.one_of(st.none(), st.integers(0, 8)), label="max_depth")
    expected = ref.best_first_subtree(
        ref.Tree(
            case.tokens, case.parents, None if case.scores is None else [ref.f32(s) for s in case.scores]
        ),
        budget,
        max_depth,
    )
    got = (
        tree.best_first_subtree(budget)
        if max_depth is None
        else tree.best_first_subtree(budget, max_depth=max_depth)
    )
    assert_tree(got, expected)


@given(trees(shapes=("bfs", "star", "chain"), scores=False), st.data())
def test_best_first_subtree_without_scores_is_breadth_first(case: TreeCase, data: st.DataObject) -> None:
    """In a level-ordered tree, unscored selection keeps the first ``budget`` nodes."""
    budget = data.draw(st.integers(1, case.n), label="budget")
    got = fastdec.TokenTree(case.tokens, case.parents).best_first_subtree(budget)
    assert got.tokens.tolist() == case.tokens[:budget]
    assert got.parents.tolist() == case.parents[:budget]


def test_best_first_subtree_ties_prefer_lower_ids() -> None:
    tree = fastdec.TokenTree([0, 1, 2, 3, 4], [-1, 0, 0, 0, 0], scores=[0.0, 1.0, 2.0, 2.0, 1.0])
    assert tree.best_first_subtree(3).tokens.tolist() == [0, 2, 3]
    assert tree.best_first_subtree(4).tokens.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"budget": 0}, ValueError),
        ({"budget": 3, "score_mode": "softmax"}, ValueError),
        ({"budget": 3, "score_mode": ""}, ValueError),
        ({"budget": 3, "scores": [0.0, 1.0]}, ValueError),
        ({"budget": 3, "scores": [0.0, 1.0, float("nan")]}, ValueError),
        ({"budget": 3, "scores": [0.0, float("inf"), -float("inf")], "parents": [-1, 0, 1]}, ValueError),
        (
            {"budget": 3, "scores": [0.0, 0.0, float("inf")], "parents": [-1, 0, 1], "score_mode": "prob"},
            ValueError,
        ),
        ({"budget": 3, "scores": "abc"}, TypeError),
        ({"budget": 3, "tokens": [1, 2, 2]}, ValueError),
        ({"budget": 3, "parents": [-1, 0, 5]}, ValueError),
    ],
)
def test_from_candidates_rejects(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, object] = {"tokens": [1, 2, 3], "parents": [-1, 0, 0], "scores": [0.0, -1.0, -2.0]}
    args.update(kwargs)
    with pytest.raises(error, match=r"\S"):
        fastdec.TokenTree.from_candidates(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# best_first with a Python expansion callback


class Expander:
    """A deterministic drafter: the children of a path are a pure function of the path."""

    def __init__(self, seed: int, vocab: int, width: int, kind: str) -> None:
        self.seed, self.vocab, self.width, self.kind = seed, vocab, width, kind
        self.calls: list[list[int]] = []

    def __call__(self, path: list[int]) -> list[tuple[int, float]]:
        assert isinstance(path, list)
        assert all(type(t) is int for t in path)
        self.calls.append(list(path))
        rng = np.random.default_rng([self.seed, len(path), *path[-4:]])
        k = int(rng.integers(0, self.width + 1))
        tokens = rng.integers(0, self.vocab, k)  # may repeat: repeats are skipped
        if self.kind == "logprob":
            scores = -rng.exponential(2.0, k)
        elif self.kind == "prob":
            scores = rng.random(k)
        else:  # ties
            scores = rng.integers(-1, 2, k).astype(np.float64)
        return [(int(t), float(s)) for t, s in zip(tokens, scores, strict=True)]


@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 80),
    st.integers(0, 8),
    st.sampled_from(SCORE_MODES),
    st.sampled_from([2, 5, 1000]),
    st.integers(0, 6),
    st.sampled_from(["logprob", "prob", "ties"]),
    st.integers(0, ref.MAX_TOKEN),
)
def test_best_first(
    seed: int, budget: int, max_depth: int, mode: str, vocab: int, width: int, kind: str, root: int
) -> None:
    mine, theirs = Expander(seed, vocab, width, kind), Expander(seed, vocab, width, kind)
    got = fastdec.TokenTree.best_first(root, mine, budget=budget, max_depth=max_depth, score_mode=mode)
    expected = ref.best_first_expand(root, theirs, budget, max_depth, mode)
    assert_tree(got, expected)
    assert mine.calls == theirs.calls  # same expansions, same order
    assert got.num_nodes <= budget
    assert got.max_depth <= max_depth
    ref.check_tree(got.tokens.tolist(), got.parents.tolist())


def test_best_first_default_mode_and_generators() -> None:
    def expand(path: list[int]) -> object:
        # a generator of (token, logprob): children t*10+1, t*10+2 with -1, -2
        last = path[-1]
        yield (last * 10 + 1, -1.0)
        yield (last * 10 + 2, -2.0)

    tree = fastdec.TokenTree.best_first(1, expand, budget=4, max_depth=5)
    # scores: 11 -> -1, 12 -> -2, 111 -> -2, 112 -> -3; ties (-2) go to the earlier candidate (12)
    assert tree.tokens.tolist() == [1, 11, 12, 111]
    assert tree.parents.tolist() == [-1, 0, 0, 1]
    assert tree.scores.tolist() == [0.0, -1.0, -2.0, -2.0]


def test_best_first_budget_one_does_not_expand() -> None:
    calls: list[list[int]] = []
    tree = fastdec.TokenTree.best_first(3, lambda p: calls.append(p) or [(1, 0.0)], budget=1, max_depth=3)
    assert tree.tokens.tolist() == [3]
    assert calls == []


class Boom(Exception):
    pass


def raising(path: list[int]) -> list[tuple[int, float]]:
    if len(path) > 1:
        raise Boom("from the callback")
    return [(1, -1.0), (2, -2.0)]


@pytest.mark.parametrize(
    ("root", "expand", "kwargs", "error"),
    [
        (1, raising, {}, Boom),  # the callback's own exception comes through unchanged
        (1, lambda p: [(1, "x")], {}, TypeError),
        (1, lambda p: [(1,)], {}, TypeError),
        (1, lambda p: [1, 2], {}, TypeError),
        (1, lambda p: 5, {}, TypeError),
        (1, lambda p: [(-1, 0.0)], {}, ValueError),
        (1, lambda p: [(2**31, 0.0)], {}, ValueError),
        (1, lambda p: [(2**40, 0.0)], {}, ValueError),
        (1, lambda p: [(2, float("nan"))], {}, ValueError),
        (1, "not callable", {}, TypeError),
        (-1, lambda p: [], {}, ValueError),
        (2**31, lambda p: [], {}, ValueError),
        (1, lambda p: [], {"budget": 0}, ValueError),
        (1, lambda p: [], {"budget": fastdec.MAX_NODES + 1}, ValueError),
        (1, lambda p: [], {"score_mode": "nope"}, ValueError),
    ],
)
def test_best_first_rejects(
    root: int, expand: object, kwargs: dict[str, object], error: type[Exception]
) -> None:
    args: dict[str, object] = {"budget": 5, "max_depth": 3}
    args.update(kwargs)
    with pytest.raises(error, match=r"\S"):
        fastdec.TokenTree.best_first(root, expand, **args)  # type: ignore[arg-type]


def test_best_first_stops_at_max_nodes() -> None:
    counter = iter(range(10**9))

    def expand(path: list[int]) -> list[tuple[int, float]]:
        return [(next(counter), -1.0) for _ in range(3)]

    tree = fastdec.TokenTree.best_first(
        0, expand, budget=fastdec.MAX_NODES, max_depth=1000, score_mode="path"
    )
    assert tree.num_nodes == fastdec.MAX_NODES


# --------------------------------------------------------------------------------------------
# fuse


@st.composite
def fusable(draw: st.DrawFn) -> list[TreeCase]:
    root = draw(st.integers(0, 5))
    return draw(st.lists(trees(max_nodes=40, large=120, vocab="tiny", root=root), min_size=1, max_size=5))


@given(fusable(), st.data())
def test_fuse(cases: list[TreeCase], data: st.DataObject) -> None:
    combine = data.draw(st.sampled_from(["sum", "max"]), label="combine")
    budget = data.draw(st.one_of(st.none(), st.integers(1, 150)), label="budget")
    objs = [fastdec.TokenTree(c.tokens, c.parents, scores=c.scores) for c in cases]
    ref_trees = [ref.Tree(c.tokens, c.parents, c.scores) for c in cases]
    kwargs: dict[str, object] = {}
    if combine != "sum" or data.draw(st.booleans(), label="pass combine"):  # "sum" is the default
        kwargs["combine"] = combine
    if budget is not None or data.draw(st.booleans(), label="pass budget=None"):
        kwargs["budget"] = budget
    got = fastdec.TokenTree.fuse(objs, **kwargs)
    assert_tree(got, ref.fuse(ref_trees, budget, combine))


@given(fusable())
def test_fuse_counts_votes(cases: list[TreeCase]) -> None:
    """Without scores, ``sum`` gives every node the number of trees that contain its path."""
    objs = [fastdec.TokenTree(c.tokens, c.parents) for c in cases]
    fused = fastdec.TokenTree.fuse(objs)
    token_paths = [{tuple(c.tokens[v] for v in ref.path_to(c.parents, i)) for i in range(c.n)} for c in cases]
    tokens, parents = fused.tokens.tolist(), fused.parents.tolist()
    ref.check_tree(tokens, parents)
    fused_paths = [tuple(tokens[v] for v in ref.path_to(parents, i)) for i in range(fused.num_nodes)]
    assert set(fused_paths) == set().union(*token_paths)  # the union of token paths
    assert len(fused_paths) == len(set(fused_paths))
    votes = [sum(p in paths for paths in token_paths) for p in fused_paths]
    assert fused.scores.tolist() == votes


def test_fuse_by_hand() -> None:
    a = fastdec.TokenTree([1, 2, 3], [-1, 0, 1])
    b = fastdec.TokenTree([1, 2, 4], [-1, 0, 1])
    c = fastdec.TokenTree([1, 5], [-1, 0])
    fused = fastdec.TokenTree.fuse([a, b, c])
    assert fused.tokens.tolist() == [1, 2, 3, 4, 5]
    assert fused.parents.tolist() == [-1, 0, 1, 1, 0]
    assert fused.scores.tolist() == [3.0, 2.0, 1.0, 1.0, 1.0]
    pruned = fastdec.TokenTree.fuse([a, b, c], budget=3)
    assert pruned.tokens.tolist() == [1, 2, 3]
    scored = fastdec.TokenTree.fuse(
        [
            fastdec.TokenTree([1, 2], [-1, 0], scores=[1.0, 0.25]),
            fastdec.TokenTree([1, 2], [-1, 0], scores=[1.0, 0.5]),
        ],
        combine="max",
    )
    assert scored.scores.tolist() == [1.0, 0.5]


@pytest.mark.parametrize(
    ("trees_", "kwargs", "error"),
    [
        ([], {}, ValueError),
        ([([1], [-1]), ([2], [-1])], {}, ValueError),
        ([([1], [-1])], {"budget": 0}, ValueError),
        ([([1], [-1])], {"combine": "mean"}, ValueError),
        ("ab", {}, TypeError),
        ([([1], [-1]), "tree"], {}, TypeError),
    ],
)
def test_fuse_rejects(trees_: object, kwargs: dict[str, object], error: type[Exception]) -> None:
    if isinstance(trees_, list):
        trees_ = [fastdec.TokenTree(*t) if isinstance(t, tuple) else t for t in trees_]
    with pytest.raises(error, match=r"\S"):
        fastdec.TokenTree.fuse(trees_, **kwargs)  # type: ignore[arg-type]


def test_fuse_too_many_nodes() -> None:
    n = fastdec.MAX_NODES // 2 + 1
    a = fastdec.TokenTree(np.arange(n, dtype=np.int32), np.array([-1] + [0] * (n - 1), dtype=np.int32))
    b = fastdec.TokenTree(
        np.array([0, *range(n, 2 * n - 1)], dtype=np.int32), np.array([-1] + [0] * (n - 1), dtype=np.int32)
    )
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree.fuse([a, b])
