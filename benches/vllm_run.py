"""One engine process of ``benches/vllm.py``: a vLLM ``LLM`` with one speculative config, the
two workloads run through it, and what happened as JSON.

Workloads (file from ``benches/vllm.py``):

* ``two_turn``: Spec-Bench's MT-bench conversations. All first turns are sent at once; then each
  second turn is sent as a *new request* holding the first turn and this engine's own answer to
  it (as a chat client does), so a drafter with memory across requests can reuse the answer.
* ``code``: a source file in the prompt and a small edit asked; the answer mostly repeats the file.

Run with the vLLM virtualenv's interpreter (``.venv-vllm/bin/python``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# (module, class, method) timed by --profile: the engine core's step and its parts, in the order
# they run; the scheduler runs in the engine core process, the model runner in its worker process.
TIMED = (
    ("vllm.v1.engine.core", "EngineCoreProc", "_process_engine_step"),
    ("vllm.v1.engine.core", "EngineCore", "step"),
    ("vllm.v1.engine.core", "EngineCore", "post_step"),
    ("vllm.v1.core.sched.scheduler", "Scheduler", "schedule"),
    ("vllm.v1.core.sched.scheduler", "Scheduler", "update_from_output"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "execute_model"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "sample_tokens"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_update_states"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_prepare_inputs"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_model_forward"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_sample"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_bookkeeping_sync"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "propose_draft_token_ids"),
)
#: set by --profile to a path prefix; vLLM's CPU engine *spawns* its engine core and worker,
#: which re-import this file as ``__mp_main__`` and find it here
PROFILE_ENV = "FASTDEC_BENCH_VLLM_PROFILE"


def install_timers(prefix: str) -> None:
    """Wraps :data:`TIMED` so that each call appends ``name start_ns duration_ns`` (``perf_counter_ns``:
    CLOCK_MONOTONIC, one clock for every process) to ``PREFIX.PID``, one write per call (a few
    microseconds against a step of ~100 ms; nothing is lost when vLLM kills the process)."""
    fd = os.open(f"{prefix}.{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def wrap(name: str, fn: Any) -> Any:
        drafts = name.endswith("propose_draft_token_ids")

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter_ns()
            out = None
            try:
                out = fn(*a, **kw)
                return out
            finally:
                # a drafter's call also records the draft tokens it returned (rows concatenated)
                extra = f" {sum(len(d) for d in out)}" if drafts and isinstance(out, list) else ""
                os.write(fd, f"{name} {t0} {time.perf_counter_ns() - t0}{extra}\n".encode())

        return timed

    for module, cls, attr in TIMED:
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, attr, wrap(f"{cls}.{attr}", getattr(owner, attr)))


def read_timers(prefix: Path) -> dict[str, list[tuple[int, ...]]]:
    """Every process's records under ``prefix`` (see :func:`install_timers`) by name, each
    ``(start_ns, duration_ns[, draft tokens])``, in start order."""
    calls: dict[str, list[tuple[int, ...]]] = {}
    for f in prefix.parent.glob(prefix.name + ".*"):
        for line in f.read_text().splitlines():
            name, *values = line.split()
            calls.setdefault(name, []).append(tuple(map(int, values)))
    return {name: sorted(c) for name, c in calls.items()}


class NeverProposer:
    """A ``custom_class`` proposer that never drafts: speculative decoding switched on through the
    interface fastdec's proposers use, with nothing to verify. Its tok/s is the floor the issue's
    concurrency-16 target falls back to. vLLM's CPU engine spawns its worker, which imports this
    file as ``__mp_main__``: the speculative config names it ``__mp_main__.NeverProposer``."""

    def __init__(self, vllm_config: Any = None) -> None:
        pass

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        return [[] for _ in sampled_token_ids]


class CycleProposer:
    """A ``custom_class`` proposer that drafts 0, 1, ..., k tokens at successive steps (copies of
    the row's last token: what they are does not change what verifying them costs), so that one
    run times the engine's step at every draft length, interleaved (``benches/vllm_cost.py``)."""

    def __init__(self, vllm_config: Any = None) -> None:
        spec = getattr(vllm_config, "speculative_config", None)
        self.k = int(getattr(spec, "num_speculative_tokens", 0) or 0)
        self.step = 0

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        n = self.step % (self.k + 1)
        self.step += 1
        return [[s[-1]] * n if s else [] for s in sampled_token_ids]


if __name__ == "__mp_main__" and os.environ.get(PROFILE_ENV):
    install_timers(os.environ[PROFILE_ENV])


def read_stats(path: str | None) -> dict[str, Any]:
    if not path or not Path(path).exists():
        return {}
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--spec", default=None)
    ap.add_argument("--fastdec", default=None)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--code-max-tokens", type=int, default=384)
    ap.add_argument("--max-num-seqs", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (about 3 min per start)")
    ap.add_argument("--profile", type=Path, help="time the engine's step parts into PROFILE.PID files")
    args = ap.parse_args()

    # benches/vllm.py would shadow the vllm package: drop this script's folder from the path
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from fastdec.integrations.vllm import engine_counters
    from vllm import LLM, SamplingParams

    if args.profile:
        os.environ[PROFILE_ENV] = str(args.profile)  # for the spawned engine processes

    work = json.loads(args.workload.read_text())
    kwargs: dict[str, Any] = {}
    if args.spec:
        kwargs["speculative_config"] = json.loads(args.spec)
    fastdec = json.loads(args.fastdec) if args.fastdec else None
    if fastdec is not None:
        kwargs["additional_config"] = {"fastdec": fastdec}
    stats_file = fastdec.get("stats_file") if fastdec else None
    t0 = time.perf_counter()
    llm = LLM(
        model=args.model, dtype=args.dtype, max_model_len=4096, max_num_seqs=args.max_num_seqs, seed=0,
        disable_log_stats=False, enforce_eager=not args.compile, gpu_memory_utilization=0.5, **kwargs,
    )  # fmt: skip
    start_s = time.perf_counter() - t0
    tok = llm.get_tokenizer()

    def chat(turns: list[tuple[str, str | None]]) -> list[int]:
        messages = []
        for user, answer in turns:
            messages.append({"role": "user", "content": user})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        ids = tok.apply_chat_template(messages, add_generation_prompt=True)
        return [int(t) for t in (ids if isinstance(ids, list) else ids["input_ids"])]

    def generate(prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], float]:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        t = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs], time.perf_counter() - t

    generate([chat([("Say hello.", None)])], 8)  # warm-up
    results: dict[str, Any] = {"engine_start_seconds": start_s}
    for name in ("two_turn", "code"):
        items = work.get(name, [])
        if not items:
            continue
        before, stats_before = engine_counters(llm), read_stats(stats_file)
        window_start = time.perf_counter_ns()  # CLOCK_MONOTONIC: the engine core's clock too
        if name == "two_turn":
            prompts = [chat([(c[0], None)]) for c in items]
            first, s1 = generate(prompts, args.max_tokens)
            answers = [tok.decode(o, skip_special_tokens=True) for o in first]
            turn2 = [chat([(c[0], a), (c[1], None)]) for c, a in zip(items, answers, strict=True)]
            second, s2 = generate(turn2, args.max_tokens)
            prompts, outputs, seconds = prompts + turn2, first + second, s1 + s2
        else:
            prompts = [chat([(text, None)]) for text in items]
            outputs, seconds = generate(prompts, args.code_max_tokens)
        after, stats_after = engine_counters(llm), read_stats(stats_file)
        delta = {k: v - before.get(k, 0.0) for k, v in after.items() if "spec_decode" in k}
        drafter = {
            k: stats_after.get(k, 0) - stats_before.get(k, 0)
            for k in ("steps", "propose_seconds")
            if k in stats_after
        }
        results[name] = {
            "seconds": seconds,
            "tokens": sum(len(o) for o in outputs),
            "requests": len(outputs),
            "prompts": prompts,
            "outputs": outputs,
            "metrics": delta,
            "drafter": drafter,
            "draft_length": stats_after.get("draft_length"),
            "window_ns": [window_start, time.perf_counter_ns()],
        }
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
