"""The vLLM ``custom_class`` proposer's per-step path as it was before the draft session: a
Python request tracker that hashes every row's whole context (``python_tracker``), per-row
Python around one ``propose_batch`` call, and the Python draft-length controller
(``python_length``). Kept only as the side-by-side baseline of ``benches/session_step.py``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from python_length import DraftLength, chain_confidences
from python_tracker import RequestTracker


class PythonProposer:
    """``FastdecProposer.propose`` before the session (same settings, same drafts)."""

    def __init__(self, drafter: Any, k: int, max_model_len: int, *, tree_budget: int, adaptive: bool) -> None:
        self.drafter = drafter
        self.k = k
        self.max_model_len = max_model_len
        self.tree_budget = tree_budget
        self.tracker = RequestTracker(drafter, max_gap=k + 1 + 8, grace_steps=4, max_requests=1024)
        self.length = DraftLength(k, enabled=adaptive)
        self._last_call: float | None = None
        self._last_drafts: list[int] = []

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: npt.ArrayLike,
        token_ids_cpu: npt.ArrayLike,
    ) -> list[list[int]]:
        start = time.perf_counter()
        counts = np.asarray(num_tokens_no_spec)
        rows = np.asarray(token_ids_cpu)
        matches = self.tracker.step(sampled_token_ids, counts, rows)
        emitted = 0
        for m in matches:
            if m is not None and not m.is_new:
                emitted += len(m.new_tokens)
                if m.previous_draft:
                    self.length.observe(m.previous_draft, m.previous_confidence, m.new_tokens.tolist())
        if self._last_call is not None:
            self.length.observe_step(self._last_drafts, start - self._last_call, emitted)
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        todo = []
        for m in matches:
            if m is None or not len(sampled_token_ids[m.row]):
                continue
            room = min(self.k, self.max_model_len - int(counts[m.row]))
            if room > 0:
                todo.append((m, room))
        if todo:
            budgets = np.full(len(todo), self.tree_budget, dtype=np.int32)
            trees = self.drafter.propose_batch([m.request.request_id for m, _ in todo], budgets)
            chains = []
            for b, (m, room) in enumerate(todo):
                tree = trees[b]
                if tree.num_nodes > 1:
                    nodes = tree.chain_view()[: room + 1]
                    chains.append((m, tree, nodes, chain_confidences(tree, nodes.tolist())))
            keeps = self.length.cut_batch([conf for *_, conf in chains])
            for (m, tree, nodes, confidence), keep in zip(chains, keeps, strict=True):
                draft = tree.tokens[nodes[1 : keep + 1]].tolist()
                drafts[m.row] = draft
                m.request.draft, m.request.draft_confidence = draft, confidence[:keep]
        self._last_drafts = [len(d) for d in drafts]
        self._last_call = start
        return drafts
