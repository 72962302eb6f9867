"""Reading and replacing the per-layer K/V tensors of a transformers cache.

transformers >= 4.54 keeps them as ``cache.layers[i].keys / .values`` (``[B, H, S, D]``); older
releases as ``cache.key_cache[i] / value_cache[i]`` lists (trees.md §3.4, pitfall 3). There is
no sequence-axis gather API in either, so compaction edits the tensors directly.
"""

from __future__ import annotations

from typing import Any

import torch


def new_cache(model: Any, static_len: int | None = None) -> Any:
    """A ``DynamicCache``, or a ``StaticCache`` preallocated for ``static_len`` slots per row."""
    if static_len is None:
        from transformers import DynamicCache

        return DynamicCache(config=model.config)
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=static_len)


def is_static(cache: Any) -> bool:
    return any(hasattr(layer, "cumulative_length") for layer in getattr(cache, "layers", []))


def set_length(cache: Any, length: int) -> None:
    """Rewinds a static cache to ``length`` filled slots in place (StaticLayer has no ``crop``;
    the tensor counter keeps its address for CUDA graphs, trees.md §3.3)."""
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def kv_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def set_kv_tensors(cache: Any, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    if hasattr(cache, "layers"):
        for layer, (k, v) in zip(cache.layers, tensors, strict=True):
            layer.keys, layer.values = k, v
        return
    for i, (k, v) in enumerate(tensors):
        cache.key_cache[i], cache.value_cache[i] = k, v


def check_supported(model: Any) -> None:
    """Custom 4D masks need eager or sdpa attention (flash-attention cannot take a tree mask)."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        raise ValueError(
            f"attn_implementation={impl!r} cannot take a tree attention mask: load the model with "
            'attn_implementation="sdpa" or "eager"'
        )
    window = getattr(model.config, "sliding_window", None)
    if window and getattr(model.config, "use_sliding_window", True):
        # A custom 4D mask bypasses sliding-window layers (trees.md §3.4, pitfall 8).
        layer_types = getattr(model.config, "layer_types", None) or []
        if any("sliding" in str(t) for t in layer_types):
            raise ValueError(f"sliding-window attention (sliding_window={window}) is not supported yet")
