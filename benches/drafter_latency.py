"""Drafter latency at long contexts, side by side with pure-Python prompt lookup in one run.

Per drafter: a request whose context is a real Spec-Bench conversation tiled to ``--context``
tokens, then ``--steps`` steps of ``propose(budget)`` + ``accept(2 tokens)`` timed together from
Python; and ``propose_batch`` over ``--batch`` such requests. Targets (issue 3): at 8k-token
contexts p50 <= 10 us and p99 <= 50 us per step, ``propose_batch`` of 256 requests <= 2 ms,
and >= 50x faster per step than the pure-Python prompt lookup. Writes JSON, a Markdown table
and a PNG.

    python benches/drafter_latency.py [--context 8192] [--steps 2000] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdec
import replay_data
from fastdec.machine import machine_meta
from plotting import pyplot, save
from python_pld import PythonPLD

DRAFTERS: dict[str, Callable[[], Any]] = {
    "pld-python": PythonPLD,
    "pld": lambda: fastdec.NgramDrafter("pld"),
    "ngram-tree": lambda: fastdec.NgramDrafter("tree", max_n=4, num_pred=16, max_matches=32),
    "recycling": lambda: fastdec.RecycleDrafter(32000),
    "trie": lambda: fastdec.TrieDrafter(),
    "trie-longest": lambda: fastdec.TrieDrafter(match_decay=0.0, smoothing=0.0),
}


def long_context(requests: list[replay_data.Request], length: int, offset: int) -> np.ndarray:
    """Real text: consecutive Spec-Bench prompts and answers concatenated to `length` tokens."""
    parts, total, i = [], 0, offset
    while total < length + 4096:
        r = requests[i % len(requests)]
        for a in (r.prompt_ids, r.answer_ids):
            parts.append(np.asarray(a, dtype=np.int32))
            total += len(a)
        i += 1
    return np.concatenate(parts)


def time_steps(drafter: Any, ctx: np.ndarray, length: int, steps: int, budget: int) -> np.ndarray:
    drafter.start(0, ctx[:length])
    out = np.empty(steps)
    clock = time.perf_counter_ns
    for i in range(steps):
        emitted = ctx[length + 2 * i : length + 2 * i + 2]
        t0 = clock()
        drafter.propose(0, budget)
        drafter.accept(0, emitted)
        out[i] = clock() - t0
    drafter.stop(0)
    return out / 1e3


def time_batch(
    drafter: Any, requests: list[replay_data.Request], length: int, batch: int, budget: int
) -> np.ndarray:
    if not hasattr(drafter, "propose_batch"):
        return np.array([])
    ids = list(range(1, batch + 1))
    for rid in ids:
        drafter.start(rid, long_context(requests, length, rid)[:length])
    budgets = np.full(batch, budget, dtype=np.int32)
    drafter.propose_batch(ids, budgets)
    out = []
    for _ in range(30):
        t0 = time.perf_counter_ns()
        drafter.propose_batch(ids, budgets)
        out.append(time.perf_counter_ns() - t0)
    return np.array(out) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--drafters", nargs="+", default=list(DRAFTERS), choices=list(DRAFTERS))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()

    requests = replay_data.load_requests()
    ctx = long_context(requests, args.context + 2 * args.steps, 0)
    results: dict[str, Any] = {}
    for name in args.drafters:
        us = time_steps(DRAFTERS[name](), ctx, args.context, args.steps, args.budget)
        ms = time_batch(DRAFTERS[name](), requests, args.context, args.batch, args.budget)
        results[name] = {
            "step_p50_us": float(np.percentile(us, 50)),
            "step_p99_us": float(np.percentile(us, 99)),
            "batch_p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "batch_p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
        }
    base = results.get("pld-python")
    if base and "pld" in results:
        results["pld"]["speedup_vs_python_p50"] = base["step_p50_us"] / results["pld"]["step_p50_us"]
        results["pld"]["speedup_vs_python_p99"] = base["step_p99_us"] / results["pld"]["step_p99_us"]
    meta = {
        "drafter_state": "a fresh drafter for every timed measurement (latency only: no MAT here)",
        "context_tokens": args.context,
        "steps": args.steps,
        "batch": args.batch,
        "budget": args.budget,
        "machine": platform.machine(),
        **machine_meta(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "targets": {"step_p50_us": 10, "step_p99_us": 50, "batch_ms": 2, "pld_speedup": 50},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drafter_latency.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    )
    lines = [
        f"| drafter ({args.context}-token context) | propose+accept p50 / p99 (us) "
        f"| propose_batch({args.batch}) p50 / p99 (ms) |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        batch = f"{r['batch_p50_ms']:.3f} / {r['batch_p99_ms']:.3f}" if r["batch_p50_ms"] is not None else "-"
        lines.append(f"| {name} | {r['step_p50_us']:.2f} / {r['step_p99_us']:.2f} | {batch} |")
    table = "\n".join(lines)
    (args.out / "drafter_latency.md").write_text(table + "\n")
    print(table)
    if "speedup_vs_python_p50" in results.get("pld", {}):
        r = results["pld"]
        print(
            f"\npld vs pure-Python prompt lookup per step: {r['speedup_vs_python_p50']:.1f}x p50, "
            f"{r['speedup_vs_python_p99']:.1f}x p99 (target >= 50x)"
        )
    plot(results, args.out / "drafter_latency.png", args.context)


def plot(results: dict[str, Any], path: Path, context: int) -> None:
    plt = pyplot()
    if plt is None:
        return
    names = list(results)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(names))
    bars = ax.bar(x, [results[n]["step_p50_us"] for n in names], color="tab:blue", label="p50")
    ax.scatter(x, [results[n]["step_p99_us"] for n in names], color="black", marker="_", s=300, label="p99")
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.axhline(10, color="tab:red", linestyle="--", linewidth=1, label="p50 target")
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("propose + accept per step, us (log)")
    ax.set_title(f"Drafter latency at a {context}-token context")
    ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
