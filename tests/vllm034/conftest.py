"""Set-up for running vLLM 0.34.0's own Python code against fastdec's speculator plugin without a GPU
(``make test-vllm034``).

PyPI's ``vllm`` 0.34 is the CUDA build, and vLLM 0.34 refuses an x86 CPU without triton-cpu (not on
PyPI), so the engine does not run here. What runs is vLLM's own code: its plugin loader (fastdec's
``vllm.general_plugins`` entry point), its argument parser and config validation (``EngineArgs``,
``SpeculativeConfig``, ``VllmConfig``) on ``--speculative-config`` as ``vllm serve`` parses it, its
``init_speculator``, its ``RequestState`` and ``InputBatch`` classes, and the Triton kernels the model
runner uses to write a request's prompt (``apply_staged_writes``) and each step's sampled tokens
(``post_update``) into the token history, under Triton's interpreter on CPU tensors.

The environment: ``VLLM_TARGET_DEVICE=cpu`` (vLLM's CPU platform); ``CUDA_VISIBLE_DEVICES=""``, which
vLLM reads as a distributed worker whose GPU is not visible yet, so it keeps Triton enabled (its
kernels then run in the interpreter, ``TRITON_INTERPRET=1``). One stand-in: vLLM's ``UvaBuffer``
pins host memory, which the CUDA build of torch cannot do without a driver; :class:`HostUvaBuffer`
keeps the same host array unpinned, and its "device view" is that array itself, as unified
addressing makes it on a GPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["VLLM_TARGET_DEVICE"] = "cpu"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: @triton.jit reads it
os.environ.setdefault("VLLM_PLUGINS", "fastdec")  # only fastdec's general plugin
sys.path.insert(0, str(Path(__file__).parent))  # runner.py, the model runner's stand-in

import pytest
import torch
import vllm.v1.worker.gpu.buffer_utils as buffer_utils


class HostUvaBuffer(buffer_utils.UvaBuffer):  # type: ignore[misc]
    """vLLM's UVA buffer without pinning: host array and device view are one CPU tensor."""

    def __init__(self, size: Any, dtype: torch.dtype) -> None:
        self.cpu = torch.zeros(size, dtype=dtype)
        self.np = self.cpu.numpy()
        self._uva = self.cpu


buffer_utils.UvaBuffer = HostUvaBuffer


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama config (no weights): what vLLM's config validation reads of a model."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def plugins_loaded() -> Iterator[None]:
    """vLLM's plugin loader, as every vLLM process runs it at start."""
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    return
