"""SGLang adapter: fixed-size tree drafts in the layout of SGLang's NGRAM worker.

SGLang's NGRAM worker (``ngram_worker.py``) gets, per decode step, ``bs`` trees of exactly
``n = draft_token_num`` nodes (root = the request's last token, then the drafts) as two flat
arrays from its ``NgramCache.batch_get``, copies them into its preallocated GPU buffers and
derives the rest with the ``reconstruct_indices_from_tree_mask`` kernel. This module returns
all of it at once (:class:`SGLangDrafts`), for ``bs`` requests and ``n`` nodes each:

* ``draft_tokens [bs * n] int32`` -- request ``b``'s tree in ``[b * n, (b + 1) * n)``, root
  first, parents before children, padded with ``pad_id``.
* ``tree_mask [bs * n * n] bool`` -- request ``b``'s ``[n, n]`` row-major ancestor-or-self
  mask in ``[b * n * n, (b + 1) * n * n)``: ``tree_mask[b*n*n + i*n + j]`` is True iff node
  ``j`` is on the root-to-``i`` path (``i`` included). A padding row sees only itself, so no
  row is fully masked and no padding slot is anyone's ancestor.
* ``positions [bs * n] int32`` -- ``seq_lens[b] + depth``; padding slots get ``seq_lens[b]``.
* ``retrive_index [bs, n] int32`` -- ``b * n + i``, the node's flat index.
* ``retrive_next_token [bs, n] int32`` -- the node's lowest-index child, -1 for none.
* ``retrive_next_sibling [bs, n] int32`` -- the node's next higher-index sibling, -1 for none.

The last four are exactly what ``reconstruct_indices_from_tree_mask`` computes from
``tree_mask`` and ``seq_lens`` (tested against a port of the kernel), so a worker may copy them
instead of launching it. ``seq_lens[b]`` is the request's cached tokens, the root excluded:
what the worker passes the kernel as ``batch.seq_lens``, and the ``len(origin_input_ids) +
len(output_ids) - 1`` all-True prefix columns it puts before each ``[n, n]`` block when it
builds its FULL_MASK form (``tree_mask`` here is the per-request ``[n, n]`` part it starts from).

Padding differs from SGLang's ``fillResult``, which makes every padding slot a child of the
root with token 0 (so a target predicting token 0 "accepts" it, and sibling tokens repeat):
here padding slots are unreachable from the root (no ``retrive_next_token`` /
``retrive_next_sibling`` leads to them), so the verify kernels never walk them.

SGLang's buffers are int64; ``buffer.copy_(torch.from_numpy(array))`` converts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fastdec._core import TokenTree
from fastdec.integrations._common import BatchDrafter, ContextDrafter, RequestId

_I32 = npt.NDArray[np.int32]


@dataclass(frozen=True)
class SGLangDrafts:
    """One decode step's trees for ``bs`` requests of ``n = draft_token_num`` nodes each.

    Attributes:
        draft_tokens: ``[bs * n] int32`` tokens, request-major, root first, ``pad_id``-padded.
        tree_mask: ``[bs * n * n] bool`` flat per-request ``[n, n]`` ancestor-or-self masks.
        positions: ``[bs * n] int32`` position ids ``seq_lens[b] + depth`` (padding: depth 0).
        retrive_index: ``[bs, n] int32`` flat node index ``b * n + i``.
        retrive_next_token: ``[bs, n] int32`` lowest-index child, -1 for none.
        retrive_next_sibling: ``[bs, n] int32`` next higher-index sibling, -1 for none.
        num_nodes: ``[bs] int32`` real (unpadded) nodes per request, root included.
        draft_token_num: ``n``.
    """

    draft_tokens: _I32
    tree_mask: npt.NDArray[np.bool_]
    positions: _I32
    retrive_index: _I32
    retrive_next_token: _I32
    retrive_next_sibling: _I32
    num_nodes: _I32
    draft_token_num: int

    @property
    def batch_size(self) -> int:
        """``bs``, the number of requests."""
        return len(self.num_nodes)

    def tree_mask_3d(self) -> npt.NDArray[np.bool_]:
        """``tree_mask`` as a ``[bs, n, n]`` view."""
        n = self.draft_token_num
        return self.tree_mask.reshape(self.batch_size, n, n)


def build_sglang_drafts(
    trees: Sequence[TokenTree],
    draft_token_num: int,
    seq_lens: npt.ArrayLike,
    *,
    pad_id: int = 0,
) -> SGLangDrafts:
    """Lays out trees of at most ``draft_token_num`` nodes in SGLang's fixed-size form.

    Args:
        trees: ``bs`` trees, each with its request's last token as root.
        draft_token_num: ``n``, the nodes per request (root included).
        seq_lens: ``[bs] int`` cached tokens per request (the root excluded).
        pad_id: the token of padding slots (a valid id, >= 0).

    Returns:
        The batch's :class:`SGLangDrafts`.

    Raises:
        ValueError: a tree has more than ``draft_token_num`` nodes, ``seq_lens`` is not
            ``[bs]`` or ``pad_id`` is negative.

    >>> tree = TokenTree([9, 4, 5], [-1, 0, 0])
    >>> drafts = build_sglang_drafts([tree], 4, [10])
    >>> drafts.draft_tokens.tolist(), drafts.positions.tolist()
    ([9, 4, 5, 0], [10, 11, 11, 10])
    >>> drafts.retrive_next_token.tolist(), drafts.retrive_next_sibling.tolist()
    ([[1, -1, -1, -1]], [[-1, 2, -1, -1]])
    """
    n = draft_token_num
    bs = len(trees)
    lens = np.asarray(seq_lens, dtype=np.int64).reshape(-1)
    if lens.shape != (bs,):
        raise ValueError(f"seq_lens has shape {lens.shape}; expected ({bs},) for {bs} trees")
    tokens = np.empty((bs, n), dtype=np.int32)
    mask = np.empty((bs, n, n), dtype=np.bool_)
    positions = np.empty((bs, n), dtype=np.int32)
    next_token = np.full((bs, n), -1, dtype=np.int32)
    next_sibling = np.full((bs, n), -1, dtype=np.int32)
    num_nodes = np.empty(bs, dtype=np.int32)
    for b, tree in enumerate(trees):
        tokens[b], mask[b], positions[b] = tree.padded(n, pad_id=pad_id, prefix_len=int(lens[b]))
        m = tree.num_nodes
        num_nodes[b] = m
        next_token[b, :m] = tree.first_child
        next_sibling[b, :m] = tree.next_sibling
    retrive_index = np.arange(bs * n, dtype=np.int32).reshape(bs, n)
    return SGLangDrafts(
        draft_tokens=tokens.reshape(-1),
        tree_mask=mask.reshape(-1),
        positions=positions.reshape(-1),
        retrive_index=retrive_index,
        retrive_next_token=next_token,
        retrive_next_sibling=next_sibling,
        num_nodes=num_nodes,
        draft_token_num=n,
    )


class SGLangNgramCache:
    """Stateless SGLang drafting from per-request contexts (an ``NgramCache`` stand-in).

    Each request's tree is ``drafter.propose_for(context, draft_token_num)``. The drafter sees
    only the context it is given: SGLang's NGRAM worker passes the last
    ``speculative_ngram_max_match_window_size`` tokens, so raise that window (or use
    :class:`SGLangRequestDrafter`, which keeps every request's whole history in the drafter).

    Args:
        drafter: any object with ``propose_for(context_ids, budget) -> TokenTree``.
        draft_token_num: ``n``, nodes per request (root included), SGLang's
            ``--speculative-num-draft-tokens``.
        pad_id: the token of padding slots (>= 0).

    >>> import fastdec
    >>> cache = SGLangNgramCache(fastdec.NgramDrafter("pld", num_pred=2), draft_token_num=4)
    >>> tokens, mask = cache.batch_get([[1, 2, 3, 1, 2]])
    >>> tokens.tolist(), mask.reshape(4, 4).sum(axis=1).tolist()
    ([2, 3, 1, 0], [1, 2, 3, 1])
    """

    def __init__(self, drafter: ContextDrafter, draft_token_num: int, *, pad_id: int = 0) -> None:
        if draft_token_num < 1:
            raise ValueError(f"draft_token_num = {draft_token_num}: must be >= 1")
        self.drafter = drafter
        self.draft_token_num = draft_token_num
        self.pad_id = pad_id

    def propose(
        self, contexts: Sequence[npt.ArrayLike], seq_lens: npt.ArrayLike | None = None
    ) -> SGLangDrafts:
        """Trees for ``bs`` requests.

        Args:
            contexts: ``bs`` non-empty token sequences, each ending with its request's last token.
            seq_lens: ``[bs] int`` cached tokens per request (root excluded); default
                ``len(context) - 1``, right when each context is the whole sequence.

        Returns:
            The batch's :class:`SGLangDrafts`.
        """
        arrays = [np.asarray(context) for context in contexts]
        trees = [self.drafter.propose_for(context, self.draft_token_num) for context in arrays]
        if seq_lens is None:
            seq_lens = [len(context) - 1 for context in arrays]
        return build_sglang_drafts(trees, self.draft_token_num, seq_lens, pad_id=self.pad_id)

    def batch_get(self, batch_tokens: Sequence[npt.ArrayLike]) -> tuple[_I32, npt.NDArray[np.bool_]]:
        """``NgramCache.batch_get``: ``(draft_tokens [bs * n] int32, tree_mask [bs * n * n] bool)``."""
        drafts = self.propose(batch_tokens)
        return drafts.draft_tokens, drafts.tree_mask

    def batch_put(self, batch_tokens: Sequence[npt.ArrayLike]) -> None:
        """No-op: a stateless drafter learns nothing between calls."""

    def synchronize(self) -> None:
        """No-op (SGLang's cache waits for its background inserts here)."""

    def reset(self) -> None:
        """No-op (nothing is cached)."""


class SGLangRequestDrafter:
    """Stateful SGLang drafting keyed by request id (``req.rid``), batched in the drafter.

    Per step, for every running request call :meth:`observe` with its ``origin_input_ids`` and
    ``output_ids`` (the drafter is started on first sight and then fed only the new output
    tokens), then :meth:`propose` for the batch; call :meth:`retain` with the running ids (or
    :meth:`stop`) to free finished requests.

    Args:
        drafter: a :class:`fastdec.BaseDrafter` (``start``/``accept``/``stop``/``propose_batch``).
        draft_token_num: ``n``, nodes per request (root included).
        pad_id: the token of padding slots (>= 0).

    >>> import fastdec
    >>> adapter = SGLangRequestDrafter(fastdec.NgramDrafter("pld", num_pred=2), draft_token_num=3)
    >>> adapter.observe("a", [1, 2, 3, 1], [2])
    >>> drafts = adapter.propose(["a"])
    >>> drafts.draft_tokens.tolist(), drafts.positions.tolist()
    ([2, 3, 1], [4, 5, 6])
    """

    def __init__(self, drafter: BatchDrafter, draft_token_num: int, *, pad_id: int = 0) -> None:
        if draft_token_num < 1:
            raise ValueError(f"draft_token_num = {draft_token_num}: must be >= 1")
        self.drafter = drafter
        self.draft_token_num = draft_token_num
        self.pad_id = pad_id
        # request id -> (prompt length, output tokens the drafter has seen)
        self._seen: dict[RequestId, tuple[int, int]] = {}

    def observe(self, request_id: RequestId, prompt_ids: Sequence[int], output_ids: Sequence[int]) -> None:
        """Brings the drafter up to date with a request's tokens.

        Args:
            request_id: the request's id.
            prompt_ids: its prompt (``origin_input_ids``); read only on first sight.
            output_ids: all its output tokens so far; only those not yet seen are fed.
        """
        seen = self._seen.get(request_id)
        if seen is None:
            self.drafter.start(request_id, np.asarray(prompt_ids, dtype=np.int64))
            seen = (len(prompt_ids), 0)
        prompt_len, num_seen = seen
        if len(output_ids) > num_seen:
            new = np.asarray(output_ids[num_seen:], dtype=np.int64)
            self.drafter.accept(request_id, new)
        self._seen[request_id] = (prompt_len, max(num_seen, len(output_ids)))

    def propose(
        self, request_ids: Sequence[RequestId], seq_lens: npt.ArrayLike | None = None
    ) -> SGLangDrafts:
        """Trees for the observed requests ``request_ids`` (one ``propose_batch`` call).

        Args:
            request_ids: ``bs`` observed request ids.
            seq_lens: ``[bs] int`` cached tokens per request (root excluded); default the
                observed ``prompt + output - 1``.

        Returns:
            The batch's :class:`SGLangDrafts`.

        Raises:
            KeyError: a request was never observed.
        """
        for request_id in request_ids:
            if request_id not in self._seen:
                raise KeyError(f"request {request_id!r} was never observed")
        budgets = np.full(len(request_ids), self.draft_token_num, dtype=np.int32)
        batch = self.drafter.propose_batch(request_ids, budgets)
        trees = [batch[b] for b in range(len(request_ids))]
        if seq_lens is None:
            seq_lens = [sum(self._seen[request_id]) - 1 for request_id in request_ids]
        return build_sglang_drafts(trees, self.draft_token_num, seq_lens, pad_id=self.pad_id)

    def stop(self, request_id: RequestId) -> None:
        """Frees a request's drafter state (no-op for an unknown id)."""
        if self._seen.pop(request_id, None) is not None:
            self.drafter.stop(request_id)

    def retain(self, request_ids: Sequence[RequestId]) -> None:
        """Stops every observed request not in ``request_ids`` (the running batch)."""
        keep = set(request_ids)
        for request_id in [r for r in self._seen if r not in keep]:
            self.stop(request_id)

    @property
    def num_requests(self) -> int:
        """Requests observed and not stopped."""
        return len(self._seen)
