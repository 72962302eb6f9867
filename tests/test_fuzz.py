"""Fuzzing every entry point with arbitrary integer-ish arrays.

Whatever the input, the binding must answer with a value or with ValueError / IndexError /
TypeError carrying a message: never a PyO3 ``PanicException`` (a ``BaseException``, which these
tests let through and so fail on), another exception type, a crash or a hang.
"""

from __future__ import annotations

from collections.abc import Callable

import fastdec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import fuzz_arrays

ALLOWED = (ValueError, IndexError, TypeError)
TEMPLATE = fastdec.TreeTemplate([[0], [1], [0, 0], [0, 1], [1, 0]])
TREE = fastdec.TokenTree([4, 5, 6, 7], [-1, 0, 0, 1])


def attempt(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)
    except ALLOWED as err:
        if not str(err):
            raise AssertionError(f"{type(err).__name__} without a message") from err
        return None


def as_paths(a: object) -> object:
    """A fuzz value as template paths: rows of a 2-D array, or the value itself."""
    if isinstance(a, np.ndarray) and a.ndim == 2:
        return [row for row in a]
    if isinstance(a, list) and a and isinstance(a[0], list):
        return a
    return a


pytestmark = pytest.mark.timeout(120)


@given(fuzz_arrays(), fuzz_arrays(), fuzz_arrays())
def test_fuzz_token_tree(a: object, b: object, c: object) -> None:
    tree = attempt(fastdec.TokenTree, a, b)
    if tree is not None:  # whatever was accepted must work downstream
        assert isinstance(tree, fastdec.TokenTree)
        attempt(tree.verify_greedy, c)
        attempt(tree.ancestor_bits)
        attempt(tree.additive_mask, 3, "bfloat16")
        attempt(tree.leaf_paths)
        attempt(tree.chain_view)
        attempt(tree.padded, tree.num_nodes + 1)
    attempt(fastdec.TokenTree, a, b, scores=c)
    attempt(fastdec.TokenTree.chain, a)
    for mode in ("logprob", "prob", "path"):
        attempt(fastdec.TokenTree.from_candidates, a, b, c, budget=5, score_mode=mode)


@given(fuzz_arrays(), fuzz_arrays())
def test_fuzz_template(a: object, b: object) -> None:
    template = attempt(fastdec.TreeTemplate, as_paths(a))
    if template is not None:
        assert isinstance(template, fastdec.TreeTemplate)
        attempt(template.fill, b)
        attempt(template.expected_accepted, [0.5, 0.25])
    attempt(TEMPLATE.fill, a)
    attempt(TEMPLATE.fill_ranked, 3, a)
    attempt(TEMPLATE.fill_ranked, 3, as_int32(a))
    attempt(TEMPLATE.expected_accepted, a)
    attempt(fastdec.optimal_template, a, budget=6, max_depth=3)


def as_int32(a: object) -> object:
    """``a`` as an int32 array when its values fit (to reach past the dtype check), else as is."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError):
        return a
    if arr.dtype.kind not in "iu" or (arr.size and not ((arr >= -(2**31)).all() and (arr < 2**31).all())):
        return a
    return arr.astype(np.int32)


@given(fuzz_arrays(), st.integers(0, 3))
def test_fuzz_verify(a: object, copies: int) -> None:
    attempt(TREE.verify_greedy, a)
    attempt(fastdec.verify_greedy_batch, [TREE] * copies, a)


def attempt_scalar(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    # PyO3 converts a negative or oversized int for an unsigned parameter with OverflowError.
    try:
        return attempt(fn, *args, **kwargs)
    except OverflowError as err:
        if not str(err):
            raise AssertionError("OverflowError without a message") from err
        return None


@given(
    st.lists(st.integers(-(2**70), 2**70), max_size=6),
    st.integers(-(2**33), 2**33),
    st.sampled_from([0, 1, 5, 4095, 4096, 4097, 2**31 - 4, 2**31 - 1, 2**31, 2**32, 2**40, 2**64, 2**70]),
)
def test_fuzz_scalars(ints: list[int], small: int, big: int) -> None:
    """Out-of-range scalars: an error or a value, no panic; and never a huge allocation."""
    for leaf in ints:
        attempt_scalar(TREE.chain_view, leaf)
        attempt_scalar(TREE.best_first_subtree, leaf, max_depth=big)
        attempt_scalar(fastdec.TokenTree.best_first, leaf, lambda p: [(1, -1.0)], budget=3, max_depth=2)
        attempt_scalar(TEMPLATE.fill_ranked, leaf, np.zeros((2, 2), dtype=np.int32))
    attempt_scalar(TREE.padded, small, pad_id=big, prefix_len=big)
    attempt_scalar(TREE.padded, big, pad_id=small, prefix_len=small)
    attempt_scalar(TREE.position_ids, big)
    attempt_scalar(TREE.position_ids, small)
    # a mask of [4, prefix_len + 4] is allocated when prefix_len is valid: keep that one small
    attempt_scalar(TREE.additive_mask, big if big >= 2**31 - 3 else big % 4096, "float16")
    attempt_scalar(TREE.additive_mask, small if small < 0 or small >= 2**31 - 3 else small % 4096)
    # the DP costs max_depth * ranks * budget^2: large budgets only with shallow depths here
    attempt_scalar(fastdec.optimal_template, [0.5, 0.3], budget=big, max_depth=small % 8)
    attempt_scalar(fastdec.optimal_template, [0.5, 0.3], budget=small % 64, max_depth=big)
    attempt_scalar(fastdec.TokenTree.fuse, [TREE, TREE], budget=small)
    attempt_scalar(
        fastdec.TokenTree.from_candidates, [1, 2], [-1, 0], [0.0, 1.0], budget=big, max_depth=small
    )


@given(st.lists(st.tuples(st.integers(-(2**40), 2**40), st.floats()), max_size=6), st.integers(1, 30))
def test_fuzz_best_first_callback(children: list[tuple[int, float]], budget: int) -> None:
    attempt(fastdec.TokenTree.best_first, 1, lambda p: children, budget=budget, max_depth=4)
