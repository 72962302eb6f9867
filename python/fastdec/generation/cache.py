"""Reading and replacing the per-layer K/V tensors of a transformers cache.

transformers >= 4.54 keeps them as ``cache.layers[i].keys / .values`` (``[B, H, S, D]``); older
releases as ``cache.key_cache[i] / value_cache[i]`` lists (docs/design.md#cache-layouts). There is
no sequence-axis gather API in either, so compaction edits the tensors directly.

transformers 5.24 renamed ``forward``'s ``past_key_values=`` keyword (and the output field) to
``cache``; the old name still works there but warns (a ``FutureWarning``, removal announced for
5.40). :func:`run` passes the cache under the name the model's ``forward`` declares, looked up
once per model class, and :func:`returned` reads it back under either name.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .attention_layout import AttentionLayout, layout


def cache_keyword(model: Any) -> str:
    """``"cache"`` where ``model.forward`` takes that keyword (transformers >= 5.24), else
    ``"past_key_values"``."""
    return _forward_params(model)[0]


def _forward_params(model: Any) -> tuple[str, bool]:
    """(the cache keyword, whether ``forward`` takes ``cache_position``), once per model class."""
    cls = type(model)
    found = _FORWARD_PARAMS.get(cls)
    if found is None:
        try:
            params = set(inspect.signature(cls.forward).parameters)
        except (TypeError, ValueError):  # no introspectable signature: the long-standing names
            params = set()
        keyword = "cache" if "cache" in params else "past_key_values"
        found = _FORWARD_PARAMS[cls] = (keyword, "cache_position" in params)
    return found


_FORWARD_PARAMS: dict[type, tuple[str, bool]] = {}


def run(model: Any, cache: Any, *, start: int | None = None, **kwargs: Any) -> Any:
    """``model(**kwargs)`` with ``cache`` passed under the keyword the model's forward takes.

    ``start``: the cache slot of the first input token. Releases before 5.x take it as
    ``cache_position`` (their static cache writes there; without it they infer the slot by
    counting non-zero entries, which a compacted cache defeats); later ones keep the count in the
    cache itself (:func:`set_length`) and have no such argument.
    """
    keyword, takes_position = _forward_params(model)
    kwargs[keyword] = cache
    if start is not None and takes_position:
        ids = kwargs["input_ids"]
        kwargs["cache_position"] = torch.arange(start, start + ids.shape[1], device=ids.device)
    return model(**kwargs)


def returned(output: Any) -> Any:
    """The cache a forward returned (``output.cache`` on transformers >= 5.24, else
    ``output.past_key_values``), without the deprecated accessor's warning."""
    keys = output.keys() if hasattr(output, "keys") else ()
    if "cache" in keys:
        return output["cache"]
    return output.past_key_values


def new_cache(model: Any, static_len: int | None = None, *, all_full: bool = False) -> Any:
    """A ``DynamicCache``, or a ``StaticCache`` preallocated for ``static_len`` slots per row.

    ``all_full``: every layer a plain full-attention layer, sliding ones included. transformers'
    sliding layers drop what falls out of the window as soon as a forward appends to them, a tree
    under verification included, so a rejected tree would evict entries the window still needs;
    fastdec trims its sliding layers itself, after acceptance (:class:`.kv_state.TreeCache`).
    """
    if static_len is None:
        from transformers import DynamicCache

        return DynamicCache() if all_full else DynamicCache(config=model.config)
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=static_len)
    if all_full:
        from transformers.cache_utils import StaticLayer

        cache.layers = [StaticLayer(max_cache_len=static_len) for _ in cache.layers]
    return cache


def set_length(cache: Any, length: int) -> None:
    """Rewinds a static cache to ``length`` filled slots in place (StaticLayer has no ``crop``;
    the tensor counter keeps its address for CUDA graphs, docs/design.md#static-cache). Releases whose static
    layers keep no counter take the slot from :func:`run`'s ``start`` instead: nothing to do."""
    for layer in cache.layers:
        counter = getattr(layer, "cumulative_length", None)
        if counter is not None:
            counter.fill_(length)


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


def check_supported(model: Any) -> AttentionLayout:
    """Custom 4D masks need eager or sdpa attention (flash-attention cannot take a tree mask), and
    layers whose masks fastdec can write (:func:`.attention_layout.layout`, which is returned)."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        raise ValueError(
            f"attn_implementation={impl!r} cannot take a tree attention mask: load the model with "
            'attn_implementation="sdpa" or "eager"'
        )
    return layout(model)
