"""Where a vLLM engine step's time goes, per method: the profile issue 27 asks for when
``fastdec-pld`` (which drafts exactly what vLLM's ``ngram`` drafts) is not within noise of ngram's
tok/s in ``benches/vllm.py``.

Each pass runs every method in a fresh engine process (``benches/vllm_run.py --profile``, the same
engine, workload and settings as ``benches/vllm.py``; passes alternate the method order, so a slow
spell of the VM hits each method alike). vLLM's engine core process times its step and the
scheduler's parts, its worker process the model runner's (input preparation, model forward,
sampling and rejection, bookkeeping, the drafter's ``propose`` and how many tokens it returned);
the engine core's time outside its step (waiting on the front end) is the rest of the wall time.
This script reports each part in milliseconds per model step, per method, and the difference
between methods part by part: a glue cost shows up in ``propose`` or around it, the VM's noise in
the model forward, which no drafter touches.

    .venv/bin/python benches/vllm_profile.py        # code editing at concurrency 1, 4 passes: ~12 min

Writes ``benches/results/vllm_profile-WORKLOAD-cCONCURRENCY.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastdec.machine import machine_meta

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str) -> Any:
    # by path: a plain ``import vllm`` here would be ambiguous with the engine
    spec = importlib.util.spec_from_file_location(name, ROOT / "benches" / file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("vllm_bench", "vllm.py")
run = _load("vllm_bench_run", "vllm_run.py")

# (row label, timed function or derived part, depth in the table)
PARTS = (
    ("wall per step", "wall", 0),
    ("outside the step (front end, queues)", "outside", 1),
    ("engine step (EngineCoreProc._process_engine_step)", "EngineCoreProc._process_engine_step", 1),
    ("EngineCore.step", "EngineCore.step", 2),
    ("scheduler.schedule", "Scheduler.schedule", 3),
    ("runner.execute_model", "GPUModelRunner.execute_model", 3),
    ("_update_states", "GPUModelRunner._update_states", 4),
    ("_prepare_inputs", "GPUModelRunner._prepare_inputs", 4),
    ("_model_forward", "GPUModelRunner._model_forward", 4),
    ("runner.sample_tokens", "GPUModelRunner.sample_tokens", 3),
    ("_sample (incl. rejection)", "GPUModelRunner._sample", 4),
    ("_bookkeeping_sync", "GPUModelRunner._bookkeeping_sync", 4),
    ("propose_draft_token_ids (drafter)", "GPUModelRunner.propose_draft_token_ids", 4),
    ("scheduler.update_from_output", "Scheduler.update_from_output", 3),
    ("post_step (draft ids to scheduler)", "EngineCore.post_step", 2),
)


def breakdown(calls: dict[str, list[tuple[int, ...]]], window: list[int]) -> dict[str, float]:
    """Milliseconds per model step of each part, over the calls that started inside ``window``
    (the workload's generate call, in the shared monotonic clock)."""
    lo, hi = window
    inside = {name: [r[1] for r in c if lo <= r[0] <= hi] for name, c in calls.items()}
    steps = len(inside.get("GPUModelRunner.execute_model", []))
    if steps == 0:
        raise SystemExit("the profile holds no model step inside the workload's window")
    per = {name: sum(ds) / steps / 1e6 for name, ds in inside.items()}
    per["wall"] = (hi - lo) / steps / 1e6
    per["outside"] = per["wall"] - per.get("EngineCoreProc._process_engine_step", 0.0)
    per["steps"] = float(steps)
    return per


def first_difference(a: list[int], b: list[int]) -> int | None:
    diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return diff if diff is not None or len(a) == len(b) else min(len(a), len(b))


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def table(doc: dict[str, Any]) -> str:
    methods = list(doc["mean"])
    base = methods[0]
    head = "| part (ms per model step) | " + " | ".join(methods)
    head += "".join(f" | {m} - {base}" for m in methods[1:]) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(methods) - 1)]
    for label, key, depth in PARTS:
        vals = [doc["mean"][m].get(key, 0.0) for m in methods]
        row = f"| {'&nbsp;' * 4 * depth}{label} | " + " | ".join(f"{v:.2f}" for v in vals)
        row += "".join(f" | {v - vals[0]:+.2f}" for v in vals[1:]) + " |"
        lines.append(row)
    for label, key in (
        ("model steps", "steps"),
        ("draft tokens", "draft_tokens"),
        ("tok/s", "tokens_per_s"),
        ("output tokens per model step", "tokens_per_step"),
    ):
        vals = [doc["mean"][m][key] for m in methods]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{v:.1f}" if key != "tokens_per_step" else f"{v:.2f}" for v in vals)
            + "".join(f" | {v - vals[0]:+.2f}" for v in vals[1:])
            + " |"
        )
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    from plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return
    leaves = [(label, key) for label, key, depth in PARTS if depth == 4 or key in ("outside",)]
    leaves += [("scheduler", "sched"), ("other", "other")]
    fig, ax = plt.subplots(figsize=(9, 4))
    methods = list(doc["mean"])
    bottom = [0.0] * len(methods)
    for label, key in leaves:
        vals = [leaf_value(doc["mean"][m], key) for m in methods]
        ax.bar(methods, vals, bottom=bottom, label=label.lstrip("_"))  # "_x" labels: not in legends
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("ms per model step")
    meta = doc["meta"]
    ax.set_title(f"vLLM engine step by part: {meta['workload']}, concurrency {meta['concurrency']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, path)


def leaf_value(m: dict[str, float], key: str) -> float:
    if key == "sched":
        return m.get("Scheduler.schedule", 0.0) + m.get("Scheduler.update_from_output", 0.0)
    if key == "other":
        leaves = [k for _, k, depth in PARTS if depth == 4 or k == "outside"]
        return m["wall"] - sum(leaf_value(m, k) for k in leaves) - leaf_value(m, "sched")
    return m.get(key, 0.0)


def profile_run(
    method: str, rep: int, args: argparse.Namespace, work_file: Path, tmp: Path
) -> tuple[dict[str, float], list[int], list[Any]]:
    """One method in a fresh engine: its parts per model step, its draft tokens at each model
    step and its outputs."""
    prefix = tmp / f"{method}-{rep}.profile"
    r = bench.run_one(method, args.concurrency, args, work_file, tmp, ["--profile", str(prefix)])
    w = r[args.workload]
    calls = run.read_timers(prefix)
    part = breakdown(calls, w["window_ns"])
    lo, hi = w["window_ns"]
    seq = [c[2] for c in calls.get("GPUModelRunner.propose_draft_token_ids", []) if lo <= c[0] <= hi]
    part["draft_tokens"] = float(sum(seq))
    part["tokens_per_s"] = w["tokens"] / w["seconds"]
    part["tokens_per_step"] = w["tokens"] / part["steps"]
    forward = part.get("GPUModelRunner._model_forward", 0.0)
    propose = part.get("GPUModelRunner.propose_draft_token_ids", 0.0)
    print(
        f"pass {rep + 1} {method}: {part['tokens_per_s']:.1f} tok/s, {part['steps']:.0f} steps, "
        f"{part['wall']:.2f} ms/step, forward {forward:.2f} ms, propose {propose:.3f} ms",
        flush=True,
    )
    return part, seq, w["outputs"]


def report(doc: dict[str, Any]) -> str:
    meta, runs = doc["meta"], doc["runs"]
    cpu = meta["cpu"]
    isa = ", ".join(cpu.get("flags", []))
    first = next(iter(runs))
    per_pass = "; ".join(
        m + " " + " / ".join(f"{r['tokens_per_s']:.1f}" for r in rs) for m, rs in runs.items()
    )
    same = ", ".join(f"{m} {v}" for m, v in doc["same_outputs_as_first"].items())
    drafts = ", ".join(f"{m} {v}" for m, v in doc["first_draft_difference"].items())
    return "\n".join(
        [
            f"# vLLM engine step by part: {meta['workload']}, concurrency {meta['concurrency']}, "
            f"{meta['passes']} passes, {meta['dtype']}, k = {meta['k']}",
            "",
            f"{cpu.get('model', '?')}, {meta['machine']}; ISA: {isa}; vLLM {meta['vllm']}",
            "",
            table(doc),
            "",
            f"tok/s per pass: {per_pass}",
            "",
            f"same outputs as {first}: {same}",
            "",
            f"first model step drafting another number of tokens than {first} (None: none): {drafts}",
            "",
        ]
    )


def engine_args(ap: argparse.ArgumentParser) -> None:
    """The engine and output options this script shares with ``benches/vllm_cost.py``."""
    ap.add_argument("--model", type=Path, default=bench.MODEL)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--k", type=int, default=bench.K)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--code-max-tokens", type=int, default=384)
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--render", type=Path, help="rewrite the table and plot from this JSON, run nothing")


def engine_meta() -> dict[str, Any]:
    """The machine (CPU model and ISA flags) and the vLLM version a run measured."""
    version = "import vllm; print(vllm.__version__)"
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        **machine_meta(),
        "vllm": subprocess.run(
            [str(bench.VLLM_PY), "-c", version], capture_output=True, text=True
        ).stdout.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--methods", nargs="+", default=["ngram", "fastdec-pld"], help=f"any of {list(bench.METHODS)}"
    )
    ap.add_argument("--workload", choices=["code", "two_turn"], default="code")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--passes", type=int, default=4)
    engine_args(ap)
    args = ap.parse_args()
    if args.render:
        write(json.loads(args.render.read_text()), args.render.parent, args.render.stem)
        return
    for m in args.methods:
        bench.method_k(m, args.k)
    work = {args.workload: bench.workload(1)[args.workload]}
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
    outputs: dict[str, list[Any]] = {}
    drafts: dict[str, list[int]] = {}  # draft tokens per model step, first pass
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        work_file = tmp / "workload.json"
        work_file.write_text(json.dumps(work))
        for rep in range(args.passes):
            # passes alternate the method order, so a slow spell of the VM hits each method alike
            for method in args.methods if rep % 2 == 0 else args.methods[::-1]:
                part, seq, out = profile_run(method, rep, args, work_file, tmp)
                runs[method].append(part)
                drafts.setdefault(method, seq)
                outputs.setdefault(method, out)
    first = args.methods[0]
    doc = {
        "meta": {
            **engine_meta(),
            "workload": args.workload,
            "concurrency": args.concurrency,
            "passes": args.passes,
            "dtype": args.dtype,
            "k": args.k,
            "note": "ms per model step: calls that started inside the workload's generate window, over "
            "the model steps there",
        },
        "runs": runs,
        "mean": {m: mean(rs) for m, rs in runs.items()},
        "same_outputs_as_first": {m: outputs[m] == outputs[first] for m in args.methods},
        # the first model step at which a method drafted another number of tokens than the first
        "first_draft_difference": {
            m: first_difference(drafts[m], drafts[first]) if drafts[m] and drafts[first] else "no drafter"
            for m in args.methods
        },
        "draft_tokens_per_step": drafts,
    }
    write(doc, args.out, f"vllm_profile-{args.workload}-c{args.concurrency}")


def write(
    doc: dict[str, Any],
    out: Path,
    name: str,
    text_of: Callable[[dict[str, Any]], str] = report,
    plot_to: Callable[[dict[str, Any], Path], None] = plot,
) -> None:
    """``doc`` as ``out/name.json``, its report as ``.md`` (printed too) and its plot as ``.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = text_of(doc)
    (out / f"{name}.md").write_text(text)
    print(text)
    plot_to(doc, out / f"{name}.png")


if __name__ == "__main__":
    main()
