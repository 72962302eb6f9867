"""Type stubs of the native module ``fastdec._core`` (checked by ``mypy.stubtest``); constrained
decoding is in ``_core_constraints.pyi`` (checked through ``_core_constraints.py``), re-exported
here."""

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from fastdec._core_constraints import (
    Grammar as Grammar,
)
from fastdec._core_constraints import (
    GrammarState as GrammarState,
)
from fastdec._core_constraints import (
    JsonSchema as JsonSchema,
)
from fastdec._core_constraints import (
    PrunedTree as PrunedTree,
)
from fastdec._core_constraints import (
    Regex as Regex,
)
from fastdec._core_constraints import (
    TokenVocab as TokenVocab,
)
from fastdec._core_constraints import (
    _softmax64 as _softmax64,
)
from fastdec._core_constraints import (
    awrs_sample as awrs_sample,
)

__version__: str
__all__ = [
    "MAX_NODES",
    "_MASK_AFTER",
    "BaseDrafter",
    "DraftBatch",
    "DraftLength",
    "DraftSession",
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
    "_linear_rows",
    "_softmax64",
    "_time_tree_step",
    "awrs_sample",
    "optimal_template",
    "verify_greedy_batch",
    "verify_stochastic_batch",
]
#: Largest tree (nodes, root included) fastdec builds.
MAX_NODES: int
#: Default AWRS rejections before the full-mask fallback (``mask_after``).
_MASK_AFTER: int

_IntArray = npt.NDArray[np.int32]
_Ints = npt.ArrayLike
_Floats = npt.ArrayLike

@final
class TokenTree:
    """A draft tree: node 0 is the root, ``parents[i] < i``, siblings carry distinct tokens.

    Args:
        tokens: ``[N]`` token ids (>= 0), ``tokens[0]`` the root.
        parents: ``[N]`` parent node ids, ``parents[0] == -1`` and ``0 <= parents[i] < i``.
        scores: optional ``[N]`` float scores (probabilities, log-probabilities, counts) that
            guide fusion, pruning and best-first selection.

    Raises:
        ValueError: a malformed tree; the message names the offending node.

    >>> TokenTree([5, 6, 7], [-1, 0, 0]).num_leaves
    2
    """

    def __new__(cls, tokens: _Ints, parents: _Ints, *, scores: _Floats | None = None) -> TokenTree: ...
    @staticmethod
    def chain(tokens: _Ints) -> TokenTree:
        """A linear draft: ``tokens[0]`` is the root, every later token the child of the one before."""
    @staticmethod
    def from_candidates(
        tokens: _Ints,
        parents: _Ints,
        scores: _Floats,
        *,
        budget: int,
        max_depth: int | None = None,
        score_mode: str = "logprob",
    ) -> TokenTree:
        """Best-first selection of ``budget`` nodes from a scored candidate expansion (EAGLE-2 rerank).

        Args:
            tokens, parents: the candidate tree (parents-first, distinct siblings).
            scores: ``[N]`` per-edge scores: log-probabilities (``score_mode="logprob"``, path
                score = sum), probabilities (``"prob"``, product) or path scores (``"path"``).
            budget: nodes to keep, root included.
            max_depth: drop candidates deeper than this.

        Returns:
            The ancestor-closed subtree of the best candidates in their original order, with
            path scores as ``scores``.
        """
    @staticmethod
    def best_first(
        root: int,
        expand: Callable[[list[int]], Iterable[tuple[int, float]]],
        *,
        budget: int,
        max_depth: int,
        score_mode: str = "logprob",
    ) -> TokenTree:
        """Best-first expansion (DySpec): grow the tree one best-scoring node at a time.

        ``expand(path_tokens)`` returns the candidate children ``(token, edge score)`` of the node
        reached by ``path_tokens`` (root first); it is called once per added node above
        ``max_depth``. Repeated sibling tokens are skipped.
        """
    @staticmethod
    def fuse(trees: Sequence[TokenTree], *, budget: int | None = None, combine: str = "sum") -> TokenTree:
        """Merges trees with one root token: equal prefixes share a node, scores combine.

        Trees without scores count 1.0 per node, so ``combine="sum"`` counts how many trees
        propose each path. With ``budget``, the fused tree is pruned best-first by score.
        """
    @property
    def num_nodes(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def num_leaves(self) -> int: ...
    @property
    def root_token(self) -> int: ...
    @property
    def tokens(self) -> _IntArray:
        """``[N] int32`` tokens (read-only view)."""
    @property
    def parents(self) -> _IntArray:
        """``[N] int32`` parent ids, -1 for the root (read-only view)."""
    @property
    def depth(self) -> _IntArray:
        """``[N] int32`` depths, 0 for the root (read-only view)."""
    @property
    def first_child(self) -> _IntArray:
        """``[N] int32`` lowest-index child of every node, -1 for leaves (read-only view)."""
    @property
    def next_sibling(self) -> _IntArray:
        """``[N] int32`` next higher-index sibling, -1 for none (read-only view)."""
    @property
    def scores(self) -> npt.NDArray[np.float32] | None:
        """``[N] float32`` scores if the tree has them (read-only view)."""
    def leaf_paths(self) -> _IntArray:
        """``[num_leaves, max_depth + 1] int32`` root-to-leaf node paths padded with -1
        (Medusa/EAGLE "retrieve indices"), one row per leaf in ascending leaf id (read-only view)."""
    def position_ids(self, prefix_len: int = 0) -> _IntArray:
        """``[N] int32`` position ids ``prefix_len + depth``."""
    def ancestor_bits(self) -> _IntArray:
        """``[N, (N + 31) // 32] int32`` packed ancestor-or-self rows: bit ``j % 32`` of word
        ``j // 32`` of row ``i`` is set iff node ``j`` is on the path to node ``i``."""
    def ancestor_mask(self) -> npt.NDArray[np.bool_]:
        """``[N, N] bool`` dense ancestor-or-self mask."""
    def additive_mask(self, prefix_len: int = 0, dtype: Any = None) -> npt.NDArray[Any]:
        """``[N, prefix_len + N]`` additive attention mask: 0 where visible (every prefix column
        and each node's ancestors-or-self), ``finfo(dtype).min`` elsewhere.

        Args:
            prefix_len: cached tokens before the root.
            dtype: ``"float32"`` (default), ``"float64"``, ``"float16"`` or ``"bfloat16"`` (a
                name, numpy dtype or torch dtype). bfloat16 comes back as ``uint16`` bit
                patterns: ``torch.from_numpy(m).view(torch.bfloat16)``.
        """
    def likeliest_leaf(self) -> int:
        """The leaf whose root-to-leaf path has the largest sum of scores (root excluded; lowest id
        on ties): with path-probability scores, the chain a greedy verifier is expected to
        accept most of. The deepest leaf for a tree without scores."""
    def chain_view(self, leaf: int | None = None) -> _IntArray:
        """Node ids of the root-to-``leaf`` path (default: the deepest leaf, lowest id on ties)."""
    def padded(
        self, size: int, *, pad_id: int = 0, prefix_len: int = 0
    ) -> tuple[_IntArray, npt.NDArray[np.bool_], _IntArray]:
        """SGLang-style fixed-size form: ``tokens [size]``, ``mask [size, size] bool`` (padded
        rows see only themselves, so no row is fully masked) and ``positions [size]``."""
    def verify_greedy(self, target_argmax: _Ints) -> tuple[_IntArray, int, int]:
        """Greedy verification.

        Args:
            target_argmax: ``[N] int32`` the target's argmax token at every node.

        Returns:
            ``(accepted_nodes, num_accepted, bonus_token)``: accepted node ids root first
            (``[num_accepted + 1] int32``), the number of accepted drafts, and the token to
            emit after them.
        """
    def verify_stochastic(
        self, probs: npt.NDArray[np.float32] | npt.NDArray[np.float64], coins: _Floats
    ) -> tuple[_IntArray, int, int]:
        """Lossless stochastic verification (the single-coin point-mass rule, docs/design.md#stochastic), the
        reference ``fastdec.sampling`` and the CUDA kernel reproduce coin for coin. ``probs``:
        ``[N, V]`` float32/float64 target probabilities, row ``i`` for the token after node
        ``i`` (read in place when C-contiguous); ``coins``: ``[N, 2]`` uniforms in ``[0, 1)``
        (``[:, 0]`` acceptance, ``[:, 1]`` bonus). Returns ``(accepted_nodes, num_accepted,
        bonus_token)`` as :meth:`verify_greedy`.

        Raises:
            ValueError: mismatched shapes, coins outside ``[0, 1)``, a token outside the
                vocabulary, a bad probability among those read, or a stop row with no mass.
            TypeError: ``probs`` is not a float32 or float64 numpy array."""
    def best_first_subtree(self, budget: int, *, max_depth: int | None = None) -> TokenTree:
        """The ``budget`` best nodes chosen best-first by score (breadth-first without scores)."""
    def __len__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class TreeTemplate:
    """A static tree of candidate *ranks* (Medusa "choices", Token Recycling "2.2.2").

    Args:
        paths: rank paths of the non-root nodes, e.g. ``[[0], [1], [0, 0]]``; every proper
            prefix must be listed. Nodes are ordered by (depth, ranks).
    """

    def __new__(cls, paths: Sequence[Sequence[int]]) -> TreeTemplate: ...
    @staticmethod
    def token_recycling() -> TreeTemplate:
        """Token Recycling's 81-node "2.2.2" template (Luo et al. 2024)."""
    @staticmethod
    def optimal(acceptance: _Floats, *, budget: int, max_depth: int) -> TreeTemplate:
        """Sequoia's DP-optimal template; see :func:`optimal_template`."""
    def expected_accepted(self, acceptance: _Floats) -> float:
        """Expected accepted drafts per step under per-rank (or ``[depth, rank]``) acceptance."""
    @property
    def optimal_value(self) -> float | None:
        """Expected accepted drafts under the table the template was optimised for."""
    @property
    def num_nodes(self) -> int: ...
    @property
    def num_ranks(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def parents(self) -> _IntArray: ...
    @property
    def depth(self) -> _IntArray: ...
    @property
    def ranks(self) -> _IntArray: ...
    def paths(self) -> list[list[int]]: ...
    def fill(self, tokens: _Ints) -> TokenTree:
        """A tree from ``[N]`` tokens (root first) sharing this template's shape and buffers.
        Siblings with equal tokens are merged (subtrees united) instead of rejected."""
    def fill_ranked(self, root: int, candidates: npt.NDArray[np.int32]) -> TokenTree:
        """Medusa-style fill from ``candidates [max_depth, k] int32``: the node at depth ``d``
        with rank ``r`` takes ``candidates[d - 1, r]``."""
    def __len__(self) -> int: ...

@disjoint_base
class BaseDrafter:
    """The lifecycle every fastdec drafter shares (the :class:`fastdec.Drafter` protocol).

    ``start(request_id, prompt_ids)``; each step ``propose(request_id, budget)`` (a tree of at
    most ``budget`` nodes whose root is the last token) and ``accept(request_id, emitted,
    topk_ids=None)`` with the tokens the step emitted (accepted drafts, then the bonus token)
    and optionally the target's top-k at every verified node (``[num_nodes, k] int32``);
    ``stop(request_id)``. Request ids are int or str; an unknown id raises ``KeyError``.
    """

    def start(self, request_id: int | str, prompt_ids: _Ints) -> None: ...
    def propose(self, request_id: int | str, budget: int) -> TokenTree: ...
    def accept(self, request_id: int | str, emitted: _Ints, topk_ids: _IntArray | None = None) -> None: ...
    def stop(self, request_id: int | str) -> None: ...
    def propose_for(self, context_ids: _Ints, budget: int) -> TokenTree:
        """A stateless proposal from a whole context (its last token is the root)."""
    def stats(self) -> dict[str, float]:
        """Totals: steps, drafted, emitted, mean_accepted (bonus included), propose_us, accept_us."""
    def request_stats(self, request_id: int | str) -> dict[str, float]: ...
    def memory_bytes(self) -> int:
        """Heap bytes held by the drafter's tables and request states."""
    def wants_topk(self) -> int | None:
        """How many top-k columns ``accept(..., topk_ids=...)`` learns from (Token Recycling: its
        ``k``; a hybrid: the largest over its parts), or ``None`` if it ignores ``topk_ids``, so
        callers can skip computing them. ``topk_ids`` rows belong to the nodes of the tree the
        last ``propose`` returned, columns best first; any ``k >= 1`` is accepted (the first
        ``min(k, wants_topk())`` columns are used)."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the state shared across requests (Token Recycling's table, the trie's shared
        outputs; nothing for n-grams) to ``path``: magic, format version, kind, payload and
        checksum. Per-request state is not saved."""
    def load(self, path: str | os.PathLike[str]) -> None:
        """Replaces the shared state with the one saved at ``path``; a foreign, truncated,
        corrupted or differently configured file raises ``ValueError``, an unreadable one
        ``OSError``."""
    def propose_for_batch(self, contexts: Sequence[_Ints], budgets: _Ints) -> DraftBatch:
        """Stateless proposals for many contexts (GIL released; a loop or rayon's pool, whichever
        this drafter's earlier batches of that size measured faster)."""
    def propose_batch(self, request_ids: Sequence[int | str], budgets: _Ints) -> DraftBatch:
        """Proposals for many requests (GIL released; a loop or rayon's pool, whichever this
        drafter's earlier batches of that size measured faster)."""

@final
class DraftSession:
    """One owner of every engine's requests: recognises each batch row's request (by the engine's
    id, or from its tokens when the engine passes none), feeds it only the tokens new to it,
    finishes and evicts requests under one cap, and drafts the whole batch in one call per
    engine step (GIL released), with a learnt draft length.

    ``DraftSession(drafter, k, *, tree_budget=k + 1, max_requests=1024, grace_steps=4, max_gap=k +
    9, adaptive=True, explore=0.05, min_steps=16, window=128, streak_bins=6, match_bins=5,
    pad=True)`` (the last seven set the draft length, see :class:`DraftLength`); ``step(rows,
    counts, sampled, *, max_len=None, ids=None)`` returns one draft (a list of at most ``k`` token
    ids) per row. ``rows``: the engine's ``[R, C]`` int32 / int64 token rows (read in place: only
    the tokens new to each row and a few sampled positions are read); ``counts[i]``: row ``i``'s
    tokens, drafts excluded; ``sampled[i]``: tokens it emitted last step (0: a partial prefill, no
    draft); ``max_len``: the model's length limit (no draft runs past it); ``ids``: the engine's
    request id per row (int or str), or ``None`` (rows are recognised by content and a request
    missing for ``grace_steps`` steps is finished). ``finish(ids)`` finishes requests (their outputs
    reach a trie drafter's shared memory).
    """

    def __new__(
        cls,
        drafter: BaseDrafter,
        k: int,
        *,
        tree_budget: int | None = None,
        max_requests: int = 1024,
        grace_steps: int = 4,
        max_gap: int | None = None,
        adaptive: bool = True,
        explore: float = 0.05,
        min_steps: int = 16,
        window: int = 128,
        streak_bins: int = 6,
        match_bins: int = 5,
        pad: bool = True,
    ) -> DraftSession: ...
    @property
    def drafter(self) -> BaseDrafter: ...
    @property
    def k(self) -> int: ...
    @property
    def started(self) -> int: ...
    @property
    def stopped(self) -> int: ...
    @property
    def grace_steps(self) -> int: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def adaptive(self) -> bool: ...
    @overload
    def step(
        self,
        rows: npt.NDArray[np.int32] | npt.NDArray[np.int64] | Sequence[Sequence[int]],
        counts: _Ints | None,
        sampled: _Ints,
        *,
        max_len: int | None = None,
        ids: Sequence[int | str] | None = None,
        now: float | None = None,
        offsets: _Ints | None = None,
        slots: _Ints | None = None,
        width: None = None,
    ) -> list[list[int]]:
        """One engine step for the whole batch (see the class): one draft per row, a list of at most
        ``k`` token ids. ``offsets[i]``: where row ``i``'s tokens start in its request (with ``ids``);
        ``slots[i]``: the array row that holds batch row ``i`` (vLLM 0.34's ``idx_mapping``; default
        ``i``); ``width``: an ``[R, width]`` int64 array instead, each draft cut to ``width`` and
        filled with its row's last token (vLLM 0.34's fixed-``K`` layout); ``now``: the step's time
        on any monotonic clock, for the draft-length controller (default: the session's own).
        """
    @overload
    def step(
        self,
        rows: npt.NDArray[np.int32] | npt.NDArray[np.int64] | Sequence[Sequence[int]],
        counts: _Ints | None,
        sampled: _Ints,
        *,
        max_len: int | None = None,
        ids: Sequence[int | str] | None = None,
        now: float | None = None,
        offsets: _Ints | None = None,
        slots: _Ints | None = None,
        width: int,
    ) -> npt.NDArray[np.int64]: ...
    def step_trees(
        self,
        rows: npt.NDArray[np.int32] | npt.NDArray[np.int64] | Sequence[Sequence[int]],
        counts: _Ints | None,
        sampled: _Ints,
        *,
        ids: Sequence[int | str] | None = None,
        offsets: _Ints | None = None,
        budget: int | None = None,
    ) -> DraftBatch:
        """:meth:`step` for engines that verify trees: one tree of at most ``budget`` nodes per row
        (default ``tree_budget``; root = the row's last token; a row that does not draft, or
        every row at ``budget=1``, gets its root alone), as a :class:`DraftBatch`. ``rows`` may
        also be a list of token lists (e.g. SGLang's tails, with ``offsets``: each tail's
        position in its request).
        """
    def finish(self, ids: Sequence[int | str]) -> None:
        """Finishes the requests with these engine ids (unknown ids are ignored)."""
    def finish_all(self) -> None: ...
    def last_rows(self) -> npt.NDArray[np.int64]:
        """Per row of the last step, the session's id of its request (-1: none)."""
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, float]:
        """Counters: steps, rows drafted for, tokens drafted and accepted, requests started /
        stopped / evicted / live, microseconds in ``step``.
        """
    def length_stats(self) -> dict[str, Any]: ...

@final
class DraftLength:
    """How many tokens of each linear draft are worth verifying, learnt from what the engine
    accepted and what its steps cost (the controller inside :class:`DraftSession`; the README's
    vLLM section says how). ``DraftLength(k, *, bins=8, streak_bins=6, match_bins=5, window=128,
    min_steps=16, explore=0.05, decay=0.998, shrink=8.0, enabled=True, pad=True)``. A row's state is its
    ``streak`` (tokens its chains predicted in a row up to the latest miss) and ``matched`` (the
    longest of the windows of 2, 4, 8, 16 tokens ending its text that it held earlier too).
    Tree loops (``generate(budget="auto")``, llama.cpp's) keep their own controller: their
    forward's cost per tree size is not the line this one fits over a batched step's rows and
    tokens.
    """

    def __new__(
        cls,
        k: int,
        *,
        bins: int = 8,
        streak_bins: int = 6,
        match_bins: int = 5,
        window: int = 128,
        min_steps: int = 16,
        explore: float = 0.05,
        decay: float = 0.998,
        shrink: float = 8.0,
        enabled: bool = True,
        pad: bool = True,
    ) -> DraftLength: ...
    @property
    def k(self) -> int: ...
    @property
    def enabled(self) -> bool: ...
    explore: float
    @property
    def tau(self) -> float: ...
    def probability(self, depth: int, confidence: float, streak: int = 0, matched: int = 0) -> float: ...
    def observe(
        self, chain: _Ints, confidences: Sequence[float], emitted: _Ints, streak: int = 0, matched: int = 0
    ) -> int: ...
    def observe_step(
        self, drafts: Sequence[int], seconds: float, emitted: int, prefill: bool = False
    ) -> None: ...
    def cut(self, confidences: Sequence[float], streak: int = 0, matched: int = 0) -> int: ...
    def cut_batch(
        self,
        chains: Sequence[Sequence[float]],
        streaks: Sequence[int] | None = None,
        matched: Sequence[int] | None = None,
        room: Sequence[int] | None = None,
        batch_rows: int | None = None,
    ) -> list[int]: ...
    def stats(self) -> dict[str, Any]: ...

@final
class TrieDrafter(BaseDrafter):
    """Trie retrieval (Lookahead/PIA, with SuffixDecoding's local/global split).

    Every window of up to ``depth`` tokens is counted in a per-request trie (prompt and output)
    and, once a request stops, its output in one shared trie (cross-request sharing). A draft
    matches the longest context suffix (up to ``max_match`` tokens) with continuations and
    expands them best-first by empirical path probability; the local and shared candidate trees
    are fused with weights ``1 - output_weight`` and ``output_weight`` and pruned to the budget.
    Shorter matching suffixes contribute too, each with ``match_decay`` times the weight of the
    next longer one, counted from the longer match of the two tries (0: the longest only; at most
    ``match_parts`` lengths per trie), and probabilities are
    smoothed as ``count / (sibling total + smoothing)``. Each shorter match expands at most
    ``part_budget_decay`` times as many nodes as the next longer one (its nodes weigh less, so
    fewer make the final cut).
    Tries above their node cap halve their counts and drop nodes below 1; a request keeps at most
    ``max_context`` tokens of history (the oldest half is dropped beyond).
    """

    def __new__(
        cls,
        *,
        depth: int = 28,
        max_match: int = 16,
        output_weight: float = 0.5,
        max_local_nodes: int = 1048576,
        max_global_nodes: int = 4194304,
        max_requests: int = 1024,
        max_context: int = 1048576,
        match_decay: float = 0.8,
        smoothing: float = 0.5,
        match_parts: int = 3,
        part_budget_decay: float = 0.5,
    ) -> TrieDrafter: ...
    @property
    def global_nodes(self) -> int: ...

@final
class HybridDrafter(BaseDrafter):
    """Fuses the trees of several fastdec drafters under one budget.

    Each part drafts with the full budget; its scores are divided by its root score (a tree
    without scores counts 1 per node) and multiplied by its weight; equal paths add up
    (:meth:`TokenTree.fuse`) and the fused tree is pruned best-first to the budget. The
    lifecycle (start/accept/stop) is forwarded to every part. ``topk_ids`` (rows for the fused
    tree) reaches each part that wants them (:meth:`wants_topk`) re-indexed by the nodes of the
    tree that part proposed: a part node gets the row of the fused node with the same token
    path; nodes that pruning dropped were not verified and teach the part nothing.
    """

    def __new__(
        cls,
        drafters: Sequence[BaseDrafter],
        *,
        weights: Sequence[float] | None = None,
        max_requests: int = 1024,
    ) -> HybridDrafter: ...

@final
class DraftBatch:
    """Drafts for a batch in one flat ragged layout: tree ``b`` is
    ``tokens[cu_num_nodes[b]:cu_num_nodes[b + 1]]`` (parents local to each tree), and
    ``batch[b]`` is its :class:`TokenTree`. Arrays are read-only views. ``propose_batch``
    returns one; ``DraftBatch(trees)`` builds one from any trees."""

    def __new__(cls, trees: Sequence[TokenTree]) -> DraftBatch: ...
    @property
    def tokens(self) -> _IntArray: ...
    @property
    def parents(self) -> _IntArray: ...
    @property
    def cu_num_nodes(self) -> _IntArray: ...
    def padded(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The padded view: ``(tokens, parents, depth, num_nodes)``, the first three
        ``[len, width] int64`` (``width`` = the largest tree's node count; pad slots hold token 0,
        parent -1, depth 0) and ``num_nodes`` ``[len] int64``, the real nodes per tree."""
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> TokenTree: ...

@final
class NgramDrafter(BaseDrafter):
    """Prompt-lookup / n-gram drafter over an incremental per-request index.

    Args:
        mode: ``"pld"`` is prompt lookup decoding (for n = max_n..min_n, the earliest earlier
            occurrence of the last n tokens; a chain of the up to ``num_pred`` tokens after it:
            Spec-Bench's published PLD figure); ``"pld_strict"`` is Spec-Bench's ``pld.py`` to
            the letter (an occurrence counts only if a full ``num_pred`` tokens follow it);
            ``"recent"`` takes the most recent occurrence of the longest matching suffix;
            ``"tree"`` merges the continuations of the ``max_matches`` most recent occurrences
            (occurrence i weighs ``decay**i``) into a tree pruned best-first to the budget.
        min_n, max_n: suffix lengths matched (1 <= min_n <= max_n <= 16).
        num_pred: draft tokens per continuation.
        max_requests: active requests kept; starting one more evicts the least recently used.
        max_context: tokens indexed per request; beyond it the index keeps the newest half.

    Propose and accept cost O(max_n) hash operations plus the draft, whatever the context length.
    """

    def __new__(
        cls,
        mode: str = "pld",
        *,
        min_n: int = 1,
        max_n: int = 3,
        num_pred: int = 10,
        max_matches: int = 16,
        decay: float = 0.9,
        max_requests: int = 1024,
        max_context: int = 1048576,
    ) -> NgramDrafter: ...
    @property
    def num_requests(self) -> int: ...
    @property
    def mode(self) -> str: ...

@final
class RecycleDrafter(BaseDrafter):
    """Token Recycling (Luo et al. 2024): a ``[vocab_size, k]`` table of candidate next tokens,
    shared by all requests, overwritten after each step with the target's top-k at every
    verified node (``accept(..., topk_ids=...)``; accepted-path rows win duplicates), and read by
    filling ``template`` (default: the 81-node "2.2.2" template). Without ``topk_ids`` the table
    still learns emitted bigrams into empty rows. Nodes without a candidate are left out;
    ``budget`` keeps the first nodes in template order. Memory: ``vocab_size * k * 4`` bytes.
    """

    def __new__(
        cls, vocab_size: int, *, k: int = 8, template: TreeTemplate | None = None, max_requests: int = 1024
    ) -> RecycleDrafter: ...
    def row(self, token: int) -> _IntArray:
        """Row ``token`` of the table, -1 where no candidate is known yet."""
    @property
    def vocab_size(self) -> int: ...
    @property
    def k(self) -> int: ...

def verify_greedy_batch(
    trees: Sequence[TokenTree], target_argmax: _Ints
) -> tuple[_IntArray, _IntArray, _IntArray]:
    """Greedy verification of many trees.

    Args:
        trees: ``B`` trees.
        target_argmax: ``[sum of num_nodes] int32``, every tree's per-node argmax concatenated.

    Returns:
        ``accepted_nodes [B, max(max_depth) + 1]`` (padded with -1), ``num_accepted [B]`` and
        ``bonus_token [B]``, all int32.
    """

def verify_stochastic_batch(
    trees: Sequence[TokenTree] | DraftBatch,
    probs: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    coins: _Floats,
) -> list[tuple[list[int], int]]:
    """``TokenTree.verify_stochastic`` for ``B`` trees (or a :class:`DraftBatch`) padded to ``M``
    nodes, in parallel for large batches: ``probs`` ``[B, M, V]`` float32/float64 and ``coins``
    ``[B, M, 2]`` (rows past a tree's nodes are ignored). Returns one ``(accepted_nodes,
    bonus_token)`` per tree.

    Raises:
        ValueError: as ``TokenTree.verify_stochastic``, or a tree of more than ``M`` nodes.
        TypeError: ``trees`` or ``probs`` of the wrong type."""

def optimal_template(acceptance: _Floats, *, budget: int, max_depth: int) -> TreeTemplate:
    """The template maximising expected accepted tokens (Sequoia, arXiv 2402.12374).

    Args:
        acceptance: ``[ranks]`` or ``[depths, ranks]`` probabilities that the rank-``r`` child
            of an accepted node (at depth ``d``) is accepted; deeper levels reuse the last row.
        budget: nodes, root included.
        max_depth: depth limit.
    """

def _time_tree_step(
    template: TreeTemplate,
    tokens: npt.NDArray[np.int32],
    target_argmax: npt.NDArray[np.int32],
    *,
    prefix_len: int,
    mask_prefix_len: int,
) -> npt.NDArray[np.uint64]:
    """Benchmark helper: nanoseconds of each per-step set (fill, positions, float32 mask, leaf
    paths, greedy verification) timed inside Rust; ``tokens``/``target_argmax`` are ``[steps, N]``."""

def _linear_rows(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
    threads: int = 1,
) -> None:
    """``out = x @ weight.T + bias`` for a few float32 rows, reading the weight once (see
    ``fastdec.generation.cpu_linear``): ``x`` ``[R, K]``, ``weight`` ``[N, K]``, ``bias`` ``[N]``
    or None, ``out`` ``[R, N]``, all C-contiguous float32; ``threads`` workers (1: this thread).
    The GIL is released while it runs.

    Raises:
        ValueError: shapes that do not match, a non-contiguous array, ``threads`` of 0.
    """
