"""Which attention each decoder layer runs, read once per call from the model's config, and what
the tree loop must do for it (docs/design.md#sliding-window).

transformers names a layer's attention in ``config.layer_types`` (or infers it from
``sliding_window`` / ``attention_chunk_size``) and takes one mask per layer type: a model whose
layers mix types reads ``attention_mask`` as a dict ``{layer type: 4D mask}``, a model with one
type reads one tensor. fastdec builds both masks itself, so it supports exactly the types whose
masks it can write for a token tree:

* ``full_attention`` -- every earlier position;
* ``sliding_attention`` -- positions ``q`` with ``p - q < window`` for a query at ``p``.

Anything else is refused at the first call with a ``ValueError`` naming it: chunked attention,
recurrent or convolutional layers (Mamba, linear attention: their state cannot branch over a
tree), layers that reuse another layer's cache, and sliding windows that differ between layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

FULL = "full_attention"
SLIDING = "sliding_attention"
_SUPPORTED = (FULL, SLIDING)


@dataclass(frozen=True)
class AttentionLayout:
    """Per layer, ``FULL`` or ``SLIDING``; ``window`` is the sliding layers' span (``None``
    without sliding layers)."""

    types: tuple[str, ...]
    window: int | None

    @property
    def sliding(self) -> bool:
        return self.window is not None

    @property
    def mixed(self) -> bool:
        """Whether the model reads a dict of masks (its layers run different attentions)."""
        return len(set(self.types)) > 1

    def layers(self, kind: str) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == kind]

    def masks(self, full: torch.Tensor | None, sliding: torch.Tensor | None) -> Any:
        """The ``attention_mask`` argument: one tensor, or the dict a mixed model reads."""
        if not self.mixed:
            return sliding if self.sliding else full
        return {FULL: full, SLIDING: sliding}


def layout(model: Any) -> AttentionLayout:
    """The model's :class:`AttentionLayout`.

    Raises:
        ValueError: a layer type fastdec cannot verify a tree with, sliding windows that differ
            between layers, or a sliding-window model on a transformers release without per-layer
            masks.
    """
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    name = getattr(config, "model_type", type(model).__name__)
    types, windows = _layer_types(text)
    bad = sorted({t for t in types if t not in _SUPPORTED})
    if bad:
        raise ValueError(
            f"{name}: layers of type {', '.join(map(repr, bad))} cannot verify a token tree in "
            "fastdec (supported: full and sliding-window attention; recurrent, convolutional and "
            "chunked-attention layers are not)"
        )
    # a "sliding" layer without a window attends to everything (transformers' masks do the same)
    types = [FULL if t == SLIDING and windows[i] is None else t for i, t in enumerate(types)]
    sliding = {w for w, t in zip(windows, types, strict=True) if t == SLIDING and w is not None}
    if len(sliding) > 1:
        raise ValueError(f"{name}: sliding windows differ between layers ({sorted(sliding)})")
    window = sliding.pop() if sliding else None
    if window is not None and not _has_layer_types_api():
        import transformers

        raise ValueError(
            f"{name}: sliding-window attention (sliding_window={window}) needs transformers >= 5.0 "
            f"in fastdec (found {transformers.__version__})"
        )
    if window is not None and window < 1:
        raise ValueError(f"{name}: sliding_window={window} must be at least 1")
    return AttentionLayout(tuple(types), window)


def _has_layer_types_api() -> bool:
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs  # noqa: F401
    except ImportError:
        return False
    return True


def _layer_types(config: Any) -> tuple[list[str], list[int | None]]:
    """Each layer's type and sliding window, as transformers' own caches read them."""
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs
    except ImportError:  # transformers 4.x: the config fields alone
        n = int(config.num_hidden_layers)
        types = list(getattr(config, "layer_types", None) or [])
        window = getattr(config, "sliding_window", None)
        if not types:
            use = getattr(config, "use_sliding_window", True)
            types = [SLIDING if window and use else FULL] * n
        return types, [window if t == SLIDING else None for t in types]
    types, kwargs = get_layer_types_and_kwargs(config)
    return list(types), [
        k.get("sliding_window") if t == SLIDING else None for t, k in zip(types, kwargs, strict=True)
    ]


def prefill_mask(
    rows: int, length: int, window: int | None, dtype: torch.dtype, device: Any, cols: int | None = None
) -> torch.Tensor:
    """The causal additive mask ``[rows, 1, T, cols]`` of a right-padded prefill (``cols``: a
    static cache's length, default ``T``), windowed for a sliding layer (a short row's pads come
    after its real tokens, so causality alone hides them)."""
    i = torch.arange(length, device=device)
    j = torch.arange(cols or length, device=device)
    allowed = j[None, :] <= i[:, None]
    if window is not None:
        allowed &= i[:, None] - j[None, :] < window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.expand(rows, 1, *allowed.shape)
