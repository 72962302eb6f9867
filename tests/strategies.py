"""Hypothesis strategies for token trees (valid and invalid), templates and fuzz inputs.

Trees are generated from a drawn seed with numpy (fast for hundreds of nodes) while the node
count, the shape family and the vocabulary are drawn by hypothesis, so failures still shrink to
small trees. Re-exported by ``conftest.py``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import reference as ref
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SHAPES = ("random", "chain", "star", "deep", "bfs", "wide", "broom")
VOCABS = {"tiny": 3, "small": 16, "big": ref.MAX_TOKEN + 1}
SCORE_KINDS = ("logprob", "prob", "ties", "wide")


@dataclass
class TreeCase:
    tokens: list[int]
    parents: list[int]
    scores: list[float] | None = None  # float32-representable

    @property
    def n(self) -> int:
        return len(self.parents)


def make_parents(rng: np.random.Generator, n: int, shape: str) -> list[int]:
    idx = np.arange(1, n)
    if shape == "random":
        rest = (rng.random(n - 1) * idx).astype(np.int64)
    elif shape == "chain":
        rest = idx - 1
    elif shape == "star":
        rest = np.zeros(n - 1, dtype=np.int64)
    elif shape == "deep":
        rest = np.maximum(idx - 1 - rng.integers(0, 3, n - 1), 0)
    elif shape == "bfs":  # non-decreasing parents: nodes in level order
        rest = np.sort((rng.random(n - 1) * idx).astype(np.int64))
    elif shape == "wide":
        rest = (rng.random(n - 1) * np.minimum(idx, 4)).astype(np.int64)
    elif shape == "broom":  # a chain, then a fan at its end
        half = max(1, n // 2)
        rest = np.where(idx < half, idx - 1, half - 1)
    else:
        raise AssertionError(shape)
    parents = [-1, *(int(p) for p in rest)]
    assert all(0 <= parents[i] < i for i in range(1, n))
    return parents


def make_tokens(rng: np.random.Generator, parents: list[int], vocab: int, extremes: bool) -> list[int]:
    """Random tokens with distinct siblings (a repeat is bumped to the next free id)."""
    used: dict[int, set[int]] = defaultdict(set)
    tokens = []
    for i, p in enumerate(parents):
        t = int(rng.integers(0, vocab))
        if extremes and rng.random() < 0.1:
            t = int(rng.choice([0, 1, ref.MAX_TOKEN - 1, ref.MAX_TOKEN]))
        if i > 0:
            while t in used[p]:
                t = (t + 1) % (ref.MAX_TOKEN + 1)
            used[p].add(t)
        tokens.append(t)
    return tokens


def make_scores(rng: np.random.Generator, n: int, kind: str) -> list[float]:
    if kind == "logprob":
        s = -rng.exponential(3.0, n)
    elif kind == "prob":
        s = rng.random(n)
    elif kind == "ties":
        s = rng.integers(-2, 3, n).astype(np.float64)
    else:
        s = rng.normal(0.0, 1e3, n)
    # float32-representable Python floats, and no -0.0 (its order vs +0.0 is an IEEE corner)
    return [float(x) + 0.0 for x in s.astype(np.float32)]


@st.composite
def trees(
    draw: st.DrawFn,
    min_nodes: int = 1,
    max_nodes: int = 200,
    large: int = 600,
    scores: bool | None = None,
    vocab: str | None = None,
    shapes: tuple[str, ...] = SHAPES,
    root: int | None = None,
) -> TreeCase:
    """A valid tree of ``min_nodes..max_nodes`` nodes (sometimes up to ``large``)."""
    if large > max_nodes and draw(st.integers(0, 7)) == 7:
        n = draw(st.integers(max_nodes, large))
    else:
        n = draw(st.integers(min_nodes, max_nodes))
    shape = draw(st.sampled_from(shapes))
    vocab_name = vocab if vocab is not None else draw(st.sampled_from(sorted(VOCABS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parents = make_parents(rng, n, shape)
    tokens = make_tokens(rng, parents, VOCABS[vocab_name], extremes=vocab_name == "big")
    if root is not None:
        tokens[0] = root
    with_scores = draw(st.booleans()) if scores is None else scores
    case_scores = make_scores(rng, n, draw(st.sampled_from(SCORE_KINDS))) if with_scores else None
    ref.check_tree(tokens, parents)
    return TreeCase(tokens, parents, case_scores)


INVALID_KINDS = (
    "root_parent",
    "late_parent",
    "negative_parent",
    "huge_parent",
    "dup_sibling",
    "negative_token",
    "huge_token",
    "length",
    "empty",
    "too_many",
)


@st.composite
def invalid_trees(draw: st.DrawFn) -> tuple[TreeCase, str]:
    """``(case, kind)``: a tree that breaks one rule; the reference rejects it."""
    kind = draw(st.sampled_from(INVALID_KINDS))
    if kind == "empty":
        case = TreeCase([], [])
    elif kind == "too_many":
        n = ref.MAX_NODES + draw(st.integers(1, 3))
        case = TreeCase([7] * n, list(range(-1, n - 1)))
    else:
        base = draw(trees(max_nodes=40, large=40, scores=False))
        tokens, parents = list(base.tokens), list(base.parents)
        n = len(parents)
        i = draw(st.integers(1, n - 1)) if n > 1 else None
        if kind == "root_parent":
            parents[0] = draw(st.sampled_from([0, 1, -2, 5, -(2**31)]))
        elif kind == "late_parent" and i is not None:
            parents[i] = i + draw(st.integers(0, 3))
        elif kind == "negative_parent" and i is not None:
            parents[i] = draw(st.integers(-(2**31), -1))
        elif kind == "huge_parent" and i is not None:
            parents[i] = draw(st.sampled_from([2**31, 2**31 - 1, 2**40]))
        elif kind == "dup_sibling":
            j = i if i is not None else 0
            if j == 0:  # a root-only tree: give it two equal children
                tokens += [5, 5]
                parents += [0, 0]
            else:  # a new sibling of node j repeating its token
                pos = draw(st.integers(j + 1, n))
                tokens.insert(pos, tokens[j])
                parents.insert(pos, parents[j])
                parents = [p + 1 if k > pos and p >= pos else p for k, p in enumerate(parents)]
        elif kind == "negative_token":
            tokens[draw(st.integers(0, n - 1))] = draw(st.integers(-(2**31), -1))
        elif kind == "huge_token":
            tokens[draw(st.integers(0, n - 1))] = draw(st.sampled_from([2**31, 2**32 - 1, 2**32, 2**62]))
        else:  # "length", or a corruption that needs two nodes on a root-only tree
            kind = "length"
            if draw(st.booleans()) and n > 1:
                tokens.pop()
            else:
                tokens.append(3)
        case = TreeCase(tokens, parents)
    try:
        ref.check_tree(case.tokens, case.parents)
    except ValueError:
        return case, kind
    raise AssertionError(f"strategy produced a valid tree for {kind}: {case}")


CONTAINERS = ("list", "tuple", "int32", "int64", "uint32", "strided", "bigendian")


def as_container(values: list[int], how: str) -> object:
    """``values`` as a list, tuple or numpy array of several layouts (int32 when it fits)."""
    fits = all(-(2**31) <= v < 2**31 for v in values)
    if how == "list" or (not fits and how != "int64"):
        return list(values)
    if how == "tuple":
        return tuple(values)
    if how == "int64":
        return np.array(values, dtype=np.int64)
    if how == "uint32" and all(v >= 0 for v in values):
        return np.array(values, dtype=np.uint32)
    if how == "strided":  # non-contiguous int32 view
        return np.repeat(np.array(values, dtype=np.int32), 2)[::2]
    if how == "bigendian":
        return np.array(values, dtype=">i4")
    return np.array(values, dtype=np.int32)


def containers(values: list[int]) -> st.SearchStrategy[object]:
    return st.sampled_from(CONTAINERS).map(lambda how: as_container(values, how))


def score_containers(values: list[float]) -> st.SearchStrategy[object]:
    return st.sampled_from(
        [list(values), tuple(values), np.array(values, dtype=np.float32), np.array(values, dtype=np.float64)]
    )


@st.composite
def rank_paths(draw: st.DrawFn, max_paths: int = 60, max_rank: int = 6, max_len: int = 6) -> list[list[int]]:
    """A prefix-closed set of rank paths in random order (a valid template)."""
    count = draw(st.integers(0, max_paths))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    paths: set[tuple[int, ...]] = set()
    for _ in range(count * 3):
        if len(paths) >= count:
            break
        parents = [p for p in [(), *sorted(paths)] if len(p) < max_len]
        parent = parents[int(rng.integers(0, len(parents)))]
        paths.add((*parent, int(rng.integers(0, max_rank + 1))))
    out = [list(p) for p in paths]
    rng.shuffle(out)
    return out


def acceptance_tables(max_rows: int = 3, max_ranks: int = 3) -> st.SearchStrategy[list[list[float]]]:
    """``[rows][ranks]`` acceptance probabilities in [0, 1] (zeros and ones included)."""
    prob = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))
    return st.integers(1, max_ranks).flatmap(
        lambda r: st.lists(st.lists(prob, min_size=r, max_size=r), min_size=1, max_size=max_rows)
    )


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def fuzz_arrays() -> st.SearchStrategy[object]:
    """Arbitrary integer-ish inputs: huge, negative, empty, 0-D..3-D, wrong dtypes, junk."""
    ints = st.integers(-(2**70), 2**70)
    plausible = st.lists(st.integers(-3, 12), max_size=12)
    return st.one_of(
        st.lists(ints, max_size=20),
        plausible,
        plausible.map(lambda v: [-1, *v]),
        plausible.map(lambda v: np.array(v, dtype=np.int32)),
        hnp.arrays(
            st.sampled_from(INT_DTYPES),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        ),
        hnp.arrays(
            st.sampled_from([np.float32, np.float64, np.bool_]),
            hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
        ),
        st.integers(0, 6000).map(lambda n: np.arange(n, dtype=np.int32) - 1),
        st.lists(st.lists(ints, max_size=4), max_size=4),
        st.sampled_from(["abc", b"ab", None, 3, 2.5, [1.5], [[1, 2], [3]], object(), {"a": 1}, [None]]),
    )
