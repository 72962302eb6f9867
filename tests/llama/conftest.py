"""Fixtures for the llama.cpp tests: the shared SmolLM2 GGUF, and an F32 copy of it written once
per session (dequantized with the gguf package) where llama.cpp's evaluation is batch-invariant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def q4_gguf() -> Path:
    # a missing model is a broken checkout, not a reason to skip
    assert MODEL.is_file(), f"the shared SmolLM2 GGUF is missing: {MODEL}"
    return MODEL


def write_f32_gguf(source: Path, target: Path) -> None:
    """Copies a GGUF with every tensor dequantized to F32 (metadata unchanged but the file type)."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def f32_gguf(q4_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("gguf") / "smollm2-135m-f32.gguf"
    write_f32_gguf(q4_gguf, target)
    return target
