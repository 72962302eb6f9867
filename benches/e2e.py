"""End-to-end greedy decoding speed on Spec-Bench prompts: transformers vs fastdec, side by side.

SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32; ``--model gemma3-270m`` for Gemma 3
270M, whose sliding-window layers the prompts' lengths cross) on the CPU, the first turn of the
first ``--per-category`` questions of every Spec-Bench category with the chat template applied,
``--max-new-tokens`` new tokens (or up to EOS), batch size 1, once per torch thread count in
``--threads``. Methods:

* ``hf-greedy``: ``model.generate(do_sample=False)``, the reference;
* ``hf-pld``: the same with prompt lookup decoding (``prompt_lookup_num_tokens=10``);
* ``hf-assisted-trie``: transformers' assisted generation drafting with fastdec's trie
  (``fastdec.integrations.transformers.assisted_by``, 10 tokens a draft);
* ``fastdec-plain``: fastdec's own loop without drafts (``drafter=None``), so the gain from
  speculation alone is visible;
* ``fastdec-<drafter>``: fastdec with that drafter and a fixed ``--budget``;
* ``fastdec-auto``: fastdec with its default drafter and ``budget="auto"``;
* ``fastdec-auto-<drafter>``: the same with another drafter.

Drafter state never flatters: every (thread count, method) pair gets its own fresh drafter
object (and so its own ``budget="auto"`` controller), which lives across that method's prompts in
prompt order, as in a server; the prompts are distinct, so no drafter ever sees a prompt twice.
The untimed warm-up call of each method uses a throwaway drafter. Methods run interleaved prompt
by prompt, so machine noise hits all alike. Wall time covers the whole call, prefill included.
Every method's tokens must equal ``hf-greedy``'s for every prompt: mismatches are printed,
recorded in the JSON, and make the script exit non-zero once everything has run.

Targets, per thread count: ``fastdec-auto`` >= 1.15x ``hf-greedy`` and >= 0.97x
``fastdec-plain`` and >= 1.1x the better of ``hf-greedy`` and ``hf-pld`` (at 2 threads);
``fastdec-plain`` >= 1.00x ``hf-greedy``. ``--dtype bfloat16`` runs
both sides in bfloat16 (the identity check is then against HF in bfloat16). The JSON and table
record the CPU model, its ISA flags, torch's MKL / oneDNN versions and the linear path chosen.
Writes JSON, Markdown and PNG.

    python benches/e2e.py [--threads 1 2] [--per-category 1] [--max-new-tokens 128] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdec
from fastdec.drafters import DEFAULT_DRAFTER
from fastdec.generation.registry import make_drafter
from fastdec.machine import describe, machine_meta
from plotting import pyplot, save

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = ROOT.parent / "shared" / "data" / "specbench" / "question.jsonl"
FASTDEC_DRAFTERS = ("trie", "ngram", "pld", "recycling", "hybrid")
METHODS = (
    "hf-greedy",
    "hf-pld",
    "hf-assisted-trie",
    "fastdec-plain",
    *(f"fastdec-{d}" for d in FASTDEC_DRAFTERS),
    "fastdec-auto",
    "fastdec-auto-packed",
    *(f"fastdec-auto-{d}" for d in FASTDEC_DRAFTERS),
)
DEFAULT_METHODS = (
    "hf-greedy",
    "hf-pld",
    "hf-assisted-trie",
    "hf-assisted-trie",
    "fastdec-plain",
    "fastdec-trie",
    "fastdec-hybrid",
    "fastdec-pld",
    "fastdec-recycling",
    "fastdec-auto",
)
REFERENCE = "hf-greedy"
PLAIN = "fastdec-plain"
AUTO = "fastdec-auto"
# fastdec's defaults with oneDNN's packed linear forced (FASTDEC_CPU_LINEAR=packed), on a model copy
AUTO_PACKED = "fastdec-auto-packed"
# (method, baseline, least ratio of their tokens/s)
TARGETS = [(AUTO, PLAIN, 0.97), (AUTO, REFERENCE, 1.15), (PLAIN, REFERENCE, 1.00)]
WARMUP_PROMPT = "Say hello."


@dataclass
class Prompt:
    index: int
    category: str
    question_id: int
    ids: list[int]


@dataclass
class Record:
    """One method's result on one prompt."""

    tokens: list[int]
    seconds: float
    steps: int | None  # decoding steps (MAT = tokens / steps); None where unknown (HF PLD)


Runner = Callable[[list[int], bool], tuple[list[int], int | None]]  # (prompt, warmup) -> tokens, steps


@dataclass
class Method:
    name: str
    run: Runner
    records: list[Record] = field(default_factory=list)


def load_prompts(tok: Any, per_category: int, limit_categories: int | None) -> list[Prompt]:
    """The first turn of the first ``per_category`` questions of each category, in file order."""
    by_cat: dict[str, list[dict[str, Any]]] = {}
    with QUESTIONS.open() as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                by_cat.setdefault(q["category"], []).append(q)
    cats = list(by_cat)[:limit_categories] if limit_categories else list(by_cat)
    prompts = []
    for cat in cats:
        for q in by_cat[cat][:per_category]:
            prompts.append(Prompt(len(prompts), cat, int(q["question_id"]), chat_ids(tok, q["turns"][0])))
    return prompts


def chat_ids(tok: Any, text: str) -> list[int]:
    """The prompt with the chat template applied, or the plain text for a pretrained model that
    has none (Gemma 3 270M's GGUF)."""
    if not getattr(tok, "chat_template", None):
        return [int(t) for t in tok(text).input_ids]
    enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    if not isinstance(enc, list):  # BatchEncoding / dict (transformers >= 5 returns a dict)
        enc = enc["input_ids"]
    if enc and isinstance(enc[0], list):
        enc = enc[0]
    return [int(t) for t in enc]


def load(model_dir: Path | str, gguf: str | None, threads: int, dtype: str) -> tuple[Any, Any]:
    """A local transformers directory (``gguf``: the GGUF file inside it), else any spec
    :func:`fastdec.models.load_model` takes (a named model such as ``gemma3-270m``, a file)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    if not Path(model_dir).is_dir():
        from fastdec.models import load_model

        return load_model(str(model_dir), dtype=dtype, attn_implementation="sdpa")
    kwargs: dict[str, Any] = {"attn_implementation": "sdpa"}
    if gguf:
        kwargs["gguf_file"] = gguf
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval().to(getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok


def make_methods(
    names: list[str],
    model: Any,
    tok: Any,
    max_new_tokens: int,
    budget: int,
    linear_notes: dict[str, str],
    packed_model: Any = None,
) -> list[Method]:
    import torch

    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    vocab = int(model.config.vocab_size)

    def hf(extra: dict[str, Any]) -> Runner:
        def run(ids: list[int], warmup: bool) -> tuple[list[int], int | None]:
            x = torch.tensor([ids])
            with torch.inference_mode():
                out = model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=eos,
                    pad_token_id=pad,
                    **extra,
                )
            new = out[0, len(ids) :].tolist()
            return new, (len(new) if not extra else None)

        return run

    def fd(drafter_name: str | None, b: int | str, packed: bool = False) -> Runner:
        # One fresh drafter for this method (state carries across its prompts); a throwaway for
        # the warm-up. `packed`: a second copy of the model whose linears run oneDNN's packed
        # path (its reordered weights are kept per model, so the other methods never see them).
        drafter = make_drafter(drafter_name, vocab) if drafter_name else None
        target = packed_model if packed else model
        env = {"FASTDEC_CPU_LINEAR": "packed"} if packed else {}

        def run(ids: list[int], warmup: bool) -> tuple[list[int], int | None]:
            d = drafter
            if warmup and drafter_name:
                d = make_drafter(drafter_name, vocab)
            with torch.inference_mode(), environment(env):
                out = fastdec.generate(
                    target, [ids], drafter=d, max_new_tokens=max_new_tokens, eos_token_id=eos, budget=b
                )
            if not warmup:  # which CPU linear path ran, and the costs that chose it
                linear_notes[f"{drafter_name or 'plain'}/{b}{'/packed' if packed else ''}"] = out.linear_note
            return out.sequences[0], len(out.accepted_lengths[0])

        return run

    def assisted(drafter_name: str) -> Runner:
        # transformers' own loop, drafting with a fastdec drafter (fresh per method)
        from fastdec.integrations.transformers import assisted_by

        drafter = make_drafter(drafter_name, vocab)
        plain = hf({"prompt_lookup_num_tokens": 10})

        def run(ids: list[int], warmup: bool) -> tuple[list[int], int | None]:
            d = make_drafter(drafter_name, vocab) if warmup else drafter
            with assisted_by(model, d, num_output_tokens=10):
                return plain(ids, warmup)

        return run

    table: dict[str, Callable[[], Runner]] = {
        "hf-greedy": lambda: hf({}),
        "hf-assisted-trie": lambda: assisted("trie"),
        "hf-pld": lambda: hf({"prompt_lookup_num_tokens": 10}),
        "fastdec-plain": lambda: fd(None, 1),
        AUTO: lambda: fd(DEFAULT_DRAFTER, "auto"),
        AUTO_PACKED: lambda: fd(DEFAULT_DRAFTER, "auto", packed=True),
    }
    for d in FASTDEC_DRAFTERS:
        table[f"fastdec-{d}"] = lambda d=d: fd(d, budget)
        table[f"fastdec-auto-{d}"] = lambda d=d: fd(d, "auto")
    return [Method(n, table[n]()) for n in names]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def run_all(methods: list[Method], prompts: list[Prompt], warmup_ids: list[int]) -> list[dict[str, Any]]:
    """Warm-up, then every prompt through every method in turn; returns the mismatches."""
    for m in methods:
        m.run(warmup_ids, True)
    ref = REFERENCE if any(m.name == REFERENCE for m in methods) else methods[0].name
    mismatches = []
    clock = time.perf_counter
    for p in prompts:
        for m in methods:
            t0 = clock()
            tokens, steps = m.run(p.ids, False)
            m.records.append(Record(tokens, clock() - t0, steps))
        want = next(m for m in methods if m.name == ref).records[-1].tokens
        for m in methods:
            got = m.records[-1].tokens
            if got != want:
                pos = first_difference(got, want)
                mm = {
                    "method": m.name,
                    "reference": ref,
                    "prompt": p.index,
                    "category": p.category,
                    "question_id": p.question_id,
                    "position": pos,
                    "got": got[pos : pos + 5],
                    "want": want[pos : pos + 5],
                    "got_len": len(got),
                    "want_len": len(want),
                }
                mismatches.append(mm)
                print(
                    f"MISMATCH {m.name} vs {ref}: prompt {p.index} ({p.category}, question {p.question_id}) "
                    f"first differs at new token {pos}: {mm['got']} vs {mm['want']} "
                    f"(lengths {len(got)} vs {len(want)})"
                )
        line = " ".join(f"{m.name} {len(m.records[-1].tokens) / m.records[-1].seconds:.1f}" for m in methods)
        print(f"[{p.index + 1}/{len(prompts)}] {p.category}: tok/s {line}", flush=True)
    return mismatches


def aggregate(records: list[Record]) -> dict[str, Any]:
    tokens = sum(len(r.tokens) for r in records)
    seconds = sum(r.seconds for r in records)
    steps = [r.steps for r in records]
    known = all(s is not None for s in steps)
    total_steps = sum(s for s in steps if s is not None)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "mat": tokens / total_steps if known and total_steps else None,
    }


def summarize(methods: list[Method], prompts: list[Prompt]) -> dict[str, Any]:
    cats = list(dict.fromkeys(p.category for p in prompts))
    res: dict[str, Any] = {}
    for m in methods:
        res[m.name] = {"overall": aggregate(m.records), "categories": {}}
        for c in cats:
            recs = [r for r, p in zip(m.records, prompts, strict=True) if p.category == c]
            res[m.name]["categories"][c] = aggregate(recs)
    for base, key in ((REFERENCE, "speedup_vs_hf_greedy"), (PLAIN, "speedup_vs_plain")):
        if base not in res:
            continue
        for r in res.values():
            pairs = [(r["overall"], res[base]["overall"])]
            pairs += [(g, res[base]["categories"][c]) for c, g in r["categories"].items()]
            for group, ref in pairs:
                group[key] = group["tokens_per_s"] / ref["tokens_per_s"] if ref["tokens_per_s"] else None
    return res


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def tables(results: dict[str, Any]) -> str:
    lines = [
        "| method | tok/s | speedup vs HF greedy | speedup vs plain loop | MAT | new tokens | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        o = r["overall"]
        lines.append(
            f"| {name} | {o['tokens_per_s']:.1f} | {fmt(o.get('speedup_vs_hf_greedy'), '.2f')}x "
            f"| {fmt(o.get('speedup_vs_plain'), '.2f')}x | {fmt(o['mat'], '.2f')} | {o['tokens']} "
            f"| {o['seconds']:.1f} |"
        )
    cats = list(next(iter(results.values()))["categories"])
    for title, cell in (
        (
            "tok/s (speedup vs HF greedy)",
            lambda g: f"{g['tokens_per_s']:.1f} ({fmt(g.get('speedup_vs_hf_greedy'), '.2f')}x)",
        ),
        ("MAT", lambda g: fmt(g["mat"], ".2f")),
    ):
        lines += ["", f"Per category, {title}:", ""]
        lines.append("| method |" + "".join(f" {c} |" for c in cats) + " overall |")
        lines.append("|---|" + "---|" * (len(cats) + 1))
        for name, r in results.items():
            row = [cell(r["categories"][c]) for c in cats] + [cell(r["overall"])]
            lines.append(f"| {name} |" + "".join(f" {v} |" for v in row))
    return "\n".join(lines)


def target_lines(results: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One line per target whose two methods both ran, and the same as records."""
    lines, met = [], []
    for method, base, least in TARGETS:
        if method not in results or base not in results:
            continue
        ratio = results[method]["overall"]["tokens_per_s"] / results[base]["overall"]["tokens_per_s"]
        ok = ratio >= least
        met.append({"method": method, "baseline": base, "ratio": ratio, "target": least, "met": ok})
        lines.append(f"{method} / {base}: {ratio:.2f}x (target >= {least:.2f}: {'met' if ok else 'MISSED'})")
    if AUTO in results and REFERENCE in results and "hf-pld" in results:
        # transformers' own prompt lookup is the baseline a transformers user already has
        best_hf = max((REFERENCE, "hf-pld"), key=lambda n: results[n]["overall"]["tokens_per_s"])
        ratio = results[AUTO]["overall"]["tokens_per_s"] / results[best_hf]["overall"]["tokens_per_s"]
        ok = ratio >= 1.1
        met.append(
            {"method": AUTO, "baseline": f"best of hf ({best_hf})", "ratio": ratio, "target": 1.1, "met": ok}
        )
        lines.append(
            f"{AUTO} / best HF ({best_hf}): {ratio:.2f}x (target >= 1.10: {'met' if ok else 'MISSED'})"
        )
    spec = [n for n in results if n.startswith("fastdec-") and n != PLAIN]
    if spec and REFERENCE in results and PLAIN in results:
        best = max(spec, key=lambda n: results[n]["overall"]["tokens_per_s"])
        o = results[best]["overall"]
        lines.append(
            f"fastest fastdec method {best}: {o['speedup_vs_hf_greedy']:.2f}x HF greedy, "
            f"{o['speedup_vs_plain']:.2f}x fastdec's plain loop"
        )
    return lines, met


def run_threads(
    threads: int, model: Any, tok: Any, names: list[str], prompts: list[Prompt], args: argparse.Namespace
) -> dict[str, Any]:
    """Every method, freshly built (new drafters, new auto controllers), over every prompt."""
    import torch

    torch.set_num_threads(threads)
    print(f"=== {threads} torch thread(s)", flush=True)
    linear_notes: dict[str, str] = {}
    methods = make_methods(
        names, model, tok, args.max_new_tokens, args.budget, linear_notes, packed_model=args.packed_model
    )
    t0 = time.perf_counter()
    mismatches = run_all(methods, prompts, chat_ids(tok, WARMUP_PROMPT))
    results = summarize(methods, prompts)
    notes, met = target_lines(results)
    per_prompt = {
        m.name: [{"tokens": len(r.tokens), "seconds": r.seconds, "steps": r.steps} for r in m.records]
        for m in methods
    }
    return {
        "threads": threads,
        "wall_s": time.perf_counter() - t0,
        "results": results,
        "targets": met,
        "notes": notes,
        "linear_paths": dict(sorted(linear_notes.items())),
        "identical_outputs": not mismatches,
        "mismatches": mismatches,
        "per_prompt": per_prompt,
    }


def summary_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| threads | HF greedy tok/s | plain / HF | auto / plain | auto / HF | fastest method | its / HF |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = run["results"]

        def ratio(a: str, b: str, r: dict[str, Any] = r) -> str:
            if a not in r or b not in r:
                return "-"
            return f"{r[a]['overall']['tokens_per_s'] / r[b]['overall']['tokens_per_s']:.2f}x"

        spec = [n for n in r if n.startswith("fastdec-")]
        best = max(spec, key=lambda n: r[n]["overall"]["tokens_per_s"]) if spec else "-"
        hf = f"{r[REFERENCE]['overall']['tokens_per_s']:.1f}" if REFERENCE in r else "-"
        lines.append(
            f"| {run['threads']} | {hf} | {ratio(PLAIN, REFERENCE)} | {ratio(AUTO, PLAIN)} "
            f"| {ratio(AUTO, REFERENCE)} | {best} | {ratio(best, REFERENCE) if spec else '-'} |"
        )
    return "\n".join(lines)


STATE_NOTE = (
    "drafter state: a fresh drafter and auto controller per (thread count, method), kept across that "
    "method's distinct prompts in order; warm-ups use throwaway drafters"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        default=str(DEFAULT_MODEL_DIR),
        help="model directory, or a model fastdec.models.load_model names (e.g. gemma3-270m)",
    )
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="GGUF file inside --model ('' for none)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    ap.add_argument("--budget", type=int, default=4, help="tree nodes per step for fastdec-<drafter>")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--limit-categories", type=int, default=None, help="only the first N categories")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts, in turn")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--tag", default="", help="suffix of the output files (e2e{tag}.json ...)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()

    import torch
    import transformers

    if not Path(args.model).is_dir():
        args.gguf = ""  # a named model or a file: load_model knows its file
    model, tok = load(args.model, args.gguf or None, args.threads[0], args.dtype)
    prompts = load_prompts(tok, args.per_category, args.limit_categories)
    args.packed_model = None
    if AUTO_PACKED in args.methods:
        args.packed_model, _ = load(args.model, args.gguf or None, args.threads[0], args.dtype)
    names = list(dict.fromkeys(args.methods))
    print(STATE_NOTE)
    runs = [run_threads(t, model, tok, names, prompts, args) for t in args.threads]

    meta = {
        "benchmark": "e2e",
        "model": str(Path(args.model).name) + (f"/{args.gguf}" if args.gguf else ""),
        "dtype": str(next(model.parameters()).dtype),
        "hf_reference": f"model.generate(do_sample=False) in the same dtype ({args.dtype})",
        "attn_implementation": "sdpa",
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        "budget": args.budget,
        "default_drafter": DEFAULT_DRAFTER,
        "data": "Spec-Bench question.jsonl, first turn, "
        + (
            "chat template applied"
            if getattr(tok, "chat_template", None)
            else "plain text (no chat template)"
        ),
        "per_category": args.per_category,
        "prompts": [
            {"category": p.category, "question": p.question_id, "tokens": len(p.ids)} for p in prompts
        ],
        "drafter_state": STATE_NOTE,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **machine_meta(),
        "cpu_line": describe(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fastdec": fastdec.__version__,
        "targets": [{"method": m, "baseline": b, "at_least": x} for m, b, x in TARGETS],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"e2e{args.tag}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    parts = [
        f"# e2e ({meta['model']}, {meta['dtype']}, greedy, {len(prompts)} Spec-Bench prompts, "
        f"max_new_tokens {args.max_new_tokens}, fixed budget {args.budget}, auto drafter "
        f"{DEFAULT_DRAFTER}, transformers {meta['transformers']})",
        f"CPU: {meta['cpu_line']}.",
        STATE_NOTE + ".",
        summary_table(runs),
    ]
    for run in runs:
        notes = list(run["notes"])
        if run["mismatches"]:
            notes.append(
                f"OUTPUTS DIFFER from {REFERENCE} in {len(run['mismatches'])} (method, prompt) pair(s)"
            )
        else:
            notes.append(f"all outputs identical to {REFERENCE}")
        linear = [f"- {k}: {v}" for k, v in run["linear_paths"].items() if v]
        parts += [f"## {run['threads']} torch thread(s)", tables(run["results"]), "\n\n".join(notes)]
        if linear:  # the choice is per process: every method's last call reports the same one
            parts.append("Linear paths (last prompt of each fastdec method):\n\n" + "\n".join(linear))
    text = "\n\n".join(parts) + "\n"
    (args.out / f"e2e{args.tag}.md").write_text(text)
    print(text)
    plot(runs, args.out / f"e2e{args.tag}.png", meta)
    if any(run["mismatches"] for run in runs):
        sys.exit(1)


def plot(runs: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(max(8, 5.5 * len(runs)), 4.8), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        results = run["results"]
        names = list(results)
        tps = [results[n]["overall"]["tokens_per_s"] for n in names]
        colors = [
            "tab:gray"
            if n.startswith("hf-")
            else "tab:orange"
            if n == PLAIN
            else "tab:green"
            if n == AUTO
            else "tab:blue"
            for n in names
        ]
        x = np.arange(len(names))
        bars = ax.bar(x, tps, color=colors)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
        if REFERENCE in results:
            ax.axhline(
                results[REFERENCE]["overall"]["tokens_per_s"], color="black", linewidth=1, label="HF greedy"
            )
        if PLAIN in results:
            ax.axhline(
                results[PLAIN]["overall"]["tokens_per_s"],
                color="tab:orange",
                linestyle="--",
                linewidth=1,
                label="fastdec plain loop",
            )
        ax.legend(fontsize=8)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel("new tokens / s (prefill included)")
        ax.set_title(f"{run['threads']} torch thread(s)", fontsize=10)
    fig.suptitle(
        f"{meta['model'].split('/')[0]} greedy, {len(meta['prompts'])} Spec-Bench prompts, "
        f"{meta['max_new_tokens']} new tokens",
        fontsize=10,
    )
    save(fig, path)


if __name__ == "__main__":
    main()
