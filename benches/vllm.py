"""fastdec's proposers against vLLM's own drafters, inside the real vLLM CPU engine, one run.

Every method runs the same workloads (``benches/vllm_run.py``) in a fresh engine process (fresh
drafter state per method: nothing carries over between methods), methods in turn at each
concurrency (``max_num_seqs``, all requests submitted at once):

* ``none``: no speculation; ``ngram``: vLLM's prompt lookup (k = 5, n-grams 2..4); ``suffix``:
  vLLM's SuffixDecoding when ``arctic-inference`` is importable in the vLLM virtualenv;
* ``fastdec-pld`` (vLLM ngram's settings), ``fastdec-trie``, ``fastdec-hybrid``: fastdec's
  ``custom_class`` proposers (adaptive draft length on the trie and hybrid).

Workloads: Spec-Bench's MT-bench two-turn conversations (one per category; the second turn is a
new request holding the first turn and the engine's own answer) and code editing (a Python
standard-library file in the prompt, one small edit asked). Reported: output tokens per second,
speedup over ``none`` and over ``ngram``, vLLM's MAT (1 + accepted / drafts, over steps that
drafted), acceptance per draft token, fastdec's drafter time per step, and where each target of
issue 13 stands. Writes ``benches/results/vllm.{json,md,png}``.

    .venv/bin/python benches/vllm.py            # needs `make vllm-env` first
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
QUESTIONS = SHARED / "data" / "specbench" / "question.jsonl"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
MODEL = ROOT / ".venv-vllm" / "models" / "smollm2-135m-f32"
K = 5
NGRAM = {"prompt_lookup_min": 2, "prompt_lookup_max": 4}
CODE_FILES = ("bisect.py", "colorsys.py", "keyword.py")  # from the running Python's standard library
EDIT = (
    "Rename every variable called `lo` to `low` (or, if there is none, add a one-line docstring to the"
    " first function) and reply with the whole file."
)
STATE_NOTE = "drafter state: a fresh engine process (and proposer) per method and concurrency"


def custom(cls: str) -> dict[str, Any]:
    return {
        "method": "custom_class",
        "num_speculative_tokens": K,
        "model": f"fastdec.integrations.vllm.{cls}",
    }


METHODS: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
    "none": (None, None),
    "ngram": ({"method": "ngram", "num_speculative_tokens": K, **NGRAM}, None),
    "suffix": ({"method": "suffix", "num_speculative_tokens": K}, None),
    "fastdec-pld": (custom("PldProposer"), dict(NGRAM)),
    "fastdec-trie": (custom("TrieProposer"), {}),
    "fastdec-hybrid": (custom("HybridProposer"), {}),
}
# (workload, concurrency, method, baseline, least ratio)
TARGETS = [
    ("two_turn", 1, "best", "ngram", 1.25),
    ("two_turn", 1, "best", "none", 1.9),
    ("code", 1, "best", "none", 2.5),
    ("two_turn", 16, "best", "none", 1.0),
    ("code", 16, "best", "none", 1.0),
]


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


def suffix_available() -> bool:
    done = subprocess.run([str(VLLM_PY), "-c", "import arctic_inference"], capture_output=True)
    return done.returncode == 0


def run_one(method: str, conc: int, args: argparse.Namespace, work_file: Path, tmp: Path) -> dict[str, Any]:
    spec, fd = METHODS[method]
    out = tmp / f"{method}-{conc}.json"
    cmd = [
        str(VLLM_PY), str(ROOT / "benches" / "vllm_run.py"), "--model", str(args.model), "--workload",
        str(work_file), "--out", str(out), "--max-num-seqs", str(conc), "--max-tokens", str(args.max_tokens),
        "--code-max-tokens", str(args.code_max_tokens), "--dtype", args.dtype,
    ]  # fmt: skip
    if spec is not None:
        cmd += ["--spec", json.dumps(spec)]
    if fd is not None:
        fd = {**fd, "stats_file": str(tmp / f"{method}-{conc}.stats.json")}
        cmd += ["--fastdec", json.dumps(fd)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{method} at concurrency {conc} failed:\n{done.stderr[-5000:]}")
    result = dict(json.loads(out.read_text()))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


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
                    "mat": 1 + accepted / drafts if drafts else None,
                    "acceptance": accepted / draft_tokens if draft_tokens else None,
                    "draft_tokens": draft_tokens,
                    "drafter_us_per_step": 1e6 * d["propose_seconds"] / d["steps"]
                    if d.get("steps")
                    else None,
                }
    for by_conc in res.values():
        for methods in by_conc.values():
            for base in ("none", "ngram"):
                if base in methods:
                    for r in methods.values():
                        r[f"vs_{base}"] = r["tokens_per_s"] / methods[base]["tokens_per_s"]
    return res


def fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else format(x, spec) + suffix


def tables(res: dict[str, Any]) -> str:
    lines = []
    for wl, by_conc in res.items():
        for conc, methods in by_conc.items():
            lines += [f"### {wl}, concurrency {conc}", ""]
            lines.append("| method | tok/s | vs none | vs ngram | vLLM MAT | acceptance | drafter us/step |")
            lines.append("|---|---|---|---|---|---|---|")
            for name, r in methods.items():
                lines.append(
                    f"| {name} | {r['tokens_per_s']:.1f} | {fmt(r.get('vs_none'), '.2f', 'x')} | "
                    f"{fmt(r.get('vs_ngram'), '.2f', 'x')} | {fmt(r['mat'], '.2f')} | "
                    f"{fmt(r['acceptance'], '.2f')} | "
                    f"{fmt(r['drafter_us_per_step'], '.0f')} |"
                )
            lines.append("")
    return "\n".join(lines)


def target_lines(res: dict[str, Any]) -> list[str]:
    out = []
    for wl, conc, _, base, least in TARGETS:
        methods = res.get(wl, {}).get(str(conc))
        if not methods or base not in methods:
            out.append(f"{wl} c={conc}: not measured")
            continue
        ours = {n: r for n, r in methods.items() if n.startswith("fastdec-")}
        if not ours:
            continue
        best = max(ours, key=lambda n: ours[n]["tokens_per_s"])
        ratio = ours[best]["tokens_per_s"] / methods[base]["tokens_per_s"]
        verdict = "met" if ratio >= least else "MISSED"
        out.append(
            f"{wl} c={conc}: best fastdec ({best}) / {base} = {ratio:.2f}x (target >= {least}: {verdict})"
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
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--code-max-tokens", type=int, default=384)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    args = ap.parse_args()
    if not VLLM_PY.exists() or not args.model.exists():
        raise SystemExit("run `make test-vllm` first (it builds .venv-vllm and converts the model)")
    methods = list(args.methods)
    skipped = {}
    if "suffix" in methods and not suffix_available():
        methods.remove("suffix")
        skipped["suffix"] = "arctic-inference is not importable in .venv-vllm (see the README)"
    work = workload(args.per_category)
    raw: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        work_file = tmp / "workload.json"
        work_file.write_text(json.dumps(work))
        for conc in args.concurrency:
            for method in methods:
                raw[method][conc] = run_one(method, conc, args, work_file, tmp)
                r = raw[method][conc]
                line = ", ".join(
                    f"{wl} {r[wl]['tokens'] / r[wl]['seconds']:.1f} tok/s"
                    for wl in ("two_turn", "code")
                    if wl in r
                )
                print(f"c={conc} {method}: {line}", flush=True)
    res = summarize(raw)
    # greedy outputs of each method against no speculation (bf16 on the CPU engine is not
    # batch-invariant, so some differ; float32 identity is tested in tests/vllm)
    identical = {}
    for method in methods:
        for conc in args.concurrency:
            for wl in ("two_turn", "code"):
                if "none" in raw and wl in raw[method][conc]:
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
        "vllm": versions[0],
        "torch": versions[1],
        "fastdec": versions[2],
        "model": "SmolLM2-135M-Instruct (the shared GGUF, dequantized)",
        "dtype": args.dtype,
        "k": K,
        "ngram": NGRAM,
        "conversations": len(work["two_turn"]),
        "code_files": list(CODE_FILES),
        "max_tokens": args.max_tokens,
        "code_max_tokens": args.code_max_tokens,
        "drafter_state": STATE_NOTE,
        "skipped": skipped,
        "python": sys.version.split()[0],
    }
    targets = target_lines(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm.json").write_text(
        json.dumps(
            {"meta": meta, "results": res, "identical_to_none": identical, "targets": targets}, indent=2
        )
        + "\n"
    )
    head = (
        f"# vLLM {meta['vllm']} CPU engine, {meta['model']}, {args.dtype}, k = {K}, {meta['machine']}, "
        f"torch {meta['torch']}, fastdec {meta['fastdec']}"
    )
    notes = [f"- {t}" for t in targets] + [f"- {STATE_NOTE}"]
    notes += [f"- {m} skipped: {why}" for m, why in skipped.items()]
    notes.append(
        "- share of outputs identical to no speculation: "
        + ", ".join(f"{k} {v:.2f}" for k, v in identical.items())
    )
    text = "\n".join([head, "", tables(res), *notes, ""])
    (args.out / "vllm.md").write_text(text)
    plot(res, args.out / "vllm.png")
    print(text)


if __name__ == "__main__":
    main()
