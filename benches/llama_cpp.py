"""fastdec on llama.cpp against llama-cpp-python's own paths, one run, same prompts.

Methods (each a fresh ``Llama`` and fresh drafter state; requests within a method share the
drafter, which is the cross-request memory a server has):

* ``plain``: llama-cpp-python's ``create_chat_completion`` without a draft model;
* ``prompt-lookup``: ``Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``;
* ``draft-model``: ``Llama(draft_model=FastdecDraftModel("trie"))`` (fastdec inside
  llama-cpp-python's own speculative loop);
* ``loop-pld`` / ``loop-trie`` / ``loop-hybrid``: :class:`fastdec.integrations.llama_cpp_tree.
  FastdecLlama` (one ``llama_decode`` per step verifies a draft tree).

Workloads (``benches/vllm.py``'s): Spec-Bench two-turn conversations (turn 2 holds turn 1 and the
answer) and code editing (a standard-library file in the prompt, a small edit asked). Greedy,
chat API. Reported: completion tokens/s, speedup over ``plain`` and ``prompt-lookup``, tokens
per verifying step (MAT), and the share of answers identical to ``plain``'s. Writes
``benches/results/llama_cpp.{json,md,png}``.

    make llama-env && .venv-llama/bin/python benches/llama_cpp.py     # about 10 minutes on 2 CPUs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = ["plain", "prompt-lookup", "draft-model", "loop-pld", "loop-trie", "loop-hybrid"]
TARGETS = [  # (workload, method, baseline, least ratio)
    ("two_turn", "best", "plain", 1.5),
    ("two_turn", "best", "prompt-lookup", 2.0),
    ("code", "best", "plain", 2.5),
]
STATE_NOTE = "drafter state: a fresh Llama and drafter per method; requests within a method share them"


def _vllm_workload(per_category: int) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("vllm_bench", ROOT / "benches" / "vllm.py")
    assert spec
    assert spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.workload(per_category)  # type: ignore[no-any-return]


def requantized(source: Path, quant: str) -> Path:
    """``source`` with every 2-D weight requantized to ``quant`` (``q4_0`` / ``q8_0``), written
    once into ``~/.cache/fastdec/gguf`` with the gguf package (metadata unchanged but the file
    type). Q4_1 has no batched (GEMM / repacked) kernel in llama.cpp's x86 CPU backend, Q4_0 and
    Q8_0 do: the same model, a different cost of verifying a tree."""
    import gguf
    import numpy as np

    qtype = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    ftype = {"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    target = Path.home() / ".cache" / "fastdec" / "gguf" / f"{source.stem}.requant-{quant}.gguf"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(source)
    tmp = target.with_suffix(".part")
    writer = gguf.GGUFWriter(tmp, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(ftype)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        data = data.reshape([int(d) for d in reversed(t.shape)])
        if data.ndim == 2 and data.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(data, qtype)
            writer.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(target)
    return target


def make(method: str, args: argparse.Namespace, model: Path) -> tuple[Any, Any]:
    """(the Llama, the object with fastdec stats or None)."""
    import llama_cpp
    from fastdec.integrations.llama_cpp import FastdecDraftModel
    from fastdec.integrations.llama_cpp_tree import FastdecLlama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    common = {"n_ctx": args.n_ctx, "n_threads": args.threads, "verbose": False, "seed": 0}
    if method == "plain":
        return llama_cpp.Llama(str(model), **common), None
    if method == "prompt-lookup":
        draft = LlamaPromptLookupDecoding(num_pred_tokens=10)
        return llama_cpp.Llama(str(model), draft_model=draft, logits_all=True, **common), None
    if method == "draft-model":
        fd = FastdecDraftModel("trie", num_pred_tokens=10)
        return llama_cpp.Llama(str(model), draft_model=fd, logits_all=True, **common), fd
    llm = FastdecLlama(str(model), drafter=method.removeprefix("loop-"), tree_budget=args.budget, **common)
    return llm, llm


def run_method(method: str, work: dict[str, Any], args: argparse.Namespace, model: Path) -> dict[str, Any]:
    llm, stats_of = make(method, args, model)
    chat = llm.create_chat_completion
    chat([{"role": "user", "content": "Hi."}], max_tokens=4, temperature=0.0)  # warm-up, untimed
    before = dict(getattr(stats_of, "spec_stats", {}) or {})
    out: dict[str, Any] = {}
    for name, items in work.items():
        texts, tokens, seconds = [], 0, 0.0
        limit = args.max_tokens if name == "two_turn" else args.code_max_tokens
        for item in items:
            turns = item if isinstance(item, list) else [item]
            messages: list[dict[str, str]] = []
            for turn in turns:
                messages.append({"role": "user", "content": turn})
                start = time.perf_counter()
                r = chat(messages, max_tokens=limit, temperature=0.0)
                seconds += time.perf_counter() - start
                text = r["choices"][0]["message"]["content"] or ""
                tokens += int(r["usage"]["completion_tokens"])
                texts.append(text)
                messages.append({"role": "assistant", "content": text})
        row: dict[str, Any] = {
            "tokens": tokens,
            "seconds": seconds,
            "tok_s": tokens / seconds,
            "texts": texts,
        }
        if hasattr(stats_of, "spec_stats"):
            now = stats_of.spec_stats
            steps = now["steps"] - before.get("steps", 0)
            row["mat"] = (now["emitted"] - before.get("emitted", 0)) / steps if steps else None
            row["nodes_per_step"] = (now["drafted"] - before.get("drafted", 0)) / steps + 1 if steps else None
            row["budget_note"] = stats_of.budget_note()
            before = dict(now)
        elif stats_of is not None:  # the draft model: llama-cpp-python's loop, 1 + accepted / call
            s = stats_of.stats()
            row["mat"] = 1 + s["accepted"] / s["steps"] if s["steps"] else None
        out[name] = row
    llm.close()
    return out


def summarize(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for wl in next(iter(raw.values())):
        base = raw["plain"][wl]
        rows = {}
        for m, per in raw.items():
            r = per[wl]
            same = sum(a == b for a, b in zip(r["texts"], base["texts"], strict=True)) / len(base["texts"])
            rows[m] = {
                "tok_s": r["tok_s"],
                "vs_plain": r["tok_s"] / base["tok_s"],
                "vs_prompt_lookup": r["tok_s"] / raw["prompt-lookup"][wl]["tok_s"]
                if "prompt-lookup" in raw
                else None,
                "mat": r.get("mat"),
                "nodes_per_step": r.get("nodes_per_step"),
                "budget_note": r.get("budget_note"),
                "identical": same,
                "tokens": r["tokens"],
            }
        res[wl] = rows
    return res


def target_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    for section, rows in res.items():
        for wl, method, base, least in TARGETS:
            if not section.endswith(f": {wl}") or base not in rows:
                continue
            fast = [m for m in rows if m.startswith("loop-")]
            best = max(fast, key=lambda m: rows[m]["tok_s"]) if method == "best" else method
            ratio = rows[best]["tok_s"] / rows[base]["tok_s"]
            ok = "met" if ratio >= least else "MISSED"
            lines.append(
                f"- {section}: best fastdec loop ({best}) / {base} = {ratio:.2f}x (target >= {least}: {ok})"
            )
    return lines


def table(res: dict[str, Any], header: str) -> str:
    out = [header, ""]
    for wl, rows in res.items():
        out += [
            f"### {wl}",
            "",
            "| method | tok/s | vs plain | vs prompt-lookup | MAT | tree nodes / step | identical to plain |",
        ]
        out.append("|---|---|---|---|---|---|---|")
        for m, r in rows.items():
            mat = f"{r['mat']:.2f}" if r.get("mat") else "-"
            vpl = f"{r['vs_prompt_lookup']:.2f}x" if r.get("vs_prompt_lookup") else "-"
            nodes = f"{r['nodes_per_step']:.1f}" if r.get("nodes_per_step") else "-"
            out.append(
                f"| {m} | {r['tok_s']:.1f} | {r['vs_plain']:.2f}x | {vpl} | {mat} | {nodes} "
                f"| {r['identical']:.2f} |"
            )
        out.append("")
        out += [f"- {m}: {r['budget_note']}" for m, r in rows.items() if r.get("budget_note")]
        out.append("")
    out += target_lines(res)
    out += [
        f"- {STATE_NOTE}",
        "- MAT: tokens emitted per verifying step (llama-cpp-python's loop: 1 + accepted per draft call)",
    ]
    out.append("- identical: share of answers equal to plain decoding's (Q4_1: batched and single-token")
    out.append("  evaluation round differently; the tests show 100% on an F32 copy of the model)")
    return "\n".join(out) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    spec = importlib.util.spec_from_file_location("plotting", ROOT / "benches" / "plotting.py")
    assert spec
    assert spec.loader
    plotting = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plotting)
    pyplot, save = plotting.pyplot, plotting.save

    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(res), figsize=(5 * len(res), 3.6))
    for ax, (wl, rows) in zip(axes if len(res) > 1 else [axes], res.items(), strict=True):
        names = list(rows)
        ax.barh(
            names,
            [rows[m]["tok_s"] for m in names],
            color=["#888" if not m.startswith("loop") else "#2a7" for m in names],
        )
        ax.set_title(f"{wl} (tok/s)")
        ax.invert_yaxis()
    save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument(
        "--requantize",
        nargs="*",
        default=["q4_0"],
        choices=["q4_0", "q8_0"],
        help="also run on copies of --model requantized to these types (default: q4_0)",
    )
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--code-max-tokens", type=int, default=384)
    ap.add_argument(
        "--budget",
        type=lambda t: t if t == "auto" else int(t),
        default="auto",
        help="tree nodes per step of the loop methods, or 'auto' (default)",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--tag", default="", help="suffix of the output files (llama_cpp{tag}.json ...)")
    args = ap.parse_args()
    # this file's name is the package it benchmarks: keep benches/ off the import path
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benches"]
    methods = list(dict.fromkeys(["plain", *args.methods]))
    work = _vllm_workload(args.per_category)
    models = [args.model, *(requantized(args.model, q) for q in args.requantize)]
    res: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for model in models:
        per: dict[str, Any] = {}
        for m in methods:
            per[m] = run_method(m, work, args, model)
            print(model.name, m, {wl: f"{r['tok_s']:.1f} tok/s" for wl, r in per[m].items()}, flush=True)
        raw[model.name] = per
        res.update({f"{model.name}: {wl}": rows for wl, rows in summarize(per).items()})
    import llama_cpp

    header = (
        f"# llama-cpp-python {llama_cpp.__version__}, {args.threads} threads, "
        f"tree budget {args.budget}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"header": header, "results": res, "raw": raw, "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / f"llama_cpp{args.tag}.json").write_text(json.dumps(doc, indent=1))
    md = table(res, header)
    (args.out / f"llama_cpp{args.tag}.md").write_text(md)
    print(md)
    plot(res, args.out / f"llama_cpp{args.tag}.png")


if __name__ == "__main__":
    main()
