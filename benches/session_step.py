"""Per-step cost of the draft session against the Python path it replaced, side by side in one run.

The vLLM ``custom_class`` call, driven without vLLM: ``B`` rows of real text (Spec-Bench
conversations tiled to ``C`` tokens, a different offset per row) in one persistent ``[B, max_len]``
int32 array; each step every row gains 1-3 tokens of its own text (accepted drafts + bonus), and
the proposer is called with the sampled ids, the counts and the rows. Two proposers see the same
steps, alternating in blocks of 10 steps: ``session`` (``fastdec.integrations.vllm``: one
``DraftSession.step`` in Rust) and ``python`` (the tracker that hashes each row's whole context,
per-row Python and the Python draft-length controller, ``benches/baseline/``). Each has a fresh
drafter of the same kind (so both do the same drafting work: prompt lookup with vLLM ``ngram``'s
settings at a fixed length, or the trie with the learnt length) and the first step (every
request's start, O(context) once) is not timed. With a fixed length the two return the same
drafts, which is checked at every step.

Targets (issue 27): session p50 <= 80 us for 16 rows at 8k context, <= 1 ms for 256 rows.
Writes JSON, a Markdown table and a PNG.

    python benches/session_step.py [--rows 1 16 64 256] [--contexts 1024 8192] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "baseline"))
import fastdec
import replay_data
from drafter_latency import long_context
from fastdec.integrations import vllm as fd_vllm
from fastdec.machine import machine_meta
from plotting import pyplot, save
from python_proposer import PythonProposer

HERE = Path(__file__).resolve().parent

K = 5
DRAFTERS = {
    # vLLM ngram's defaults (5..5 grams here: what PldProposer uses unset), fixed length
    "pld": (lambda: fastdec.NgramDrafter("pld", min_n=5, max_n=5, num_pred=K, max_requests=1024), False),
    "trie": (lambda: fastdec.TrieDrafter(max_requests=1024), True),
}


BLOCK = 10


class _State:
    """One proposer's view of the batch: its own rows array, counts and last sampled ids."""

    def __init__(self, base: np.ndarray, rows: int, context: int) -> None:
        self.rows = base.copy()
        self.counts = np.full(rows, context, dtype=np.int32)
        self.sampled = [[int(base[i, context - 1])] for i in range(rows)]

    def advance(self, base: np.ndarray, gained: np.ndarray) -> None:
        """Each row gains its next 1-3 tokens of text (accepted drafts + bonus)."""
        self.sampled = []
        for i, g in enumerate(gained.tolist()):
            n = int(self.counts[i])
            self.sampled.append(base[i, n : n + g].tolist())
            self.counts[i] = n + g


def run_config(
    texts: list[np.ndarray], rows: int, context: int, steps: int, drafter: str, seed: int
) -> dict[str, Any]:
    make, adaptive = DRAFTERS[drafter]
    max_len = context + 4 * steps + 8
    budget = K + 1 if drafter == "pld" else 3 * K + 1
    base = np.zeros((rows, max_len), dtype=np.int32)
    for i in range(rows):
        base[i] = texts[i % len(texts)][:max_len]
    methods: dict[str, Any] = {
        "session": fd_vllm.FastdecProposer(
            drafter=make(),
            num_speculative_tokens=K,
            max_model_len=max_len,
            tree_budget=budget,
            adaptive=adaptive,
        ),
        "python": PythonProposer(make(), K, max_len, tree_budget=budget, adaptive=adaptive),
    }
    rng = np.random.default_rng(seed)
    gains = rng.integers(1, 4, size=(steps + 1, rows))
    state = {name: _State(base, rows, context) for name in methods}
    times: dict[str, list[float]] = {name: [] for name in methods}
    drafts: dict[str, list[list[list[int]]]] = {name: [] for name in methods}
    # Blocks of BLOCK steps per method, alternating: side by side against machine noise, while
    # each block runs on caches its own method filled (call-by-call alternation would charge
    # each method the other's cache traffic: the Python path streams every row's context).
    for first in range(0, steps + 1, BLOCK):
        for name in methods if (first // BLOCK) % 2 == 0 else reversed(list(methods)):
            st = state[name]
            for step in range(first, min(first + BLOCK, steps + 1)):
                t0 = time.perf_counter_ns()
                out = methods[name].propose(st.sampled, st.counts, st.rows)
                if step:  # the first step starts every request (O(context) once): not timed
                    times[name].append((time.perf_counter_ns() - t0) / 1e3)
                drafts[name].append(out)
                st.advance(base, gains[step])
    mismatches = (
        0 if adaptive else sum(a != b for a, b in zip(drafts["session"], drafts["python"], strict=True))
    )
    result: dict[str, Any] = {
        "rows": rows,
        "context": context,
        "drafter": drafter,
        "draft_mismatches": mismatches,
    }
    for name, us in times.items():
        a = np.asarray(us)
        result[name] = {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90))}
    result["speedup_p50"] = result["python"]["p50_us"] / result["session"]["p50_us"]
    # the session's measured choice of serial vs pooled proposals: rows from -> ns a row each way
    result["session_propose_ns_per_row"] = {
        str(k): v for k, v in methods["session"].session.stats()["propose_ns_per_row"].items()
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--drafters", nargs="+", default=list(DRAFTERS), choices=list(DRAFTERS))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()

    requests = replay_data.load_requests()
    need = max(args.contexts) + 4 * args.steps + 8
    texts = [long_context(requests, need, offset)[:need] for offset in range(0, 64 * 7, 7)]
    results = []
    for drafter in args.drafters:
        for context in args.contexts:
            for rows in args.rows:
                r = run_config(texts, rows, context, args.steps, drafter, seed=rows + context)
                results.append(r)
                print(
                    f"{drafter:5s} rows {rows:4d} context {context:5d}: "
                    f"session p50 {r['session']['p50_us']:8.1f} us, "
                    f"python p50 {r['python']['p50_us']:9.1f} us ({r['speedup_p50']:.1f}x)",
                    flush=True,
                )
    meta = {
        "what": "one vLLM custom_class propose call per engine step, without vLLM; "
        "the proposers alternate in blocks of 10 steps",
        "drafter_state": "a fresh drafter per proposer and configuration; the same text and steps for both",
        "k": K,
        "steps_timed": args.steps,
        "machine": platform.machine(),
        **machine_meta(),
        "python": platform.python_version(),
        "targets": {"p50_us_16_rows_8k": 80, "p50_us_256_rows": 1000},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "session_step.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    )
    lines = [
        "# Draft session step vs the Python path (one vLLM propose call per step)",
        "",
        f"CPU: {meta['cpu']['model']} ({', '.join(meta['cpu'].get('flags', []))}); k = {K}; "
        f"{args.steps} steps timed per configuration.",
        "",
        "| drafter | rows | context | session p50 (us) | session p90 (us) | python p50 (us) "
        "| python p90 (us) | speedup p50 | draft mismatches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, p = r["session"], r["python"]
        lines.append(
            f"| {r['drafter']} | {r['rows']} | {r['context']} | {s['p50_us']:.1f} | {s['p90_us']:.1f} | "
            f"{p['p50_us']:.1f} | {p['p90_us']:.1f} | {r['speedup_p50']:.1f}x | {r['draft_mismatches']} |"
        )
    (args.out / "session_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, args.out / "session_step.png")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    drafters = sorted({r["drafter"] for r in results})
    fig, axes = plt.subplots(1, len(drafters), figsize=(6 * len(drafters), 4.5), squeeze=False)
    for ax, drafter in zip(axes[0], drafters, strict=True):
        for context, style in zip(sorted({r["context"] for r in results}), ("-", "--", ":"), strict=False):
            sel = [r for r in results if r["drafter"] == drafter and r["context"] == context]
            x = [r["rows"] for r in sel]
            ax.plot(
                x,
                [r["session"]["p50_us"] for r in sel],
                "o" + style,
                color="tab:blue",
                label=f"session, {context}",
            )
            ax.plot(
                x,
                [r["python"]["p50_us"] for r in sel],
                "s" + style,
                color="tab:red",
                label=f"python, {context}",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rows in the batch")
        ax.set_ylabel("p50 us per step")
        ax.set_title(f"{drafter}: one propose call per engine step")
        ax.legend(fontsize=8)
    save(fig, path)


if __name__ == "__main__":
    main()
