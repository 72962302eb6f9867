"""fastdec.TrieDrafter against a Counter-based reference of its windows, retrieval and fusion."""

from __future__ import annotations

import heapq
import itertools

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

f32 = np.float32


class RefTrie:
    """Counts of every path (window prefix) and the order in which paths were first created
    (the drafter breaks score ties by that order)."""

    def __init__(self) -> None:
        self.count: dict[tuple[int, ...], int] = {}
        self.order: dict[tuple[int, ...], int] = {}

    def bump(self, path: tuple[int, ...]) -> None:
        if path not in self.order:
            self.order[path] = len(self.order)
        self.count[path] = self.count.get(path, 0) + 1

    def insert_windows(self, tokens: list[int], depth: int) -> None:
        for s in range(len(tokens)):
            for e in range(s + 1, min(s + depth, len(tokens)) + 1):
                self.bump(tuple(tokens[s:e]))

    def stream(self, tokens: list[int], depth: int) -> None:
        """Token by token: open windows grow deepest first, then a new one opens."""
        for i in range(len(tokens)):
            for s in range(max(0, i - depth + 1), i + 1):
                self.bump(tuple(tokens[s : i + 1]))

    def children(self, path: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [p for p in self.count if len(p) == len(path) + 1 and p[:-1] == path]

    def longest(self, ctx: list[int], cfg: dict[str, float]) -> int:
        """The longest suffix of ctx (at most max_match, shorter than depth) with continuations."""
        top = min(int(cfg["max_match"]), len(ctx), int(cfg["depth"]) - 1)
        return next((q for q in range(top, 0, -1) if self.children(tuple(ctx[-q:]))), 0)

    def retrieve(
        self, ctx: list[int], cfg: dict[str, float], budget: int, weight: float, longest: int = 0
    ) -> list[ref.Tree]:
        """Continuation trees of every matching suffix, longest first; a suffix k tokens shorter
        than ``longest`` (the longest match of every trie drafting) weighs match_decay**k times
        ``weight`` (only the longest when match_decay is 0)."""
        out, w = [], f32(weight)
        own = self.longest(ctx, cfg)
        for _ in range(own, longest):
            w = f32(w * f32(cfg["match_decay"]))
        if own < longest and w <= 0:
            return []
        part_budget = f32(budget)  # each shorter match expands part_budget_decay times fewer nodes
        depth = int(cfg["depth"])
        for q in range(min(int(cfg["max_match"]), len(ctx), depth - 1), 0, -1):
            path = tuple(ctx[-q:])
            if path in self.count and self.children(path):
                b = min(max(int(np.ceil(part_budget)), 1), budget)
                out.append(self.continuations(path, ctx[-1], b, depth - q, w, f32(cfg["smoothing"])))
                w = f32(w * f32(cfg["match_decay"]))
                part_budget = f32(part_budget * f32(cfg["part_budget_decay"]))
                if w <= 0 or len(out) == int(cfg["match_parts"]):
                    break
        return out

    def continuations(
        self, start: tuple[int, ...], root: int, budget: int, max_depth: int, weight: float, smoothing: float
    ) -> ref.Tree:
        tokens, parents, scores = [root], [-1], [f32(weight)]
        heap: list[tuple[float, int, tuple[int, ...], int, int, np.float32]] = []

        def push(path: tuple[int, ...], out: int, score: np.float32, depth: int) -> None:
            if depth >= max_depth:
                return
            kids = self.children(path)
            # the drafter sums sibling counts newest-first (head insertion), in float32
            total = f32(0)
            for kid in sorted(kids, key=lambda p: -self.order[p]):
                total = f32(total + f32(self.count[kid]))
            for kid in kids:
                s = f32(f32(score * f32(self.count[kid])) / f32(total + f32(smoothing)))
                heapq.heappush(heap, (-ref.total_key(s), self.order[kid], kid, out, depth + 1, s))

        push(start, 0, f32(weight), 0)
        while len(tokens) < budget and heap:
            _, _, path, out, depth, s = heapq.heappop(heap)
            tokens.append(path[-1])
            parents.append(out)
            scores.append(s)
            push(path, len(tokens) - 1, s, depth)
        return ref.Tree(tokens, parents, scores)


def draft(parts: list[ref.Tree], root: int, budget: int) -> ref.Tree:
    if not parts:
        return ref.Tree([root], [-1], None)
    return parts[0] if len(parts) == 1 else ref.fuse(parts, budget, "sum")


def assert_same(tree: fastdec.TokenTree, want: ref.Tree) -> None:
    assert tree.tokens.tolist() == want.tokens
    assert tree.parents.tolist() == want.parents
    if want.scores is not None:
        assert tree.scores is not None
        np.testing.assert_array_equal(tree.scores, np.asarray(want.scores, dtype=np.float32))


configs = st.fixed_dictionaries(
    {
        "depth": st.integers(2, 8),
        "max_match": st.integers(1, 6),
        "match_decay": st.sampled_from([0.0, 0.5, 0.8]),
        "smoothing": st.sampled_from([0.0, 0.5, 1.0]),
        "output_weight": st.sampled_from([0.0, 0.25, 0.5]),
        "match_parts": st.integers(1, 5),
        "part_budget_decay": st.sampled_from([1.0, 0.5, 0.35]),
    }
)


@settings(max_examples=80, deadline=None)
@given(seq=st.lists(st.integers(0, 5), min_size=1, max_size=80), cfg=configs, budget=st.integers(1, 30))
def test_stateless_matches_reference(seq: list[int], cfg: dict[str, float], budget: int) -> None:
    d = fastdec.TrieDrafter(**cfg)  # type: ignore[arg-type]
    trie = RefTrie()
    trie.insert_windows(seq, int(cfg["depth"]))
    want = draft(trie.retrieve(seq, cfg, budget, 1.0 - cfg["output_weight"]), seq[-1], budget)
    assert_same(d.propose_for(seq, budget), want)


# Skewed draws over 40 tokens: nodes with more than 8 children keep a count-sorted child list
# and are expanded lazily, which must give exactly the same trees.
high_fanout = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 40)), min_size=30, max_size=300)


@settings(max_examples=40, deadline=None)
@given(seq=high_fanout, cfg=configs, budget=st.integers(1, 40))
def test_high_fanout_matches_reference(seq: list[int], cfg: dict[str, float], budget: int) -> None:
    d = fastdec.TrieDrafter(**cfg)  # type: ignore[arg-type]
    trie = RefTrie()
    trie.insert_windows(seq, int(cfg["depth"]))
    want = draft(trie.retrieve(seq, cfg, budget, 1.0 - cfg["output_weight"]), seq[-1], budget)
    assert_same(d.propose_for(seq, budget), want)
    # streamed: the same counts reached token by token
    d.start(0, seq[:1])
    d.accept(0, seq[1:])
    local = RefTrie()
    local.stream(seq, int(cfg["depth"]))
    assert_same(
        d.propose(0, budget),
        draft(local.retrieve(seq, cfg, budget, 1.0 - cfg["output_weight"]), seq[-1], budget),
    )


@settings(max_examples=80, deadline=None)
@given(
    first=st.lists(st.integers(0, 4), min_size=2, max_size=40),
    second=st.lists(st.integers(0, 4), min_size=2, max_size=40),
    cfg=configs,
    budget=st.integers(2, 24),
)
def test_streaming_and_cross_request_sharing(
    first: list[int], second: list[int], cfg: dict[str, float], budget: int
) -> None:
    depth, w = int(cfg["depth"]), cfg["output_weight"]
    d = fastdec.TrieDrafter(**cfg)  # type: ignore[arg-type]
    # request 1: prompt = first half, output = second half; its output then joins the shared trie
    cut = len(first) // 2
    d.start(1, first[:cut])
    d.accept(1, first[cut:])
    d.stop(1)
    shared = RefTrie()
    shared.insert_windows(first[cut:], depth)
    assert d.global_nodes == len(shared.count) + 1
    # request 2 streams its tokens; its draft fuses its own trie with the shared one
    d.start(2, second[:1])
    for t in second[1:]:
        d.accept(2, [t])
    local = RefTrie()
    local.stream(second, depth)
    # the longer of the two tries' matches leads; the other's decays per token shorter
    longest = max(local.longest(second, cfg), shared.longest(second, cfg))
    parts = local.retrieve(second, cfg, budget, 1.0 - w, longest) + shared.retrieve(
        second, cfg, budget, w, longest
    )
    assert_same(d.propose(2, budget), draft(parts, second[-1], budget))


def test_copies_a_repeated_passage() -> None:
    passage = list(range(100, 140))
    d = fastdec.TrieDrafter()
    d.start("doc", [*passage, 7, 8, *passage[:5]])
    tree = d.propose("doc", 32)
    # the context ends with the passage's first 5 tokens: the draft continues the passage
    assert tree.chain_view().size >= 10
    assert tree.tokens[tree.chain_view()].tolist()[1:11] == passage[5:15]


def test_memory_cap_halves_counts() -> None:
    d = fastdec.TrieDrafter(depth=4, max_local_nodes=2000, max_context=8192)
    d.start(0, [1])
    rng = np.random.default_rng(0)
    for _ in range(100):
        d.accept(0, rng.integers(0, 1000, size=10_000).astype(np.int32))
        assert d.memory_bytes() < 2000 * 64 + 256 * 1024
    assert d.propose(0, 16).num_nodes >= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 1},
        {"depth": 65},
        {"max_match": 0},
        {"output_weight": 1.5},
        {"max_local_nodes": 3},
        {"max_requests": 0},
        {"max_context": 4},
        {"match_parts": 0},
        {"part_budget_decay": 0.0},
        {"part_budget_decay": 1.5},
        {"smoothing": -1.0},
        {"match_decay": 1.5},
        {"depth": -1},
    ],
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.TrieDrafter(**kwargs)  # type: ignore[arg-type]


def test_bad_input() -> None:
    d = fastdec.TrieDrafter()
    with pytest.raises(KeyError):
        d.propose("x", 4)
    with pytest.raises(KeyError):
        d.stop("x")
    with pytest.raises(ValueError, match="token"):
        d.start("x", [1, -1])
    with pytest.raises(ValueError, match="budget"):
        d.propose_for([1, 2], 0)


def test_batch_matches_single_proposals() -> None:
    d = fastdec.TrieDrafter()
    rng = np.random.default_rng(2)
    for i in range(32):
        d.start(i, rng.integers(0, 8, size=200).astype(np.int32))
    # Repeated calls of each size: the first ones time both the loop and rayon's pool, later
    # ones run whichever was faster; every way must give the single proposals, in order.
    for rows in (1, 3, 9, 32) * 8:
        ids = list(range(rows))[::-1]
        batch = d.propose_batch(ids, np.full(rows, 24, dtype=np.int32))
        assert len(batch) == rows
        for i, tree in zip(ids, itertools.chain(batch), strict=True):
            assert tree == d.propose(i, 24)
        assert batch.cu_num_nodes[-1] == batch.tokens.size
        contexts = [rng.integers(0, 8, size=50).astype(np.int32) for _ in range(rows)]
        stateless = d.propose_for_batch(contexts, np.full(rows, 8, dtype=np.int32))
        assert list(stateless) == [d.propose_for(c, 8) for c in contexts]
    with pytest.raises(ValueError, match="budgets"):
        d.propose_batch([0, 1], np.full(3, 4, dtype=np.int32))
