"""The vLLM 0.34 speculator: fastdec's draft session behind vLLM's ``BaseSpeculator``.

vLLM's model runner builds it (``init_speculator``) for the methods
:mod:`fastdec.integrations.vllm_plugin` registers, and calls :meth:`FastdecSpeculator.propose`
once per engine step for the whole batch. The speculator is a translation; the
:class:`fastdec.DraftSession` owns every request (the same session the ``custom_class``
proposers of :mod:`fastdec.integrations.vllm` use):

* **Requests by id**: vLLM passes each batch row's request id (``input_batch.req_ids``) and
  its row in the request-state table (``idx_mapping``); the session is keyed by the id, so no
  row is fingerprinted, and it reads each row in place in the table's host copy
  (``req_states.all_token_ids``, pinned host memory under UVA: ``prefer_dense_token_history``
  is off), feeding the drafter only the tokens new to the request since the last step.
* **One sync a step**: the number of tokens each row emitted (``num_sampled``) and each
  request's length (``total_len``) live on the device; one ``torch.stack(...).cpu()`` of
  ``2 x num_reqs`` int32 brings both to the host. It also orders the host read after the
  step's writes of the sampled tokens (same stream), so the host copy is current. Then one
  Rust call (GIL released) drafts every row, and one copy returns ``[num_reqs, K]`` drafts.
* **vLLM's layout**: ``K`` tokens a row, ``K = num_speculative_tokens`` of the call (vLLM may
  vary it with the batch size); a short or missing draft is filled with the row's last
  token, as vLLM's ``ngram`` fills it (verified and rejected like any draft). Columns past
  ``K`` are vLLM's to mask. A draft never runs past ``max_model_len``. ``dummy_run`` (warm-up
  and profiling) returns without touching the session.
* **Finished requests** (``on_requests_finished``, before vLLM frees their rows): the last
  step's tokens are fed, then the requests are finished, which is when a trie adds their
  outputs to its shared memory. ``reset_state`` (after vLLM's warm-up requests) starts a
  fresh drafter and session, so warm-up text is not remembered.

Where vLLM keeps the token history on the device without a host view (no UVA, e.g. NVIDIA
Confidential Computing), the rows of the batch are copied to the host each step: correct, but
O(context) a step; a warning says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from vllm.v1.worker.gpu.spec_decode.speculator import (  # type: ignore[import-not-found, unused-ignore]
    BaseSpeculator,
)

from fastdec.integrations.vllm import FastdecProposer

logger = logging.getLogger(__name__)


class FastdecSpeculator(BaseSpeculator):  # type: ignore[misc]
    """vLLM 0.34's speculator interface over a fastdec drafter and draft session.

    Args:
        vllm_config: vLLM's ``VllmConfig`` (the speculative config names the method and
            carries ``speculator_options``).
        device: where vLLM wants the drafts.
        req_states: vLLM's ``RequestState`` (token history and lengths).
    """

    def __init__(self, vllm_config: Any, device: torch.device, req_states: Any) -> None:
        self.vllm_config = vllm_config
        self.device = device
        self.req_states = req_states
        self.spec = vllm_config.speculative_config
        self.config_class = type(self.spec.speculator_config)
        #: ``K``: the most draft tokens a row (vLLM's ``num_speculative_tokens``)
        self.num_speculative_steps = int(self.spec.num_speculative_tokens)
        self.max_num_reqs = int(vllm_config.scheduler_config.max_num_seqs)
        self.proposer: FastdecProposer = self.config_class.build_proposer(vllm_config, self.spec)
        self.drafts = torch.zeros(
            (self.max_num_reqs, self.num_speculative_steps), dtype=torch.int64, device=device
        )
        self._warned_copy = False

    @property
    def session(self) -> Any:
        """The :class:`fastdec.DraftSession` that owns the requests."""
        return self.proposer.session

    @property
    def max_model_len(self) -> int:
        """The model's length limit (vLLM may lower it after start: read it each step)."""
        return int(self.vllm_config.model_config.max_model_len)

    def init_cudagraph_manager(self, cudagraph_mode: Any) -> None:
        """Nothing to capture: drafting runs on the host."""

    def capture(self) -> None:
        """Nothing to capture: drafting runs on the host."""

    def _history(self, slots: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token rows to read and which row holds each request: the host view of vLLM's
        token history ``[max_num_reqs, max_model_len]`` (in place) and ``slots``, or, without
        a host view, the requests' rows copied (``[len(slots), max(lengths)]``) and their order."""
        history = self.req_states.all_token_ids
        uva = getattr(history, "_uva_buf", None)
        if uva is not None:
            return np.asarray(uva.np), slots
        if history.gpu.device.type == "cpu":
            return np.asarray(history.gpu.numpy()), slots
        if not self._warned_copy:
            logger.warning("fastdec: vLLM's token history has no host view here; copying rows each step")
            self._warned_copy = True
        width = max(int(lengths.max(initial=1)), 1)
        index = torch.from_numpy(np.asarray(slots, dtype=np.int64)).to(history.gpu.device)
        rows = np.ascontiguousarray(history.gpu[index, :width].cpu().numpy())
        return rows, np.arange(len(slots))

    def propose(
        self,
        input_batch: Any,
        attn_metadata: Any,
        slot_mappings: Any,
        last_hidden_states: Any,
        aux_hidden_states: Any,
        num_sampled: torch.Tensor,
        num_rejected: torch.Tensor,
        last_sampled: torch.Tensor,
        next_prefill_tokens: Any,
        temperature: Any,
        seeds: Any,
        dp_sync_state: Any = None,
        dummy_run: bool = False,
        skip_attn_for_dummy_run: bool = False,
        mm_inputs: Any = None,
        is_profile: bool = False,
        num_speculative_tokens: int | None = None,
    ) -> torch.Tensor:
        """``[num_reqs, num_speculative_tokens]`` int64 drafts on the device (see the module)."""
        n = int(input_batch.num_reqs)
        if dummy_run or n == 0:
            return self.drafts[:n]
        k = self.num_speculative_steps if num_speculative_tokens is None else int(num_speculative_tokens)
        k = max(0, min(k, self.num_speculative_steps))
        if k == 0:
            return self.drafts[:n]
        # the one device-to-host copy of the step: tokens emitted and request lengths
        host = torch.stack(
            (
                num_sampled[:n].to(torch.int32),
                self.req_states.total_len.gpu[input_batch.idx_mapping[:n]].to(torch.int32),
            )
        ).cpu()
        sampled, lengths = host.numpy()
        history, slots = self._history(np.asarray(input_batch.idx_mapping_np[:n]), lengths)
        drafts = self.session.step(
            history,
            lengths,
            sampled,
            ids=list(input_batch.req_ids[:n]),
            slots=slots,
            width=k,
            max_len=self.max_model_len,
            now=time.perf_counter(),
        )
        self.drafts[:n, :k].copy_(torch.from_numpy(drafts), non_blocking=False)
        if self.proposer.stats_file and self.session.stats()["steps"] % 32 == 0:
            self.proposer.write_stats()
        return self.drafts[:n]

    def on_requests_finished(self, finished_req_ids: set[str]) -> None:
        """Feeds the finished requests their last step's tokens, then finishes them (their
        outputs reach a trie's shared memory). vLLM calls this before it frees their rows."""
        states = self.req_states
        ids = sorted(r for r in finished_req_ids if r in states.req_id_to_index)
        if ids:
            slots = np.array([states.req_id_to_index[r] for r in ids], dtype=np.int64)
            index = torch.from_numpy(slots).to(states.total_len.gpu.device)
            lengths = states.total_len.gpu[index].to(torch.int32).cpu().numpy()
            history, rows = self._history(slots, lengths)
            # emitted nothing new to draft from: the rows are fed, nothing is drafted
            self.session.step(
                history, lengths, np.zeros(len(ids), dtype=np.int32), ids=ids, slots=rows, width=1
            )
        self.session.finish(sorted(finished_req_ids))

    def reset_state(self) -> None:
        """Forgets what was learnt across requests (vLLM calls this after its warm-up): a
        fresh drafter and session."""
        self.proposer = self.config_class.build_proposer(self.vllm_config, self.spec)

    def stats(self) -> dict[str, Any]:
        """The proposer's statistics (:meth:`fastdec.integrations.vllm.FastdecProposer.stats`)."""
        return self.proposer.stats()
