"""The per-step tree operations of :func:`fastdec.generate`, from the implementation that suits
the model's device: the CUDA kernels (:mod:`fastdec.kernels`) on a GPU where CuPy can run them,
the torch references (:mod:`.tree_ops`, :mod:`fastdec.sampling`; for stochastic verification of
CPU tensors the Rust reference itself) otherwise or when ``FASTDEC_KERNELS=torch``. All take the
same decisions (the stochastic verifiers from the same coins), so the output does not depend on
the choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fastdec import kernels
from fastdec._core import TokenTree, verify_stochastic_batch
from fastdec.tree_batch import TreeBatch

from . import tree_ops

Layers = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StepOps:
    """Mask, verification and KV compaction for one step; ``name`` is ``"cuda"`` or ``"torch"``."""

    name: str

    def tree_mask(
        self,
        batch: TreeBatch,
        valid: torch.Tensor,
        past: int,
        dtype: torch.dtype,
        kv_len: int | None,
        window: int | None = None,
        offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.name == "cuda" and dtype in _launch().MASKED_BITS:
            launch = _launch()
            return launch.tree_mask(batch, valid, past, dtype, kv_len, window=window, offset=offset)  # type: ignore[no-any-return]
        return tree_ops.tree_mask(batch, valid, past, dtype, kv_len, window=window, offset=offset)

    def verify_greedy(self, batch: TreeBatch, argmax: torch.Tensor) -> tuple[list[list[int]], list[int]]:
        if self.name == "cuda":
            return _launch().verify_greedy(batch, argmax)  # type: ignore[no-any-return]
        return tree_ops.verify_greedy(batch, argmax)

    def verify_stochastic(
        self, batch: TreeBatch, trees: Sequence[TokenTree], probs: torch.Tensor, coins: torch.Tensor
    ) -> tuple[list[list[int]], list[int]]:
        from fastdec import sampling

        launch = _launch() if self.name == "cuda" else None
        if launch is not None and launch.stochastic_shared_mem(probs.shape[-1]) <= launch.MAX_SHARED:
            return launch.verify_stochastic(batch, probs, coins)  # type: ignore[no-any-return]
        if probs.device.type == "cpu":
            # The Rust reference reads the CPU rows in place: 29 us against 364 us for the torch
            # path (16 nodes, vocabulary 49152, float32; batch 4: 83 against 1199 us).
            out = verify_stochastic_batch(list(trees), sampling.host_probs(probs), coins.numpy())
        else:
            out = sampling.verify_stochastic_batch([(t.tokens, t.parents) for t in trees], probs, coins)
        return [p for p, _ in out], [b for _, b in out]

    def compact_kv(
        self, layers: Layers, past: int, valid: Sequence[int], paths: Sequence[Sequence[int]]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        if self.name == "cuda" and _uniform(layers):
            return _launch().compact_kv(layers, past, valid, paths)  # type: ignore[no-any-return]
        return tree_ops.compact_kv(layers, past, valid, paths)

    def compact_kv_in_place(
        self, layers: Layers, past: int, valid: Sequence[int], paths: Sequence[Sequence[int]]
    ) -> int:
        if self.name == "cuda" and _uniform(layers):
            return _launch().compact_kv_in_place(layers, past, valid, paths)  # type: ignore[no-any-return]
        return tree_ops.compact_kv_in_place(layers, past, valid, paths)


def _launch() -> Any:
    from fastdec.kernels import launch

    return launch


def _uniform(layers: Layers) -> bool:
    """Whether one launch can compact these layers: one shape and dtype, contiguous rows (a model
    whose layers differ, e.g. in head dim, goes through the torch reference)."""
    k0 = layers[0][0]
    return k0.ndim == 4 and all(
        t.shape == k0.shape and t.dtype == k0.dtype and t.stride(-1) == 1 for pair in layers for t in pair
    )


def step_ops(device: torch.device) -> StepOps:
    """The implementation for tensors on ``device`` (see :func:`fastdec.kernels.backend`)."""
    return StepOps(kernels.backend(device.type))
