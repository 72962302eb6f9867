"""Per-step tree bookkeeping on a GPU: fastdec's CUDA kernels against the torch references.

One verification step of ``fastdec.generate`` needs, besides the model's forward: the tree mask
and position ids, the verification (greedy: argmax per node -> accepted path and bonus), and the
KV compaction of the accepted path in every layer. This script times the three together, with
CUDA events, for the shape the kernels issue names (N = 81 nodes, 30 layers, 3 KV heads x 64
dims, fp16, a 1000-token prefix, batch 1 and 32), kernels and torch side by side in one run,
plus the stochastic verifier (49,152-token vocabulary) on its own. Both paths end with the same
host copy of the accepted paths, which the generation loop needs anyway.

    python benches/kernels.py            # needs a CUDA GPU and `pip install "fastdec[cuda,bench]"`

Writes results/kernels.{json,md,png}. Targets (issue 5): kernels >= 5x faster than torch, and
<= 30 us per step at batch 1 on an H100.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastdec
import numpy as np
import torch
from fastdec import sampling
from fastdec.generation import tree_ops
from fastdec.kernels import cuda_available, launch
from fastdec.machine import machine_meta

sys.path.insert(0, str(Path(__file__).parent))
from plotting import pyplot, save


def make_step(
    rows: int, n: int, past: int, layers: int, heads: int, dim: int, dtype: torch.dtype, seed: int
) -> dict[str, Any]:
    """One step's inputs: Token-Recycling-sized trees, targets that accept a few nodes, a cache."""
    rng = np.random.default_rng(seed)
    dev = torch.device("cuda")
    trees = []
    for _ in range(rows):
        parents = [-1] + [int(rng.integers(max(0, i - 12), i)) for i in range(1, n)]
        trees.append(fastdec.TokenTree(rng.choice(49152, size=n, replace=False).tolist(), parents))
    argmax = rng.integers(0, 49152, size=(rows, n))
    for b, t in enumerate(trees):  # a path of a few accepted nodes per row
        node = 0
        for _ in range(5):
            kids = [i for i in range(node + 1, n) if t.parents[i] == node]
            if not kids:
                break
            node = kids[0]
            argmax[b, t.parents[node]] = t.tokens[node]
    kv = [
        (torch.randn((rows, heads, past + n, dim), device=dev, dtype=dtype),
         torch.randn((rows, heads, past + n, dim), device=dev, dtype=dtype))
        for _ in range(layers)
    ]  # fmt: skip
    return {
        "trees": trees,
        "batch": tree_ops.pad_trees(trees, dev),
        "argmax": torch.from_numpy(argmax).to(dev),
        "valid": torch.full((rows,), past, device=dev, dtype=torch.int64),
        "valid_list": [past] * rows,
        "past": past,
        "kv": kv,
        "dtype": dtype,
    }


def step_torch(s: dict[str, Any]) -> None:
    tree_ops.tree_mask(s["batch"], s["valid"], s["past"], s["dtype"])
    paths, _ = tree_ops.verify_greedy(s["batch"], s["argmax"])
    tree_ops.compact_kv(s["kv"], s["past"], s["valid_list"], paths)


def step_kernels(s: dict[str, Any]) -> None:
    launch.tree_mask(s["batch"], s["valid"], s["past"], s["dtype"])
    paths, _ = launch.verify_greedy(s["batch"], s["argmax"])
    launch.compact_kv_in_place(s["kv"], s["past"], s["valid_list"], paths)


def time_us(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Per-call microseconds by CUDA events around each call (host work included, since every
    call ends with a device-to-host copy of the paths)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1000.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=81)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--past", type=int, default=1000)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    if not cuda_available():
        print("benches/kernels.py needs a CUDA GPU that CuPy can use (pip install 'fastdec[cuda]')")
        return 2

    dtype = torch.float16
    rows_out = []
    for rows in args.batches:
        s = make_step(rows, args.nodes, args.past, args.layers, args.heads, args.dim, dtype, seed=rows)
        # interleave the two paths' repeats so drift hits both alike
        t_torch, t_kern = [], []
        for _ in range(4):
            t_torch += time_us(lambda s=s: step_torch(s), args.repeats // 4)
            t_kern += time_us(lambda s=s: step_kernels(s), args.repeats // 4)
        probs = sampling.warp_probs(torch.randn((rows, args.nodes, 49152), device="cuda") * 3, 1.0)
        coins = sampling.draw_coins(torch.Generator().manual_seed(0), (rows, args.nodes, 2))
        s["pairs"], s["probs"], s["coins"] = [(t.tokens, t.parents) for t in s["trees"]], probs, coins

        def torch_stochastic(s: dict[str, Any] = s) -> Any:
            return sampling.verify_stochastic_batch(s["pairs"], s["probs"], s["coins"])

        def kernel_stochastic(s: dict[str, Any] = s) -> Any:
            return launch.verify_stochastic(s["batch"], s["probs"], s["coins"])

        st_torch = time_us(torch_stochastic, args.repeats // 4)
        st_kern = time_us(kernel_stochastic, args.repeats // 4)
        row = {
            "batch": rows,
            "torch_us_p50": float(np.median(t_torch)),
            "kernels_us_p50": float(np.median(t_kern)),
            "speedup": float(np.median(t_torch) / np.median(t_kern)),
            "stochastic_torch_us_p50": float(np.median(st_torch)),
            "stochastic_kernel_us_p50": float(np.median(st_kern)),
            "stochastic_speedup": float(np.median(st_torch) / np.median(st_kern)),
        }
        rows_out.append(row)
        print(
            f"batch {rows}: mask+verify+kv torch {row['torch_us_p50']:.1f} us, kernels "
            f"{row['kernels_us_p50']:.1f} us ({row['speedup']:.1f}x); stochastic verify torch "
            f"{row['stochastic_torch_us_p50']:.1f} us, kernel {row['stochastic_kernel_us_p50']:.1f} us "
            f"({row['stochastic_speedup']:.1f}x)"
        )

    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "nodes": args.nodes,
        "layers": args.layers,
        "heads": args.heads,
        "dim": args.dim,
        "past": args.past,
        "dtype": str(dtype),
        "repeats": args.repeats,
        "python": platform.python_version(),
        **machine_meta(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=2) + "\n")
    lines = [
        f"# kernels ({meta['device']}, N={args.nodes}, {args.layers} layers, {args.heads}x{args.dim} KV, "
        f"fp16, prefix {args.past})",
        "",
        "| batch | torch mask+verify+KV (us, p50) | kernels (us, p50) | speedup "
        "| stochastic verify torch (us) | kernel (us) | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows_out:
        lines.append(
            f"| {r['batch']} | {r['torch_us_p50']:.1f} | {r['kernels_us_p50']:.1f} | {r['speedup']:.1f}x | "
            f"{r['stochastic_torch_us_p50']:.1f} | {r['stochastic_kernel_us_p50']:.1f} | "
            f"{r['stochastic_speedup']:.1f}x |"
        )
    (args.out / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(rows_out))
        ax.bar(x - 0.2, [r["torch_us_p50"] for r in rows_out], 0.4, label="torch reference")
        ax.bar(x + 0.2, [r["kernels_us_p50"] for r in rows_out], 0.4, label="fastdec kernels")
        ax.set_xticks(x, [f"batch {r['batch']}" for r in rows_out])
        ax.set_ylabel("us per step (mask + verify + KV)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(meta["device"])
        save(fig, args.out / "kernels.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
