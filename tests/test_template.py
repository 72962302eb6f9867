"""``fastdec.TreeTemplate``: rank paths, Token Recycling, fills, Sequoia optimum vs the reference."""

from __future__ import annotations

import gc
import math

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import acceptance_tables, containers, rank_paths


def check_template(t: fastdec.TreeTemplate, expected: ref.Template) -> None:
    n = len(expected.parents)
    assert t.num_nodes == len(t) == n
    assert t.max_depth == max(expected.depth)
    assert t.num_ranks == expected.num_ranks
    for name, values in (("parents", expected.parents), ("depth", expected.depth), ("ranks", expected.ranks)):
        arr = getattr(t, name)
        assert arr.dtype == np.int32, name
        assert np.array_equal(arr, np.array(values, dtype=np.int32)), name
        assert not arr.flags.writeable, name
    assert t.paths() == [list(p) for p in expected.paths]
    assert t.optimal_value is None


@given(rank_paths(), st.sampled_from(["lists", "tuples", "array"]))
def test_from_paths(paths: list[list[int]], how: str) -> None:
    expected = ref.template(paths)
    if how == "tuples":
        arg: object = [tuple(p) for p in paths]
    elif how == "array":
        arg = [np.array(p, dtype=np.int64) for p in paths]
    else:
        arg = paths
    t = fastdec.TreeTemplate(arg)
    check_template(t, expected)
    # round trip through paths()
    check_template(fastdec.TreeTemplate(t.paths()), expected)


def test_root_only_template() -> None:
    t = fastdec.TreeTemplate([])
    check_template(t, ref.template([]))
    assert t.num_ranks == 0
    tree = t.fill([42])
    assert tree.tokens.tolist() == [42]
    assert tree.parents.tolist() == [-1]
    tree = t.fill_ranked(42, np.zeros((0, 3), dtype=np.int32))
    assert tree.tokens.tolist() == [42]


@given(rank_paths(max_paths=30), st.data())
def test_from_paths_rejects(paths: list[list[int]], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["orphan", "duplicate", "empty", "negative", "huge"]), label="kind")
    bad = [list(p) for p in paths]
    if kind == "orphan":
        bad.append([99, 0])  # its prefix [99] is never generated (ranks <= 6)
    elif kind == "duplicate":
        bad.append(list(bad[0]) if bad else [0])
        if len(bad) == 1:
            bad.append([0])
    elif kind == "empty":
        bad.insert(data.draw(st.integers(0, len(bad))), [])
    elif kind == "negative":
        bad.append([-1])
    else:
        bad.append([data.draw(st.sampled_from([2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**70, 2**200]))])
    with pytest.raises(ValueError, match=r"\S"):
        ref.template(bad)
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TreeTemplate(bad)


def test_from_paths_messages() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fastdec.TreeTemplate([[0, 1]])
    with pytest.raises(ValueError, match="twice"):
        fastdec.TreeTemplate([[0], [0]])
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TreeTemplate([[0]] + [[0, i] for i in range(fastdec.MAX_NODES)])
    # MAX_NODES nodes in all (root included) is fine
    assert fastdec.TreeTemplate([[i] for i in range(fastdec.MAX_NODES - 1)]).num_nodes == fastdec.MAX_NODES


@pytest.mark.parametrize("paths", ["abc", [1, 2], [[1.5]], [["a"]], None, 3])
def test_from_paths_bad_types(paths: object) -> None:
    with pytest.raises(TypeError, match=r"\S"):
        fastdec.TreeTemplate(paths)


def test_ranks_stay_within_int32() -> None:
    """Ranks are exposed as int32: the largest rank must read back unchanged."""
    t = fastdec.TreeTemplate([[ref.I32_MAX], [0]])
    assert t.ranks.tolist() == [0, 0, ref.I32_MAX]
    assert t.paths() == [[0], [ref.I32_MAX]]
    assert t.num_ranks == 2**31


def test_token_recycling_facts() -> None:
    t = fastdec.TreeTemplate.token_recycling()
    assert t.num_nodes == len(t) == ref.TOKEN_RECYCLING_NODES
    depth = t.depth
    widths = [int((depth == d).sum()) for d in range(1, t.max_depth + 1)]
    assert widths == ref.TOKEN_RECYCLING_WIDTHS
    assert t.max_depth == len(ref.TOKEN_RECYCLING_WIDTHS)
    leaves = ref.leaves(t.parents.tolist())
    assert len(leaves) == ref.TOKEN_RECYCLING_LEAVES
    assert t.num_ranks == 8
    # the root's children are ranks 0..7 and the template is consistent with its own paths
    assert sorted(t.ranks[t.parents == 0].tolist()) == list(range(8))
    check_template(t, ref.template(t.paths()))
    filled = t.fill(list(range(t.num_nodes)))
    assert filled.num_leaves == ref.TOKEN_RECYCLING_LEAVES


# --------------------------------------------------------------------------------------------
# fill / fill_ranked


@given(rank_paths(), st.data())
def test_fill(paths: list[list[int]], data: st.DataObject) -> None:
    t = fastdec.TreeTemplate(paths)
    rt = ref.template(paths)
    vocab = data.draw(st.sampled_from([2, 3, 5, 1000, ref.MAX_TOKEN + 1]), label="vocab")
    tokens = data.draw(
        st.lists(st.integers(0, vocab - 1), min_size=t.num_nodes, max_size=t.num_nodes), label="tokens"
    )
    tree = t.fill(data.draw(containers(tokens), label="container"))
    exp_tokens, exp_parents = ref.fill(rt, tokens)
    assert np.array_equal(tree.tokens, np.array(exp_tokens, dtype=np.int32))
    assert np.array_equal(tree.parents, np.array(exp_parents, dtype=np.int32))
    assert np.array_equal(tree.depth, np.array(ref.depth(exp_parents), dtype=np.int32))
    assert np.array_equal(tree.leaf_paths(), ref.leaf_paths(exp_parents))
    assert tree.scores is None
    if len(exp_tokens) == t.num_nodes:  # no merge: the template's own shape
        assert np.array_equal(tree.parents, t.parents)
    # masks of filled trees (small ones copy a block cached in the shared shape)
    prefix_len = data.draw(st.integers(0, 5), label="prefix_len")
    for name in ("float32", "bfloat16"):
        assert np.array_equal(
            tree.additive_mask(prefix_len, name), ref.additive_mask(exp_parents, prefix_len, name)
        )
    assert np.array_equal(tree.ancestor_bits(), ref.ancestor_bits(exp_parents))


def test_fill_merges_duplicate_siblings() -> None:
    t = fastdec.TreeTemplate([[0], [1], [2], [0, 0], [1, 0], [1, 1], [2, 0]])
    # node order: root, [0], [1], [2], [0,0], [1,0], [1,1], [2,0]
    tree = t.fill([9, 5, 5, 6, 1, 1, 2, 3])
    # [1] merges into [0] (token 5); its child token 1 merges into [0,0], token 2 is new
    assert tree.tokens.tolist() == [9, 5, 6, 1, 2, 3]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 1, 2]


@given(rank_paths(max_rank=4), st.data())
def test_fill_ranked(paths: list[list[int]], data: st.DataObject) -> None:
    t = fastdec.TreeTemplate(paths)
    rt = ref.template(paths)
    k = data.draw(st.integers(max(t.num_ranks, 1), t.num_ranks + 3), label="k")
    vocab = data.draw(st.sampled_from([3, 50, ref.MAX_TOKEN + 1]), label="vocab")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    candidates = rng.integers(0, vocab, size=(t.max_depth, k)).astype(np.int32)
    if data.draw(st.booleans(), label="fortran"):
        candidates = np.asfortranarray(candidates)
    root = data.draw(st.integers(0, ref.MAX_TOKEN), label="root")
    tree = t.fill_ranked(root, candidates)
    exp_tokens, exp_parents = ref.fill_ranked(rt, root, candidates)
    assert np.array_equal(tree.tokens, np.array(exp_tokens, dtype=np.int32))
    assert np.array_equal(tree.parents, np.array(exp_parents, dtype=np.int32))


def test_fill_ranked_picks_depth_and_rank() -> None:
    t = fastdec.TreeTemplate([[0], [1], [0, 0], [0, 1], [1, 0]])
    candidates = np.array([[10, 11], [20, 21]], dtype=np.int32)
    tree = t.fill_ranked(7, candidates)
    assert tree.tokens.tolist() == [7, 10, 11, 20, 21, 20]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 1, 2]


@pytest.mark.parametrize(
    "tokens",
    [[1, 2, 3], [1, 2, 3, 4, 5], [], [1, 2, -3, 4], [1, 2, 2**31, 4]],
    ids=["short", "long", "empty", "negative", "huge"],
)
def test_fill_rejects(tokens: list[int]) -> None:
    t = fastdec.TreeTemplate([[0], [1], [0, 0]])
    with pytest.raises(ValueError, match=r"\S"):
        t.fill(tokens)


@pytest.mark.parametrize(
    ("candidates", "error"),
    [
        (np.zeros((2, 1), dtype=np.int32), ValueError),  # k = 1 < num_ranks = 2
        (np.zeros((1, 2), dtype=np.int32), ValueError),  # one row for depth 2
        (np.zeros((3, 2), dtype=np.int32), ValueError),
        (np.full((2, 2), -1, dtype=np.int32), ValueError),
        (np.zeros((2, 2), dtype=np.int64), TypeError),
        ([[0, 0], [0, 0]], TypeError),
        (np.zeros(4, dtype=np.int32), TypeError),
        (np.zeros((2, 2, 1), dtype=np.int32), TypeError),
        ("ab", TypeError),
    ],
)
def test_fill_ranked_rejects(candidates: object, error: type[Exception]) -> None:
    t = fastdec.TreeTemplate([[0], [1], [0, 0]])
    with pytest.raises(error, match=r"\S"):
        t.fill_ranked(5, candidates)


def test_fill_ranked_bad_root() -> None:
    t = fastdec.TreeTemplate([[0]])
    with pytest.raises(ValueError, match=r"\S"):
        t.fill_ranked(2**31, np.zeros((1, 1), dtype=np.int32))
    with pytest.raises(ValueError, match="invalid root = -1"):
        t.fill_ranked(-1, np.zeros((1, 1), dtype=np.int32))


def test_template_views_outlive_objects() -> None:
    parents = fastdec.TreeTemplate.token_recycling().parents
    ranks = fastdec.TreeTemplate.token_recycling().ranks
    template = fastdec.TreeTemplate.token_recycling()
    filled = template.fill(list(range(81)))
    tree_parents, leaf_paths = filled.parents, filled.leaf_paths()
    del template, filled
    gc.collect()
    expected = ref.template(fastdec.TreeTemplate.token_recycling().paths())
    assert parents.tolist() == expected.parents
    assert ranks.tolist() == expected.ranks
    assert tree_parents.tolist() == expected.parents
    assert np.array_equal(leaf_paths, ref.leaf_paths(expected.parents))
    for view in (parents, ranks, tree_parents, leaf_paths):
        assert not view.flags.writeable


# --------------------------------------------------------------------------------------------
# Expected accepted tokens and Sequoia's optimum


def table_arg(table: list[list[float]], how: str) -> object:
    if how == "nested":
        return table
    if how == "array2d":
        return np.array(table, dtype=np.float64)
    if how == "array2d-f32":
        return np.array(table, dtype=np.float32)
    if how == "flat":  # one row as a plain vector
        return table[0]
    return np.array(table[0], dtype=np.float64)


def table_used(table: list[list[float]], how: str) -> list[list[float]]:
    rows = [table[0]] if how in ("flat", "array1d") else table
    if how == "array2d-f32":
        rows = np.array(rows, dtype=np.float32).astype(np.float64).tolist()
    return rows


TABLE_FORMS = ["nested", "array2d", "array2d-f32", "flat", "array1d"]


@given(rank_paths(max_rank=4), acceptance_tables(max_rows=4, max_ranks=5), st.sampled_from(TABLE_FORMS))
def test_expected_accepted(paths: list[list[int]], table: list[list[float]], how: str) -> None:
    t = fastdec.TreeTemplate(paths)
    rt = ref.template(paths)
    got = t.expected_accepted(table_arg(table, how))
    assert type(got) is float
    # the same products and sums in the same order: bit-exact
    assert got == ref.expected_accepted(rt.parents, rt.ranks, table_used(table, how))


def test_expected_accepted_by_hand() -> None:
    t = fastdec.TreeTemplate([[0], [1], [0, 0]])
    assert t.expected_accepted([0.5, 0.25]) == 0.5 + 0.25 + 0.5 * 0.5
    # per-depth rows: depth 0 uses row 0, deeper levels reuse the last row
    assert t.expected_accepted([[0.5, 0.25], [0.1, 0.0]]) == 0.5 + 0.25 + 0.5 * 0.1
    # ranks beyond the table count 0
    assert t.expected_accepted([0.5]) == 0.5 + 0.25 * 0 + 0.5 * 0.5


@pytest.mark.parametrize(
    ("acceptance", "error"),
    [
        ([], ValueError),
        ([[]], ValueError),
        ([1.5], ValueError),
        ([-0.1], ValueError),
        ([float("nan")], ValueError),
        ([[0.5, 0.2], [0.1]], ValueError),
        (np.zeros((1, 1, 1)), ValueError),
        (np.zeros(0), ValueError),
        (np.array(0.5), ValueError),
        ("ab", TypeError),
        (None, TypeError),
        ([["a"]], TypeError),
    ],
)
def test_expected_accepted_rejects(acceptance: object, error: type[Exception]) -> None:
    t = fastdec.TreeTemplate([[0]])
    with pytest.raises(error, match=r"\S"):
        t.expected_accepted(acceptance)
    with pytest.raises(error, match=r"\S"):
        fastdec.optimal_template(acceptance, budget=3, max_depth=2)


@given(acceptance_tables(max_rows=3, max_ranks=3), st.integers(1, 5), st.integers(0, 3), st.booleans())
def test_optimal_template_is_optimal(
    table: list[list[float]], budget: int, max_depth: int, as_array: bool
) -> None:
    arg = np.array(table, dtype=np.float64) if as_array else table
    t = fastdec.optimal_template(arg, budget=budget, max_depth=max_depth)
    same = fastdec.TreeTemplate.optimal(arg, budget=budget, max_depth=max_depth)
    assert t.paths() == same.paths()
    assert t.optimal_value == same.optimal_value
    assert t.num_nodes <= budget
    assert t.max_depth <= max_depth
    assert t.num_ranks <= len(table[0])
    rt = ref.template(t.paths())
    value = t.optimal_value
    assert value is not None
    assert value == t.expected_accepted(arg) == ref.expected_accepted(rt.parents, rt.ranks, table)
    best = ref.brute_force_optimum(table, budget, max_depth)
    # the DP sums the same products in another order: equal up to rounding
    assert math.isclose(value, best, rel_tol=1e-12, abs_tol=1e-12), (value, best)


def test_optimal_template_by_hand() -> None:
    # one rank accepted with p = 0.9, another with 0.05: budget 4 favours a 3-chain
    t = fastdec.optimal_template([0.9, 0.05], budget=4, max_depth=5)
    assert t.paths() == [[0], [0, 0], [0, 0, 0]]
    assert t.optimal_value == pytest.approx(0.9 + 0.81 + 0.729, rel=1e-15)
    # depth 1 only: a fan over the useful ranks
    t = fastdec.optimal_template([0.5, 0.3, 0.0], budget=10, max_depth=1)
    assert t.paths() == [[0], [1]]
    # budget 1: the root alone
    t = fastdec.optimal_template([0.9], budget=1, max_depth=3)
    assert t.num_nodes == 1
    assert t.optimal_value == 0.0


def test_optimal_template_large() -> None:
    t = fastdec.optimal_template([0.6, 0.2, 0.1, 0.05], budget=64, max_depth=8)
    assert t.num_nodes <= 64
    assert t.max_depth <= 8
    rt = ref.template(t.paths())
    assert t.optimal_value == ref.expected_accepted(rt.parents, rt.ranks, [[0.6, 0.2, 0.1, 0.05]])
    # a bigger budget never does worse
    bigger = fastdec.optimal_template([0.6, 0.2, 0.1, 0.05], budget=65, max_depth=8)
    assert bigger.optimal_value >= t.optimal_value


@pytest.mark.parametrize(
    ("budget", "max_depth"),
    [
        (0, 3),
        (fastdec.MAX_NODES + 1, 3),
        (5, fastdec.MAX_NODES + 1),
        (fastdec.MAX_NODES, fastdec.MAX_NODES),  # ~10^11 DP steps: refused, not run for minutes
    ],
)
def test_optimal_template_rejects(budget: int, max_depth: int) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.optimal_template([0.5], budget=budget, max_depth=max_depth)
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TreeTemplate.optimal([0.5], budget=budget, max_depth=max_depth)
