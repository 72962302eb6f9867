"""fastdec: lossless, training-free speculative decoding with a Rust core.

Token trees
-----------
A draft tree of ``N`` nodes is stored parents-first: node 0 is the *root* (the last accepted
token, whose K/V are not cached yet), ``parents[0] == -1`` and ``parents[i] < i``, and siblings
carry distinct tokens. Terms used throughout:

* ``prefix_len`` -- tokens already in the KV cache; node ``i`` sits at position
  ``prefix_len + depth[i]``.
* ``target_argmax`` -- ``[num_nodes] int32``, the target model's argmax token at every node.
* *accepted nodes* -- the verified path, root first; ``num_accepted`` counts the draft tokens on
  it (root excluded); the *bonus token* is the target's token after the last accepted node, so a
  step emits ``num_accepted + 1`` tokens.

>>> import numpy as np, fastdec
>>> tree = fastdec.TokenTree([10, 11, 12, 13], [-1, 0, 0, 1])
>>> tree.position_ids(prefix_len=7).tolist()
[7, 8, 8, 9]
>>> nodes, num_accepted, bonus = tree.verify_greedy(np.array([11, 13, 0, 99], dtype=np.int32))
>>> nodes.tolist(), num_accepted, bonus
([0, 1, 3], 2, 99)

All arrays crossing the boundary are int32 (token ids, node ids, positions; -1 = none/padding)
unless stated. Arrays returned by properties of a tree are read-only views without a copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastdec import smc
from fastdec._core import (
    MAX_NODES,
    BaseDrafter,
    DraftBatch,
    DraftLength,
    DraftSession,
    Grammar,
    GrammarState,
    HybridDrafter,
    JsonSchema,
    NgramDrafter,
    PrunedTree,
    RecycleDrafter,
    Regex,
    TokenTree,
    TreeTemplate,
    TrieDrafter,
    __version__,
    awrs_sample,
    optimal_template,
    verify_greedy_batch,
    verify_stochastic_batch,
)
from fastdec.constraints import CallbackConstraint, Constraint
from fastdec.drafters import Drafter
from fastdec.vocab import TokenVocab

if TYPE_CHECKING:
    from fastdec.generation import GenerateOutput as GenerateOutput
    from fastdec.generation import generate as generate


def __getattr__(name: str) -> Any:
    # fastdec.generate needs torch: it is imported on first use, so `import fastdec` does not.
    if name in ("generate", "GenerateOutput"):
        from fastdec._optional import require

        require("torch")
        require("transformers")
        from fastdec import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'fastdec' has no attribute {name!r}")


__all__ = [
    "MAX_NODES",
    "BaseDrafter",
    "CallbackConstraint",
    "Constraint",
    "DraftBatch",
    "DraftLength",
    "DraftSession",
    "Drafter",
    "Grammar",
    "GrammarState",
    "HybridDrafter",
    "JsonSchema",
    "NgramDrafter",
    "PrunedTree",
    "RecycleDrafter",
    "Regex",
    "TokenTree",
    "TokenVocab",
    "TreeTemplate",
    "TrieDrafter",
    "__version__",
    "awrs_sample",
    "optimal_template",
    "smc",
    "verify_greedy_batch",
    "verify_stochastic_batch",
]
