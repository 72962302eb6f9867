"""Tree speculation on llama.cpp: one ``llama_decode`` per step verifies a whole fastdec tree.

llama-cpp-python's own speculative path (``Llama(draft_model=...)``) verifies a linear draft
in its Python loop with ``logits_all`` and copies full-vocabulary logits for every token, which
on a CPU makes it slower than plain decoding. :class:`FastdecLlama` is a ``Llama`` whose greedy
``generate`` drives llama.cpp through the low-level API instead:

* **Tree attention from sequence ids.** llama.cpp masks attention per sequence: a token sees the
  cached cells of its (first) sequence id at positions up to its own. Every root-to-leaf path of
  the draft tree gets a sequence id of its own (1..L), the committed context is shared into each
  of them (``llama_memory_seq_cp``, which in a unified KV cache only tags cells), and every tree
  node is in the batch once, at position ``n_past + depth``, tagged with the ids of the paths
  through it. A node then attends to the context and its ancestors, nothing else: SpecInfer's
  tree attention (Miao et al. 2024) without a custom mask. Coupled sequences need
  ``kv_unified``, so the context is made with it.
* **Logits only where verification needs them**: one row per tree node, read in place (no copy)
  and reduced to an argmax per node; :meth:`fastdec.TokenTree.verify_greedy` walks the tree.
* **KV compaction by sequence removal**: the accepted path's cells are tagged back into sequence
  0 (``seq_cp``) and every path id is removed (``seq_rm``), which frees the rejected nodes.
* **Requests through the draft session**: one :class:`fastdec.DraftSession` per instance owns
  the drafter's requests, as in every other adapter; each step hands it only the tokens the last
  step emitted (at their position) and gets the tree for the size chosen below; a generation's
  end finishes its request, which is when a trie adds the output to its shared memory.
* **Tree size from the step clock** (``tree_budget="auto"``, the default): on a CPU a batch of
  ``n`` tokens costs far more than one (with 2 threads and SmolLM2 Q4_1, 16 tokens cost about 7
  single-token steps: the weights stay in cache, so the matmuls are compute-bound, and Q4_1 has no
  batched GEMM kernel on x86), so a fixed large tree loses to plain decoding even at 2-5 tokens
  per step. :class:`fastdec.generation.budget.AutoBudget` (the controller of
  ``fastdec.generate(budget="auto")``) measures tokens per step at every size counterfactually and
  seconds per step on a cost line, and runs the size with the best tokens per second, size 1 (plain
  decoding) included, so the loop does not lose where no tree pays. (Not the session's
  ``DraftLength``, which prices rows of a batched engine on a cost line; a tree loop's forward
  cost per node count is not a line on a CPU: see ``fastdec.DraftLength``.)

Greedy verification is exact: every emitted token is the argmax of the logits the verifying
forward computed for its parent. Whether that equals plain decoding token for token depends on
whether llama.cpp's arithmetic depends on the batch shape; with quantized weights it does
(batched and single-token matmuls round differently), with F32 weights it does not (tested).

Sampling (``temperature > 0``), grammars, logits processors, penalties and stopping criteria
fall back to ``Llama.generate`` (plain decoding), so every ``Llama`` feature still works.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from fastdec._core import BaseDrafter, DraftSession, TokenTree
from fastdec._optional import require
from fastdec.generation.budget import AutoBudget
from fastdec.integrations.llama_cpp import MAX_TREE, make_drafter

llama_cpp = require("llama_cpp")
_internals = require("llama_cpp._internals")
_LlamaBase: Any = llama_cpp.Llama


class FastdecLlama(_LlamaBase):  # type: ignore[misc]
    """A ``llama_cpp.Llama`` whose greedy generation verifies fastdec draft trees.

    Args:
        model_path: the GGUF file.
        drafter: ``"trie"`` (default), ``"pld"``, ``"hybrid"``, ``"none"`` or a stateful fastdec
            drafter. A trie keeps what earlier requests generated (cross-request memory).
        tree_budget: draft-tree nodes per step, root included (2..64), or ``"auto"`` (default):
            the size with the best measured tokens per second, plain decoding included, learnt
            across requests by one controller per instance (:attr:`auto_budget`).
        drafter_options: keyword arguments for the drafter a name builds.
        **kwargs: ``Llama`` arguments (``n_ctx``, ``n_threads``, ``n_batch``, ``verbose`` ...).

    Raises:
        ValueError: a bad drafter name or budget, or a GGUF that does not exist (named).

    ``create_completion`` / ``create_chat_completion`` / the OpenAI server use it unchanged:
    they call :meth:`generate`.
    """

    # set by llama_cpp.Llama.__init__ (declared for the type checker)
    _ctx: Any
    n_tokens: int

    def __init__(
        self,
        model_path: str,
        *,
        drafter: str | BaseDrafter = "trie",
        tree_budget: int | str = "auto",
        drafter_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import os

        auto = tree_budget == "auto"
        if not auto and (
            isinstance(tree_budget, bool)
            or not isinstance(tree_budget, int)
            or not 2 <= tree_budget <= MAX_TREE
        ):
            raise ValueError(f"tree_budget = {tree_budget!r}: must be 'auto' or an int in 2..{MAX_TREE}")
        if not os.path.isfile(model_path):
            raise ValueError(f"GGUF model_path = {model_path!r}: no such file")
        self.fastdec_drafter = (
            make_drafter(drafter, **(drafter_options or {})) if isinstance(drafter, str) else drafter
        )
        #: the one owner of this instance's requests (the draft session every adapter uses):
        #: it feeds the drafter only each step's new tokens and finishes a request when its
        #: generation ends (its output then reaches a trie's shared memory)
        self.session: DraftSession | None = (
            DraftSession(self.fastdec_drafter, MAX_TREE - 1, tree_budget=MAX_TREE, adaptive=False)
            if self.fastdec_drafter is not None
            else None
        )
        self.drafter_name = drafter if isinstance(drafter, str) else type(drafter).__name__
        self.tree_budget = (MAX_TREE if auto else int(tree_budget)) if self.fastdec_drafter is not None else 1
        #: the tree-size controller (``tree_budget="auto"`` with a drafter), else None
        self.auto_budget: AutoBudget | None = (
            AutoBudget(candidates=tuple(c for c in AutoBudget().candidates if c <= MAX_TREE))
            if auto and self.fastdec_drafter is not None
            else None
        )
        kwargs.setdefault("n_batch", 512)
        kwargs["n_ubatch"] = max(int(kwargs.get("n_ubatch", 512)), self.tree_budget)
        super().__init__(model_path, **kwargs)
        # Coupled sequences (a token in several paths) need a unified KV cache: make the
        # context again with it (the first one is freed before the second is allocated).
        self._ctx.close()
        self.context_params.n_seq_max = MAX_TREE + 1
        self.context_params.kv_unified = True
        self._ctx = self._stack.enter_context(
            contextlib.closing(
                _internals.LlamaContext(model=self._model, params=self.context_params, verbose=self.verbose)
            )
        )
        self._tree_batch = self._stack.enter_context(
            contextlib.closing(
                _internals.LlamaBatch(
                    n_tokens=max(self.n_batch, MAX_TREE), embd=0, n_seq_max=MAX_TREE + 1, verbose=self.verbose
                )
            )
        )
        self._request_ids = itertools.count()
        #: steps, tokens emitted, draft nodes verified and accepted, seconds decoding
        self.spec_stats = {"steps": 0, "emitted": 0, "drafted": 0, "accepted": 0, "requests": 0}
        #: per step of the last generation, when ``record_steps`` is set: the tree verified,
        #: the argmax of the logits at each of its nodes, and the tokens emitted
        self.record_steps = False
        self.recorded: list[tuple[TokenTree, np.ndarray, list[int]]] = []

    # -- llama.cpp calls --------------------------------------------------------------------

    def _decode(
        self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[Sequence[int]], out: bool
    ) -> None:
        b = self._tree_batch.batch
        n = len(tokens)
        b.n_tokens = n
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            ids = seqs[i]
            b.n_seq_id[i] = len(ids)
            for j, s in enumerate(ids):
                b.seq_id[i][j] = s
            b.logits[i] = out
        rc = llama_cpp.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (KV cache full? n_ctx = {self._n_ctx})")

    def _prefill(self, tokens: Sequence[int], start: int) -> None:
        """Decodes ``tokens`` at positions ``start..`` into sequence 0, no logits."""
        step = self.n_batch
        for off in range(0, len(tokens), step):
            chunk = tokens[off : off + step]
            self._decode(chunk, range(start + off, start + off + len(chunk)), [(0,)] * len(chunk), False)

    def _seq_rm(self, seq: int, p0: int, p1: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq, p0, p1)

    def _verify(self, tree: Any, n_past: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Decodes ``tree`` (root = the last emitted token, not yet cached) after ``n_past``
        cached tokens and keeps the accepted path in sequence 0.

        Returns:
            ``(emitted, nodes, logits)``: the accepted draft tokens then the bonus token, the
            accepted path's node indices (root first), and the logits that chose each emitted
            token (a copy of the accepted path's rows).
        """
        n = tree.num_nodes
        if n == 1:  # no draft: a plain decoding step, straight into sequence 0
            self._decode([int(tree.root_token)], [n_past], [(0,)], True)
            row0 = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx.ctx), shape=(1, self._n_vocab))
            best = int(row0[0].argmax())
            if self.record_steps:
                self.recorded.append((tree, np.array([best], dtype=np.int32), [best]))
            return [best], np.zeros(1, dtype=np.int32), row0.copy()
        paths = tree.leaf_paths()
        seqs: list[list[int]] = [[] for _ in range(n)]
        for r, path in enumerate(paths):
            for node in path:
                if node < 0:
                    break
                seqs[node].append(r + 1)
        mem = self._ctx.memory
        for r in range(len(paths)):
            llama_cpp.llama_memory_seq_cp(mem, 0, r + 1, -1, -1)
        depth = tree.depth
        self._decode(tree.tokens.tolist(), (n_past + depth).tolist(), seqs, True)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx.ctx), shape=(n, self._n_vocab))
        argmax = logits.argmax(axis=1).astype(np.int32)
        nodes, accepted, bonus = tree.verify_greedy(argmax)
        last = int(nodes[-1])
        row = next(r for r, path in enumerate(paths) if path[depth[last]] == last)
        # the accepted nodes (root included) back into sequence 0, then every path id dropped
        llama_cpp.llama_memory_seq_cp(mem, row + 1, 0, n_past, n_past + accepted + 1)
        for r in range(len(paths)):
            self._seq_rm(r + 1, -1, -1)
        emitted = [*tree.tokens[nodes[1:]].tolist(), int(bonus)]
        if self.record_steps:
            self.recorded.append((tree, argmax, emitted))
        return emitted, nodes, logits[nodes].copy()

    # -- generation ---------------------------------------------------------------------------

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Generator[int, Any, None]:
        """``Llama.generate``; greedy calls without grammar, logits processors or penalties run
        the tree loop (stopping criteria included: chat formats add one), everything else plain
        decoding."""
        greedy = kwargs.get("temp", args[4] if len(args) > 4 else 0.8) == 0.0
        plain_only = any(
            kwargs.get(k) not in (None, d) and not (isinstance(kwargs.get(k), list) and not kwargs.get(k))
            for k, d in (
                ("grammar", None),
                ("logits_processor", None),
                ("repeat_penalty", 1.0),
                ("frequency_penalty", 0.0),
                ("presence_penalty", 0.0),
                ("mirostat_mode", 0),
            )
        )
        if not greedy or plain_only or len(args) > 5 or not len(tokens):
            yield from super().generate(tokens, *args, **kwargs)
            return
        stop = kwargs.get("stopping_criteria") or None
        yield from self._tree_generate(list(tokens), reset=bool(kwargs.get("reset", True)), stop=stop)

    def _tree_generate(
        self, tokens: list[int], *, reset: bool, stop: Any = None
    ) -> Generator[int, Any, None]:
        # KV prefix reuse, as Llama.generate does: keep the cached prefix the prompt shares,
        # never its last token (it is the first step's root).
        keep = 0
        if reset:
            cached = self.input_ids[: self.n_tokens]
            limit = min(len(cached), len(tokens) - 1)
            while keep < limit and cached[keep] == tokens[keep]:
                keep += 1
        else:
            keep = min(self.n_tokens, len(tokens) - 1)
        self._seq_rm(-1, keep, -1)
        self.n_tokens = keep
        self._requires_eval = True
        self._prefill(tokens[keep:-1], keep)
        self.input_ids[keep : len(tokens) - 1] = tokens[keep:-1]
        self.n_tokens = len(tokens) - 1
        self.recorded = []
        session = self.session
        req = [next(self._request_ids)]
        self.spec_stats["requests"] += 1
        root = tokens[-1]
        # what the session has not seen yet: the prompt (its last token emitted, as a root),
        # then each step's emitted tokens, at their positions in the request
        fresh, offset = tokens, 0
        stats = self.spec_stats
        auto = self.auto_budget
        try:
            while True:
                room = self._n_ctx - self.n_tokens
                if room <= 0:
                    return
                t0 = time.perf_counter()
                size = auto.next() if auto is not None else self.tree_budget
                budget = min(size, room)
                if session is not None:
                    tree = session.step_trees(
                        [fresh],
                        None,
                        [1 if offset == 0 else len(fresh)],
                        ids=req,
                        offsets=[offset],
                        budget=budget,
                    )[0]
                    offset += len(fresh)
                    if tree.root_token != root:  # a drafter that lost the context: no draft
                        tree = TokenTree([root], [-1])
                else:
                    tree = TokenTree([root], [-1])
                n0 = self.n_tokens
                emitted, nodes, logits = self._verify(tree, n0)
                accepted = len(emitted) - 1
                # committed: the root and the accepted drafts; the bonus token is the next root
                committed = [root, *emitted[:-1]]
                self.input_ids[self.n_tokens : self.n_tokens + len(committed)] = committed
                self.n_tokens += len(committed)
                stats["steps"] += 1
                stats["emitted"] += len(emitted)
                stats["drafted"] += tree.num_nodes - 1
                stats["accepted"] += accepted
                fresh = emitted
                if auto is not None:
                    # drafting, the forward and the KV bookkeeping: what a step at this size costs
                    per_size = auto.counterfactual(size, auto.candidates, [nodes.tolist()])
                    auto.record(size, time.perf_counter() - t0, per_size, nodes=tree.num_nodes)
                root = emitted[-1]
                if stop is not None:
                    # as Llama.generate asks: the tokens evaluated so far and the logits that
                    # chose the next one; a stop drops that token and ends the generation
                    for j, token in enumerate(emitted):
                        if stop(self.input_ids[: n0 + 1 + j], logits[j]):
                            return
                        yield token
                    continue
                yield from emitted
        finally:
            if session is not None:
                # the last step's tokens, then the end of the request (budget 1: no draft)
                if offset and fresh:
                    session.step_trees([fresh], None, [len(fresh)], ids=req, offsets=[offset], budget=1)
                session.finish(req)

    def close(self) -> None:
        """Frees the model and context (a no-op for an instance whose arguments were refused)."""
        if hasattr(self, "_stack"):
            super().close()

    def budget_note(self) -> str:
        """The tree size ``tree_budget="auto"`` runs and why, or the fixed size."""
        if self.auto_budget is None:
            return f"fixed tree budget: {self.tree_budget} nodes"
        return self.auto_budget.explain()

    def mean_accepted_tokens(self) -> float:
        """Tokens emitted per verifying step (1 + accepted drafts per step) so far."""
        s = self.spec_stats
        return s["emitted"] / s["steps"] if s["steps"] else float("nan")
