"""What machine this is, for benchmarks and ``fastdec demo``: CPU model, the ISA flags that
decide which kernels run (AVX2, AVX-512, AVX512-BF16, AMX), and the BLAS libraries torch uses.

Two CPUs of the same kind of VM can differ by 2x on the same call (see
:mod:`fastdec.generation.cpu_linear`), so every figure should say which CPU gave it.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

#: the flags that change which kernels torch / MKL / oneDNN and fastdec's own code run
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "neon", "sve")


def cpu_info() -> dict[str, Any]:
    """``{"model", "vendor", "arch", "cpus", "flags"}``: ``flags`` lists which of
    :data:`ISA_FLAGS` the CPU has (read from /proc/cpuinfo on Linux; elsewhere what
    ``platform`` says and no flags)."""
    model, vendor = platform.processor() or "unknown", "unknown"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    for key, value in re.findall(r"^([^\t:\n]+?)\s*:\s*(.*)$", text, flags=re.M):
        if key in ("model name", "Model") and model in ("unknown", "", platform.machine()):
            model = value.strip()
        elif key in ("vendor_id", "CPU implementer") and vendor == "unknown":
            vendor = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {
        "model": model,
        "vendor": vendor,
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "flags": [f for f in ISA_FLAGS if f in flags or (f == "neon" and "asimd" in flags)],
    }


def torch_info() -> dict[str, Any]:
    """torch's version, thread count and BLAS libraries (MKL, oneDNN versions; the CPU
    capability its kernels dispatch to), or ``{}`` without torch."""
    try:
        import torch
    except ImportError:
        return {}
    config = torch.__config__.show()

    def find(pattern: str) -> str | None:
        m = re.search(pattern, config)
        return m.group(1) if m else None

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkl": find(r"Math Kernel Library Version ([\d.]+)"),
        "onednn": find(r"MKL-DNN v([\w.]+)") or find(r"oneDNN v([\w.]+)"),
        "cpu_capability": find(r"CPU capability usage: (\w+)"),
    }


def describe() -> str:
    """One line: ``Intel(R) Xeon(R) Processor (x86_64, 2 CPUs; avx2 avx512f avx512_bf16
    amx_bf16), torch 2.15.0 (MKL 2024.2, oneDNN 3.13.3)``."""
    cpu, lib = cpu_info(), torch_info()
    flags = " ".join(cpu["flags"]) or "no listed ISA flags"
    line = f"{cpu['model']} ({cpu['arch']}, {cpu['cpus']} CPUs; {flags})"
    if lib:
        libs = ", ".join(f"{k} {lib[k.lower()]}" for k in ("MKL", "oneDNN") if lib.get(k.lower()))
        line += f", torch {lib['torch']}" + (f" ({libs})" if libs else "")
    return line


def machine_meta() -> dict[str, Any]:
    """What a benchmark's JSON records about the machine: ``{"cpu": cpu_info(), "libraries":
    torch_info()}``."""
    return {"cpu": cpu_info(), "libraries": torch_info()}


if __name__ == "__main__":  # python -m fastdec.machine
    print(describe())
