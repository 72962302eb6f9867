"""Tiny random-weight causal LMs built from transformers' own config classes (no hub).

:func:`tiny_model` starts from a config class's defaults and overrides the size fields it has
(layers, width, heads, vocabulary, experts, latent ranks, ...) so any decoder architecture of the
causal-LM auto mapping builds in well under a second on a CPU: 4 layers, hidden size 64, 4 query
and 2 key/value heads of dimension 16, a 128-token vocabulary (pad / bos / eos ids 0 / 1 / 2),
256 positions. Every window (``sliding_window``, ``attention_chunk_size``, ...) is shrunk to
:data:`WINDOW` so a prompt of a few dozen tokens crosses it, and per-layer lists
(``layer_types``, ``mlp_layer_types``, ...) are cut to the layer count with every kind the
default list had still present (a hybrid model stays hybrid). Sub-configs (``text_config``,
``vision_config``, ...) are shrunk the same way. Weights are float32, seeded.

Used by ``tests/test_architectures.py`` and ``benches/architectures.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

LAYERS = 4
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
VOCAB = 128
WINDOW = 16
POSITIONS = 256
PAD, BOS, EOS = 0, 1, 2
SEED = 0

#: field -> tiny value, applied where the config class has the field and its default is a number
#: (a ``None`` default usually means "derived" or "off": left alone unless listed in _ALWAYS)
_SIZES: dict[str, int] = {
    # depth
    **dict.fromkeys(
        ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers"),
        LAYERS,
    ),
    # (an encoder-decoder's decoder-only class: transformers sizes its cache by the encoder's depth)
    **dict.fromkeys(("encoder_layers", "num_encoder_layers"), LAYERS),
    # width
    **dict.fromkeys(
        ("hidden_size", "n_embd", "d_model", "n_embed", "emb_dim", "embedding_dim", "embed_dim"), HIDDEN
    ),
    **dict.fromkeys(
        (
            "intermediate_size",
            "ffn_dim",
            "n_inner",
            "d_ff",
            "dff",
            "dim_ff",
            "d_inner",
            "decoder_ffn_dim",
            "encoder_ffn_dim",
            "ffn_hidden_size",
            "feed_forward_size",
            "intermediate_size_mlp",
            "dense_intermediate_size",
            "prefix_dense_intermediate_size",
        ),
        2 * HIDDEN,
    ),
    # attention heads
    **dict.fromkeys(
        (
            "num_attention_heads",
            "n_head",
            "n_heads",
            "num_heads",
            "attention_heads",
            "decoder_attention_heads",
            "encoder_attention_heads",
            "num_decoder_attention_heads",
            "num_encoder_attention_heads",
            "swa_num_attention_heads",
        ),
        HEADS,
    ),
    **dict.fromkeys(
        (
            "num_key_value_heads",
            "num_kv_heads",
            "n_kv_heads",
            "kv_n_heads",
            "multi_query_group_num",
            "swa_num_key_value_heads",
        ),
        KV_HEADS,
    ),
    **dict.fromkeys(
        (
            "head_dim",
            "kv_channels",
            "dim_head",
            "d_head",
            "attention_head_size",
            "swa_head_dim",
            "qk_head_dim",
        ),
        HEAD_DIM,
    ),
    # positions and vocabulary
    **dict.fromkeys(
        (
            "max_position_embeddings",
            "n_positions",
            "n_ctx",
            "max_seq_len",
            "max_target_positions",
            "context_length",
        ),
        POSITIONS,
    ),
    **dict.fromkeys(("vocab_size", "unpadded_vocab_size", "output_vocab_size", "decoder_vocab_size"), VOCAB),
    # windows: below the prompt, so generation crosses them
    **dict.fromkeys(
        (
            "sliding_window",
            "sliding_window_size",
            "attention_chunk_size",
            "attention_window_size",
            "local_attention_window_len",
            "window_size",
        ),
        WINDOW,
    ),
    "max_window_layers": LAYERS // 2,  # Qwen2-style: layers from here on slide
    # mixture of experts
    **dict.fromkeys(
        ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_centroids"), 4
    ),
    **dict.fromkeys(
        ("num_experts_per_tok", "moe_topk", "moe_k", "top_k_experts", "num_experts_per_token"), 2
    ),
    **dict.fromkeys(
        (
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
            "shared_intermediate_size",
            "shared_experts_intermediate_size",
            "moe_shared_expert_intermediate_size",
            "expert_ffn_hidden_size",
        ),
        HIDDEN,
    ),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), 1),
    **dict.fromkeys(("n_group", "topk_group"), 1),
    **dict.fromkeys(("first_k_dense_replace", "num_dense_layers"), 1),
    # multi-head latent attention and sparse indexers
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "o_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "rotary_dim": HEAD_DIM // 2,
    "qk_nope_head_dim": 8,
    "v_head_dim": HEAD_DIM,
    **dict.fromkeys(("index_n_heads", "indexer_n_heads"), 2),
    **dict.fromkeys(("index_head_dim", "indexer_head_dim"), HEAD_DIM),
    # recurrent / state-space parts (sizes only: fastdec refuses these layers)
    **dict.fromkeys(("mamba_d_state", "state_size", "ssm_state_size"), 8),
    **dict.fromkeys(("mamba_n_heads", "mamba_num_heads", "n_mamba_heads"), 8),
    **dict.fromkeys(("mamba_d_head", "mamba_head_dim"), 16),
    **dict.fromkeys(("mamba_n_groups", "mamba_ngroups", "n_groups"), 1),
    **dict.fromkeys(("linear_num_key_heads", "linear_num_value_heads", "linear_num_heads"), 2),
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim", "linear_head_dim"), HEAD_DIM),
    **dict.fromkeys(("time_step_rank", "mamba_dt_rank"), 8),
    "mamba_d_ssm": 2 * HIDDEN,
    "lru_width": HIDDEN,
    # per-layer input embeddings (Gemma 3n / 4): a table of vocabulary x layers x this width
    "vocab_size_per_layer_input": VOCAB,
    "hidden_size_per_layer_input": 8,
    "attention_hidden_size": HIDDEN,
    "num_mtp_layers": 0,
    "num_nextn_predict_layers": 0,
}

#: fields set even where their default is ``None`` (``None`` there means "derived from the other
#: sizes", which some configs then leave unset, or "off": the tiny model turns sliding windows on so
#: every case crosses one)
_ALWAYS = ("sliding_window", "head_dim", "num_key_value_heads")
#: booleans turned on where present: Qwen2-style sliding layers, decoder-only use of BERT-style
#: classes
_SWITCHES = ("use_sliding_window", "is_decoder")

#: per model type, what the generic shrinking gets wrong (applied to the defaults too, whose own
#: construction fails for some)
_FIXES: dict[str, dict[str, Any]] = {
    # default rope_parameters is empty; the rotary embedding reads one entry per layer type
    "cohere_compass_text": {
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        }
    },
    # MoE sizes default to None (unset)
    # the attention sub-config lacks the rope_theta its attention reads
    # (and clamps q/k/v to clip_qkv, which defaults to None)
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    "deepseek_v2": {"num_experts_per_tok": 2},  # defaults to None (unset)
    # input, looped and output blocks of layers, 4 in all (to_dict lists each layer as an attention
    # and an mlp block, and doubles the counts)
    "dory": {
        "n_input_layers": 1,
        "n_recurrent_layers": 2,
        "n_output_layers": 1,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    },
    "dots1": {"n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
    # latent attention: as many key/value heads as queries; the sliding layers' head_dim is their
    # (per-layer) qk_nope_head_dim + qk_rope_head_dim
    "dots3_note_text": {"num_key_value_heads": HEADS, "head_dim": 20},
    # the last num_kv_shared_layers layers reuse the last earlier cache of their type: both types
    # must come before the shared ones
    "gemma3n_text": {
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    },
    # an assistant (drafter) reading its target's cache: its default text config fails its checks
    "gemma4_assistant": {
        "text_config": {
            "hidden_size_per_layer_input": 0,
            "vocab_size_per_layer_input": 0,
            "num_kv_shared_layers": 0,
        }
    },
    # the attention pattern is given as [[pattern, repeats]]
    "gpt_neo": {"attention_types": [[["global", "local"], LAYERS // 2]]},
    # default layer_types is None (unset)
    "lfm2_moe": {"layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    # num_heads * head_dim must equal expand * hidden_size
    "mamba2": {"head_dim": 2 * HIDDEN // HEADS},
    # the sparse indexer's sizes default to None; the n-gram embedding table to 20M rows
    "qwen4_exp_text": {
        "indexer_n_heads": 2,
        "indexer_kv_heads": 1,
        "indexer_head_dim": HEAD_DIM,
        "indexer_budget": 32,
        "indexer_compress_ratio": 4,
        "hc_lowrank": 8,
        "ple_embed_dim": HIDDEN,
        "ngram_vocab_size_base": 256,
        "make_ngram_vocab_size_divisible_by": 8,
        "split_ngram_parts": 4,
        "heads_per_ngram": 2,
    },
    # axial position embeddings: dims sum to hidden_size, shape multiplies to the positions
    "reformer": {
        "axial_pos_embds_dim": [16, 48],
        "axial_pos_shape": [16, 16],
        "attention_head_size": HEAD_DIM,
    },
    # the shared attention blocks are tied across the hybrid layers: at least two of them
    "zamba": {
        "layers_block_type": ["linear_attention", "hybrid", "linear_attention", "hybrid"],
        "attention_hidden_size": 2 * HIDDEN,
        "attention_head_dim": 2 * HIDDEN // HEADS,
    },
    "xmod": {"default_language": "en_XX"},  # its adapters need a language
    "zaya": {"num_experts_per_tok": 1},  # the only value it supports
    # the byte-level hash embeddings default to 500k rows
    "blt": {"encoder_hash_byte_group_vocab": 256, "encoder_hash_byte_group_size": [3, 4]},
}


def _fields(cls: Any) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def _derived(cls: Any, name: str) -> bool:
    """Whether the field ``name`` of a config class defaults to ``None`` (derived from the others)."""
    if dataclasses.is_dataclass(cls):
        return any(f.name == name and f.default is None for f in dataclasses.fields(cls))
    param = inspect.signature(cls.__init__).parameters.get(name)
    return param is not None and param.default is None


def _spread(values: list[Any], n: int) -> list[Any]:
    """``values`` cut to ``n`` entries with each distinct entry of ``values`` present at least
    twice where ``n`` allows (the last positions taken over by the kinds the cut lost)."""
    kinds = list(dict.fromkeys(values))
    out = list(values[:n])
    want = max(1, min(2, n // len(kinds)))
    for kind in kinds:
        for pos in range(n - 1, -1, -1):
            if out.count(kind) >= want:
                break
            if out[pos] != kind and out.count(out[pos]) > want:
                out[pos] = kind
    return out


def _layer_count(values: dict[str, Any]) -> int | None:
    for name in ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers"):
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tiny_kwargs(config_cls: type, defaults: Any, fixes: dict[str, Any]) -> dict[str, Any]:
    """The constructor keywords that make ``defaults`` (an instance of ``config_cls``) tiny."""
    names = _fields(config_cls)
    values = defaults.to_dict()  # (attribute access raises for per-layer attributes)
    kw: dict[str, Any] = {}
    for name, value in _SIZES.items():
        if name not in names:
            continue
        default = values.get(name)
        if _is_int(default) or (default is None and name in _ALWAYS):
            kw[name] = value
    if "kv_lora_rank" in kw:
        # latent attention: keys and values expanded to every query head, the rotary part of a
        # head is what the rotary embedding's head_dim sizes
        kw["num_key_value_heads"] = HEADS
        if "head_dim" in names:
            kw["head_dim"] = _SIZES["qk_rope_head_dim"]
    for name in _SWITCHES:
        if name in names:
            kw[name] = True
    # per-layer lists: cut to LAYERS (sizes made tiny, every kind of a layer-type list kept)
    depth = _layer_count(values)
    for name in names:
        value = values.get(name)
        if not isinstance(value, (list, tuple)) or not depth or len(value) != depth or depth == LAYERS:
            continue
        if name in _SIZES:
            kw[name] = [_SIZES[name]] * LAYERS
        elif all(isinstance(v, (str, bool)) for v in value):
            if len(set(value)) == 1 and _derived(config_cls, name):
                kw[name] = None  # one kind, derived by the config: derived again from the tiny settings
            else:
                kw[name] = _spread(list(value), LAYERS)
        else:
            kw[name] = list(value[:LAYERS])
    # layers reusing an earlier layer's cache: all of them (an assistant reading its target's
    # cache) or the last half
    shared = values.get("num_kv_shared_layers")
    if _is_int(shared) and shared > 0 and depth:
        kw["num_kv_shared_layers"] = LAYERS if shared >= depth else LAYERS // 2
    # per-layer overrides (heterogeneous configs): the layers kept, each size scaled as the global
    per_layer = values.get("per_layer_config")
    if isinstance(per_layer, dict):
        kept = {}
        for key, entry in per_layer.items():
            if int(key) >= LAYERS:
                continue
            scaled = {}
            for field, v in entry.items():
                tiny, base = fixes.get(field, kw.get(field)), values.get(field)
                if _is_int(v) and _is_int(tiny) and _is_int(base) and base:
                    v = max(1, tiny * v // base)
                scaled[field] = v
            kept[key] = scaled
        kw["per_layer_config"] = kept
    # token ids inside the vocabulary: pad / bos / eos are 0 / 1 / 2, any other special token
    # (image, audio, separator, ...) counts down from the top of the vocabulary
    special = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}
    top = VOCAB - 1
    for name in sorted(names):
        if not name.endswith(("_token_id", "_token_index", "_token_ids")):
            continue
        value = values.get(name)
        if name in special:
            kw[name] = [special[name]] if isinstance(value, list) else special[name]
        elif _is_int(value) and value >= 3:
            kw[name], top = top, top - 1
        elif isinstance(value, list) and value and all(_is_int(v) for v in value):
            kw[name] = list(range(top, top - len(value), -1))
            top -= len(value)
    # sub-configs (text, vision, audio, ...), shrunk the same way and passed as dicts, which the
    # parent config builds (and completes) itself
    subs = getattr(config_cls, "sub_configs", {}) or {}
    for name in subs:
        sub = getattr(defaults, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            kw[name] = {**sub.to_dict(), **_tiny_kwargs(type(sub), sub, {})}
    if "initializer_range" in names:
        kw["initializer_range"] = 0.1
    for name, fix in fixes.items():  # sub-config fixes complete the shrunk sub-config
        kw[name] = {**kw[name], **fix} if isinstance(kw.get(name), dict) and name in subs else fix
    return kw


def tiny_config(config_cls: type, model_type: str | None = None, **overrides: Any) -> Any:
    """An instance of ``config_cls`` with every size field it has made tiny, then ``overrides``."""
    fixes = _FIXES.get(model_type or "") or _FIXES.get(getattr(config_cls, "model_type", ""), {})
    try:
        defaults = config_cls()
    except Exception:  # a default that fails the class's own checks
        defaults = config_cls(**fixes)
    kw = _tiny_kwargs(config_cls, defaults, fixes)
    kw.update(overrides)
    return config_cls(**kw)


def model_class(class_name: str) -> Any:
    import transformers

    return getattr(transformers, class_name)


def tiny_model(
    model_type: str,
    class_name: str | None = None,
    *,
    attn_implementation: str | None = None,
    **overrides: Any,
) -> Any:
    """A tiny seeded float32 model of ``model_type`` (class ``class_name``, by default the causal-LM
    auto mapping's), in eval mode on the CPU, with ``attn_implementation`` (by default ``"sdpa"``
    where the class supports it, else ``"eager"``)."""
    import torch
    from transformers import CONFIG_MAPPING, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    cls = model_class(class_name or MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    config_cls = CONFIG_MAPPING[model_type]
    subs = getattr(config_cls, "sub_configs", {}) or {}
    if cls.config_class in subs.values():  # a composite config whose text part the class takes
        config_cls = cls.config_class
    config = tiny_config(config_cls, model_type, **overrides)
    impls = [attn_implementation] if attn_implementation else ["sdpa", "eager"]
    if attn_implementation is None and not getattr(cls, "_supports_sdpa", False):
        impls = ["eager"]
    error: Exception | None = None
    for impl in impls:
        torch.manual_seed(SEED)
        try:
            model = cls._from_config(config, attn_implementation=impl, dtype=torch.float32)
        except ValueError as e:  # this attention is not supported by the class
            error = e
            continue
        # plain greedy decoding by default: no processors from the class's generation defaults
        # (forced end tokens, suppressed tokens, repetition rules)
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS
        )
        return model.eval()
    assert error is not None
    raise error
