"""The torch tree operations of fastdec.generate against the Rust TokenTree (the reference)."""

from __future__ import annotations

import fastdec
import numpy as np
import pytest
import torch
from fastdec.generation.tree_ops import compact_kv, pad_trees, tree_mask, verify_greedy
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import trees

CPU = torch.device("cpu")


def build(cases: list) -> list[fastdec.TokenTree]:  # type: ignore[type-arg]
    return [fastdec.TokenTree(c.tokens, c.parents) for c in cases]


@settings(max_examples=60, deadline=None)
@given(cases=st.lists(trees(max_nodes=40, large=40, vocab="small"), min_size=1, max_size=6))
def test_draft_batch_padded_view_is_the_python_padding(cases: list) -> None:  # type: ignore[type-arg]
    """The padded view of the core batch type (padded in Rust) equals the padding of the same
    trees in Python, and its ragged arrays are the trees back to back."""
    ts = build(cases)
    db = fastdec.DraftBatch(ts)
    want, got = pad_trees(ts, CPU), pad_trees(db, CPU)
    for name in ("tokens", "parents", "depth"):
        assert getattr(got, name).dtype == torch.int64
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0)
    assert got.num_nodes == want.num_nodes == [t.num_nodes for t in ts]
    assert db.cu_num_nodes.tolist() == np.cumsum([0, *want.num_nodes]).tolist()
    assert db.tokens.tolist() == [int(x) for t in ts for x in t.tokens]
    assert [db[b].tokens.tolist() for b in range(len(db))] == [t.tokens.tolist() for t in ts]


def test_empty_draft_batch() -> None:
    tokens, parents, depth, num_nodes = fastdec.DraftBatch([]).padded()
    assert tokens.shape == parents.shape == depth.shape == (0, 0)
    assert num_nodes.shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    cases=st.lists(trees(max_nodes=40, large=40, vocab="small"), min_size=1, max_size=4),
    past=st.integers(0, 12),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_mask_and_positions_match_rust(
    cases: list, past: int, data: st.DataObject, dtype: torch.dtype
) -> None:  # type: ignore[type-arg]
    ts = build(cases)
    valid = [data.draw(st.integers(0, past)) for _ in ts]
    batch = pad_trees(ts, CPU)
    mask, pos = tree_mask(batch, torch.tensor(valid), past, dtype)
    n = batch.tokens.shape[1]
    assert mask.shape == (len(ts), 1, n, past + n)
    assert mask.dtype == dtype
    masked = torch.finfo(dtype).min
    for b, t in enumerate(ts):
        k = t.num_nodes
        # real rows: the prefix up to valid[b], then the tree's own ancestor mask
        want = np.full((k, past + n), masked, dtype=np.float64)
        want[:, : valid[b]] = 0
        want[:, past : past + k] = np.where(t.ancestor_mask(), 0, masked)
        np.testing.assert_array_equal(mask[b, 0, :k].double().numpy(), want)
        assert pos[b, :k].tolist() == t.position_ids(prefix_len=valid[b]).tolist()
        # pad rows see only themselves in the tree block (never a fully masked row)
        for i in range(k, n):
            row = mask[b, 0, i, past:]
            assert (row == 0).nonzero().flatten().tolist() == [i]


@settings(max_examples=60, deadline=None)
@given(
    cases=st.lists(trees(max_nodes=30, large=30, vocab="small"), min_size=1, max_size=3),
    past=st.integers(0, 20),
    window=st.integers(1, 12),
    data=st.data(),
)
def test_sliding_window_mask_against_positions(
    cases: list, past: int, window: int, data: st.DataObject
) -> None:  # type: ignore[type-arg]
    """The windowed mask, checked cell by cell against transformers' rule stated on positions: a
    query at position p sees a key at position q iff q is its prefix (or an ancestor node, or
    itself) and p - q < window; the first ``offset`` slots are gone from the columns."""
    ts = build(cases)
    valid = [data.draw(st.integers(0, past)) for _ in ts]
    offset = data.draw(st.integers(0, min(valid)))
    batch = pad_trees(ts, CPU)
    mask, pos = tree_mask(batch, torch.tensor(valid), past, torch.float32, window=window, offset=offset)
    n = batch.tokens.shape[1]
    assert mask.shape == (len(ts), 1, n, past - offset + n)
    for b, t in enumerate(ts):
        depth = [0] * t.num_nodes
        ancestors: list[set[int]] = [set() for _ in range(t.num_nodes)]
        for i in range(1, t.num_nodes):
            parent = int(t.parents[i])
            depth[i] = depth[parent] + 1
            ancestors[i] = ancestors[parent] | {parent}
        for i in range(n):
            real = i < t.num_nodes
            p = valid[b] + (depth[i] if real else 0)
            assert int(pos[b, i]) == p
            for c in range(past - offset + n):
                if c < past - offset:
                    q = offset + c
                    want = q < valid[b] and p - q < window
                else:
                    j = c - (past - offset)
                    if not real:
                        want = j == i
                    else:
                        want = (
                            j < t.num_nodes and (j == i or j in ancestors[i]) and depth[i] - depth[j] < window
                        )
                assert (mask[b, 0, i, c] == 0).item() == want, (b, i, c)


@settings(max_examples=80, deadline=None)
@given(
    cases=st.lists(trees(max_nodes=40, large=40, vocab="tiny"), min_size=1, max_size=4),
    seed=st.integers(0, 2**31),
)
def test_greedy_verify_matches_rust(cases: list, seed: int) -> None:  # type: ignore[type-arg]
    ts = build(cases)
    batch = pad_trees(ts, CPU)
    rng = np.random.default_rng(seed)
    argmax = rng.integers(0, 3, size=batch.tokens.shape)
    # make long paths likely: often the argmax is a child's token
    for b, t in enumerate(ts):
        for i in range(1, t.num_nodes):
            if rng.random() < 0.6:
                argmax[b, t.parents[i]] = t.tokens[i]
    paths, bonus = verify_greedy(batch, torch.from_numpy(argmax))
    for b, t in enumerate(ts):
        nodes, _, want_bonus = t.verify_greedy(argmax[b, : t.num_nodes].astype(np.int32))
        assert paths[b] == nodes.tolist()
        assert bonus[b] == want_bonus


@pytest.mark.parametrize("rows", [1, 3])
def test_compact_kv_moves_accepted_entries(rows: int) -> None:
    rng = np.random.default_rng(rows)
    past, n, h, d = 6, 5, 2, 3
    valid = [6, 4, 0][:rows]
    paths = [[0, 2, 4], [0], [0, 1]][:rows]
    keys = torch.from_numpy(rng.standard_normal((rows, h, past + n, d)))
    values = keys * 10
    before = keys.clone()
    out, new_len = compact_kv([(keys.clone(), values.clone())], past, valid, paths)
    assert new_len == max(v + len(p) for v, p in zip(valid, paths, strict=True))
    k, v = out[0]
    assert k.shape == (rows, h, new_len, d)
    for b in range(rows):
        # the row's prefix is untouched and the accepted nodes follow it, in path order
        torch.testing.assert_close(k[b, :, : valid[b]], before[b, :, : valid[b]])
        for j, node in enumerate(paths[b]):
            torch.testing.assert_close(k[b, :, valid[b] + j], before[b, :, past + node])
            torch.testing.assert_close(v[b, :, valid[b] + j], before[b, :, past + node] * 10)


def test_in_place_compaction_matches_the_gathering_one() -> None:
    from fastdec.generation.tree_ops import compact_kv_in_place

    rng = np.random.default_rng(3)
    past, n = 6, 5
    valid = [6, 4, 0]
    paths = [[0, 1, 2], [0, 3], [0, 1, 4]]
    keys = torch.from_numpy(rng.standard_normal((3, 2, 20, 3)))  # a preallocated buffer
    want, new_len = compact_kv(
        [(keys[:, :, : past + n].clone(), keys[:, :, : past + n].clone())], past, valid, paths
    )
    buf = keys.clone()
    assert compact_kv_in_place([(buf, buf.clone())], past, valid, paths) == new_len
    for b, (v, p) in enumerate(zip(valid, paths, strict=True)):
        torch.testing.assert_close(buf[b, :, : v + len(p)], want[0][0][b, :, : v + len(p)])
