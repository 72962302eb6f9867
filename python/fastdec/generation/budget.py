"""``budget="auto"``: pick the tree size that maximises measured tokens per second, and never
lose to plain decoding.

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
* **seconds per step**, as a cost model ``a + b * (nodes - 1)`` of the tree's real node count
  (a drafter may propose fewer nodes than its budget), fitted to the last ``window`` steps of
  every size together: the median time of each node count, then a weighted least-squares line
  (``b >= 0``). Pooling the sizes and keeping the fit recent matters on a shared machine, where
  the speed of a forward drifts by tens of percent within seconds: a size measured a minute ago
  on its own would be compared with one measured now. Where the recent steps hold one node
  count only, the last fitted ratio ``b / a`` stands in.

Size 1 is plain decoding (the root alone, no draft), the baseline every other size must beat.

Schedule: climb through the sizes in increasing order (``steps_per_size`` steps each, every one
followed by a step at the best size so far) until two sizes in a row run below ``give_up`` times
the best rate, or one below ``hopeless`` times it: larger ones are not tried, since the rate
falls once the forward cost outgrows the gain. Then run the best size, where a larger size
counts as better only when its rate beats the smaller one's by ``margin`` (ties go to the
smaller, cheaper and safer size). Probes (one step at the size above the best, or, one probe in
``down_every``, below it) keep both factors current as the context and the text change; the gap
between probes starts at ``probe_first`` steps and doubles, up to ``probe_max``, each time a
probe leaves the choice unchanged, so a settled choice (plain decoding on a CPU where no tree
pays, say) costs almost nothing to keep checking; a probe that moves the choice up is followed at
once by the next one (a re-climb), and the size above is probed early whenever extrapolating the
best size's own gain says it could win. Token measurements fade by ``decay`` per sample and by
``idle_decay`` per step without one, so the choice follows the text.

One controller is kept per model and drafter across calls, so only the first call pays for the
climb.
"""

from __future__ import annotations

import itertools
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class _Mean:
    """Mean decayed per sample and, more slowly, per step elapsed since the last one: a size
    measured only by an occasional probe still forgets the text of long ago."""

    total: float = 0.0
    weight: float = 0.0
    count: int = 0
    last: int = 0  # the step of the last sample

    def add(self, x: float, decay: float, step: int, idle_decay: float) -> None:
        fade = decay * idle_decay ** max(step - self.last - 1, 0)
        self.total = self.total * fade + x
        self.weight = self.weight * fade + 1.0
        self.count += 1
        self.last = step

    def value(self) -> float:
        return self.total / self.weight if self.weight > 0 else 0.0


@dataclass
class _CostModel:
    """Seconds per step against the tree's real node count, from the last ``window`` steps.

    Each node count's median time, made non-decreasing in the node count (weighted
    pool-adjacent-violators: a bigger forward never costs less, so a noisy dip is averaged with
    its neighbours), interpolated linearly between the counts seen; outside them the shape of a
    least-squares line ``a * (1 + rel * (nodes - 1))`` extends the nearest one. ``rel`` persists
    from the last window that held two node counts.
    """

    window: int
    samples: deque[tuple[int, float]] = field(default_factory=deque)
    rel: float | None = None
    _points: list[tuple[int, float]] | None = None  # the fit, recomputed after each new sample

    def add(self, nodes: int, seconds: float) -> None:
        self.samples.append((nodes, seconds))
        if len(self.samples) > self.window:
            self.samples.popleft()
        self._points = None

    def points(self) -> list[tuple[int, float]]:
        if self._points is None:
            groups: dict[int, list[float]] = {}
            for n, t in self.samples:
                groups.setdefault(n, []).append(t)
            ns = sorted(groups)
            ys = [statistics.median(groups[n]) for n in ns]
            ws = [float(len(groups[n])) for n in ns]
            if len(ns) >= 2:
                self._fit_rel(ns, ys, ws)
            self._points = list(zip(ns, _isotonic(ys, ws), strict=True))
        return self._points

    def _fit_rel(self, ns: list[int], ys: list[float], ws: list[float]) -> None:
        w = sum(ws)
        mx = sum(wi * (n - 1) for wi, n in zip(ws, ns, strict=True)) / w
        my = sum(wi * y for wi, y in zip(ws, ys, strict=True)) / w
        sxx = sum(wi * (n - 1 - mx) ** 2 for wi, n in zip(ws, ns, strict=True))
        sxy = sum(wi * (n - 1 - mx) * (y - my) for wi, n, y in zip(ws, ns, ys, strict=True))
        b = max(sxy / sxx, 0.0)
        a = my - b * mx
        if a > 0:
            self.rel = b / a

    def seconds(self, nodes: float) -> float:
        pts = self.points()
        if not pts:
            return 0.0
        rel = self.rel or 0.0

        def shape(n: float) -> float:
            return 1 + rel * (n - 1)

        if nodes <= pts[0][0]:
            return pts[0][1] * shape(nodes) / shape(pts[0][0])
        if nodes >= pts[-1][0]:
            return pts[-1][1] * shape(nodes) / shape(pts[-1][0])
        for (n0, y0), (n1, y1) in itertools.pairwise(pts):
            if n0 <= nodes <= n1:
                return y0 + (y1 - y0) * (nodes - n0) / (n1 - n0)
        return pts[-1][1]  # unreachable: the counts are sorted


def _isotonic(ys: list[float], ws: list[float]) -> list[float]:
    """The weighted least-squares non-decreasing fit of ``ys`` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for y, w in zip(ys, ws, strict=True):
        blocks.append([y, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            y2, w2, c2 = blocks.pop()
            y1, w1, c1 = blocks.pop()
            blocks.append([(y1 * w1 + y2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for y, _, c in blocks:
        out += [y] * int(c)
    return out


@dataclass
class AutoBudget:
    """Chooses a budget per step from ``candidates`` and learns from ``record``."""

    candidates: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    steps_per_size: int = 2
    give_up: float = 0.9
    hopeless: float = 0.75
    margin: float = 0.03
    probe_first: int = 8
    probe_max: int = 32
    down_every: int = 3
    decay: float = 0.95
    idle_decay: float = 0.99
    window: int = 48
    tokens: dict[int, _Mean] = field(default_factory=dict)  # gain per step over the size below
    nodes: dict[int, _Mean] = field(default_factory=dict)  # real tree nodes per step at each size
    runs: dict[int, int] = field(default_factory=dict)  # steps run at each size
    cost: _CostModel = field(init=False)
    climbed: bool = False
    _step: int = 0
    _probes: int = 0
    _gap: int = 0
    _next_probe: int = 0
    _probing: int | None = None  # the best size when the probe in flight was chosen

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"invalid candidates={self.candidates}: need sizes >= 1")
        if not 0 < self.hopeless <= self.give_up <= 1:
            raise ValueError(f"need 0 < hopeless <= give_up <= 1, got {self.hopeless}, {self.give_up}")
        self.candidates = tuple(sorted(set(self.candidates)))
        self.tokens = {c: _Mean() for c in self.candidates}
        self.nodes = {c: _Mean() for c in self.candidates}
        self.runs = dict.fromkeys(self.candidates, 0)
        self.cost = _CostModel(self.window)

    def expected_tokens(self, size: int) -> float:
        """Estimated tokens per step at ``size``: the smallest size's tokens plus the paired
        gains of each size over the one below it."""
        return sum(self.tokens[c].value() for c in self.candidates if c <= size)

    def known(self, size: int) -> bool:
        """Whether ``size``'s tokens were measured (some step ran at it or above)."""
        return self.tokens[size].count > 0

    def step_seconds(self, size: int) -> float:
        """Estimated seconds of a step at ``size`` (its mean real node count on the cost line)."""
        return self.cost.seconds(self.nodes[size].value() if self.known(size) else size)

    def rate(self, size: int) -> float:
        """Estimated tokens per second at ``size`` (0 while unmeasured)."""
        secs = self.step_seconds(size)
        return self.expected_tokens(size) / secs if self.known(size) and secs > 0 else 0.0

    def best(self) -> int:
        """The measured size with the best rate; a larger size must beat a smaller one by
        ``margin`` to be preferred."""
        best = None
        for c in self.candidates:
            if not self.known(c):
                continue
            if best is None or self.rate(c) > (1 + self.margin) * self.rate(best):
                best = c
        return self.candidates[0] if best is None else best

    def next(self) -> int:
        """The budget for the next step."""
        self._step += 1
        if not self.climbed:
            size = self._climb()
            if size is not None:
                return size
            self.climbed = True
            self._gap = self.probe_first
            self._next_probe = self._step + self._gap
        best = self.best()
        if self._probing is not None:  # the last step was a probe: did it change the choice?
            self._gap = self.probe_first if best != self._probing else min(2 * self._gap, self.probe_max)
            # a probe that moved the choice up climbs on at once (the text turned predictable)
            self._next_probe = self._step + (1 if best > self._probing else self._gap)
            self._probing = None
        if self._step < self._next_probe:
            if self._worth_a_look_up(best):
                self._probing = best
                return self.candidates[self.candidates.index(best) + 1]
            return best
        self._probes += 1
        self._probing = best
        i = self.candidates.index(best)
        down = self._probes % self.down_every == 0
        j = i - 1 if (down and i > 0) or i + 1 == len(self.candidates) else i + 1
        return self.candidates[max(j, 0)]

    def _worth_a_look_up(self, best: int) -> bool:
        """Whether the size above ``best`` deserves a probe before the scheduled one: its last
        measurement is old (``probe_first`` steps or more) and, if it gained as much per node
        as ``best`` gains over the size below it (an upper bound: gains shrink with the size),
        it would beat ``best``. A text that turned predictable then shows at once."""
        i = self.candidates.index(best)
        if i == 0 or i + 1 == len(self.candidates):
            return False  # plain decoding has no gain to extrapolate: the schedule probes it
        below, up = self.candidates[i - 1], self.candidates[i + 1]
        if self._step - self.tokens[up].last < self.probe_first:
            return False
        per_node = self.tokens[best].value() / (best - below)
        optimistic = (self.expected_tokens(best) + per_node * (up - best)) / self.cost.seconds(up)
        return optimistic > (1 + self.margin) * self.rate(best)

    def _climb(self) -> int | None:
        """The next size of the climb, or None once it is over."""
        slow = 0
        for c in self.candidates:
            if self.runs[c] < self.steps_per_size:
                if self._step % 2 == 0 and self.runs[self.candidates[0]]:
                    return self.best()  # the incumbent, timed beside the size on trial
                return c
            best = self.best()
            if c > best:
                ratio = self.rate(c) / self.rate(best) if self.rate(best) > 0 else 1.0
                slow = slow + 1 if ratio < self.give_up else 0
                if slow == 2 or ratio < self.hopeless:
                    return None
        return None

    def record(
        self, budget: int, seconds: float, tokens: Mapping[int, float], nodes: int | None = None
    ) -> None:
        """One step ran at ``budget`` in ``seconds`` over trees of ``nodes`` real nodes (default
        ``budget``; for a batch, the padded node count the forward ran); ``tokens[k]`` is the tokens
        per row it would have emitted with a budget of ``k``, for the candidates ``k <= budget``."""
        n = budget if nodes is None else nodes
        self.cost.add(n, seconds)
        if budget in self.runs:
            self.runs[budget] += 1
        self.observe(budget, tokens, n)

    def shadow_size(self) -> int:
        """The size of the shadow trees drafted while plain decoding runs (:mod:`.shadow`): the
        largest size run so far (the climb stopped above it), at least the one above plain."""
        ran = [c for c in self.candidates if self.runs[c]]
        return max([*ran, self.candidates[min(1, len(self.candidates) - 1)]])

    def observe(self, budget: int, tokens: Mapping[int, float], nodes: int) -> None:
        """Tokens a ``budget``-node tree of ``nodes`` real nodes would have kept at each size
        ``k <= budget`` (a step that ran it, or a shadow draft on one that did not): the gains,
        not the cost."""
        below = 0.0
        for k in self.candidates:
            if k > budget or k not in tokens:
                break
            # The gain over the next smaller size, measured on the same step: paired, so far
            # less noisy than each size's own tokens. A k-node tree is the first k nodes.
            self.tokens[k].add(tokens[k] - below, self.decay, self._step, self.idle_decay)
            self.nodes[k].add(min(k, nodes), self.decay, self._step, self.idle_decay)
            below = tokens[k]

    def explain(self) -> str:
        """Which size the controller runs and why, in one line (for logs and ``fastdec demo``)."""
        base = self.candidates[0]
        if not self.runs[base]:
            return "auto budget: nothing measured yet"
        best = self.best()
        plain = self.rate(base)
        tried = [c for c in self.candidates if c != base and self.runs[c]]

        def cost(c: int) -> float:
            return self.step_seconds(c) / self.step_seconds(base)

        if best == base:
            if not tried:
                return "auto budget: plain decoding (no tree size measured yet)"
            top = max(tried, key=self.rate)
            return (
                f"auto budget: speculation does not pay here, plain decoding (the best tree, {top} "
                f"nodes, ran at {self.rate(top) / plain:.2f}x plain's tokens/s: "
                f"{self.expected_tokens(top):.2f} tokens per step at {cost(top):.2f}x a plain step's time)"
            )
        return (
            f"auto budget: {best}-node trees, {self.expected_tokens(best):.2f} tokens per step at "
            f"{cost(best):.2f}x a plain step's time = {self.rate(best) / plain:.2f}x plain's tokens/s"
        )

    @staticmethod
    def counterfactual(budget: int, sizes: tuple[int, ...], paths: list[list[int]]) -> dict[int, float]:
        """Tokens per row for every size ``k <= budget`` from the accepted ``paths`` (node indices,
        root first) of trees built with ``budget`` nodes: the path's nodes with index below ``k``."""
        rows = max(len(paths), 1)
        return {k: sum(sum(1 for i in p if i < k) for p in paths) / rows for k in sizes if k <= budget}
