"""The three ways ``fastdec.generate`` verifies a step's trees, chosen once per call.

Each verifier may first prune the drafted trees (only the constrained one does: drafts that the
constraint forbids are never scored), then turns the target's logits at every node into, per
row, the accepted path (node ids, root first), the bonus token, and whether the row reached a
dead end (a constraint that allows nothing with mass).

* :class:`GreedyVerifier` -- the longest path on which every draft token is the target's argmax.
* :class:`StochasticVerifier` -- the lossless point-mass rule for deterministic drafts
  (trees.md §2.3): the output follows exactly the law of plain sampling.
* :class:`ConstrainedVerifier` -- greedy or sampled verification of the target restricted to
  what the constraint allows (``generation/constrained.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fastdec._core import TokenTree
from fastdec.tree_batch import TreeBatch

from . import constrained
from .step_ops import StepOps


@dataclass
class Verdict:
    """What verification decided for each row of a step."""

    paths: list[list[int]]  # accepted nodes, root first
    bonus: list[int]  # the target's token after the path (-1 at a dead end)
    dead: list[bool]  # the constraint allows nothing with mass after the path

    @property
    def rows(self) -> int:
        return len(self.paths)


class GreedyVerifier:
    def __init__(self, ops: StepOps) -> None:
        self.ops = ops

    def prune(self, trees: list[TokenTree]) -> list[bool]:
        """Prunes ``trees`` in place; says which rows changed (their nodes no longer match the
        proposal)."""
        return [False] * len(trees)

    def verify(self, batch: TreeBatch, trees: Sequence[TokenTree], logits: torch.Tensor) -> Verdict:
        paths, bonus = self.ops.verify_greedy(batch, logits.argmax(-1))
        return Verdict(paths, bonus, [False] * len(paths))


class StochasticVerifier(GreedyVerifier):
    def __init__(
        self, ops: StepOps, temperature: float, top_k: int | None, top_p: float | None, gen: torch.Generator
    ) -> None:
        super().__init__(ops)
        self.warp = (temperature, top_k, top_p)
        self.gen = gen

    def verify(self, batch: TreeBatch, trees: Sequence[TokenTree], logits: torch.Tensor) -> Verdict:
        from fastdec import sampling

        probs = sampling.warp_probs(logits.float(), *self.warp)
        coins = sampling.draw_coins(self.gen, (len(trees), batch.tokens.shape[1], 2))
        paths, bonus = self.ops.verify_stochastic(batch, trees, probs, coins)
        return Verdict(paths, bonus, [False] * len(paths))


class ConstrainedVerifier(GreedyVerifier):
    """Keeps one constraint state per row; ``warp`` is ``None`` for greedy decoding."""

    def __init__(
        self,
        ops: StepOps,
        constraint: Any,
        rows: int,
        warp: tuple[float, int | None, float | None] | None,
        gen: torch.Generator | None,
    ) -> None:
        super().__init__(ops)
        self.constraint = constraint
        self.states = [constraint.start() for _ in range(rows)]
        self.node_states: list[list[Any]] = []
        self.warp = warp
        self.gen = gen

    def prune(self, trees: list[TokenTree]) -> list[bool]:
        self.node_states = []
        pruned = []
        for b, tree in enumerate(trees):
            kept, states = constrained.prune_tree(tree, self.constraint, self.states[b])
            pruned.append(kept is not tree)
            trees[b] = kept
            self.node_states.append(states)
        return pruned

    def verify(self, batch: TreeBatch, trees: Sequence[TokenTree], logits: torch.Tensor) -> Verdict:
        probs = top_c = None
        if self.warp is None:
            k = min(constrained.GREEDY_CANDIDATES, logits.shape[-1])
            top_c = logits.topk(k, dim=-1).indices.cpu().numpy()
        else:
            from fastdec import sampling

            probs = sampling.warp_probs(logits.float(), *self.warp)
        out = Verdict([], [], [])
        for b, tree in enumerate(trees):
            n = tree.num_nodes
            path, y, self.states[b] = constrained.verify_constrained(
                tree,
                self.node_states[b],
                self.constraint,
                logits[b, :n],
                top_c[b, :n] if top_c is not None else None,
                probs[b, :n] if probs is not None else None,
                self._seed,
            )
            out.paths.append(path)
            out.dead.append(y is None)
            out.bonus.append(-1 if y is None else y)
        return out

    def _seed(self) -> int:
        return int(torch.randint(2**62, (1,), generator=self.gen))


def choose_verifier(
    ops: StepOps,
    *,
    rows: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    constraint: Any,
) -> GreedyVerifier:
    """The verifier for these decoding settings (``temperature == 0``: greedy)."""
    gen = None
    if temperature > 0:
        gen = torch.Generator().manual_seed(seed if seed is not None else int(time.time_ns() % 2**63))
    if constraint is not None:
        warp = (temperature, top_k, top_p) if gen is not None else None
        return ConstrainedVerifier(ops, constraint, rows, warp, gen)
    if gen is not None:
        return StochasticVerifier(ops, temperature, top_k, top_p, gen)
    return GreedyVerifier(ops)
