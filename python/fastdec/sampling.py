"""Lossless stochastic verification of deterministic draft trees (docs/design.md#stochastic).

Every fastdec drafter picks its children deterministically (n-gram, trie, recycling tables), so
each child is a point mass and the lossless rule is the *single-coin point-mass* rule (the form
SGLang uses for target-only sampling; EAGLE-2 and Lookahead use the equivalent sequential form):

* at node ``u`` with children ``x_1..x_k`` (ascending node id) and target distribution ``p_u``,
  draw one coin ``c = coins[u, 0]`` and accept the first child with ``c < Σ_{j≤i} p_u(x_j)``;
  move to it and repeat;
* if no child is accepted (or ``u`` is a leaf), the *bonus token* is drawn from ``p_u`` with all
  of ``u``'s children removed and renormalised, by inverse CDF with ``coins[u, 1]``.

Marginally ``P(accept x_i) = p_u(x_i)`` and, given that none is accepted, the bonus follows
``p_u`` restricted to the other tokens, so every emitted token follows ``p_u`` exactly: the output
has the law of plain sampling from ``p``. This needs distinct siblings (a duplicate double-counts,
§2.3) and drafts that do not depend on the coins.

Terms (fixed for this module): ``tokens`` ``[num_nodes]`` int, node 0 is the *root* (the last
known token); ``parents`` ``[num_nodes]`` int, ``parents[0] == -1`` and ``parents[i] < i``;
``probs`` ``[num_nodes, vocab_size]``, row ``i`` is the warped target distribution of the token
that follows node ``i`` (rows should sum to 1; not checked); ``coins`` ``[num_nodes, 2]`` uniforms
in ``[0, 1)``. A result is ``(accepted_nodes, bonus_token)``: node ids root first, then the token.

Decisions are computed in float64 from the given probabilities (float32 and narrower convert to
float64 exactly), with sums in a fixed order: the children sequentially by node id; the bonus
CDF in the *chunked order* a GPU block computes in parallel (``cuda/verify.cu``): the vocabulary
in chunks of :data:`CDF_CHUNK` tokens, each summed sequentially, ``cdf[t]`` = the sequential sum of
the chunk totals before ``t``'s chunk plus the sequential sum within it up to ``t``. A
vocabulary of at most ``CDF_CHUNK`` tokens is plain sequential summation. The fixed order makes
the CPU and the GPU take the same decisions from the same coins.

:func:`verify_stochastic_ref` is the specification: it calls the Rust core's implementation
(``TokenTree.verify_stochastic``, ``fastdec._core.verify_stochastic_batch``; the plain Python
loops it replaced live on in ``tests/stochastic_oracle.py`` as an independent check).
:func:`verify_stochastic` and :func:`verify_stochastic_batch` make exactly the same decisions
with a few tensor operations, reading only a few rows of ``probs`` wherever they are (for
tensors on an accelerator); ``tests/test_sampling.py`` checks both, and
``tests/test_sampling_lossless.py`` the law of the output by exact enumeration. This module
imports torch: fastdec imports it lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fastdec._core import TokenTree

__all__ = [
    "draw_coins",
    "verify_stochastic",
    "verify_stochastic_batch",
    "verify_stochastic_ref",
    "warp_probs",
]

Tree = tuple[npt.ArrayLike, npt.ArrayLike]

CDF_CHUNK = 256
"""Tokens per chunk of the bonus CDF's summation order (must equal ``CHUNK`` in ``cuda/verify.cu``)."""


# ------------------------------------------------------------------------------------------------
# warping


def warp_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution HF transformers samples from with ``do_sample=True``.

    Applies ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper`` in that
    order with the same operations (``min_tokens_to_keep=1``, filter value ``-inf``; top-k keeps
    every token tied with the k-th largest logit), then a float32 softmax, as ``generate`` does.
    Note that ``generate`` defaults to ``top_k=50`` when none is given: pass it explicitly here.

    Args:
        logits: ``[..., vocab_size]`` floating logits (computed in float32, as ``generate`` does).
        temperature: ``> 0`` (greedy decoding does not go through this function).
        top_k: keep the ``top_k`` largest logits (with ties); ``None`` or ``0`` keeps all.
        top_p: nucleus mass in ``[0, 1]``; ``None`` or ``1.0`` keeps all.

    Returns:
        ``[..., vocab_size]`` float32 probabilities on ``logits.device``.

    Raises:
        ValueError: a parameter is out of range or ``logits`` is not a floating tensor with ``ndim >= 1``.

    >>> [round(x, 4) for x in warp_probs(torch.tensor([2.0, 1.0, 1.0, -1.0]), 1.0, top_k=2).tolist()]
    [0.5761, 0.2119, 0.2119, 0.0]
    """
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"invalid temperature={temperature!r}: must be a float > 0")
    if not math.isfinite(temperature):
        raise ValueError(f"invalid temperature={temperature!r}: must be finite")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"invalid top_k={top_k!r}: must be None or an int >= 0 (0 disables it)")
    if top_p is not None and (isinstance(top_p, bool) or not 0.0 <= top_p <= 1.0):
        raise ValueError(f"invalid top_p={top_p!r}: must be None or a float in [0, 1]")
    if not isinstance(logits, torch.Tensor) or logits.ndim < 1 or not logits.is_floating_point():
        raise ValueError("logits must be a floating torch.Tensor of shape [..., vocab_size]")
    vocab = logits.shape[-1]
    scores = logits.to(torch.float32).reshape(-1, vocab)
    scores = scores / float(temperature)
    if top_k:
        # TopKLogitsWarper: ties with the k-th value survive (strict `<`).
        k = min(top_k, vocab)
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        # TopPLogitsWarper: drop the ascending prefix of mass <= 1 - top_p, keep the largest token.
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative <= (1 - float(top_p))
        sorted_remove[..., -1:] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, -math.inf)
    return torch.softmax(scores, dim=-1).reshape(logits.shape)


def draw_coins(generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """``shape`` float64 uniforms in ``[0, 1)`` on the CPU from a seeded CPU ``generator``.

    >>> draw_coins(torch.Generator().manual_seed(0), (3, 2)).shape
    torch.Size([3, 2])
    """
    if generator.device.type != "cpu":
        raise ValueError(f"draw_coins needs a CPU generator, got one on {generator.device}")
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# shared validation and the bonus draw


def _tree_arrays(tokens: npt.ArrayLike, parents: npt.ArrayLike) -> tuple[list[int], list[int]]:
    """Checks a parents-first tree with distinct siblings; returns plain int lists."""
    tok = np.asarray(tokens)
    par = np.asarray(parents)
    if tok.ndim != 1 or par.ndim != 1 or tok.shape != par.shape or tok.size == 0:
        raise ValueError(f"tokens {tok.shape} and parents {par.shape} must be equal non-empty 1-D arrays")
    if not (np.issubdtype(tok.dtype, np.integer) and np.issubdtype(par.dtype, np.integer)):
        raise ValueError(f"tokens ({tok.dtype}) and parents ({par.dtype}) must be integer arrays")
    tok_l = [int(t) for t in tok]
    par_l = [int(p) for p in par]
    if par_l[0] != -1:
        raise ValueError(f"parents[0] must be -1 (the root), got {par_l[0]}")
    seen: set[tuple[int, int]] = set()
    for i in range(1, len(par_l)):
        if not 0 <= par_l[i] < i:
            raise ValueError(f"parents[{i}] = {par_l[i]}: trees are parents-first (0 <= parents[i] < i)")
        if (par_l[i], tok_l[i]) in seen:
            raise ValueError(f"node {i} repeats token {tok_l[i]} among the children of node {par_l[i]}")
        seen.add((par_l[i], tok_l[i]))
    return tok_l, par_l


def _check_tokens(tok: list[int], vocab: int) -> None:
    bad = [t for t in tok if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token {bad[0]} is outside the vocabulary [0, {vocab})")


def _coins_f64(coins: npt.ArrayLike | torch.Tensor, num_nodes: int) -> npt.NDArray[np.float64]:
    if isinstance(coins, torch.Tensor):
        coins = _f64(coins)
    c = np.asarray(coins, dtype=np.float64)
    if c.shape != (num_nodes, 2):
        raise ValueError(f"coins must have shape ({num_nodes}, 2), got {c.shape}")
    if not np.all((c >= 0.0) & (c < 1.0)):
        raise ValueError(f"coins must lie in [0, 1), got values in [{c.min()}, {c.max()}]")
    return c


def _check_probs_shape(probs: torch.Tensor | npt.ArrayLike, num_nodes: int) -> tuple[int, ...]:
    shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else np.shape(probs)
    if len(shape) != 2 or shape[0] != num_nodes or shape[1] == 0:
        raise ValueError(f"probs must have shape ({num_nodes}, vocab_size), got {shape}")
    return shape


def _f64(t: torch.Tensor) -> npt.NDArray[np.float64]:
    """A tensor's values as a float64 array on the host, exactly (every float dtype fits in float64).

    Copies in the tensor's own dtype and widens with numpy: half the bytes of widening on the
    device, and no parallel torch kernel on the CPU (where OpenMP spin-up can cost milliseconds).
    """
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return np.asarray(t.cpu().numpy(), dtype=np.float64)


def _children(parents: list[int]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        kids[parents[i]].append(i)
    return kids


def _chunked_cdf(masked: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The bonus CDF in the chunked summation order, vectorised: ``cumsum`` along a row is a
    sequential loop, so every partial sum is bit-identical to the reference's loops."""
    v = masked.size
    chunks = -(-v // CDF_CHUNK)
    padded = np.zeros(chunks * CDF_CHUNK)
    padded[:v] = masked
    within = np.cumsum(padded.reshape(chunks, CDF_CHUNK), axis=1)
    offsets = np.zeros(chunks)
    offsets[1:] = np.cumsum(within[:, -1])[:-1]
    cdf: npt.NDArray[np.float64] = (offsets[:, None] + within).reshape(-1)[:v]
    return cdf


def _bonus_fast(row: npt.NDArray[np.float64], excluded: list[int], coin: float) -> int | None:
    """The bonus draw of :func:`verify_stochastic_ref` over a float64 row, vectorised.

    ``np.cumsum`` (``add.accumulate``) adds sequentially, so ``cum`` is bit-identical to the
    reference loop; ``searchsorted(..., "right")`` is "the smallest t with x < cum[t]", which
    always has nonzero mass since ``cum`` is non-decreasing. Returns None when the mass is 0.
    """
    masked = row.copy()
    masked[excluded] = 0.0
    cum = _chunked_cdf(masked)
    z = float(cum[-1])
    if z <= 0.0:
        return None
    t = int(np.searchsorted(cum, coin * z, side="right"))
    if t >= cum.size:  # cannot happen for coin < 1 (coin * z < z); clamp as the reference does
        t = int(np.flatnonzero(masked)[-1])
    return t


# ------------------------------------------------------------------------------------------------
# the specification


def host_probs(probs: torch.Tensor | npt.ArrayLike) -> npt.NDArray[Any]:
    """Probabilities as a float32 or float64 host array, exactly and without a copy when they
    already are one (narrower floats widen to float32, which holds them exactly)."""
    if isinstance(probs, torch.Tensor):
        t = probs.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return np.asarray(t.cpu().numpy())
    p = np.asarray(probs)
    if p.dtype == np.float32 or p.dtype == np.float64:
        return p
    return p.astype(np.float32 if p.dtype == np.float16 else np.float64)


def verify_stochastic_ref(
    tokens: npt.ArrayLike,
    parents: npt.ArrayLike,
    probs: torch.Tensor | npt.ArrayLike,
    coins: torch.Tensor | npt.ArrayLike,
) -> tuple[list[int], int]:
    """Reference single-coin point-mass verification of one tree (the specification).

    The rule is implemented once, in the Rust core (``TokenTree.verify_stochastic``); this
    converts the arguments and calls it.

    Args:
        tokens: ``[num_nodes]`` int token ids, node 0 the root.
        parents: ``[num_nodes]`` int, parents-first, distinct sibling tokens.
        probs: ``[num_nodes, vocab_size]`` target probabilities (any float dtype, any device).
        coins: ``[num_nodes, 2]`` uniforms in ``[0, 1)``: ``[:, 0]`` for acceptance, ``[:, 1]``
            for the bonus draw.

    Returns:
        ``(accepted_nodes, bonus_token)``: accepted node ids root first, and the bonus token.

    Raises:
        ValueError: malformed tree, shapes that do not match, coins outside ``[0, 1)``, negative
            or non-finite probabilities (of the values read: the children's and the stop rows'),
            or a stop node whose row has no mass at all.

    Rounding: all sums are float64 sums in a fixed order (see the module docstring). When the
    children of the stop node carry all of its mass (``Z == 0``), ``coins[u, 0]`` exceeded their
    float sum only by rounding (it is ``1`` up to a few ulps), so the last child with nonzero
    probability is accepted and the walk goes on.

    >>> verify_stochastic_ref([0, 1, 2], [-1, 0, 0], [[0.25, 0.25, 0.5], [1, 0, 0], [0, 1, 0]],
    ...                       [[0.3, 0.9], [0.0, 0.5], [0.0, 0.5]])
    ([0, 2], 1)
    """
    tok, par = _tree_arrays(tokens, parents)
    _check_probs_shape(probs, len(tok))
    c = _f64(coins) if isinstance(coins, torch.Tensor) else np.asarray(coins, dtype=np.float64)
    nodes, _, bonus = TokenTree(tok, par).verify_stochastic(host_probs(probs), c)
    return [int(i) for i in nodes], int(bonus)


# ------------------------------------------------------------------------------------------------
# the fast versions


def _walk(
    kids: list[list[int]],
    child_p: npt.NDArray[np.float64],
    coins: npt.NDArray[np.float64],
    start: list[int],
) -> list[int]:
    """Accepts children from the end of ``start`` until none is; ``child_p[i] = p_parent(tok_i)``."""
    nodes = start
    u = nodes[-1]
    while True:
        coin = float(coins[u, 0])
        cum = 0.0
        nxt = -1
        for child in kids[u]:
            cum += float(child_p[child])
            if coin < cum:
                nxt = child
                break
        if nxt < 0:
            return nodes
        nodes.append(nxt)
        u = nxt


def verify_stochastic(
    tokens: npt.ArrayLike,
    parents: npt.ArrayLike,
    probs: torch.Tensor,
    coins: torch.Tensor | npt.ArrayLike,
) -> tuple[list[int], int]:
    """:func:`verify_stochastic_ref` with a few tensor operations; the same decisions.

    Costs two device-to-host copies: the probabilities of the ``num_nodes - 1`` draft tokens
    (one gather) and the stop node's row (``vocab_size`` floats). The walk runs in Python over
    those small float64 arrays; the bonus draw is a chunked float64 cumsum of the stop row,
    O(vocab_size) on the host (the whole call measured 2.7 ms for 64 nodes and a 128k vocabulary
    on a loaded 2-core CPU, 1 ms of it that cumsum).

    Args:
        tokens: ``[num_nodes]`` int token ids, node 0 the root.
        parents: ``[num_nodes]`` int, parents-first, distinct sibling tokens.
        probs: ``[num_nodes, vocab_size]`` floating tensor on any device.
        coins: ``[num_nodes, 2]`` uniforms in ``[0, 1)`` (CPU tensor or array).

    Returns:
        ``(accepted_nodes, bonus_token)`` as :func:`verify_stochastic_ref`.

    Raises:
        ValueError: as :func:`verify_stochastic_ref`; of the probabilities only the values read
            (draft tokens and the stop row) are checked.
    """
    if not isinstance(probs, torch.Tensor):
        raise ValueError("probs must be a torch.Tensor of shape [num_nodes, vocab_size]")
    num_nodes = np.shape(tokens)[0] if np.ndim(tokens) == 1 else 0
    _check_probs_shape(probs, num_nodes)
    coins = _coins_f64(coins, num_nodes)
    return verify_stochastic_batch([(tokens, parents)], probs[None], coins[None])[0]


def verify_stochastic_batch(
    trees: Sequence[Tree],
    probs: torch.Tensor,
    coins: torch.Tensor | npt.ArrayLike,
) -> list[tuple[list[int], int]]:
    """:func:`verify_stochastic` for a batch of trees padded to ``max_nodes``.

    Args:
        trees: ``batch`` pairs ``(tokens, parents)``, tree ``b`` with ``num_nodes_b <= max_nodes``.
        probs: ``[batch, max_nodes, vocab_size]`` floating tensor on any device; rows past a
            tree's nodes are ignored.
        coins: ``[batch, max_nodes, 2]`` uniforms (rows past a tree's nodes are ignored).

    Returns:
        One ``(accepted_nodes, bonus_token)`` per tree.

    Raises:
        ValueError: as :func:`verify_stochastic`.
    """
    if not isinstance(probs, torch.Tensor) or probs.ndim != 3 or not probs.is_floating_point():
        raise ValueError("probs must be a floating torch.Tensor of shape [batch, max_nodes, vocab_size]")
    batch, max_nodes, vocab = probs.shape
    if len(trees) != batch:
        raise ValueError(f"probs has batch {batch} but {len(trees)} trees were given")
    if vocab == 0:
        raise ValueError("probs has an empty vocabulary")
    if isinstance(coins, torch.Tensor):
        coins = _f64(coins)
    c_all = np.asarray(coins, dtype=np.float64)
    if c_all.shape != (batch, max_nodes, 2):
        raise ValueError(f"coins must have shape ({batch}, {max_nodes}, 2), got {c_all.shape}")

    parsed = [_tree_arrays(tokens, parents) for tokens, parents in trees]
    coin_rows: list[npt.NDArray[np.float64]] = []
    index: list[tuple[int, int, int]] = []  # (b, parents[i], tokens[i]) for every draft node i
    for b, (tok, par) in enumerate(parsed):
        n = len(tok)
        if n > max_nodes:
            raise ValueError(f"tree {b} has {n} nodes but probs holds {max_nodes}")
        _check_tokens(tok, vocab)
        coin_rows.append(_coins_f64(c_all[b, :n], n))
        index.extend((b, par[i], tok[i]) for i in range(1, n))

    # One gather and one copy for every draft token's probability.
    if index:
        idx = torch.tensor(index, dtype=torch.long).T.to(probs.device)
        gathered = _f64(probs[idx[0], idx[1], idx[2]])
        if not np.all(np.isfinite(gathered) & (gathered >= 0.0)):
            raise ValueError("probs must be finite and non-negative")
    else:
        gathered = np.zeros(0)

    kids = [_children(par) for _, par in parsed]
    child_ps: list[npt.NDArray[np.float64]] = []
    offset = 0
    for tok, _ in parsed:
        cp = np.zeros(len(tok))
        cp[1:] = gathered[offset : offset + len(tok) - 1]
        offset += len(tok) - 1
        child_ps.append(cp)

    paths = [_walk(kids[b], child_ps[b], coin_rows[b], [0]) for b in range(batch)]
    bonus: list[int | None] = [None] * batch
    pending = list(range(batch))
    while pending:
        # One copy of the stop rows; a Z == 0 fallback (rounding only) loops once more for that tree.
        if probs.device.type == "cpu":  # views, no gather
            rows = [_f64(probs[b, paths[b][-1]]) for b in pending]
        else:
            stops = torch.tensor([(b, paths[b][-1]) for b in pending], dtype=torch.long).T.to(probs.device)
            rows = list(_f64(probs[stops[0], stops[1]]))
        if not all(np.all(np.isfinite(row) & (row >= 0.0)) for row in rows):
            raise ValueError("probs must be finite and non-negative")
        again = []
        for b, row in zip(pending, rows, strict=True):
            tok = parsed[b][0]
            u = paths[b][-1]
            bonus[b] = _bonus_fast(row, [tok[ch] for ch in kids[b][u]], float(coin_rows[b][u, 1]))
            if bonus[b] is None:
                positive = [ch for ch in kids[b][u] if child_ps[b][ch] > 0.0]
                if not positive:
                    raise ValueError(f"probs row {u} of tree {b} has no mass")
                paths[b] = _walk(kids[b], child_ps[b], coin_rows[b], [*paths[b], positive[-1]])
                again.append(b)
        pending = again
    out = []
    for b in range(batch):
        tok_b = bonus[b]
        assert tok_b is not None
        out.append((paths[b], tok_b))
    return out
