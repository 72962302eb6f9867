"""Per-step tree work with the 81-node Token Recycling template: fastdec vs NumPy, one run.

A decoding step builds the tree from candidate tokens, derives position ids, the additive
attention mask and the leaf paths, and verifies greedily against the target's argmax. Both
implementations run the same steps on the same inputs in this process, outputs are asserted
equal, and each step is timed individually (p50/p99). Writes JSON, a Markdown table and a PNG.

    python benches/tree_step.py [--steps 20000] [--prefix-len 512] [--out benches/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdec
import numpy_tree
from fastdec._core import _time_tree_step
from fastdec.machine import machine_meta
from plotting import pyplot, save

VOCAB = 32000
TOP_K = 8


def make_inputs(steps: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Candidate tokens (a Token Recycling adjacency walk) and target argmax per step."""
    rng = np.random.default_rng(seed)
    template = fastdec.TreeTemplate.token_recycling()
    parents, ranks = template.parents, template.ranks
    # Each row holds TOP_K distinct successors, as a top-k row of logits does.
    table = np.stack([rng.choice(VOCAB, TOP_K, replace=False) for _ in range(4096)]).astype(np.int32)
    candidates, argmaxes = [], []
    for _ in range(steps):
        tokens = np.empty(template.num_nodes, dtype=np.int32)
        tokens[0] = rng.integers(VOCAB)
        for i in range(1, template.num_nodes):
            tokens[i] = table[tokens[parents[i]] % len(table), ranks[i]]
        # The target agrees with the rank-0 child 60% of the time, else says something new.
        argmax = rng.integers(VOCAB, size=template.num_nodes).astype(np.int32)
        first_child = np.full(template.num_nodes, -1)
        for i in range(template.num_nodes - 1, 0, -1):
            first_child[parents[i]] = i
        agree = (rng.random(template.num_nodes) < 0.6) & (first_child >= 0)
        argmax[agree] = tokens[first_child[agree]]
        candidates.append(tokens)
        argmaxes.append(argmax)
    return candidates, argmaxes


def fastdec_step(template: fastdec.TreeTemplate, prefix_len: int, mask_prefix: int) -> Callable[..., Any]:
    def step(tokens: np.ndarray, argmax: np.ndarray) -> tuple[Any, ...]:
        tree = template.fill(tokens)
        pos = tree.position_ids(prefix_len)
        mask = tree.additive_mask(mask_prefix, "float32")
        paths = tree.leaf_paths()
        nodes, m, bonus = tree.verify_greedy(argmax)
        return pos, mask, paths, nodes, m, bonus

    return step


def numpy_step(template: numpy_tree.NumpyTemplate, prefix_len: int, mask_prefix: int) -> Callable[..., Any]:
    def step(tokens: np.ndarray, argmax: np.ndarray) -> tuple[Any, ...]:
        tree = numpy_tree.fill(template, tokens)
        pos = numpy_tree.position_ids(tree, prefix_len)
        mask = numpy_tree.additive_mask(tree, mask_prefix, np.float32)
        paths = numpy_tree.leaf_paths(tree)
        nodes, m, bonus = numpy_tree.verify_greedy(tree, argmax)
        return pos, mask, paths, nodes, m, bonus

    return step


def time_steps(
    step: Callable[..., Any], cands: list[np.ndarray], argmaxes: list[np.ndarray], rounds: int
) -> np.ndarray:
    """Per-step wall times in microseconds (each step timed on its own)."""
    clock = time.perf_counter_ns
    out = np.empty(rounds * len(cands))
    k = 0
    for _ in range(rounds):
        for tokens, argmax in zip(cands, argmaxes, strict=True):
            t0 = clock()
            step(tokens, argmax)
            out[k] = clock() - t0
            k += 1
    return out / 1e3


def summarize(us: np.ndarray) -> dict[str, float]:
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="distinct steps (inputs)")
    ap.add_argument("--rounds", type=int, default=10, help="passes over the steps")
    ap.add_argument("--prefix-len", type=int, default=512, help="cached tokens before the root")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()

    template = fastdec.TreeTemplate.token_recycling()
    np_template = numpy_tree.NumpyTemplate.from_parents(np.asarray(template.parents))
    cands, argmaxes = make_inputs(args.steps, args.seed)

    # Two configurations: the mask of the tree block only (what changes per step; a server keeps
    # the constant prefix columns), and the full [N, prefix_len + N] block transformers wants.
    configs = {"tree-block mask": 0, f"full mask (prefix {args.prefix_len})": args.prefix_len}
    results: dict[str, Any] = {}
    for name, mask_prefix in configs.items():
        fd = fastdec_step(template, args.prefix_len, mask_prefix)
        ref = numpy_step(np_template, args.prefix_len, mask_prefix)
        for tokens, argmax in zip(cands, argmaxes, strict=True):  # equal outputs, and warm-up
            a, b = fd(tokens, argmax), ref(tokens, argmax)
            for x, y in zip(a, b, strict=True):
                assert np.array_equal(x, y), (name, x, y)
        # Interleave the implementations round by round so that machine noise hits all of them.
        tok2d, am2d = np.stack(cands), np.stack(argmaxes)
        t_fd, t_np, t_rs = [], [], []
        for _ in range(args.rounds):
            t_fd.append(time_steps(fd, cands, argmaxes, 1))
            t_np.append(time_steps(ref, cands, argmaxes, 1))
            ns = _time_tree_step(
                template, tok2d, am2d, prefix_len=args.prefix_len, mask_prefix_len=mask_prefix
            )
            t_rs.append(ns / 1e3)
        fd_us, np_us, rs_us = np.concatenate(t_fd), np.concatenate(t_np), np.concatenate(t_rs)
        results[name] = {
            "mask_prefix_len": mask_prefix,
            "fastdec": summarize(fd_us),
            "rust": summarize(rs_us),
            "numpy": summarize(np_us),
            "speedup_p50": float(np.percentile(np_us, 50) / np.percentile(fd_us, 50)),
            "speedup_p99": float(np.percentile(np_us, 99) / np.percentile(fd_us, 99)),
        }

    meta = {
        "benchmark": "tree_step",
        "template": "token_recycling 2.2.2 (81 nodes)",
        "steps_timed": args.steps * args.rounds,
        "prefix_len": args.prefix_len,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **machine_meta(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastdec": fastdec.__version__,
        "targets": {"fastdec_p50_us_max": 5.0, "speedup_min": 20.0},
    }
    report = {"meta": meta, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tree_step.json").write_text(json.dumps(report, indent=2) + "\n")

    lines = [
        "| configuration | fastdec from Python p50 / p99 (us) | fastdec in Rust p50 / p99 (us) "
        "| NumPy p50 / p99 (us) | speedup vs NumPy p50 / p99 |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        f, rs, n = r["fastdec"], r["rust"], r["numpy"]
        lines.append(
            f"| {name} | {f['p50_us']:.2f} / {f['p99_us']:.2f} | {rs['p50_us']:.2f} / {rs['p99_us']:.2f} "
            f"| {n['p50_us']:.1f} / {n['p99_us']:.1f} | {r['speedup_p50']:.1f}x / {r['speedup_p99']:.1f}x |"
        )
    table = "\n".join(lines)
    (args.out / "tree_step.md").write_text(
        f"# tree_step ({meta['template']}, {meta['steps_timed']} steps, {meta['machine']}, "
        f"{meta['cpus']} CPUs, Python {meta['python']}, NumPy {meta['numpy']})\n\n{table}\n"
    )
    print(table)
    head = results["tree-block mask"]
    print(
        f"\nper-step set from Python: p50 {head['fastdec']['p50_us']:.2f} us (target <= 5 us), "
        f"{head['speedup_p50']:.1f}x NumPy at p50 (target >= 20x)"
    )
    plot(results, args.out / "tree_step.png")


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    impls = [("rust", "tab:green"), ("fastdec", "tab:blue"), ("numpy", "tab:orange")]
    labels = {"rust": "fastdec in Rust", "fastdec": "fastdec from Python", "numpy": "NumPy"}
    width = 0.27
    for k, (impl, color) in enumerate(impls):
        p50 = [results[n][impl]["p50_us"] for n in names]
        p99 = [results[n][impl]["p99_us"] for n in names]
        bars = ax.bar(x + (k - 1) * width, p50, width, color=color, label=f"{labels[impl]} p50")
        ax.scatter(
            x + (k - 1) * width,
            p99,
            color="black",
            marker="_",
            s=300,
            zorder=3,
            label="p99" if k == 0 else None,
        )
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("microseconds per step (log)")
    ax.set_title("Per-step tree work, 81-node Token Recycling template")
    ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
