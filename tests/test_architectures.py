"""Greedy identity with ``model.generate`` across decoder architectures, and the coverage table.

Part one: a named list of architectures (tiny random-weight models from their configs,
``tests/tiny_models.py``: every window shrunk below the prompt, so every case crosses it) times
every drafter, a repetitive prompt longer than the window; then transformers' own
``generate(custom_generate=...)``, a batch of prompts of different lengths and the static cache.

Part two: the sweep over every entry of transformers' causal-LM auto mapping
(``benches/architectures.py``): each entry is identical (greedy output and the logits of a bushy
tree), refused at the first call with a ``ValueError`` naming the reason, or not buildable here;
never a crash, never a silent difference. Its table is docs/architectures.md, checked here against
a fresh run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fastdec  # noqa: E402
import tiny_models  # noqa: E402
from fastdec.drafters import DRAFTER_NAMES  # noqa: E402
from fastdec.generation.attention_layout import FULL, SLIDING, layout  # noqa: E402
from fastdec.generation.registry import DrafterRegistry  # noqa: E402
from fastdec.integrations.transformers_generate import decode_with  # noqa: E402


def _load_bench() -> Any:
    """benches/architectures.py as a module (benches/ stays off sys.path: its kernels.py would
    pass for the ``kernels`` package transformers looks for)."""
    path = Path(__file__).resolve().parents[1] / "benches" / "architectures.py"
    spec = importlib.util.spec_from_file_location("architectures", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["architectures"] = module
    spec.loader.exec_module(module)
    return module


architectures = _load_bench()

PROMPT = architectures.PROMPT  # 72 tokens, repetitive: trees are accepted
NEW = 48
BUDGET = 8

#: model_type -> (overrides, the attention layout the tiny model must have)
ARCHITECTURES: dict[str, tuple[dict[str, Any], str]] = {
    "llama": ({}, "full"),
    "mistral": ({}, "sliding"),
    "qwen2": ({}, "hybrid"),  # use_sliding_window, layers from max_window_layers on slide
    "qwen3": ({}, "hybrid"),
    "phi3": ({}, "sliding"),
    "gemma2": ({"attn_implementation": "eager"}, "hybrid"),  # soft-capping needs eager
    "gemma3_text": ({}, "hybrid"),
    "cohere2": ({}, "hybrid"),
    "gpt_oss": ({}, "hybrid"),  # attention sinks, mixture of experts
    "smollm3": ({}, "hybrid"),  # no-RoPE layers
    "olmo2": ({}, "full"),
    "granite": ({}, "full"),
    "mixtral": ({}, "sliding"),  # mixture of experts
}

_MODELS: dict[str, Any] = {}
_REFERENCES: dict[tuple[str, tuple[int, ...], int], list[int]] = {}


def model_of(name: str) -> Any:
    """The tiny model of ``name``, built once per session."""
    if name not in _MODELS:
        overrides, _ = ARCHITECTURES[name]
        _MODELS[name] = tiny_models.tiny_model(name, **overrides)
    return _MODELS[name]


def reference(name: str, prompt: list[int], new: int = NEW) -> list[int]:
    key = (name, tuple(prompt), new)
    if key not in _REFERENCES:
        with torch.inference_mode():
            _REFERENCES[key] = architectures.reference(model_of(name), prompt, new)
    return _REFERENCES[key]


def generate(name: str, prompts: list[list[int]], drafter: str | None = "pld", **kwargs: Any) -> Any:
    kwargs.setdefault("max_new_tokens", NEW)
    return fastdec.generate(
        model_of(name), prompts, drafter=drafter, budget=BUDGET, registry=DrafterRegistry(), **kwargs
    )


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_tiny_model_crosses_its_window(name: str) -> None:
    """The tiny model has the attention the case is about, and every window is below the prompt."""
    model = model_of(name)
    kinds = set(layout(model).types)
    want = {"full": {FULL}, "sliding": {SLIDING}, "hybrid": {FULL, SLIDING}}[ARCHITECTURES[name][1]]
    assert kinds == want, layout(model).types
    if SLIDING in kinds:
        assert layout(model).window == tiny_models.WINDOW < len(PROMPT)
    if name == "gemma2":
        assert model.config._attn_implementation == "eager"
        assert model.config.attn_logit_softcapping
        assert model.config.final_logit_softcapping
    if name == "gpt_oss":
        assert all(layer.self_attn.sinks is not None for layer in model.model.layers)
        assert model.config.num_local_experts > model.config.num_experts_per_tok > 1


@pytest.mark.parametrize("drafter", DRAFTER_NAMES)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_greedy_identical(name: str, drafter: str) -> None:
    out = generate(name, [PROMPT], drafter)
    assert out.sequences[0] == reference(name, PROMPT)
    if drafter == "pld":
        assert max(out.accepted_lengths[0]) > 1, "no draft token accepted"


@pytest.mark.parametrize("name", ["gemma3_text", "mistral"])
def test_custom_generate(name: str) -> None:
    """transformers' own ``generate``, its decoding loop handed to fastdec."""
    model = model_of(name)
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=NEW,
            eos_token_id=None,
            pad_token_id=tiny_models.PAD,
            custom_generate=decode_with(drafter="pld", budget=BUDGET),
        )
    assert out[0, len(PROMPT) :].tolist() == reference(name, PROMPT)


@pytest.mark.parametrize("name", ["gemma3_text", "qwen2", "gpt_oss"])
def test_batch_of_different_lengths(name: str) -> None:
    """Rows at different positions (right-padded in the cache), each crossing the window at its
    own step: every row equals ``model.generate`` of its prompt alone."""
    prompts = [PROMPT, PROMPT[5:41], [7, 30, 12, 7, 30, 12, 9] * 4 + [13]]
    out = generate(name, prompts, "hybrid")
    for prompt, got in zip(prompts, out.sequences, strict=True):
        assert got == reference(name, prompt)


@pytest.mark.parametrize("name", ["gemma3_text", "llama"])
def test_static_cache(name: str) -> None:
    out = generate(name, [PROMPT], "pld", cache="static")
    assert out.sequences[0] == reference(name, PROMPT)
    assert max(out.accepted_lengths[0]) > 1


# -------------------------------------------------------------------------------------------------
# The sweep over transformers' causal-LM auto mapping (about two minutes on one core).
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep() -> Any:
    return architectures.sweep()


def test_sweep_no_crash_no_difference(sweep: list[Any]) -> None:
    failures = [f"{r.model_type} ({r.class_name}): {r.result}: {r.reason}" for r in sweep if not r.ok]
    assert not failures, "\n".join(failures)
    identical = [r for r in sweep if r.result == "identical"]
    # the identity checks run trees: on most models drafts were accepted
    assert sum(r.accepted > 0 for r in identical) >= 0.9 * len(identical)


def test_docs_table_is_current(sweep: list[Any]) -> None:
    """docs/architectures.md holds this sweep's table (regenerate it with
    ``python benches/architectures.py`` when transformers or fastdec's rules change)."""
    text = architectures.DOC.read_text()
    written = f"transformers {transformers.__version__},"
    if written not in text:
        pytest.skip(
            f"docs/architectures.md was written for another transformers than {transformers.__version__}"
        )
    assert architectures.parse_rows(text) == [r.row() for r in sweep]
