"""Adaptive draft length for servers that verify linear drafts (vLLM's ``custom_class``).

A draft token is worth verifying when what it is expected to add beats what it costs. If the
engine currently emits ``R`` tokens per second and one more verified token makes a step ``b``
seconds longer, a token reached (all tokens before it accepted) and accepted with cumulative
probability ``q`` raises throughput iff ``q / b > R``, i.e. ``q >= tau = b * R``. Both factors
are measured, nothing is a constant:

* ``b`` and ``R`` from the step clock: the seconds between consecutive ``propose`` calls,
  regressed on the shape of the step the engine verified in between (a constant, its rows, 1
  if any row drafted, its drafting rows, its draft tokens; least squares with the costs kept
  >= 0 and one refit without outlying steps: prefill chunks, scheduling hiccups) over a recent
  window; ``R`` as emitted tokens over seconds in the same window. The step-level term
  matters: on vLLM's CPU engine the first draft token of a step costs 6-8 ms (the rejection
  sampler, logits at draft positions) and later ones about 1.3 ms, so a row (or a whole batch)
  drafts only if the tokens it keeps are expected to pay for that too. On a CPU at batch 1 a
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
        window: int = 128,
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
        # (rows, any row drafting, drafting rows, draft tokens, seconds, emitted) per step
        self._steps: deque[tuple[float, ...]] = deque(maxlen=window)
        self._rng = np.random.default_rng(0)
        self._observed = 0
        # seconds: a step, a row, a step with drafts, a drafting row, a draft token
        self._cost: tuple[float, ...] = (math.nan,) * 5
        self._rate = math.nan  # emitted tokens per second

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

    def observe_step(self, drafts: Sequence[int], seconds: float, emitted: int) -> None:
        """Records one engine step: ``drafts`` the draft length of each batch row verified,
        ``seconds`` taken, ``emitted`` tokens gained; refits the cost every ``REFIT_EVERY`` steps."""
        rows = len(drafts)
        if rows <= 0 or not (seconds > 0.0 and math.isfinite(seconds)):
            return
        drafting = sum(1 for d in drafts if d > 0)
        self._steps.append(
            (
                float(rows),
                float(drafting > 0),
                float(drafting),
                float(sum(drafts)),
                float(seconds),
                float(emitted),
            )
        )
        self._observed += 1
        if self._observed % REFIT_EVERY == 0 or len(self._steps) == self.min_steps:
            self._fit()

    def _fit(self) -> None:
        if len(self._steps) < self.min_steps:
            return
        data = np.asarray(self._steps)
        x, s, e = data[:, :4], data[:, 4], data[:, 5]
        keep = s <= 10.0 * float(np.median(s))  # engine idle time or a huge prefill
        x, s, e = x[keep], s[keep], e[keep]
        if len(s) < 2 or float(np.ptp(x[:, 3])) == 0.0:
            return  # the token cost is not identified yet: keep the last fit
        design = np.column_stack([np.ones(len(s)), x])
        w = _cost_fit(design, s)
        resid = s - design @ w
        mad = float(np.median(np.abs(resid - np.median(resid))))
        if mad > 0.0:  # one refit without the steps a hiccup stretched (robust to outliers)
            inliers = np.abs(resid) <= 3.5 * 1.4826 * mad
            if inliers.sum() >= max(2, len(s) // 2):
                w = _cost_fit(design[inliers], s[inliers])
        self._cost = tuple(float(v) for v in w)
        self._rate = float(e.sum() / s.sum())

    @property
    def tau(self) -> float:
        """The cumulative acceptance probability a draft token must reach to be verified: the
        engine's tokens/s times a draft token's seconds."""
        if not self.enabled or not math.isfinite(self._rate):
            return 0.0
        return min(1.0, self._rate * self._cost[4])

    # -- the decision ---------------------------------------------------------------------------

    def cut(self, confidences: Sequence[float]) -> int:
        """How many leading tokens of a chain with these confidences to draft (a batch of one)."""
        return self.cut_batch([confidences])[0]

    def cut_batch(self, chains: Sequence[Sequence[float]]) -> list[int]:
        """How many leading tokens of each row's chain (given by its confidences) to draft.

        A token is kept while its cumulative acceptance ``q`` reaches ``tau``; a row drafts
        only if what its kept tokens add, ``sum(q - tau)`` (tokens), pays for a drafting row's
        own cost, and the batch drafts only if the rows together pay for the cost of a step
        that verifies drafts at all (vLLM's rejection sampler and draft-position logits).
        """
        ns = [min(len(c), self.k) for c in chains]
        if not self.enabled:
            return ns
        keeps = list(ns)
        forced = [False] * len(ns)
        if self.explore > 0.0:
            # Exploration keeps every factor measurable: full drafts measure the acceptance of
            # tokens tau would cut, empty ones vary the step's shape so the costs stay identified.
            for i, r in enumerate(self._rng.random(len(ns))):
                if r < self.explore:
                    forced[i] = True
                    keeps[i] = ns[i] if r < self.explore / 2 else 0
        if not math.isfinite(self._rate):
            return keeps  # nothing measured yet: draft everything
        rate, tau = self._rate, self.tau
        row_cost, step_cost = rate * self._cost[3], rate * self._cost[2]
        total = 0.0
        for i, conf in enumerate(chains):
            if forced[i]:
                continue
            q, gain, keep = 1.0, 0.0, 0
            for j in range(ns[i]):
                q *= self.probability(j, conf[j])
                if q < tau:
                    break
                gain += q - tau
                keep = j + 1
            if gain < row_cost:
                keep, gain = 0, 0.0
            keeps[i] = keep
            total += gain
        if total < step_cost and not any(f and k for f, k in zip(forced, keeps, strict=True)):
            keeps = [k if f else 0 for f, k in zip(forced, keeps, strict=True)]
        return keeps

    def stats(self) -> dict[str, float | list[float]]:
        """``tau``, the fitted cost (seconds per draft token, drafting row, step with drafts,
        row, and the step's fixed seconds), the
        engine's tokens/s, acceptance overall and per depth, and the steps in the cost window."""
        o = self._overall
        step, row, drafting_step, drafting_row, token = self._cost
        return {
            "tau": self.tau,
            "seconds_per_token": token,
            "seconds_per_drafting_row": drafting_row,
            "seconds_per_drafting_step": drafting_step,
            "seconds_per_row": row,
            "step_fixed_seconds": step,
            "tokens_per_second": self._rate,
            "acceptance": o.accepted / o.tried if o.tried else math.nan,
            "acceptance_by_depth": [d.accepted / d.tried if d.tried else math.nan for d in self._depths],
            "steps": float(len(self._steps)),
        }


def _cost_fit(design: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Least squares of step seconds on ``design`` (intercept, rows, drafting step, drafting
    rows, draft tokens) with every cost but the intercept >= 0 (an active set: the most
    negative cost is dropped and the rest refitted), and a tiny ridge so that columns the data
    cannot tell apart (one row per step: rows is the intercept, drafting step is drafting row)
    share their cost instead of cancelling."""
    active = np.ones(design.shape[1], dtype=bool)
    gram = design.T @ design
    ridge = 1e-6 * float(np.trace(gram)) / design.shape[1]
    w = np.zeros(design.shape[1])
    for _ in range(design.shape[1]):
        idx = np.flatnonzero(active)
        g = gram[np.ix_(idx, idx)] + ridge * np.diag((idx > 0).astype(float))
        w = np.zeros(design.shape[1])
        w[idx] = np.linalg.solve(g, design[:, idx].T @ seconds)
        negative = np.flatnonzero((w < 0) & (np.arange(len(w)) > 0))
        if not len(negative):
            break
        active[negative[np.argmin(w[negative])]] = False
    return w
