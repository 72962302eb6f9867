"""Constrained sampling on SmolLM2-135M: AWRS against full masks, host time per sampled token.

Phase 1 records real trajectories: for each task (a chat prompt asking for a date, an email, an
identifier, ...) the model runs with a KV cache and its next-token logits are saved at every step,
while the text is extended by AWRS at temperature 1 under the task's regex (up to
``--max-tokens`` tokens or end of sequence). Phase 2 replays every recorded step (the same logits
and the same text) through each method, interleaved step by step, and times the host work of
choosing the next token; the model's forward is excluded:

* ``awrs``: ``Regex.sample`` / ``JsonSchema.sample`` (softmax + AWRS in Rust, a few constraint
  checks: DFA walks for regexes, llguidance token checks for schemas);
* ``fastdec-mask``: ``.mask`` (the full int32 bitmask; llguidance's mask for schemas) + masked
  sampling;
* ``llguidance-mask``: llguidance 1.9 (PyPI) ``LLMatcher`` on the same regex or schema with
  ``no_forcing`` (so its mask is the same set of tokens), ``fill_next_token_bitmask`` + the same
  masked sampling.

Masked sampling is one numpy pass (mask the logits, softmax, inverse CDF) shared by both mask
methods. Reports constraint checks per step (AWRS) and microseconds per token (p50/p99/p99.9),
and asserts that llguidance's and fastdec's masks agree at every step.

    python benches/constrained.py    # ~2 min; writes results/constrained.{json,md,png}

Tasks: six regexes (dates, emails, identifiers, ...) and three JSON Schemas. Targets (issue 6):
mean checks per step <= 3; AWRS >= 2x faster than llguidance's mask + sample at p50 and >= 5x at
p99.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import fastdec
import numpy as np
import torch
from fastdec.generation import cache as kv
from fastdec.machine import machine_meta
from fastdec.vocab import TokenVocab

sys.path.insert(0, str(Path(__file__).parent))
from plotting import pyplot, save

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "smollm2-135m-instruct"
# Prompts state the format, as constrained decoding is used in practice (the constraint
# guarantees it, the prompt makes the model agree with it, which AWRS's cost depends on).
REGEX_TASKS = [
    ("date", "When did the Berlin Wall fall? Reply with the date only, as YYYY-MM-DD.",
     r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    ("email", "Invent an email address for a bakery. Reply with the address only.",
     r"[a-z0-9._]{1,24}@[a-z0-9]{1,16}\.(com|org)"),
    ("identifier", "Name a Python function that sorts users by age. Reply with the name only.",
     r"[a-z_][a-z0-9_]{0,40}"),
    ("phone", "Invent a US phone number for a dentist. Reply with the number only, as (555) 123-4567.",
     r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
    ("sentence", "Describe the sea in one short sentence.", r"[A-Z][a-z]*( [a-z]+){2,20}\."),
    ("number", "How many legs do three spiders have? Reply with the number only.", r"[0-9]{1,6}"),
]  # fmt: skip
JSON_TASKS = [
    ("json-person", "Describe a fictional person as a JSON object with the keys name and age.",
     {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
      "age": {"type": "integer", "minimum": 0}}, "required": ["name", "age"],
      "additionalProperties": False}),
    ("json-product", "Describe a coffee mug for an online shop as JSON (title, price, in_stock, tags).",
     {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
      "price": {"type": "number"}, "in_stock": {"type": "boolean"},
      "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}},
      "required": ["title", "price", "in_stock"], "additionalProperties": False}),
    ("json-event", "Give a concert as JSON with the event name, its date (YYYY-MM-DD) and the city.",
     {"type": "object", "properties": {"event": {"type": "string", "maxLength": 60},
      "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
      "city": {"type": "string", "maxLength": 40}}, "required": ["event", "date", "city"],
      "additionalProperties": False}),
]  # fmt: skip
TASKS: list[tuple[str, str, Any]] = [*REGEX_TASKS, *JSON_TASKS]


def constraints(spec: Any, native: fastdec.TokenVocab, llguidance: Any) -> tuple[Any, Any]:
    """fastdec's constraint and llguidance's grammar (``no_forcing``: the mask is every token
    that keeps the text valid, the set fastdec's constraints allow) for a regex or a schema."""
    if isinstance(spec, str):
        lark = '%llguidance {"no_forcing": true}\nstart: /' + spec + "/"
        # No mask cache: every replay of a step pays its trie walk, as the first visit would.
        return fastdec.Regex(spec, native, mask_cache_bytes=0), llguidance.grammar_from("lark", lark)
    lark = '%llguidance {"no_forcing": true}\nstart: %json ' + json.dumps(spec)
    return fastdec.JsonSchema(spec, native), llguidance.grammar_from("lark", lark)


def masked_sample(logits: np.ndarray, words: np.ndarray, coin: float) -> int:
    """Sample from softmax(logits) restricted to the bitmask (int32 words): one numpy pass."""
    allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[: logits.size].astype(bool)
    x = np.where(allowed, logits, -np.inf)
    x = np.exp(x - x.max())
    cdf = np.cumsum(x)
    return int(np.searchsorted(cdf, coin * cdf[-1], side="right"))


Step = tuple[Any, np.ndarray, list[int]]


def record(
    model: Any, tok: Any, rx: fastdec.Constraint, prompt: str, max_tokens: int, seed: int
) -> list[Step]:
    """(state, logits, text tokens so far) at every step of one AWRS-sampled trajectory."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    if not isinstance(ids, list):  # transformers >= 5 returns a BatchEncoding
        ids = ids["input_ids"]
    eos = tok.eos_token_id
    steps = []
    state, text = rx.start(), []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for i in range(max_tokens):
            logits = out.logits[0, -1].float().numpy().copy()
            steps.append((state, logits, list(text)))
            y, _, _ = rx.sample(state, logits, 1.0, "none", seed * 1000 + i)
            if y is None or y == eos:
                break
            text.append(y)
            state = rx.advance(state, [y])
            out = kv.run(model, kv.returned(out), input_ids=torch.tensor([[y]]), use_cache=True)
    return steps


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=SHARED)
    ap.add_argument("--trajectories", type=int, default=3, help="recorded trajectories per task")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="timed replays of every step")
    ap.add_argument(
        "--mask-after", type=int, default=None, help="AWRS rejections before the full-mask fallback"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import llguidance
    import llguidance.hf
    import llguidance.numpy as llnp
    from fastdec.models import load_model

    model, tok = load_model(str(args.model / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    vocab = TokenVocab.from_hf_tokenizer(tok, vocab_size=int(model.config.vocab_size))
    native = vocab
    lltok = llguidance.hf.from_tokenizer(tok, n_vocab=int(model.config.vocab_size))

    methods = ("awrs", "fastdec-mask", "llguidance-mask")
    cap = {} if args.mask_after is None else {"mask_after": args.mask_after}
    mask_after = fastdec._core._MASK_AFTER if args.mask_after is None else args.mask_after
    times: dict[str, dict[str, list[float]]] = {t[0]: {m: [] for m in methods} for t in TASKS}
    checks: dict[str, list[int]] = {t[0]: [] for t in TASKS}
    rng = np.random.default_rng(0)
    for name, prompt, spec in TASKS:
        rx, grammar = constraints(spec, native, llguidance)
        err = llguidance.LLMatcher.validate_grammar(grammar, lltok)
        if err:
            raise SystemExit(f"llguidance rejects {spec!r}: {err}")
        for traj in range(args.trajectories):
            steps = record(model, tok, rx, prompt, args.max_tokens, seed=traj)
            matcher = llguidance.LLMatcher(lltok, grammar)
            bitmask = llnp.allocate_token_bitmask(1, lltok.vocab_size)
            for state, logits, text in steps:
                if text:
                    assert matcher.consume_token(text[-1]), matcher.get_error()
                for r in range(args.repeats):
                    coin = float(rng.random())
                    seed = int(rng.integers(2**62))
                    for m in methods if r % 2 == 0 else methods[::-1]:
                        t0 = time.perf_counter_ns()
                        if m == "awrs":
                            _, _, c = rx.sample(state, logits, 1.0, "none", seed, **cap)
                        elif m == "fastdec-mask":
                            masked_sample(logits, rx.mask(state), coin)
                        else:
                            llnp.fill_next_token_bitmask(matcher, bitmask, 0)
                            masked_sample(logits, bitmask[0], coin)
                        times[name][m].append((time.perf_counter_ns() - t0) / 1000.0)
                    if r == 0:
                        checks[name].append(c)
                        ours = rx.mask(state)
                        llnp.fill_next_token_bitmask(matcher, bitmask, 0)
                        assert np.array_equal(ours, bitmask[0]), f"{name}: masks differ at {text}"
        print(
            f"{name}: checks mean {np.mean(checks[name]):.2f}; p50 us "
            + ", ".join(f"{m} {pct(times[name][m], 50):.1f}" for m in methods)
        )

    every = {m: [x for t in times.values() for x in t[m]] for m in methods}
    all_checks = [c for cs in checks.values() for c in cs]
    # Steps that reached the full-mask fallback (an upper bound: the last allowed check may pass).
    capped = float(np.mean(np.asarray(all_checks) >= mask_after))
    summary = {
        m: {q: pct(every[m], float(q[1:])) for q in ("p50", "p99", "p99.9")}
        | {"mean": float(np.mean(every[m]))}
        for m in methods
    }
    speed = {q: summary["llguidance-mask"][q] / summary["awrs"][q] for q in ("p50", "p99", "p99.9")}
    meta = {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1, fp32)",
        "vocab": native.size,
        "steps": len(all_checks),
        "repeats": args.repeats,
        "llguidance": llguidance.get_version() if hasattr(llguidance, "get_version") else "?",
        "machine": platform.machine(),
        **machine_meta(),
        "python": platform.python_version(),
    }
    result = {
        "meta": meta,
        "checks": {
            "mean": float(np.mean(all_checks)),
            "p50": pct(all_checks, 50),
            "p99": pct(all_checks, 99),
            "per_task_mean": {k: float(np.mean(v)) for k, v in checks.items()},
            "mask_after": mask_after,
            "share_at_cap": capped,
        },
        "us_per_token": summary,
        "llguidance_over_awrs": speed,
        "per_task_p50_us": {k: {m: pct(v[m], 50) for m in methods} for k, v in times.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "constrained.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# constrained sampling ({meta['model']}, vocab {meta['vocab']}, {meta['steps']} recorded steps "
        f"x {args.repeats} replays, {len(REGEX_TASKS)} regex and {len(JSON_TASKS)} JSON-schema tasks)",
        "",
        f"AWRS checks per step: mean {result['checks']['mean']:.2f}, p50 {result['checks']['p50']:.0f}, "
        f"p99 {result['checks']['p99']:.0f}; {100 * capped:.1f}% of steps reach the full-mask fallback "
        f"after {mask_after} rejections",
        "",
        "| method | p50 us | p99 us | p99.9 us | mean us |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        s = summary[m]
        lines.append(f"| {m} | {s['p50']:.1f} | {s['p99']:.1f} | {s['p99.9']:.1f} | {s['mean']:.1f} |")
    lines += [
        "",
        f"llguidance mask + sample over AWRS: {speed['p50']:.1f}x at p50, {speed['p99']:.1f}x at p99, "
        f"{speed['p99.9']:.1f}x at p99.9",
        "",
        "| task | AWRS checks (mean) | " + " | ".join(f"{m} p50 us" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for k in times:
        lines.append(
            f"| {k} | {result['checks']['per_task_mean'][k]:.2f} | "
            + " | ".join(f"{result['per_task_p50_us'][k][m]:.1f}" for m in methods)
            + " |"
        )
    (args.out / "constrained.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        qs = ("p50", "p99", "p99.9")
        x = np.arange(len(qs))
        for i, m in enumerate(methods):
            ax.bar(x + (i - 1) * 0.27, [summary[m][q] for q in qs], 0.27, label=m)
        ax.set_xticks(x, qs)
        ax.set_yscale("log")
        ax.set_ylabel("host us per sampled token")
        ax.set_title(f"SmolLM2 vocab {meta['vocab']}, regex and JSON-schema tasks")
        ax.legend()
        save(fig, args.out / "constrained.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
