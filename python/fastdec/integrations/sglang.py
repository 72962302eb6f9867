"""SGLang adapter: fastdec drafters behind the ``NgramCorpus`` interface of SGLang 0.5.23.

SGLang's NGRAM worker (``sglang/srt/speculative/ngram_worker.py``) drafts from a corpus object.
Each decode step it calls ``synchronize()``, then ``batch_get(req_ids, batch_tokens,
total_lens)`` with, per request, its id (``req.rid``), the last ``max_trie_depth`` tokens of
prompt + output (with overlap scheduling the previous step's accepted tokens spliced in, since
``output_ids`` lags a step) and its whole length. It asserts the returned tokens have ``bs * n``
entries (``n = draft_token_num``), copies tokens and mask into its buffers and derives
positions and retrieve indices with ``reconstruct_indices_from_tree_mask``. After verify it
calls ``batch_put(batch_tokens)`` and ``erase_match_state(rids)`` for requests that left the
decode batch; ``reset()`` on a cache flush.

:class:`FastdecNgramCorpus` has that interface (the constructor takes the keyword arguments the
worker passes) over a stateful fastdec drafter keyed by SGLang's request ids: a request is
``start``-ed with the tokens of its first ``batch_get`` and then ``accept``-s the tokens its
length grew by, all through one :class:`fastdec.DraftSession` call per step (the same request
owner every adapter uses: one cap, one eviction rule; a tail that does not continue what was
seen restarts the request); ``erase_match_state`` and ``reset`` ``stop`` requests, which is when a
:class:`fastdec.TrieDrafter` adds a request's output to its shared trie (cross-request memory,
SGLang's own corpus inserts every step's tails instead; ``batch_put`` is a no-op here). At most
``max_requests`` requests are kept; one more stops the least recently seen.
:mod:`fastdec.integrations.sglang_plugin` registers a speculative algorithm ``FASTDEC`` whose
worker is SGLang's NGRAM worker with this corpus.

Per step it returns, for ``bs`` requests, ``bs`` trees of exactly ``n`` nodes (root = the
request's last token, then the drafts) as SGLang's corpus does: ``draft_tokens [bs * n] int64``
and ``tree_mask [bs * n * n] int64`` 0/1, request ``b``'s ``[n, n]`` row-major
ancestor-or-self mask in ``[b * n * n, (b + 1) * n * n)``. :func:`build_sglang_drafts` builds
that layout from trees, with everything else the worker derives from it (:class:`SGLangDrafts`):

* ``draft_tokens [bs * n] int32`` -- request ``b``'s tree in ``[b * n, (b + 1) * n)``, root
  first, parents before children, padded with ``pad_id``.
* ``tree_mask [bs * n * n] bool`` -- ``tree_mask[b*n*n + i*n + j]`` is True iff node ``j`` is
  on the root-to-``i`` path (``i`` included). A padding row sees only itself, so no row is
  fully masked and no padding slot is anyone's ancestor.
* ``positions [bs * n] int32`` -- ``seq_lens[b] + depth``; padding slots get ``seq_lens[b]``.
* ``retrive_index [bs, n] int32`` -- ``b * n + i``, the node's flat index.
* ``retrive_next_token [bs, n] int32`` -- the node's lowest-index child, -1 for none.
* ``retrive_next_sibling [bs, n] int32`` -- the node's next higher-index sibling, -1 for none.

The last four are what ``reconstruct_indices_from_tree_mask`` computes from ``tree_mask`` and
``seq_lens`` (tested against SGLang's Triton version of the kernel). ``seq_lens[b]`` is the
request's cached tokens, the root excluded (``total_lens[b] - 1``).

Padding differs from SGLang's ``fillResult``, which makes every padding slot a child of the
root with token 0 (so a target predicting token 0 "accepts" it): here padding slots are
unreachable from the root (no ``retrive_next_token`` / ``retrive_next_sibling`` leads to them),
so the verify kernels never walk them.

Settings (:data:`SETTINGS`) come from the ``FASTDEC_SGLANG`` environment variable, a JSON object
(SGLang passes the corpus only its own ``--speculative-ngram-*`` values): ``drafter`` (``"pld"``,
``"trie"`` (default) or ``"hybrid"``), ``drafter_options`` (keyword arguments of the drafter's
constructor), ``prompt_lookup_min`` / ``prompt_lookup_max`` (n-gram lengths of ``pld`` and of
``hybrid``'s n-gram part, default 1 / 3), ``max_requests`` (default 1024) and ``pad_id``
(default 0). A bad setting or SGLang value raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fastdec._core import MAX_NODES, BaseDrafter, DraftSession, TokenTree
from fastdec.integrations._common import server_drafter
from fastdec.integrations.vllm import DRAFTERS

_I32 = npt.NDArray[np.int32]
logger = logging.getLogger(__name__)

#: the environment variable holding the settings (a JSON object)
ENV_VAR = "FASTDEC_SGLANG"
#: setting -> (type, meaning)
SETTINGS: dict[str, tuple[type, str]] = {
    "drafter": (str, f"one of {DRAFTERS}"),
    "drafter_options": (dict, "keyword arguments of the drafter's constructor"),
    "prompt_lookup_min": (int, "shortest n-gram matched (pld, hybrid), >= 1"),
    "prompt_lookup_max": (int, "longest n-gram matched (pld, hybrid), <= 16"),
    "max_requests": (int, "requests kept at once (least recently seen stopped beyond), >= 1"),
    "pad_id": (int, "token of padding slots, >= 0"),
}
MATCH_TYPES = ("BFS", "PROB")  # SGLang's, checked but unused: the drafter decides


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


def read_settings(settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``settings``, or the JSON object in ``$FASTDEC_SGLANG`` when None, checked.

    Raises:
        ValueError: not a JSON object, an unknown setting or one of the wrong type (named).

    >>> read_settings({"drafter": "pld", "max_requests": 64})
    {'drafter': 'pld', 'max_requests': 64}
    """
    if settings is None:
        text = os.environ.get(ENV_VAR, "").strip()
        try:
            settings = json.loads(text) if text else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{ENV_VAR} = {text!r}: not JSON ({err})") from err
    if not isinstance(settings, Mapping):
        raise ValueError(f"{ENV_VAR} = {settings!r}: must be a JSON object of fastdec settings")
    for name, value in settings.items():
        if name not in SETTINGS:
            raise ValueError(f"unknown fastdec SGLang setting {name!r}; known: {sorted(SETTINGS)}")
        kind, meaning = SETTINGS[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"fastdec SGLang setting {name} = {value!r}: must be {meaning}")
    return dict(settings)


def make_drafter(
    name: str,
    *,
    num_pred: int,
    min_n: int = 1,
    max_n: int = 3,
    max_requests: int = 1024,
    options: Mapping[str, Any] | None = None,
) -> BaseDrafter:
    """The fastdec drafter a name of :data:`fastdec.integrations.vllm.DRAFTERS` stands for, built
    as the vLLM and llama.cpp adapters build it.

    Raises:
        ValueError: an unknown name, or options the drafter does not take (named).
    """
    return server_drafter(
        name,
        label="fastdec SGLang setting",
        num_pred=num_pred,
        pld_n=(min_n, max_n),
        tree_n=(min_n, max_n),
        max_requests=max_requests,
        options=options,
    )


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"SGLang NgramCorpus {name} = {value!r}: must be an int >= {low}")
    return int(value)


class FastdecNgramCorpus:
    """SGLang 0.5.23's ``NgramCorpus`` interface over a stateful fastdec drafter.

    The positional and SGLang keyword arguments are ``NgramCorpus``'s, with its defaults; the
    worker passes its ``--speculative-ngram-*`` values. ``draft_token_num`` is ``n``, the nodes
    per request (root included); the others are checked as SGLang checks them and otherwise
    unused (the drafter decides a tree's shape).

    Args:
        max_trie_depth: tokens of each request the worker passes (> 1).
        min_bfs_breadth, max_bfs_breadth: ``1 <= min <= max``.
        draft_token_num: ``n`` (>= 1).
        match_type: ``"BFS"`` or ``"PROB"``.
        capacity: SGLang's trie size (>= 1).
        external_sam_budget, external_corpus_max_tokens: external corpora (>= 0); loading one
            raises ``ValueError``.
        drafter: a stateful fastdec drafter to use instead of the one the settings name.
        settings: fastdec settings (:data:`SETTINGS`); None reads ``$FASTDEC_SGLANG``.

    Raises:
        ValueError: a bad SGLang value or fastdec setting (named in the message).

    >>> corpus = FastdecNgramCorpus(draft_token_num=4, settings={"drafter": "pld"})
    >>> tokens, mask = corpus.batch_get(["r0"], [[5, 6, 7, 5, 6]], [5])
    >>> tokens.tolist(), mask.reshape(4, 4).sum(axis=1).tolist()
    ([6, 7, 5, 6], [1, 2, 3, 4])
    >>> corpus.erase_match_state(["r0"]); corpus.num_requests
    0
    """

    def __init__(
        self,
        max_trie_depth: int = 18,
        min_bfs_breadth: int = 1,
        max_bfs_breadth: int = 8,
        draft_token_num: int = 8,
        match_type: str = "BFS",
        capacity: int = 1000000,
        external_sam_budget: int = 0,
        external_corpus_max_tokens: int = 10000000,
        *,
        drafter: BaseDrafter | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.max_trie_depth = _check_int("max_trie_depth", max_trie_depth, 2)
        lo = _check_int("min_bfs_breadth", min_bfs_breadth, 1)
        hi = _check_int("max_bfs_breadth", max_bfs_breadth, 1)
        if lo > hi:
            raise ValueError(
                f"SGLang NgramCorpus min_bfs_breadth = {lo}, max_bfs_breadth = {hi}: need min <= max"
            )
        self.draft_token_num = _check_int("draft_token_num", draft_token_num, 1)
        if match_type not in MATCH_TYPES:
            raise ValueError(f"SGLang NgramCorpus match_type = {match_type!r}: must be one of {MATCH_TYPES}")
        _check_int("capacity", capacity, 1)
        self.external_sam_budget = _check_int("external_sam_budget", external_sam_budget, 0)
        self.external_corpus_max_tokens = _check_int(
            "external_corpus_max_tokens", external_corpus_max_tokens, 0
        )
        self.settings = read_settings(settings)
        self.max_requests = int(self.settings.get("max_requests", 1024))
        self.pad_id = int(self.settings.get("pad_id", 0))
        min_n = int(self.settings.get("prompt_lookup_min", 1))
        max_n = int(self.settings.get("prompt_lookup_max", 3))
        for name, value, low in (("max_requests", self.max_requests, 1), ("pad_id", self.pad_id, 0)):
            if value < low:
                raise ValueError(f"fastdec SGLang setting {name} = {value}: must be >= {low}")
        if not 1 <= min_n <= max_n <= 16:
            raise ValueError(
                f"fastdec SGLang settings prompt_lookup_min = {min_n}, prompt_lookup_max = {max_n}: "
                "need 1 <= min <= max <= 16"
            )
        self.drafter_name = str(self.settings.get("drafter", "trie")) if drafter is None else "custom"
        #: the stateful fastdec drafter (request ids are SGLang's ``req.rid``)
        self.drafter: BaseDrafter = (
            drafter
            if drafter is not None
            else make_drafter(
                self.drafter_name,
                num_pred=self.draft_token_num - 1,
                min_n=min_n,
                max_n=max_n,
                max_requests=self.max_requests,
                options=self.settings.get("drafter_options"),
            )
        )
        #: the one owner of request state (keyed by SGLang's ``req.rid``; one cap, one eviction rule)
        self.session = DraftSession(
            self.drafter,
            max(1, self.draft_token_num - 1),
            tree_budget=max(2, min(self.draft_token_num, MAX_NODES)),
            max_requests=self.max_requests,
            adaptive=False,
        )
        #: the last ``batch_get``'s drafts with the positions and indices SGLang derives
        self.last_drafts: SGLangDrafts | None = None

    @property
    def num_requests(self) -> int:
        """Requests with drafter state (started, not stopped)."""
        return len(self.session)

    @property
    def counters(self) -> dict[str, int]:
        """Requests started, stopped (erased, reset, evicted or restarted), evicted for the cap,
        and restarted (a tail that does not continue what was seen: a gap, or a shorter one)."""
        s = self.session.stats()
        return {k: int(s[k]) for k in ("started", "stopped", "evicted", "restarted")}

    def batch_get(
        self,
        req_ids: list[str],
        batch_tokens: list[list[int]],
        total_lens: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """One decode step's trees: ``(draft_tokens [bs * n] int64, tree_mask [bs * n * n] int64)``.

        Args:
            req_ids: ``bs`` request ids.
            batch_tokens: per request, its last (up to ``max_trie_depth``) tokens, non-empty.
            total_lens: per request, its whole length (prompt + output, the tail included).

        Raises:
            ValueError: the three differ in length, or a tail is empty.
        """
        bs = len(req_ids)
        if len(batch_tokens) != bs or len(total_lens) != bs:
            raise ValueError(
                f"batch_get: {bs} req_ids, {len(batch_tokens)} batch_tokens, {len(total_lens)} total_lens"
            )
        lens = np.asarray(total_lens, dtype=np.int64).reshape(bs)
        sizes = np.fromiter(map(len, batch_tokens), dtype=np.int64, count=bs)
        if bs and not sizes.all():
            rid = req_ids[int(np.argmin(sizes))]
            raise ValueError(f"batch_get: request {rid!r} has an empty token tail")
        if bs and (lens < sizes).any():
            b = int(np.argmax(lens < sizes))
            raise ValueError(
                f"batch_get: request {req_ids[b]!r} has total_len {int(lens[b])} "
                f"< its {int(sizes[b])}-token tail"
            )
        # one call for the whole batch: recognise (by id), feed what each tail adds, draft trees
        batch = self.session.step_trees(
            batch_tokens, None, np.ones(bs, dtype=np.int32), ids=req_ids, offsets=lens - sizes
        )
        trees = [batch[b] for b in range(bs)]
        drafts = build_sglang_drafts(trees, self.draft_token_num, np.maximum(lens - 1, 0), pad_id=self.pad_id)
        self.last_drafts = drafts
        return drafts.draft_tokens.astype(np.int64), drafts.tree_mask.astype(np.int64)

    def batch_put(self, batch_tokens: list[list[int]]) -> None:
        """No-op: the drafter already learnt each request's tokens in :meth:`batch_get`."""

    def synchronize(self) -> None:
        """No-op (SGLang's corpus waits for its background inserts here)."""

    def erase_match_state(self, req_ids: list[str]) -> None:
        """Stops the requests (their output reaches a trie drafter's shared trie); unknown ids are
        ignored."""
        self.session.finish(req_ids)

    def reset(self) -> None:
        """Stops every request (a cache flush); the drafter's shared state is kept."""
        self.session.finish_all()

    @property
    def remaining_token_budget(self) -> int:
        """``external_corpus_max_tokens`` (nothing is ever loaded)."""
        return self.external_corpus_max_tokens

    def load_external_corpus_named(self, corpus_id: str, chunks: Iterable[Sequence[int]]) -> int:
        """Not supported.

        Raises:
            ValueError: always (leave ``--speculative-ngram-external-corpus-path`` unset).
        """
        raise ValueError(
            f"external corpus {corpus_id!r}: fastdec's SGLang corpus does not load external corpora "
            "(leave --speculative-ngram-external-corpus-path unset)"
        )

    def commit_external_corpus_load(self, corpus_id: str, loaded_token_count: int) -> None:
        """Not supported (:meth:`load_external_corpus_named` never succeeds).

        Raises:
            ValueError: always.
        """
        raise ValueError(f"external corpus {corpus_id!r}: fastdec's SGLang corpus loads none")

    def remove_external_corpus(self, corpus_id: str) -> None:
        """No-op: no corpus is ever loaded (SGLang's removes an unknown id silently too)."""

    def list_external_corpora(self) -> dict[str, int]:
        """``{}``: no corpus is ever loaded."""
        return {}

    def leaf_paths_from_mask(self, tokens: list[int], tree_mask: list[list[int]]) -> list[list[int]]:
        """The token paths of the rows whose ancestor set is no other kept row's subset (SGLang's
        debugging helper, same semantics): the leaves, in order.

        >>> FastdecNgramCorpus().leaf_paths_from_mask([9, 4, 5], [[1, 0, 0], [1, 1, 0], [1, 0, 1]])
        [[9, 4], [9, 5]]
        """
        kept: list[set[int]] = []
        rows: list[int] = []
        for i in reversed(range(len(tree_mask))):
            row = {j for j, v in enumerate(tree_mask[i]) if v == 1}
            if any(row <= other for other in kept):
                continue
            kept.append(row)
            rows.append(i)
        return [[tokens[j] for j in range(len(tokens)) if tree_mask[r][j] == 1] for r in reversed(rows)]

    def debug_result(
        self, decoding_ids: np.ndarray, decoding_masks: np.ndarray, tokenizer: Any = None
    ) -> None:
        """Logs each request's draft paths (SGLang's debugging helper)."""
        n = self.draft_token_num
        ids = np.asarray(decoding_ids).reshape(-1, n)
        masks = np.asarray(decoding_masks).reshape(-1, n, n)
        for b in range(ids.shape[0]):
            for path in self.leaf_paths_from_mask(ids[b].tolist(), masks[b].tolist()):
                text = "" if tokenizer is None else f" -> {tokenizer.decode(path)}"
                logger.info("draft path %d: %s%s", b, path, text)
