"""The drafter protocol every fastdec drafter (and a server's own) implements.

Per request: ``start(request_id, prompt_ids)``; then each step ``propose(request_id, budget)``
returns a :class:`fastdec.TokenTree` whose root is the last token of the sequence, the target
verifies it, and ``accept(request_id, emitted, topk_ids)`` appends the tokens the step
emitted (accepted drafts, then the bonus token); ``topk_ids`` (``[num_nodes, k] int32``) is the
target's top-k at every verified node, for drafters that learn from it (Token Recycling);
finally ``stop(request_id)``. ``propose_for(context_ids, budget)`` is the stateless form.
An optional ``wants_topk()`` returns how many top-k columns ``accept`` learns from, or ``None``;
callers compute ``topk_ids`` only when it returns a number (a drafter without it gets none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fastdec._core import BaseDrafter, HybridDrafter, NgramDrafter, RecycleDrafter, TokenTree, TrieDrafter

RequestId = int | str

#: The one table of drafter names: a name builds the same drafter in ``fastdec.generate``,
#: ``fastdec demo`` and every server adapter (:func:`build_drafter`); servers set only what the
#: engine's own settings say (draft length, n-gram lengths, the request cap).
DRAFTERS: dict[str, str] = {
    "recycling": "Token Recycling: the target's own top-k recycled (needs the target's logits)",
    "trie": "trie retrieval with cross-request memory (TrieDrafter)",
    "ngram": "an n-gram tree: continuations of the recent suffix matches merged (NgramDrafter 'tree')",
    "pld": "prompt lookup: the tokens after the longest earlier match of the last n (NgramDrafter 'pld')",
    "hybrid": "the trie fused with the n-gram tree (weights 1 and 0.5)",
}
#: drafters ``fastdec.generate`` and ``fastdec demo`` build from a name
DRAFTER_NAMES = tuple(DRAFTERS)
#: the drafters a server adapter builds from a name (servers pass no target logits)
SERVER_DRAFTERS = ("pld", "trie", "hybrid")
#: the default of ``fastdec.generate`` and ``fastdec demo``, chosen by measurement
#: (``benches/e2e.py``; README, "Generation on transformers models")
DEFAULT_DRAFTER = "trie"


@runtime_checkable
class Drafter(Protocol):
    """A draft generator (implemented by :class:`fastdec.NgramDrafter`)."""

    def start(self, request_id: RequestId, prompt_ids: npt.ArrayLike) -> None: ...

    def propose(self, request_id: RequestId, budget: int) -> TokenTree: ...

    def accept(
        self,
        request_id: RequestId,
        emitted: npt.ArrayLike,
        topk_ids: npt.NDArray[np.int32] | None = None,
    ) -> None: ...

    def stop(self, request_id: RequestId) -> None: ...

    def propose_for(self, context_ids: npt.ArrayLike, budget: int) -> TokenTree: ...


def build_drafter(
    name: str,
    *,
    vocab_size: int | None = None,
    num_pred: int | None = None,
    min_n: int | None = None,
    max_n: int | None = None,
    max_requests: int = 1024,
    options: Mapping[str, Any] | None = None,
    label: str = "fastdec",
) -> BaseDrafter:
    """A fresh drafter of the kind ``name`` (:data:`DRAFTERS`). ``num_pred``: prompt lookup's
    draft length (default 10); ``min_n`` / ``max_n``: the n-gram lengths of ``pld`` (default 1..3)
    and of the n-gram tree in ``ngram`` and ``hybrid`` (default 1..4); ``vocab_size``: needed by
    ``recycling``; ``options``: constructor keywords of the trie (``trie``, ``hybrid``), of the
    n-gram drafter (``pld``, ``ngram``) or of Token Recycling. ``label`` starts error messages.

    Raises:
        ValueError: an unknown name, a missing ``vocab_size``, or options the drafter does not
            take (named).

    >>> type(build_drafter("hybrid")).__name__
    'HybridDrafter'
    """
    if name not in DRAFTERS:
        raise ValueError(f"{label} drafter = {name!r}: must be one of {DRAFTER_NAMES} or a drafter object")
    kwargs = dict(options or {})

    def tree(**extra: Any) -> NgramDrafter:
        n = {"min_n": min_n or 1, "max_n": max_n or 4}
        return NgramDrafter("tree", **n, num_pred=16, max_matches=32, max_requests=max_requests, **extra)

    try:
        if name == "recycling":
            if vocab_size is None:
                raise ValueError("Token Recycling needs the vocabulary size")
            return RecycleDrafter(vocab_size, **kwargs)
        if name == "trie":
            return TrieDrafter(max_requests=max_requests, **kwargs)
        if name == "pld":
            n = {"min_n": min_n or 1, "max_n": max_n or 3}
            return NgramDrafter("pld", **n, num_pred=num_pred or 10, max_requests=max_requests, **kwargs)
        if name == "ngram":
            return tree(**kwargs)
        parts = [TrieDrafter(max_requests=max_requests, **kwargs), tree()]
        return HybridDrafter(parts, weights=[1.0, 0.5], max_requests=max_requests)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label} drafter {name!r} with options {kwargs!r}: {err}") from err
