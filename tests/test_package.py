"""The ``fastdec`` package: lightweight import, metadata, optional dependencies, shipped kernels."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import fastdec
import fastdec._optional
import pytest

HEAVY = ("torch", "transformers", "cupy")
REPO_CUDA = Path(__file__).parents[1] / "cuda"


def test_import_is_lightweight() -> None:
    code = (
        "import json, sys, fastdec; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


def test_version() -> None:
    assert isinstance(fastdec.__version__, str)
    assert fastdec.__version__.count(".") >= 2
    assert fastdec.__version__ == fastdec._core.__version__


def test_all_names_exist() -> None:
    assert fastdec.__all__
    assert len(set(fastdec.__all__)) == len(fastdec.__all__)
    for name in fastdec.__all__:
        assert hasattr(fastdec, name), name
    public = {n for n in dir(fastdec._core) if not n.startswith("_")}
    assert public <= set(fastdec.__all__), public - set(fastdec.__all__)
    assert isinstance(fastdec.MAX_NODES, int)
    assert fastdec.MAX_NODES > 0


def test_require_missing_module() -> None:
    with pytest.raises(ImportError, match="pip install") as info:
        fastdec._optional.require("no_such_module_xyz")
    assert "no_such_module_xyz" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.parametrize(
    ("module", "extra"), [("torch", "torch"), ("transformers", "torch"), ("cupy", "cuda")]
)
def test_require_names_the_extra(module: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hide the module even where the test environment installs it: a None entry in sys.modules
    # makes `import module` raise ImportError.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf'pip install "fastdec\[{extra}\]"'):
        fastdec._optional.require(module)


def test_require_present_module() -> None:
    assert fastdec._optional.require("json") is json


@pytest.mark.parametrize("module", [fastdec, fastdec._optional, fastdec.constraints, fastdec.smc])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0


def test_shipped_cuda_sources_match_repository() -> None:
    """``fastdec/cuda/`` holds exactly the repository's ``cuda/*.cu`` files, byte for byte."""
    shipped = files("fastdec") / "cuda"
    installed = (
        {p.name: p.read_bytes() for p in shipped.iterdir() if p.name.endswith(".cu")}
        if shipped.is_dir()
        else {}
    )
    repo = {p.name: p.read_bytes() for p in REPO_CUDA.glob("*.cu")}
    assert sorted(installed) == sorted(repo)
    assert installed == repo
