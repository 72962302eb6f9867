"""Server adapters: fastdec drafters behind the draft interfaces of vLLM, SGLang and transformers.

===========================  =============================================================
``FastdecProposer``          vLLM V1 ``custom_class`` proposer: linear drafts per batch row
                             (:mod:`fastdec.integrations.vllm`)
``FastdecNgramCorpus``       SGLang 0.5.23 ``NgramCorpus``: per-request trees by SGLang request
``build_sglang_drafts``      id, padded to ``draft_token_num`` with ancestor masks, positions and
                             retrieve indices (:mod:`.sglang`; the ``FASTDEC`` algorithm plugin
                             is :mod:`.sglang_plugin`)
``make_candidate_generator`` transformers assisted-generation ``CandidateGenerator``
``assisted_by``              and a context manager that makes ``model.generate`` use it
``draft_candidates``         (:mod:`.transformers`; the draft logic needs only numpy)
``FastdecDraftModel``        llama-cpp-python ``LlamaDraftModel`` (:mod:`.llama_cpp`)
``FastdecLlama``             a ``llama_cpp.Llama`` whose greedy generation verifies draft
                             trees in one ``llama_decode`` a step (:mod:`.llama_cpp_tree`;
                             ``fastdec serve-llama`` serves it, :mod:`.llama_cpp_server`)
===========================  =============================================================

Importing this package (or any of its modules but :mod:`.llama_cpp_tree` and
:mod:`.llama_cpp_server`, which need llama-cpp-python) imports neither torch, transformers,
vLLM, llama-cpp-python nor SGLang: names load their module on first access, and the
transformers adapter imports torch and transformers only when a generator is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastdec.integrations.llama_cpp import FastdecDraftModel
    from fastdec.integrations.llama_cpp_tree import FastdecLlama
    from fastdec.integrations.sglang import FastdecNgramCorpus, SGLangDrafts, build_sglang_drafts
    from fastdec.integrations.transformers import (
        assisted_by,
        candidate_input_ids,
        draft_candidates,
        make_candidate_generator,
    )
    from fastdec.integrations.vllm import FastdecProposer

#: public name -> the submodule defining it
_LAZY: dict[str, str] = {
    "FastdecDraftModel": "llama_cpp",
    "FastdecLlama": "llama_cpp_tree",
    "FastdecProposer": "vllm",
    "FastdecNgramCorpus": "sglang",
    "SGLangDrafts": "sglang",
    "build_sglang_drafts": "sglang",
    "assisted_by": "transformers",
    "candidate_input_ids": "transformers",
    "draft_candidates": "transformers",
    "make_candidate_generator": "transformers",
}

__all__ = [
    "FastdecDraftModel",
    "FastdecLlama",
    "FastdecNgramCorpus",
    "FastdecProposer",
    "SGLangDrafts",
    "assisted_by",
    "build_sglang_drafts",
    "candidate_input_ids",
    "draft_candidates",
    "make_candidate_generator",
]


def __getattr__(name: str) -> Any:
    """Loads the submodule that defines ``name`` on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
