"""The CUDA kernel sources (``cuda/*.cu``, shipped as ``fastdec/cuda/``) and an NVRTC compile
check that needs no GPU and no driver (docs/design.md#nvrtc).

CuPy's own compile path asks the driver for the device's architecture, so without a GPU it
fails before compiling; NVIDIA's ``cuda.bindings.nvrtc`` (the ``cuda`` extra) calls the NVRTC
library directly and compiles for any architecture it supports.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastdec._optional import require

# A row of K or V is moved in units of the widest of these that divides its bytes, its
# strides and its address (bytes -> the CUDA type of a unit).
UNIT_TYPES: dict[int, str] = {
    16: "uint4",
    8: "uint2",
    4: "unsigned int",
    2: "unsigned short",
    1: "unsigned char",
}

#: kernel source file -> the kernels it defines, by the names the launchers look them up with
KERNELS: dict[str, tuple[str, ...]] = {
    "tree_mask.cu": ("tree_mask",),
    "verify.cu": ("verify_greedy", "verify_stochastic"),
    "kv_compact.cu": tuple(f"kv_compact<{t}>" for t in UNIT_TYPES.values()),
}

#: options every compile uses, here and in the launchers
OPTIONS: tuple[str, ...] = ("-std=c++17",)


class NvrtcError(RuntimeError):
    """A kernel source did not compile; the message holds NVRTC's log."""


def source_dir() -> Path:
    """The directory holding the ``.cu`` files: the repository's ``cuda/`` in an editable checkout
    (the sources as edited; the build's copy may be stale), else ``fastdec/cuda/`` from the wheel."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "cuda").is_dir():
        return root / "cuda"
    shipped = Path(str(files("fastdec"))) / "cuda"
    if shipped.is_dir() and any(shipped.glob("*.cu")):
        return shipped
    raise FileNotFoundError(f"no CUDA kernel sources in {shipped}")


def source(name: str) -> str:
    """The text of one kernel source file, e.g. ``"verify.cu"``."""
    if name not in KERNELS:
        raise KeyError(f"unknown kernel source {name!r}: expected one of {sorted(KERNELS)}")
    return (source_dir() / name).read_text(encoding="utf-8")


def nvrtc_version() -> tuple[int, int]:
    """The NVRTC library's (major, minor) version."""
    nvrtc = require("cuda.bindings.nvrtc")
    err, major, minor = nvrtc.nvrtcVersion()
    _check(nvrtc, err, "nvrtcVersion")
    return int(major), int(minor)


def compile_source(
    code: str, name: str, arch: str, name_expressions: tuple[str, ...] = ()
) -> tuple[bytes, str, dict[str, str]]:
    """Compiles ``code`` to a cubin for ``arch`` (e.g. ``"sm_90"``) with NVRTC.

    Returns:
        ``(cubin, log, lowered)``: the binary, NVRTC's log (warnings; empty when clean) and the
        mangled name of every name expression.

    Raises:
        NvrtcError: the source does not compile; the message holds the log (file, line, error).
        ImportError: ``cuda.bindings`` is not installed (``pip install "fastdec[cuda]"``).
    """
    nvrtc = require("cuda.bindings.nvrtc")
    err, prog = nvrtc.nvrtcCreateProgram(code.encode(), name.encode(), 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            (err,) = nvrtc.nvrtcAddNameExpression(prog, expr.encode())
            _check(nvrtc, err, f"nvrtcAddNameExpression({expr!r})")
        opts = [f"-arch={arch}".encode(), *(o.encode() for o in OPTIONS)]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        _check(nvrtc, err, "nvrtcGetProgramLogSize")
        # NVRTC writes into the buffer: it must be a bytearray. A `b" " * size` buffer is the
        # interpreter's shared one-byte `b" "` object when size == 1, and writing into it turns
        # every b" " in the process into b"\x00".
        buf = bytearray(size)
        (err,) = nvrtc.nvrtcGetProgramLog(prog, buf)
        _check(nvrtc, err, "nvrtcGetProgramLog")
        log = bytes(buf).rstrip(b"\x00 ").decode(errors="replace").strip()
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"{name} does not compile for {arch}:\n{log}")
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _check(nvrtc, err, "nvrtcGetCUBINSize")
        cubin_buf = bytearray(size)
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin_buf)
        _check(nvrtc, err, "nvrtcGetCUBIN")
        cubin = bytes(cubin_buf)
        lowered = {}
        for expr in name_expressions:
            err, low = nvrtc.nvrtcGetLoweredName(prog, expr.encode())
            _check(nvrtc, err, f"nvrtcGetLoweredName({expr!r})")
            lowered[expr] = low.decode() if isinstance(low, bytes) else str(low)
        return cubin, log, lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def compile_kernel_file(name: str, arch: str) -> tuple[bytes, str, dict[str, str]]:
    """:func:`compile_source` for one of the shipped files, with its kernels' name expressions."""
    templates = tuple(k for k in KERNELS[name] if "<" in k)
    return compile_source(source(name), name, arch, templates)


def _check(nvrtc: object, err: object, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:  # type: ignore[attr-defined]
        raise NvrtcError(f"{what} failed: {err}")
