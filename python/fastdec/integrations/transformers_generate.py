"""transformers' public route to a custom decoding loop: ``generate(custom_generate=callable)``.

``model.generate`` prepares the inputs, the generation config, the logits processors and the
stopping criteria, then hands the decoding loop to a callable passed as ``custom_generate``
(transformers >= 4.56). :func:`decode_with` builds one that runs :func:`fastdec.generate`: tree
drafts, greedy output identical to ``do_sample=False``, sampling in the same distribution as
``do_sample=True`` (same temperature / top-k / top-p; not the same random draws). ::

    from fastdec.integrations.transformers_generate import decode_with

    out = model.generate(input_ids, max_new_tokens=128, do_sample=False,
                         custom_generate=decode_with(drafter="trie"))

Options are bound in :func:`decode_with` (transformers 4.56 passes unknown ``generate``
keywords to the model). What fastdec's loop does not reproduce is refused, naming it: beam
search, logits processors other than temperature / top-k / top-p, stopping criteria other than
the length and EOS ones, and per-step scores or logits in the output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastdec._optional import require
from fastdec.drafters import DEFAULT_DRAFTER

#: processors fastdec's sampler applies itself (from the generation config)
_WARPERS = {"TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"}
#: stopping criteria fastdec's loop applies itself
_STOPS = {"MaxLengthCriteria", "EosTokenCriteria"}


def decode_with(
    drafter: Any = DEFAULT_DRAFTER, *, budget: str | int = "auto", cache: str = "dynamic"
) -> Callable[..., Any]:
    """A ``custom_generate`` callable running :func:`fastdec.generate` with these settings.

    Args:
        drafter: as in :func:`fastdec.generate` (a drafter name is kept per model, so later
            calls start warm).
        budget: as in :func:`fastdec.generate`.
        cache: as in :func:`fastdec.generate`.

    Returns:
        ``decode(model, input_ids, logits_processor, stopping_criteria, generation_config,
        synced_gpus, streamer, **model_kwargs)``, which returns what ``generate`` would: a
        ``[B, T + n]`` LongTensor (rows that stop early padded with ``pad_token_id``), or a
        ``GenerateDecoderOnlyOutput`` with ``sequences`` when ``return_dict_in_generate``.
    """

    def decode(
        model: Any,
        input_ids: Any,
        logits_processor: Any = None,
        stopping_criteria: Any = None,
        generation_config: Any = None,
        synced_gpus: bool = False,
        streamer: Any = None,
        **model_kwargs: Any,
    ) -> Any:
        return _decode(model, input_ids, logits_processor, stopping_criteria, generation_config, streamer,
                       model_kwargs, drafter=drafter, budget=budget, cache=cache)  # fmt: skip

    decode.__name__ = decode.__qualname__ = "fastdec_decode"
    return decode


def _refuse(what: str) -> None:
    raise ValueError(f"fastdec custom_generate does not support {what}")


def _decode(
    model: Any,
    input_ids: Any,
    logits_processor: Any,
    stopping_criteria: Any,
    config: Any,
    streamer: Any,
    model_kwargs: dict[str, Any],
    **settings: Any,
) -> Any:
    torch = require("torch")
    import fastdec

    if getattr(config, "num_beams", 1) != 1:
        _refuse(f"num_beams = {config.num_beams}")
    for p in logits_processor or []:
        if type(p).__name__ not in _WARPERS:
            _refuse(f"the logits processor {type(p).__name__}")
    for c in stopping_criteria or []:
        if type(c).__name__ not in _STOPS:
            _refuse(f"the stopping criterion {type(c).__name__}")
    for flag in ("output_scores", "output_logits", "output_attentions", "output_hidden_states"):
        if getattr(config, flag, False):
            _refuse(f"{flag}=True")
    for key in ("past_key_values", "cache"):
        cached = model_kwargs.get(key)
        if cached is not None and hasattr(cached, "get_seq_length") and cached.get_seq_length() > 0:
            _refuse("a pre-filled cache (pass the whole prompt)")
    mask = model_kwargs.get("attention_mask")
    rows = input_ids.tolist()
    if mask is not None:
        keep = mask.bool().tolist()
        rows = [[t for t, k in zip(r, m, strict=True) if k] for r, m in zip(rows, keep, strict=True)]
    max_new = int(config.max_length) - int(input_ids.shape[1])
    eos = config.eos_token_id
    sample = bool(getattr(config, "do_sample", False))
    top_k = getattr(config, "top_k", None) if sample else None
    top_p = getattr(config, "top_p", None) if sample else None
    out = fastdec.generate(
        model,
        rows,
        max_new_tokens=max(0, max_new),
        temperature=float(config.temperature or 1.0) if sample else 0.0,
        top_k=int(top_k) if top_k else None,
        top_p=float(top_p) if top_p is not None and top_p < 1.0 else None,
        eos_token_id=eos,
        streamer=streamer,
        **settings,
    )
    pad = config.pad_token_id
    if pad is None:
        pad = eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 0)
    width = max((len(s) for s in out.sequences), default=0)
    new = torch.full((input_ids.shape[0], width), int(pad), dtype=input_ids.dtype, device=input_ids.device)
    for i, seq in enumerate(out.sequences):
        if seq:
            new[i, : len(seq)] = torch.tensor(seq, dtype=input_ids.dtype)
    sequences = torch.cat([input_ids, new], dim=1)
    if getattr(config, "return_dict_in_generate", False):
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        return GenerateDecoderOnlyOutput(sequences=sequences)
    return sequences
