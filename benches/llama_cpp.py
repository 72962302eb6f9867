"""fastdec on llama.cpp against llama-cpp-python's own paths, one run, same prompts.

Methods (each its own ``Llama`` and fresh drafter state, loaded once; requests within a method
share the drafter, which is the cross-request memory a server has; request ``i`` runs the
methods in an order rotated by ``i``, so the drift of a shared machine lands on all alike):

* ``plain``: llama-cpp-python's ``create_chat_completion`` without a draft model;
* ``prompt-lookup``: ``Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``;
* ``draft-model``: ``Llama(draft_model=FastdecDraftModel("trie"))`` (fastdec inside
  llama-cpp-python's own speculative loop);
* ``loop-pld`` / ``loop-trie`` / ``loop-hybrid``: :class:`fastdec.integrations.llama_cpp_tree.
  FastdecLlama` (one ``llama_decode`` per step verifies a draft tree).

Workloads (``benches/vllm.py``'s): Spec-Bench two-turn conversations (turn 2 holds turn 1 and the
answer) and code editing (a standard-library file in the prompt, a small edit asked). Greedy,
chat API. Reported: completion tokens/s end to end and while decoding (less ``plain``'s time to
first token, the prompt evaluation no drafter shortens), speedup over ``plain`` and
``prompt-lookup``, tokens per verifying step (MAT), and the share of answers identical to
``plain``'s. Writes
``benches/results/llama_cpp.{json,md,png}``.

    make llama-env && .venv-llama/bin/python benches/llama_cpp.py     # about 12 minutes on 2 CPUs
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


class Timed:
    """Wraps a ``Llama``'s ``generate`` to note when its first token comes out (the prompt's
    evaluation and the first step) and how many tokens that first step emitted (the tree loop
    emits several at once; llama-cpp-python's loops one)."""

    def __init__(self, llm: Any) -> None:
        self.llm, self.inner, self.first, self.burst = llm, llm.generate, 0.0, 1
        llm.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stats = getattr(self.llm, "spec_stats", None)
        emitted = stats["emitted"] if stats else 0
        start = time.perf_counter()
        first = True
        for token in self.inner(*args, **kwargs):
            if first:
                self.first, first = time.perf_counter() - start, False
                self.burst = stats["emitted"] - emitted if stats else 1
            yield token


class Method:
    """One method's ``Llama`` (loaded once, kept for the whole run: its drafter's memory of
    earlier requests is what a server would have) and its per-workload tallies."""

    def __init__(self, name: str, args: argparse.Namespace, model: Path) -> None:
        self.name = name
        self.llm, self.stats_of = make(name, args, model)
        self.timer = Timed(self.llm)
        self.llm.create_chat_completion([{"role": "user", "content": "Hi."}], max_tokens=4, temperature=0.0)
        self.before = dict(getattr(self.stats_of, "spec_stats", {}) or {})
        self.draft_before = self.stats_of.stats() if hasattr(self.stats_of, "stats") else None
        self.rows: dict[str, dict[str, Any]] = {}

    def conversation(self, workload: str, item: Any, limit: int) -> None:
        """Runs one request sequence (a conversation's turns, or one code prompt)."""
        row = self.rows.setdefault(workload, {"tokens": 0, "seconds": 0.0, "texts": [], "per_request": []})
        turns = item if isinstance(item, list) else [item]
        messages: list[dict[str, str]] = []
        for turn in turns:
            messages.append({"role": "user", "content": turn})
            start = time.perf_counter()
            r = self.llm.create_chat_completion(messages, max_tokens=limit, temperature=0.0)
            seconds = time.perf_counter() - start
            text = r["choices"][0]["message"]["content"] or ""
            n = int(r["usage"]["completion_tokens"])
            row["tokens"] += n
            row["seconds"] += seconds
            row["texts"].append(text)
            row["per_request"].append(
                {"tokens": n, "seconds": seconds, "ttft": self.timer.first, "burst": min(self.timer.burst, n)}
            )
            messages.append({"role": "assistant", "content": text})

    def finish(self, workload: str) -> dict[str, Any]:
        """The workload's tallies, with the fastdec counters it moved."""
        row = self.rows[workload]
        row["tok_s"] = row["tokens"] / row["seconds"]
        if hasattr(self.stats_of, "spec_stats"):
            now = self.stats_of.spec_stats
            steps = now["steps"] - self.before.get("steps", 0)
            row["mat"] = (now["emitted"] - self.before.get("emitted", 0)) / steps if steps else None
            drafted = now["drafted"] - self.before.get("drafted", 0)
            row["nodes_per_step"] = drafted / steps + 1 if steps else None
            row["budget_note"] = self.stats_of.budget_note()
            self.before = dict(now)
        elif self.draft_before is not None:  # the draft model: llama-cpp-python's loop
            s, b = self.stats_of.stats(), self.draft_before
            steps = s["steps"] - b["steps"]
            row["mat"] = 1 + (s["accepted"] - b["accepted"]) / steps if steps else None
            self.draft_before = s
        return row


def run_model(
    methods: list[str], work: dict[str, Any], args: argparse.Namespace, model: Path
) -> dict[str, Any]:
    """Every method on every request, interleaved: request ``i`` runs the methods in an order
    rotated by ``i``, so the drift of a shared machine's speed lands on all of them alike
    (timing one method after another put 20 % between two identical ones)."""
    runners = [Method(m, args, model) for m in methods]
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    i = 0
    for wl, items in work.items():
        limit = args.max_tokens if wl == "two_turn" else args.code_max_tokens
        for item in items:
            for j in range(len(runners)):
                runners[(i + j) % len(runners)].conversation(wl, item, limit)
            i += 1
        for r in runners:
            out[r.name][wl] = r.finish(wl)
        print(model.name, wl, {m: f"{out[m][wl]['tok_s']:.1f} tok/s" for m in methods}, flush=True)
    for r in runners:
        r.llm.close()
    return out


def summarize(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per workload and method: end-to-end tok/s (the chat call's wall time), decode tok/s (the
    tokens after the first step over the time after it), time to first token, ratios, MAT, tree
    nodes and agreement with ``plain``."""
    res: dict[str, Any] = {}
    for wl in next(iter(raw.values())):
        base = raw["plain"][wl]
        prefill = [r["ttft"] for r in base["per_request"]]

        def decode_tok_s(r: dict[str, Any]) -> float:
            reqs = r["per_request"]
            return sum(q["tokens"] - q["burst"] for q in reqs) / sum(q["seconds"] - q["ttft"] for q in reqs)

        base_decode = decode_tok_s(base)
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
                "decode_tok_s": decode_tok_s(r),
                "decode_vs_plain": decode_tok_s(r) / base_decode,
                "ttft_s": sum(q["ttft"] for q in r["per_request"]),
                "mat": r.get("mat"),
                "nodes_per_step": r.get("nodes_per_step"),
                "budget_note": r.get("budget_note"),
                "identical": same,
                "tokens": r["tokens"],
            }
        share = sum(prefill) / base["seconds"]
        res[wl] = {"rows": rows, "prefill_share": share, "requests": len(prefill)}
    return res


def target_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    for section, sec in res.items():
        rows = sec["rows"]
        for wl, method, base, least in TARGETS:
            if not section.endswith(f": {wl}") or base not in rows:
                continue
            fast = [m for m in rows if m.startswith("loop-")]
            best = max(fast, key=lambda m: rows[m]["tok_s"]) if method == "best" else method
            ratio = rows[best]["tok_s"] / rows[base]["tok_s"]
            dec = rows[best]["decode_tok_s"] / rows[base]["decode_tok_s"]
            ok = "met" if ratio >= least else "MISSED"
            bound = ""
            if base == "plain":
                bound = f"; no decoding speed-up could pass {1 / sec['prefill_share']:.2f}x here"
            lines.append(
                f"- {section}: best fastdec loop ({best}) / {base} = {ratio:.2f}x end to end, "
                f"{dec:.2f}x decoding (target >= {least}: {ok}{bound})"
            )
    return lines


def table(res: dict[str, Any], header: str) -> str:
    out = [header, ""]
    for wl, sec in res.items():
        rows = sec["rows"]
        out += [
            f"### {wl}",
            "",
            f"{sec['requests']} requests; plain spends {100 * sec['prefill_share']:.0f} % of its time "
            "before its first token (prompt evaluation), which no drafter shortens.",
            "",
            "| method | tok/s | vs plain | vs prompt-lookup | decode tok/s | decode vs plain | MAT "
            "| first token s | tree nodes / step | identical to plain |",
        ]
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for m, r in rows.items():
            mat = f"{r['mat']:.2f}" if r.get("mat") else "-"
            vpl = f"{r['vs_prompt_lookup']:.2f}x" if r.get("vs_prompt_lookup") else "-"
            nodes = f"{r['nodes_per_step']:.1f}" if r.get("nodes_per_step") else "-"
            out.append(
                f"| {m} | {r['tok_s']:.1f} | {r['vs_plain']:.2f}x | {vpl} | {r['decode_tok_s']:.1f} "
                f"| {r['decode_vs_plain']:.2f}x | {mat} | {r['ttft_s']:.1f} | {nodes} "
                f"| {r['identical']:.2f} |"
            )
        out.append("")
        out += [f"- {m}: {r['budget_note']}" for m, r in rows.items() if r.get("budget_note")]
        out.append("")
    out += target_lines(res)
    out += [
        f"- {STATE_NOTE}",
        "- requests interleaved: request i runs the methods in an order rotated by i (the machine's",
        "  drift lands on every method alike)",
        "- tok/s: completion tokens / the chat call's wall time; decode tok/s: the tokens after the",
        "  first step / the time after it; first token s: the prompt evaluations and first steps, summed",
        "- MAT: tokens emitted per verifying step (llama-cpp-python's loop: 1 + accepted per draft call)",
    ]
    out.append("- identical: share of answers equal to plain decoding's (quantized weights: batched")
    out.append("  and single-token evaluation round differently; the tests show 100% on an F32 copy)")
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
    for ax, (wl, sec) in zip(axes if len(res) > 1 else [axes], res.items(), strict=True):
        rows = sec["rows"]
        names = list(rows)
        ax.barh(
            names,
            [rows[m]["tok_s"] for m in names],
            color=["#888" if not m.startswith("loop") else "#2a7" for m in names],
        )
        ax.set_title(f"{wl} (tok/s)", fontsize=8)
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
        per = run_model(methods, work, args, model)
        raw[model.name] = per
        res.update({f"{model.name}: {wl}": rows for wl, rows in summarize(per).items()})
    import llama_cpp
    from fastdec.machine import describe, machine_meta

    header = (
        f"# llama-cpp-python {llama_cpp.__version__}, {args.threads} threads, "
        f"tree budget {args.budget}, {platform.machine()}, {os.cpu_count()} CPUs; {describe()}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "header": header,
        "machine": machine_meta(),
        "results": res,
        "raw": raw,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / f"llama_cpp{args.tag}.json").write_text(json.dumps(doc, indent=1))
    md = table(res, header)
    (args.out / f"llama_cpp{args.tag}.md").write_text(md)
    print(md)
    plot(res, args.out / f"llama_cpp{args.tag}.png")


if __name__ == "__main__":
    main()
