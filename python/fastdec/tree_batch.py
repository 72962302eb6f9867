"""A step's draft trees as padded ``[B, N]`` torch tensors: the layout the torch reference
operations (:mod:`fastdec.generation.tree_ops`) and the CUDA kernels (:mod:`fastdec.kernels`)
both read.

It is a leaf module (it needs only torch and the native trees), so that the kernels and the
generation loop can share it without importing each other. Rows are the trees of a
:class:`fastdec.DraftBatch` (``propose_batch``'s ragged result) or any sequence of
:class:`fastdec.TokenTree`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fastdec._core import DraftBatch, TokenTree


@dataclass
class TreeBatch:
    """Padded trees of one step. Pad nodes have parent -1 and attend only to themselves."""

    tokens: torch.Tensor  # [B, N] int64
    parents: torch.Tensor  # [B, N] int64, -1 for roots and pads
    depth: torch.Tensor  # [B, N] int64
    num_nodes: list[int]  # real nodes per row
    _ancestors: torch.Tensor | None = field(default=None, repr=False)

    def ancestors(self) -> torch.Tensor:
        """:func:`ancestor_matrix` of the batch, computed once (the mask and the verification
        both need it)."""
        if self._ancestors is None:
            self._ancestors = ancestor_matrix(self.parents, int(self.depth.max()))
        return self._ancestors


def pad_trees(trees: Sequence[TokenTree] | DraftBatch, device: torch.device) -> TreeBatch:
    """Stacks ragged trees into ``[B, max N]`` tensors, padded in Rust (``DraftBatch.padded``, the
    core's one batch-of-trees type), then one host-to-device copy each."""
    batch = trees if isinstance(trees, DraftBatch) else DraftBatch(list(trees))
    tokens, parents, depth, num_nodes = batch.padded()
    return TreeBatch(
        tokens=torch.from_numpy(tokens).to(device),
        parents=torch.from_numpy(parents).to(device),
        depth=torch.from_numpy(depth).to(device),
        num_nodes=num_nodes.tolist(),
    )


def ancestor_matrix(parents: torch.Tensor, max_depth: int) -> torch.Tensor:
    """``[B, N, N]`` bool: ``anc[b, i, j]`` iff node ``j`` is ``i`` or one of its ancestors."""
    b, n = parents.shape
    anc = torch.eye(n, dtype=torch.bool, device=parents.device).expand(b, n, n).clone()
    cur = torch.arange(n, device=parents.device).expand(b, n)
    cols = torch.arange(n, device=parents.device)
    for _ in range(max_depth):
        cur = torch.where(cur >= 0, parents.gather(1, cur.clamp(min=0)), cur)
        anc |= (cur[..., None] == cols) & (cur[..., None] >= 0)
    return anc
