"""A NumPy implementation of the per-step tree work, the baseline of ``tree_step.py``.

Written the way a careful NumPy user would (and as Token Recycling / Medusa do on the host):
everything that depends only on the template is precomputed once; each step then validates the
filled tokens, derives positions and the additive mask, and verifies greedily with the
vectorised retrieve-indices rule (docs/design.md#greedy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NumpyTemplate:
    parents: np.ndarray  # [N] int32
    depth: np.ndarray  # [N] int32
    ancestors: np.ndarray  # [N, N] bool
    leaf_paths: np.ndarray  # [num_leaves, max_depth + 1] int32, -1 padded
    path_valid: np.ndarray  # [num_leaves, max_depth] bool: column t+1 is a real node

    @staticmethod
    def from_parents(parents: np.ndarray) -> NumpyTemplate:
        n = len(parents)
        depth = np.zeros(n, dtype=np.int32)
        ancestors = np.eye(n, dtype=bool)
        for i in range(1, n):
            depth[i] = depth[parents[i]] + 1
            ancestors[i] |= ancestors[parents[i]]
        is_leaf = np.ones(n, dtype=bool)
        is_leaf[parents[1:]] = False
        leaves = np.flatnonzero(is_leaf)
        width = int(depth.max()) + 1
        leaf_paths = np.full((len(leaves), width), -1, dtype=np.int32)
        for row, leaf in enumerate(leaves):
            nodes = np.flatnonzero(ancestors[leaf])  # ancestors in node order = root-to-leaf order
            leaf_paths[row, : len(nodes)] = nodes
        return NumpyTemplate(
            parents=parents.astype(np.int32),
            depth=depth,
            ancestors=ancestors,
            leaf_paths=leaf_paths,
            path_valid=leaf_paths[:, 1:] >= 0,
        )


@dataclass(frozen=True)
class NumpyTree:
    template: NumpyTemplate
    tokens: np.ndarray


def fill(template: NumpyTemplate, tokens: np.ndarray) -> NumpyTree:
    """Validates one filled tree: tokens non-negative, siblings distinct."""
    tokens = np.asarray(tokens, dtype=np.int32)
    if tokens.shape != template.parents.shape or (tokens < 0).any():
        raise ValueError("bad tokens")
    keys = (template.parents[1:].astype(np.int64) << 32) | tokens[1:].astype(np.int64)
    if np.unique(keys).size != keys.size:
        raise ValueError("duplicate siblings")
    return NumpyTree(template, tokens)


def position_ids(tree: NumpyTree, prefix_len: int) -> np.ndarray:
    return tree.template.depth + np.int32(prefix_len)


def additive_mask(tree: NumpyTree, prefix_len: int, dtype: type = np.float32) -> np.ndarray:
    n = len(tree.tokens)
    mask = np.full((n, prefix_len + n), np.finfo(dtype).min, dtype=dtype)
    mask[:, :prefix_len] = 0
    mask[:, prefix_len:][tree.template.ancestors] = 0
    return mask


def leaf_paths(tree: NumpyTree) -> np.ndarray:
    return tree.template.leaf_paths


def verify_greedy(tree: NumpyTree, target_argmax: np.ndarray) -> tuple[np.ndarray, int, int]:
    paths = tree.template.leaf_paths
    drafted = tree.tokens[paths[:, 1:]]  # -1 padding indexes the last node; masked below
    predicted = target_argmax[paths[:, :-1]]
    match = (drafted == predicted) & tree.template.path_valid
    accepted = np.cumprod(match, axis=1).sum(axis=1)
    best = int(np.argmax(accepted))
    num_accepted = int(accepted[best])
    nodes = paths[best, : num_accepted + 1]
    return nodes, num_accepted, int(target_argmax[nodes[-1]])
