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

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fastdec._core import TokenTree

RequestId = int | str

#: drafters ``fastdec.generate`` and ``fastdec demo`` build from a name
DRAFTER_NAMES = ("recycling", "trie", "ngram", "pld", "hybrid")
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
