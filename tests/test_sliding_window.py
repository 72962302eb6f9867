"""Sliding-window layers in fastdec's tree loop: what their cache holds, tiny windows that trees
outgrow, batches whose rows sit at different positions, the static cache.

Identity with ``model.generate`` is the check everywhere (tests/test_architectures.py runs it over
every architecture); here the sliding layers' memory bound is measured too.
"""

from __future__ import annotations

from typing import Any

import fastdec
import pytest
import torch
from fastdec.generation import kv_state
from fastdec.generation.attention_layout import SLIDING, layout

transformers = pytest.importorskip("transformers")

VOCAB = 64
PROMPT = [5, 9, 3, 17, 22, 8, 11, 40] * 9  # 72 tokens, repetitive: trees are accepted


def tiny(kind: str, window: int, attn: str = "sdpa") -> Any:
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        sliding_window=window,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if kind == "mistral":  # every layer sliding: one mask tensor
        config = transformers.MistralConfig(**common)
        cls = transformers.MistralForCausalLM
    else:  # gemma3: sliding and full layers mixed: a dict of masks
        types = ["sliding_attention"] * 3 + ["full_attention"]
        config = transformers.Gemma3TextConfig(**common, layer_types=types)
        cls = transformers.Gemma3ForCausalLM
    config._attn_implementation = attn
    model = cls(config).eval()
    model.generation_config.eos_token_id = None  # every call runs its full length
    return model


def reference(model: Any, prompt: list[int], new: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0)
    return out[0, len(prompt) :].tolist()  # type: ignore[no-any-return]


@pytest.fixture
def cache_lengths(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], int, list[int]]]:
    """After every compaction: (valid per row, the sliding layers' offset, each layer's length)."""
    seen: list[tuple[list[int], int, list[int]]] = []
    compact = kv_state.TreeCache.compact

    def spy(self: kv_state.TreeCache, paths: Any, live: Any) -> None:
        compact(self, paths, live)
        lengths = [k.shape[2] for k, _ in kv_state.kv.kv_tensors(self.cache)]
        seen.append((list(self.valid), self.offset, lengths))

    monkeypatch.setattr(kv_state.TreeCache, "compact", spy)
    return seen


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_sliding_layers_hold_the_window_not_the_context(kind: str, cache_lengths: list[Any]) -> None:
    window, new = 16, 64
    model = tiny(kind, window)
    out = fastdec.generate(model, [PROMPT], drafter="pld", budget=8, max_new_tokens=new)
    assert out.sequences[0] == reference(model, PROMPT, new)
    assert max(out.accepted_lengths[0]) > 1  # trees were accepted
    sliding = set(layout(model).layers(SLIDING))
    assert cache_lengths
    for valid, offset, lengths in cache_lengths:
        assert offset == valid[0] - (window - 1)  # trimmed to what the next window reaches
        for i, length in enumerate(lengths):
            assert length == (window - 1 if i in sliding else valid[0]), (i, valid, lengths)


def uncached(model: Any, prompt: list[int], new: int) -> list[int]:
    """Greedy decoding that runs the whole sequence every step: the model's semantics with no
    cache to get wrong."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(new):
            ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("window", [1, 2, 5])
@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_windows_smaller_than_the_tree(kind: str, window: int) -> None:
    """Trees deeper than the window: a node sees only its window, tree ancestors included.

    At ``window=1`` transformers' own cached decoding is wrong (its sliding layer keeps
    ``keys[:, :, -window + 1:]``, i.e. everything, when the window is 1), so the reference there
    is decoding without a cache."""
    model = tiny(kind, window, attn="eager" if window == 2 else "sdpa")
    want = uncached(model, PROMPT, 24) if window == 1 else reference(model, PROMPT, 24)
    for drafter in ("pld", "trie"):
        out = fastdec.generate(model, [PROMPT], drafter=drafter, budget=12, max_new_tokens=24)
        assert out.sequences[0] == want, drafter


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_batched_rows_at_different_positions(kind: str, cache_lengths: list[Any]) -> None:
    """Rows of different lengths (some shorter than the window, one far longer) and different
    acceptance: each equals its own ``model.generate``; the sliding layers hold what the least
    advanced live row's window needs."""
    window, new = 16, 48
    model = tiny(kind, window)
    prompts = [PROMPT, PROMPT[:9], [7, 3, 30, 12] * 30, PROMPT[5:30]]
    out = fastdec.generate(model, prompts, drafter="pld", budget=6, max_new_tokens=new)
    for row, prompt in zip(out.sequences, prompts, strict=True):
        assert row == reference(model, prompt, new)
    trimmed = False
    for valid, offset, _ in cache_lengths:
        # rows still far from their last token are live: their windows are all still there
        live = [v for v, p in zip(valid, prompts, strict=True) if v < len(p) + new - 1]
        if live:
            assert offset <= max(0, min(live) - (window - 1))
        trimmed |= offset > 0
    assert trimmed


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_static_cache(kind: str) -> None:
    model = tiny(kind, 16)
    out = fastdec.generate(
        model, [PROMPT, PROMPT[3:40]], drafter="pld", budget=8, max_new_tokens=40, cache="static"
    )
    assert out.sequences == [reference(model, PROMPT, 40), reference(model, PROMPT[3:40], 40)]


def test_a_layer_type_fastdec_cannot_verify_is_refused_at_the_first_call() -> None:
    model = tiny("gemma3", 16)
    model.config.layer_types = ["sliding_attention", "linear_attention", "full_attention", "full_attention"]
    with pytest.raises(ValueError, match="linear_attention"):
        fastdec.generate(model, [PROMPT], max_new_tokens=4)


def test_sampling_across_the_window_is_lossless() -> None:
    """First-two-token frequencies of speculative sampling on a hybrid model whose prompt is past
    its window, against the exact law (uncached forwards), chi-square at fixed seeds; a slightly
    different law must fail (the test has power). A warm Token Recycling drafter drafts the
    model's own likely tokens, so the second token is often an accepted draft."""
    from test_generate import chi_square_pvalue, exact_two_token_law

    model = tiny("gemma3", 16)
    with torch.no_grad():  # sharper than random weights give, so that a wrong law is far off
        model.lm_head.weight.mul_(12.0)
    temperature, top_k = 0.8, 6
    law = exact_two_token_law(model, PROMPT, temperature, top_k, None)
    drafter = fastdec.RecycleDrafter(VOCAB)
    for start in range(0, 40, 8):  # warm its table with the model's own top-k
        fastdec.generate(model, [PROMPT[start:]], drafter=drafter, budget=16, max_new_tokens=24)
    counts: dict[tuple[int, int], int] = {}
    n = multi = 0
    for seed in range(4):
        out = fastdec.generate(
            model,
            [PROMPT] * 400,
            drafter=drafter,
            budget=16,
            max_new_tokens=3,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
        )
        for seq, acc in zip(out.sequences, out.accepted_lengths, strict=True):
            counts[(seq[0], seq[1])] = counts.get((seq[0], seq[1]), 0) + 1
            multi += acc[1] > 1
            n += 1
    assert multi > n // 10
    assert chi_square_pvalue(counts, law, n) > 1e-4
    wrong = exact_two_token_law(model, PROMPT, temperature * 1.5, top_k, None)
    assert chi_square_pvalue(counts, wrong, n) < 1e-6


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_left_padded_batch_through_custom_generate(kind: str) -> None:
    """transformers' batched convention (left padding and an attention mask) through
    ``custom_generate``: each row, pads dropped, equals its own unpadded ``model.generate``."""
    from fastdec.integrations.transformers_generate import decode_with

    model = tiny(kind, 16)
    prompts = [PROMPT, PROMPT[10:40], PROMPT[:20]]
    width, new = max(map(len, prompts)), 32
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=new,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        custom_generate=decode_with(drafter="pld", budget=8),
    )
    for row, prompt in zip(out[:, width:].tolist(), prompts, strict=True):
        assert row == reference(model, prompt, new)
