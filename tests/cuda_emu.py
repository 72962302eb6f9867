"""Executes fastdec's CUDA kernel sources on the CPU (see ``cuda_emu.h``), as an executor for the
launchers in :mod:`fastdec.kernels.launch`.

The sources are compiled with g++ unchanged except for one rewrite, ``extern __shared__ T x[];``
to a pointer into the emulator's shared-memory buffer. Launch arguments are checked against each
kernel's C signature (a Python int where the kernel takes ``int`` is the classic CuPy mistake:
CuPy passes it as 8 bytes and shifts every later argument), then passed as 8-byte slots.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastdec.kernels.launch import Launch
from fastdec.kernels.sources import KERNELS, source

HERE = Path(__file__).parent
_SHARED = re.compile(r"extern\s+__shared__\s+([\w ]+?)\s+(\w+)\[\];")


def _kernel_symbol(name: str) -> str:
    """A C identifier for a kernel name such as ``kv_compact<unsigned int>``."""
    return re.sub(r"\W", "_", name)


def _pointer(name: str) -> str:
    """The C++ expression for a kernel's function pointer (templates need their arguments)."""
    return f"&{name}" if "<" not in name else f"&{name.split('<')[0]}<{name.split('<', 1)[1][:-1]}>"


class Emulator:
    """``Emulator(build_dir)(launch, device)`` runs ``launch`` on host memory."""

    def __init__(self, build_dir: Path) -> None:
        build_dir.mkdir(parents=True, exist_ok=True)
        includes = []
        for file in KERNELS:
            text = _SHARED.sub(
                lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(emu_smem);", source(file)
            )
            (build_dir / file).write_text(text)
            includes.append(f'#include "{file}"')
        table = []
        for kernels in KERNELS.values():
            for k in kernels:
                table.append(f'  {{"{k}", {_pointer(k)}}},')
        harness = "\n".join(
            [
                f'#include "{HERE / "cuda_emu.h"}"',
                *includes,
                "#include <cstring>",
                "#include <functional>",
                "struct Entry { const char* name; std::function<void(Dim3, Dim3, const std::uint64_t*)> run;",
                "  const char* sig; };",
                "template <class... A> Entry entry(const char* n, void (*k)(A...)) {",
                "  return {n, [k](Dim3 g, Dim3 b, const std::uint64_t* s) { emu_launch(k, g, b, s); },",
                "          emu_signature(k)}; }",
                "static Entry* table() {",
                "  static Entry t[] = {",
                *(line.replace("  {", "    entry(").replace("},", "),") for line in table),
                "  };",
                "  return t; }",
                f"static const int count = {len(table)};",
                'extern "C" const char* emu_signature_of(const char* name) {',
                "  for (int i = 0; i < count; ++i)",
                "    if (!std::strcmp(table()[i].name, name)) return table()[i].sig;",
                "  return nullptr; }",
                'extern "C" int emu_run(const char* name, unsigned gx, unsigned gy, unsigned gz,',
                "                       unsigned bx, const std::uint64_t* slots) {",
                "  for (int i = 0; i < count; ++i) if (!std::strcmp(table()[i].name, name)) {",
                "    table()[i].run({gx, gy, gz}, {bx, 1, 1}, slots); return 0; }",
                "  return 1; }",
            ]
        )
        (build_dir / "harness.cpp").write_text(harness + "\n")
        lib = build_dir / "libcuda_emu.so"
        subprocess.run(
            ["g++", "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-w", "-o", str(lib), "harness.cpp"],
            cwd=build_dir,
            check=True,
            capture_output=True,
            text=True,
        )
        self.lib = ctypes.CDLL(str(lib))
        self.lib.emu_signature_of.restype = ctypes.c_char_p
        self.lib.emu_signature_of.argtypes = [ctypes.c_char_p]
        self.lib.emu_run.restype = ctypes.c_int
        self.launches: list[Launch] = []

    def signature(self, kernel: str) -> str:
        sig = self.lib.emu_signature_of(kernel.encode())
        if sig is None:
            raise KeyError(kernel)
        return str(sig.decode())

    def __call__(self, launch: Launch, device: torch.device) -> None:
        assert device.type == "cpu", device
        sig = self.signature(launch.kernel)
        assert len(sig) == len(launch.args), (launch.kernel, sig, launch.args)
        slots = []
        for i, (code, arg) in enumerate(zip(sig, launch.args, strict=True)):
            slots.append(_slot(launch.kernel, i, code, arg))
        assert launch.grid[0] >= 1
        assert launch.block[0] >= 1
        assert launch.shared_mem <= 48 * 1024
        block = launch.block[0]  # as planned: not every kernel loops over its block size
        arr = (ctypes.c_uint64 * len(slots))(*slots)
        rc = self.lib.emu_run(launch.kernel.encode(), *launch.grid, block, arr)
        assert rc == 0
        self.launches.append(launch)


def _slot(kernel: str, i: int, code: str, arg: Any) -> int:
    """One argument as the 8 bytes a launch buffer holds, after checking its type."""
    where = f"{kernel} argument {i}"
    if code == "p":
        assert type(arg) is int, f"{where}: a pointer is passed as a Python int, got {type(arg)}"
        return arg
    want = {"i": np.int32, "I": np.uint32, "q": np.int64}[code]
    assert type(arg) is want, f"{where}: the kernel takes {want.__name__}, got {type(arg).__name__}"
    return int(arg) & 0xFFFFFFFFFFFFFFFF
