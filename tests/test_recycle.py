"""fastdec.RecycleDrafter (Token Recycling) against a plain-dict reference of its table."""

from __future__ import annotations

import itertools
import threading

import fastdec
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st


class RefRecycle:
    """The table as a dict token -> list of k candidates (None = unknown)."""

    def __init__(self, k: int, paths: list[list[int]]) -> None:
        self.k = k
        self.t = ref.template(paths)
        self.table: dict[int, list[int | None]] = {}

    def row(self, token: int) -> list[int | None]:
        return self.table.setdefault(token, [None] * self.k)

    def seed(self, a: int, b: int) -> None:
        if self.row(a)[0] is None:
            self.row(a)[0] = b

    def draft(self, root: int, budget: int) -> tuple[list[int], list[int]]:
        n = min(budget, len(self.t.parents))
        toks: list[int | None] = [root]
        for i in range(1, n):
            p = toks[self.t.parents[i]]
            toks.append(None if p is None else self.row(p)[self.t.ranks[i]])
        kept = [i for i in range(n) if toks[i] is not None]
        new_id = {i: j for j, i in enumerate(kept)}
        tokens = [int(toks[i]) for i in kept]  # type: ignore[arg-type]
        parents = [-1] + [new_id[self.t.parents[i]] for i in kept[1:]]
        return ref.trie_merge(tokens, parents)

    def accept(self, tokens: list[int], parents: list[int], emitted: list[int], topk: np.ndarray) -> None:
        path, node = [0], 0
        for t in emitted[:-1]:
            kids = [c for c in range(len(parents)) if parents[c] == node and tokens[c] == t]
            if not kids:
                break
            node = kids[0]
            path.append(node)
        for i in [i for i in range(len(tokens)) if i not in path] + path:
            self.table[tokens[i]] = [int(x) for x in topk[i]] + [None] * (self.k - topk.shape[1])


SMALL_PATHS = [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [2, 0], [0, 1, 0]]


@settings(max_examples=60)
@given(data=st.data(), vocab=st.integers(3, 12), budget=st.integers(1, 12))
def test_draft_and_update_match_reference(data: st.DataObject, vocab: int, budget: int) -> None:
    template = fastdec.TreeTemplate(SMALL_PATHS)
    drafter = fastdec.RecycleDrafter(vocab, k=3, template=template)
    model = RefRecycle(3, SMALL_PATHS)
    prompt = data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=20))
    drafter.start("r", prompt)
    for a, b in itertools.pairwise(prompt):
        model.seed(a, b)
    last = prompt[-1]
    for _ in range(6):
        tree = drafter.propose("r", budget)
        want = model.draft(last, budget)
        assert (tree.tokens.tolist(), tree.parents.tolist()) == want
        # the target's top-k at every node: rows of distinct tokens, sometimes fewer than k
        width = data.draw(st.integers(1, 3))
        topk = np.stack(
            [data.draw(st.permutations(list(range(vocab))))[:width] for _ in range(tree.num_nodes)]
        ).astype(np.int32)
        emitted = data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=4))
        drafter.accept("r", emitted, topk_ids=topk)
        model.accept(want[0], want[1], emitted, topk)
        for a, b in zip([last, *emitted], emitted, strict=False):
            model.seed(a, b)
        last = emitted[-1]
        for tok in range(vocab):
            assert drafter.row(tok).tolist() == [-1 if x is None else x for x in model.row(tok)]


def test_token_recycling_template_is_default_and_fills_completely() -> None:
    d = fastdec.RecycleDrafter(100, k=8)
    d.start(0, [5])
    assert d.propose(0, 81).num_nodes == 1  # nothing known yet: just the root
    rows = np.arange(81 * 8, dtype=np.int32).reshape(81, 8) % 100
    tree = d.propose(0, 81)
    d.accept(0, [7], topk_ids=rows[: tree.num_nodes])
    # every token's row is now known only for the root (5); fill all 100 rows with distinct tokens
    d2 = fastdec.RecycleDrafter(1000, k=8)
    d2.start(0, [0])
    for _ in range(200):
        t = d2.propose(0, 81)
        topk = (t.tokens[:, None] * 8 + np.arange(1, 9, dtype=np.int32)[None, :]) % 1000
        d2.accept(0, [int(t.tokens[0])], topk_ids=topk.astype(np.int32))
    full = d2.propose(0, 81)
    assert full.num_nodes == 81
    assert full.parents.tolist() == fastdec.TreeTemplate.token_recycling().parents.tolist()
    assert d2.propose(0, 20).num_nodes == 20


def test_accepted_path_row_wins_duplicates() -> None:
    template = fastdec.TreeTemplate([[0], [1], [0, 0]])
    d = fastdec.RecycleDrafter(10, k=2, template=template)
    d.start("a", [1, 2, 1, 3])  # seeds 1 -> 2, 2 -> 1, 3 -> ...
    tree = d.propose("a", 8)  # root 3 has no row: just the root
    assert tree.num_nodes == 1
    d.accept("a", [1], topk_ids=np.array([[1, 2]], dtype=np.int32))  # row 3 := [1, 2]
    tree = d.propose("a", 8)  # root 1: row [2, -1] -> node 2, then row 2 = [1, -1] -> node 1
    assert tree.tokens.tolist() == [1, 2, 1]
    # nodes 0 and 2 both carry token 1; node 2 is on the accepted path (emitted 2, 1, then 9)
    topk = np.array([[4, 5], [6, 7], [8, 9]], dtype=np.int32)
    d.accept("a", [2, 1, 9], topk_ids=topk)
    assert d.row(1).tolist() == [8, 9]
    assert d.row(2).tolist() == [6, 7]


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda d: d.start("x", [1, 100]), IndexError),
        (lambda d: d.start("x", []), ValueError),
        (lambda d: d.propose("nope", 8), KeyError),
        (lambda d: d.propose("a", 0), ValueError),
        (lambda d: d.accept("a", [100]), IndexError),
        (lambda d: d.accept("a", []), ValueError),
        (lambda d: d.accept("a", [1], topk_ids=np.array([[1, 200]], dtype=np.int32)), IndexError),
        (lambda d: d.row(100), IndexError),
        (lambda d: d.row(-1), ValueError),
    ],
)
def test_bad_input(call: object, exc: type[Exception]) -> None:
    d = fastdec.RecycleDrafter(100)
    d.start("a", [1, 2, 3])
    with pytest.raises(exc, match=r"\S"):
        call(d)  # type: ignore[operator]


def test_topk_rows_must_match_the_proposed_tree() -> None:
    d = fastdec.RecycleDrafter(100, k=2, template=fastdec.TreeTemplate([[0]]))
    d.start("a", [1, 2, 1])
    tree = d.propose("a", 4)
    assert tree.num_nodes == 2
    with pytest.raises(ValueError, match="topk_ids"):
        d.accept("a", [2], topk_ids=np.zeros((5, 2), dtype=np.int32))


@pytest.mark.parametrize(
    "kwargs",
    [{"vocab_size": 0}, {"vocab_size": 10, "k": 0}, {"vocab_size": 10, "k": 4}, {"vocab_size": 2**32}],
)
def test_bad_config(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fastdec.RecycleDrafter(**kwargs)  # k=4 < the 8 ranks of the default template


def test_memory_is_the_table() -> None:
    d = fastdec.RecycleDrafter(32000, k=8)
    assert d.memory_bytes() == 32000 * 8 * 4


def test_threads_share_one_table() -> None:
    d = fastdec.RecycleDrafter(5000, k=8)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        try:
            for _ in range(200):
                d.start(i, rng.integers(0, 5000, size=8).astype(np.int32))
                tree = d.propose(i, 81)
                topk = rng.integers(0, 5000, size=(tree.num_nodes, 8)).astype(np.int32)
                d.accept(i, [int(rng.integers(0, 5000))], topk_ids=topk)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert d.stats()["steps"] == 8 * 200
