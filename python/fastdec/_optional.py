"""Lazy imports of the optional heavy dependencies (torch, transformers, cupy).

``import fastdec`` needs only numpy; the modules that need more import it through
:func:`require`, which fails with an error that says how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: module name -> the pip extra that installs it
EXTRAS: dict[str, str] = {
    "torch": "torch",
    "transformers": "torch",
    "gguf": "torch",
    "accelerate": "torch",
    "tqdm": "torch",
    "platformdirs": "torch",
    "scipy": "test",
    "cupy": "cuda",
    "cuda": "cuda",  # cuda.bindings (NVRTC)
    "matplotlib": "bench",
    "llama_cpp": "llama",
    "uvicorn": "llama",
}


def require(module: str) -> ModuleType:
    """Imports ``module`` or raises an ``ImportError`` naming the extra that provides it.

    Args:
        module: top-level module name, e.g. ``"torch"``.

    Returns:
        The imported module.

    Raises:
        ImportError: ``module`` is not installed; the message gives the pip command.

    >>> require("numpy").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = EXTRAS.get(module.split(".")[0])
        hint = f'pip install "fastdec[{extra}]"' if extra else f"pip install {module}"
        raise ImportError(
            f"fastdec needs the optional dependency {module!r} for this; install it with: {hint}"
        ) from err
