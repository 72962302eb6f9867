"""Every CUDA kernel source compiles with NVRTC for the GPUs fastdec targets (sm_80 A100, sm_90
H100), without a GPU or a driver (docs/design.md#nvrtc), and without warnings. A compile error fails
here, in CI, long before anyone runs the kernels."""

from __future__ import annotations

import pytest
from fastdec.kernels import sources

ARCHS = ["sm_80", "sm_90"]


def test_nvrtc_is_available() -> None:
    assert sources.nvrtc_version() >= (12, 0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(sources.KERNELS))
def test_kernel_source_compiles(name: str, arch: str) -> None:
    cubin, log, lowered = sources.compile_kernel_file(name, arch)
    assert cubin[:4] == b"\x7fELF"  # a cubin is an ELF image
    assert "warning" not in log.lower(), log
    templates = [k for k in sources.KERNELS[name] if "<" in k]
    assert sorted(lowered) == sorted(templates)
    assert all(low.startswith("_Z") for low in lowered.values())  # mangled template instances
    plain = [k for k in sources.KERNELS[name] if "<" not in k]
    assert all(k.encode() in cubin for k in plain)  # extern "C" kernels keep their names


def test_compiling_leaves_python_objects_alone() -> None:
    """Regression: NVRTC once wrote its empty log into the interpreter's shared b" " object
    (a ``b" " * 1`` buffer), after which every b" " in the process read as b"\x00"."""
    sources.compile_kernel_file("tree_mask.cu", "sm_90")
    assert bytes([32]) == b" "
    assert b" Once".startswith(b" ")


def test_compile_error_names_file_and_line() -> None:
    code = 'extern "C" __global__ void k(int* x) {\n  x[0] = undefined_name;\n}\n'
    with pytest.raises(sources.NvrtcError, match=r"broken\.cu\(2\).*undefined_name"):
        sources.compile_source(code, "broken.cu", "sm_90")


def test_sources_are_the_shipped_files() -> None:
    assert sorted(p.name for p in sources.source_dir().glob("*.cu")) == sorted(sources.KERNELS)
    with pytest.raises(KeyError, match="unknown kernel source"):
        sources.source("nope.cu")
