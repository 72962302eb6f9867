"""What the server adapters share: the drafter protocols they need and the tree-to-chain step.

Servers without tree verification (vLLM's ``custom_class`` proposer, HF assisted generation)
take one *linear* draft per request. A fastdec drafter proposes a tree whose root is the last
token of the context; :func:`chain_tokens` keeps the path to
:meth:`fastdec.TokenTree.likeliest_leaf` (the chain whose node scores, path probabilities for
fastdec's drafters, add up to the most tokens expected accepted; the deepest leaf for a tree
without scores), root excluded, at most ``max_tokens`` tokens, as :class:`fastdec.DraftSession`
does for every engine. A chain drafter (``NgramDrafter("pld")``) loses nothing this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fastdec._core import MAX_NODES, BaseDrafter, DraftBatch, TokenTree
from fastdec.drafters import SERVER_DRAFTERS, build_drafter

RequestId = int | str


@runtime_checkable
class ContextDrafter(Protocol):
    """A drafter with the stateless form ``propose_for`` (every fastdec drafter has it)."""

    def propose_for(self, context_ids: npt.ArrayLike, budget: int) -> TokenTree: ...


@runtime_checkable
class BatchDrafter(Protocol):
    """A stateful drafter keyed by request id, with a batched propose (:class:`fastdec.BaseDrafter`)."""

    def start(self, request_id: RequestId, prompt_ids: npt.ArrayLike) -> None: ...

    def accept(
        self,
        request_id: RequestId,
        emitted: npt.ArrayLike,
        topk_ids: npt.NDArray[np.int32] | None = None,
    ) -> None: ...

    def stop(self, request_id: RequestId) -> None: ...

    def propose_batch(self, request_ids: Sequence[RequestId], budgets: npt.ArrayLike) -> DraftBatch: ...


def node_budget(num_draft_tokens: int) -> int:
    """Nodes to ask a drafter for (root included) to get up to ``num_draft_tokens`` drafts.

    >>> node_budget(5)
    6
    """
    return max(1, min(num_draft_tokens + 1, MAX_NODES))


def chain_tokens(tree: TokenTree, max_tokens: int) -> npt.NDArray[np.int32]:
    """The tree's linear draft: the tokens on the path to :meth:`~fastdec.TokenTree.likeliest_leaf`,
    root excluded.

    Args:
        tree: a draft tree whose root is the last context token.
        max_tokens: the most draft tokens to keep (>= 0).

    Returns:
        ``[min(max_depth, max_tokens)] int32`` draft tokens, the root's child first.

    >>> tree = TokenTree([7, 1, 2, 3], [-1, 0, 0, 2])
    >>> chain_tokens(tree, 5).tolist(), chain_tokens(tree, 1).tolist()
    ([2, 3], [2])
    >>> scored = TokenTree([7, 1, 2, 3], [-1, 0, 0, 2], scores=[1.0, 0.8, 0.2, 0.1])
    >>> chain_tokens(scored, 5).tolist()  # 0.8 expected accepted, against 0.2 + 0.1
    [1]
    """
    if max_tokens <= 0 or tree.num_nodes == 1:
        return np.empty(0, dtype=np.int32)
    nodes = tree.chain_view(tree.likeliest_leaf())[1 : max_tokens + 1]
    return tree.tokens[nodes]


def server_drafter(
    name: str,
    *,
    label: str,
    num_pred: int,
    pld_n: tuple[int, int],
    tree_n: tuple[int, int],
    max_requests: int,
    options: Mapping[str, Any] | None = None,
) -> BaseDrafter:
    """The drafter ``name`` (one of :data:`fastdec.drafters.SERVER_DRAFTERS`) from the one
    table (:func:`fastdec.drafters.build_drafter`), with the engine's draft length ``num_pred``,
    prompt lookup's n-gram lengths ``pld_n`` and the n-gram tree's ``tree_n`` (``hybrid``).
    ``label`` starts every error message (e.g. ``"fastdec vLLM setting"``).

    Raises:
        ValueError: an unknown name, or options the drafter does not take (both named).
    """
    if name not in SERVER_DRAFTERS:
        raise ValueError(f"{label} drafter = {name!r}: must be one of {SERVER_DRAFTERS}")
    n = pld_n if name == "pld" else tree_n
    try:
        return build_drafter(
            name, num_pred=num_pred, min_n=n[0], max_n=n[1], max_requests=max_requests, options=options
        )
    except ValueError as err:
        raise ValueError(f"{label} drafter_options = {dict(options or {})!r}: {err}") from err
