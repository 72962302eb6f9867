"""fastdec.vocab on real tokenizers: SmolLM2 (byte-level BPE), Llama-2 (SentencePiece) and llama2.c tok512.

The property checked everywhere: the bytes of a tokenization's ids, concatenated, are the encoded text.
Independent references: the tokenizers' own ``decode`` (exhaustively, over every token), the
``sentencepiece`` library for Llama-2 and :func:`fastdec.models.decode_llama2c` (run.c's rules).
"""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastdec
import numpy as np
import pytest
from conftest import SHARED_MODELS, STORIES_TOKENIZER_PATH, shared_model_file
from fastdec import vocab as vocab_module
from fastdec.models import decode_llama2c, load_llama2c_tokenizer
from fastdec.vocab import TokenVocab
from hypothesis import given, settings
from hypothesis import strategies as st

SMOLLM_TOKENIZER_PATH = SHARED_MODELS / "smollm2-135m-instruct" / "tokenizer.json"
LLAMA2_TOKENIZER_PATH = SHARED_MODELS.parent / "tokenizers" / "llama2" / "tokenizer.model"

TEXTS = [
    "Hello, world!",
    "line one\nline two\n\n\ttabbed\r\n",
    "two  spaces,   three, \n \n  indented",
    "emoji 😀🎉 and a family 👩\u200d👩\u200d👧",
    "café naïve Ωmega Å ﬁ 中文 日本語 한국어 العربية",
    "def f(x):\n    return {'a': [1, 2.5e-3], \"b\": None}  # ok\n",
    "trailing space ",
    "\u00a0nbsp, zero\u200bwidth, \x00 nul, \x7f del",
]


# Bytes that no SmolLM2 token holds alone: besides the never-valid UTF-8 bytes 0xC0, 0xC1 and
# 0xF5..0xFF, the lead bytes 0xF1, 0xF2 (code points U+40000..U+BFFFF, all unassigned) and six
# control characters. Its BPE has no unk token, so encoding silently drops them; round trips avoid them.
SMOLLM_MISSING_BYTES = frozenset(
    [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, *range(0xF1, 0xF3), *range(0xF5, 0x100)]
)
SMOLLM_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8", max_codepoint=0x3FFFF, exclude_characters="\x04\x06\x13\x14\x16\x1d"),
        st.characters(codec="utf-8", min_codepoint=0xC0000),
    ),
    max_size=40,
)


def _concat(vocab: TokenVocab, ids: list[int]) -> bytes:
    return b"".join(vocab.tokens[i] for i in ids)


def _utf8(token: bytes) -> str | None:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smollm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_model_file(SMOLLM_TOKENIZER_PATH).parent)


@pytest.fixture(scope="module")
def smollm_vocab(smollm_tokenizer: Any) -> TokenVocab:
    return TokenVocab.from_hf_tokenizer(smollm_tokenizer)


@pytest.fixture(scope="module")
def llama_sp() -> Any:
    """The Llama-2 tokenizer itself: the ``sentencepiece`` library on ``tokenizer.model``."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(shared_model_file(LLAMA2_TOKENIZER_PATH)))


@pytest.fixture(scope="module")
def llama_fast_tokenizer(llama_sp: Any) -> Any:
    """``LlamaTokenizer`` (transformers 5: a ``tokenizers`` BPE with byte fallback) from the .model.

    transformers 5 converts a ``.model`` through protobuf, which is not installed, and
    ``LlamaTokenizer(vocab_file=...)`` quietly builds a 3-token tokenizer. So this does what its
    ``SentencePieceExtractor`` does, without protobuf: the pieces in id order and merges from the
    pieces ranked by score (``generate_merges``).
    """
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    pieces = [llama_sp.id_to_piece(i) for i in range(llama_sp.get_piece_size())]
    scores = {piece: llama_sp.get_score(i) for i, piece in enumerate(pieces)}
    vocab = {piece: i for i, piece in enumerate(pieces)}
    return LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores))


@pytest.fixture(scope="module")
def llama_slow_tokenizer() -> Any:
    """transformers' slow SentencePiece tokenizer (``sp_model``) on the same file."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    return SentencePieceBackend(
        vocab_file=str(shared_model_file(LLAMA2_TOKENIZER_PATH)),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


@pytest.fixture(scope="module")
def llama_vocab(llama_fast_tokenizer: Any) -> TokenVocab:
    return TokenVocab.from_hf_tokenizer(llama_fast_tokenizer)


@pytest.fixture(scope="module")
def tok512() -> list[bytes]:
    return load_llama2c_tokenizer(shared_model_file(STORIES_TOKENIZER_PATH))


# --------------------------------------------------------------------------- byte-level BPE: SmolLM2


def test_gpt2_byte_map_is_the_tokenizers_alphabet() -> None:
    from tokenizers.pre_tokenizers import ByteLevel

    table = vocab_module._gpt2_unicode_to_byte()
    assert set(table) == set(ByteLevel.alphabet())
    assert sorted(table.values()) == list(range(256))
    assert (table["Ġ"], table["Ċ"], table["ĉ"], table["A"], table["ÿ"]) == (0x20, 0x0A, 0x09, 0x41, 0xFF)


def test_smollm_layout(smollm_tokenizer: Any, smollm_vocab: TokenVocab) -> None:
    assert smollm_vocab.size == len(smollm_vocab.tokens) == 49152
    assert smollm_vocab.eos_token_ids == {2}  # <|im_end|>
    assert smollm_vocab.special == set(range(17))  # <|endoftext|>, <|im_start|>, ..., <empty_output>
    assert all(smollm_vocab.tokens[i] == b"" for i in smollm_vocab.special)
    pieces = smollm_tokenizer.convert_ids_to_tokens(list(range(smollm_vocab.size)))
    spaced = [i for i, piece in enumerate(pieces) if piece.startswith("Ġ")]
    assert len(spaced) > 10_000
    assert all(smollm_vocab.tokens[i].startswith(b" ") for i in spaced)
    assert smollm_vocab.tokens[smollm_tokenizer.convert_tokens_to_ids("Ċ")] == b"\n"
    assert smollm_vocab.tokens[smollm_tokenizer.convert_tokens_to_ids("Ġworld")] == b" world"


@pytest.mark.parametrize("text", ["", *TEXTS])
def test_smollm_round_trip(smollm_tokenizer: Any, smollm_vocab: TokenVocab, text: str) -> None:
    ids = smollm_tokenizer.encode(text, add_special_tokens=False)
    assert _concat(smollm_vocab, ids) == text.encode("utf-8")


def test_smollm_every_token_matches_decode(smollm_tokenizer: Any, smollm_vocab: TokenVocab) -> None:
    """Every token that is whole UTF-8 decodes to its bytes; the others are partial characters."""
    decoded = smollm_tokenizer.batch_decode([[i] for i in range(smollm_vocab.size)])
    partial = 0
    for i, (token, text) in enumerate(zip(smollm_vocab.tokens, decoded, strict=True)):
        expected = _utf8(token)
        if i in smollm_vocab.special:
            continue
        if expected is None:
            partial += 1
            assert "\ufffd" in text, (i, token, text)
        else:
            assert text == expected, (i, token, text)
    assert 0 < partial < 1000


def test_smollm_missing_bytes(smollm_tokenizer: Any, smollm_vocab: TokenVocab) -> None:
    """The tokenizer, not the vocabulary, loses these bytes: encoding drops them without a trace."""
    single = {token[0] for token in smollm_vocab.tokens if len(token) == 1}
    assert set(range(256)) - single == SMOLLM_MISSING_BYTES
    ids = smollm_tokenizer.encode("a\x04b\U00040000c", add_special_tokens=False)
    assert _concat(smollm_vocab, ids) == b"a" + b"b" + "\U00040000".encode()[1:] + b"c"


@settings(max_examples=50)
@given(text=SMOLLM_TEXT)
def test_smollm_round_trip_random_text(smollm_tokenizer: Any, smollm_vocab: TokenVocab, text: str) -> None:
    ids = smollm_tokenizer.encode(text, add_special_tokens=False)
    assert _concat(smollm_vocab, ids) == text.encode("utf-8")


def test_smollm_added_tokens_and_padding() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shared_model_file(SMOLLM_TOKENIZER_PATH).parent)
    tokenizer.add_tokens(["<my_word>", " fancy"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    word, fancy, tool = tokenizer.convert_tokens_to_ids(["<my_word>", " fancy", "<|tool|>"])
    vocab = TokenVocab.from_hf_tokenizer(tokenizer, vocab_size=49152 + 64)
    assert vocab.size == 49216
    assert (vocab.tokens[word], vocab.tokens[fancy], vocab.tokens[tool]) == (b"<my_word>", b" fancy", b"")
    assert tool in vocab.special
    assert word not in vocab.special
    assert fancy not in vocab.special
    # the model's padded logits beyond the tokenizer: special, never allowed by a constraint
    assert set(range(49155, 49216)) <= vocab.special
    assert vocab.tokens[49155:] == [b""] * 61
    text = "a fancy <my_word>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert fancy in ids
    assert word in ids
    assert _concat(vocab, ids) == text.encode()


def test_smollm_eos_override(smollm_tokenizer: Any) -> None:
    assert TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=[0, 2]).eos_token_ids == {0, 2}
    assert TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=np.int64(0)).eos_token_ids == {0}
    # an eos id that is an ordinary token becomes special: it adds no text
    newline = smollm_tokenizer.convert_tokens_to_ids("Ċ")
    vocab = TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=(2, newline))
    assert newline in vocab.special
    assert vocab.tokens[newline] == b""


# --------------------------------------------------------------------------- SentencePiece: Llama-2


def test_llama_layout(llama_vocab: TokenVocab, llama_sp: Any) -> None:
    assert llama_vocab.size == 32000
    assert llama_vocab.eos_token_ids == {2}
    assert llama_vocab.special == {0, 1, 2}  # <unk>, <s>, </s>
    assert llama_vocab.tokens[:3] == [b"", b"", b""]
    # byte-fallback pieces <0x00>..<0xFF> are ids 3..258
    assert llama_vocab.tokens[3:259] == [bytes([b]) for b in range(256)]
    assert llama_vocab.tokens[llama_sp.piece_to_id("<0x0A>")] == b"\n"
    assert llama_vocab.tokens[llama_sp.piece_to_id("▁Hello")] == b" Hello"
    assert llama_vocab.tokens[llama_sp.piece_to_id("▁▁")] == b"  "
    assert not any("▁".encode() in token for token in llama_vocab.tokens)


def test_llama_fast_and_slow_agree(llama_vocab: TokenVocab, llama_slow_tokenizer: Any) -> None:
    assert TokenVocab.from_hf_tokenizer(llama_slow_tokenizer) == llama_vocab


@pytest.mark.parametrize("text", TEXTS)
def test_llama_round_trip(
    llama_vocab: TokenVocab, llama_sp: Any, llama_fast_tokenizer: Any, text: str
) -> None:
    # SentencePiece (add_dummy_prefix) always puts "▁" in front of the text, so the bytes are
    # b" " + text. The tokenizers Metaspace pre-tokenizer (prepend_scheme "first") adds it only
    # when the text does not already start with a space.
    assert _concat(llama_vocab, llama_sp.encode(text)) == b" " + text.encode()
    prefix = b"" if text.startswith(" ") else b" "
    ids = llama_fast_tokenizer.encode(text, add_special_tokens=False)
    assert _concat(llama_vocab, ids) == prefix + text.encode()
    assert _concat(llama_vocab, llama_sp.encode(" " + text)) == b"  " + text.encode()


@settings(max_examples=30)
@given(text=st.text(min_size=1, max_size=40))
def test_llama_round_trip_random_text(llama_vocab: TokenVocab, llama_sp: Any, text: str) -> None:
    assert _concat(llama_vocab, llama_sp.encode(text)) == b" " + text.encode()


def test_llama_every_token_matches_decode(llama_vocab: TokenVocab, llama_fast_tokenizer: Any) -> None:
    """Decoded after the byte token "A": the decoder's Strip then drops no space of the token."""
    anchor = 3 + ord("A")
    decoded = llama_fast_tokenizer.batch_decode([[anchor, i] for i in range(llama_vocab.size)])
    for i, (token, text) in enumerate(zip(llama_vocab.tokens, decoded, strict=True)):
        expected = _utf8(token)
        if i not in llama_vocab.special and expected is not None:
            assert text == "A" + expected, (i, token, text)


# --------------------------------------------------------------------------- llama2.c tok512


def test_llama2c_layout(tok512: list[bytes]) -> None:
    vocab = TokenVocab.from_llama2c(tok512)
    assert vocab.size == len(tok512) == 512
    assert vocab.special == {0, 1, 2}
    assert vocab.eos_token_ids == {2}
    assert tok512[13] == b"<0x0A>"
    assert vocab.tokens[3:259] == [bytes([b]) for b in range(256)]
    assert not any("▁".encode() in token for token in vocab.tokens)
    assert sum(token.startswith(b" ") for token in vocab.tokens) > 50


@settings(max_examples=50)
@given(ids=st.lists(st.integers(0, 511).filter(lambda i: i != 1), max_size=30))
def test_llama2c_matches_run_c_decoding(tok512: list[bytes], ids: list[int]) -> None:
    """run.c's decoding (skipping unk/eos) of any ids without bos, which would drop a space."""
    vocab = TokenVocab.from_llama2c(tok512)
    assert _concat(vocab, ids).decode("utf-8", errors="replace") == decode_llama2c(tok512, ids)


# --------------------------------------------------------------------------- validation


def test_bad_hf_arguments(smollm_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="vocab_size 49151 is smaller than the tokenizer's 49152 tokens"):
        TokenVocab.from_hf_tokenizer(smollm_tokenizer, vocab_size=49151)
    with pytest.raises(ValueError, match="eos token id 49152 out of range for vocab size 49152"):
        TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=49152)
    with pytest.raises(ValueError, match="eos token id -1 out of range"):
        TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=[2, -1])
    with pytest.raises(ValueError, match=r"eos token id '2' is not an integer"):
        TokenVocab.from_hf_tokenizer(smollm_tokenizer, eos_token_ids=["2"])
    with pytest.raises(ValueError, match=r"vocab_size 5\.0 is not an integer"):
        TokenVocab.from_hf_tokenizer(smollm_tokenizer, vocab_size=5.0)  # type: ignore[arg-type]


def test_unsupported_and_missing_decoders() -> None:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wordpiece.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, eos_token="[UNK]")
    with pytest.raises(ValueError, match=r"unsupported tokenizer decoder step .*WordPiece"):
        TokenVocab.from_hf_tokenizer(tokenizer)
    wordpiece.decoder = None
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, eos_token="[UNK]")
    with pytest.raises(ValueError, match="has no decoder"):
        TokenVocab.from_hf_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="no eos_token_id"):
        TokenVocab.from_hf_tokenizer(PreTrainedTokenizerFast(tokenizer_object=wordpiece))


@pytest.mark.parametrize(
    ("decoder", "piece", "expected"),
    [
        ({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}, "▁a▁b", b" a b"),
        ({"type": "Metaspace", "replacement": "_", "add_prefix_space": True}, "_x", b" x"),
        (
            {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
            "<0xE2>",
            b"\xe2",
        ),
        ({"type": "ByteLevel"}, "ĠhÃ©", b" h\xc3\xa9"),
        ({"type": "ByteLevel"}, "<|im start|>", b"<|im start|>"),  # outside the byte alphabet
    ],
)
def test_piece_decoder_steps(decoder: dict[str, Any], piece: str, expected: bytes) -> None:
    assert vocab_module._piece_decoder(decoder)(piece) == expected


@pytest.mark.parametrize(
    "decoder",
    [
        {"type": "Replace", "pattern": {"Regex": "▁+"}, "content": " "},
        {"type": "Sequence", "decoders": [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        {"type": "BPEDecoder", "suffix": "</w>"},
    ],
)
def test_piece_decoder_rejects(decoder: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unsupported tokenizer decoder step"):
        vocab_module._piece_decoder(decoder)


@pytest.mark.parametrize(
    ("tokens", "special", "eos", "message"),
    [
        ([b"", b"a"], {0}, {0, 1}, r"eos token ids \[1\] are not in special"),
        ([b"", b"a"], {0, 1}, {0}, r"token 1 is special but adds b'a'"),
        ([b"", b""], {0}, {0}, "token 1 is not special but adds no bytes"),
        ([b"", "a"], {0}, {0}, "token 1 is str 'a', expected bytes"),
        ([b"", b"a"], {0, 2}, {0}, "special token id 2 out of range for vocab size 2"),
    ],
)
def test_invariants(tokens: list[bytes], special: set[int], eos: set[int], message: str) -> None:
    """The invariant the tokenizer constructors check on the table they build (``TokenVocab``
    itself takes any table, as the native vocabulary does)."""
    with pytest.raises(ValueError, match=message):
        vocab_module._check_table(list(tokens), frozenset(special), frozenset(eos))


def test_one_vocabulary_type() -> None:
    """fastdec.TokenVocab is the native vocabulary with the tokenizer constructors; native() is the
    vocabulary itself."""
    assert fastdec.TokenVocab is TokenVocab
    assert issubclass(TokenVocab, fastdec._core.TokenVocab)
    vocab = TokenVocab.from_llama2c([b"<unk>", b"\n<s>\n", b"\n</s>\n", b"a", b"b"])
    assert isinstance(vocab, TokenVocab)
    assert vocab.native() is vocab
    assert (vocab.size, vocab.special, vocab.eos_token_ids) == (5, frozenset({0, 1, 2}), frozenset({2}))
    rx = fastdec.Regex("a+", vocab)
    assert rx.advance(rx.start(), [3, 3]) is not None
    assert not rx.allows(rx.start(), 4)
    table = TokenVocab([b"", b"a"], {0}, {0})
    assert (table.tokens, len(table)) == ([b"", b"a"], 2)
    assert not hasattr(vocab_module, "TokenVocabulary")  # never released under that name
    with pytest.raises(IndexError, match="out of range"):
        TokenVocab([b"a"], eos=[3])


def test_bad_llama2c_vocab() -> None:
    with pytest.raises(ValueError, match="at least 3 tokens"):
        TokenVocab.from_llama2c([b"<unk>", b"<s>"])
    with pytest.raises(ValueError, match="piece 3 is str"):
        TokenVocab.from_llama2c([b"<unk>", b"<s>", b"</s>", "x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="eos token id 4 out of range for vocab size 4"):
        TokenVocab.from_llama2c([b"<unk>", b"<s>", b"</s>", b"x"], eos_token_ids=4)


# --------------------------------------------------------------------------- packaging


def test_doctests() -> None:
    assert doctest.testmod(vocab_module).failed == 0


def test_import_needs_only_numpy() -> None:
    heavy = ("torch", "transformers", "tokenizers", "sentencepiece")
    code = f"import sys, fastdec.vocab; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.strip() == "[]"
