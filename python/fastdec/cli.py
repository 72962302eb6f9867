"""The ``fastdec`` command line (``python -m fastdec``; needs the ``torch`` extra).

``fastdec demo`` generates one greedy answer three times: with transformers' ``model.generate``,
with :func:`fastdec.generate` without drafts (fastdec's plain loop), and with
:func:`fastdec.generate` speculating (streamed). It prints the throughput of each, the mean
tokens accepted per step, the tree size ``budget="auto"`` settled on and why, and whether the
outputs are identical (they must be: greedy speculative decoding is lossless)::

    fastdec demo --drafter hybrid --max-new-tokens 256

``fastdec serve-llama MODEL.gguf --drafter trie`` serves a GGUF model with llama-cpp-python's
OpenAI-compatible server on fastdec's tree loop (:mod:`fastdec.integrations.llama_cpp_server`).
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastdec._optional import require
from fastdec.drafters import DEFAULT_DRAFTER, DRAFTER_NAMES

#: asks for an answer that repeats itself (code, a docstring, names): where drafting pays off
DEFAULT_PROMPT = (
    "Write a Python function `is_prime(n)` with a docstring, then a second function "
    "`primes_below(n)` that uses it, and show an example call of each."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 for bad arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command not in ("demo", "serve-llama"):
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "serve-llama":
            from fastdec.integrations import llama_cpp_server

            return llama_cpp_server.serve(args)
        return _demo(args)
    except (ValueError, OSError) as err:
        print(f"fastdec: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"fastdec: error: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="compare greedy generation with and without fastdec",
        description="Generates a chat answer with transformers' generate, with fastdec.generate "
        "without drafts and with fastdec.generate speculating (streamed), then prints tokens/s, "
        "mean accepted tokens per step, the tree size budget='auto' chose and the speedups.",
    )
    demo.add_argument(
        "--model",
        help="a .gguf file, a llama2.c .bin checkpoint, a transformers directory, a model name "
        "(smollm2-135m, gemma3-270m: downloaded once) or hub id "
        "(default: $FASTDEC_MODEL, else SmolLM2-135M-Instruct, downloaded once)",
    )
    demo.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message (default: a coding task)")
    demo.add_argument("--max-new-tokens", type=_positive_int, default=128, metavar="N")
    demo.add_argument("--drafter", choices=DRAFTER_NAMES, default=DEFAULT_DRAFTER)
    demo.add_argument(
        "--budget", type=_budget, default="auto", help="tree nodes per step, or 'auto' (default)"
    )
    demo.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads")
    demo.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="the model's dtype, for all three runs (default: the checkpoint's; a GGUF file: float32)",
    )
    demo.add_argument(
        "--no-baseline", action="store_true", help="skip the two runs without speculation (HF and fastdec's)"
    )
    serve = commands.add_parser(
        "serve-llama",
        help="an OpenAI-compatible llama.cpp server that verifies fastdec draft trees",
        description="Serves a GGUF model with llama-cpp-python's server app on 127.0.0.1; greedy "
        "requests (temperature 0) run fastdec's tree loop, the rest decode as usual. Needs "
        "llama-cpp-python[server].",
    )
    from fastdec.integrations.llama_cpp_server import add_arguments

    add_arguments(serve)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _budget(text: str) -> str | int:
    return "auto" if text == "auto" else _positive_int(text)


def _demo(args: argparse.Namespace) -> int:
    torch = require("torch")
    transformers = require("transformers")
    import fastdec
    from fastdec import models

    generate = getattr(fastdec, "generate", None)
    if generate is None:
        print("fastdec: error: this build has no fastdec.generate", file=sys.stderr)
        return 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # The demo prints its own progress: no loading bars or info logs from transformers.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    source = models.resolve_model(args.model)
    print(f"loading {source} ...", file=sys.stderr)
    model, tokenizer = models.load_model(source, dtype=args.dtype)
    from fastdec.machine import describe

    print(f"CPU: {describe()}, {torch.get_num_threads()} torch threads", file=sys.stderr)
    input_ids, eos, streamer, decode = _prepare(model, tokenizer, source, args.prompt)
    pad = eos[0] if eos else None
    num_prompt = input_ids.shape[1]

    def timed(run: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        result = run()
        return result, time.perf_counter() - start

    with torch.inference_mode():
        model(input_ids)  # warm-up, so no timed run pays for first-call allocations
        baseline: list[int] | None = None
        plain: list[int] | None = None
        if not args.no_baseline:
            out, baseline_seconds = timed(
                lambda: model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=False,
                    max_new_tokens=args.max_new_tokens,
                    eos_token_id=eos or None,
                    pad_token_id=pad,
                )
            )
            baseline = out[0, num_prompt:].tolist()
            res, plain_seconds = timed(
                lambda: generate(
                    model,
                    input_ids,
                    drafter=None,
                    max_new_tokens=args.max_new_tokens,
                    eos_token_id=eos or None,
                )
            )
            plain = list(res.sequences[0])

        print(f"--- fastdec.generate (drafter={args.drafter}, budget={args.budget}) ---")
        result, fastdec_seconds = timed(
            lambda: generate(
                model,
                input_ids,
                drafter=args.drafter,
                max_new_tokens=args.max_new_tokens,
                budget=args.budget,
                eos_token_id=eos or None,
                streamer=streamer,
            )
        )
    tokens = list(result.sequences[0])
    print()
    print("---")
    # Rates are end to end (prefill included); the speculative run's includes its streamer.
    fastdec_rate = len(tokens) / fastdec_seconds
    if baseline is not None and plain is not None:
        baseline_rate = len(baseline) / baseline_seconds
        plain_rate = len(plain) / plain_seconds
        print(f"HF generate, greedy:   {_rate(len(baseline), baseline_seconds)}")
        speed = plain_rate / baseline_rate
        print(f"fastdec, no drafts:    {_rate(len(plain), plain_seconds)} ({speed:.2f}x HF)")
    print(
        f"fastdec, speculative:  {_rate(len(tokens), fastdec_seconds)}, "
        f"{result.mean_accepted:.2f} tokens per step over {result.steps} steps"
    )
    if args.budget != "auto":
        print(f"fixed budget: {args.budget}-node trees")
    if result.budget_note:  # auto's choice and why, then the CPU linear path and its costs
        print(result.budget_note)
    if baseline is None or plain is None:
        return 0
    print(
        f"speedup:  {fastdec_rate / baseline_rate:.2f}x over HF greedy "
        f"({fastdec_rate / plain_rate:.2f}x from speculation over fastdec's plain loop)"
    )
    same = _until_eos(baseline, eos) == _until_eos(tokens, eos) == _until_eos(plain, eos)
    print(f"identical outputs: {'yes' if same else 'NO'}")
    if not same:
        print(f"baseline output: {decode(baseline)!r}")
        return 1
    return 0


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s"


def _prepare(model: Any, tokenizer: Any, source: str, prompt: str) -> tuple[Any, list[int], Any, Any]:
    """``(input_ids [1, T] int64, eos ids, streamer, decode)`` for a model and its tokenizer."""
    torch = require("torch")
    if tokenizer is None:
        return _prepare_llama2c(model, source, prompt)
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False).input_ids
    else:
        ids = tokenizer(prompt).input_ids
    eos = _eos_ids(tokenizer.eos_token_id) or _eos_ids(model.generation_config.eos_token_id)
    streamer = require("transformers").TextStreamer(tokenizer, skip_prompt=True)

    def decode(tokens: list[int]) -> str:
        return str(tokenizer.decode(tokens, skip_special_tokens=True))

    return torch.tensor([ids], dtype=torch.long), eos, streamer, decode


def _prepare_llama2c(model: Any, source: str, prompt: str) -> tuple[Any, list[int], Any, Any]:
    """A llama2.c checkpoint: no encoder, so the prompt is BOS alone (a story from scratch)."""
    torch = require("torch")
    from fastdec import models

    if prompt != DEFAULT_PROMPT:
        print("note: llama2.c models have no prompt encoder here; starting from BOS", file=sys.stderr)
    vocab_size = int(model.config.vocab_size)
    pieces: list[bytes] | None = None
    # llama2.c names the tokenizer of a custom vocabulary tok{vocab_size}.bin, else tokenizer.bin
    for name in (f"tok{vocab_size}.bin", "tokenizer.bin"):
        candidate = Path(source).expanduser().parent / name
        if candidate.is_file():
            pieces = models.load_llama2c_tokenizer(candidate)
            break
    bos = int(model.config.bos_token_id)
    eos = _eos_ids(model.generation_config.eos_token_id)

    def decode(tokens: list[int]) -> str:
        if pieces is None:
            return " ".join(map(str, tokens))
        return models.decode_llama2c(pieces, [bos, *tokens])

    return torch.tensor([[bos]], dtype=torch.long), eos, _Llama2cStreamer(pieces, bos), decode


class _Llama2cStreamer:
    """A transformers-style streamer (``put`` / ``end``) printing llama2.c pieces as they come.

    The first ``put`` is the prompt and is not printed; ids are printed raw without a vocabulary.
    """

    def __init__(self, pieces: list[bytes] | None, bos: int) -> None:
        self._pieces = pieces
        self._prev: int | None = bos
        self._prompt_done = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def put(self, value: Any) -> None:
        from fastdec import models

        ids = [int(t) for t in value.reshape(-1).tolist()]
        if not self._prompt_done:
            self._prompt_done = True
            self._prev = ids[-1] if ids else self._prev
            return
        for token in ids:
            if self._pieces is None:
                text = f"{token} "
            elif token <= 2:  # unk / bos / eos: llama2.c markup, not text
                text = ""
            else:
                text = self._decoder.decode(models.llama2c_piece(self._pieces, token, self._prev))
            self._prev = token
            print(text, end="", flush=True)

    def end(self) -> None:
        print(self._decoder.decode(b"", final=True), flush=True)


def _eos_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    """``tokens`` before the first end-of-sequence token (whether a generator keeps it varies)."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens
