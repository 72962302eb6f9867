"""Set-up for running SGLang 0.5.23's Python code without a GPU (``make test-sglang``).

SGLang's PyPI wheel is CUDA-only: its CPU engine needs ``sgl_kernel`` built from source (and an
AMX Xeon), so the real engine is not run here. What runs is SGLang's own Python: the plugin
loader, the algorithm registry, server-argument resolution, ``NGRAMWorker.__init__`` and its
draft-preparation methods, its C++ ``NgramCorpus`` (JIT-compiled by SGLang's loader with the
host compiler), and its Triton kernels for ``reconstruct_indices_from_tree_mask`` and greedy
tree verification under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

One stand-in: ``sgl_kernel.speculative`` (the compiled package, imported by SGLang's
``reconstruct_tree`` module on non-CUDA hosts) is a module whose only function,
``reconstruct_indices_from_tree_mask``, calls SGLang's Triton version of the same op (documented
there as the compiled op's exact contract).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: @triton.jit reads it
os.environ.setdefault("SGLANG_PLUGINS", "fastdec")  # only fastdec's plugin, whatever else is installed


def _reconstruct_indices_from_tree_mask(*args: Any) -> None:
    from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_triton

    reconstruct_indices_from_tree_mask_triton(*args)


_kernel = types.ModuleType("sgl_kernel")
_speculative = types.ModuleType("sgl_kernel.speculative")
_speculative.reconstruct_indices_from_tree_mask = _reconstruct_indices_from_tree_mask  # type: ignore[attr-defined]
_kernel.speculative = _speculative  # type: ignore[attr-defined]
sys.modules.setdefault("sgl_kernel", _kernel)
sys.modules.setdefault("sgl_kernel.speculative", _speculative)
# SGLang's JIT loader runs `ninja` from PATH; the venv's ninja package puts it next to python
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"  # config + tokenizer only
