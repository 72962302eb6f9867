"""Faster ``nn.Linear`` on CPU for the few rows of a tree forward.

A tree step multiplies every weight matrix by 2..64 rows. On CPU, ``F.linear`` runs that as
MKL's GEMM with a transposed weight, which is poor at so few rows: measured on a 2-core EPYC
VM with 100 distinct 1536 x 576 fp32 matrices (out of cache, like a model's layers), 4 rows
took 54 ms against 34 ms for 1 row, while ``weight @ x.T`` took 28 ms. With the latter a tree
of 4 nodes costs about what one token costs, which is what makes speculation pay on a CPU.

``small_row_linears(model)`` routes the model's ``nn.Linear`` modules through ``weight @ x.T``
for 2..64 rows while it is active and restores them after (1 row and larger inputs keep
``F.linear``). The result equals ``F.linear`` up to float rounding (a different summation
order). Set ``FASTDEC_CPU_LINEAR=0`` to turn it off.
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
    if not 1 < rows <= MAX_ROWS or x.dtype != module.weight.dtype:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    y = torch.mm(module.weight, x.reshape(rows, x.shape[-1]).t()).t()
    if module.bias is not None:
        y = y + module.bias
    return y.reshape(*x.shape[:-1], module.weight.shape[0])


@contextmanager
def small_row_linears(model: Any) -> Iterator[None]:
    """While active, the CPU ``nn.Linear`` modules of ``model`` use ``weight @ x.T`` for 2..64 rows."""
    if os.environ.get("FASTDEC_CPU_LINEAR", "1") == "0":
        yield
        return
    patched = []
    for module in model.modules():
        if (
            type(module) is torch.nn.Linear
            and module.weight.device.type == "cpu"
            and "forward" not in module.__dict__
        ):
            module.forward = _forward.__get__(module)  # type: ignore[method-assign]
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
