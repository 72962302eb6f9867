"""The README's transformers quick start runs as printed (the engines' quick starts run in their
own suites: tests/vllm, tests/vllm034, tests/llama)."""

from __future__ import annotations

from typing import Any

import pytest
from readme_blocks import blocks, command


def test_transformers_quick_start(smollm_model: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import fastdec.models

    # load_model() as printed, answered by the session's copy of the same model (the shared file,
    # already loaded) instead of a second 20 s load
    monkeypatch.setattr(fastdec.models, "load_model", lambda *a, **k: smollm_model)
    first, second = blocks("Quick start: transformers", "python")
    scope: dict[str, Any] = {}
    exec(compile(first, "README.md (transformers quick start)", "exec"), scope)
    out = scope["out"]
    assert len(out.sequences[0]) > 10
    assert "auto budget" in out.budget_note
    assert capsys.readouterr().out.strip()
    exec(compile(second, "README.md (custom_generate)", "exec"), scope)
    ids, seqs = scope["ids"], scope["seqs"]
    new = seqs[0, len(ids) :].tolist()
    assert new[: len(out.sequences[0])] == out.sequences[0]  # the same greedy text both ways


def test_commands_parse() -> None:
    block = 'vllm serve MODEL --x \'{"a": 1,\n    "b": 2}\'  # note'
    assert command(block) == ["vllm", "serve", "MODEL", "--x", '{"a": 1, "b": 2}']
