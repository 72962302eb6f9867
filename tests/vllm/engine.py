"""Runs prompts through one real vLLM engine (offline ``LLM``) and writes what happened as JSON.

One process per engine configuration (vLLM spawns its engine core; ``LLM`` must be created under
``if __name__ == "__main__"``). Used by ``tests/vllm/test_engine.py`` and ``benches/vllm.py``.

Usage: python tests/vllm/engine.py --model DIR --prompts FILE --out FILE [--spec JSON]
           [--fastdec JSON] [--max-tokens N] [--max-num-seqs N] [--dtype float32]

``--prompts`` is a JSON list of token-id lists. The output: per prompt its generated token ids,
total seconds, and vLLM's
spec-decode counters (``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``,
``..._num_accepted_tokens``) and decode step counts where vLLM reports them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--spec", default=None, help="speculative_config as JSON")
    ap.add_argument("--fastdec", default=None, help="additional_config['fastdec'] as JSON")
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--warmup", type=int, default=1, help="prompts generated once before timing")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="let vLLM torch.compile the model (about 3 min per engine start here)",
    )
    args = ap.parse_args()

    from fastdec.integrations.vllm import engine_counters
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts: list[list[int]] = json.loads(args.prompts.read_text())
    kwargs: dict[str, Any] = {}
    if args.spec:
        kwargs["speculative_config"] = json.loads(args.spec)
    if args.fastdec:
        kwargs["additional_config"] = {"fastdec": json.loads(args.fastdec)}
    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        seed=0,
        disable_log_stats=False,
        enforce_eager=not args.compile,
        # on the CPU backend this is the share of host memory vLLM insists is free at start; its
        # default (0.92) fails whenever anything else holds a few hundred MB
        gpu_memory_utilization=0.5,
        **kwargs,
    )
    engine_start = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=False)
    batch = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    if args.warmup:
        llm.generate(batch[: args.warmup], params, use_tqdm=False)
    before = engine_counters(llm)
    t0 = time.perf_counter()
    outputs = llm.generate(batch, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    after = engine_counters(llm)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    result = {
        "engine_start_seconds": engine_start,
        "seconds": seconds,
        "outputs": [list(o.outputs[0].token_ids) for o in outputs],
        "metrics": {k: v for k, v in delta.items() if "spec_decode" in k or "generation_tokens" in k},
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
