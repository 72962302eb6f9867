"""Fixtures for the tests that run fastdec inside the real vLLM (``make test-vllm``, its own
virtualenv ``.venv-vllm``): the shared SmolLM2 as a float32 transformers directory, Spec-Bench
prompts, and one engine process per configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = ROOT.parent / "shared"
SOURCE_MODEL = SHARED / "models" / "smollm2-135m-instruct"
QUESTIONS = SHARED / "data" / "specbench" / "question.jsonl"
MODEL_DIR = Path(os.environ.get("FASTDEC_VLLM_MODEL", ROOT / ".venv-vllm" / "models" / "smollm2-135m-f32"))
# a prompt whose answer repeats its context, so every n-gram proposer has something to draft
REPEAT = (
    "Copy this list exactly, one item per line: apples, pears, plums, cherries, apples, pears, plums,"
    " cherries, apples, pears, plums, cherries."
)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    assert SOURCE_MODEL.is_dir(), f"the shared models are missing: {SOURCE_MODEL}"
    if not (MODEL_DIR / "model.safetensors").exists():
        MODEL_DIR.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(HERE / "convert_model.py"), str(SOURCE_MODEL), str(MODEL_DIR)], check=True
        )
    return MODEL_DIR


def chat_prompts(model_dir: Path, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for text in texts:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        out.append([int(t) for t in ids])
    return out


@pytest.fixture(scope="session")
def prompts(model_dir: Path) -> list[list[int]]:
    """The first turns of the first Spec-Bench question of 7 categories, plus one that repeats."""
    assert QUESTIONS.is_file(), QUESTIONS
    seen: dict[str, str] = {}
    for line in QUESTIONS.read_text().splitlines():
        q = json.loads(line)
        seen.setdefault(q["category"], q["turns"][0])
    return chat_prompts(model_dir, [*list(seen.values())[:7], REPEAT])


class Engines:
    """Runs ``tests/vllm/engine.py`` once per configuration and caches what it wrote."""

    def __init__(self, model: Path, prompts: list[list[int]], workdir: Path) -> None:
        self.model, self.prompts, self.workdir = model, prompts, workdir
        self.prompt_file = workdir / "prompts.json"
        self.prompt_file.write_text(json.dumps(prompts))
        self.cache: dict[str, dict[str, Any]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        env.update(extra)
        return env

    def run(
        self, name: str, spec: dict[str, Any] | None = None, fastdec: dict[str, Any] | None = None, **env: str
    ) -> dict[str, Any]:
        if name in self.cache:
            return self.cache[name]
        out = self.workdir / f"{name}.json"
        cmd = [
            sys.executable, str(HERE / "engine.py"), "--model", str(self.model),
            "--prompts", str(self.prompt_file),
            "--out", str(out), "--max-tokens", "48", "--max-num-seqs", "4",
        ]  # fmt: skip
        if spec is not None:
            cmd += ["--spec", json.dumps(spec)]
        if fastdec is not None:
            cmd += ["--fastdec", json.dumps(fastdec)]
        done = subprocess.run(cmd, env=self.env(**env), capture_output=True, text=True, timeout=600)
        # vLLM's engine and worker processes log to stdout as well as stderr
        result: dict[str, Any] = {"returncode": done.returncode, "log": (done.stdout + done.stderr)[-200000:]}
        if done.returncode == 0:
            result.update(json.loads(out.read_text()))
        self.cache[name] = result
        return result


@pytest.fixture(scope="session")
def engines(model_dir: Path, prompts: list[list[int]], tmp_path_factory: pytest.TempPathFactory) -> Engines:
    return Engines(model_dir, prompts, tmp_path_factory.mktemp("vllm"))
