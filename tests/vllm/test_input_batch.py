"""Request tracking driven by vLLM's own ``InputBatch`` (add_request, remove_request, condense,
swap_states), with the runner's bookkeeping of sampled tokens replicated: every row must map to
the same tracked request for the request's whole life, and finished requests must be stopped."""

from __future__ import annotations

import numpy as np
import torch
from fastdec.integrations.vllm import TrieProposer
from vllm import SamplingParams
from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch

MAX_REQS, MAX_LEN = 8, 256


def make_batch() -> InputBatch:
    return InputBatch(
        max_num_reqs=MAX_REQS,
        max_model_len=MAX_LEN,
        max_num_batched_tokens=MAX_REQS * MAX_LEN,
        device=torch.device("cpu"),
        vocab_size=1000,
        block_sizes=[16],
        max_num_blocks_per_req=[MAX_LEN // 16],
    )


def request(req_id: str, prompt: list[int]) -> CachedRequestState:
    return CachedRequestState(
        req_id=req_id,
        prompt_token_ids=prompt,
        mm_features=[],
        sampling_params=SamplingParams(temperature=0.0),
        generator=None,
        block_ids=([],),
        num_computed_tokens=len(prompt),
        output_token_ids=[],
    )


def emit(batch: InputBatch, req: CachedRequestState, tokens: list[int]) -> None:
    """What the runner does with a step's sampled tokens (``_bookkeeping_sync``)."""
    i = batch.req_id_to_index[req.req_id]
    start = int(batch.num_tokens_no_spec[i])
    batch.token_ids_cpu[i, start : start + len(tokens)] = tokens
    batch.num_tokens_no_spec[i] = start + len(tokens)
    req.output_token_ids.extend(tokens)


def test_tracker_through_vllm_input_batch() -> None:
    rng = np.random.default_rng(0)
    batch = make_batch()
    proposer = TrieProposer(num_speculative_tokens=4, max_model_len=MAX_LEN, grace_steps=2)
    live: dict[str, CachedRequestState] = {}
    left: dict[str, int] = {}
    sampled: dict[str, list[int]] = {}
    tracked: dict[str, int] = {}
    total = 300
    started = 0
    finished: list[str] = []
    while started < total or live:
        # the order of GPUModelRunner._update_states: removals, additions, condense, metadata
        for rid in finished:
            batch.remove_request(rid)
            del live[rid]
        finished.clear()
        while started < total and len(live) < MAX_REQS and rng.random() < 0.6:
            rid = f"req-{started}"
            prompt = [7, 7, 7, *rng.integers(0, 50, size=int(rng.integers(2, 40))).tolist()]
            req = request(rid, prompt)
            batch.add_request(req)
            emit(batch, req, [int(rng.integers(0, 50))])  # the prefill's token
            sampled[rid] = req.output_token_ids[-1:]
            live[rid], left[rid] = req, int(rng.integers(1, 30))
            started += 1
        batch.condense()
        batch.refresh_metadata()
        if batch.num_reqs > 1 and rng.random() < 0.3:  # a runner's reorder
            i, j = rng.choice(batch.num_reqs, size=2, replace=False).tolist()
            batch.swap_states(int(i), int(j))
        req_ids = [r for r in batch.req_ids if r is not None]
        if not req_ids:
            continue
        drafts = proposer.propose(
            [sampled[r] for r in req_ids], batch.num_tokens_no_spec, batch.token_ids_cpu
        )
        assert len(drafts) == len(req_ids)
        for i, rid in enumerate(req_ids):
            # the tracker's view of row i is this request, for its whole life
            match = proposer.last_matches[i]
            assert match is not None, rid
            assert tracked.setdefault(rid, match.request.request_id) == match.request.request_id, rid
            assert len(drafts[i]) <= 4
        for rid in req_ids:  # the step's sampled tokens (accepted drafts + bonus)
            new = rng.integers(0, 50, size=int(rng.integers(1, 5))).tolist()
            emit(batch, live[rid], new)
            sampled[rid] = new
            left[rid] -= 1
            if left[rid] <= 0:
                finished.append(rid)
    for _ in range(3):
        proposer.propose([], np.zeros(0, dtype=np.int32), batch.token_ids_cpu)
    assert proposer.tracker.started == total
    assert proposer.tracker.stopped == total
    assert len(proposer.tracker) == 0
    assert len(set(tracked.values())) == total
