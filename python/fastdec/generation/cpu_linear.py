"""Faster float32 ``nn.Linear`` on CPU for the 1..64 rows of a decoding step.

A decoding step multiplies every weight matrix by 1 row (plain decoding) or a few (a tree). On
CPU, ``F.linear`` runs a single row as MKL's GEMV and a few as GEMM with a transposed weight; both
are poor at this shape. ``weight @ x.T`` (GEMM with the weight untransposed and the rows as a
transposed operand) streams the weight far faster, and a lone row gains the same by being paired
with a copy of itself (GEMM needs two columns; MKL sends one to GEMV). Measured on the 2-core
EPYC VM this project benchmarks on (torch 2.15, MKL), the 210 matrices of SmolLM2-135M's layers,
out of cache, per forward::

    rows                    1        2        4
    F.linear, 1 thread     35.6 ms  50.9 ms  45.6 ms
    weight @ x.T           23.8 ms  22.8 ms  37.6 ms   (1 row: paired with a copy)
    F.linear, 2 threads    35.4 ms  52.6 ms  45.3 ms
    weight @ x.T           15.9 ms  14.4 ms  20.3 ms

so a plain step runs about 1.5x faster, and a 4-node tree costs about what one token costs. In
bfloat16 the opposite holds (``F.linear`` 14.6 ms for a row at 2 threads, the GEMM path 29.4 ms):
only float32 weights take this path.

``small_row_linears(model)`` routes the model's float32 CPU ``nn.Linear`` modules through it for
1..64 rows while it is active and restores them after (larger inputs keep ``F.linear``). The
result equals ``F.linear`` up to float rounding (a different summation order: a greedy argmax can
flip only where two logits tie to within that rounding). Set ``FASTDEC_CPU_LINEAR=0`` to turn it
off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

MAX_ROWS = 64


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 1 <= rows <= MAX_ROWS or x.dtype != module.weight.dtype:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    # The rows must be contiguous: a strided operand (attention's output after its head transpose)
    # makes torch.mm copy it into the layout that is slow here.
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    if rows == 1:
        # a real copy: an expanded (stride-0) operand makes torch.mm copy it into the slow layout
        y = torch.mm(module.weight, torch.cat((flat, flat)).t())[:, :1].t()
    else:
        y = torch.mm(module.weight, flat.t()).t()
    if module.bias is not None:
        y = y + module.bias
    return y.reshape(*x.shape[:-1], module.weight.shape[0])


@contextmanager
def small_row_linears(model: Any) -> Iterator[None]:
    """While active, the float32 CPU ``nn.Linear`` modules of ``model`` use ``weight @ x.T`` for
    1..64 rows."""
    if os.environ.get("FASTDEC_CPU_LINEAR", "1") == "0":
        yield
        return
    patched = []
    for module in model.modules():
        if (
            type(module) is torch.nn.Linear
            and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.float32
            and "forward" not in module.__dict__
        ):
            module.forward = _forward.__get__(module)  # type: ignore[method-assign]
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
