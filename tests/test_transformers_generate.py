"""``model.generate(custom_generate=decode_with(...))``: transformers' public route into
fastdec's loop. Greedy output equals ``model.generate(do_sample=False)`` token for token, the
output has generate's layout, and what fastdec does not reproduce is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fastdec.integrations.transformers_generate import decode_with


@pytest.fixture(scope="module")
def stories(stories_model: Any) -> Any:
    model = stories_model[0]
    model.generation_config.eos_token_id = None
    return model


def _prompts() -> list[list[int]]:
    return [[1, 300, 301, 302, 303, 300, 301, 302, 303, 300], [1, 45, 67, 89]]


@pytest.mark.parametrize("drafter", ["pld", "trie", "hybrid", None])
def test_greedy_identical_to_generate(stories: Any, drafter: str | None) -> None:
    for prompt in _prompts():
        ids = torch.tensor([prompt])
        common = {"attention_mask": torch.ones_like(ids), "do_sample": False, "max_new_tokens": 40}
        plain = stories.generate(ids, **common, pad_token_id=0)
        fast = stories.generate(ids, **common, pad_token_id=0, custom_generate=decode_with(drafter, budget=8))
        assert torch.equal(plain, fast)


def test_batch_layout_and_dict_output(stories: Any) -> None:
    """Left-padded rows: the prompt columns come back as given, every row's new tokens equal
    its own unpadded greedy answer, rows that stop at EOS are padded after it."""
    a, b = _prompts()
    width = max(len(a), len(b))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in (a, b)])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in (a, b)])
    solo = [
        stories.generate(torch.tensor([p]), do_sample=False, max_new_tokens=24, pad_token_id=0)
        for p in (a, b)
    ]
    eos = int(solo[1][0, len(b) + 5])  # row b emits it at its 6th new token (row a may too, later)
    out = stories.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=24,
        pad_token_id=0,
        eos_token_id=eos,
        return_dict_in_generate=True,
        custom_generate=decode_with("trie", budget=8),
    )
    seq = out.sequences
    assert torch.equal(seq[:, :width], ids)
    new_b = seq[1, width:].tolist()
    first = new_b.index(eos)
    assert new_b[: first + 1] == solo[1][0, len(b) : len(b) + first + 1].tolist()
    assert all(t == 0 for t in new_b[first + 1 :])
    new_a = seq[0, width:].tolist()
    want_a = solo[0][0, len(a) :].tolist()
    cut = want_a.index(eos) + 1 if eos in want_a else len(want_a)
    assert new_a[:cut] == want_a[:cut]


def test_sampling_runs_and_refusals_name_the_setting(stories: Any) -> None:
    ids = torch.tensor([_prompts()[0]])
    torch.manual_seed(0)
    out = stories.generate(
        ids,
        do_sample=True,
        temperature=0.8,
        top_k=20,
        max_new_tokens=16,
        pad_token_id=0,
        custom_generate=decode_with(),
    )
    assert out.shape == (1, ids.shape[1] + 16)
    for settings, name in (
        ({"num_beams": 2}, "num_beams"),
        ({"repetition_penalty": 1.3}, "RepetitionPenaltyLogitsProcessor"),
        ({"return_dict_in_generate": True, "output_scores": True}, "output_scores"),
    ):
        with pytest.raises(ValueError, match=name):
            stories.generate(
                ids,
                do_sample=False,
                max_new_tokens=4,
                pad_token_id=0,
                custom_generate=decode_with(),
                **settings,
            )
