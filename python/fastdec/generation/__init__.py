"""Speculative generation on torch / transformers models (needs ``fastdec[torch]``)."""

from .loop import GenerateOutput, generate

__all__ = ["GenerateOutput", "generate"]
