"""fastdec.integrations.llama_cpp without llama-cpp-python: the calls its ``generate`` makes.

llama-cpp-python calls the draft model with the whole context after each verification (the
accepted draft tokens and the sampled one appended); these tests drive the adapter the same
way. The real engine runs it in tests/llama_cpp.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastdec.integrations.llama_cpp import FastdecDraftModel


def _generate(model: FastdecDraftModel, prompt: list[int], answer: list[int]) -> list[int]:
    """llama-cpp-python's loop with a model that answers ``answer`` greedily: drafts are kept
    up to the first wrong token, then one true token is appended. Returns the draft lengths."""
    ctx = list(prompt) + answer[:1]
    lengths = []
    while len(ctx) < len(prompt) + len(answer):
        draft = model(np.array(ctx, dtype=np.intc))
        assert draft.dtype == np.intc
        lengths.append(len(draft))
        done = len(ctx) - len(prompt)
        truth = answer[done:]
        good = 0
        while good < min(len(draft), len(truth)) and draft[good] == truth[good]:
            good += 1
        ctx += truth[: good + 1]
    return lengths


def test_prompt_lookup_draft() -> None:
    model = FastdecDraftModel("pld", num_pred_tokens=3, prompt_lookup_min=1, prompt_lookup_max=2)
    assert model(np.array([5, 6, 7, 8, 5, 6], dtype=np.intc)).tolist() == [7, 8, 5]
    assert model(np.array([], dtype=np.intc)).tolist() == []


def test_one_request_across_calls_and_memory_across_requests() -> None:
    model = FastdecDraftModel("trie", num_pred_tokens=8, adaptive=False)
    prompt = [1000 + i for i in range(12)]
    answer = [2000 + (i * 7) % 31 for i in range(40)]
    _generate(model, prompt, answer)
    s = model.stats()
    assert s["requests_started"] == 1  # every call continued the same request
    assert s["requests_stopped"] == 0
    # an unrelated context starts a new request and stops the first (its output is remembered)
    model(np.array([7, 8, 9], dtype=np.intc))
    assert model.stats()["requests_started"] == 2
    assert model.stats()["requests_stopped"] == 1
    # the same prompt again: the shared trie drafts the first answer, far beyond one token
    again = model(np.array([*prompt, answer[0]], dtype=np.intc)).tolist()
    assert again == answer[1:9]


def test_finish_and_adaptive_length_stays_within_k() -> None:
    model = FastdecDraftModel("hybrid", num_pred_tokens=5)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 50, size=30).tolist()
    lengths = _generate(model, prompt, rng.integers(0, 50, size=60).tolist())
    assert max(lengths) <= 5
    model.finish()
    assert model.stats()["requests_live"] == 0


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="'tree'"):
        FastdecDraftModel("tree")
    with pytest.raises(ValueError, match="num_pred_tokens = 0"):
        FastdecDraftModel(num_pred_tokens=0)
    with pytest.raises(ValueError, match="prompt_lookup_mn"):
        FastdecDraftModel("pld", prompt_lookup_mn=2)
