"""``budget="auto"``: pick the tree size that maximises measured tokens per second.

The cost of a verification forward grows with the tree size at a rate that depends on the
hardware (a CPU pays for every few nodes, a GPU hardly at all until it saturates), and the
tokens a step gains from a bigger tree depend on the drafter and the text. Neither is known in
advance, so both are measured, as emitted tokens per second of step time for each size:

* climb: sizes are tried in increasing order (``steps_per_size`` steps each) until one is
  clearly slower than the best so far (``give_up`` times its rate); larger sizes are not tried,
  since the rate falls once the forward cost outgrows the gain;
* then the best size is used, and every ``probe_every`` steps a neighbour of it is tried, so the
  choice follows the text as acceptance changes (old measurements fade by ``decay``).

One controller is kept per model and drafter across calls, so only the first call pays for the
climb.
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

    candidates: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    steps_per_size: int = 2
    give_up: float = 0.8
    probe_every: int = 8
    decay: float = 0.9
    arms: dict[int, _Arm] = field(default_factory=dict)
    ceiling: int | None = None  # index of the largest size worth trying, once the climb ended
    _step: int = 0
    _probe: int = 0

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"invalid candidates={self.candidates}: need sizes >= 1")
        self.candidates = tuple(sorted(set(self.candidates)))
        self.arms = {c: _Arm() for c in self.candidates}

    def best(self) -> int:
        tried = [c for c in self.candidates if self.arms[c].steps]
        return max(tried, key=lambda c: (self.arms[c].rate(), -c)) if tried else self.candidates[0]

    def next(self) -> int:
        """The budget for the next step."""
        self._step += 1
        if self.ceiling is None:
            for i, c in enumerate(self.candidates):
                if self.arms[c].steps < self.steps_per_size:
                    return c
                best = self.best()
                if c > best and self.arms[c].rate() < self.give_up * self.arms[best].rate():
                    self.ceiling = i
                    break
            else:
                self.ceiling = len(self.candidates) - 1
        best = self.best()
        if self._step % self.probe_every == 0:
            i = self.candidates.index(best)
            near = [self.candidates[j] for j in (i - 1, i + 1) if 0 <= j <= self.ceiling]
            self._probe += 1
            return near[self._probe % len(near)] if near else best
        return best

    def record(self, budget: int, tokens: float, seconds: float) -> None:
        """One step at ``budget`` emitted ``tokens`` (mean per row) in ``seconds``."""
        arm = self.arms.get(budget)
        if arm is None:
            return
        arm.tokens = arm.tokens * self.decay + tokens
        arm.seconds = arm.seconds * self.decay + seconds
        arm.steps += 1
