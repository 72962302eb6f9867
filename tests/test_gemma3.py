"""Gemma 3 270M, a real model with sliding-window layers (window 512, five sliding layers to one
full), on prompts longer than its window: greedy identity with ``model.generate`` through
``fastdec.generate`` and transformers' ``custom_generate``, and the sampling path.

The statistical check of sampling across a window (chi-square against the exact law) runs on a
tiny hybrid model in tests/test_sliding_window.py, where thousands of samples are cheap; here the
real model checks that sampling restricted to one token (``top_k=1``) is exactly greedy decoding,
drafts accepted on the way.
"""

from __future__ import annotations

import json
from typing import Any

import fastdec
import pytest
import torch
from conftest import SHARED_MODELS
from fastdec.integrations.transformers_generate import decode_with

QUESTIONS = SHARED_MODELS.parent / "data" / "specbench" / "question.jsonl"
WINDOW = 512
NEW = 40


@pytest.fixture(scope="module")
def long_prompts(gemma3_model: tuple[Any, Any]) -> list[list[int]]:
    """Two Spec-Bench retrieval-augmented questions, the pretrained model's plain text (it has no
    chat template), each longer than the window."""
    _, tok = gemma3_model
    if not QUESTIONS.is_file():
        pytest.fail(f"Spec-Bench questions {QUESTIONS} are missing")
    rag = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if '"rag"' in line]
    prompts = [tok(q["turns"][0] + "\n\nAnswer:").input_ids for q in rag[:2]]
    assert all(WINDOW < len(p) < 1200 for p in prompts), [len(p) for p in prompts]
    return prompts


def hf_greedy(model: Any, prompt: list[int], eos: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW, eos_token_id=eos)
    return out[0, len(prompt) :].tolist()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def references(gemma3_model: tuple[Any, Any], long_prompts: list[list[int]]) -> list[list[int]]:
    model, tok = gemma3_model
    return [hf_greedy(model, p, tok.eos_token_id) for p in long_prompts]


@pytest.mark.parametrize("drafter", ["trie", "pld"])
def test_greedy_identical_past_the_window(
    gemma3_model: tuple[Any, Any], long_prompts: list[list[int]], references: list[list[int]], drafter: str
) -> None:
    model, tok = gemma3_model
    eos = tok.eos_token_id
    for prompt, want in zip(long_prompts, references, strict=True):
        out = fastdec.generate(
            model, [prompt], drafter=drafter, max_new_tokens=NEW, eos_token_id=eos, budget=8
        )
        assert out.sequences[0] == want
    # both prompts as one batch, rows at different positions, the default budget
    out = fastdec.generate(model, long_prompts, drafter=drafter, max_new_tokens=NEW, eos_token_id=eos)
    assert out.sequences == references


def test_custom_generate_past_the_window(
    gemma3_model: tuple[Any, Any], long_prompts: list[list[int]], references: list[list[int]]
) -> None:
    model, tok = gemma3_model
    prompt = long_prompts[0]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=NEW,
            eos_token_id=tok.eos_token_id,
            custom_generate=decode_with(drafter="pld", budget=8),
        )
    assert out[0, len(prompt) :].tolist() == references[0]


def test_sampling_one_token_is_greedy(
    gemma3_model: tuple[Any, Any], long_prompts: list[list[int]], references: list[list[int]]
) -> None:
    """``top_k=1`` leaves one token of probability 1 at every step: lossless speculative sampling
    must then emit exactly the greedy tokens, whatever the coins, accepting drafts on the way."""
    model, tok = gemma3_model
    out = fastdec.generate(
        model,
        long_prompts,
        drafter="pld",
        budget=8,
        max_new_tokens=NEW,
        eos_token_id=tok.eos_token_id,
        temperature=0.7,
        top_k=1,
        seed=3,
    )
    assert out.sequences == references
    assert max(max(a) for a in out.accepted_lengths) > 1
