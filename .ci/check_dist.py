"""Checks what `make dist` built in dist/: the wheel is tagged manylinux and installs into a new
virtualenv with numpy alone (no torch), where it imports and runs a tree step; the sdist builds a
working wheel from scratch (pip's isolated build: maturin from PyPI, cargo --locked) that carries
the CUDA sources. Exits non-zero naming the first failure.

Usage: python .ci/check_dist.py DIST_DIR WORK_DIR
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

SMOKE = """
import fastdec, numpy as np
tree = fastdec.TokenTree(np.array([10, 11, 12, 13], np.int32), np.array([-1, 0, 0, 1], np.int32))
nodes, accepted, bonus = tree.verify_greedy(np.array([11, 13, 0, 99], np.int32))
assert (nodes.tolist(), accepted, bonus) == ([0, 1, 3], 2, 99), (nodes, accepted, bonus)
import importlib.util
assert importlib.util.find_spec("torch") is None, "torch must not come with the wheel"
print("fastdec", fastdec.__version__, "imports and verifies a tree with numpy alone")
"""
CUDA = ("fastdec/cuda/tree_mask.cu", "fastdec/cuda/verify.cu", "fastdec/cuda/kv_compact.cu")


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def check_wheel(wheel: Path, work: Path, what: str) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [c for c in CUDA if c not in names]
    if missing:
        sys.exit(f"{what} {wheel.name} lacks the CUDA sources {missing}")
    py = fresh_venv(work)
    run(py, "-m", "pip", "install", "-q", str(wheel))
    run(py, "-c", SMOKE)


def main() -> None:
    dist, work = Path(sys.argv[1]), Path(sys.argv[2])
    wheels = sorted(dist.glob("fastdec-*.whl"))
    sdists = sorted(dist.glob("fastdec-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    wheel, sdist = wheels[0], sdists[0]
    if "-manylinux" not in wheel.name:
        sys.exit(f"{wheel.name} is not tagged manylinux: no package index would accept it")
    check_wheel(wheel, work / "wheel", "the wheel")
    built = work / "from-sdist"
    built.mkdir(parents=True, exist_ok=True)
    py = fresh_venv(work / "sdist-build")
    run(py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", built, str(sdist))
    (rebuilt,) = built.glob("fastdec-*.whl")
    check_wheel(rebuilt, work / "sdist", "the wheel built from the sdist")
    print(f"dist ok: {wheel.name}, {sdist.name}")


if __name__ == "__main__":
    main()
