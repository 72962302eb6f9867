"""budget="auto": the controller finds the size with the best tokens per second on simulated
hardware, without trying sizes past the point where the rate falls, also when acceptance is as
noisy as real drafting (a step accepts a whole path or nothing)."""

from __future__ import annotations

import math
import random

import pytest
from fastdec.generation.budget import AutoBudget

SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# tokens per step: diminishing returns in the tree size
GAIN = {n: 1 + 1.5 * (1 - math.exp(-n / 4)) for n in SIZES}
CPU = {n: 1 + 0.1 * n for n in SIZES}  # every node costs: the best rate is at a small tree
GPU = {n: 1 + 0.02 * max(0, n - 32) for n in SIZES}  # flat until 32 nodes, then linear


def run(auto: AutoBudget, cost: dict[int, float], gain: dict[int, float], steps: int) -> list[int]:
    """Deterministic acceptance: ``gain[k]`` tokens at every size ``k``."""
    chosen = []
    for _ in range(steps):
        b = auto.next()
        chosen.append(b)
        auto.record(b, cost[b], {k: gain[k] for k in SIZES if k <= b})
    return chosen


@pytest.mark.parametrize(("name", "cost", "best"), [("cpu", CPU, 4), ("gpu", GPU, 32)])
def test_converges_to_the_fastest_size(name: str, cost: dict[int, float], best: int) -> None:
    rates = {n: GAIN[n] / cost[n] for n in SIZES}
    assert max(rates, key=rates.__getitem__) == best, name
    auto = AutoBudget()
    chosen = run(auto, cost, GAIN, 200)
    assert auto.best() == best
    tail = chosen[-80:]
    assert tail.count(best) >= 0.8 * len(tail)  # mostly the best, with neighbour probes
    assert auto.climbed
    # the climb stopped soon after the best size: much larger sizes were never tried
    tried = {n for n in SIZES if auto.seconds[n].count}
    if name == "cpu":
        assert max(tried) <= 16


def test_follows_a_change_in_acceptance() -> None:
    cost = {n: 1 + 0.02 * n for n in SIZES}
    auto = AutoBudget()
    run(auto, cost, GAIN, 150)
    before = auto.best()
    # the text turns unpredictable: drafts stop being accepted, small trees win
    run(auto, cost, dict.fromkeys(SIZES, 1.0), 300)
    assert auto.best() < before


def random_path(rng: random.Random) -> list[int]:
    """An accepted path's node indices (root first) in a best-first tree: each further depth is
    accepted with probability 0.6 and sits further down the node order."""
    path, index = [0], 0
    while rng.random() < 0.6 and len(path) < 8:
        index += 1 + int(rng.random() * 2 * len(path))
        path.append(index)
    return path


def expected_rates(cost: dict[int, float]) -> dict[int, float]:
    rng = random.Random(7)
    paths = [random_path(rng) for _ in range(20000)]
    tokens = AutoBudget.counterfactual(max(SIZES), SIZES, paths)
    return {k: tokens[k] / cost[k] for k in SIZES}


@pytest.mark.parametrize(("name", "cost"), [("cpu", CPU), ("gpu", GPU)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_acceptance_still_finds_a_near_best_size(name: str, cost: dict[int, float], seed: int) -> None:
    """Per-step acceptance is 1..8 tokens at random and step times jitter by 10%: the sizes chosen
    after the climb still run at >= 90% of the best expected rate."""
    rates = expected_rates(cost)
    top = max(rates.values())
    rng = random.Random(seed)
    auto = AutoBudget()
    chosen = []
    for _ in range(400):
        b = auto.next()
        chosen.append(b)
        path = random_path(rng)
        auto.record(b, cost[b] * rng.uniform(0.9, 1.1), AutoBudget.counterfactual(b, SIZES, [path]))
    tail = chosen[-200:]
    mean_rate = sum(rates[b] for b in tail) / len(tail)
    assert mean_rate >= 0.9 * top, (name, seed, mean_rate / top, sorted(set(tail)))


def test_counterfactual_tokens() -> None:
    # a path through nodes 0, 2, 5 of a 8-node tree: sizes 1..2 keep the root, 3..5 one more
    paths = [[0, 2, 5], [0]]
    got = AutoBudget.counterfactual(8, SIZES, paths)
    assert got == {1: 1.0, 2: 1.0, 3: 1.5, 4: 1.5, 6: 2.0, 8: 2.0}


def test_bad_candidates() -> None:
    with pytest.raises(ValueError, match="candidates"):
        AutoBudget(candidates=(0, 4))
