"""Token id -> the exact bytes that token adds to the decoded text, for constrained decoding.

Regex and JSON-schema constraints are checked on the bytes the model writes, one token at a time, so
they need, for every id the model can sample, the bytes that token appends (the table llguidance's
``TokTrie`` and outlines-core's ``Vocabulary`` are built from). ``tokenizer.decode([id])`` does not
give it: SentencePiece decoders strip the leading space of the first token, and a byte token that is
not a whole UTF-8 character decodes to U+FFFD. :class:`TokenVocab` therefore applies the rules
of the tokenizer's decoder to each token string on its own:

* **byte-level BPE** (GPT-2, SmolLM2, Llama-3, Qwen): every character of a token string stands for
  one byte through GPT-2's ``bytes_to_unicode`` table (openai/gpt-2 ``src/encoder.py``), e.g.
  ``Ġ`` = space, ``Ċ`` = newline; the table is inverted here.
* **SentencePiece** (Llama-2, Mistral, Gemma; decoders ``Metaspace`` or ``Replace('▁', ' ')`` with
  ``ByteFallback``): ``▁`` is a space and a byte-fallback piece ``<0xAB>`` is the single byte 0xAB.
  The space SentencePiece prepends to a text (its "dummy prefix") is part of the first token's
  bytes here: the decoder's ``Strip`` drops it only at the very start of a sequence, and a
  constraint on a continuation sees the space.
* **special tokens** (bos, eos, pad, unk, chat markers): ``b""`` and listed in ``special``; they add
  no text, so a constraint never allows them, except eos when the constraint accepts.

Building the table is one pass over the vocabulary (about 0.2 s for SmolLM2's 49k tokens).
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from fastdec._core import TokenVocab as _NativeTokenVocab

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["TokenVocab"]

#: SentencePiece's whitespace marker, U+2581 LOWER ONE EIGHTH BLOCK
_SPIECE_UNDERLINE = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_LLAMA2C_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
# Ids 0, 1, 2 of a llama2.c vocabulary are sentencepiece's unk, bos and eos (llama2.c tokenizer.py
# exports bos as "\n<s>\n" and eos as "\n</s>\n", run.c skips them when printing).
_LLAMA2C_SPECIAL = (0, 1, 2)


class TokenVocab(_NativeTokenVocab):
    """The bytes each token id adds to the decoded text, the special tokens (never allowed by a
    constraint) and the end-of-sequence ids (allowed where the text is complete): what
    :class:`fastdec.Regex`, :class:`fastdec.Grammar` and :class:`fastdec.JsonSchema` read.

    Build one from a tokenizer with :meth:`from_hf_tokenizer` or :meth:`from_llama2c` (they
    make every token that adds no bytes special, so a constrained model cannot emit tokens
    forever without progress), or give the table directly.

    Args:
        tokens: ``[size]`` bytes; ``tokens[i]`` is what token ``i`` appends to the text.
        special: ids of special / control tokens, and of ids the tokenizer does not define
            (padding up to the model's logits size).
        eos: the ids that end generation.

    Raises:
        ValueError: an empty vocabulary or a negative id.
        IndexError: a special or eos id outside the vocabulary.

    >>> vocab = TokenVocab([b"", b"a", b" b"], special=[0], eos=[0])
    >>> vocab.size, b"".join(vocab.tokens[i] for i in (1, 2, 1))
    (3, b'a ba')
    """

    _tokens: list[bytes]
    _special: frozenset[int]
    _eos: frozenset[int]

    def __new__(cls, tokens: Sequence[bytes], special: Iterable[int] = (), eos: Iterable[int] = ()) -> Self:
        table = list(tokens)
        special_ids = frozenset(_as_id(t, "special token id") for t in special)
        eos_ids = frozenset(_as_id(t, "eos token id") for t in eos)
        # The native __new__ builds an instance of cls (the stub says TokenVocab).
        self = cast("Self", super().__new__(cls, table, sorted(special_ids), sorted(eos_ids)))
        self._tokens, self._special, self._eos = table, special_ids, eos_ids
        return self

    @property
    def tokens(self) -> list[bytes]:
        """``[size]`` bytes: ``tokens[i]`` is what token ``i`` appends to the text."""
        return self._tokens

    @property
    def special(self) -> frozenset[int]:
        """The special token ids."""
        return self._special

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """The ids that end generation."""
        return self._eos

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenVocab):
            return NotImplemented
        return (self._tokens, self._special, self._eos) == (other._tokens, other._special, other._eos)

    __hash__ = None  # type: ignore[assignment]  # equal tables compare equal; the table is mutable

    def native(self) -> Self:
        """The vocabulary itself (it is the native one): what code that accepts either a
        ``fastdec.TokenVocab`` or the native ``fastdec._core.TokenVocab`` calls to get the native
        one."""
        return self

    @classmethod
    def from_hf_tokenizer(
        cls,
        tokenizer: Any,
        *,
        eos_token_ids: int | Iterable[int] | None = None,
        vocab_size: int | None = None,
    ) -> Self:
        """The vocabulary of a transformers tokenizer, byte-level BPE or SentencePiece.

        The family is read from the tokenizer's decoder: for a fast (``tokenizers``) tokenizer from
        ``backend_tokenizer``'s JSON (``ByteLevel``, or ``Metaspace`` / ``Replace`` /
        ``ByteFallback``), for a slow SentencePiece one from its ``sp_model``. Added tokens that
        are special become ``b""``; the others add their content as UTF-8.

        Args:
            tokenizer: a ``transformers`` tokenizer (``AutoTokenizer.from_pretrained(...)``).
            eos_token_ids: the ids that end generation; default ``tokenizer.eos_token_id`` (an int
                or a list). They are made special.
            vocab_size: the model's logits size when it exceeds the tokenizer's (embedding
                matrices are often padded to a multiple of 64); the extra ids are special.

        Returns:
            The vocabulary, ``size == vocab_size`` (default: the tokenizer's size, added tokens
            included).

        Raises:
            ValueError: ``vocab_size`` is smaller than the tokenizer, an eos id is out of range,
                the tokenizer has no eos token and none is given, or its decoder is not one of the
                families above (e.g. WordPiece's ``##`` continuation pieces).
        """
        if eos_token_ids is None:
            eos_token_ids = tokenizer.eos_token_id
            if eos_token_ids is None:
                raise ValueError("the tokenizer has no eos_token_id; pass eos_token_ids")
        num_tokens = _hf_num_tokens(tokenizer)
        size = num_tokens if vocab_size is None else _as_id(vocab_size, "vocab_size")
        if size < num_tokens:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {num_tokens} tokens")
        tokens = _hf_base_tokens(tokenizer, num_tokens)
        special: set[int] = set()
        for token_id, added in tokenizer.added_tokens_decoder.items():
            if added.special:
                special.add(token_id)
            else:
                tokens[token_id] = added.content.encode("utf-8")
        special.update(tokenizer.all_special_ids)
        tokens.extend([None] * (size - num_tokens))
        return cls._build(tokens, special, eos_token_ids)

    @classmethod
    def from_llama2c(cls, vocab: Sequence[bytes], *, eos_token_ids: int | Iterable[int] = (2,)) -> Self:
        """The vocabulary of a llama2.c tokenizer (``fastdec.models.load_llama2c_tokenizer``).

        llama2.c exports SentencePiece pieces with ``▁`` already replaced by a space, so a piece is
        its bytes, except byte-fallback pieces ``<0xAB>`` (the byte 0xAB) and ids 0, 1, 2 (unk,
        bos, eos), which are special.

        Args:
            vocab: ``[vocab_size]`` piece bytes.
            eos_token_ids: the ids that end generation (llama2.c's eos is 2).

        Raises:
            ValueError: ``vocab`` has fewer than 3 tokens, holds a non-bytes piece, or an eos id
                is out of range.

        >>> vocab = TokenVocab.from_llama2c([b"<unk>", b"\\n<s>\\n", b"\\n</s>\\n", b" Once", b"<0x21>"])
        >>> vocab.tokens, sorted(vocab.special)
        ([b'', b'', b'', b' Once', b'!'], [0, 1, 2])
        """
        if len(vocab) < len(_LLAMA2C_SPECIAL):
            raise ValueError(f"a llama2.c vocabulary has at least 3 tokens (unk, bos, eos), got {len(vocab)}")
        tokens: list[bytes | None] = []
        for token_id, piece in enumerate(vocab):
            if not isinstance(piece, bytes):
                raise ValueError(f"piece {token_id} is {type(piece).__name__} {piece!r}, expected bytes")
            match = _LLAMA2C_BYTE_PIECE.fullmatch(piece)
            tokens.append(bytes([int(match.group(1), 16)]) if match else piece)
        return cls._build(tokens, set(_LLAMA2C_SPECIAL), eos_token_ids)

    @classmethod
    def _build(
        cls, tokens: list[bytes | None], special: set[int], eos_token_ids: int | Iterable[int]
    ) -> Self:
        """Adds the eos ids and the empty / undefined (``None``) tokens to ``special``, blanks those."""
        values = list(eos_token_ids) if isinstance(eos_token_ids, Iterable) else [eos_token_ids]
        eos = frozenset(_as_id(value, "eos token id") for value in values)
        _check_ids(eos, len(tokens), "eos token id")
        special |= eos
        special.update(token_id for token_id, token in enumerate(tokens) if not token)
        blanked = [
            b"" if token is None or token_id in special else token for token_id, token in enumerate(tokens)
        ]
        _check_table(blanked, frozenset(special), eos)
        return cls(blanked, special, eos)


def _check_table(tokens: list[bytes], special: frozenset[int], eos: frozenset[int]) -> None:
    """The invariant of the tokenizer constructors: ``tokens[i] == b""`` exactly when ``i`` is
    special, and every eos id is special (an eos token adds no text)."""
    size = len(tokens)
    for token_id, token in enumerate(tokens):
        if not isinstance(token, bytes):
            raise ValueError(f"token {token_id} is {type(token).__name__} {token!r}, expected bytes")
    _check_ids(special, size, "special token id")
    _check_ids(eos, size, "eos token id")
    if not eos <= special:
        missing = sorted(eos - special)
        raise ValueError(f"eos token ids {missing} are not in special; an eos token adds no text")
    for token_id, token in enumerate(tokens):
        if (token_id in special) != (token == b""):
            kind = "special but adds" if token else "not special but adds no bytes"
            detail = f" {token!r}" if token else ""
            raise ValueError(f"token {token_id} is {kind}{detail}; special tokens are exactly the empty ones")


def _as_id(value: Any, what: str) -> int:
    """``value`` as a Python int (numpy integers included)."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} {value!r} is not an integer") from None


def _check_ids(ids: Iterable[int], size: int, what: str) -> None:
    for token_id in ids:
        if not isinstance(token_id, int):
            raise ValueError(f"{what} {token_id!r} is not an int")
        if not 0 <= token_id < size:
            raise ValueError(f"{what} {token_id} out of range for vocab size {size}")


# --------------------------------------------------------------------------- transformers tokenizers


def _hf_num_tokens(tokenizer: Any) -> int:
    """Ids the tokenizer defines: ``len(tokenizer)``, or more when added tokens leave gaps."""
    added = tokenizer.added_tokens_decoder
    return max(len(tokenizer), max(added, default=-1) + 1)


def _hf_base_tokens(tokenizer: Any, num_tokens: int) -> list[bytes | None]:
    """Bytes of the model's own tokens (``None``: control piece or no token with that id)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        decode_piece = _piece_decoder(_decoder_json(backend))
        pieces = tokenizer.convert_ids_to_tokens(list(range(num_tokens)))
        return [None if piece is None else decode_piece(piece) for piece in pieces]
    sp_model = getattr(tokenizer, "sp_model", None)
    if sp_model is not None:
        return _sentencepiece_tokens(sp_model, num_tokens)
    raise ValueError(
        f"{type(tokenizer).__name__} is neither a fast (tokenizers) tokenizer nor a SentencePiece one"
    )


def _decoder_json(backend: Any) -> dict[str, Any] | None:
    """The ``tokenizers.Tokenizer``'s decoder as JSON (``None``: it has none).

    The decoder's own pickle state is that JSON; ``backend.to_str()`` would serialize the whole
    vocabulary and merges too (0.4 s for SmolLM2's 49k tokens against 20 µs).
    """
    if backend.decoder is None:
        return None
    decoder: dict[str, Any] = json.loads(backend.decoder.__getstate__())
    return decoder


def _sentencepiece_tokens(sp_model: Any, num_tokens: int) -> list[bytes | None]:
    """A slow tokenizer's ``sentencepiece.SentencePieceProcessor`` pieces, as bytes."""
    tokens: list[bytes | None] = [None] * num_tokens
    for token_id in range(min(num_tokens, sp_model.get_piece_size())):
        if sp_model.is_control(token_id) or sp_model.is_unknown(token_id) or sp_model.is_unused(token_id):
            continue
        piece = sp_model.id_to_piece(token_id)
        if sp_model.is_byte(token_id):
            tokens[token_id] = _byte_fallback(piece)
        else:
            tokens[token_id] = piece.replace(_SPIECE_UNDERLINE, " ").encode("utf-8")
    return tokens


@functools.cache
def _gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode`` (openai/gpt-2 ``src/encoder.py``).

    Byte-level BPE keeps whitespace and control bytes out of its token strings by giving each byte a
    printable character: the 188 printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``)
    stand for themselves, the other 68 bytes in increasing order for U+0100, U+0101, ... (so space
    0x20 is ``Ġ`` U+0120 and newline 0x0A is ``Ċ`` U+010A).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(byte): byte for byte in printable}
    others = sorted(set(range(256)) - set(printable))
    table.update({chr(256 + rank): byte for rank, byte in enumerate(others)})
    return table


def _byte_level(piece: str) -> bytes:
    table = _gpt2_unicode_to_byte()
    try:
        return bytes(table[char] for char in piece)
    except KeyError:
        # What tokenizers' ByteLevel decoder does with a string outside the byte alphabet (an added
        # token holding a raw space, say): keep it as UTF-8.
        return piece.encode("utf-8")


def _byte_fallback(piece: str) -> bytes | None:
    match = _BYTE_PIECE.fullmatch(piece)
    return bytes([int(match.group(1), 16)]) if match else None


def _piece_decoder(decoder: dict[str, Any] | None) -> Callable[[str], bytes]:
    """Per-token version of a ``tokenizers`` decoder (its JSON), for the decoders of the two families.

    ``Fuse`` joins the tokens and a ``Strip`` after it (Llama's dummy-prefix removal) touches only
    the start of the whole text, so both leave single tokens alone. Anything else raises: its
    per-token bytes would be a guess, and a wrong byte silently breaks every constraint.
    """
    if decoder is None:
        raise ValueError("the tokenizer has no decoder; cannot tell what bytes its tokens stand for")
    steps: list[Callable[[str], str | bytes]] = []
    fused = False
    for step in _flatten_decoder(decoder):
        kind = step.get("type")
        if kind == "ByteLevel":
            steps.append(_byte_level)
        elif kind == "Metaspace":
            steps.append(functools.partial(_replace, step.get("replacement", _SPIECE_UNDERLINE), " "))
        elif kind == "Replace" and "String" in step.get("pattern", {}):
            steps.append(functools.partial(_replace, step["pattern"]["String"], step["content"]))
        elif kind == "ByteFallback":
            steps.append(lambda piece: _byte_fallback(piece) or piece)
        elif kind == "Fuse":
            fused = True
        elif kind == "Strip" and fused:
            pass
        else:
            raise ValueError(
                f"unsupported tokenizer decoder step {step!r}; fastdec reads byte-level BPE (ByteLevel) "
                "and SentencePiece (Metaspace, Replace('▁', ' '), ByteFallback) vocabularies"
            )

    def decode_piece(piece: str) -> bytes:
        value: str | bytes = piece
        for apply in steps:
            if isinstance(value, bytes):  # a byte token or a ByteLevel-decoded one: already raw bytes
                break
            value = apply(value)
        return value if isinstance(value, bytes) else value.encode("utf-8")

    return decode_piece


def _flatten_decoder(decoder: dict[str, Any]) -> list[dict[str, Any]]:
    if decoder.get("type") == "Sequence":
        return [step for child in decoder["decoders"] for step in _flatten_decoder(child)]
    return [decoder]


def _replace(old: str, new: str, piece: str) -> str:
    return piece.replace(old, new)
