"""Checking and normalising the arguments of ``fastdec.generate`` (every bad value is named)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastdec._core import MAX_NODES
from fastdec.constraints import Constraint


def check_settings(*, max_new_tokens: int, temperature: float, cache: str, constraint: Any) -> None:
    """Raises ``ValueError`` naming the first setting out of its range."""
    if constraint is not None and not isinstance(constraint, Constraint):
        raise ValueError(
            f"invalid constraint={constraint!r}: expected a fastdec.Regex, JsonSchema, Grammar or "
            "CallbackConstraint (built over the model's vocabulary with "
            "fastdec.TokenVocab.from_hf_tokenizer(...))"
        )
    if max_new_tokens < 1:
        raise ValueError(f"invalid max_new_tokens={max_new_tokens}: must be >= 1")
    if cache not in ("dynamic", "static"):
        raise ValueError(f"invalid cache={cache!r}: expected 'dynamic' or 'static'")
    if temperature < 0:
        raise ValueError(f"invalid temperature={temperature}: must be >= 0")


def check_budget(budget: object) -> int:
    """A fixed tree budget (most nodes per step, root included), or ``ValueError``."""
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= MAX_NODES:
        raise ValueError(f"invalid budget={budget!r}: 'auto' or an int in [1, {MAX_NODES}]")
    return budget


def check_tokens(prompts: list[list[int]], vocab_size: int) -> None:
    """``ValueError`` naming the first prompt token outside the vocabulary."""
    for p in prompts:
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt token {bad[0]} is outside the vocabulary [0, {vocab_size})")


def prompts(input_ids: Any) -> list[list[int]]:
    """The prompts as token lists: a ``[B, T]`` or ``[T]`` tensor or array, or token lists."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        rows = input_ids.tolist()
    elif isinstance(input_ids, np.ndarray):
        rows = np.atleast_2d(input_ids).tolist()
    else:
        rows = [list(r) for r in input_ids]
        if rows and not isinstance(rows[0], list | tuple) and not hasattr(input_ids[0], "__len__"):
            rows = [list(input_ids)]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("input_ids must hold at least one non-empty prompt")
    return [[int(t) for t in r] for r in rows]


def eos_set(eos_token_id: int | Sequence[int] | None) -> frozenset[int]:
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset({eos_token_id})
    return frozenset(int(t) for t in eos_token_id)


def vocab_size(model: Any) -> int:
    """The model's vocabulary size, read where a multimodal model keeps it too (its text
    config: ``Gemma3ForConditionalGeneration`` has no ``config.vocab_size``)."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return int(getattr(text, "vocab_size", None) or config.vocab_size)
