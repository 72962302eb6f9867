"""Prints a pip constraints file pinning every distribution of the running environment.

Used by ``make lock``: run with the interpreter of a freshly resolved virtualenv, it writes
``name==version`` for every installed distribution but fastdec itself (pip and maturin included:
the Makefile passes the file to ``pip install -c`` and ``--build-constraint``), sorted, under a
header saying when, where and for which make target it was resolved.

    .venv-lock/bin/python .ci/freeze_lock.py "make test" > locks/test.txt
"""

from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata

SKIP = {"fastdec"}


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "make test"
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in SKIP:
            pins[name.lower().replace("_", "-")] = dist.version
    today = datetime.date.today().isoformat()
    print(f"# Constraints for `{target}`: every distribution of a fresh resolve of fastdec's extras.")
    print(f"# Written by `make lock` on {today}, CPython {platform.python_version()}, {platform.machine()}")
    print("# Linux. Library ranges live in pyproject.toml; this file only makes CI reproducible.")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
