"""``fastdec.DraftSession``, the one owner of engine requests, against a naive reference: each
true request's drafts must be what a prompt-lookup drafter gives for that request's whole
context (``propose_for``), over random interleavings of new requests, steps, rows that move
(vLLM's condense and swaps), finishing, absence and eviction under a small cap; with engine ids
and without; 10^5 requests within the memory bound; 8 threads at once; errors named."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import fastdec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

K = 4


class PersistentBatch:
    """vLLM's ``InputBatch`` row bookkeeping: a new request takes the lowest free row, removed
    rows are refilled by sliding the last rows down (``condense``), and rows may be swapped."""

    def __init__(self, max_rows: int, max_len: int) -> None:
        self.tokens = np.zeros((max_rows, max_len), dtype=np.int32)
        self.counts = np.zeros(max_rows, dtype=np.int32)
        self.ids: list[int | None] = []

    def add(self, rid: int, prompt: Sequence[int]) -> None:
        row = self.ids.index(None) if None in self.ids else len(self.ids)
        if row == len(self.ids):
            self.ids.append(None)
        self.ids[row] = rid
        self.tokens[row, : len(prompt)] = prompt
        self.counts[row] = len(prompt)

    def remove(self, rid: int) -> None:
        self.ids[self.ids.index(rid)] = None

    def condense(self) -> None:
        while self.ids and self.ids[-1] is None:
            self.ids.pop()
        while None in self.ids:
            hole, last = self.ids.index(None), len(self.ids) - 1
            self.swap(hole, last)
            self.ids.pop()
            while self.ids and self.ids[-1] is None:
                self.ids.pop()

    def swap(self, i: int, j: int) -> None:
        self.ids[i], self.ids[j] = self.ids[j], self.ids[i]
        self.tokens[[i, j]] = self.tokens[[j, i]]
        self.counts[[i, j]] = self.counts[[j, i]]

    def emit(self, rid: int, new: Sequence[int]) -> None:
        row = self.ids.index(rid)
        n = int(self.counts[row])
        self.tokens[row, n : n + len(new)] = new
        self.counts[row] = n + len(new)


def pld(max_requests: int = 4096) -> fastdec.NgramDrafter:
    return fastdec.NgramDrafter("pld", min_n=1, max_n=3, num_pred=K, max_requests=max_requests)


REFERENCE = pld()


def expected(context: Sequence[int], room: int) -> list[int]:
    """The naive reference: a fresh look at the request's whole context."""
    if room <= 0:
        return []
    tree = REFERENCE.propose_for(np.asarray(context, dtype=np.int32), K + 1)
    return tree.tokens[tree.chain_view()[1:]].tolist()[: min(room, K)]


def session(max_requests: int = 1024, **kw: Any) -> fastdec.DraftSession:
    return fastdec.DraftSession(pld(), K, max_requests=max_requests, adaptive=False, **kw)


def drive_rows(
    seed: int, num_requests: int, max_rows: int, cap: int, max_len: int = 96
) -> fastdec.DraftSession:
    """Id-less rows through a moving persistent batch; every step checks every row's draft
    against the reference and that a request keeps one session id while it stays live."""
    rng = np.random.default_rng(seed)
    s = session(max_requests=cap, grace_steps=2)
    batch = PersistentBatch(max_rows, max_len)
    truth: dict[int, list[int]] = {}
    left: dict[int, int] = {}
    sampled: dict[int, int] = {}
    tracked: dict[int, int] = {}
    waiting = list(range(num_requests))
    while waiting or left:
        while waiting and len(left) < max_rows and rng.random() < 0.7:
            rid = waiting.pop(0)
            # prompts share a long head (a system prompt), so the head alone cannot tell them apart
            prompt = [1, 2, 3, 4, 5, 6, 7, 8, *rng.integers(0, 12, size=int(rng.integers(1, 30))).tolist()]
            first = int(rng.integers(0, 12))
            batch.add(rid, prompt)
            batch.emit(rid, [first])  # the prefill's sampled token
            truth[rid], sampled[rid] = [*prompt, first], 1
            left[rid] = int(rng.integers(1, 20))
        if rng.random() < 0.3 and len(batch.ids) > 1:
            batch.swap(*rng.choice(len(batch.ids), size=2, replace=False).tolist())
        n = len(batch.ids)
        counts = batch.counts[:n].copy()
        emitted = [sampled[r] if r is not None else 0 for r in batch.ids]
        got = s.step(batch.tokens, counts, emitted, max_len=max_len)
        rows = s.last_rows()
        live_ids = set()
        for row, rid in enumerate(batch.ids):
            if rid is None:
                continue
            sid = int(rows[row])
            if sid < 0:  # evicted within this step (a cap below the batch): no draft
                assert cap < max_rows
                assert got[row] == []
                continue
            room = max_len - int(counts[row]) if emitted[row] else 0  # nothing emitted: no draft
            assert got[row] == expected(truth[rid], room), (seed, rid)
            if s.stats()["evicted"] == 0:  # without evictions a request is one session request
                assert tracked.setdefault(rid, sid) == sid, (rid, sid)
            live_ids.add(sid)
        assert len(live_ids) == sum(r >= 0 for r in rows.tolist())  # each request claimed once
        done = []
        for rid in list(left):
            # accepted drafts + bonus; some rows wait a step (unscheduled) and emit nothing
            new = [] if rng.random() < 0.1 else rng.integers(0, 12, size=int(rng.integers(1, 5))).tolist()
            new = new[: max_len - len(truth[rid])]
            batch.emit(rid, new)
            truth[rid] += new
            sampled[rid] = len(new)
            left[rid] -= 1
            if left[rid] <= 0 or len(truth[rid]) >= max_len - 1:
                done.append(rid)
        for rid in done:
            del left[rid]
            batch.remove(rid)
        batch.condense()
    for _ in range(2):  # the grace steps: every request is gone
        s.step(batch.tokens, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32))
    return s


@pytest.mark.parametrize("seed", range(4))
def test_rows_without_ids_match_the_reference(seed: int) -> None:
    s = drive_rows(seed, num_requests=120, max_rows=8, cap=1024)
    stats = s.stats()
    assert stats["started"] == stats["stopped"] == 120
    assert stats["evicted"] == 0
    assert len(s) == 0


def test_eviction_under_a_small_cap_keeps_drafts_right() -> None:
    """A cap below the batch's live requests evicts every step; an evicted request is started
    again from its row when it comes back, and its drafts stay the reference's."""
    s = drive_rows(7, num_requests=60, max_rows=8, cap=3)
    stats = s.stats()
    assert stats["evicted"] > 0
    assert stats["started"] - stats["stopped"] == len(s) == 0


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["new", "step", "finish", "restart"]), st.integers(0, 5), st.integers(1, 4)
        ),
        min_size=1,
        max_size=40,
    ),
    cap=st.integers(1, 6),
)
def test_engine_ids_match_the_reference(ops: list[tuple[str, int, int]], cap: int) -> None:
    """Engine ids: requests start, step (any subset, any order), finish, and restart (a row
    that does not continue what the session knew of that id); every draft is the reference's."""
    s = session(max_requests=cap)
    rng = np.random.default_rng(len(ops))
    truth: dict[str, list[int]] = {}
    for op, which, size in ops:
        rid = f"r{which}"
        if op == "new" or (op == "restart" and rid in truth):
            truth[rid] = rng.integers(0, 6, size=size + 3).tolist()
        elif op == "finish":
            s.finish([rid])
            truth.pop(rid, None)
            continue
        order = [r for r in truth if rng.random() < 0.8]
        rng.shuffle(order)
        if not order:
            continue
        rows = np.zeros((len(order), 128), dtype=np.int64)
        for i, r in enumerate(order):
            truth[r] += rng.integers(0, 6, size=int(rng.integers(1, 3))).tolist()
            truth[r] = truth[r][:120]
            rows[i, : len(truth[r])] = truth[r]
        counts = [len(truth[r]) for r in order]
        got = s.step(rows, counts, [1] * len(order), ids=order, max_len=128)
        live = s.last_rows().tolist()  # -1: evicted within this step (a cap below the batch)
        assert got == [
            expected(truth[r], 128 - len(truth[r])) if sid >= 0 else []
            for r, sid in zip(order, live, strict=True)
        ]
        assert sum(sid < 0 for sid in live) <= max(0, len(order) - cap)
        assert len(s) <= cap


def test_a_hundred_thousand_requests_stay_bounded() -> None:
    drafter = fastdec.TrieDrafter(max_requests=64, max_global_nodes=1 << 14)
    s = fastdec.DraftSession(drafter, K, max_requests=64, grace_steps=2)
    rng = np.random.default_rng(2)
    rows = np.zeros((4, 48), dtype=np.int32)
    counts = np.full(4, 40, dtype=np.int32)
    memory = []
    for r in range(100_000):
        rows[r % 4, :40] = rng.integers(0, 1000, size=40)  # a new request replaces one row a step
        s.step(rows, counts, [1, 1, 1, 1])
        if r % 10_000 == 9_999:
            assert len(s) <= 64
            memory.append(drafter.memory_bytes())
    stats = s.stats()
    assert stats["started"] == 100_000 + 3  # and the three rows of zeros at the start
    assert stats["started"] - stats["stopped"] == len(s) <= 64
    assert max(memory[3:]) <= 1.5 * max(memory[:3]), memory  # the shared trie's cap holds


def test_cross_request_memory_through_finish() -> None:
    """A finished request's output reaches the shared trie: a later request that starts the
    same way is drafted that output (it is not in its own context)."""
    s = fastdec.DraftSession(fastdec.TrieDrafter(), K, adaptive=False)
    answer = [30, 31, 32, 33, 34, 35, 36]
    rows = np.zeros((1, 32), dtype=np.int32)
    rows[0, :4] = [1, 2, 3, 30]
    for t in range(1, len(answer)):
        s.step(rows, [3 + t], [1], ids=["a"])
        rows[0, 3 + t] = answer[t]
    s.finish(["a"])
    assert len(s) == 0
    rows[0, :5] = [9, 9, 2, 3, 30]
    assert s.step(rows, [5], [1], ids=[7]) == [[31, 32, 33, 34]]


def test_eight_threads_share_one_session() -> None:
    s = session(max_requests=4096)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            rng = np.random.default_rng(t)
            ids = [t * 100 + i for i in range(4)]
            truth = {r: rng.integers(0, 6, size=6).tolist() for r in ids}
            for _ in range(150):
                rows = np.zeros((4, 512), dtype=np.int32)
                for i, r in enumerate(ids):
                    truth[r] += rng.integers(0, 6, size=int(rng.integers(1, 3))).tolist()
                    rows[i, : len(truth[r])] = truth[r]
                got = s.step(rows, [len(truth[r]) for r in ids], [1] * 4, ids=ids)
                assert got == [expected(truth[r], K) for r in ids]
            s.finish(ids)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    assert len(s) == 0
    assert s.stats()["started"] == 32


def test_partial_prefill_rows_get_no_draft_and_start_nothing() -> None:
    s = session()
    rows = np.array([[5, 6, 7, 5, 6, 0, 0, 0]], dtype=np.int32)
    assert s.step(rows, [5], [0]) == [[]]
    assert len(s) == 0
    assert s.step(rows, [5], [1]) == [expected([5, 6, 7, 5, 6], K)]
    assert len(s) == 1


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: s.step(np.zeros((2, 4), dtype=np.int32), [5], [1]), IndexError, "counts\\[0\\] = 5"),
        (lambda s: s.step(np.zeros((1, 4), dtype=np.int32), [1, 1], [1, 1]), ValueError, "counts has 2 rows"),
        (lambda s: s.step(np.zeros((1, 4), dtype=np.float32), [1], [1]), TypeError, "int32 or int64"),
        (lambda s: s.step(np.full((1, 4), -2, dtype=np.int64), [2], [1]), ValueError, "-2"),
        (lambda s: s.step(np.zeros((1, 4), dtype=np.int32), [1], [1, 1]), ValueError, "sampled has length 2"),
        (lambda s: s.step(np.zeros((1, 4), dtype=np.int32), [1], [1], ids=[1.5]), TypeError, "int or str"),
        (lambda s: s.step(np.zeros((1, 4), dtype=np.int32), [-1], [1]), ValueError, "counts\\[0\\] = -1"),
    ],
)
def test_bad_input_is_named(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(session())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k = 0"),
        ({"tree_budget": 1}, "tree_budget = 1"),
        ({"max_requests": 0}, "max_requests = 0"),
        ({"grace_steps": 0}, "grace_steps = 0"),
        ({"explore": 1.5}, "explore = 1.5"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], match: str) -> None:
    args = {"k": K, **kwargs}
    with pytest.raises(ValueError, match=match):
        fastdec.DraftSession(pld(), args.pop("k"), **args)


def test_tails_with_offsets_and_trees_out() -> None:
    """SGLang's form: per request only a tail of its tokens and where it starts; trees out. The
    drafter's context is the first tail plus every token since (what the tails show), so each
    tree equals a fresh look at that context; a tail that skips tokens restarts the request."""
    s = session()
    seq = [4, 5, 6, 7, 4, 5, 6, 8, 4, 5, 9, 4, 5]
    depth = 6
    context = seq[-depth:]
    rng = np.random.default_rng(3)
    for _ in range(12):
        batch = s.step_trees([seq[-depth:]], None, [1], ids=["r"], offsets=[len(seq) - depth])
        want = REFERENCE.propose_for(np.asarray(context, dtype=np.int32), K + 1)
        assert batch[0].tokens.tolist() == want.tokens.tolist()
        new = rng.integers(4, 8, size=int(rng.integers(1, 4))).tolist()
        seq, context = seq + new, context + new
    assert s.stats()["restarted"] == 0
    s.step_trees([seq[-3:]], None, [1], ids=["r"], offsets=[len(seq) + 5])  # a gap: start over
    assert s.stats()["restarted"] == 1
    assert s.stats()["started"] == 2


def test_offsets_need_ids() -> None:
    with pytest.raises(ValueError, match="offsets"):
        session().step([[1, 2, 3]], None, [1], offsets=[0])


def test_a_budget_per_call() -> None:
    """A tree loop that picks its own size each step (llama.cpp's): ``budget`` caps that call's
    trees, ``budget=1`` drafts nothing but still feeds the request, and 0 is refused."""
    s = session()
    seq = [4, 5, 6, 7, 4, 5, 6, 8, 4, 5, 9, 4, 5, 6]
    full = s.step_trees([seq], None, [1], ids=[0])[0]
    assert full.num_nodes > 3
    small = s.step_trees([seq[-2:]], None, [1], ids=[0], offsets=[len(seq) - 2], budget=3)[0]
    want = REFERENCE.propose_for(np.asarray(seq, dtype=np.int32), 3)
    assert small.tokens.tolist() == want.tokens.tolist()
    seq += [7, 4]
    plain = s.step_trees([seq[-2:]], None, [2], ids=[0], offsets=[len(seq) - 2], budget=1)[0]
    assert plain.tokens.tolist() == [4]
    seq += [5]
    after = s.step_trees([seq[-1:]], None, [1], ids=[0], offsets=[len(seq) - 1])[0]
    want = REFERENCE.propose_for(np.asarray(seq, dtype=np.int32), K + 1)
    assert after.tokens.tolist() == want.tokens.tolist()
    assert s.stats()["started"] == 1
    with pytest.raises(ValueError, match="budget = 0"):
        s.step_trees([seq[-1:]], None, [1], ids=[0], offsets=[len(seq) - 1], budget=0)


def test_slots_and_fixed_width_drafts() -> None:
    """vLLM 0.34's form: the rows live in a request-state table (``slots[i]``: batch row i's
    table row, the engine's ``idx_mapping``), ids are passed, and drafts come back as one
    ``[R, width]`` int64 array, each short draft filled with its row's last token."""
    table = np.zeros((4, 32), dtype=np.int32)
    contexts = {"a": [4, 5, 6, 7, 4, 5], "b": [9, 8, 9, 8, 9], "c": [1, 2, 3]}
    where = {"a": 3, "b": 0, "c": 2}
    for rid, ctx in contexts.items():
        table[where[rid], : len(ctx)] = ctx
    s = session()
    order = ["b", "a", "c"]
    counts = [len(contexts[r]) for r in order]
    slots = [where[r] for r in order]
    got = s.step(table, counts, [1, 1, 1], ids=order, slots=slots, width=3)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.int64
    assert got.shape == (3, 3)
    for row, rid in enumerate(order):
        want = expected(contexts[rid], 3)
        assert got[row].tolist() == want + [contexts[rid][-1]] * (3 - len(want)), rid
    # next step: reordered, "b" emitted two tokens, "c" is prefilling (nothing emitted)
    contexts["b"] += [8, 9]
    table[where["b"], : len(contexts["b"])] = contexts["b"]
    order = ["c", "b", "a"]
    got = s.step(
        table,
        [len(contexts[r]) for r in order],
        [0, 2, 0],
        ids=order,
        slots=[where[r] for r in order],
        width=K + 3,
        max_len=32,
    )
    assert got.shape == (3, K + 3)
    assert got[0].tolist() == [3] * (K + 3)  # no draft: all fill
    want = expected(contexts["b"], K)
    assert got[1].tolist() == want + [9] * (K + 3 - len(want))
    assert s.stats()["started"] == 3
    with pytest.raises(IndexError, match="slots\\[0\\] = 4"):
        s.step(table, [3], [1], ids=["a"], slots=[4], width=3)
    with pytest.raises(TypeError, match="slots"):
        s.step([[1, 2, 3]], None, [1], ids=["a"], slots=[0])


def test_a_row_on_a_streak_drafts_and_a_row_that_keeps_missing_stops() -> None:
    """One controller, two rows with the same drafter confidences (prompt lookup gives none):
    only the row's streak tells them apart. Row 0 copies its prompt (its chains are right), row
    1 writes random text over four tokens (its chains find matches and miss three times in four).
    The step clock makes a draft token cost a third of a step, so drafting the missing row
    loses and drafting the copying row pays."""
    rng = np.random.default_rng(3)
    text = rng.integers(10, 5000, size=400)
    rows_out = [np.tile(text, 6), rng.integers(1, 5, size=2400)]
    session = fastdec.DraftSession(fastdec.NgramDrafter("pld", max_n=3, num_pred=6), 6, explore=0.0)
    lengths = [400, 400]
    sampled = [1, 1]
    now, late = 0.0, [[], []]  # type: ignore[var-annotated]
    for step in range(160):
        batch = np.zeros((2, 2400), dtype=np.int32)
        for i in range(2):
            batch[i, : lengths[i]] = rows_out[i][: lengths[i]]
        drafts = session.step(batch, lengths, sampled, ids=[0, 1], now=now)
        tokens = 0
        for i, draft in enumerate(drafts):
            truth = rows_out[i][lengths[i] : lengths[i] + len(draft) + 1]
            accepted = 0
            while accepted < len(draft) and draft[accepted] == truth[accepted]:
                accepted += 1
            sampled[i] = accepted + 1
            lengths[i] += accepted + 1
            tokens += len(draft)
            if step >= 100:
                late[i].append(len(draft))
        now += 0.03 + 0.01 * tokens
    assert np.mean(late[0]) > 4, late[0]
    assert np.mean(late[1]) < 0.5, late[1]


def likeliest(tree: fastdec.TokenTree) -> list[int]:
    return tree.tokens[tree.chain_view(tree.likeliest_leaf())[1:]].tolist()


def test_rows_draft_the_likeliest_chain_not_the_deepest() -> None:
    """After ``0`` the context went on with ``0`` three times and ``2`` once: the tree's deepest
    leaves tie at depth 2 and the lowest id ends ``2, 0``; the session drafts ``0, 2``, whose
    path probabilities (tokens a greedy verifier is expected to accept) sum higher."""
    context = [0, 0, 2, 0, 0, 0]
    tree = fastdec.TrieDrafter().propose_for(np.asarray(context, dtype=np.int32), K + 1)
    assert tree.tokens[tree.chain_view()[1:]].tolist() == [2, 0]
    assert likeliest(tree) == [0, 2]
    s = fastdec.DraftSession(fastdec.TrieDrafter(), K, adaptive=False)
    rows = np.zeros((1, 16), dtype=np.int32)
    rows[0, : len(context)] = context
    assert s.step(rows, [len(context)], [1], ids=["r"]) == [[0, 2]]


@settings(max_examples=60, deadline=None)
@given(context=st.lists(st.integers(0, 3), min_size=2, max_size=40))
def test_a_new_request_is_drafted_its_trees_likeliest_chain(context: list[int]) -> None:
    """Against a fresh drafter's tree for the same context (no shared memory yet)."""
    s = fastdec.DraftSession(fastdec.TrieDrafter(), K, adaptive=False)
    rows = np.zeros((1, 48), dtype=np.int32)
    rows[0, : len(context)] = context
    tree = fastdec.TrieDrafter().propose_for(np.asarray(context, dtype=np.int32), K + 1)
    want = likeliest(tree)[:K] if tree.num_nodes > 1 else []
    assert s.step(rows, [len(context)], [1], ids=[0]) == [want]


@pytest.mark.parametrize("pad", [True, False])
def test_filler_where_a_wider_step_measures_cheaper(pad: bool) -> None:
    """A CPU engine's shape (vLLM 0.32, one row, float32): a step verifying 3-5 draft tokens
    runs faster than one verifying none (one query token is a matrix-vector product, a few a
    blocked matrix product). Text without a repeated token gives prompt lookup no chain, so
    without filler the row never drafts; with it the session learns the clock and verifies 2-4
    filler tokens (the row's last token repeated), and the outputs stay the engine's."""
    text = np.random.default_rng(4).permutation(np.arange(10, 9000))  # no token repeats
    session = fastdec.DraftSession(fastdec.NgramDrafter("pld", max_n=3, num_pred=6), 6, pad=pad)

    def seconds(tokens: int) -> float:
        return {0: 0.052, 1: 0.060}.get(tokens, 0.045 + 0.002 * max(0, tokens - 4))

    length, sampled, now, late = 100, 1, 0.0, []
    for step in range(1500):  # widths are learnt from explored rows (5 %) first
        batch = text[None, :length].astype(np.int32)
        (draft,) = session.step(batch, [length], [sampled], ids=[0], now=now)
        if draft:
            assert draft == [int(text[length - 1])] * len(draft)  # filler: the last token
        accepted = 0
        while accepted < len(draft) and draft[accepted] == text[length + accepted]:
            accepted += 1
        sampled = accepted + 1
        length += sampled
        now += seconds(len(draft))
        if step >= 1200:
            late.append(len(draft))
    stats = session.length_stats()
    if pad:
        assert np.mean([2 <= d <= 4 for d in late]) > 0.9, late
        assert stats["width_seconds"][4][1] < stats["width_seconds"][1][1]
    else:
        assert np.mean([d == 0 for d in late]) > 0.9, late
