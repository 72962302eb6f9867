"""CUDA kernels for the per-step tree operations of speculative decoding, launched through CuPy.

* :mod:`fastdec.kernels.sources`: the ``.cu`` files (``fastdec/cuda/`` in the wheel) and an NVRTC
  compile check that needs no GPU.
* :mod:`fastdec.kernels.launch`: tree mask (additive and packed bits), greedy and stochastic
  verification, KV-cache compaction of all layers in one launch; torch tensors in and out, on
  torch's current stream.

:func:`backend` says which implementation :func:`fastdec.generate` uses for tensors on a device:
the kernels on CUDA when CuPy can run them, the torch references
(:mod:`fastdec.generation.tree_ops`, :mod:`fastdec.sampling`) otherwise. The environment variable
``FASTDEC_KERNELS`` forces one: ``cuda`` (an error where the kernels cannot run), ``torch``, or
``auto`` (the default).

Needs the ``cuda`` extra (``pip install "fastdec[cuda]"``: CuPy and NVRTC).
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Literal

__all__ = ["backend", "cuda_available"]

Backend = Literal["cuda", "torch"]
_CHOICES = ("auto", "cuda", "torch")


@functools.cache
def cuda_available() -> bool:
    """Whether CuPy is installed and sees a GPU."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a broken driver or runtime reads as "no GPU"
        return False


def backend(device_type: str) -> Backend:
    """The implementation of the tree operations for tensors on a ``device_type`` device.

    Raises:
        ValueError: ``FASTDEC_KERNELS`` is not one of auto, cuda, torch.
        RuntimeError: ``FASTDEC_KERNELS=cuda`` but the tensors are not on CUDA or CuPy cannot run.
    """
    choice = os.environ.get("FASTDEC_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"invalid FASTDEC_KERNELS={choice!r}: expected one of {', '.join(_CHOICES)}")
    if choice == "torch":
        return "torch"
    usable = device_type == "cuda" and cuda_available()
    if choice == "cuda" and not usable:
        why = "the model is not on a CUDA device" if device_type != "cuda" else "CuPy cannot use the GPU"
        raise RuntimeError(
            f'FASTDEC_KERNELS=cuda but {why}; install "fastdec[cuda]" or unset FASTDEC_KERNELS'
        )
    return "cuda" if usable else "torch"
