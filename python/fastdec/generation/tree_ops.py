"""torch implementations of the per-step tree operations: batch padding, the 4D additive mask
and position ids, greedy verification and KV-cache compaction.

They are the reference and the device-agnostic fallback; the CUDA kernels replace them on GPU.
Shapes: ``B`` rows, ``N`` tree nodes per row after padding (node 0 = the root, the last known
token), ``P`` cache slots before the step, ``L[b] <= P`` valid cache slots of row ``b`` (slots
``L[b]..P`` hold stale entries of a row that accepted fewer tokens than others; they are masked).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fastdec.tree_batch import TreeBatch, ancestor_matrix, pad_trees

__all__ = [
    "TreeBatch",
    "ancestor_matrix",
    "compact_kv",
    "compact_kv_in_place",
    "pad_trees",
    "tree_mask",
    "verify_greedy",
]


def tree_mask(
    batch: TreeBatch,
    valid: torch.Tensor,
    past: int,
    dtype: torch.dtype,
    kv_len: int | None = None,
    *,
    window: int | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive attention mask ``[B, 1, N, P - offset + N]`` (0 = attend, dtype min = masked)
    and the position ids ``[B, N] = L[b] + depth``. ``valid`` is ``L`` as a ``[B]`` int64 tensor. A
    static cache hands attention all its ``kv_len`` slots: the columns past the tree block are
    masked.

    ``window``: a sliding-window layer's span (docs/design.md#sliding-window): a query at position
    ``p`` sees keys at positions ``q`` with ``p - q < window`` (transformers' rule), tree nodes
    included, so a node at depth ``d`` sees exactly what its own position's window holds. ``offset``:
    how many leading cache slots such a layer has dropped (column ``c`` holds slot ``offset + c``).

    A float mask in the model's dtype is the one form that eager and sdpa attention both read
    correctly (docs/design.md#mask-form); every query row keeps at least its own column, so no row is fully
    masked (fully masked rows give NaN in sdpa, which would then poison the cache).
    """
    b, n = batch.tokens.shape
    device = batch.tokens.device
    anc = batch.ancestors()
    depth = batch.depth
    prefix = past - offset
    cols = max(kv_len or 0, prefix + n)
    allowed = torch.zeros((b, n, cols), dtype=torch.bool, device=device)
    if prefix:
        slots = torch.arange(offset, past, device=device)
        seen = (slots < valid[:, None])[:, None, :].expand(b, n, prefix)
        if window is not None:
            query = valid[:, None, None] + depth[:, :, None]
            seen = seen & (query - slots < window)
        allowed[:, :, :prefix] = seen
    if window is not None:
        anc = anc & (depth[:, :, None] - depth[:, None, :] < window)
    allowed[:, :, prefix : prefix + n] = anc
    mask = torch.zeros((b, 1, n, cols), dtype=dtype, device=device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return mask, valid[:, None] + depth


def verify_greedy(batch: TreeBatch, argmax: torch.Tensor) -> tuple[list[list[int]], list[int]]:
    """Greedy verification of every row: the accepted path (node ids, root first) and the bonus
    token. Node ``c`` is on the path iff every node from the root down to it carries the
    target's argmax at its parent; siblings are distinct, so at most one node per depth passes.
    """
    tokens, parents = batch.tokens, batch.parents
    n = tokens.shape[1]
    if n == 1:  # roots only (plain decoding): nothing to walk
        return [[0] for _ in batch.num_nodes], argmax[:, 0].tolist()
    real = (
        torch.arange(n, device=tokens.device)[None, :]
        < torch.tensor(batch.num_nodes, device=tokens.device)[:, None]
    )
    match = (tokens == argmax.gather(1, parents.clamp(min=0))) & (parents >= 0) & real
    match[:, 0] = True
    anc = batch.ancestors()
    ok = ~(anc & ~match[:, None, :]).any(-1) & real
    depth = torch.where(ok, batch.depth, -1)
    last = depth.argmax(1)
    bonus = argmax.gather(1, last[:, None])[:, 0]
    ok_host, bonus_host = ok.cpu().numpy(), bonus.cpu().tolist()
    paths = [np.flatnonzero(row).tolist() for row in ok_host]
    return paths, bonus_host


def compact_kv_in_place(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    past: int,
    valid: Sequence[int],
    paths: Sequence[Sequence[int]],
) -> int:
    """:func:`compact_kv` inside preallocated buffers (a static cache): each row's accepted
    entries move to ``valid[b]..`` in place; returns the new filled length. Advanced indexing
    copies the sources before the write, so overlapping moves are safe."""
    device = layers[0][0].device
    moves = [
        (b, v, torch.tensor([past + i for i in p], device=device))
        for b, (v, p) in enumerate(zip(valid, paths, strict=True))
        if list(p) != list(range(v - past, v - past + len(p)))  # already in place
    ]
    for k, val in layers:
        for b, v, src in moves:
            k[b, :, v : v + len(src)] = k[b, :, src]
            val[b, :, v : v + len(src)] = val[b, :, src]
    return max(v + len(p) for v, p in zip(valid, paths, strict=True))


def compact_kv(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    past: int,
    valid: Sequence[int],
    paths: Sequence[Sequence[int]],
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Moves each row's accepted nodes' K/V (at slots ``past + node``) to slots
    ``valid[b] .. valid[b] + len(path) - 1`` and drops the rest of the tree block.

    ``layers`` holds ``(keys, values)`` of shape ``[B, H, past + N, D]`` per layer. Returns the new
    tensors, ``[B, H, new_len, D]`` with ``new_len = max_b(valid[b] + len(path_b))``. The gather reads
    every source before anything is written, so the in-place overlap of sources and destinations
    (docs/design.md#compaction) cannot corrupt entries.
    """
    new_valid = [v + len(p) for v, p in zip(valid, paths, strict=True)]
    new_len = max(new_valid)
    device = layers[0][0].device
    if len(valid) == 1 and valid[0] == past and list(paths[0]) == list(range(len(paths[0]))):
        # The accepted path is the block's first nodes in order (always so for plain decoding or
        # a chain): the entries are already in place, only the rest of the block goes.
        if layers[0][0].shape[2] == new_len:
            return list(layers), new_len
        return [(k[:, :, :new_len], v[:, :, :new_len]) for k, v in layers], new_len
    if len(valid) == 1:
        # One row: only the accepted entries move; the prefix stays where it is.
        src = torch.tensor([past + i for i in paths[0]], device=device)
        v = valid[0]
        out = []
        for k, val in layers:
            k[:, :, v : v + len(src)] = k.index_select(2, src)
            val[:, :, v : v + len(src)] = val.index_select(2, src)
            out.append((k[:, :, :new_len], val[:, :, :new_len]))
        return out, new_len
    index = np.tile(np.arange(new_len, dtype=np.int64), (len(valid), 1))
    for b, (v, p) in enumerate(zip(valid, paths, strict=True)):
        index[b, v : v + len(p)] = [past + i for i in p]
    idx = torch.from_numpy(index).to(device)
    out = []
    for k, val in layers:
        g = idx[:, None, :, None].expand(k.shape[0], k.shape[1], new_len, k.shape[3])
        out.append((k.gather(2, g), val.gather(2, g)))
    return out, new_len
