"""Every ``>>>`` example in the installed ``fastdec`` package runs and prints what it shows.

The module list is read from the package itself (``pkgutil.walk_packages``), so a new module is
collected without anyone adding it here. A module that only imports beside its engine (vLLM,
llama.cpp: not installed in this virtualenv) must hold no examples at all, or this test fails:
nothing is skipped silently.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import fastdec
import pytest

MODULES = ["fastdec", *sorted(m.name for m in pkgutil.walk_packages(fastdec.__path__, "fastdec."))]
#: modules whose import needs an engine this virtualenv lacks (the message names it)
ENGINE_ONLY = {
    "fastdec.integrations.llama_cpp_tree": "llama_cpp",
    "fastdec.integrations.vllm_speculator": "vllm",
    "fastdec.integrations.vllm_speculator_config": "vllm",
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_the_list_is_the_package() -> None:
    assert len(MODULES) > 30
    assert "fastdec.generation.loop" in MODULES
    assert set(ENGINE_ONLY) <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        engine = ENGINE_ONLY.get(name)
        if engine is None or engine not in str(err):
            raise
        spec = importlib.util.find_spec(name)
        assert spec is not None
        assert spec.origin is not None
        assert ">>>" not in Path(spec.origin).read_text(), (
            f"{name} has examples but imports only beside {engine}: move them to a module "
            "that imports without it"
        )
        return
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failures: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        if test.examples:
            result = runner.run(test, out=failures.append)
            assert result.failed == 0, "".join(failures)
