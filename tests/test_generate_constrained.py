"""fastdec.generate(constraint=...): greedy output equals greedy decoding under the full mask (a
plain step-by-step reference), for every drafter, a batch and every kind of constraint (Regex,
Lark Grammar, JsonSchema, CallbackConstraint); sampled output always satisfies the constraint
and is reproducible for a seed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import fastdec
import numpy as np
import pytest
import torch
from fastdec.vocab import TokenVocab

PATTERNS = [
    r"( [A-Za-z]+){1,30}\.",  # words separated by single spaces, one sentence
    r" [a-z ,]{0,60}(Tim|Lily)[a-z ,]*\.",  # must name a character somewhere
]
PROMPTS = [[1, 403, 407, 261], [1, 13, 260]]
EOS = 2


@pytest.fixture(scope="module")
def stories(stories_model: tuple[torch.nn.Module, list[bytes]]) -> tuple[torch.nn.Module, TokenVocab]:
    model, words = stories_model
    return model, TokenVocab.from_llama2c(words)


SCHEMA = {
    "type": "object",
    # A bounded age: the model's digits would otherwise run past any token budget.
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def callback_from(rx: fastdec.Regex) -> fastdec.CallbackConstraint:
    """A Python checker with the regex's semantics (replays the tokens through it)."""
    start = rx.start()

    def check(tokens: tuple[int, ...], token: int) -> bool:
        state = rx.advance(start, tokens)
        return state is not None and rx.allows(state, token)

    return fastdec.CallbackConstraint(check, rx.vocab_size, eos=[EOS])


KINDS: dict[str, Callable[[fastdec.TokenVocab, str], Any]] = {
    "regex": lambda v, pattern: fastdec.Regex(pattern, v),
    "lark": lambda v, pattern: fastdec.Grammar(f"start: /{pattern}/", v),
    "callback": lambda v, pattern: callback_from(fastdec.Regex(pattern, v)),
}


def masked_greedy(model: torch.nn.Module, prompt: list[int], rx: Any, max_new: int) -> list[int]:
    """The reference: one full forward per token, argmax over the allowed tokens."""
    seq, out, state = list(prompt), [], rx.start()
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(torch.tensor([seq])).logits[0, -1].float().numpy()
            allowed = np.unpackbits(rx.mask(state).view(np.uint8), bitorder="little")[: logits.size]
            if not allowed.any():
                break
            y = int(np.argmax(np.where(allowed.astype(bool), logits, -np.inf)))
            out.append(y)
            seq.append(y)
            if y == EOS:
                break
            state = rx.advance(state, [y])
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_greedy_equals_full_mask_greedy(
    stories: tuple[torch.nn.Module, TokenVocab], pattern: str, kind: str
) -> None:
    model, vocab = stories
    rx = KINDS[kind](vocab, pattern)
    want = [masked_greedy(model, p, rx, 40) for p in PROMPTS]
    drafters = ("trie", "recycling", "pld", None) if kind == "regex" else ("trie", None)
    for drafter in drafters:
        got = fastdec.generate(
            model, PROMPTS, drafter=drafter, max_new_tokens=40, eos_token_id=EOS, budget=8, constraint=rx
        )
        assert got.sequences == want, drafter
    text = b"".join(vocab.tokens[t] for t in want[0] if t != EOS).decode()
    if want[0][-1] == EOS:
        assert re.fullmatch(pattern, text)


def test_json_schema_greedy_and_sampled(stories: tuple[torch.nn.Module, TokenVocab]) -> None:
    model, vocab = stories
    js = fastdec.JsonSchema(SCHEMA, vocab, whitespace_flexible=False)
    want = [masked_greedy(model, p, js, 30) for p in PROMPTS]
    got = fastdec.generate(
        model, PROMPTS, drafter="trie", max_new_tokens=30, eos_token_id=EOS, budget=8, constraint=js
    )
    assert got.sequences == want
    finished = 0
    for seed in range(4):
        out = fastdec.generate(
            model, PROMPTS, drafter="trie", max_new_tokens=40, eos_token_id=EOS, budget=8,
            constraint=js, temperature=1.0, seed=seed,
        )  # fmt: skip
        for seq in out.sequences:
            body = [t for t in seq if t != EOS]
            assert js.advance(js.start(), body) is not None
            if seq[-1] == EOS:
                doc = json.loads(b"".join(vocab.tokens[t] for t in body))
                assert set(doc) == {"name", "age"}
                assert isinstance(doc["age"], int)
                assert 0 <= doc["age"] <= 120
                assert isinstance(doc["name"], str)
                assert len(doc["name"]) <= 12
                finished += 1
    assert finished >= 4  # the test exercises complete documents


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_text_satisfies_the_constraint(
    stories: tuple[torch.nn.Module, TokenVocab], seed: int
) -> None:
    model, vocab = stories
    pattern = PATTERNS[0]
    rx = fastdec.Regex(pattern, vocab)
    kwargs = {"max_new_tokens": 60, "eos_token_id": EOS, "budget": 8, "constraint": rx, "temperature": 1.0}
    got = fastdec.generate(model, PROMPTS, drafter=fastdec.TrieDrafter(), seed=seed, **kwargs)  # type: ignore[arg-type]
    again = fastdec.generate(model, PROMPTS, drafter=fastdec.TrieDrafter(), seed=seed, **kwargs)  # type: ignore[arg-type]
    assert got.sequences == again.sequences
    for seq in got.sequences:
        state = rx.advance(rx.start(), [t for t in seq if t != EOS])
        assert state is not None  # every prefix viable
        if seq[-1] == EOS:
            assert re.fullmatch(pattern, b"".join(vocab.tokens[t] for t in seq[:-1]).decode())


def test_bad_constraint(stories: tuple[torch.nn.Module, TokenVocab]) -> None:
    model, _ = stories
    with pytest.raises(ValueError, match=r"expected a fastdec\.Regex, JsonSchema, Grammar or Callback"):
        fastdec.generate(model, PROMPTS, max_new_tokens=4, constraint="[a-z]+")
    small = fastdec.Regex("a", fastdec.TokenVocab([b"a", b"b"]))
    with pytest.raises(ValueError, match="the constraint's vocabulary has 2 tokens, the model 512"):
        fastdec.generate(model, PROMPTS, max_new_tokens=4, constraint=small)
