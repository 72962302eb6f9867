"""The native constrained-decoding classes under the module name of their stub,
``_core_constraints.pyi`` (so that ``mypy.stubtest`` checks that part of ``fastdec._core``'s
stubs). Import them from ``fastdec`` or ``fastdec._core``."""

from fastdec._core import (
    Grammar,
    GrammarState,
    JsonSchema,
    PrunedTree,
    Regex,
    TokenVocab,
    _softmax64,
    awrs_sample,
)

__all__ = [
    "Grammar",
    "GrammarState",
    "JsonSchema",
    "PrunedTree",
    "Regex",
    "TokenVocab",
    "_softmax64",
    "awrs_sample",
]
