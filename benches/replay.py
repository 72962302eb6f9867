"""Model-free replay of Vicuna-7B's greedy Spec-Bench answers: mean accepted tokens per drafter.

Greedy verification accepts a drafted path exactly when it equals the model's own greedy output,
so a drafter can be measured on recorded greedy answers without running the model (shared
README, "Replaying real outputs"). Every turn of Spec-Bench (480 questions, 560 turns; see
``replay_data.py`` for the prompts) replays in file order through one drafter object, so state
carried across requests counts. Per step: ``propose`` a tree whose root is the last token, accept
its longest root-to-node path that matches the recorded answer, emit those tokens plus the
recorded next one (clipped at the end of the answer), ``accept`` them. MAT = emitted tokens /
steps, pooled over the steps of a category (Spec-Bench's ``speed.py``). propose and accept are
timed on their own at every step. Several drafters run in one process, request by request
interleaved, so machine noise hits all of them alike.

    python benches/replay.py --drafters pld-python [--budget 64] [--limit N] [--out benches/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdec
import replay_data
from fastdec import Drafter
from fastdec.machine import machine_meta
from plotting import pyplot, save
from python_pld import PythonPLD
from replay_data import GROUPS, Request

# Drafters by name, each built fresh for a run (e.g. "pld": lambda: fastdec.NgramDrafter(mode="pld")).
VOCAB_SIZE = 32000  # the Llama-2 tokenizer of Vicuna-7B

DRAFTERS: dict[str, Callable[[], Drafter]] = {
    "pld-python": PythonPLD,
    "pld": lambda: fastdec.NgramDrafter("pld"),
    "pld-strict": lambda: fastdec.NgramDrafter("pld_strict"),
    "ngram-recent": lambda: fastdec.NgramDrafter("recent", max_n=4),
    "ngram-tree": lambda: fastdec.NgramDrafter("tree", max_n=4, num_pred=16, max_matches=32),
    "recycling": lambda: fastdec.RecycleDrafter(VOCAB_SIZE),
    "trie": lambda: fastdec.TrieDrafter(),
    "trie-longest": lambda: fastdec.TrieDrafter(match_decay=0.0, smoothing=0.0),
    "hybrid": lambda: fastdec.HybridDrafter(
        [
            fastdec.TrieDrafter(),
            fastdec.NgramDrafter("tree", max_n=4, num_pred=16, max_matches=32),
        ],
        weights=[1.0, 0.5],
    ),
}
STATE_NOTE = (
    "drafter state: one fresh drafter per method, every request replayed once in file order (a "
    "second MT-bench turn contains the first turn and its answer: memory across requests counts, "
    "as in a server; no request is ever repeated)"
)
# A drafter -> the Python baseline of the same algorithm: when both run, their MATs must agree and
# the per-step latency ratio is reported.
BASELINE_OF: dict[str, str] = {
    "pld": "pld-python",
}
# The shared README's calibration of prompt lookup decoding on this replay (Spec-Bench: 1.75).
CALIBRATION = {"drafter": "pld-python", "overall": 1.755, "translation": 1.11, "summarization": 2.74}


def verify_step(tree: fastdec.TokenTree, recorded: npt.NDArray[np.int32], pos: int) -> tuple[int, int]:
    """Greedy verification of ``tree`` against a recorded greedy sequence.

    Args:
        tree: the draft; its root must be ``recorded[pos - 1]``, the last token of the context.
        recorded: ``[T] int32`` the prompt followed by the whole recorded answer.
        pos: tokens of ``recorded`` known so far (prompt + emitted), ``1 <= pos < T``.

    Returns:
        ``(num_accepted, num_emitted)``: the drafts on the longest root-to-node path that
        matches ``recorded[pos:]``, and the tokens this step emits, ``num_accepted + 1`` (the
        bonus is the recorded token after the path) clipped at the end of the answer.

    Raises:
        ValueError: ``pos`` out of range, or the root is not the last context token.
    """
    end = len(recorded)
    if not 1 <= pos < end:
        raise ValueError(f"pos {pos} outside [1, {end})")
    if tree.root_token != recorded[pos - 1]:
        raise ValueError(f"tree root {tree.root_token} is not the last context token {recorded[pos - 1]}")
    # The target's argmax at node i is the recorded token after node i's path. Past the end of
    # the answer it is unknown: a token that no node carries, so nothing is accepted beyond it.
    target_pos = pos + tree.depth
    target_argmax = np.full(tree.num_nodes, int(tree.tokens.max()) + 1, dtype=np.int32)
    known = target_pos < end
    target_argmax[known] = recorded[target_pos[known]]
    _, num_accepted, _ = tree.verify_greedy(target_argmax)
    return num_accepted, min(num_accepted + 1, end - pos)


@dataclass
class Trace:
    """Per-step records of one drafter over a list of requests ([S] arrays, S steps)."""

    request: npt.NDArray[np.int32]  # index of the request the step belongs to
    draft_size: npt.NDArray[np.int32]  # draft nodes proposed (tree nodes - 1)
    emitted: npt.NDArray[np.int32]  # tokens emitted (accepted drafts + bonus, clipped)
    propose_ns: npt.NDArray[np.int64]
    accept_ns: npt.NDArray[np.int64]


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, int, int]] = []

    def trace(self) -> Trace:
        a = np.array(self.rows, dtype=np.int64).reshape(-1, 5)
        return Trace(
            a[:, 0].astype(np.int32), a[:, 1].astype(np.int32), a[:, 2].astype(np.int32), a[:, 3], a[:, 4]
        )


def replay_request(drafter: Drafter, request_id: int, request: Request, budget: int, rec: _Recorder) -> None:
    """Replays one request start to stop, appending one row per step to ``rec``."""
    clock = time.perf_counter_ns
    recorded = np.concatenate([request.prompt_ids, request.answer_ids]).astype(np.int32)
    pos, end = len(request.prompt_ids), len(recorded)
    drafter.start(request_id, request.prompt_ids)
    while pos < end:
        t0 = clock()
        tree = drafter.propose(request_id, budget)
        t1 = clock()
        if tree.num_nodes > budget:
            raise ValueError(f"drafter proposed {tree.num_nodes} nodes with budget {budget}")
        _, num_emitted = verify_step(tree, recorded, pos)
        emitted_ids = recorded[pos : pos + num_emitted]
        t2 = clock()
        drafter.accept(request_id, emitted_ids)
        t3 = clock()
        rec.rows.append((request_id, tree.num_nodes - 1, num_emitted, t1 - t0, t3 - t2))
        pos += num_emitted
    drafter.stop(request_id)


def replay(drafters: dict[str, Drafter], requests: Sequence[Request], budget: int) -> dict[str, Trace]:
    """Replays every request through every drafter, interleaved request by request."""
    recs = {name: _Recorder() for name in drafters}
    for rid, request in enumerate(requests):
        for name, drafter in drafters.items():
            replay_request(drafter, rid, request, budget, recs[name])
    return {name: rec.trace() for name, rec in recs.items()}


def summarize(trace: Trace, steps: npt.NDArray[np.bool_]) -> dict[str, float]:
    """MAT, draft size and latencies over the selected steps."""
    n = int(steps.sum())
    if n == 0:
        return {"steps": 0}
    total_us = (trace.propose_ns[steps] + trace.accept_ns[steps]) / 1e3
    return {
        "mat": float(trace.emitted[steps].sum() / n),
        "mean_draft": float(trace.draft_size[steps].mean()),
        "tokens": int(trace.emitted[steps].sum()),
        "steps": n,
        "p50_us": float(np.percentile(total_us, 50)),
        "p99_us": float(np.percentile(total_us, 99)),
        "propose_p50_us": float(np.percentile(trace.propose_ns[steps], 50) / 1e3),
        "accept_p50_us": float(np.percentile(trace.accept_ns[steps], 50) / 1e3),
    }


def report(trace: Trace, requests: Sequence[Request]) -> dict[str, Any]:
    groups = np.array([r.group for r in requests])[trace.request]
    cats = np.array([r.category for r in requests])[trace.request]
    out: dict[str, Any] = {"overall": summarize(trace, np.ones(len(trace.request), dtype=bool))}
    out["groups"] = {g: summarize(trace, groups == g) for g in GROUPS if (groups == g).any()}
    out["categories"] = {c: summarize(trace, cats == c) for c in dict.fromkeys(r.category for r in requests)}
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    head = "| category |" + "".join(f" {n} MAT | {n} draft | {n} p50 / p99 (us) | {n} steps |" for n in names)
    lines = [head, "|---|" + "---|---|---|---|" * len(names)]
    rows = [*next(iter(results.values()))["groups"], "overall"]
    for row in rows:
        cells = []
        for n in names:
            s = results[n]["overall"] if row == "overall" else results[n]["groups"][row]
            cells.append(
                f" {s['mat']:.3f} | {s['mean_draft']:.2f} | {s['p50_us']:.1f} / {s['p99_us']:.1f} "
                f"| {s['steps']} |"
            )
        lines.append(f"| {row} |" + "".join(cells))
    return "\n".join(lines)


def latency_ratios(results: dict[str, dict[str, Any]], traces: dict[str, Trace]) -> dict[str, Any]:
    """Per-step latency of each Python baseline over its fast drafter, where both ran."""
    ratios = {}
    for fast, base in BASELINE_OF.items():
        if fast in results and base in results:
            f, b = results[fast]["overall"], results[base]["overall"]
            ratios[f"{base} / {fast}"] = {
                "p50": b["p50_us"] / f["p50_us"],
                "p99": b["p99_us"] / f["p99_us"],
                # the same algorithm must emit the same tokens at every step
                "same_steps": bool(np.array_equal(traces[fast].emitted, traces[base].emitted)),
                "mat": [b["mat"], f["mat"]],
            }
    return ratios


def summary_lines(results: dict[str, dict[str, Any]], ratios: dict[str, Any], calibrated: bool) -> list[str]:
    lines = []
    for k, v in ratios.items():
        line = f"{k}: per-step propose+accept latency ratio p50 {v['p50']:.1f}x, p99 {v['p99']:.1f}x"
        if not v["same_steps"]:
            line += f" (MISMATCH: the steps differ, MAT {v['mat'][0]:.4f} vs {v['mat'][1]:.4f})"
        lines.append(line)
    cal = CALIBRATION["drafter"]
    if cal in results and calibrated:
        r = results[cal]
        got = [r["overall"]["mat"], r["groups"]["translation"]["mat"], r["groups"]["summarization"]["mat"]]
        lines.append(
            f"calibration {cal}: MAT {got[0]:.4f} (expected {CALIBRATION['overall']}), translation "
            f"{got[1]:.3f} ({CALIBRATION['translation']}), summarization {got[2]:.3f} "
            f"({CALIBRATION['summarization']})"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drafters", nargs="+", default=["pld-python"], choices=sorted(DRAFTERS))
    ap.add_argument("--budget", type=int, default=64, help="most tree nodes per step, root included")
    ap.add_argument("--limit", type=int, default=None, help="replay only the first N questions")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()

    requests = replay_data.load_requests(args.limit)
    drafters = {name: DRAFTERS[name]() for name in dict.fromkeys(args.drafters)}
    t0 = time.perf_counter()
    traces = replay(drafters, requests, args.budget)
    wall_s = time.perf_counter() - t0
    results = {name: report(trace, requests) for name, trace in traces.items()}

    ratios = latency_ratios(results, traces)

    import sentencepiece

    meta = {
        "benchmark": "replay",
        "data": "Spec-Bench, Vicuna-7B-v1.3 greedy answers (vanilla.jsonl)",
        "questions": len({r.question_id for r in requests}),
        "requests": len(requests),
        "answer_tokens": int(sum(len(r.answer_ids) for r in requests)),
        "budget": args.budget,
        "wall_s": wall_s,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **machine_meta(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sentencepiece": sentencepiece.__version__,
        "fastdec": fastdec.__version__,
        "calibration": CALIBRATION,
        "drafter_state": STATE_NOTE,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(
        json.dumps({"meta": meta, "results": results, "latency_ratios": ratios}, indent=2) + "\n"
    )
    text = table(results)
    notes = [*summary_lines(results, ratios, calibrated=args.limit is None), STATE_NOTE]
    (args.out / "replay.md").write_text(
        f"# replay (Spec-Bench, Vicuna-7B greedy answers, {meta['requests']} requests, "
        f"{meta['answer_tokens']} answer tokens, budget {args.budget}, {meta['machine']}, "
        f"{meta['cpus']} CPUs, Python {meta['python']})\n\n{text}\n" + "".join(f"\n{n}\n" for n in notes)
    )
    print(text)
    for n in notes:
        print(n)
    print(f"replayed {meta['requests']} requests through {len(drafters)} drafter(s) in {wall_s:.1f} s")
    plot(results, args.out / "replay.png", args.budget)


def plot(results: dict[str, dict[str, Any]], path: Path, budget: int) -> None:
    plt = pyplot()
    if plt is None:
        return
    names = list(results)
    rows = [*next(iter(results.values()))["groups"], "overall"]
    x = np.arange(len(rows))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 4.5))
    for k, name in enumerate(names):
        mat = [
            results[name]["overall"]["mat"] if row == "overall" else results[name]["groups"][row]["mat"]
            for row in rows
        ]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, mat, width, label=name)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks(x, rows)
    ax.set_ylabel("mean accepted tokens per step (MAT)")
    ax.set_title(f"Replay of Vicuna-7B's greedy Spec-Bench answers, budget {budget}")
    ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
