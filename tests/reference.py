"""A plain-Python reference model of fastdec's token trees (docs/design.md#trees and #greedy).

Everything here is written with lists, dicts and loops, deliberately independent of how the Rust
core computes things (no LCRS walks, no bit tricks, no heaps where a linear scan does); numpy is
used only to build the expected output arrays and to do float32 arithmetic bit-exactly.

Invalid input raises :class:`RefError` (a ``ValueError``); the tests only compare *whether* the
library rejects an input, not the wording of its message.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

MAX_NODES = 4096
MAX_TOKEN = 2**31 - 1
I32_MAX = 2**31 - 1


class RefError(ValueError):
    """The reference rejects an input."""


# --------------------------------------------------------------------------------------------
# Trees: validation and derived buffers


def check_tree(tokens: Sequence[int], parents: Sequence[int]) -> None:
    """Raises RefError unless ``(tokens, parents)`` is a valid tree."""
    tokens, parents = [int(t) for t in tokens], [int(p) for p in parents]
    if len(tokens) != len(parents):
        raise RefError("length mismatch")
    n = len(parents)
    if n == 0:
        raise RefError("empty tree")
    if n > MAX_NODES:
        raise RefError("too many nodes")
    if parents[0] != -1:
        raise RefError("root parent must be -1")
    for i in range(1, n):
        if not 0 <= parents[i] < i:
            raise RefError(f"node {i}: parent {parents[i]} not in [0, {i})")
    for i, t in enumerate(tokens):
        if not 0 <= t <= MAX_TOKEN:
            raise RefError(f"token {t} at {i} out of range")
    seen: dict[tuple[int, int], int] = {}
    for i in range(1, n):
        key = (parents[i], tokens[i])
        if key in seen:
            raise RefError(f"nodes {seen[key]} and {i} are siblings with one token")
        seen[key] = i


def depth(parents: Sequence[int]) -> list[int]:
    out = []
    for i, p in enumerate(parents):
        out.append(0 if i == 0 else out[p] + 1)
    return out


def children(parents: Sequence[int]) -> list[list[int]]:
    """Children of every node, ascending."""
    out: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        out[parents[i]].append(i)
    return out


def first_child(parents: Sequence[int]) -> list[int]:
    return [c[0] if c else -1 for c in children(parents)]


def next_sibling(parents: Sequence[int]) -> list[int]:
    out = [-1] * len(parents)
    for sibs in children(parents):
        for a, b in pairwise(sibs):
            out[a] = b
    return out


def leaves(parents: Sequence[int]) -> list[int]:
    return [i for i, c in enumerate(children(parents)) if not c]


def path_to(parents: Sequence[int], node: int) -> list[int]:
    """Node ids on the root-to-``node`` path, root first."""
    path = [node]
    while parents[path[-1]] != -1:
        path.append(parents[path[-1]])
    return path[::-1]


def leaf_paths(parents: Sequence[int]) -> np.ndarray:
    width = max(depth(parents)) + 1
    rows = []
    for leaf in leaves(parents):
        p = path_to(parents, leaf)
        rows.append(p + [-1] * (width - len(p)))
    return np.array(rows, dtype=np.int32).reshape(len(rows), width)


def ancestor_mask(parents: Sequence[int]) -> np.ndarray:
    n = len(parents)
    out = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in path_to(parents, i):
            out[i, j] = True
    return out


def ancestor_bits(parents: Sequence[int]) -> np.ndarray:
    """Rows of ``(N + 31) // 32`` int32 words; bit ``j % 32`` of word ``j // 32`` = node j."""
    n = len(parents)
    words = (n + 31) // 32
    out = np.zeros((n, words), dtype=np.int32)
    for i in range(n):
        row = [0] * words
        for j in path_to(parents, i):
            row[j // 32] |= 1 << (j % 32)
        out[i] = [w - 2**32 if w >= 2**31 else w for w in row]
    return out


#: dtype name -> (numpy dtype of the result, value of a masked entry)
MASK_DTYPES: dict[str, tuple[type, object]] = {
    "float32": (np.float32, np.finfo(np.float32).min),
    "float64": (np.float64, np.finfo(np.float64).min),
    "float16": (np.float16, np.finfo(np.float16).min),
    "bfloat16": (np.uint16, 0xFF7F),  # bit pattern of bfloat16's finfo.min, -3.3895e38
}


def additive_mask(parents: Sequence[int], prefix_len: int, dtype: str) -> np.ndarray:
    if dtype not in MASK_DTYPES:
        raise RefError(f"bad dtype {dtype}")
    check_positions(parents, prefix_len)
    np_dtype, masked = MASK_DTYPES[dtype]
    n = len(parents)
    out = np.full((n, prefix_len + n), masked, dtype=np_dtype)
    out[:, :prefix_len] = 0
    for i in range(n):
        for j in path_to(parents, i):
            out[i, prefix_len + j] = 0
    return out


def check_positions(parents: Sequence[int], prefix_len: int) -> None:
    if prefix_len < 0 or prefix_len + max(depth(parents)) > I32_MAX:
        raise RefError("positions do not fit in int32")


def position_ids(parents: Sequence[int], prefix_len: int) -> np.ndarray:
    check_positions(parents, prefix_len)
    return np.array([prefix_len + d for d in depth(parents)], dtype=np.int32)


def chain_view(parents: Sequence[int], leaf: int | None = None) -> np.ndarray:
    n = len(parents)
    if leaf is None:
        d = depth(parents)
        leaf = min(leaves(parents), key=lambda v: (-d[v], v))
    elif not 0 <= leaf < n:
        raise IndexError(f"leaf {leaf} out of range")
    elif leaf not in leaves(parents):
        raise RefError(f"node {leaf} is not a leaf")
    return np.array(path_to(parents, leaf), dtype=np.int32)


def padded(
    tokens: Sequence[int], parents: Sequence[int], size: int, pad_id: int, prefix_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(parents)
    if not n <= size <= MAX_NODES:
        raise RefError("size out of range")
    if not 0 <= pad_id <= MAX_TOKEN:
        raise RefError("bad pad id")
    check_positions(parents, prefix_len)
    toks = np.full(size, pad_id, dtype=np.int32)
    toks[:n] = tokens
    mask = np.zeros((size, size), dtype=bool)
    mask[:n, :n] = ancestor_mask(parents)
    for i in range(n, size):
        mask[i, i] = True
    pos = np.full(size, prefix_len, dtype=np.int32)
    pos[:n] = position_ids(parents, prefix_len)
    return toks, mask, pos


# --------------------------------------------------------------------------------------------
# Greedy verification (§2.1)


def verify_greedy(
    tokens: Sequence[int], parents: Sequence[int], argmax: Sequence[int]
) -> tuple[list[int], int, int]:
    """Walk from the root to the child whose token is the argmax at the current node."""
    if len(argmax) != len(parents):
        raise RefError("argmax length mismatch")
    if any(not 0 <= a <= MAX_TOKEN for a in argmax):
        raise RefError("bad argmax token")
    kids = children(parents)
    nodes = [0]
    while True:
        want = argmax[nodes[-1]]
        hit = [c for c in kids[nodes[-1]] if tokens[c] == want]
        if not hit:
            return nodes, len(nodes) - 1, int(want)
        nodes.append(hit[0])


def verify_greedy_paths(tokens: Sequence[int], parents: Sequence[int], argmax: Sequence[int]) -> list[int]:
    """The tokens emitted by the Medusa/EAGLE path form of §2.1 (an independent formulation):
    per leaf path, count the leading drafts that match the argmax of their predecessor, take a
    row with the largest count, emit its accepted drafts and the argmax after them."""
    best: list[int] | None = None
    for leaf in leaves(parents):
        path = path_to(parents, leaf)
        acc = 0
        while acc + 1 < len(path) and tokens[path[acc + 1]] == argmax[path[acc]]:
            acc += 1
        emitted = [tokens[v] for v in path[1 : acc + 1]] + [argmax[path[acc]]]
        if best is None or len(emitted) > len(best):
            best = emitted
    assert best is not None
    return best


def verify_greedy_batch(
    trees: Sequence[tuple[Sequence[int], Sequence[int]]], argmax: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(argmax) != sum(len(p) for _, p in trees):
        raise RefError("argmax length mismatch")
    width = max((max(depth(p)) + 1 for _, p in trees), default=1)
    nodes = np.full((len(trees), width), -1, dtype=np.int32)
    num = np.zeros(len(trees), dtype=np.int32)
    bonus = np.zeros(len(trees), dtype=np.int32)
    offset = 0
    for b, (toks, pars) in enumerate(trees):
        acc, num[b], bonus[b] = verify_greedy(toks, pars, argmax[offset : offset + len(pars)])
        nodes[b, : len(acc)] = acc
        offset += len(pars)
    return nodes, num, bonus


# --------------------------------------------------------------------------------------------
# Templates


@dataclass
class Template:
    paths: list[tuple[int, ...]]  # node order, root excluded
    parents: list[int]
    ranks: list[int]

    @property
    def depth(self) -> list[int]:
        return depth(self.parents)

    @property
    def num_ranks(self) -> int:
        return max(self.ranks[1:], default=-1) + 1


def template(paths: Iterable[Sequence[int]]) -> Template:
    tuples = [tuple(int(r) for r in p) for p in paths]
    if any(len(p) == 0 for p in tuples):
        raise RefError("empty path")
    if any(not 0 <= r <= I32_MAX for p in tuples for r in p):
        raise RefError("rank out of range")
    if len(set(tuples)) != len(tuples):
        raise RefError("duplicate path")
    if len(tuples) + 1 > MAX_NODES:
        raise RefError("too many nodes")
    order = sorted(tuples, key=lambda p: (len(p), p))
    node_of = {(): 0}
    parents, ranks = [-1], [0]
    for k, p in enumerate(order):
        if p[:-1] not in node_of:
            raise RefError(f"parent of {p} missing")
        parents.append(node_of[p[:-1]])
        ranks.append(p[-1])
        node_of[p] = k + 1
    return Template(order, parents, ranks)


#: Token Recycling "2.2.2" (Luo et al. 2024, section 2.2): 80 drafts + root.
TOKEN_RECYCLING_NODES = 81
TOKEN_RECYCLING_WIDTHS = [8, 21, 25, 15, 8, 3]  # nodes at depth 1..6
TOKEN_RECYCLING_LEAVES = 40


def trie_merge(tokens: Sequence[int], parents: Sequence[int]) -> tuple[list[int], list[int]]:
    """Merges siblings with equal tokens (their subtrees united), nodes in first-seen order."""
    new_tokens, new_parents = [int(tokens[0])], [-1]
    node_of: dict[tuple[int, int], int] = {}
    mapped = [0] * len(tokens)
    for i in range(1, len(tokens)):
        key = (mapped[parents[i]], int(tokens[i]))
        if key not in node_of:
            node_of[key] = len(new_tokens)
            new_tokens.append(int(tokens[i]))
            new_parents.append(key[0])
        mapped[i] = node_of[key]
    return new_tokens, new_parents


def fill(t: Template, tokens: Sequence[int]) -> tuple[list[int], list[int]]:
    if len(tokens) != len(t.parents):
        raise RefError("length mismatch")
    if any(not 0 <= x <= MAX_TOKEN for x in tokens):
        raise RefError("bad token")
    return trie_merge(tokens, t.parents)


def fill_ranked(t: Template, root: int, candidates: np.ndarray) -> tuple[list[int], list[int]]:
    rows, k = candidates.shape
    if k < t.num_ranks or rows != max(t.depth):
        raise RefError("bad candidates shape")
    if (candidates < 0).any():
        raise RefError("negative candidate")
    d = t.depth
    tokens = [root] + [int(candidates[d[i] - 1, t.ranks[i]]) for i in range(1, len(t.parents))]
    return fill(t, tokens)


# --------------------------------------------------------------------------------------------
# Scores: float32 arithmetic exactly as IEEE single precision


def f32(x: float) -> np.float32:
    with np.errstate(all="ignore"):
        return np.float32(x)


def total_key(x: float) -> int:
    """An int ordering float32 values like IEEE totalOrder (-0.0 < +0.0)."""
    bits = int(np.array([x], dtype=np.float32).view(np.int32)[0])
    return bits ^ 0x7FFFFFFF if bits < 0 else bits


F32_MAX = float(np.finfo(np.float32).max)


def extend_score(parent: np.float32, edge: np.float32, mode: str) -> np.float32:
    """A child's path score: the f32 sum/product, saturated at +-float32 max (never inf)."""
    p, e = float(parent), float(edge)
    value = {"logprob": p + e, "prob": p * e, "path": e}[mode]
    return f32(min(max(value, -F32_MAX), F32_MAX))


def path_scores(parents: Sequence[int], edge: Sequence[float], mode: str) -> list[np.float32]:
    edge = [f32(e) for e in edge]
    with np.errstate(all="ignore"):
        if mode == "logprob":
            out = [f32(0.0)]
            for i in range(1, len(parents)):
                out.append(extend_score(out[parents[i]], edge[i], mode))
        elif mode == "prob":
            out = [f32(1.0)]
            for i in range(1, len(parents)):
                out.append(extend_score(out[parents[i]], edge[i], mode))
        elif mode == "path":
            out = list(edge)
        else:
            raise RefError(f"bad score mode {mode}")
    if not all(np.isfinite(s) for s in out):
        raise RefError("non-finite path score")
    return out


@dataclass
class Tree:
    tokens: list[int]
    parents: list[int]
    scores: list[np.float32] | None = None


def best_first_subtree(tree: Tree, budget: int, max_depth: int | None = None) -> Tree:
    """Grow from the root: repeatedly keep the best-scoring child of a kept node (ties: lowest
    id; no scores: all tie). Children deeper than ``max_depth`` are never offered."""
    if budget < 1:
        raise RefError("budget must be >= 1")
    d = depth(tree.parents)
    kids = children(tree.parents)
    limit = float("inf") if max_depth is None else max_depth

    def score(i: int) -> float:
        return 0.0 if tree.scores is None else tree.scores[i]

    kept = {0}
    frontier = list(kids[0]) if d[0] < limit else []
    while len(kept) < budget and frontier:
        best = max(frontier, key=lambda c: (total_key(score(c)), -c))
        frontier.remove(best)
        kept.add(best)
        if d[best] < limit:
            frontier.extend(kids[best])
    return subtree(tree, kept)


def subtree(tree: Tree, kept: set[int]) -> Tree:
    order = sorted(kept)
    new_id = {old: new for new, old in enumerate(order)}
    return Tree(
        [tree.tokens[i] for i in order],
        [-1 if tree.parents[i] < 0 else new_id[tree.parents[i]] for i in order],
        None if tree.scores is None else [tree.scores[i] for i in order],
    )


def from_candidates(
    tokens: Sequence[int],
    parents: Sequence[int],
    scores: Sequence[float],
    budget: int,
    max_depth: int | None,
    score_mode: str,
) -> Tree:
    if score_mode not in ("logprob", "prob", "path"):
        raise RefError("bad score mode")
    check_tree(tokens, parents)
    if len(scores) != len(parents) or not all(np.isfinite(f32(s)) for s in scores):
        raise RefError("bad scores")
    path = path_scores(parents, scores, score_mode)
    return best_first_subtree(Tree(list(tokens), list(parents), path), budget, max_depth)


def fuse(trees: Sequence[Tree], budget: int | None, combine: str) -> Tree:
    if not trees:
        raise RefError("no trees")
    if combine not in ("sum", "max"):
        raise RefError("bad combine")
    if budget is not None and budget < 1:
        raise RefError("budget must be >= 1")
    root = trees[0].tokens[0]
    if any(t.tokens[0] != root for t in trees):
        raise RefError("different roots")

    def score_of(t: Tree, i: int) -> np.float32:
        return f32(1.0) if t.scores is None else f32(t.scores[i])

    def comb(a: np.float32, b: np.float32) -> np.float32:
        with np.errstate(all="ignore"):
            return f32(a + b) if combine == "sum" else max(a, b)

    tokens, parents, scores = [root], [-1], [score_of(trees[0], 0)]
    node_of: dict[tuple[int, int], int] = {}
    for k, t in enumerate(trees):
        if k > 0:
            scores[0] = comb(scores[0], score_of(t, 0))
        mapped = [0]
        for i in range(1, len(t.parents)):
            key = (mapped[t.parents[i]], t.tokens[i])
            if key in node_of:
                scores[node_of[key]] = comb(scores[node_of[key]], score_of(t, i))
            else:
                if len(tokens) >= MAX_NODES:
                    raise RefError("too many nodes")
                node_of[key] = len(tokens)
                tokens.append(t.tokens[i])
                parents.append(key[0])
                scores.append(score_of(t, i))
            mapped.append(node_of[key])
    fused = Tree(tokens, parents, scores)
    if budget is not None and budget < len(tokens):
        return best_first_subtree(fused, budget)
    return fused


def best_first_expand(
    root: int,
    expand: Callable[[list[int]], Iterable[tuple[int, float]]],
    budget: int,
    max_depth: int,
    mode: str,
) -> Tree:
    """DySpec best-first growth: expand the node just added (if above ``max_depth``), then add
    the best candidate overall (ties: the earliest proposed) that is not a repeated sibling."""
    if mode not in ("logprob", "prob", "path"):
        raise RefError("bad score mode")
    if not 0 <= root <= MAX_TOKEN:
        raise RefError("bad root")
    if not 1 <= budget <= MAX_NODES:
        raise RefError("bad budget")
    tokens, parents = [root], [-1]
    scores = [f32(1.0) if mode == "prob" else f32(0.0)]
    node_of: dict[tuple[int, int], int] = {}
    depths = [0]
    heap: list[tuple[int, int, int, int, np.float32]] = []  # (-score key, age, parent, token, score)
    age = 0
    node = 0
    while len(tokens) < budget:
        if depths[node] < max_depth:
            for token, edge in expand([tokens[v] for v in path_to(parents, node)]):
                e = f32(edge)
                if not np.isfinite(e):
                    raise RefError("non-finite score")
                if not 0 <= token <= MAX_TOKEN:
                    raise RefError("bad token")
                with np.errstate(all="ignore"):
                    s = extend_score(scores[node], e, mode)
                heapq.heappush(heap, (-total_key(s), age, node, int(token), f32(s)))
                age += 1
        while heap and (heap[0][2], heap[0][3]) in node_of:
            heapq.heappop(heap)
        if not heap:
            break
        _, _, parent, token, s = heapq.heappop(heap)
        node = len(tokens)
        node_of[(parent, token)] = node
        tokens.append(token)
        parents.append(parent)
        scores.append(s)
        depths.append(depths[parent] + 1)
    return Tree(tokens, parents, scores)


# --------------------------------------------------------------------------------------------
# Sequoia (docs/design.md#trees)


def acceptance_prob(table: Sequence[Sequence[float]], parent_depth: int, rank: int) -> float:
    row = table[min(parent_depth, len(table) - 1)]
    return row[rank] if rank < len(row) else 0.0


def expected_accepted(
    parents: Sequence[int], ranks: Sequence[int], table: Sequence[Sequence[float]]
) -> float:
    """F(T) - 1: the sum over draft nodes of the product of acceptance along their path."""
    d = depth(parents)
    reach = [1.0] * len(parents)
    total = 0.0
    for i in range(1, len(parents)):
        p = parents[i]
        reach[i] = reach[p] * acceptance_prob(table, d[p], ranks[i])
        total += reach[i]
    return total


def brute_force_optimum(table: Sequence[Sequence[float]], budget: int, max_depth: int) -> float:
    """Best F - 1 over every prefix-closed set of rank paths with at most ``budget - 1`` paths,
    lengths <= ``max_depth`` and ranks below the table width (found by exhaustive search)."""
    num_ranks = len(table[0])
    best = 0.0
    seen = {frozenset()}
    stack: list[frozenset[tuple[int, ...]]] = [frozenset()]
    while stack:
        paths = stack.pop()
        t = template(paths)
        best = max(best, expected_accepted(t.parents, t.ranks, table))
        if len(paths) + 1 >= budget:
            continue
        for parent in [(), *paths]:
            if len(parent) >= max_depth:
                continue
            for r in range(num_ranks):
                grown = paths | {(*parent, r)}
                if len(grown) > len(paths) and grown not in seen:
                    seen.add(grown)
                    stack.append(grown)
    return best
