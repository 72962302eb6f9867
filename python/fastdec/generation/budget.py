"""``budget="auto"``: pick the tree size that maximises measured tokens per second.

The cost of a verification forward grows with the tree size at a rate that depends on the
hardware (a CPU pays for every node, a GPU hardly at all until it saturates), and the tokens a
step gains from a bigger tree depend on the drafter and the text. Neither is known in advance,
so both are measured: each candidate size is tried during the first steps, then the controller
keeps the size with the best running mean of emitted tokens per second of step time and probes
its neighbours now and then, so that it follows the text as acceptance changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Arm:
    tokens: float = 0.0
    seconds: float = 0.0
    steps: int = 0

    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class AutoBudget:
    """Chooses a budget per step from ``candidates`` and learns from ``record``."""

    candidates: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 16, 32, 64)
    warmup_rounds: int = 2
    probe_every: int = 8
    decay: float = 0.9
    arms: dict[int, _Arm] = field(default_factory=dict)
    _step: int = 0
    _probe: int = 0

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"invalid candidates={self.candidates}: need sizes >= 1")
        self.candidates = tuple(sorted(set(self.candidates)))
        self.arms = {c: _Arm() for c in self.candidates}

    def best(self) -> int:
        return max(self.candidates, key=lambda c: (self.arms[c].rate(), -c))

    def next(self) -> int:
        """The budget for the next step."""
        self._step += 1
        warm = self.warmup_rounds * len(self.candidates)
        if self._step <= warm:
            # The first forward also pays one-off costs: skip it by trying sizes twice.
            return self.candidates[(self._step - 1) % len(self.candidates)]
        best = self.best()
        if self._step % self.probe_every == 0:
            i = self.candidates.index(best)
            neighbours = [self.candidates[j] for j in (i - 1, i + 1) if 0 <= j < len(self.candidates)]
            self._probe += 1
            return neighbours[self._probe % len(neighbours)] if neighbours else best
        return best

    def record(self, budget: int, tokens: float, seconds: float) -> None:
        """One step at ``budget`` emitted ``tokens`` (mean per row) in ``seconds``. Old steps
        fade (``decay`` per update of the same size), so the choice tracks the text."""
        arm = self.arms.get(budget)
        if arm is None:
            return
        arm.tokens = arm.tokens * self.decay + tokens
        arm.seconds = arm.seconds * self.decay + seconds
        arm.steps += 1
