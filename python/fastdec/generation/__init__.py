"""Speculative generation on torch / transformers models (needs ``fastdec[torch]``).

``generate`` and ``GenerateOutput`` are imported on first use, so the torch-free parts of this
package (``budget``: the tree-size controller the llama.cpp loop shares) import without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import GenerateOutput, generate

__all__ = ["GenerateOutput", "generate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
