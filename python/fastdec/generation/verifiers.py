"""The three ways ``fastdec.generate`` verifies a step's trees, chosen once per call.

Each verifier may first prune the drafted trees (only the constrained one does: drafts that the
constraint forbids are never scored), then turns the target's logits at every node into, per
row, the accepted path (node ids, root first), the bonus token, and whether the row reached a
dead end (a constraint that allows nothing with mass).

* :class:`GreedyVerifier` -- the longest path on which every draft token is the target's argmax.
* :class:`StochasticVerifier` -- the lossless point-mass rule for deterministic drafts
  (docs/design.md#stochastic): the output follows exactly the law of plain sampling.
* :class:`ConstrainedVerifier` -- greedy or sampled verification of the target restricted to
  what the constraint allows (``generation/constraint_tree.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastdec._core import TokenTree
from fastdec.tree_batch import TreeBatch

from . import constraint_tree
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
        self.native = constraint_tree.is_native(constraint)  # prunes and verifies in Rust
        self.states = [constraint.start() for _ in range(rows)]
        # Per row: a PrunedTree (native constraints keep the states in Rust) or a list of states.
        self.node_states: list[Any] = []
        self.warp = warp
        self.gen = gen

    def prune(self, trees: list[TokenTree]) -> list[bool]:
        c = self.constraint
        if self.native:  # one walk per tree in Rust; the states stay there
            self.node_states = [
                c.prune_tree(tree, state) for tree, state in zip(trees, self.states, strict=True)
            ]
            trees[:] = [p.tree for p in self.node_states]
            return [p.changed for p in self.node_states]
        self.node_states = []
        pruned = []
        for b, tree in enumerate(trees):
            kept, states = constraint_tree.prune_tree(tree, c, self.states[b])
            pruned.append(kept is not tree)
            trees[b] = kept
            self.node_states.append(states)
        return pruned

    def verify(self, batch: TreeBatch, trees: Sequence[TokenTree], logits: torch.Tensor) -> Verdict:
        if self.warp is None:
            rows, key = _host_f32(logits), "logits"
        else:
            from fastdec import sampling

            # float32 or float64 as warped, read in place; visited rows widen to float64 exactly.
            rows, key = sampling.host_probs(sampling.warp_probs(logits.float(), *self.warp)), "probs"
        out = Verdict([], [], [])
        for b, tree in enumerate(trees):
            target = {key: rows[b, : tree.num_nodes]}
            if self.native:
                path, y, self.states[b] = self.constraint.verify_tree(
                    self.node_states[b], seed=self._seed(), **target
                )
            else:
                path, y, self.states[b] = constraint_tree.verify_tree(
                    tree, self.node_states[b], self.constraint, seed=self._seed, **target
                )
            out.paths.append(path)
            out.dead.append(y is None)
            out.bonus.append(-1 if y is None else y)
        return out

    def _seed(self) -> int:
        if self.gen is None:  # greedy reads no randomness
            return 0
        return int(torch.randint(2**62, (1,), generator=self.gen))


def _host_f32(t: torch.Tensor) -> np.ndarray:
    """``t`` as a C-contiguous float32 numpy array on the host (a view where it already is)."""
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float32).numpy())


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
