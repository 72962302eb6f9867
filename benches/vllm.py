"""fastdec's proposers against vLLM's own drafters, inside the real vLLM CPU engine, one run.

Every method runs the same workloads (``benches/vllm_run.py``) in a fresh engine process (fresh
drafter state per method: nothing carries over between methods), methods in turn at each
concurrency (``max_num_seqs``, all requests submitted at once):

* ``none``: no speculation; ``ngram``: vLLM's prompt lookup (n-grams 2..4); ``suffix``: vLLM's
  SuffixDecoding (Arctic Inference, built from its sdist by ``make vllm-bench-env``; skipped and
  said so when not importable in the vLLM virtualenv);
* ``fastdec-pld`` (vLLM ngram's settings), ``fastdec-trie``, ``fastdec-hybrid``: fastdec's
  ``custom_class`` proposers (adaptive draft length on the trie and hybrid);
* ``floor``: a ``custom_class`` proposer that never drafts (speculation on, nothing to verify):
  what the interface itself costs, reported beside the concurrency-16 target against ``none``.

Every method gets ``num_speculative_tokens = --k`` (default 10); ``NAME@K`` runs one at another k.
The default set runs vLLM's ngram at k = 5 as well, and each target compares with the stronger
of the two ngram rows (vLLM's prompt lookup drafts every token it finds, so a longer k can cost
it at high concurrency).

Workloads: Spec-Bench's MT-bench two-turn conversations (one per category; the second turn is a
new request holding the first turn and the engine's own answer) and code editing (a Python
standard-library file in the prompt, one small edit asked). Reported: output tokens per second,
speedup over ``none`` and over ``ngram``, vLLM's MAT (1 + accepted / drafts, over steps that
drafted), acceptance per draft token, fastdec's drafter time per step, and where each target
stands (``fastdec-pld`` keeps ``ngram``'s speed; the best proposer wins at concurrency 1 and does
not lose at 4 and 16). Writes ``benches/results/vllm.{json,md,png}``.

    make vllm-bench-env && .venv/bin/python benches/vllm.py    # about 45 minutes on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastdec.machine import machine_meta

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
QUESTIONS = SHARED / "data" / "specbench" / "question.jsonl"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
MODEL = ROOT / ".venv-vllm" / "models" / "smollm2-135m-f32"
K = 10  # every method's num_speculative_tokens unless NAME@K says otherwise
NGRAM = {"prompt_lookup_min": 2, "prompt_lookup_max": 4}
CODE_FILES = ("bisect.py", "colorsys.py", "keyword.py")  # from the running Python's standard library
EDIT = (
    "Rename every variable called `lo` to `low` (or, if there is none, add a one-line docstring to the"
    " first function) and reply with the whole file."
)
STATE_NOTE = "drafter state: a fresh engine process (and proposer) per method and concurrency"


def custom(cls: str) -> dict[str, Any]:
    return {"method": "custom_class", "model": f"fastdec.integrations.vllm.{cls}"}


# (speculative config without num_speculative_tokens, fastdec settings)
METHODS: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
    "none": (None, None),
    "ngram": ({"method": "ngram", **NGRAM}, None),
    "suffix": ({"method": "suffix"}, None),
    "fastdec-pld": (custom("PldProposer"), dict(NGRAM)),
    "fastdec-trie": (custom("TrieProposer"), {}),
    "fastdec-hybrid": (custom("HybridProposer"), {}),
    # never drafts, through custom_class (benches/vllm_run.py): the floor of the c=16 target
    "floor": ({"method": "custom_class", "model": "__mp_main__.NeverProposer"}, None),
    # drafts 0, 1, ..., k copies of the last token at successive steps: the step cost by draft
    # length (benches/vllm_cost.py), not a drafter
    "cycle": ({"method": "custom_class", "model": "__mp_main__.CycleProposer"}, None),
}
DEFAULT_METHODS = [
    *("none", "ngram@5", "ngram", "suffix"),
    *("fastdec-pld", "fastdec-trie", "fastdec-hybrid", "floor"),
]
FLOOR_CONCURRENCY = 16  # the only target that needs the floor
# (workload, concurrency, method ("best": the fastest fastdec proposer), baseline, least ratio):
# fastdec-pld drafts what ngram drafts, so it must keep ngram's speed (the glue costs nothing);
# the best proposer must then win at concurrency 1 and not lose at 4 and 16.
TARGETS = (
    [(wl, c, "fastdec-pld", "ngram", 0.98) for wl in ("two_turn", "code") for c in (1, 4, 16)]
    + [("two_turn", 1, "best", "ngram", 1.25), ("two_turn", 1, "best", "suffix", 1.10)]
    + [(wl, c, "best", b, 1.0) for wl in ("two_turn", "code") for c in (4, 16) for b in ("ngram", "suffix")]
    + [(wl, 16, "best", "none", 1.0) for wl in ("two_turn", "code")]
)


def workload(per_category: int) -> dict[str, Any]:
    by_cat: dict[str, list[list[str]]] = {}
    for line in QUESTIONS.read_text().splitlines():
        q = json.loads(line)
        if len(q["turns"]) == 2:
            by_cat.setdefault(q["category"], []).append(q["turns"])
    two_turn = [t for turns in by_cat.values() for t in turns[:per_category]]
    lib = Path(os.__file__).parent
    code = []
    for name in CODE_FILES:
        src = (lib / name).read_text()
        code.append(f"Here is `{name}`:\n\n```python\n{src}\n```\n\n{EDIT}")
    return {"two_turn": two_turn, "code": code}


def method_k(method: str, default_k: int) -> tuple[str, int]:
    """``"ngram@5"`` -> ``("ngram", 5)``; a name without ``@`` runs at ``default_k``."""
    base, _, k = method.partition("@")
    if base not in METHODS or (k and not k.isdigit()):
        raise SystemExit(f"unknown method {method!r}: one of {list(METHODS)}, optionally @K")
    return base, int(k) if k else default_k


def suffix_available() -> bool:
    done = subprocess.run([str(VLLM_PY), "-c", "import arctic_inference"], capture_output=True)
    return done.returncode == 0


def run_one(
    method: str,
    conc: int,
    args: argparse.Namespace,
    work_file: Path,
    tmp: Path,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """One method at one concurrency in a fresh engine process (``extra``: more ``vllm_run.py``
    arguments); its results, with the process's wall time."""
    base, k = method_k(method, args.k)
    spec, fd = METHODS[base]
    out = tmp / f"{method}-{conc}.json"
    cmd = [
        str(VLLM_PY), str(ROOT / "benches" / "vllm_run.py"), "--model", str(args.model), "--workload",
        str(work_file), "--out", str(out), "--max-num-seqs", str(conc), "--max-tokens", str(args.max_tokens),
        "--code-max-tokens", str(args.code_max_tokens), "--dtype", args.dtype,
    ]  # fmt: skip
    if spec is not None:
        cmd += ["--spec", json.dumps({**spec, "num_speculative_tokens": k})]
    if fd is not None:
        fd = {**fd, "stats_file": str(tmp / f"{method}-{conc}.stats.json")}
        cmd += ["--fastdec", json.dumps(fd)]
    cmd += extra or []
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{method} at concurrency {conc} failed:\n{done.stderr[-5000:]}")
    result = dict(json.loads(out.read_text()))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def merge(into: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    """Adds one pass of a method to its earlier passes: tokens, seconds, vLLM counters and
    drafter time summed (tok/s is then total tokens over total seconds), each pass's tok/s kept,
    the first pass's outputs kept."""
    for w in (v for v in run.values() if isinstance(v, dict) and "tokens" in v):
        w["passes"] = [w["tokens"] / w["seconds"]]
    if into is None:
        return run
    for wl, w in run.items():
        if not (isinstance(w, dict) and "tokens" in w):
            continue
        acc = into[wl]
        acc["tokens"] += w["tokens"]
        acc["seconds"] += w["seconds"]
        acc["passes"] += w["passes"]
        for key in ("metrics", "drafter"):
            for name, value in w.get(key, {}).items():
                acc.setdefault(key, {})[name] = acc[key].get(name, 0.0) + value
    return into


def summarize(raw: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for method, by_conc in raw.items():
        for conc, r in by_conc.items():
            for wl in ("two_turn", "code"):
                w = r.get(wl)
                if not w:
                    continue
                m = w["metrics"]
                drafts = m.get("vllm:spec_decode_num_drafts", 0.0)
                draft_tokens = m.get("vllm:spec_decode_num_draft_tokens", 0.0)
                accepted = m.get("vllm:spec_decode_num_accepted_tokens", 0.0)
                d = w.get("drafter", {})
                res.setdefault(wl, {}).setdefault(str(conc), {})[method] = {
                    "tokens": w["tokens"],
                    "seconds": w["seconds"],
                    "tokens_per_s": w["tokens"] / w["seconds"],
                    "passes_tokens_per_s": w.get("passes", []),
                    "mat": 1 + accepted / drafts if drafts else None,
                    "acceptance": accepted / draft_tokens if draft_tokens else None,
                    "draft_tokens": draft_tokens,
                    "drafter_us_per_step": 1e6 * d["propose_seconds"] / d["steps"]
                    if d.get("steps")
                    else None,
                }
    return res


def fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else format(x, spec) + suffix


def tables(res: dict[str, Any]) -> str:
    lines = []
    for wl, by_conc in res.items():
        for conc, methods in by_conc.items():
            lines += [f"### {wl}, concurrency {conc}", ""]
            lines.append(
                "| method | tok/s | tok/s per pass | vs none | vs ngram | tokens/step | vLLM MAT |"
                " acceptance | drafter us/step |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for name, r in methods.items():
                passes = " / ".join(f"{x:.1f}" for x in r.get("passes_tokens_per_s", [r["tokens_per_s"]]))
                lines.append(
                    f"| {name} | {r['tokens_per_s']:.1f} | {passes} | {fmt(r.get('vs_none'), '.2f', 'x')} | "
                    f"{fmt(r.get('vs_ngram'), '.2f', 'x')} | {r['tokens_per_step']:.2f} | "
                    f"{fmt(r['mat'], '.2f')} | "
                    f"{fmt(r['acceptance'], '.2f')} | "
                    f"{fmt(r['drafter_us_per_step'], '.0f')} |"
                )
            lines.append("")
    return "\n".join(lines)


def target_lines(res: dict[str, Any]) -> list[str]:
    out = []
    for wl, conc, who, base, least in TARGETS:
        methods = res.get(wl, {}).get(str(conc), {})
        # the baseline at its best k among those run (ngram and ngram@5: the stronger one counts)
        bases = [n for n in methods if n.partition("@")[0] == base]
        ours = {n: r for n, r in methods.items() if n.startswith("fastdec-") and who in ("best", n)}
        if not bases or not ours:
            out.append(f"{wl} c={conc}: not measured")
            continue
        strongest = max(bases, key=lambda n: methods[n]["tokens_per_s"])
        best = max(ours, key=lambda n: ours[n]["tokens_per_s"])
        ratio = ours[best]["tokens_per_s"] / methods[strongest]["tokens_per_s"]
        verdict = "met" if ratio >= least else "MISSED"
        floor = ""
        if base == "none" and "floor" in methods:
            # a proposer that never drafts, through the same interface: if it is itself below
            # no speculation, the target falls back to reaching it
            f = methods["floor"]["tokens_per_s"] / methods[strongest]["tokens_per_s"]
            floor = f"; floor (never drafts) {f:.2f}x: {'at or above it' if ratio >= f else 'BELOW it'}"
        out.append(
            f"{wl} c={conc}: {'best fastdec ' if who == 'best' else ''}({best}) / {strongest} = {ratio:.2f}x"
            f" (target >= {least}: {verdict}{floor})"
        )
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(wl, conc) for wl, by in res.items() for conc in by]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (wl, conc) in zip(axes[0], panels, strict=True):
        methods = res[wl][conc]
        names = list(methods)
        ax.bar(range(len(names)), [methods[n].get("vs_none", 0) for n in names])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_title(f"{wl}, concurrency {conc}")
        ax.set_ylabel("tok/s vs no speculation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument(
        "--methods", nargs="+", default=DEFAULT_METHODS, help=f"of {list(METHODS)}; NAME@K runs it at k = K"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", choices=["two_turn", "code"], default=["two_turn", "code"])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--code-max-tokens", type=int, default=384)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=1, help="passes over the methods (order alternating)")
    ap.add_argument("--k", type=int, default=K, help="num_speculative_tokens of every method")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--render", type=Path, help="rewrite the table and plot from this vllm.json, run nothing")
    args = ap.parse_args()
    if args.render:
        doc = json.loads(args.render.read_text())
        doc.pop("targets", None)
        write(args.out, doc)
        return
    if not VLLM_PY.exists() or not args.model.exists():
        raise SystemExit("run `make test-vllm` first (it builds .venv-vllm and converts the model)")
    methods = list(args.methods)
    for m in methods:
        method_k(m, args.k)
    skipped = {}
    if any(m.startswith("suffix") for m in methods) and not suffix_available():
        methods = [m for m in methods if not m.startswith("suffix")]
        skipped["suffix"] = "arctic-inference is not importable in .venv-vllm (see the README)"
    work = {name: items for name, items in workload(args.per_category).items() if name in args.workloads}
    raw: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        work_file = tmp / "workload.json"
        work_file.write_text(json.dumps(work))
        for conc in args.concurrency:
            for rep in range(args.repeats):
                # passes alternate the method order, so a slow spell of the VM hits all methods
                for method in methods if rep % 2 == 0 else methods[::-1]:
                    if method == "floor" and conc != FLOOR_CONCURRENCY:
                        continue
                    r = run_one(method, conc, args, work_file, tmp)
                    raw[method][conc] = merge(raw[method].get(conc), r)
                    line = ", ".join(
                        f"{wl} {r[wl]['tokens'] / r[wl]['seconds']:.1f} tok/s"
                        for wl in ("two_turn", "code")
                        if wl in r
                    )
                    print(f"c={conc} pass {rep + 1} {method}: {line}", flush=True)
    res = summarize(raw)
    # greedy outputs of each method against no speculation (bf16 on the CPU engine is not
    # batch-invariant, so some differ; float32 identity is tested in tests/vllm)
    identical = {}
    for method in methods:
        for conc in args.concurrency:
            for wl in ("two_turn", "code"):
                if "none" in raw and wl in raw[method].get(conc, {}):
                    a, b = raw[method][conc][wl]["outputs"], raw["none"][conc][wl]["outputs"]
                    identical[f"{method}/{wl}/c{conc}"] = sum(
                        x == y for x, y in zip(a, b, strict=True)
                    ) / len(b)
    code = "import vllm, torch, fastdec as f; print(vllm.__version__, torch.__version__, f.__version__)"
    versions = subprocess.run(
        [str(VLLM_PY), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        **machine_meta(),
        "vllm": versions[0],
        "torch": versions[1],
        "fastdec": versions[2],
        "model": "SmolLM2-135M-Instruct (the shared GGUF, dequantized)",
        "dtype": args.dtype,
        "k": args.k,
        "ngram": NGRAM,
        "conversations": len(work["two_turn"]),
        "code_files": list(CODE_FILES),
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "code_max_tokens": args.code_max_tokens,
        "drafter_state": STATE_NOTE,
        "skipped": skipped,
        "python": sys.version.split()[0],
    }
    write(args.out, {"meta": meta, "results": res, "identical_to_none": identical})
    if "none" in raw:
        # the recorded outputs benches/vllm_replay.py replays (greedy: the same at every concurrency)
        first = raw["none"][min(raw["none"])]
        kept = {wl: {k: first[wl][k] for k in ("prompts", "outputs")} for wl in ("two_turn", "code")}
        (args.out / "vllm_outputs.json").write_text(json.dumps({"meta": meta, **kept}))


def derive(res: dict[str, Any]) -> None:
    """Adds what follows from the counters: tokens per row-step and the ratios to ``none`` and
    ``ngram``. vLLM's MAT counts only the steps that drafted; every row-step emits its accepted
    draft tokens plus one, so row-steps = output tokens - accepted tokens (each prefill's first
    token counts as a step too)."""
    for by_conc in res.values():
        for methods in by_conc.values():
            for r in methods.values():
                accepted = (r["acceptance"] or 0.0) * r["draft_tokens"]
                r["tokens_per_step"] = r["tokens"] / max(1.0, r["tokens"] - accepted)
            for base in ("none", "ngram"):
                if base in methods:
                    for r in methods.values():
                        r[f"vs_{base}"] = r["tokens_per_s"] / methods[base]["tokens_per_s"]


def write(out: Path, doc: dict[str, Any]) -> None:
    """Writes ``vllm.{json,md,png}`` under ``out`` from the measured ``doc``."""
    meta, res, identical = doc["meta"], doc["results"], doc["identical_to_none"]
    derive(res)
    targets = target_lines(res)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vllm.json").write_text(json.dumps({**doc, "targets": targets}, indent=2) + "\n")
    head = (
        f"# vLLM {meta['vllm']} CPU engine, {meta['model']}, {meta['dtype']}, k = {meta['k']}, "
        f"{meta['machine']}, torch {meta['torch']}, fastdec {meta['fastdec']}"
    )
    cpu = meta.get("cpu", {})
    if cpu:
        flags = ", ".join(cpu.get("flags", [])) or "none listed"
        head += f"\n\nCPU: {cpu.get('model', '?')}, ISA flags: {flags}"
    notes = [f"- {t}" for t in targets] + [f"- {meta['drafter_state']}"]
    notes += [f"- {m} skipped: {why}" for m, why in meta["skipped"].items()]
    notes.append(
        "- tokens/step: output tokens per row-step (output tokens over output tokens minus accepted"
        " draft tokens); vLLM's MAT counts only steps that drafted"
    )
    notes.append(
        "- share of outputs identical to no speculation: "
        + ", ".join(f"{k} {v:.2f}" for k, v in identical.items())
    )
    text = "\n".join([head, "", tables(res), *notes, ""])
    (out / "vllm.md").write_text(text)
    plot(res, out / "vllm.png")
    print(text)


if __name__ == "__main__":
    main()
