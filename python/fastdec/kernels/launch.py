"""Launchers for the CUDA kernels: torch tensors in, torch tensors out.

Each operation *plans* its launch (grid, block, shared memory and the argument list, with device
pointers as ints and scalars as numpy scalars of the kernel's C types: CuPy passes a Python int
as 8 bytes, so an ``int`` parameter needs ``np.int32``, docs/design.md#cuda-args) and hands the plan to an
*executor*. :func:`run_cupy` is the real one: a CuPy ``RawModule`` per source file and device,
compiled once, launched on torch's current stream so no host round trip or cross-stream sync is
needed. The planners never touch CUDA themselves, so the tests run the same plans through a CPU
emulation of the kernel sources (``tests/cuda_emu``), checking the argument lists against the
kernels' signatures on a machine without a GPU.

The torch implementations in :mod:`fastdec.generation.tree_ops` and :mod:`fastdec.sampling` are
the references these must equal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fastdec._optional import require
from fastdec.kernels.sources import KERNELS, OPTIONS, UNIT_TYPES, source
from fastdec.sampling import CDF_CHUNK  # = CHUNK in verify.cu
from fastdec.tree_batch import TreeBatch

# The minimum of each mask dtype as raw bits: transformers fills masked positions with
# torch.finfo(dtype).min, and the kernel writes bits so it needs no fp16/bf16 headers.
MASKED_BITS: dict[torch.dtype, tuple[int, int]] = {
    torch.float32: (4, 0xFF7FFFFF),
    torch.float16: (2, 0xFBFF),
    torch.bfloat16: (2, 0xFF7F),
}
MAX_SHARED = 48 * 1024  # dynamic shared memory available without opting in


@dataclass(frozen=True)
class Launch:
    """One kernel launch, independent of how it is executed."""

    file: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple[Any, ...]
    keep: tuple[torch.Tensor, ...] = field(default=(), repr=False)  # alive until enqueued


Executor = Callable[[Launch, torch.device], None]
"""Runs a :class:`Launch`; ``None`` in the operations below means :func:`run_cupy` (looked up at
call time, so a test can stand in an emulator)."""


# ------------------------------------------------------------------------------------------------
# the CuPy executor

_lock = threading.Lock()
_modules: dict[tuple[str, int], Any] = {}
_streams: dict[tuple[int, int], Any] = {}


def _module(file: str, device_index: int) -> Any:
    """The compiled ``RawModule`` of one source file on one device (compiled once, cached)."""
    key = (file, device_index)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            cp = require("cupy")
            templates = tuple(k for k in KERNELS[file] if "<" in k)
            with cp.cuda.Device(device_index):
                mod = cp.RawModule(code=source(file), options=OPTIONS, name_expressions=templates)
            _modules[key] = mod
        return mod


def _stream(device: torch.device) -> Any:
    """CuPy's wrapper of torch's current stream on ``device`` (cached per stream)."""
    ptr = torch.cuda.current_stream(device).cuda_stream
    key = (device.index or 0, ptr)
    with _lock:
        stream = _streams.get(key)
        if stream is None:
            cp = require("cupy")
            stream = cp.cuda.ExternalStream(ptr, device.index or 0)
            _streams[key] = stream
        return stream


def run_cupy(launch: Launch, device: torch.device) -> None:
    """Launches on torch's current stream of ``device``."""
    cp = require("cupy")
    index = device.index if device.index is not None else torch.cuda.current_device()
    fn = _module(launch.file, index).get_function(launch.kernel)
    with cp.cuda.Device(index), _stream(torch.device("cuda", index)):
        fn(launch.grid, launch.block, launch.args, shared_mem=launch.shared_mem)


# ------------------------------------------------------------------------------------------------
# helpers


def _i32(x: int) -> np.int32:
    return np.int32(x)


def _threads(n: int, cap: int = 256) -> int:
    """A block size: ``n`` rounded up to a warp, at most ``cap``."""
    return max(32, min(cap, (n + 31) // 32 * 32))


def _contig(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).contiguous()


def _num_nodes(batch: TreeBatch, device: torch.device) -> torch.Tensor:
    return torch.tensor(batch.num_nodes, dtype=torch.int64).to(device)


def _paths(buf: torch.Tensor, rows: int, n: int) -> list[list[int]]:
    """Host paths from an ``[rows * n + rows]`` int32 buffer: accept_index, then accept_len."""
    host = buf.cpu().numpy()
    index, lengths = host[: rows * n].reshape(rows, n), host[rows * n :]
    return [index[b, : lengths[b]].tolist() for b in range(rows)]


# ------------------------------------------------------------------------------------------------
# tree mask


def tree_mask(
    batch: TreeBatch,
    valid: torch.Tensor,
    past: int,
    dtype: torch.dtype,
    kv_len: int | None = None,
    *,
    window: int | None = None,
    offset: int = 0,
    execute: Executor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fastdec.generation.tree_ops.tree_mask` in one launch: the additive mask
    ``[B, 1, N, max(kv_len, P - offset + N)]`` in ``dtype`` and the position ids ``[B, N]``
    (``window``, ``offset``: a sliding-window layer's, as there)."""
    if dtype not in MASKED_BITS:
        raise ValueError(f"unsupported mask dtype {dtype}: expected one of {sorted(map(str, MASKED_BITS))}")
    b, n = batch.parents.shape
    device = batch.parents.device
    cols = max(kv_len or 0, past - offset + n)
    parents = _contig(batch.parents, torch.int64)
    valid64 = _contig(valid, torch.int64)
    mask = torch.empty((b, 1, n, cols), dtype=dtype, device=device)
    positions = torch.empty((b, n), dtype=torch.int64, device=device)
    elem, bits = MASKED_BITS[dtype]
    words = (n + 31) // 32
    (execute or run_cupy)(
        Launch(
            "tree_mask.cu",
            "tree_mask",
            (n, b, 1),
            (_threads(cols), 1, 1),
            words * 8,
            (
                parents.data_ptr(),
                valid64.data_ptr(),
                _i32(n),
                _i32(past),
                _i32(offset),
                _i32(window or 0),
                _i32(cols),
                _i32(elem),
                np.uint32(bits),
                mask.data_ptr(),
                0,
                positions.data_ptr(),
            ),
            (parents, valid64, mask, positions),
        ),
        device,
    )
    return mask, positions


def packed_tree_mask(batch: TreeBatch, *, execute: Executor | None = None) -> torch.Tensor:
    """The tree block of the mask as bits for custom attention kernels: ``[B, N, ceil(N / 32)]``
    int32 words (read them as uint32), bit ``j % 32`` of word ``j // 32`` of row ``i`` set iff
    node ``j`` is ``i`` or one of its ancestors. The prefix columns are implicit."""
    b, n = batch.parents.shape
    device = batch.parents.device
    parents = _contig(batch.parents, torch.int64)
    words = (n + 31) // 32
    packed = torch.empty((b, n, words), dtype=torch.int32, device=device)
    zero = torch.zeros(b, dtype=torch.int64, device=device)
    (execute or run_cupy)(
        Launch(
            "tree_mask.cu",
            "tree_mask",
            (n, b, 1),
            (32, 1, 1),
            words * 8,
            (
                parents.data_ptr(),
                zero.data_ptr(),
                _i32(n),
                _i32(0),
                _i32(0),
                _i32(0),
                _i32(n),
                _i32(4),
                np.uint32(0),
                0,
                packed.data_ptr(),
                0,
            ),
            (parents, zero, packed),
        ),
        device,
    )
    return packed


# ------------------------------------------------------------------------------------------------
# verification


def verify_greedy(
    batch: TreeBatch, argmax: torch.Tensor, *, execute: Executor | None = None
) -> tuple[list[list[int]], list[int]]:
    """:func:`fastdec.generation.tree_ops.verify_greedy` in one launch and two small copies to
    the host: the accepted paths (node ids, root first) and the bonus tokens."""
    b, n = batch.tokens.shape
    device = batch.tokens.device
    tokens = _contig(batch.tokens, torch.int64)
    parents = _contig(batch.parents, torch.int64)
    target = _contig(argmax, torch.int64)
    nodes = _num_nodes(batch, device)
    buf = torch.empty(b * n + b, dtype=torch.int32, device=device)
    bonus = torch.empty(b, dtype=torch.int64, device=device)
    (execute or run_cupy)(
        Launch(
            "verify.cu",
            "verify_greedy",
            (b, 1, 1),
            (_threads(n), 1, 1),
            0,
            (
                tokens.data_ptr(),
                parents.data_ptr(),
                nodes.data_ptr(),
                target.data_ptr(),
                _i32(n),
                buf.data_ptr(),
                buf.data_ptr() + 4 * b * n,
                bonus.data_ptr(),
            ),
            (tokens, parents, target, nodes, buf, bonus),
        ),
        device,
    )
    return _paths(buf, b, n), bonus.cpu().tolist()


def stochastic_shared_mem(vocab: int) -> int:
    """Bytes of shared memory :func:`verify_stochastic` needs for a vocabulary."""
    return 8 * ((vocab + CDF_CHUNK - 1) // CDF_CHUNK) + 4 * ((vocab + 31) // 32)


def verify_stochastic(
    batch: TreeBatch,
    probs: torch.Tensor,
    coins: torch.Tensor,
    *,
    execute: Executor | None = None,
) -> tuple[list[list[int]], list[int]]:
    """:func:`fastdec.sampling.verify_stochastic_batch` in one launch: the same decisions from the
    same coins (``[B, N, 2]`` float64 uniforms), over float32 probabilities ``[B, N, V]``.

    Raises:
        ValueError: a stop row has no mass, or a probability read is negative or not finite;
            the vocabulary needs more shared memory than a block has (over ~390k tokens).
    """
    b, n = batch.tokens.shape
    if probs.ndim != 3 or tuple(probs.shape[:2]) != (b, n):
        raise ValueError(f"probs must have shape ({b}, {n}, vocab_size), got {tuple(probs.shape)}")
    if tuple(coins.shape) != (b, n, 2):
        raise ValueError(f"coins must have shape ({b}, {n}, 2), got {tuple(coins.shape)}")
    vocab = probs.shape[2]
    shared = stochastic_shared_mem(vocab)
    if shared > MAX_SHARED:
        raise ValueError(f"vocab_size={vocab} needs {shared} bytes of shared memory (> {MAX_SHARED})")
    device = batch.tokens.device
    tokens = _contig(batch.tokens, torch.int64)
    parents = _contig(batch.parents, torch.int64)
    p32 = _contig(probs, torch.float32)
    c64 = _contig(coins, torch.float64).to(device)
    nodes = _num_nodes(batch, device)
    buf = torch.empty(b * n + b, dtype=torch.int32, device=device)
    bonus = torch.empty(b, dtype=torch.int64, device=device)
    status = torch.empty(b, dtype=torch.int32, device=device)
    (execute or run_cupy)(
        Launch(
            "verify.cu",
            "verify_stochastic",
            (b, 1, 1),
            (256, 1, 1),
            shared,
            (
                tokens.data_ptr(),
                parents.data_ptr(),
                nodes.data_ptr(),
                p32.data_ptr(),
                c64.data_ptr(),
                _i32(n),
                _i32(vocab),
                buf.data_ptr(),
                buf.data_ptr() + 4 * b * n,
                bonus.data_ptr(),
                status.data_ptr(),
            ),
            (tokens, parents, p32, c64, nodes, buf, bonus, status),
        ),
        device,
    )
    for row, code in enumerate(status.cpu().tolist()):
        if code == 1:
            raise ValueError(f"probs row of tree {row}'s stop node has no mass")
        if code == 2:
            raise ValueError("probs must be finite and non-negative")
    return _paths(buf, b, n), bonus.cpu().tolist()


# ------------------------------------------------------------------------------------------------
# KV compaction


def _unit(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The widest copy unit that divides every row's bytes, stride and address."""
    k0 = layers[0][0]
    elem = k0.element_size()
    sizes = [k0.shape[-1] * elem]
    for pair in layers:
        for t in pair:
            sizes.append(t.data_ptr())
            sizes.extend(s * elem for s in t.stride()[:3])
    return next(u for u in UNIT_TYPES if all(x % u == 0 for x in sizes))


def compact_kv_in_place(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    past: int,
    valid: Sequence[int],
    paths: Sequence[Sequence[int]],
    *,
    execute: Executor | None = None,
) -> int:
    """:func:`fastdec.generation.tree_ops.compact_kv_in_place` for every layer's keys and values
    in one launch (``[B, H, S, D]`` tensors of one shape and dtype, rows contiguous, any other
    strides). Returns the new filled length ``max_b(valid[b] + len(path_b))``."""
    new_len = max(v + len(p) for v, p in zip(valid, paths, strict=True))
    if all(v == past and list(p) == list(range(len(p))) for v, p in zip(valid, paths, strict=True)):
        return new_len  # everything is in place already (plain decoding, chains)
    k0 = layers[0][0]
    device = k0.device
    shape, dtype = tuple(k0.shape), k0.dtype
    for i, pair in enumerate(layers):
        for t in pair:
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != device or t.stride(-1) != 1:
                raise ValueError(
                    f"layer {i}: every K/V tensor must be {shape} {dtype} on {device} with contiguous "
                    f"rows, got {tuple(t.shape)} {t.dtype} on {t.device} strides {t.stride()}"
                )
    if len(shape) != 4 or shape[0] != len(valid):
        raise ValueError(f"K/V tensors must be [B={len(valid)}, H, S, D], got {shape}")
    rows, heads, _, dim = shape
    unit = _unit(layers)
    tensors = [t for pair in layers for t in pair]
    entries = len(tensors)
    elem = k0.element_size()
    table = torch.tensor(
        [t.data_ptr() for t in tensors] + [s * elem for t in tensors for s in t.stride()[:3]],
        dtype=torch.int64,
    ).to(device)
    m = max(len(p) for p in paths)
    index = np.full(rows * m + rows, -1, dtype=np.int32)
    for b, (v, p) in enumerate(zip(valid, paths, strict=True)):
        index[b * m : b * m + len(p)] = [past + i for i in p]
        index[rows * m + b] = v
    idx = torch.from_numpy(index).to(device)
    units = dim * elem // unit
    total = entries * rows * heads * units
    block = 256
    (execute or run_cupy)(
        Launch(
            "kv_compact.cu",
            f"kv_compact<{UNIT_TYPES[unit]}>",
            ((total + block - 1) // block, 1, 1),
            (block, 1, 1),
            0,
            (
                table.data_ptr(),
                table.data_ptr() + 8 * entries,
                _i32(entries),
                _i32(rows),
                _i32(heads),
                _i32(units),
                idx.data_ptr(),
                idx.data_ptr() + 4 * rows * m,
                _i32(m),
            ),
            (table, idx, *tensors),
        ),
        device,
    )
    return new_len


def compact_kv(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    past: int,
    valid: Sequence[int],
    paths: Sequence[Sequence[int]],
    *,
    execute: Executor | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """:func:`fastdec.generation.tree_ops.compact_kv`: compacts in place in one launch and
    returns views of the first ``new_len`` slots (the tree block's rest is dropped)."""
    new_len = compact_kv_in_place(layers, past, valid, paths, execute=execute)
    return [(k[:, :, :new_len], v[:, :, :new_len]) for k, v in layers], new_len
