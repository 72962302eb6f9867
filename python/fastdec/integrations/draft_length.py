"""Adaptive draft length for servers that verify linear drafts (vLLM's ``custom_class``).

A draft token is worth verifying when what it is expected to add beats what it costs. If the
engine currently emits ``R`` tokens per second and one more verified token makes a step ``b``
seconds longer, a token reached (all tokens before it accepted) and accepted with cumulative
probability ``q`` raises throughput iff ``q / b > R``, i.e. ``q >= tau = b * R``. Both factors
are measured, nothing is a constant:

* ``b`` and ``R`` from the step clock: the seconds between consecutive ``propose`` calls against
  the tokens the engine verified in that step (rows plus draft tokens), as a Theil-Sen slope
  (robust to the prefill chunks and scheduling hiccups that land in some steps) over a recent
  window, and ``R`` as emitted tokens over seconds in the same window. On a CPU at batch 1 a
  draft token costs little (``tau`` near 0: draft everything the drafter has); at batch 16 a
  token costs almost what a whole row costs (``tau`` near 1: only near-certain tokens).
* ``q`` as the product of per-token acceptance probabilities, estimated from what vLLM
  accepted of earlier drafts, per (depth, drafter confidence bin) with shrinkage towards the
  per-depth rate (and that towards the overall rate). The confidence of a chain token is its
  tree score divided by its parent's (the trie's empirical continuation probability); a drafter
  without scores (prompt lookup) gives 1, so only depth distinguishes its tokens.

Tokens that are never drafted are never measured, and a slope needs steps of different sizes,
so a small share of rows (``explore``) drafts its whole chain or nothing whatever ``tau`` says,
and neither estimate can get stuck.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from fastdec._core import TokenTree

REFIT_EVERY = 8  # engine steps between refits of the cost slope


def chain_confidences(tree: TokenTree, nodes: Sequence[int]) -> list[float]:
    """Per chain node (root excluded), its score over its parent's, clipped to [0, 1]; 1.0 for
    trees without scores.

    >>> t = TokenTree([5, 6, 7], [-1, 0, 1], scores=[1.0, 0.5, 0.25])
    >>> chain_confidences(t, [0, 1, 2])
    [0.5, 0.5]
    """
    scores = tree.scores
    if scores is None:
        return [1.0] * (len(nodes) - 1)
    out = []
    for parent, node in itertools.pairwise(nodes):
        ps = float(scores[parent])
        ratio = float(scores[node]) / ps if ps > 0 else 0.0
        out.append(min(1.0, max(0.0, ratio)) if math.isfinite(ratio) else 0.0)
    return out


class _Rate:
    """Accepted / tried, decayed so that the estimate follows the text."""

    __slots__ = ("accepted", "tried")

    def __init__(self) -> None:
        self.accepted = 0.0
        self.tried = 0.0

    def add(self, accepted: bool, decay: float) -> None:
        self.accepted = self.accepted * decay + float(accepted)
        self.tried = self.tried * decay + 1.0


class DraftLength:
    """Learns how many tokens of each linear draft are worth verifying.

    Args:
        k: the most draft tokens per row.
        bins: confidence bins per depth.
        window: recent steps in the cost fit.
        min_steps: steps measured before ``tau`` leaves 0 (draft everything until then).
        explore: share of rows drafted in full (half of it) or not at all (the other half)
            whatever ``tau`` says (keeps both estimates measurable).
        decay: per-observation decay of the acceptance counts.
        shrink: pseudo-counts pulling a bin towards its depth's rate (and a depth towards the
            overall rate).
        enabled: False always drafts the full chain (the plain, non-adaptive behaviour).

    Raises:
        ValueError: a setting out of range (named in the message).
    """

    def __init__(
        self,
        k: int,
        *,
        bins: int = 8,
        window: int = 64,
        min_steps: int = 16,
        explore: float = 0.05,
        decay: float = 0.998,
        shrink: float = 8.0,
        enabled: bool = True,
    ) -> None:
        checks = (
            ("k", k >= 1),
            ("bins", bins >= 1),
            ("window", window >= 4),
            ("min_steps", 2 <= min_steps <= window),
            ("explore", 0.0 <= explore <= 1.0),
            ("decay", 0.0 < decay <= 1.0),
            ("shrink", shrink > 0.0),
        )
        for name, ok in checks:
            if not ok:
                raise ValueError(f"draft length setting {name} = {locals()[name]!r} is out of range")
        self.k, self.bins, self.min_steps = int(k), int(bins), int(min_steps)
        self.explore, self.decay, self.shrink, self.enabled = (
            float(explore),
            float(decay),
            float(shrink),
            enabled,
        )
        self._cells = [[_Rate() for _ in range(self.bins)] for _ in range(self.k)]
        self._depths = [_Rate() for _ in range(self.k)]
        self._overall = _Rate()
        self._steps: deque[tuple[float, float, float]] = deque(maxlen=window)  # (tokens, seconds, emitted)
        self._rng = np.random.default_rng(0)
        self._tau = 0.0
        self._observed = 0
        self._fitted = (math.nan, math.nan, math.nan)  # (seconds per token, tokens/s, step intercept)

    # -- acceptance -----------------------------------------------------------------------------

    def _bin(self, confidence: float) -> int:
        return min(self.bins - 1, max(0, int(confidence * self.bins)))

    def probability(self, depth: int, confidence: float) -> float:
        """Estimated chance that a draft token at ``depth`` (0 = first) with ``confidence`` is
        accepted, given that every token before it was."""
        d = min(depth, self.k - 1)
        o = self._overall
        p_all = (o.accepted + 0.5) / (o.tried + 1.0)
        dr = self._depths[d]
        p_depth = (dr.accepted + self.shrink * p_all) / (dr.tried + self.shrink)
        cell = self._cells[d][self._bin(confidence)]
        return (cell.accepted + self.shrink * p_depth) / (cell.tried + self.shrink)

    def observe(self, draft: Sequence[int], confidences: Sequence[float], emitted: Sequence[int]) -> int:
        """Records how much of a row's previous draft the engine accepted.

        Args:
            draft: the tokens proposed for the row at the previous step.
            confidences: their confidences (as given to :meth:`cut`).
            emitted: the tokens the row gained since (accepted drafts, then one more).

        Returns:
            the number of draft tokens accepted.
        """
        accepted = 0
        limit = min(len(draft), max(0, len(emitted) - 1))
        while accepted < limit and draft[accepted] == emitted[accepted]:
            accepted += 1
        for j in range(min(len(draft), accepted + 1)):  # token j was reached iff all before it held
            hit = j < accepted
            c = confidences[j] if j < len(confidences) else 1.0
            self._cells[min(j, self.k - 1)][self._bin(c)].add(hit, self.decay)
            self._depths[min(j, self.k - 1)].add(hit, self.decay)
            self._overall.add(hit, self.decay)
        return accepted

    # -- cost -----------------------------------------------------------------------------------

    def observe_step(self, tokens: int, seconds: float, emitted: int) -> None:
        """Records one engine step: ``tokens`` verified (rows + drafts), ``seconds`` taken,
        ``emitted`` tokens gained; refits ``tau`` every ``REFIT_EVERY`` steps."""
        if tokens <= 0 or not (seconds > 0.0 and math.isfinite(seconds)):
            return
        self._steps.append((float(tokens), float(seconds), float(emitted)))
        # the fit is O(window^2): refit every REFIT_EVERY steps, not on every engine step
        self._observed += 1
        if self._observed % REFIT_EVERY == 0 or len(self._steps) == self.min_steps:
            self._tau = self._fit()

    def _fit(self) -> float:
        if len(self._steps) < self.min_steps:
            return 0.0
        data = np.asarray(self._steps)
        t, s, e = data[:, 0], data[:, 1], data[:, 2]
        keep = s <= 10.0 * float(np.median(s))  # engine idle time or a huge prefill
        t, s, e = t[keep], s[keep], e[keep]
        if len(t) < 2 or float(np.ptp(t)) == 0.0:
            return self._tau  # the slope is not identified yet: keep the last one
        dt = t[None, :] - t[:, None]
        ds = s[None, :] - s[:, None]
        slopes = (ds / np.where(dt == 0, np.nan, dt))[np.triu(dt != 0, 1)]
        b = max(0.0, float(np.median(slopes)))
        rate = float(e.sum() / s.sum())
        self._fitted = (b, rate, float(np.median(s - b * t)))
        return min(1.0, b * rate)

    @property
    def tau(self) -> float:
        """The cumulative acceptance probability a draft token must reach to be verified."""
        return self._tau if self.enabled else 0.0

    # -- the decision ---------------------------------------------------------------------------

    def cut(self, confidences: Sequence[float]) -> int:
        """How many leading tokens of a chain with these confidences to draft."""
        n = min(len(confidences), self.k)
        if not self.enabled:
            return n
        if self.explore > 0.0:
            # Exploration keeps both factors measurable: full drafts measure the acceptance of
            # tokens tau would cut, empty ones vary the tokens per step so the cost slope stays
            # identified even when every row would otherwise draft the same length.
            r = self._rng.random()
            if r < self.explore / 2:
                return n
            if r < self.explore:
                return 0
        tau = self.tau
        if tau <= 0.0:
            return n
        q = 1.0
        for j in range(n):
            q *= self.probability(j, confidences[j])
            if q < tau:
                return j
        return n

    def stats(self) -> dict[str, float | list[float]]:
        """``tau``, the fitted cost (seconds per verified token, the step's fixed seconds), the
        engine's tokens/s, acceptance overall and per depth, and the steps in the cost window."""
        o = self._overall
        b, rate, fixed = self._fitted
        return {
            "tau": self.tau,
            "seconds_per_token": b,
            "step_fixed_seconds": fixed,
            "tokens_per_second": rate,
            "acceptance": o.accepted / o.tried if o.tried else math.nan,
            "acceptance_by_depth": [d.accepted / d.tried if d.tried else math.nan for d in self._depths],
            "steps": float(len(self._steps)),
        }
