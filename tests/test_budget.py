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
    # the fastest size, or a smaller one within the margin that breaks ties towards less work
    picked = auto.best()
    assert picked <= best
    assert rates[picked] >= rates[best] / (1 + auto.margin)
    tail = chosen[-80:]
    assert tail.count(picked) >= 0.8 * len(tail)  # mostly the choice, with neighbour probes
    assert auto.climbed
    # the climb stopped soon after the best size: much larger sizes were never tried
    tried = {n for n in SIZES if auto.runs[n]}
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


# --------------------------------------------------------------------------------------------------
# Where speculation never pays, auto settles on size 1 (plain decoding) and costs almost nothing.
# --------------------------------------------------------------------------------------------------

# A slow CPU: each node adds 15-30% to the forward, while drafts are rarely accepted (a size-1
# step emits exactly one token); the largest size the climb may reach before it gives up.
NEVER_PAYS = {
    "steep": (
        {n: 1 + 0.3 * (n - 1) for n in SIZES},
        {n: 1 + 0.2 * (1 - math.exp(-(n - 1) / 4)) for n in SIZES},
        3,
    ),
    "gentle": (
        {n: 1 + 0.15 * (n - 1) ** 0.8 for n in SIZES},
        {n: 1 + 0.1 * (1 - math.exp(-(n - 1))) for n in SIZES},
        4,
    ),
    # a bigger tree is cheap but gains nothing at all (an unpredictable text): the climb goes on
    # while the sizes stay within give_up of plain, which costs little
    "no-gain": ({n: 1 + 0.02 * (n - 1) for n in SIZES}, dict.fromkeys(SIZES, 1.0), 12),
}


def simulated_rate(chosen: list[int], cost: dict[int, float], gain: dict[int, float]) -> float:
    """Tokens per second over a run at the chosen sizes, relative to plain decoding's."""
    return sum(gain[b] for b in chosen) / sum(cost[b] for b in chosen) / (gain[1] / cost[1])


@pytest.mark.parametrize("curve", sorted(NEVER_PAYS))
def test_settles_on_plain_decoding_when_no_tree_pays(curve: str) -> None:
    cost, gain, reach = NEVER_PAYS[curve]
    assert gain[1] == cost[1] == 1
    assert all(gain[n] / cost[n] < 1.0 for n in SIZES if n > 1)  # the premise
    auto = AutoBudget()
    chosen = run(auto, cost, gain, 600)
    assert auto.best() == 1
    # the climb gave up early
    assert max(n for n in SIZES if auto.runs[n]) <= reach, curve
    # settled: probes thin out (gaps double up to probe_max), so almost every later step is plain
    assert chosen[-500:].count(1) >= 0.96 * 500, curve
    # over the whole run, climb and probes included, within 3% of plain decoding
    assert simulated_rate(chosen, cost, gain) >= 0.97, curve
    assert "does not pay" in auto.explain()


@pytest.mark.parametrize("seed", range(8))
def test_never_loses_with_noisy_times_and_acceptance(seed: int) -> None:
    """Acceptance at random (a draft token is accepted 10% of the time) and step times that
    jitter by +-15% with an occasional 3x outlier: over 300 steps the controller still runs at
    >= 97% of plain decoding's expected rate."""
    rng = random.Random(seed)
    cost = {n: 1 + 0.12 * (n - 1) for n in SIZES}
    auto = AutoBudget()
    tokens = 0.0
    seconds = 0.0
    for _ in range(300):
        b = auto.next()
        path = [0]
        while rng.random() < 0.1 and len(path) < b:
            path.append(len(path))
        t = cost[b] * rng.uniform(0.85, 1.15) * (3.0 if rng.random() < 0.02 else 1.0)
        auto.record(b, t, AutoBudget.counterfactual(b, SIZES, [path]))
        tokens += len(path)
        seconds += t
    plain = 1 / (1.0 * 1.06)  # plain's expected rate under the same noise (mean outlier factor 1.04)
    assert tokens / seconds >= 0.97 * plain, (seed, tokens / seconds / plain, auto.explain())


def test_a_settled_choice_is_reprobed_rarely_but_still_followed() -> None:
    """Plain decoding settled, then the text turns repetitive: a later probe finds the tree that
    now pays and the controller moves to it."""
    cost = {n: 1 + 0.1 * (n - 1) for n in SIZES}
    auto = AutoBudget()
    run(auto, cost, dict.fromkeys(SIZES, 1.0), 400)
    assert auto.best() == 1
    assert auto._gap == auto.probe_max
    chosen = run(auto, cost, {n: min(n, 6) * 1.0 for n in SIZES}, 2 * auto.probe_max + 50)
    assert auto.best() > 1
    assert chosen[-20:].count(auto.best()) >= 15


def test_explain_names_the_choice() -> None:
    auto = AutoBudget()
    assert "nothing measured" in auto.explain()
    run(auto, CPU, GAIN, 100)
    text = auto.explain()
    assert text.startswith(f"auto budget: {auto.best()}-node trees"), text
    assert "x plain's tokens/s" in text


def test_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="hopeless"):
        AutoBudget(hopeless=0.95, give_up=0.9)
