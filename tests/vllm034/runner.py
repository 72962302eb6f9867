"""What vLLM 0.34's model runner does around a speculator, with vLLM's own classes and kernels.

:class:`Runner` keeps vLLM's ``RequestState`` and calls, in the runner's order, per engine step:
``on_requests_finished`` then ``remove_request`` for finished requests; ``add_request`` +
``apply_staged_writes`` (vLLM's Triton write kernel) + the speculator's ``add_request`` for new
ones; verification of the last drafts against each request's known continuation (the stand-in
for the model: greedy, so a row emits its accepted draft prefix plus one token); vLLM's
``post_update`` kernel, which writes the emitted tokens into the token history and moves
``total_len``; an ``InputBatch`` with the step's request order; then ``propose`` with the step's
``K``, whose columns past ``K`` the runner masks with -1 as vLLM's does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from vllm.v1.worker.gpu.input_batch import InputBatch, InputBuffers, post_update
from vllm.v1.worker.gpu.spec_decode import init_speculator
from vllm.v1.worker.gpu.states import RequestState

CPU = torch.device("cpu")


class Runner:
    """vLLM 0.34's model runner around a speculator, step by step (see the module)."""

    def __init__(self, vllm_config: Any, *, dense: bool = False) -> None:
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_len = int(vllm_config.model_config.max_model_len)
        self.max_reqs = int(vllm_config.scheduler_config.max_num_seqs)
        self.req_states = RequestState(
            max_num_reqs=self.max_reqs,
            max_model_len=self.max_len,
            max_num_batched_tokens=self.max_reqs * (self.k + 1) * 4,
            num_speculative_steps=self.k,
            vocab_size=vllm_config.model_config.get_vocab_size(),
            device=CPU,
            use_dense_all_token_ids=dense or spec.speculator_config.prefer_dense_token_history,
        )
        self.speculator = init_speculator(vllm_config, CPU, self.req_states)
        self.buffers = InputBuffers(max_num_reqs=self.max_reqs, max_num_tokens=self.max_reqs * 8, device=CPU)
        #: each live request's whole text: prompt, then the model's continuation
        self.text: dict[str, list[int]] = {}
        self.prompt_len: dict[str, int] = {}
        #: each request's drafts from the last step (what verification checks)
        self.last_drafts: dict[str, list[int]] = {}

    def add(self, rid: str, prompt: list[int], continuation: list[int]) -> None:
        """A new request (the runner's ``add_requests``)."""
        self.req_states.add_request(
            req_id=rid,
            prompt_len=len(prompt),
            all_token_ids=prompt,
            num_computed_tokens=0,
            max_tokens=len(continuation),
        )
        self.req_states.apply_staged_writes()
        self.speculator.add_request(self.req_states.req_id_to_index[rid])
        self.text[rid] = [*prompt, *continuation]
        self.prompt_len[rid] = len(prompt)
        self.last_drafts[rid] = []

    def finish(self, ids: set[str]) -> None:
        """Finished requests (the runner's ``finish_requests``): the speculator hears first."""
        self.speculator.on_requests_finished(set(ids))
        for rid in sorted(ids):
            self.req_states.remove_request(rid)
            del self.text[rid], self.prompt_len[rid], self.last_drafts[rid]

    def length(self, rid: str) -> int:
        return int(self.req_states.total_len.gpu[self.req_states.req_id_to_index[rid]])

    def history(self, rid: str) -> list[int]:
        """The request's tokens as vLLM's token history holds them."""
        slot = self.req_states.req_id_to_index[rid]
        return self.req_states.all_token_ids.gpu[slot, : self.length(rid)].tolist()

    def done(self, rid: str) -> bool:
        return self.length(rid) >= min(len(self.text[rid]), self.max_len)

    def emitted(self, rid: str, prefilling: bool) -> list[int]:
        """Greedy verification of the request's last drafts: the accepted prefix plus one."""
        if prefilling:
            return []
        n = self.length(rid)
        truth = self.text[rid][n : min(len(self.text[rid]), self.max_len)]
        accepted = 0
        for d, t in zip(self.last_drafts[rid], truth, strict=False):
            if d != t:
                break
            accepted += 1
        return truth[: accepted + 1]

    def step(
        self,
        order: list[str],
        *,
        k: int | None = None,
        prefilling: frozenset[str] = frozenset(),
        dummy: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One engine step over ``order`` (batch rows); returns ``(drafts [n, K] as the runner
        keeps them, tokens each row emitted)``."""
        n = len(order)
        k = self.k if k is None else k
        slots = [self.req_states.req_id_to_index[r] for r in order]
        emitted = [self.emitted(r, r in prefilling) for r in order]
        sampled = torch.zeros((n, self.k + 1), dtype=torch.int64)
        for row, tokens in enumerate(emitted):
            sampled[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        num_sampled = torch.tensor([len(t) for t in emitted], dtype=torch.int32)
        num_rejected = torch.tensor(
            [len(self.last_drafts[r]) + 1 - len(t) if t else 0 for r, t in zip(order, emitted, strict=True)],
            dtype=torch.int32,
        )
        query_start = torch.zeros(n + 1, dtype=torch.int32)
        query_start[1:] = torch.cumsum(torch.tensor([len(self.last_drafts[r]) + 1 for r in order]), 0)
        idx = torch.tensor(slots, dtype=torch.int32)
        post_update(
            idx,
            self.req_states.num_computed_tokens.gpu,
            self.req_states.last_sampled_tokens,
            None,
            sampled,
            num_sampled,
            num_rejected,
            query_start,
            self.req_states.all_token_ids.gpu,
            self.req_states.total_len.gpu,
        )
        batch = dataclasses.replace(
            InputBatch.make_dummy(n, n, self.buffers),
            req_ids=list(order),
            idx_mapping=idx.to(torch.int64),
            idx_mapping_np=np.asarray(slots, dtype=np.intp),
        )
        drafts = self.speculator.propose(
            batch,
            None,
            None,
            None,
            None,
            num_sampled,
            num_rejected,
            self.req_states.last_sampled_tokens,
            self.req_states.next_prefill_tokens,
            None,
            None,
            dummy_run=dummy,
            num_speculative_tokens=k,
        ).clone()
        assert drafts.shape == (n, self.k)
        assert drafts.dtype == torch.int64
        if k < self.k:
            drafts[:, k:] = -1
        if not dummy:
            for row, rid in enumerate(order):
                self.last_drafts[rid] = drafts[row, :k].tolist()
        return drafts.numpy(), np.asarray([len(t) for t in emitted])
