"""Which transformers causal LMs ``fastdec.generate`` supports: a sweep over every entry of
transformers' causal-LM auto mapping, each built tiny from its config (``tests/tiny_models.py``:
random weights, every window shrunk below the prompt).

Each entry ends up as one of

* ``identical``: greedy ``fastdec.generate`` (drafter ``pld``, budget 8) equals
  ``model.generate(do_sample=False)`` token for token;
* ``refused``: ``fastdec.generate`` raised a ``ValueError`` naming the reason at the first call,
  before any forward pass;
* ``not built``: no tiny model could be built and run on a CPU with this environment (an extra
  package missing, or ``model.generate`` itself fails on it); the reason says which;
* ``crash`` or ``differs``: a failure (any other exception, or a silent difference), which
  ``tests/test_architectures.py`` fails on.

The table goes to ``docs/architectures.md`` with the transformers and torch versions;
``tests/test_architectures.py`` recomputes it and checks the committed rows.

    python benches/architectures.py [--out docs/architectures.md] [--only llama mistral ...]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # (after the installed packages)
import tiny_models

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architectures.md"
#: a repetitive prompt longer than every window (tiny_models.WINDOW), clear of the special ids
PROMPT = [5, 9, 4, 17, 22, 8, 11, 40] * 9
MAX_NEW_TOKENS = 24
#: prompt lookup drafts chains; Token Recycling branches (a tree's nodes then sit at cache slots
#: other than their positions, which a model deriving positions from slots gets wrong)
DRAFTERS = ("pld", "recycling")
PASS = ("identical", "refused", "not built")

HEADER = """# Supported architectures

Every entry of transformers' causal-LM auto mapping (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`), built
tiny from its config class's defaults (random weights, 4 layers of width 64, a 128-token
vocabulary, every sliding window or attention chunk shrunk to {window} tokens so the
{prompt}-token repetitive prompt crosses it; `tests/tiny_models.py`), then run three ways:
`model.generate(do_sample=False)` for {new} tokens; `fastdec.generate` greedy with drafters
{drafters} (budget 8: chains, then branching trees); and one bushy tree scored by fastdec's tree
cache, each node's logits against a plain forward over its path (tolerance {tolerance:g} of the
largest logit). Results:

* **identical**: the same tokens for every drafter, and the tree's logits match;
* **refused**: `fastdec.generate` raised a `ValueError` at the first call, before any forward
  pass, naming the reason (below);
* **not built**: no tiny model of it could be built and run on a CPU here (the reason says why).

No entry crashes or differs silently: `tests/test_architectures.py` recomputes this table, fails
on any crash or difference, and checks that the rows below are current. Written by
`python benches/architectures.py`; the rules are in `fastdec/generation/attention_layout.py`.
Eager or sdpa attention only (flash attention cannot take a tree mask).

**transformers {transformers}, torch {torch}: {summary}.**
"""


@dataclass(frozen=True)
class Result:
    model_type: str
    class_name: str
    result: str  # identical / refused / not built / crash / differs
    reason: str = ""
    accepted: int = 0  # draft tokens accepted (identical only; not in the table)

    @property
    def ok(self) -> bool:
        return self.result in PASS

    def row(self) -> tuple[str, str, str, str]:
        return (self.model_type, self.class_name, self.result, self.reason)


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.replace("|", "/")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if not isinstance(error, ValueError) else text


def reference(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    """``model.generate`` greedy, no end-of-sequence stop: the new tokens."""
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=None,
        pad_token_id=tiny_models.PAD,
    )
    return [int(t) for t in out[0, len(prompt) :]]


def run_fastdec(model: Any, prompt: list[int], max_new_tokens: int, **kwargs: Any) -> tuple[Any, int]:
    """``fastdec.generate`` on one prompt and how many forward passes it ran (a refusal must come
    before the first)."""
    import fastdec
    from fastdec.generation.registry import DrafterRegistry

    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    handle = model.register_forward_pre_hook(count)
    try:
        kwargs.setdefault("registry", DrafterRegistry())
        return fastdec.generate(model, [prompt], max_new_tokens=max_new_tokens, **kwargs), calls[0]
    except ValueError as e:
        e.forwards = calls[0]  # type: ignore[attr-defined]
        raise
    finally:
        handle.remove()


#: a bushy tree (parent of each node), laid out breadth first: most nodes sit at a cache slot other
#: than their position, and each sees only its ancestors among the tree's nodes
TREE_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 6, 6, 8]
#: largest tolerated difference between a tree node's logits and a plain forward's, relative to the
#: largest logit (float32)
TREE_TOLERANCE = 1e-4


def tree_logit_error(model: Any, prompt: list[int]) -> float:
    """Scores one bushy tree after the prompt with fastdec's tree cache and returns the largest
    difference between a node's logits and those of a plain forward over the prompt and the node's
    path (positions 0, 1, ... passed explicitly where the forward takes them, as ``generate``
    does), relative to the largest logit."""
    import inspect

    import torch
    from fastdec import DraftBatch, TokenTree
    from fastdec.generation.cache import check_supported
    from fastdec.generation.kv_state import TreeCache
    from fastdec.generation.step_ops import step_ops
    from fastdec.tree_batch import pad_trees

    device = next(model.parameters()).device
    cache = TreeCache(model, [prompt], step_ops(device), None, check_supported(model))
    cache.prefill()
    tokens = [prompt[(3 * i + 1) % len(prompt)] for i in range(len(TREE_PARENTS))]
    batch = pad_trees(DraftBatch([TokenTree(tokens, TREE_PARENTS)]), device)
    got = cache.score(batch)[0].float()
    takes_positions = "position_ids" in inspect.signature(type(model).forward).parameters
    worst = 0.0
    for node in range(len(tokens)):
        path, at = [], node
        while at >= 0:
            path.append(tokens[at])
            at = TREE_PARENTS[at]
        ids = torch.tensor([prompt + path[::-1]], device=device)
        extra = {"position_ids": torch.arange(ids.shape[1], device=device)[None]} if takes_positions else {}
        want = model(input_ids=ids, use_cache=False, **extra).logits[0, -1].float()
        scale = max(1.0, float(want.abs().max()))
        worst = max(worst, float((got[node] - want).abs().max()) / scale)
    return worst


def _gap(model: Any, new_tokens: list[int], at: int) -> float:
    """The gap between the two largest logits of a plain forward at new token ``at``."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([PROMPT + new_tokens[:at]]), use_cache=False).logits
    top = logits[0, -1].float().topk(2).values
    return float(top[0] - top[1])


def _supported(model: Any) -> bool:
    from fastdec.generation.cache import check_supported

    try:
        check_supported(model)
    except ValueError:  # refused: fastdec.generate says so below
        return False
    return True


def check(model_type: str, class_name: str, max_new_tokens: int = MAX_NEW_TOKENS) -> Result:
    """One entry of the sweep."""
    import torch

    def result(kind: str, reason: str = "", accepted: int = 0) -> Result:
        return Result(model_type, class_name, kind, reason, accepted)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = tiny_models.tiny_model(model_type, class_name)
        except Exception as e:
            return result("not built", _short(e))
        try:
            with torch.inference_mode():
                want: list[int] | None = reference(model, PROMPT, max_new_tokens)
            ref_error: Exception | None = None
        except Exception as e:
            want, ref_error = None, e
        if ref_error is None and _supported(model):
            try:
                with torch.inference_mode():
                    error = tree_logit_error(model, PROMPT)
            except Exception as e:
                return result("crash", f"scoring a tree: {_short(e)}")
            if error > TREE_TOLERANCE:
                return result("differs", f"a bushy tree's logits differ from plain forwards' by {error:.1e}")
        accepted = 0
        for drafter in DRAFTERS:
            try:
                out, _ = run_fastdec(model, PROMPT, max_new_tokens, drafter=drafter, budget=8)
            except ValueError as e:
                if getattr(e, "forwards", 1) == 0:
                    return result("refused", _short(e, 400))
                if ref_error is not None:
                    break
                return result("crash", f"ValueError after a forward pass: {_short(e)}")
            except Exception as e:
                if ref_error is not None:
                    break
                return result("crash", f"{drafter}: {_short(e)}")
            if ref_error is not None or want is None:
                break
            got = out.sequences[0]
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
                where = f"new token {first}" if first is not None else f"length {len(got)} vs {len(want)}"
                if first is not None:  # a near tie there reads as float noise, not a wrong mask
                    where += f" (model.generate's top-2 logit gap there {_gap(model, want, first):.1e})"
                return result("differs", f"{drafter}, at {where}: fastdec {got}, model.generate {want}")
            accepted += sum(n - 1 for n in out.accepted_lengths[0])
        if ref_error is not None or want is None:  # the tiny model does not run here at all
            return result("not built", f"model.generate fails: {_short(ref_error or RuntimeError())}")
        return result("identical", accepted=accepted)


def causal_lm_entries() -> list[tuple[str, str]]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items())


def sweep(
    only: Iterable[str] | None = None, max_new_tokens: int = MAX_NEW_TOKENS, verbose: bool = False
) -> list[Result]:
    """:func:`check` on every causal-LM entry (or those of ``only``), in model_type order."""
    import torch
    import transformers

    wanted = set(only) if only is not None else None
    results = []
    verbosity = transformers.logging.get_verbosity()
    # tiny configs trip many advisory messages
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model_type, class_name in causal_lm_entries():
            if wanted is not None and model_type not in wanted:
                continue
            t0 = time.perf_counter()
            r = check(model_type, class_name, max_new_tokens)
            if verbose:
                note = f" (accepted {r.accepted})" if r.result == "identical" else f": {r.reason}"
                print(f"{time.perf_counter() - t0:5.2f}s {model_type} {r.result}{note}", flush=True)
            results.append(r)
            gc.collect()
    finally:
        transformers.logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)
    return results


def summary(results: list[Result]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.result] = counts.get(r.result, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def refusals(results: list[Result]) -> list[tuple[str, int]]:
    """Each refusal reason (the model's name cut off; layer-type refusals grouped as one) and how
    many entries it refused, most first."""
    counts: dict[str, int] = {}
    for r in results:
        if r.result != "refused":
            continue
        reason = r.reason.split(": ", 1)[-1]
        if reason.startswith("layers of type"):
            reason = (
                "layers of a type fastdec cannot verify a tree with (recurrent, linear-attention, "
                "convolutional, chunked, sparse or shared-cache layers)"
            )
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def markdown(results: list[Result]) -> str:
    import torch
    import transformers

    text = HEADER.format(
        window=tiny_models.WINDOW,
        prompt=len(PROMPT),
        new=MAX_NEW_TOKENS,
        transformers=transformers.__version__,
        torch=torch.__version__.split("+")[0],
        summary=summary(results),
        drafters=", ".join(f"`{d}`" for d in DRAFTERS),
        tolerance=TREE_TOLERANCE,
    )
    text += "\nRefused, by reason:\n\n"
    text += "".join(f"* {n}: {reason}\n" for reason, n in refusals(results))
    text += "\n| model_type | class | result | reason |\n|---|---|---|---|\n"
    for r in results:
        cells = [f"`{r.model_type}`", f"`{r.class_name}`", r.result, r.reason]
        text += "| " + " | ".join(cells) + " |\n"
    return text


def parse_rows(text: str) -> list[tuple[str, str, str, str]]:
    """The table rows of a file :func:`markdown` wrote."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]  # (reasons hold no "|")
        cells += [""] * (4 - len(cells))
        rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2], cells[3]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--only", nargs="*", help="model types to run (default: all)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = sweep(args.only, verbose=True)
    print(f"{summary(results)} in {time.perf_counter() - t0:.0f} s")
    for reason, n in refusals(results):
        print(f"  refused {n}: {reason}")
    if args.only is None:
        args.out.write_text(markdown(results))
        print(f"wrote {args.out}")
    failures = [r for r in results if not r.ok]
    for r in failures:
        print(f"FAIL {r.model_type}: {r.result}: {r.reason}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
