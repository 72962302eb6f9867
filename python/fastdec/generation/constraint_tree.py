"""Constrained speculative decoding: drafts are pruned to what the constraint allows, and every
emitted token is drawn from the target restricted to the constraint.

At a tree node ``u`` whose text is in constraint state ``s`` the target law is
``g(x) = p_u(x) l_s(x) / Z``. Verification draws ``y ~ g`` (greedy: the allowed token of highest
logit, found by checking the top candidates in logit order; sampling: one AWRS step, Lipkin et
al. 2025) and moves to the child carrying ``y`` if there is one, else emits ``y`` as the bonus
and stops. Every emitted token is an exact draw from ``g`` whatever the tree, so the output has
the law of plain constrained decoding (at temperature 0: greedy decoding under the full mask),
and a drafted child ``x`` is accepted with probability ``g(x)``, as the point-mass rule would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastdec._core import TokenTree

# Logit-ordered candidates checked before falling back to the full mask (greedy); equals
# GREEDY_CANDIDATES in the Rust core.
GREEDY_CANDIDATES = 16


def is_native(constraint: Any) -> bool:
    """Whether ``constraint`` prunes and verifies trees in Rust."""
    return hasattr(constraint, "prune_tree") and hasattr(constraint, "verify_tree")


def top_candidates(row: np.ndarray, k: int) -> list[int]:
    """The ``k`` tokens of highest logit, best first, lower id first among equal logits (the
    order in which the first allowed token is the argmax of the masked row)."""
    return [int(t) for t in np.argsort(-row, kind="stable")[:k]]


def prune_tree(tree: TokenTree, constraint: Any, state: Any) -> tuple[TokenTree, list[Any]]:
    """The subtree of ``tree`` whose every token the constraint allows after the text in
    ``state`` (the root stands for text already there), and each kept node's state. Tokens
    outside the vocabulary are pruned."""
    parents = tree.parents.tolist()
    tokens = tree.tokens.tolist()
    keep = [0]
    new_id = {0: 0}
    states = [state]
    for i in range(1, len(tokens)):
        p = new_id.get(parents[i])
        if p is None or not 0 <= tokens[i] < constraint.vocab_size:  # the target cannot emit it
            continue
        nxt = constraint.advance(states[p], [tokens[i]])
        if nxt is None:
            continue
        new_id[i] = len(keep)
        keep.append(i)
        states.append(nxt)
    if len(keep) == len(tokens):
        return tree, states
    return TokenTree([tokens[i] for i in keep], [-1] + [new_id[parents[i]] for i in keep[1:]]), states


def verify_tree(
    tree: TokenTree,
    states: list[Any],
    constraint: Any,
    *,
    logits: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    seed: Callable[[], int],
) -> tuple[list[int], int | None, Any]:
    """One row's verification under the constraint.

    Args:
        tree: the pruned tree; ``states[i]`` is the state after node ``i``'s text.
        logits: ``[N, V]`` float32 logits of the row (greedy), or None when sampling.
        probs: ``[N, V]`` float64 warped probabilities (sampling), or None for greedy.
        seed: a fresh 64-bit seed per AWRS step.

    Returns:
        ``(path, bonus, state)``: accepted node ids root first, the bonus token (None at a dead
        end: nothing the constraint allows has mass) and the state after the bonus.
    """
    parents = tree.parents.tolist()
    tokens = tree.tokens.tolist()
    child_of: list[dict[int, int]] = [{} for _ in tokens]
    for i in range(1, len(tokens)):
        child_of[parents[i]][tokens[i]] = i
    path = [0]
    u = 0
    while True:
        s = states[u]
        y: int | None = None
        if probs is None:
            assert logits is not None
            row = logits[u]
            if np.isnan(row).any():
                raise ValueError(f"logits of node {u} hold a NaN")
            for cand in top_candidates(row, GREEDY_CANDIDATES):
                if constraint.allows(s, cand):
                    y = cand
                    break
            if y is None:  # no top candidate passes: the full mask decides
                words = constraint.mask(s).view(np.uint32)
                allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[: row.shape[-1]]
                idx = np.flatnonzero(allowed)
                if idx.size:
                    y = int(idx[np.argmax(row[idx])])
        else:
            y, _, _ = constraint.sample_probs(
                s, np.ascontiguousarray(probs[u], dtype=np.float64), "none", seed()
            )
        if y is None:
            return path, None, s
        nxt = child_of[u].get(y)
        if nxt is None:
            after = constraint.advance(s, [y])
            return path, y, s if after is None else after
        path.append(nxt)
        u = nxt
