"""budget="auto": the controller finds the size with the best tokens per second on simulated
hardware, without trying sizes past the point where the rate falls."""

from __future__ import annotations

import math

import pytest
from fastdec.generation.budget import AutoBudget


def run(auto: AutoBudget, cost: dict[int, float], gain: dict[int, float], steps: int) -> list[int]:
    chosen = []
    for _ in range(steps):
        b = auto.next()
        chosen.append(b)
        auto.record(b, gain[b], cost[b])
    return chosen


SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# tokens per step: diminishing returns in the tree size
GAIN = {n: 1 + 1.5 * (1 - math.exp(-n / 4)) for n in SIZES}


@pytest.mark.parametrize(
    ("name", "cost", "best"),
    [
        # CPU-like: every node costs (the best rate is at a small tree)
        ("cpu", {n: 1 + 0.1 * n for n in SIZES}, 4),
        # GPU-like: flat until 32 nodes, then linear
        ("gpu", {n: 1 + 0.02 * max(0, n - 32) for n in SIZES}, 32),
    ],
)
def test_converges_to_the_fastest_size(name: str, cost: dict[int, float], best: int) -> None:
    rates = {n: GAIN[n] / cost[n] for n in SIZES}
    assert max(rates, key=rates.__getitem__) == best, name
    auto = AutoBudget()
    chosen = run(auto, cost, GAIN, 200)
    assert auto.best() == best
    tail = chosen[-80:]
    assert tail.count(best) >= 0.8 * len(tail)  # mostly the best, with neighbour probes
    assert auto.ceiling is not None
    # the climb stopped soon after the best size: much larger sizes were never tried
    tried = {n for n in SIZES if auto.arms[n].steps}
    if name == "cpu":
        assert max(tried) <= 12


def test_follows_a_change_in_acceptance() -> None:
    cost = {n: 1 + 0.02 * n for n in SIZES}
    auto = AutoBudget()
    run(auto, cost, GAIN, 150)
    before = auto.best()
    # the text turns unpredictable: drafts stop being accepted, small trees win
    run(auto, cost, dict.fromkeys(SIZES, 1.0), 300)
    assert auto.best() < before


def test_bad_candidates() -> None:
    with pytest.raises(ValueError, match="candidates"):
        AutoBudget(candidates=(0, 4))
