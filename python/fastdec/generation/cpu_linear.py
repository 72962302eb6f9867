"""Ways to run a CPU ``nn.Linear`` on the 1..64 rows of a decoding step, and the context that
routes a model's linears through the fastest one measured on this machine.

A decoding step multiplies every weight matrix by 1 row (plain decoding) or a few (a tree).
Which BLAS call does that fastest depends on the CPU, its libraries, the dtype, the thread count
and the row count, by up to 2x either way. Two machines of this project's kind, both torch 2.15
(MKL, oneDNN), per forward over SmolLM2-135M's 211 matrices, float32, 2 threads:

    rows                              1        2        4        8
    AMD EPYC     F.linear          35.4 ms  52.6 ms  45.3 ms
                 weight @ x.T      15.9     14.4     20.3          (1 row: paired with a copy)
    Intel Xeon   F.linear          24.2     23.0     36.6     49.2
    (AMX, AVX512 weight @ x.T      22.6     54.4     50.2     53.2
     -BF16)      paired row        56.9
                 oneDNN packed     28.7     30.1     30.1     36.6

so no choice is right everywhere: :mod:`.linear_choice` times the candidates on the model's own
weights at first use and :func:`.linear_choice.cpu_linears` installs the winner per weight shape
and row count.
The paths (each equals ``F.linear`` up to float rounding: another summation order):

* ``linear``: ``F.linear`` itself (MKL's GEMV for a row, GEMM with a transposed weight for more);
* ``gemm``: ``weight @ x.T``, GEMM with the weight untransposed and the rows as a transposed
  operand;
* ``paired``: one row only, paired with a copy of itself so that the GEMM has two columns (MKL
  sends a one-column GEMM to GEMV, slow on some CPUs);
* ``rows``: fastdec's own kernel (``fastdec._core._linear_rows``, float32 only): the step is
  bound by reading the weights, so it streams each weight row once against up to 8 input rows
  held in registers (AVX2 + FMA where the CPU has them); on the AVX2 EPYC above, 1 thread, per
  forward: 36.0 / 40.7 / 41.0 / 38.3 ms for 1 / 2 / 3 / 4 rows against F.linear's 41.7 / 68.9 /
  99.6 / 84.5 and ``weight @ x.T``'s 41.5 / 53.5 / 68.3 / 50.1, so a 4-node tree costs about
  what one token does. It runs on torch's thread count (a rayon pool of that many workers);
* ``packed``: oneDNN's linear on a weight reordered once into its blocked layout
  (``torch.ops.mkldnn``; AMX / AVX512-BF16 kernels where the CPU has them). Only on request
  (``FASTDEC_CPU_LINEAR=packed``): the copies cost as much memory as the weights (capped by
  ``FASTDEC_CPU_PACK_BYTES``, default a quarter of physical memory; they are kept per model,
  under weak keys, for the process) and about a second to make, and a fresh copy runs its
  first calls several times slower than its steady state, so a short calibration cannot judge
  it. In steady state (table above) it is the fastest float32 path for 4-16 rows on the Xeon.

``FASTDEC_CPU_LINEAR`` forces one path for every row count (``linear`` or ``0``: plain
``F.linear``; ``gemm`` or ``1``: ``weight @ x.T`` with the lone row paired, the rule before 0.2;
``packed``; ``rows``, float32 only); ``auto`` (the default) measures.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastdec._core import _linear_rows

#: inputs with more rows than this (a prefill) always keep ``F.linear``
MAX_ROWS = 64
#: how ``FASTDEC_CPU_LINEAR`` is read: the forced path of each value (``None``: measure)
OVERRIDES: dict[str, str | None] = {
    "auto": None,
    "0": "linear",
    "off": "linear",
    "linear": "linear",
    "1": "gemm",
    "gemm": "gemm",
    "packed": "packed",
    "rows": "rows",
}
PACK_BYTES_ENV = "FASTDEC_CPU_PACK_BYTES"


@dataclass(frozen=True)
class LinearPath:
    """One way to compute ``x @ weight.T + bias`` for the rows ``x`` ([R, in], contiguous).

    ``compute(operand, bias, x)`` takes the weight in the form ``pack(weight)`` makes of it (the
    weight itself where ``pack`` is None)."""

    name: str
    label: str  # how notes name it
    compute: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
    one_row_only: bool = False
    pack: Callable[[torch.Tensor], torch.Tensor] | None = None

    def serves(self, rows: int) -> bool:
        return rows == 1 or not self.one_row_only


def _linear(w: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, w, bias)


def _gemm(w: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    # Row-major out, as F.linear returns it: the product is [out, rows] and its transpose is a
    # strided view, which the next op would inherit (``silu(gate) * up`` keeps the strides) and
    # hand to a linear that reads it far slower (MLP down projection, 2 rows, F.linear: 17.6 ms
    # against 11.0 per forward on an AVX2 EPYC). The copy is rows x out values.
    y = torch.mm(w, x.t()).t().contiguous()
    return y + bias if bias is not None else y


def _paired(w: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] != 1:
        return _gemm(w, bias, x)
    # a real copy: an expanded (stride-0) operand makes torch.mm copy it into the slow layout
    y = torch.mm(w, torch.cat((x, x)).t())[:, :1].t()
    return y + bias if bias is not None else y


def _rows(w: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or w.dtype != torch.float32 or not w.is_contiguous():
        return torch.nn.functional.linear(x, w, bias)
    y = torch.empty(x.shape[0], w.shape[0])
    b = None if bias is None else bias.detach().contiguous().numpy()
    _linear_rows(x.detach().numpy(), w.detach().numpy(), b, y.numpy(), torch.get_num_threads())
    return y


def _reorder(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)  # type: ignore[no-any-return]


def _onednn(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")  # type: ignore[no-any-return]


class PackedWeights:
    """oneDNN-reordered copies of linear weights, at most ``cap`` bytes in all.

    A copy is made on first use and dropped when the weight changes (another tensor, or the same
    one written in place: its version counter moves); a module whose copy would pass the cap gets
    none (``get`` returns None) and runs ``F.linear``. Weak keys: a collected module takes its
    copy with it.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._copies: weakref.WeakKeyDictionary[torch.nn.Linear, tuple[int, int, torch.Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def bytes(self) -> int:
        return sum(_nbytes(p) for _, _, p in list(self._copies.values()))

    def fits(self, modules: list[torch.nn.Linear]) -> bool:
        """Whether copies of all ``modules`` fit beside those already made."""
        extra = sum(_nbytes(m.weight) for m in modules if self._fresh(m) is None)
        return self.bytes + extra <= self.cap

    def get(self, module: torch.nn.Linear) -> torch.Tensor | None:
        """The module's copy, made now if it fits; None if it does not."""
        packed = self._fresh(module)
        if packed is None and self.bytes + _nbytes(module.weight) <= self.cap:
            w = module.weight
            packed = _reorder(w)
            self._copies[module] = (w.data_ptr(), w._version, packed)
        return packed

    def _fresh(self, module: torch.nn.Linear) -> torch.Tensor | None:
        entry = self._copies.get(module)
        if entry is None:
            return None
        ptr, version, packed = entry
        w = module.weight
        if ptr == w.data_ptr() and version == w._version:
            return packed
        del self._copies[module]
        return None


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def pack_cap() -> int:
    """Bytes the oneDNN-reordered weight copies of ``FASTDEC_CPU_LINEAR=packed`` may take:
    ``FASTDEC_CPU_PACK_BYTES``, default a quarter of physical memory (weights past it keep
    ``F.linear``)."""
    text = os.environ.get(PACK_BYTES_ENV)
    if text is None:
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows): 4 GiB
            return 4 << 30
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{PACK_BYTES_ENV}={text!r} is not a number of bytes") from None
    if value < 0:
        raise ValueError(f"{PACK_BYTES_ENV}={text!r} is negative")
    return value


def packed_available(dtype: torch.dtype) -> bool:
    """Whether this torch build runs oneDNN's packed linear in ``dtype`` (tried once on a tiny
    weight: a build without oneDNN, or a dtype its kernels lack, says no)."""
    if dtype not in _PACKED_OK:
        try:
            w = torch.ones(4, 8, dtype=dtype)
            x = torch.ones(2, 8, dtype=dtype)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [None], "")
            _PACKED_OK[dtype] = bool(torch.equal(y, torch.nn.functional.linear(x, w)))
        except (RuntimeError, AttributeError, NotImplementedError):
            _PACKED_OK[dtype] = False
    return _PACKED_OK[dtype]


_PACKED_OK: dict[torch.dtype, bool] = {}

LINEAR = LinearPath("linear", "F.linear", _linear)
GEMM = LinearPath("gemm", "weight @ x.T", _gemm)
PAIRED = LinearPath("paired", "paired row", _paired, one_row_only=True)
PACKED = LinearPath("packed", "oneDNN packed", _onednn, pack=_reorder)
ROWS = LinearPath("rows", "fastdec rows kernel", _rows)
PATHS = {p.name: p for p in (LINEAR, GEMM, PAIRED, PACKED, ROWS)}


def forced_path() -> str | None:
    """The path ``FASTDEC_CPU_LINEAR`` forces, or None to measure (``auto``, unset)."""
    text = os.environ.get("FASTDEC_CPU_LINEAR", "auto").strip().lower()
    if text not in OVERRIDES:
        raise ValueError(f"FASTDEC_CPU_LINEAR={text!r}: expected one of {', '.join(OVERRIDES)}")
    return OVERRIDES[text]


def routable(module: Any) -> bool:
    """A plain ``nn.Linear`` with a floating-point weight on the CPU whose forward nobody
    replaced (a quantized or hooked layer keeps its own)."""
    return (
        type(module) is torch.nn.Linear
        and module.weight.device.type == "cpu"
        and module.weight.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and ("forward" not in module.__dict__ or hasattr(module.__dict__["forward"], "fastdec_path"))
    )


def routed(
    run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int, out: int, pad_to: int = 0
) -> torch.Tensor:
    """``run`` on ``x``'s rows as a contiguous ``[rows, in]`` matrix, shaped back as ``x`` with
    ``out`` features: the work a routed forward adds to its path (the calibration times it too,
    so a path whose kernel wins by less than these extra calls cost is not chosen). With
    ``pad_to > rows``, zero rows are appended up to ``pad_to`` and their outputs dropped: on some
    CPUs a GEMM of 3 rows costs a third more than one of 4 (AVX2 EPYC, 1 thread, SmolLM2-135M:
    about 68 against 52 ms per forward), and rows are independent, so the padding changes
    nothing but the time."""
    # The rows must be contiguous: a strided operand (attention's output after its head
    # transpose) makes torch.mm copy it into the layout that is slow here.
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    if pad_to > rows:
        flat = torch.cat((flat, flat.new_zeros(pad_to - rows, flat.shape[1])))
        return run(flat)[:rows].reshape(*x.shape[:-1], out)
    return run(flat).reshape(*x.shape[:-1], out)


def install(module: torch.nn.Linear, path: LinearPath, packed: PackedWeights, pad_to: int = 0) -> None:
    """Routes ``module``'s forward through ``path`` for inputs of 1..``MAX_ROWS`` rows (a packed
    path reads the module's copy from ``packed`` at each call: a changed weight is reordered
    again, and a module without a copy runs ``F.linear``); inputs of fewer than ``pad_to`` rows
    are padded to it (:func:`routed`)."""
    compute = path.compute
    if path.pack is None:

        def run(x: torch.Tensor) -> torch.Tensor:
            return compute(module.weight, module.bias, x)

    else:

        def run(x: torch.Tensor) -> torch.Tensor:
            operand = packed.get(module)
            if operand is None:
                return torch.nn.functional.linear(x, module.weight, module.bias)
            return compute(operand, module.bias, x)

    def forward(x: torch.Tensor) -> torch.Tensor:
        features = x.shape[-1]
        rows = x.numel() // features if features else 0
        if not 1 <= rows <= MAX_ROWS or x.dtype != module.weight.dtype:
            return torch.nn.functional.linear(x, module.weight, module.bias)
        return routed(run, x, rows, module.weight.shape[0], pad_to)

    forward.fastdec_path = path.name  # type: ignore[attr-defined]  # ours: routable again
    module.forward = forward  # type: ignore[method-assign, assignment]


def uninstall(module: torch.nn.Linear) -> None:
    module.__dict__.pop("forward", None)
