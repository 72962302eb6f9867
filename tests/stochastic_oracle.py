"""An independent oracle of stochastic verification: the plain Python loops that were
``fastdec.sampling.verify_stochastic_ref`` before the rule moved into the Rust core.

A transcription of the rule (``fastdec.sampling``'s module docstring, docs/design.md#stochastic) that shares
no code with fastdec: children summed sequentially by node id, the bonus CDF in the chunked
order, float64 arithmetic, the ``z == 0`` and rounding fallbacks. ``test_sampling_oracle.py``
checks that the Rust reference, this oracle and the torch fast path take the same decisions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CDF_CHUNK = 256  # restated: the oracle must not read fastdec's constant


def verify_stochastic_oracle(
    tokens: list[int], parents: list[int], probs: npt.ArrayLike, coins: npt.ArrayLike
) -> tuple[list[int], int]:
    """``(accepted_nodes, bonus_token)`` for a valid tree; ValueError("... no mass") for a stop row
    without mass. ``probs`` ``[n, vocab]`` and ``coins`` ``[n, 2]`` as float64-convertible arrays."""
    p = np.asarray(probs, dtype=np.float64)
    c = np.asarray(coins, dtype=np.float64)
    tok = [int(t) for t in tokens]
    vocab = p.shape[1]
    kids: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        kids[parents[i]].append(i)

    nodes = [0]
    u = 0
    while True:
        # Acceptance: the first child whose cumulative probability exceeds the coin.
        coin = float(c[u, 0])
        cum = 0.0
        nxt = -1
        for child in kids[u]:
            cum += float(p[u, tok[child]])
            if coin < cum:
                nxt = child
                break
        if nxt < 0:
            # Bonus: inverse CDF of p_u without the children's tokens, renormalised by z.
            excluded = {tok[child] for child in kids[u]}
            masked = [0.0 if t in excluded else float(p[u, t]) for t in range(vocab)]
            starts = range(0, vocab, CDF_CHUNK)
            totals = []
            for s in starts:
                total = 0.0
                for m in masked[s : s + CDF_CHUNK]:
                    total += m
                totals.append(total)
            z = 0.0
            for total in totals:
                z += total
            if z > 0.0:
                x = float(c[u, 1]) * z
                last = -1
                offset = 0.0
                for s, total in zip(starts, totals, strict=True):
                    acc = 0.0
                    for t in range(s, min(s + CDF_CHUNK, vocab)):
                        acc += masked[t]
                        if masked[t] > 0.0:
                            last = t
                            if x < offset + acc:
                                return nodes, t
                    offset += total
                return nodes, last  # rounding guard: x rounded up to z
            # z == 0: the children hold all the mass; fall back to the last one that has some.
            positive = [child for child in kids[u] if p[u, tok[child]] > 0.0]
            if not positive:
                raise ValueError(f"probs row {u} has no mass")
            nxt = positive[-1]
        nodes.append(nxt)
        u = nxt
