"""``budget="auto"``: pick the tree size that maximises measured tokens per second.

The cost of a verification forward grows with the tree size at a rate that depends on the
hardware (a CPU pays for every few nodes, a GPU hardly at all until it saturates), and the
tokens a step gains from a bigger tree depend on the drafter and the text. Neither is known in
advance, so the controller measures the two factors of the rate separately:

* **tokens per step at size k**, counterfactually: a drafter's tree for a budget ``k`` is
  (close to) the first ``k`` nodes of its tree for a larger budget, since drafters add nodes
  best first and trees are parents-first. Greedy verification of that truncated tree accepts the
  prefix of the accepted path whose node indices are below ``k``. So every step at size ``n``
  measures the tokens of every size ``k <= n`` on the *same* text, and comparisons between sizes
  are paired instead of drowned in the step-to-step noise of acceptance (a step accepts 0 or 5
  tokens; a size measured on its own needs many steps to be told apart from its neighbour);
* **seconds per step at size k**, measured when running at ``k`` (low noise: a few steps do).

Schedule: climb through the sizes in increasing order (``steps_per_size`` steps each) until two
sizes in a row are clearly slower than the best (``give_up`` times its rate): larger ones are not
tried, since the rate falls once the forward cost outgrows the gain. Then run the best size, and
every ``probe_every`` steps try the size above it (the only way to learn its tokens and cost) or,
one probe in ``down_every``, the size below (to refresh its cost as the context grows). Old
measurements fade by ``decay`` so the choice follows the text.

One controller is kept per model and drafter across calls, so only the first call pays for the
climb.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class _Mean:
    """Exponentially decayed mean."""

    total: float = 0.0
    weight: float = 0.0
    count: int = 0

    def add(self, x: float, decay: float) -> None:
        self.total = self.total * decay + x
        self.weight = self.weight * decay + 1.0
        self.count += 1

    def value(self) -> float:
        return self.total / self.weight if self.weight > 0 else 0.0


@dataclass
class AutoBudget:
    """Chooses a budget per step from ``candidates`` and learns from ``record``."""

    candidates: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    steps_per_size: int = 2
    give_up: float = 0.85
    probe_every: int = 6
    down_every: int = 3
    decay: float = 0.95
    tokens: dict[int, _Mean] = field(default_factory=dict)  # gain per step over the size below
    seconds: dict[int, _Mean] = field(default_factory=dict)  # seconds per step at each size
    climbed: bool = False
    _step: int = 0
    _probe: int = 0

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"invalid candidates={self.candidates}: need sizes >= 1")
        self.candidates = tuple(sorted(set(self.candidates)))
        self.tokens = {c: _Mean() for c in self.candidates}
        self.seconds = {c: _Mean() for c in self.candidates}

    def expected_tokens(self, size: int) -> float:
        """Estimated tokens per step at ``size``: the smallest size's tokens plus the paired
        gains of each size over the one below it."""
        return sum(self.tokens[c].value() for c in self.candidates if c <= size)

    def rate(self, size: int) -> float:
        """Estimated tokens per second at ``size`` (0 while unmeasured)."""
        secs = self.seconds[size].value()
        return self.expected_tokens(size) / secs if secs > 0 else 0.0

    def best(self) -> int:
        tried = [c for c in self.candidates if self.seconds[c].count]
        return max(tried, key=lambda c: (self.rate(c), -c)) if tried else self.candidates[0]

    def next(self) -> int:
        """The budget for the next step."""
        self._step += 1
        if not self.climbed:
            slow = 0
            for c in self.candidates:
                if self.seconds[c].count < self.steps_per_size:
                    return c
                best = self.best()
                slow = slow + 1 if c > best and self.rate(c) < self.give_up * self.rate(best) else 0
                if slow == 2:
                    break
            self.climbed = True
        best = self.best()
        if self._step % self.probe_every:
            return best
        self._probe += 1
        i = self.candidates.index(best)
        down = self._probe % self.down_every == 0
        j = i - 1 if (down and i > 0) or i + 1 == len(self.candidates) else i + 1
        return self.candidates[max(j, 0)]

    def record(self, budget: int, seconds: float, tokens: Mapping[int, float]) -> None:
        """One step ran at ``budget`` in ``seconds``; ``tokens[k]`` is the tokens per row it
        would have emitted with a budget of ``k``, for the candidates ``k <= budget``."""
        if budget in self.seconds:
            self.seconds[budget].add(seconds, self.decay)
        below = 0.0
        for k in self.candidates:
            if k > budget or k not in tokens:
                break
            # The gain over the next smaller size, measured on the same step: paired, so far
            # less noisy than each size's own tokens.
            self.tokens[k].add(tokens[k] - below, self.decay)
            below = tokens[k]

    @staticmethod
    def counterfactual(budget: int, sizes: tuple[int, ...], paths: list[list[int]]) -> dict[int, float]:
        """Tokens per row for every size ``k <= budget`` from the accepted ``paths`` (node indices,
        root first) of trees built with ``budget`` nodes: the path's nodes with index below ``k``."""
        rows = max(len(paths), 1)
        return {k: sum(sum(1 for i in p if i < k) for p in paths) / rows for k in sizes if k <= budget}
