"""Greedy verification (docs/design.md#greedy), single and batched, against the reference walk."""

from __future__ import annotations

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import TreeCase, containers, trees


def biased_argmax(case: TreeCase, data: st.DataObject) -> list[int]:
    """A target argmax per node that follows some child with probability ~p, else a miss."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="argmax seed"))
    p_follow = data.draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]), label="p_follow")
    kids = ref.children(case.parents)
    out = []
    for i in range(case.n):
        if kids[i] and rng.random() < p_follow:
            out.append(case.tokens[kids[i][int(rng.integers(0, len(kids[i])))]])
        else:
            out.append(int(rng.choice([0, 1, 2, 3, 17, ref.MAX_TOKEN])))
    return out


@given(trees(), st.data())
def test_verify_greedy(case: TreeCase, data: st.DataObject) -> None:
    tree = fastdec.TokenTree(case.tokens, case.parents)
    argmax = biased_argmax(case, data)
    nodes, num_accepted, bonus = tree.verify_greedy(data.draw(containers(argmax), label="argmax container"))
    exp_nodes, exp_num, exp_bonus = ref.verify_greedy(case.tokens, case.parents, argmax)
    assert nodes.dtype == np.int32
    assert np.array_equal(nodes, np.array(exp_nodes, dtype=np.int32))
    assert type(num_accepted) is int
    assert num_accepted == exp_num == len(nodes) - 1
    assert type(bonus) is int
    assert bonus == exp_bonus
    # the emitted tokens agree with the path form (Medusa/EAGLE per-leaf cumprod)
    emitted = [case.tokens[v] for v in nodes[1:]] + [bonus]
    assert emitted == ref.verify_greedy_paths(case.tokens, case.parents, argmax)


def test_verify_greedy_docstring_example() -> None:
    tree = fastdec.TokenTree([10, 11, 12, 13], [-1, 0, 0, 1])
    nodes, num, bonus = tree.verify_greedy(np.array([11, 13, 0, 99], dtype=np.int32))
    assert (nodes.tolist(), num, bonus) == ([0, 1, 3], 2, 99)
    nodes, num, bonus = tree.verify_greedy([12, 0, 5, 0])
    assert (nodes.tolist(), num, bonus) == ([0, 2], 1, 5)
    nodes, num, bonus = tree.verify_greedy([7, 0, 5, 0])
    assert (nodes.tolist(), num, bonus) == ([0], 0, 7)


@given(st.lists(trees(max_nodes=60, large=150), min_size=0, max_size=6), st.data())
def test_verify_greedy_batch(cases: list[TreeCase], data: st.DataObject) -> None:
    tree_objs = [fastdec.TokenTree(c.tokens, c.parents) for c in cases]
    argmax = [a for c in cases for a in biased_argmax(c, data)]
    nodes, num, bonus = fastdec.verify_greedy_batch(tree_objs, data.draw(containers(argmax)))
    exp_nodes, exp_num, exp_bonus = ref.verify_greedy_batch([(c.tokens, c.parents) for c in cases], argmax)
    assert (nodes.dtype, num.dtype, bonus.dtype) == (np.int32, np.int32, np.int32)
    width = max((t.max_depth + 1 for t in tree_objs), default=1)
    assert nodes.shape == (len(cases), width)
    assert num.shape == bonus.shape == (len(cases),)
    assert np.array_equal(nodes, exp_nodes)
    assert np.array_equal(num, exp_num)
    assert np.array_equal(bonus, exp_bonus)
    # each row agrees with verifying its tree alone
    offset = 0
    for b, t in enumerate(tree_objs):
        one = t.verify_greedy(argmax[offset : offset + t.num_nodes])
        assert np.array_equal(nodes[b, : one[1] + 1], one[0])
        assert (int(num[b]), int(bonus[b])) == (one[1], one[2])
        offset += t.num_nodes


def test_verify_greedy_batch_empty() -> None:
    nodes, num, bonus = fastdec.verify_greedy_batch([], np.zeros(0, dtype=np.int32))
    assert nodes.shape == (0, 1)
    assert num.shape == (0,)
    assert bonus.shape == (0,)


@given(trees(max_nodes=50, large=50), st.data())
def test_verify_rejects_bad_argmax(case: TreeCase, data: st.DataObject) -> None:
    tree = fastdec.TokenTree(case.tokens, case.parents)
    argmax = biased_argmax(case, data)
    wrong_len = data.draw(st.sampled_from([argmax[:-1], [*argmax, 0]]), label="wrong length")
    for bad in (wrong_len,):
        with pytest.raises(ValueError, match=r"\S"):
            tree.verify_greedy(bad)
        with pytest.raises(ValueError, match=r"\S"):
            fastdec.verify_greedy_batch([tree], bad)
    i = data.draw(st.integers(0, case.n - 1), label="index")
    value = data.draw(st.sampled_from([-1, -(2**31), 2**31, 2**40]), label="value")
    bad = list(argmax)
    bad[i] = value
    with pytest.raises(ValueError, match=r"\S"):
        tree.verify_greedy(bad)
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.verify_greedy_batch([tree, tree], argmax + bad)


def test_verify_batch_error_names_flat_index() -> None:
    tree = fastdec.TokenTree([1, 2], [-1, 0])
    with pytest.raises(ValueError, match="index 3"):
        fastdec.verify_greedy_batch([tree, tree], [2, 0, 0, -7])


@pytest.mark.parametrize("bad", ["ab", None, [1.5, 2.0], [[1, 2]]])
def test_verify_bad_types(bad: object) -> None:
    tree = fastdec.TokenTree([1, 2], [-1, 0])
    with pytest.raises(TypeError, match=r"\S"):
        tree.verify_greedy(bad)
    with pytest.raises(TypeError, match=r"\S"):
        fastdec.verify_greedy_batch([tree], bad)


def test_verify_batch_bad_trees() -> None:
    with pytest.raises(TypeError):
        fastdec.verify_greedy_batch(["tree"], [1])
    with pytest.raises(TypeError):
        fastdec.verify_greedy_batch(fastdec.TokenTree([1], [-1]), [1])


@given(st.data())
def test_verify_filled_template_trees(data: st.DataObject) -> None:
    """Trees sharing a template's shape verify like independently built ones."""
    template = fastdec.TreeTemplate.token_recycling()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    batch = []
    for _ in range(data.draw(st.integers(1, 4))):
        candidates = (
            rng.permutation(64)[: template.max_depth * 8].reshape(template.max_depth, 8).astype(np.int32)
        )
        batch.append(template.fill_ranked(int(rng.integers(0, 64)), candidates))
    cases = [TreeCase(t.tokens.tolist(), t.parents.tolist()) for t in batch]
    argmax = [a for c in cases for a in biased_argmax(c, data)]
    got = fastdec.verify_greedy_batch(batch, argmax)
    expected = ref.verify_greedy_batch([(c.tokens, c.parents) for c in cases], argmax)
    for g, e in zip(got, expected, strict=True):
        assert np.array_equal(g, e)
