"""What one vLLM engine step costs against the number of draft tokens it verifies.

A ``custom_class`` proposer that drafts 0, 1, ..., k copies of each row's last token at successive
steps (``CycleProposer`` in ``benches/vllm_run.py``: what the tokens are does not change what
verifying them costs) runs a workload in a fresh engine per concurrency, with the engine's step
timed inside its processes (``benches/vllm_run.py --profile``). Every draft length is thus timed
many times, interleaved, in one run: a slow spell of the VM hits every length alike. Reported per
concurrency and number of draft tokens in the step: model steps, the median step and model
forward in ms, and the step against one that verifies no draft.

Why it matters: fastdec's draft-length controller prices a step by its width (rows plus draft
tokens, see the README's vLLM section), and on a CPU a step that verifies a few tokens can be
*cheaper* than one that verifies none (a BLAS runs one query token as a matrix-vector product,
several as a blocked matrix product). The controller measures this in the engine as it runs; this
script shows the shape on the machine it runs on.

    .venv/bin/python benches/vllm_cost.py        # two-turn conversations, concurrency 1 and 4: ~5 min

Writes ``benches/results/vllm_cost-WORKLOAD.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import vllm_profile
from vllm_profile import bench, run


def by_draft_tokens(
    calls: dict[str, list[tuple[int, ...]]], window: list[int]
) -> dict[int, dict[str, float]]:
    """Per number of draft tokens verified (the previous ``propose``'s count), the model steps
    inside ``window``: how many, median engine step and model forward in ms."""
    lo, hi = window
    proposes = calls.get("GPUModelRunner.propose_draft_token_ids", [])
    starts = [c[0] for c in proposes]
    steps = [c for c in calls.get("EngineCore.step", []) if c[1] > 0]
    step_starts = [c[0] for c in steps]
    rows: dict[int, dict[str, list[float]]] = {}
    for fwd in calls.get("GPUModelRunner._model_forward", []):
        if not lo <= fwd[0] <= hi:
            continue
        i = bisect.bisect_left(starts, fwd[0]) - 1
        j = bisect.bisect_right(step_starts, fwd[0]) - 1
        if i < 0 or j < 0:
            continue
        cell = rows.setdefault(proposes[i][2], {"forward": [], "step": []})
        cell["forward"].append(fwd[1] / 1e6)
        cell["step"].append(steps[j][1] / 1e6)
    return {
        d: {
            "steps": len(c["step"]),
            "step_ms": statistics.median(c["step"]),
            "forward_ms": statistics.median(c["forward"]),
        }
        for d, c in sorted(rows.items())
    }


def table(doc: dict[str, Any]) -> str:
    out = []
    for conc, cells in doc["concurrency"].items():
        base = cells.get("0", {}).get("step_ms")
        out += [
            f"### concurrency {conc}",
            "",
            "| draft tokens in the step | model steps | step ms (median) | forward ms (median) "
            "| vs no draft |",
            "|---|---|---|---|---|",
        ]
        for d, c in cells.items():
            rel = f"{c['step_ms'] / base:.2f}x" if base else "-"
            out.append(f"| {d} | {c['steps']} | {c['step_ms']:.1f} | {c['forward_ms']:.1f} | {rel} |")
        out.append("")
    return "\n".join(out)


def report(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    cpu = meta["cpu"]
    return "\n".join(
        [
            f"# vLLM step cost by draft tokens verified: {meta['workload']}, {meta['dtype']}, "
            f"k = {meta['k']}",
            "",
            f"{cpu.get('model', '?')}, {meta['machine']}; ISA: {', '.join(cpu.get('flags', []))}; "
            f"vLLM {meta['vllm']}",
            "",
            "Rows with fewer tokens of room get fewer drafts, so a step's draft tokens are not always "
            "k times its rows; steps with few samples are noisy.",
            "",
            table(doc),
        ]
    )


def plot(doc: dict[str, Any], path: Path) -> None:
    from plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for conc, cells in doc["concurrency"].items():
        xs = [int(d) for d, c in cells.items() if c["steps"] >= 5]
        ax.plot(xs, [cells[str(x)]["step_ms"] for x in xs], marker="o", label=f"concurrency {conc}")
    ax.set_xlabel("draft tokens verified in the step")
    ax.set_ylabel("median engine step (ms)")
    ax.set_title(f"vLLM CPU step cost by width: {doc['meta']['workload']}")
    ax.legend()
    save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["code", "two_turn"], default="two_turn")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    vllm_profile.engine_args(ap)
    args = ap.parse_args()
    if args.render:
        write(json.loads(args.render.read_text()), args.render.parent, args.render.stem)
        return
    work = {args.workload: bench.workload(1)[args.workload]}
    cells: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        work_file = tmp / "workload.json"
        work_file.write_text(json.dumps(work))
        for conc in args.concurrency:
            prefix = tmp / f"cycle-{conc}.profile"
            r = bench.run_one("cycle", conc, args, work_file, tmp, ["--profile", str(prefix)])
            found = by_draft_tokens(run.read_timers(prefix), r[args.workload]["window_ns"])
            cells[str(conc)] = {str(d): c for d, c in found.items()}
            print(f"concurrency {conc}: {len(found)} draft lengths timed", flush=True)
    doc = {
        "meta": {
            **vllm_profile.engine_meta(),
            "workload": args.workload,
            "dtype": args.dtype,
            "k": args.k,
        },
        "concurrency": cells,
    }
    write(doc, args.out, f"vllm_cost-{args.workload}")


def write(doc: dict[str, Any], out: Path, name: str) -> None:
    vllm_profile.write(doc, out, name, report, plot)


if __name__ == "__main__":
    main()
