"""The vLLM benchmark's bookkeeping, without vLLM: the engine-step profile (records written by
``benches/vllm_run.py --profile``, read and split per model step by ``benches/vllm_profile.py``)
and the floor reported beside the concurrency-16 target of ``benches/vllm.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def load(name: str, file: str) -> Any:
    # by path: benches/ stays off sys.path (its vllm.py would shadow the engine)
    spec = importlib.util.spec_from_file_location(name, BENCHES / file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def profile() -> Any:
    return load("vllm_profile_under_test", "vllm_profile.py")


def test_timer_records_from_every_process_are_merged_in_start_order(profile: Any, tmp_path: Path) -> None:
    prefix = tmp_path / "m-0.profile"
    (tmp_path / "m-0.profile.11").write_text("EngineCore.step 500 40\nEngineCore.step 100 30\n")
    (tmp_path / "m-0.profile.12").write_text("GPUModelRunner.propose_draft_token_ids 120 5 7\n")
    (tmp_path / "other.profile.13").write_text("EngineCore.step 1 1\n")  # another run: not read
    calls = profile.run.read_timers(prefix)
    assert calls == {
        "EngineCore.step": [(100, 30), (500, 40)],
        "GPUModelRunner.propose_draft_token_ids": [(120, 5, 7)],
    }


def test_breakdown_is_per_model_step_inside_the_window(profile: Any) -> None:
    ms = 1_000_000
    calls = {
        # two model steps inside the window [1000 ms, 1300 ms], one before it (warm-up)
        "GPUModelRunner.execute_model": [(10 * ms, 50 * ms), (1000 * ms, 100 * ms), (1150 * ms, 120 * ms)],
        "GPUModelRunner._model_forward": [(10 * ms, 40 * ms), (1001 * ms, 90 * ms), (1151 * ms, 110 * ms)],
        "EngineCoreProc._process_engine_step": [(999 * ms, 130 * ms), (1149 * ms, 140 * ms)],
    }
    part = profile.breakdown(calls, [1000 * ms, 1300 * ms])
    assert part["steps"] == 2
    assert part["GPUModelRunner.execute_model"] == pytest.approx(110.0)
    assert part["GPUModelRunner._model_forward"] == pytest.approx(100.0)
    assert part["wall"] == pytest.approx(150.0)
    # a _process_engine_step that started before the window is not counted
    assert part["EngineCoreProc._process_engine_step"] == pytest.approx(70.0)
    assert part["outside"] == pytest.approx(80.0)
    with pytest.raises(SystemExit, match="no model step"):
        profile.breakdown(calls, [0, 5 * ms])


def test_first_draft_difference(profile: Any) -> None:
    assert profile.first_difference([10, 0, 10], [10, 0, 10]) is None
    assert profile.first_difference([10, 0, 10], [10, 3, 10]) == 1
    assert profile.first_difference([10, 0], [10, 0, 10]) == 2  # one ran more steps


def test_the_floor_is_reported_beside_the_target_against_no_speculation(profile: Any) -> None:
    bench = profile.bench

    def r(tps: float) -> dict[str, float]:
        return {"tokens_per_s": tps}

    res = {"two_turn": {"16": {"none": r(100.0), "fastdec-trie": r(96.0), "floor": r(94.0)}}}

    def line() -> str:
        (found,) = [x for x in bench.target_lines(res) if x.startswith("two_turn c=16") and "/ none" in x]
        return str(found)

    assert [line()] == [
        "two_turn c=16: best fastdec (fastdec-trie) / none = 0.96x "
        "(target >= 1.0: MISSED; floor (never drafts) 0.94x: at or above it)"
    ]
    res["two_turn"]["16"]["floor"] = r(97.0)
    assert "BELOW it" in line()
    # floor never counts as a fastdec proposer
    res["two_turn"]["16"]["floor"] = r(200.0)
    assert "(fastdec-trie)" in line()


def test_never_proposer_drafts_nothing(profile: Any) -> None:
    proposer = profile.run.NeverProposer(None)
    proposer.load_model(object())
    assert proposer.propose([[1], [], [2, 3]], None, None) == [[], [], []]
    assert profile.bench.METHODS["floor"][0]["model"] == "__mp_main__.NeverProposer"


def test_cycle_proposer_drafts_every_length_in_turn(profile: Any) -> None:
    config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=2))
    proposer = profile.run.CycleProposer(config)
    got = [proposer.propose([[5], [], [6, 7]]) for _ in range(4)]
    assert got == [[[], [], []], [[5], [], [7]], [[5, 5], [], [7, 7]], [[], [], []]]
    assert profile.bench.METHODS["cycle"][0]["model"] == "__mp_main__.CycleProposer"
    assert "cycle" not in profile.bench.DEFAULT_METHODS


def test_step_cost_is_read_per_draft_length_inside_the_window() -> None:
    sys.path.insert(0, str(BENCHES))  # vllm_cost imports vllm_profile as a script does
    try:
        cost = load("vllm_cost_under_test", "vllm_cost.py")
    finally:
        sys.path.remove(str(BENCHES))
    ms = 1_000_000
    calls = {
        # propose at 100 (0 tokens), 200 (3), 300 (0); forwards verify the previous propose's drafts
        "GPUModelRunner.propose_draft_token_ids": [(100 * ms, 1, 0), (200 * ms, 1, 3), (300 * ms, 1, 0)],
        "EngineCore.step": [(5 * ms, 50 * ms), (150 * ms, 52 * ms), (250 * ms, 45 * ms), (350 * ms, 54 * ms)],
        "GPUModelRunner._model_forward": [
            *((6 * ms, 40 * ms), (151 * ms, 42 * ms)),
            *((251 * ms, 35 * ms), (351 * ms, 44 * ms)),
        ],
    }
    cells = cost.by_draft_tokens(calls, [100 * ms, 400 * ms])
    assert cells == {
        0: {"steps": 2, "step_ms": 53.0, "forward_ms": 43.0},
        3: {"steps": 1, "step_ms": 45.0, "forward_ms": 35.0},
    }
    doc = {"meta": {}, "concurrency": {"1": {str(d): c for d, c in cells.items()}}}
    assert "| 3 | 1 | 45.0 | 35.0 | 0.85x |" in cost.table(doc)
