"""Lossless speculative generation on a transformers causal LM (``fastdec.generate``).

Each step drafts one token tree per row, scores every tree in one forward pass (a 4D additive
mask and explicit position ids, no model patching), keeps the longest path the target agrees
with (greedy), or applies the lossless point-mass rule for deterministic drafts (sampling,
docs/design.md#stochastic), compacts the accepted K/V entries in place and drops the rest. The recipe and
its pitfalls are in docs/design.md#kv-recipe. The parts: :mod:`.rows` (per-row state), :mod:`.verifiers`
(greedy / stochastic / constrained, chosen once), :mod:`.kv_state` (the cache and its
compaction), :mod:`.registry` (drafters and budget controllers kept per model) and
:mod:`.budget` (``budget="auto"``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch

from fastdec._core import BaseDrafter, DraftBatch, TokenTree
from fastdec.drafters import DEFAULT_DRAFTER, DRAFTER_NAMES
from fastdec.tree_batch import pad_trees

from . import arguments
from . import cache as kv
from .budget import AutoBudget
from .kv_state import TreeCache
from .linear_choice import cpu_linears
from .output import GenerateOutput
from .registry import DEFAULT_REGISTRY, DrafterRegistry, make_drafter
from .rows import Row
from .shadow import ShadowDrafts
from .step_ops import step_ops
from .verifiers import Verdict, choose_verifier

__all__ = ["DEFAULT_DRAFTER", "DRAFTER_NAMES", "GenerateOutput", "generate", "make_drafter"]


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
    registry: DrafterRegistry = DEFAULT_REGISTRY,
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
    ``registry``: where drafters built from a name and ``budget="auto"`` controllers are kept
    per model (pass a fresh :class:`fastdec.generation.registry.DrafterRegistry` for a cold start).
    """
    arguments.check_settings(
        max_new_tokens=max_new_tokens, temperature=temperature, cache=cache, constraint=constraint
    )
    prompts = arguments.prompts(input_ids)
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"a streamer needs batch size 1, got {len(prompts)} prompts")
    layout = kv.check_supported(model)
    vocab_size = arguments.vocab_size(model)
    if constraint is not None and constraint.vocab_size != vocab_size:
        raise ValueError(
            f"the constraint's vocabulary has {constraint.vocab_size} tokens, the model {vocab_size}"
        )
    arguments.check_tokens(prompts, vocab_size)
    draft = registry.drafter(model, drafter, vocab_size)
    sizes = _budget(registry, model, draft, budget)
    eos = arguments.eos_set(eos_token_id)
    rows = [Row(list(p), max_new_tokens, eos) for p in prompts]
    ops = step_ops(next(model.parameters()).device)
    verifier = choose_verifier(
        ops,
        rows=len(rows),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        constraint=constraint,
    )
    # A row that stops mid-path may hold up to one tree of extra entries, and the next tree of
    # the other rows goes after it.
    largest = max(sizes.candidates)
    static_len = max(map(len, prompts)) + max_new_tokens + 2 * largest if cache == "static" else None
    out = GenerateOutput(sequences=[r.new for r in rows], accepted_lengths=[r.accepted_lengths for r in rows])
    with ExitStack() as cleanup:
        _start(cleanup, draft, rows, streamer)
        t0 = time.perf_counter()
        kv_cache = TreeCache(model, prompts, ops, static_len, layout)
        first = kv_cache.prefill()
        topk = _topk_width(draft, vocab_size)
        # The first token comes from the prefill's logits, as model.generate's does: a step of
        # one-node trees whose roots (the prompts' last tokens) are cached already.
        trees = _draft(None, rows, 1)
        pruned = verifier.prune(trees)
        batch = pad_trees(DraftBatch(trees), kv_cache.device)
        _settle(rows, trees, pruned, verifier.verify(batch, trees, first), first, topk, draft, streamer)
        out.prefill_seconds = time.perf_counter() - t0
        linears = cleanup.enter_context(cpu_linears(model))
        # while auto runs plain decoding, shadow trees keep the tree sizes' gains measured
        # (greedy and unconstrained only: there the tokens that follow are a tree's verdict)
        auto = sizes if isinstance(sizes, AutoBudget) else None
        greedy = temperature == 0 and constraint is None
        shadow = ShadowDrafts() if auto is not None and greedy and draft is not None and not topk else None
        while not all(r.done for r in rows):
            t_start = time.perf_counter()
            size = sizes.next()
            trees = _draft(draft, rows, size)
            if shadow is not None and auto is not None and draft is not None and size == 1:
                shadow.propose(draft, rows, auto.shadow_size())
            pruned = verifier.prune(trees)
            t_draft = time.perf_counter()
            batch = pad_trees(DraftBatch(trees), kv_cache.device)  # padded in Rust
            # the fastest linear path for this many rows (measured the first time: left out of
            # the step's time, which the tree-size controller reads)
            paused = linears.use(batch.tokens.numel())
            logits = kv_cache.score(batch)
            t_fwd = time.perf_counter()
            verdict = verifier.verify(batch, trees, logits)
            live = [not r.done for r in rows]
            kv_cache.compact(verdict.paths, live)
            _settle(rows, trees, pruned, verdict, logits, topk, draft, streamer)
            t_end = time.perf_counter()
            out.steps += 1
            out.budgets.append(size)
            out.draft_seconds += t_draft - t_start
            out.forward_seconds += t_fwd - t_draft
            out.decode_seconds += t_end - t_start
            out.calibration_seconds += paused
            if shadow is not None and auto is not None:
                for budget, nodes, path in shadow.resolve(rows):
                    auto.observe(budget, auto.counterfactual(budget, auto.candidates, [path]), nodes)
            paths = [list(p) for p, was_live in zip(verdict.paths, live, strict=True) if was_live]
            sizes.record(
                size,
                t_end - t_start - paused,
                sizes.counterfactual(size, sizes.candidates, paths),
                int(batch.tokens.shape[1]),
            )
        out.linear_note = linears.note()
        out.budget_note = "\n".join(n for n in (sizes.explain(), out.linear_note) if n)
    return out


def _settle(
    rows: list[Row],
    trees: list[TokenTree],
    pruned: list[bool],
    verdict: Verdict,
    logits: torch.Tensor,
    topk: int,
    draft: BaseDrafter | None,
    streamer: Any,
) -> None:
    """Emits each live row's accepted tokens and bonus token, and tells the drafter and the
    streamer."""
    top = logits.topk(topk, dim=-1).indices.to(torch.int32).cpu().numpy() if topk else None
    for b, row in enumerate(rows):
        if row.done:
            continue
        path, tree = verdict.paths[b], trees[b]
        emitted = row.emit([int(tree.tokens[i]) for i in path[1:]], int(verdict.bonus[b]), verdict.dead[b])
        if not emitted:  # a dead end with nothing to emit
            continue
        if draft is not None:
            # A pruned tree no longer matches the proposal node for node: a learning drafter
            # then skips its update for this step.
            feedback = top[b, : tree.num_nodes] if top is not None and not pruned[b] else None
            draft.accept(row.request_id, emitted, topk_ids=feedback)
        if streamer is not None:
            streamer.put(torch.tensor(emitted))


class _FixedBudget:
    """``budget=N``: the same tree size every step (the :class:`AutoBudget` interface)."""

    def __init__(self, size: int) -> None:
        self.candidates = (size,)

    def next(self) -> int:
        return self.candidates[0]

    def counterfactual(
        self, size: int, candidates: Sequence[int], paths: list[list[int]]
    ) -> dict[int, float]:
        return {}

    def record(self, size: int, seconds: float, tokens: dict[int, float], nodes: int) -> None:
        pass

    def explain(self) -> str:
        return ""


def _budget(
    registry: DrafterRegistry, model: Any, draft: BaseDrafter | None, budget: str | int
) -> AutoBudget | _FixedBudget:
    if budget == "auto":
        # nothing to draft: plain decoding
        return registry.auto_budget(model, draft) if draft is not None else _FixedBudget(1)
    return _FixedBudget(arguments.check_budget(budget))


def _start(cleanup: ExitStack, draft: BaseDrafter | None, rows: list[Row], streamer: Any) -> None:
    """Starts every row's request (stopped on exit, however the call ends) and the streamer."""
    if draft is not None:
        for row in rows:
            draft.start(row.request_id, row.tokens)
            cleanup.callback(draft.stop, row.request_id)
    if streamer is not None:
        streamer.put(torch.tensor(rows[0].tokens))
        cleanup.callback(streamer.end)


def _draft(draft: BaseDrafter | None, rows: list[Row], size: int) -> list[TokenTree]:
    """One tree per row: the live rows' proposals in one ``propose_batch`` call (parallel, GIL
    released); a finished row, or a step without drafting, gets its last token alone."""
    live = [b for b, row in enumerate(rows) if not row.done]
    if draft is None or size == 1 or not live:
        return [TokenTree.chain([row.last]) for row in rows]
    proposed = iter(draft.propose_batch([rows[b].request_id for b in live], [size] * len(live)))
    return [TokenTree.chain([row.last]) if row.done else next(proposed) for row in rows]


def _topk_width(draft: BaseDrafter | None, vocab_size: int) -> int:
    """How many of the target's top tokens per node the drafter learns from (0: none), as its
    ``wants_topk()`` says (Token Recycling, or a hybrid with a Token Recycling part)."""
    wants = getattr(draft, "wants_topk", None)
    return min(int(wants() or 0), vocab_size) if wants is not None else 0
