"""Grammar constraints through llguidance (``fastdec.Grammar``, ``fastdec.JsonSchema``) and the
Python-callback constraint (``fastdec.CallbackConstraint``).

* A Lark grammar ``start: /R/`` accepts exactly what ``fastdec.Regex(R)`` accepts (random
  patterns and token sequences, hypothesis).
* JSON Schema: documents valid under the schema are accepted and complete; invalid ones are
  rejected at the first token that breaks them; random walks through the mask end in valid
  documents; mask and per-token checks agree at every state.
* AWRS over a grammar state draws from ``p * l / Z`` (chi-square) and its weights average to Z.
* Bad schemas and grammars raise ValueError naming the position; no panic on any input;
  states are values (checking and advancing leave them unchanged), safe to share across threads.
* CallbackConstraint: same semantics and law through a Python predicate; errors propagate.
"""

from __future__ import annotations

import contextlib
import json
import string
import threading
from typing import Any

import fastdec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from test_awrs import ALPHABET_VOCAB, EOS, patterns, small_vocab

# Single characters (so any text can be spelled) plus multi-character tokens that cross JSON
# lexeme boundaries, as real BPE tokens do.
CHARS = [c.encode() for c in string.ascii_letters + string.digits + ' {}[]":,.-_+\\/']
MULTI = [b'{"', b'":', b'","', b'",', b'"}', b"true", b"false", b"null", b"12", b"ab", b'":"', b"},{", b"]}"]
JSON_TOKENS = [b"", *CHARS, *MULTI]
JSON_EOS = 0

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "bc"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def json_vocab() -> fastdec.TokenVocab:
    return fastdec.TokenVocab(JSON_TOKENS, special=[JSON_EOS], eos=[JSON_EOS])


@pytest.fixture(scope="module")
def schema(json_vocab: fastdec.TokenVocab) -> fastdec.JsonSchema:
    return fastdec.JsonSchema(SCHEMA, json_vocab, whitespace_flexible=False)


def spell(text: str) -> list[int]:
    """Token ids spelling ``text`` one character at a time."""
    return [JSON_TOKENS.index(c.encode()) for c in text]


def mask_bits(c: Any, state: Any, n: int) -> list[int]:
    words = np.frombuffer(c.mask(state).tobytes(), dtype=np.uint8)
    return np.unpackbits(words, bitorder="little")[:n].tolist()


# -- Lark regex terminals against the Regex DFA ------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(patterns(), st.lists(st.integers(0, 4), max_size=6))
def test_lark_regex_terminal_equals_regex(pattern: str, tokens: list[int]) -> None:
    vocab = small_vocab()
    rx = fastdec.Regex(pattern, vocab)
    g = fastdec.Grammar(f"start: /{pattern}/", vocab)
    rs: Any = rx.start()
    gs: Any = g.start()
    for t in tokens:
        assert g.allows(gs, t) == rx.allows(rs, t), (pattern, tokens)
        rs, gs = rx.advance(rs, [t]), g.advance(gs, [t])
        assert (gs is None) == (rs is None), (pattern, tokens)
        if rs is None:
            return
    assert g.is_complete(gs) == rx.is_complete(rs)
    assert g.allows(gs, EOS) == rx.is_complete(rs)
    assert mask_bits(g, gs, len(ALPHABET_VOCAB)) == mask_bits(rx, rs, len(ALPHABET_VOCAB))


# -- JSON Schema -------------------------------------------------------------------------------


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents valid under SCHEMA (keys in schema order)."""
    doc: dict[str, Any] = {
        "name": draw(st.text(alphabet=string.ascii_letters + " .", max_size=5)),
        "age": draw(st.integers(0, 10**6)),
    }
    if draw(st.booleans()):
        doc["tags"] = draw(st.lists(st.sampled_from(["a", "bc"]), max_size=3))
    if draw(st.booleans()):
        doc["ok"] = draw(st.booleans())
    return doc


@settings(max_examples=80, deadline=None)
@given(documents())
def test_valid_documents_are_accepted(schema: fastdec.JsonSchema, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, separators=(",", ":"))
    state = schema.advance(schema.start(), spell(text))
    assert state is not None, text
    assert schema.is_complete(state), text
    assert schema.allows(state, JSON_EOS)


@pytest.mark.parametrize(
    ("text", "bad_at"),
    [
        ('{"name":"abcdef"', len('{"name":"abcde')),  # maxLength 5
        ('{"name":"a","age":-1}', len('{"name":"a","age":')),  # minimum 0
        ('{"name":"a","age":1.5}', len('{"name":"a","age":1')),  # integer
        ('{"name":"a","age":1,"x":1}', len('{"name":"a","age":1,"')),  # no extra keys
        ('{"name":"a","age":1,"tags":["b"]}', len('{"name":"a","age":1,"tags":["b')),  # enum (b of bc)
        ('{"age":1}', None),  # name is required: never completes
        ('{"name":"a"}', None),  # age is required
        ('{"name": "a"}', len('{"name":')),  # no whitespace when not flexible
    ],
)
def test_invalid_documents_are_rejected(schema: fastdec.JsonSchema, text: str, bad_at: int | None) -> None:
    ids = spell(text)
    state: Any = schema.start()
    for i, t in enumerate(ids):
        nxt = schema.advance(state, [t])
        if bad_at is not None and i == bad_at:
            assert nxt is None, (text, i)
            assert not schema.allows(state, t)
            return
        if nxt is None:
            assert bad_at is None, (text, i)  # rejected before the expected position
            return
        state = nxt
    assert bad_at is None
    assert not schema.is_complete(state)


def test_whitespace_flexible_is_llguidance_default(json_vocab: fastdec.TokenVocab) -> None:
    flexible = fastdec.JsonSchema(SCHEMA, json_vocab)
    state = flexible.advance(flexible.start(), spell('{ "name" : "a" , "age" : 3 }'))
    assert state is not None
    assert flexible.is_complete(state)


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_end_in_valid_documents(
    schema: fastdec.JsonSchema, json_vocab: fastdec.TokenVocab, seed: int
) -> None:
    """Draw allowed tokens at random (through AWRS); mask and checks agree at every state, and
    the state a token is checked in is unchanged by the check."""
    rng = np.random.default_rng(seed)
    n = len(JSON_TOKENS)
    state: Any = schema.start()
    text = b""
    for step in range(80):
        bits = mask_bits(schema, state, n)
        assert bits == [int(schema.allows(state, t)) for t in range(n)]
        assert bits == mask_bits(schema, state, n)  # checking changed nothing
        logits = rng.normal(size=n).astype(np.float32) * 2
        tok, w, _ = schema.sample(state, logits, 1.0, "geometric", seed * 1000 + step)
        assert tok is not None
        assert w > 0
        assert bits[tok] == 1
        if tok == JSON_EOS:
            doc = json.loads(text)
            assert set(doc) <= set(SCHEMA["properties"])
            assert {"name", "age"} <= set(doc)
            assert len(doc["name"]) <= 5
            return
        text += JSON_TOKENS[tok]
        state = schema.advance(state, [tok])
        assert state is not None


def test_grammar_awrs_law_and_weights(schema: fastdec.JsonSchema) -> None:
    """At a state inside a string (many tokens allowed) and after a key (few allowed)."""
    n = len(JSON_TOKENS)
    rng = np.random.default_rng(7)
    logits = rng.normal(size=n).astype(np.float32)
    p = fastdec._core._softmax64(logits)
    for prefix in ('{"name":"a', '{"name":"a","age":'):
        state = schema.advance(schema.start(), spell(prefix))
        assert state is not None
        allowed = np.array(mask_bits(schema, state, n), dtype=bool)
        g = p * allowed / (p * allowed).sum()
        draws = [schema.sample(state, logits, 1.0, "two-run", s) for s in range(4000)]
        counts = np.bincount([d[0] for d in draws], minlength=n)
        assert counts[~allowed].sum() == 0
        live = g > 0
        assert stats.chisquare(counts[live], g[live] * len(draws)).pvalue > 1e-4
        weights = np.array([d[1] for d in draws])
        z = (weights.mean() - (p * allowed).sum()) / (weights.std() / np.sqrt(len(weights)))
        assert abs(z) < 4


def test_lark_grammar_with_embedded_json(json_vocab: fastdec.TokenVocab) -> None:
    g = fastdec.Grammar('start: "ok:" obj\nobj: %json {"type": "object", "required": ["a"]}', json_vocab)
    state = g.advance(g.start(), spell('ok:{"a":1}'))
    assert state is not None
    assert g.is_complete(state)
    assert g.advance(g.start(), spell("no")) is None


def test_bad_schemas_and_grammars(json_vocab: fastdec.TokenVocab) -> None:
    with pytest.raises(ValueError, match=r"not valid JSON.*line 1 column 10"):
        fastdec.JsonSchema('{"type": ', json_vocab)
    with pytest.raises(ValueError, match=r"invalid schema.*nope"):
        fastdec.JsonSchema({"type": "nope"}, json_vocab)
    nested = {"type": "object", "properties": {"a~b": {"type": "array", "items": {"minimum": "x"}}}}
    with pytest.raises(ValueError, match=r"invalid schema: at /properties/a~0b/items: Expected f64"):
        fastdec.JsonSchema(nested, json_vocab)
    with pytest.raises(TypeError, match="schema must be"):
        fastdec.JsonSchema(3, json_vocab)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"(?s)invalid grammar.*unknown name.*\^"):
        fastdec.Grammar("start: foo", json_vocab)
    with pytest.raises(ValueError, match="end-of-sequence"):
        fastdec.Grammar('start: "a"', fastdec.TokenVocab([b"a"]))
    g = fastdec.Grammar('start: "a"', json_vocab)
    with pytest.raises(IndexError, match="token 999 out of range"):
        g.allows(g.start(), 999)
    with pytest.raises(ValueError, match="logits has length 3, expected 90"):
        g.sample(g.start(), np.zeros(3, dtype=np.float32))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-3, len(JSON_TOKENS) + 3), max_size=12), st.integers(-3, len(JSON_TOKENS) + 3))
def test_no_panic_on_any_tokens(schema: fastdec.JsonSchema, tokens: list[int], token: int) -> None:
    state: Any = schema.start()
    for call in (
        lambda: schema.advance(state, tokens),
        lambda: schema.allows(state, token),
        lambda: schema.sample(state, np.zeros(3, dtype=np.float32)),
    ):
        with contextlib.suppress(ValueError, IndexError, OverflowError):
            call()
    with contextlib.suppress(ValueError, IndexError, OverflowError):
        nxt = schema.advance(state, tokens)
        if nxt is not None:
            schema.mask(nxt)
            schema.is_complete(nxt)


def test_states_are_shared_safely_across_threads(schema: fastdec.JsonSchema) -> None:
    state = schema.advance(schema.start(), spell('{"name":"a'))
    assert state is not None
    want = mask_bits(schema, state, len(JSON_TOKENS))
    errors: list[str] = []

    def work() -> None:
        for _ in range(30):
            got = [int(schema.allows(state, t)) for t in range(len(JSON_TOKENS))]
            if got != want or schema.advance(state, spell('"')) is None:
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# -- Python callback ---------------------------------------------------------------------------


def test_callback_constraint_semantics_and_law() -> None:
    rx = fastdec.Regex("(ab)+", small_vocab())

    def check(tokens: tuple[int, ...], token: int) -> bool:
        state = rx.advance(rx.start(), list(tokens))
        return state is not None and rx.allows(state, token)

    cb = fastdec.CallbackConstraint(check, len(ALPHABET_VOCAB), eos=[EOS])
    assert isinstance(cb, fastdec.Constraint)
    state = cb.advance(cb.start(), [0, 1])
    assert state == (0, 1)
    assert cb.is_complete(state)
    assert cb.advance(state, [1]) is None
    assert mask_bits(cb, state, len(ALPHABET_VOCAB)) == mask_bits(rx, rx.advance(rx.start(), [0, 1]), 7)
    logits = np.array([0.3, -0.2, 1.0, 0.1, 0.5, 0.0, -1.0], dtype=np.float32)
    p = fastdec._core._softmax64(logits)
    allowed = np.array(mask_bits(cb, (), 7), dtype=bool)
    g = p * allowed / (p * allowed).sum()
    toks = [cb.sample((), logits, 1.0, "geometric", s)[0] for s in range(4000)]
    counts = np.bincount(np.array(toks), minlength=7)
    assert counts[~allowed].sum() == 0
    assert stats.chisquare(counts[allowed], g[allowed] * len(toks)).pvalue > 1e-4


def test_callback_errors_and_arguments() -> None:
    def boom(tokens: tuple[int, ...], token: int) -> bool:
        raise RuntimeError(f"checker failed on {token}")

    cb = fastdec.CallbackConstraint(boom, 4)
    with pytest.raises(RuntimeError, match="checker failed"):
        cb.sample((), np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="invalid vocab_size=0"):
        fastdec.CallbackConstraint(boom, 0)
    with pytest.raises(ValueError, match=r"eos ids \[7\]"):
        fastdec.CallbackConstraint(boom, 4, eos=[7])
    with pytest.raises(IndexError, match="token 9 out of range"):
        cb.allows((), 9)
    with pytest.raises(ValueError, match="logits/probs have 2 entries"):
        cb.sample_probs((), [0.5, 0.5])
