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
So are models whose class rules a tree out whatever its layers: a forward without a KV cache or
with a cache of its own (a dict, or ``_supports_default_dynamic_cache`` false), a recurrent state
beside the cache (``_is_stateful``), no ``position_ids`` (positions from the cache length or ALiBi
from the 2D mask: a tree node needs its depth's), positions counted from ``padding_idx + 1``
(RoBERTa's kin), cross-attention layers, windows the config does not name as layer types
(GPT-Neo's local layers) and layers looped with per-loop caches. ``benches/architectures.py``
sweeps transformers' causal LMs against these rules (docs/architectures.md).
"""

from __future__ import annotations

import inspect
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
        ValueError: a layer type fastdec cannot verify a tree with, a model class that rules a
            tree out (see the module docstring), sliding windows that differ between layers, or a
            sliding-window model on a transformers release without per-layer masks.
    """
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    name = getattr(config, "model_type", type(model).__name__)
    try:
        types, windows = _layer_types(text)
    except (AttributeError, KeyError, TypeError) as e:  # transformers' own reader fails on it
        raise ValueError(f"{name}: transformers cannot read its layer types from the config ({e})") from e
    bad = sorted({t for t in types if t not in _SUPPORTED})
    if bad:
        raise ValueError(
            f"{name}: layers of type {', '.join(map(repr, bad))} cannot verify a token tree in "
            "fastdec (supported: full and sliding-window attention; recurrent, convolutional and "
            "chunked-attention layers are not)"
        )
    refusal = _model_refusal(model, config)
    if refusal:
        raise ValueError(f"{name}: {refusal}")
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


def _model_refusal(model: Any, config: Any) -> str | None:
    """Why fastdec cannot verify a token tree on ``model`` whatever its layer types say, or
    ``None``: facts of the model class and its config, read as transformers' own ``generate``
    reads them."""
    cls = type(model)
    try:
        params = dict(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):  # no introspectable signature: nothing to say
        return None
    cache_param = next((params[k] for k in ("cache", "past_key_values") if k in params), None)
    if cache_param is None:
        return (
            "its forward takes no KV cache (no past_key_values / cache argument), so a token tree "
            "cannot be verified against cached context"
        )
    if str(cache_param.annotation).startswith("dict"):
        # XLM: a dict of its own, whose 2D masks it rebuilds from the input lengths (other legacy
        # annotations, tuples and lists on BERT-style classes, do take a transformers Cache)
        return "its cache argument is a dict of its own, not a transformers Cache"
    if getattr(cls, "_is_stateful", False):
        return (
            "it keeps a recurrent state beside its KV cache (transformers marks the class stateful), "
            "which cannot branch over a token tree or be rolled back"
        )
    supports_cache = getattr(cls, "_supports_default_dynamic_cache", None)
    if callable(supports_cache) and not supports_cache():
        return "it keeps its own cache format, not a transformers DynamicCache that fastdec can compact"
    loops = getattr(config, "n_recurrent_loops", None)
    if isinstance(loops, int) and loops > 1:
        # Dory: a block of layers runs n_recurrent_loops times per token and each loop appends
        # cache layers of its own, beyond the config's layer list (no general config field says so)
        return (
            f"a block of its layers runs {loops} times per token with cache layers of its own per loop, "
            "which fastdec's per-layer cache handling does not cover"
        )
    if not _takes_positions(model, params):
        return (
            "its forward takes no position_ids (it derives positions itself: from the cache length, or "
            "ALiBi biases from the 2D mask), so tree nodes cannot get the positions of their depth"
        )
    if any(hasattr(type(m), "create_position_ids_from_input_ids") for m in _modules(model)):
        # RoBERTa and its kin: without position_ids (model.generate passes none) positions count
        # from padding_idx + 1; fastdec's count from 0
        return (
            "its default positions start at padding_idx + 1 (RoBERTa's convention, which "
            "model.generate keeps), fastdec's position_ids at 0"
        )
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(text, "cross_attention_layers", None):
        # Mllama: those layers cache the image's K/V, which compacting along the text would break
        return "it has cross-attention layers, whose cache holds another sequence than the text"
    if "local" in (getattr(text, "attention_layers", None) or ()):
        # GPT-Neo: 'local' layers apply window_size through a mask buffer of their own, counted in
        # cache slots, not positions (and not in layer_types / sliding_window)
        return "its local-attention layers window by cache slot, not by position"
    if getattr(config, "model_type", None) == "moshi":
        # its masks ignore sliding_window while transformers' cache for it drops what falls outside
        # the window: model.generate's output then depends on how the context was cached
        return (
            "its attention masks ignore its sliding_window while its cache drops what falls outside it, "
            "which no tree mask reproduces"
        )
    return None


def _modules(model: Any) -> list[Any]:
    modules = getattr(model, "modules", None)
    return list(modules()) if callable(modules) else []


def _takes_positions(model: Any, params: dict[str, inspect.Parameter]) -> bool:
    """Whether ``position_ids`` reach the model: its forward or its decoder's declares them."""
    if "position_ids" in params:
        return True
    get_decoder = getattr(model, "get_decoder", None)
    try:
        decoder = get_decoder() if callable(get_decoder) else None
        return decoder is not None and "position_ids" in inspect.signature(type(decoder).forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


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
