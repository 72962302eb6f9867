"""``fastdec.TokenTree``: construction, properties, derived buffers and masks vs the reference."""

from __future__ import annotations

import gc

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import TreeCase, containers, invalid_trees, score_containers, trees

INT_PROPERTIES = ("tokens", "parents", "depth", "first_child", "next_sibling")


def build(case: TreeCase) -> fastdec.TokenTree:
    return fastdec.TokenTree(case.tokens, case.parents, scores=case.scores)


def expected_property(case: TreeCase, name: str) -> np.ndarray:
    values = {
        "tokens": case.tokens,
        "parents": case.parents,
        "depth": ref.depth(case.parents),
        "first_child": ref.first_child(case.parents),
        "next_sibling": ref.next_sibling(case.parents),
    }[name]
    return np.array(values, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# Construction and properties


@given(trees(), st.data())
def test_properties_match_reference(case: TreeCase, data: st.DataObject) -> None:
    tokens = data.draw(containers(case.tokens), label="tokens container")
    parents = data.draw(containers(case.parents), label="parents container")
    scores = None if case.scores is None else data.draw(score_containers(case.scores), label="scores")
    tree = fastdec.TokenTree(tokens, parents, scores=scores)
    n = case.n
    assert tree.num_nodes == len(tree) == n
    assert tree.max_depth == max(ref.depth(case.parents))
    assert tree.num_leaves == len(ref.leaves(case.parents))
    assert tree.root_token == case.tokens[0]
    for name in INT_PROPERTIES:
        arr = getattr(tree, name)
        assert arr.dtype == np.int32, name
        assert arr.shape == (n,), name
        assert np.array_equal(arr, expected_property(case, name)), name
        assert not arr.flags.writeable, name
    if case.scores is None:
        assert tree.scores is None
    else:
        assert tree.scores.dtype == np.float32
        assert np.array_equal(tree.scores, np.array(case.scores, dtype=np.float32))
        assert not tree.scores.flags.writeable


@given(trees())
def test_leaf_paths(case: TreeCase) -> None:
    tree = build(case)
    paths = tree.leaf_paths()
    expected = ref.leaf_paths(case.parents)
    assert paths.dtype == np.int32
    assert paths.shape == (tree.num_leaves, tree.max_depth + 1)
    assert np.array_equal(paths, expected)
    assert not paths.flags.writeable
    # a second call (cached buffer) gives the same rows
    assert np.array_equal(tree.leaf_paths(), expected)


@given(trees(), st.integers(0, 1000))
def test_position_ids(case: TreeCase, prefix_len: int) -> None:
    tree = build(case)
    pos = tree.position_ids(prefix_len)
    assert pos.dtype == np.int32
    assert np.array_equal(pos, ref.position_ids(case.parents, prefix_len))
    assert np.array_equal(tree.position_ids(), ref.position_ids(case.parents, 0))
    # the largest prefix whose positions still fit in int32, and one past it
    top = ref.I32_MAX - tree.max_depth
    assert np.array_equal(tree.position_ids(prefix_len=top), ref.position_ids(case.parents, top))
    with pytest.raises(ValueError, match=r"\S"):
        tree.position_ids(top + 1)


@given(trees())
def test_ancestor_bits_and_mask(case: TreeCase) -> None:
    tree = build(case)
    bits = tree.ancestor_bits()
    assert bits.dtype == np.int32
    assert bits.shape == (case.n, (case.n + 31) // 32)
    assert np.array_equal(bits, ref.ancestor_bits(case.parents))
    mask = tree.ancestor_mask()
    expected = ref.ancestor_mask(case.parents)
    assert mask.dtype == np.bool_
    assert np.array_equal(mask, expected)
    # the packed rows unpack (little bit order, as FlashInfer's packbits) to the dense mask
    unpacked = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, : case.n]
    assert np.array_equal(unpacked.astype(bool), expected)
    # row sums are depth + 1 (docs/design.md#trees)
    assert np.array_equal(mask.sum(axis=1), np.array(ref.depth(case.parents)) + 1)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 128, 129])
def test_ancestor_bits_word_boundaries(n: int) -> None:
    for parents in (list(range(-1, n - 1)), [-1] + [0] * (n - 1)):
        tree = fastdec.TokenTree(list(range(n)), parents)
        assert np.array_equal(tree.ancestor_bits(), ref.ancestor_bits(parents))
        assert np.array_equal(tree.ancestor_mask(), ref.ancestor_mask(parents))


class FakeTorchDtype:
    """Prints like a torch dtype (``torch.float16``) without needing torch."""

    def __init__(self, name: str) -> None:
        self.text = f"torch.{name}"

    def __str__(self) -> str:
        return self.text


#: accepted spellings of each dtype
DTYPE_SPELLINGS = {
    "float32": [None, "float32", "f32", np.float32, np.dtype("float32"), FakeTorchDtype("float32")],
    "float64": ["float64", "double", np.float64, np.dtype("float64"), FakeTorchDtype("float64")],
    "float16": ["float16", "half", np.float16, np.dtype("float16"), FakeTorchDtype("float16")],
    "bfloat16": ["bfloat16", "bf16", FakeTorchDtype("bfloat16")],
}
ALL_SPELLINGS = [(name, s) for name, spellings in DTYPE_SPELLINGS.items() for s in spellings]


@given(trees(max_nodes=120, large=300), st.integers(0, 50), st.sampled_from(ALL_SPELLINGS))
def test_additive_mask(case: TreeCase, prefix_len: int, spelling: tuple[str, object]) -> None:
    name, dtype = spelling
    tree = build(case)
    mask = tree.additive_mask(prefix_len) if dtype is None else tree.additive_mask(prefix_len, dtype)
    expected = ref.additive_mask(case.parents, prefix_len, name)
    assert mask.dtype == expected.dtype
    assert mask.shape == (case.n, prefix_len + case.n)
    assert np.array_equal(mask, expected)


@given(trees(max_nodes=300, large=300))
def test_additive_mask_repeated_calls(case: TreeCase) -> None:
    """Every dtype and prefix length on one tree (small trees reuse a cached block)."""
    tree = build(case)
    for prefix_len in (0, 7, 0, 1):
        for name in ("float32", "bfloat16", "float64", "float16", "float32"):
            got = tree.additive_mask(prefix_len, name)
            assert np.array_equal(got, ref.additive_mask(case.parents, prefix_len, name)), (prefix_len, name)
            assert got.flags.writeable
            assert got.flags.c_contiguous


def test_additive_mask_values() -> None:
    tree = fastdec.TokenTree([1, 2, 3], [-1, 0, 0])
    f32 = tree.additive_mask(1, "float32")
    assert f32[0, 2] == np.finfo(np.float32).min
    assert f32[0, 0] == 0
    assert f32[0, 1] == 0
    assert tree.additive_mask(1, "float16")[0, 2] == np.finfo(np.float16).min
    assert tree.additive_mask(1, "float64")[0, 2] == np.finfo(np.float64).min
    bf16 = tree.additive_mask(1, "bfloat16")
    assert bf16.dtype == np.uint16
    assert set(np.unique(bf16).tolist()) == {0, 0xFF7F}
    # 0xFF7F is bfloat16's finfo.min: the top half of float32 -3.3895314e38
    as_f32 = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert as_f32[0, 2] == np.float32(-3.3895313892515355e38)
    assert not np.isnan(as_f32).any()


@given(trees())
def test_chain_view(case: TreeCase) -> None:
    tree = build(case)
    view = tree.chain_view()
    assert view.dtype == np.int32
    assert np.array_equal(view, ref.chain_view(case.parents))
    assert len(view) == tree.max_depth + 1
    for leaf in ref.leaves(case.parents)[:8]:
        assert np.array_equal(tree.chain_view(leaf), ref.chain_view(case.parents, leaf))
    inner = [i for i in range(case.n) if ref.first_child(case.parents)[i] >= 0]
    for node in inner[:4]:
        with pytest.raises(ValueError, match=r"\S"):
            tree.chain_view(node)
    for bad in (case.n, case.n + 7, -1, -(2**40), 2**40):
        with pytest.raises(IndexError, match=r"\S"):
            tree.chain_view(bad)


@given(trees(max_nodes=100, large=200), st.data())
def test_padded(case: TreeCase, data: st.DataObject) -> None:
    tree = build(case)
    size = data.draw(st.integers(case.n, case.n + 20), label="size")
    pad_id = data.draw(st.sampled_from([0, 1, 99, ref.MAX_TOKEN]), label="pad_id")
    prefix_len = data.draw(st.integers(0, 100), label="prefix_len")
    tokens, mask, pos = tree.padded(size, pad_id=pad_id, prefix_len=prefix_len)
    exp_tokens, exp_mask, exp_pos = ref.padded(case.tokens, case.parents, size, pad_id, prefix_len)
    assert (tokens.dtype, mask.dtype, pos.dtype) == (np.int32, np.bool_, np.int32)
    assert np.array_equal(tokens, exp_tokens)
    assert np.array_equal(mask, exp_mask)
    assert np.array_equal(pos, exp_pos)
    assert mask.any(axis=1).all()  # no fully masked row
    default = tree.padded(size)
    assert np.array_equal(default[0], ref.padded(case.tokens, case.parents, size, 0, 0)[0])
    assert np.array_equal(default[2], ref.padded(case.tokens, case.parents, size, 0, 0)[2])


@given(st.lists(st.integers(0, ref.MAX_TOKEN), min_size=1, max_size=300), st.sampled_from(["list", "int32"]))
def test_chain(tokens: list[int], how: str) -> None:
    arg = tokens if how == "list" else np.array(tokens, dtype=np.int32)
    tree = fastdec.TokenTree.chain(arg)
    parents = list(range(-1, len(tokens) - 1))
    assert tree == fastdec.TokenTree(tokens, parents)
    assert np.array_equal(tree.parents, np.array(parents, dtype=np.int32))
    assert np.array_equal(tree.tokens, np.array(tokens, dtype=np.int32))
    assert tree.scores is None
    assert np.array_equal(tree.chain_view(), np.arange(len(tokens), dtype=np.int32))


@pytest.mark.parametrize(
    "tokens",
    [[], [-1], [0, -5], [2**31], list(range(ref.MAX_NODES + 1))],
    ids=["empty", "negative", "negative-later", "huge", "too-many"],
)
def test_chain_rejects(tokens: list[int]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree.chain(tokens)


def test_max_nodes() -> None:
    assert fastdec.MAX_NODES == ref.MAX_NODES
    n = fastdec.MAX_NODES
    big = fastdec.TokenTree.chain(np.zeros(n, dtype=np.int32))
    assert big.num_nodes == n
    star = fastdec.TokenTree(np.arange(n, dtype=np.int32), np.array([-1] + [0] * (n - 1), dtype=np.int32))
    assert star.num_leaves == n - 1
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree(np.arange(n + 1, dtype=np.int32), np.arange(-1, n, dtype=np.int32))


# --------------------------------------------------------------------------------------------
# Equality, hashing, repr


@given(trees(max_nodes=40, large=40))
def test_equality(case: TreeCase) -> None:
    tree = build(case)
    assert tree == build(case)
    assert (tree != build(case)) is False
    assert tree != "a tree"
    assert tree != fastdec.TreeTemplate([])
    changed = list(case.tokens)
    changed[-1] = changed[-1] + 1 if changed[-1] < ref.MAX_TOKEN else 0
    try:
        ref.check_tree(changed, case.parents)
    except ValueError:
        pass
    else:
        assert tree != fastdec.TokenTree(changed, case.parents, scores=case.scores)
    other_scores = [1.0] * case.n if case.scores != [1.0] * case.n else [2.0] * case.n
    assert tree != fastdec.TokenTree(case.tokens, case.parents, scores=other_scores)
    with pytest.raises(TypeError):
        hash(tree)


def test_repr() -> None:
    text = repr(fastdec.TokenTree([10, 11, 12], [-1, 0, 0]))
    assert text.startswith("TokenTree(")
    assert "num_nodes=3" in text
    assert "10, 11, 12" in text


# --------------------------------------------------------------------------------------------
# Invalid input


@given(invalid_trees(), st.data())
def test_invalid_trees_raise(invalid: tuple[TreeCase, str], data: st.DataObject) -> None:
    case, _kind = invalid
    tokens = data.draw(containers(case.tokens), label="tokens container")
    parents = data.draw(containers(case.parents), label="parents container")
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree(tokens, parents)
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree.from_candidates(tokens, parents, [0.0] * len(case.parents), budget=3)


def test_invalid_tree_messages_name_the_problem() -> None:
    with pytest.raises(ValueError, match="node 2"):
        fastdec.TokenTree([1, 2, 3], [-1, 0, 2])
    with pytest.raises(ValueError, match="parent -1"):
        fastdec.TokenTree([1, 2], [0, 0])
    with pytest.raises(ValueError, match="distinct"):
        fastdec.TokenTree([1, 2, 2], [-1, 0, 0])
    with pytest.raises(ValueError, match="-4"):
        fastdec.TokenTree([1, -4], [-1, 0])
    with pytest.raises(ValueError, match="length"):
        fastdec.TokenTree([1, 2], [-1, 0, 0])


@pytest.mark.parametrize(
    ("tokens", "parents", "error"),
    [
        ("abc", [-1], TypeError),
        ([1], "x", TypeError),
        (None, [-1], TypeError),
        ([1.0], [-1], TypeError),
        (np.array([1.0]), [-1], TypeError),
        ([[1]], [-1], TypeError),
        (np.array([[1]], dtype=np.int32), np.array([-1], dtype=np.int32), ValueError),
        (np.array([1], dtype=np.int32), np.array([[-1]], dtype=np.int32), ValueError),
        (np.array(1, dtype=np.int32), [-1], ValueError),
        (np.array([2**40], dtype=np.int64), [-1], ValueError),
        (np.array([2**32 - 1], dtype=np.uint32), [-1], ValueError),
        ([1], np.array([2**63 - 1], dtype=np.int64), ValueError),
    ],
)
def test_bad_input_types(tokens: object, parents: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"\S"):
        fastdec.TokenTree(tokens, parents)


@pytest.mark.parametrize(
    "scores",
    [[0.0], [0.0, 1.0, 2.0], [0.0, float("nan")], np.array([0.0, np.nan], dtype=np.float32)],
    ids=["short", "long", "nan", "nan-f32"],
)
def test_bad_scores(scores: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TokenTree([1, 2], [-1, 0], scores=scores)


@pytest.mark.parametrize("scores", ["ab", [None, 1.0], np.zeros((2, 1)), 5.0])
def test_bad_score_types(scores: object) -> None:
    with pytest.raises(TypeError, match=r"\S"):
        fastdec.TokenTree([1, 2], [-1, 0], scores=scores)


@pytest.fixture
def small_tree() -> fastdec.TokenTree:
    return fastdec.TokenTree([10, 11, 12, 13], [-1, 0, 0, 1])


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.additive_mask(prefix_len=2**31),
        lambda t: t.additive_mask(prefix_len=2**28),  # [4, 2^28 + 4]: above the mask size cap
        lambda t: t.additive_mask(prefix_len=2**64 - 1),
        lambda t: t.additive_mask(0, "int32"),
        lambda t: t.additive_mask(0, "float8"),
        lambda t: t.additive_mask(0, ""),
        lambda t: t.additive_mask(0, np.int64),
        lambda t: t.additive_mask(0, 123),
        lambda t: t.position_ids(2**31),
        lambda t: t.padded(3),
        lambda t: t.padded(0),
        lambda t: t.padded(fastdec.MAX_NODES + 1),
        lambda t: t.padded(8, pad_id=2**31),
        lambda t: t.padded(8, prefix_len=2**31 - 1),
        lambda t: t.chain_view(1),
        lambda t: t.chain_view(0),
        lambda t: t.best_first_subtree(0),
        lambda t: t.verify_greedy([1, 2, 3]),
        lambda t: t.verify_greedy([1, 2, 3, -1]),
        lambda t: t.verify_greedy([1, 2, 3, 2**31]),
    ],
)
def test_bad_arguments_raise_value_error(small_tree: fastdec.TokenTree, call: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        call(small_tree)  # type: ignore[operator]


@pytest.mark.parametrize("leaf", [4, 100, -1, -5])
def test_bad_leaf_raises_index_error(small_tree: fastdec.TokenTree, leaf: int) -> None:
    with pytest.raises(IndexError, match=r"\S"):
        small_tree.chain_view(leaf)


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.position_ids(-1),
        lambda t: t.additive_mask(-1),
        lambda t: t.padded(-1),
        lambda t: t.padded(8, pad_id=-1),
        lambda t: t.best_first_subtree(-1),
        lambda t: t.best_first_subtree(2**70),
    ],
)
def test_negative_or_huge_scalars(small_tree: fastdec.TokenTree, call: object) -> None:
    # Scalar parameters are read as wide ints and checked, so that negative or oversized values
    # raise ValueError naming the parameter (not PyO3's OverflowError).
    with pytest.raises(ValueError, match=r"invalid \w+ = -?\d+"):
        call(small_tree)  # type: ignore[operator]


# --------------------------------------------------------------------------------------------
# Views: read-only and owned by the tree


@given(trees(max_nodes=80, large=80, scores=True))
def test_views_are_read_only(case: TreeCase) -> None:
    tree = build(case)
    views = [getattr(tree, name) for name in (*INT_PROPERTIES, "scores")] + [tree.leaf_paths()]
    for view in views:
        assert not view.flags.writeable
        with pytest.raises(ValueError, match=r"\S"):
            view[(0,) * view.ndim] = 1
        with pytest.raises(ValueError, match=r"\S"):
            view.flags.writeable = True
    assert np.array_equal(tree.tokens, np.array(case.tokens, dtype=np.int32))


def test_views_outlive_the_tree() -> None:
    tokens, parents = [5, 6, 7, 8, 9], [-1, 0, 0, 1, 1]
    scores = [0.5, 0.25, 0.125, 1.0, 2.0]
    arrays = {
        "parents": fastdec.TokenTree(tokens, parents).parents,
        "tokens": fastdec.TokenTree(tokens, parents).tokens,
        "depth": fastdec.TokenTree(tokens, parents).depth,
        "first_child": fastdec.TokenTree(tokens, parents).first_child,
        "next_sibling": fastdec.TokenTree(tokens, parents).next_sibling,
        "scores": fastdec.TokenTree(tokens, parents, scores=scores).scores,
        "leaf_paths": fastdec.TokenTree(tokens, parents).leaf_paths(),
    }
    gc.collect()
    # churn the allocator so that freed buffers would be reused and overwritten
    junk = [fastdec.TokenTree(list(range(200, 264)), [-1] + [0] * 63).leaf_paths() for _ in range(50)]
    gc.collect()
    assert arrays["parents"].sum() == sum(parents)
    assert arrays["parents"].tolist() == parents
    assert arrays["tokens"].tolist() == tokens
    assert arrays["depth"].tolist() == ref.depth(parents)
    assert arrays["first_child"].tolist() == ref.first_child(parents)
    assert arrays["next_sibling"].tolist() == ref.next_sibling(parents)
    assert arrays["scores"].tolist() == scores
    assert np.array_equal(arrays["leaf_paths"], ref.leaf_paths(parents))
    assert len(junk) == 50
    # the view's base keeps the tree alive
    assert isinstance(arrays["parents"].base, fastdec.TokenTree)
