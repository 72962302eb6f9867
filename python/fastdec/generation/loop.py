"""Lossless speculative generation on a transformers causal LM (``fastdec.generate``).

Each step drafts one token tree per row, scores every tree in one forward pass (a 4D additive
mask and explicit position ids, no model patching), keeps the longest path the target agrees
with (greedy), or applies the lossless point-mass rule for deterministic drafts (sampling,
trees.md §2.3), compacts the accepted K/V entries in place and drops the rest. The recipe and
its pitfalls are in trees.md §3.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import fastdec
from fastdec import BaseDrafter, TokenTree
from fastdec.drafters import DEFAULT_DRAFTER, DRAFTER_NAMES

from . import cache as kv
from . import constrained
from .budget import AutoBudget
from .cpu_linear import small_row_linears
from .step_ops import step_ops as _step_ops
from .tree_ops import pad_trees

_request_ids = itertools.count()
# Drafters made from a name are kept per model, so that their shared state (Token Recycling's
# table, the trie of past outputs) carries over from one call to the next (a hot start).
_default_drafters: weakref.WeakKeyDictionary[Any, dict[str, BaseDrafter]] = weakref.WeakKeyDictionary()
# budget="auto" controllers per model and drafter object (weak keys both: a new drafter never
# inherits the measurements of a collected one): what one call measured, the next one uses.
_auto_budgets: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[BaseDrafter, AutoBudget]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class GenerateOutput:
    """What ``fastdec.generate`` returns. Token lists hold the new tokens of each row (an EOS
    token, when produced, is the last one)."""

    sequences: list[list[int]]
    accepted_lengths: list[list[int]]  # per row, per step: tokens emitted (bonus included)
    budgets: list[int] = field(default_factory=list)  # per step
    budget_note: str = ""  # budget="auto": the size it runs and why (AutoBudget.explain)
    steps: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    draft_seconds: float = 0.0
    forward_seconds: float = 0.0

    @property
    def new_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def mean_accepted(self) -> float:
        """Mean tokens emitted per row-step, the bonus token included (MAT)."""
        n = sum(len(a) for a in self.accepted_lengths)
        return sum(sum(a) for a in self.accepted_lengths) / n if n else 0.0

    @property
    def tokens_per_second(self) -> float:
        total = self.prefill_seconds + self.decode_seconds
        return self.new_tokens / total if total > 0 else 0.0


def _make_drafter(name: str, vocab_size: int) -> BaseDrafter:
    if name == "recycling":
        return fastdec.RecycleDrafter(vocab_size)
    if name == "trie":
        return fastdec.TrieDrafter()
    if name == "ngram":
        return fastdec.NgramDrafter("tree", max_n=4, num_pred=16, max_matches=32)
    if name == "pld":
        return fastdec.NgramDrafter("pld")
    if name == "hybrid":
        return fastdec.HybridDrafter(
            [fastdec.TrieDrafter(), fastdec.NgramDrafter("tree", max_n=4, num_pred=16, max_matches=32)],
            weights=[1.0, 0.5],
        )
    raise ValueError(f"unknown drafter={name!r}: expected one of {DRAFTER_NAMES} or a drafter object")


def _resolve_drafter(model: Any, drafter: str | BaseDrafter | None, vocab_size: int) -> BaseDrafter | None:
    if drafter is None or isinstance(drafter, BaseDrafter):
        return drafter
    if not isinstance(drafter, str):
        raise TypeError(f"drafter must be a name or a fastdec drafter, got {type(drafter).__name__}")
    per_model = _default_drafters.setdefault(model, {})
    if drafter not in per_model:
        per_model[drafter] = _make_drafter(drafter, vocab_size)
    return per_model[drafter]


def _prompts(input_ids: Any) -> list[list[int]]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        rows = input_ids.tolist()
    elif isinstance(input_ids, np.ndarray):
        rows = np.atleast_2d(input_ids).tolist()
    else:
        rows = [list(r) for r in input_ids]
        if rows and not isinstance(rows[0], list | tuple) and not hasattr(input_ids[0], "__len__"):
            rows = [list(input_ids)]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("input_ids must hold at least one non-empty prompt")
    return [[int(t) for t in r] for r in rows]


def _eos_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(t) for t in eos_token_id}


@torch.inference_mode()
def generate(
    model: Any,
    input_ids: Any,
    *,
    drafter: str | BaseDrafter | None = DEFAULT_DRAFTER,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    budget: str | int = "auto",
    constraint: Any = None,
    streamer: Any = None,
    cache: str = "dynamic",
) -> GenerateOutput:
    """Generates up to ``max_new_tokens`` tokens per prompt with speculative decoding.

    Greedy (``temperature=0``) output equals ``model.generate(do_sample=False)`` token for token;
    with sampling the output follows exactly the distribution of plain sampling with the same
    ``temperature``/``top_k``/``top_p``. ``input_ids``: a ``[B, T]`` tensor of unpadded prompts, or
    a list of token lists of any lengths. ``drafter``: ``"recycling"``, ``"trie"``, ``"ngram"``,
    ``"pld"``, ``"hybrid"`` (kept per model, so later calls start warm), a fastdec drafter, or
    ``None`` (no drafts: plain decoding through the same loop). ``budget``: most tree nodes per
    step (root included), or ``"auto"`` to measure and pick the fastest size on this hardware.
    ``streamer``: a transformers streamer (``put``/``end``), batch size 1 only. ``cache``:
    ``"dynamic"`` (a ``DynamicCache``, grown per step) or ``"static"`` (a ``StaticCache``
    preallocated for prompt + ``max_new_tokens`` + the largest tree, compacted in place: fixed
    addresses, no per-step reallocation; attention then spans the whole buffer).
    ``constraint``: a :class:`fastdec.Regex`, :class:`fastdec.JsonSchema`,
    :class:`fastdec.Grammar` or :class:`fastdec.CallbackConstraint` (any
    :class:`fastdec.Constraint`) the generated text must satisfy (pass the vocabulary's
    end-of-sequence id as ``eos_token_id``: it is allowed only where the text is complete).
    Drafts are pruned to what the constraint allows and every token is drawn from the target
    restricted to it (greedy: the allowed token of highest logit; sampling: AWRS), so the
    output equals greedy decoding under the full mask, or samples its law. A row whose
    constraint reaches a dead end (nothing allowed has mass) stops there.
    """
    if constraint is not None and not isinstance(constraint, fastdec.Constraint):
        raise ValueError(
            f"invalid constraint={constraint!r}: expected a fastdec.Regex, JsonSchema, Grammar or "
            "CallbackConstraint (built over the model's vocabulary with "
            "fastdec.vocab.TokenVocabulary(...).native())"
        )
    if max_new_tokens < 1:
        raise ValueError(f"invalid max_new_tokens={max_new_tokens}: must be >= 1")
    if cache not in ("dynamic", "static"):
        raise ValueError(f"invalid cache={cache!r}: expected 'dynamic' or 'static'")
    if temperature < 0:
        raise ValueError(f"invalid temperature={temperature}: must be >= 0")
    prompts = _prompts(input_ids)
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"a streamer needs batch size 1, got {len(prompts)} prompts")
    kv.check_supported(model)
    vocab_size = int(model.config.vocab_size)
    if constraint is not None and constraint.vocab_size != vocab_size:
        raise ValueError(
            f"the constraint's vocabulary has {constraint.vocab_size} tokens, the model {vocab_size}"
        )
    for p in prompts:
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt token {bad[0]} is outside the vocabulary [0, {vocab_size})")
    draft = _resolve_drafter(model, drafter, vocab_size)
    auto = None
    if budget == "auto" and draft is not None:
        auto = _auto_budgets.setdefault(model, weakref.WeakKeyDictionary()).setdefault(draft, AutoBudget())
    elif budget == "auto":
        budget = 1  # nothing to draft: plain decoding
    if auto is None and (
        not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= fastdec.MAX_NODES
    ):
        raise ValueError(f"invalid budget={budget!r}: 'auto' or an int in [1, {fastdec.MAX_NODES}]")
    want_topk = isinstance(draft, fastdec.RecycleDrafter)
    topk = draft.k if isinstance(draft, fastdec.RecycleDrafter) else 0
    sampler = None
    if temperature > 0:
        from fastdec import sampling

        sampler = sampling
        gen = torch.Generator().manual_seed(seed if seed is not None else int(time.time_ns() % 2**63))
    eos = _eos_set(eos_token_id)
    device = next(model.parameters()).device
    ops = _step_ops(device)
    dtype = next(model.parameters()).dtype

    rows = len(prompts)
    seqs = [list(p) for p in prompts]
    out = GenerateOutput(sequences=[[] for _ in prompts], accepted_lengths=[[] for _ in prompts])
    done = [False] * rows
    cstates = [constraint.start() for _ in prompts] if constraint is not None else []
    rids = [f"fastdec-{next(_request_ids)}" for _ in prompts]
    if draft is not None:
        for rid, p in zip(rids, prompts, strict=True):
            draft.start(rid, p)
    if streamer is not None:
        streamer.put(torch.tensor(prompts[0]))

    # Prefill everything but each prompt's last token (the first tree's root). Prompts are
    # right-padded; the causal mask alone keeps real tokens from seeing pads.
    t0 = time.perf_counter()
    static_len = None
    if cache == "static":
        largest = max(auto.candidates) if auto is not None else int(budget)
        # A row that stops mid-path may hold up to one tree of extra entries, and the next tree
        # of the other rows goes after it.
        static_len = max(len(p) for p in prompts) + max_new_tokens + 2 * largest
    kv_cache = kv.new_cache(model, static_len)
    valid = [len(p) - 1 for p in prompts]
    past = max(valid)
    if past:
        pre = torch.zeros((rows, past), dtype=torch.long)
        for b, p in enumerate(prompts):
            pre[b, : len(p) - 1] = torch.tensor(p[:-1])
        kv.run(model, kv_cache, start=0, input_ids=pre.to(device), use_cache=True, logits_to_keep=1)
    out.prefill_seconds = time.perf_counter() - t0

    linears = ExitStack()
    linears.enter_context(small_row_linears(model))
    try:
        while not all(done):
            step_start = time.perf_counter()
            size = auto.next() if auto is not None else int(budget)
            trees: list[TokenTree] = []
            for b in range(rows):
                if done[b] or draft is None or size == 1:
                    trees.append(TokenTree.chain([seqs[b][-1]]))
                else:
                    trees.append(draft.propose(rids[b], size))
            node_states: list[list[int]] = []
            pruned = [False] * rows
            if constraint is not None:
                for b in range(rows):
                    kept, st = constrained.prune_tree(trees[b], constraint, cstates[b])
                    pruned[b] = kept is not trees[b]
                    trees[b] = kept
                    node_states.append(st)
            t_draft = time.perf_counter()
            batch = pad_trees(trees, device)
            valid_t = torch.tensor(valid, device=device)
            mask: torch.Tensor | None
            if static_len is None and rows == 1 and batch.tokens.shape[1] == 1 and valid[0] == past:
                # One token over a dense cache: the causal default is the same mask, and sdpa
                # runs faster without an explicit one.
                mask, positions = None, valid_t[:, None]
            else:
                mask, positions = ops.tree_mask(batch, valid_t, past, dtype, kv_len=static_len)
            logits = kv.run(
                model,
                kv_cache,
                start=past,
                input_ids=batch.tokens,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
            ).logits
            t_fwd = time.perf_counter()
            dead = [False] * rows
            if constraint is not None:
                paths, bonus = [], []
                probs = None
                top_c = None
                if sampler is None:
                    k = min(constrained.GREEDY_CANDIDATES, vocab_size)
                    top_c = logits.topk(k, dim=-1).indices.cpu().numpy()
                else:
                    probs = sampler.warp_probs(logits.float(), temperature, top_k, top_p)
                for b in range(rows):
                    n = trees[b].num_nodes
                    path, y, cstates[b] = constrained.verify_constrained(
                        trees[b],
                        node_states[b],
                        constraint,
                        logits[b, :n],
                        top_c[b, :n] if top_c is not None else None,
                        probs[b, :n] if probs is not None else None,
                        lambda: int(torch.randint(2**62, (1,), generator=gen)),
                    )
                    paths.append(path)
                    dead[b] = y is None
                    bonus.append(-1 if y is None else y)
            elif sampler is None:
                paths, bonus = ops.verify_greedy(batch, logits.argmax(-1))
            else:
                probs = sampler.warp_probs(logits.float(), temperature, top_k, top_p)
                coins = sampler.draw_coins(gen, (rows, batch.tokens.shape[1], 2))
                paths, bonus = ops.verify_stochastic(batch, trees, probs, coins)
            if static_len is None:
                new_kv, past = ops.compact_kv(kv.kv_tensors(kv_cache), past, valid, paths)
                kv.set_kv_tensors(kv_cache, new_kv)
            else:
                past = ops.compact_kv_in_place(kv.kv_tensors(kv_cache), past, valid, paths)
                kv.set_length(kv_cache, past)
            top = logits.topk(topk, dim=-1).indices.to(torch.int32).cpu().numpy() if want_topk else None

            stepped_done = list(done)
            for b in range(rows):
                if done[b]:
                    continue
                path = paths[b]
                valid[b] += len(path)
                emitted = [int(trees[b].tokens[i]) for i in path[1:]]
                if not dead[b]:
                    emitted.append(int(bonus[b]))
                elif not emitted:  # a dead end with nothing to emit: the row is finished
                    done[b] = True
                    out.accepted_lengths[b].append(0)
                    continue
                # Cut at EOS (kept) and at max_new_tokens.
                room = max_new_tokens - len(out.sequences[b])
                for i, t in enumerate(emitted):
                    if t in eos:
                        emitted = emitted[: i + 1]
                        break
                emitted = emitted[:room]
                seqs[b].extend(emitted)
                out.sequences[b].extend(emitted)
                out.accepted_lengths[b].append(len(emitted))
                if emitted[-1] in eos or len(out.sequences[b]) >= max_new_tokens or dead[b]:
                    done[b] = True
                if draft is not None:
                    # A pruned tree no longer matches the proposal node for node: Token
                    # Recycling then skips its update for this step.
                    topk_b = top[b, : trees[b].num_nodes] if top is not None and not pruned[b] else None
                    draft.accept(rids[b], emitted, topk_ids=topk_b)
                if streamer is not None:
                    streamer.put(torch.tensor(emitted))
            step_end = time.perf_counter()
            out.steps += 1
            out.budgets.append(size)
            out.draft_seconds += t_draft - step_start
            out.forward_seconds += t_fwd - t_draft
            out.decode_seconds += step_end - step_start
            if auto is not None:
                live = [list(paths[b]) for b in range(rows) if not stepped_done[b]]
                tokens = auto.counterfactual(size, auto.candidates, live)
                auto.record(size, step_end - step_start, tokens, nodes=int(batch.tokens.shape[1]))
        if auto is not None:
            out.budget_note = auto.explain()
    finally:
        linears.close()
        if draft is not None:
            for rid in rids:
                draft.stop(rid)
        if streamer is not None:
            streamer.end()
    return out
