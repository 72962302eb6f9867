"""``fastdec serve-llama``: llama-cpp-python's OpenAI-compatible server on :class:`FastdecLlama`.

llama-cpp-python's server accepts only the string ``"prompt-lookup-decoding"`` as a draft model
and builds its ``Llama`` itself. This launcher runs that same server app (every endpoint, chat
templates, streaming) with the ``Llama`` class swapped for
:class:`fastdec.integrations.llama_cpp_tree.FastdecLlama` while the app loads its model, so
greedy requests (``temperature: 0``) verify fastdec draft trees and everything else decodes as
before. ::

    fastdec serve-llama model.gguf --drafter trie --port 8000
    curl http://127.0.0.1:8000/v1/completions -d '{"prompt": "Hi", "temperature": 0}' \\
        -H 'Content-Type: application/json'

It listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

from fastdec._optional import require

#: what ``fastdec serve-llama`` passes on to llama-cpp-python's ``ModelSettings``
MODEL_OPTIONS = ("n_ctx", "n_threads", "n_batch", "chat_format", "seed", "verbose")


def _budget(text: str) -> int | str:
    """``--tree-budget``: ``auto`` or an int (its range is checked by :func:`check`)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 'auto' or an int") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve-llama`` command's arguments."""
    from fastdec.integrations.llama_cpp import MAX_TREE
    from fastdec.integrations.llama_cpp import TREE_DRAFTERS as DRAFTERS

    parser.add_argument("model", help="the GGUF file to serve")
    parser.add_argument("--drafter", default="trie", help=f"one of {', '.join(DRAFTERS)} (default: trie)")
    parser.add_argument(
        "--tree-budget",
        type=_budget,
        default="auto",
        help=f"draft-tree nodes per step, 2..{MAX_TREE}, or 'auto' (default): the size with the best "
        "measured tokens per second, plain decoding included",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=4096, help="context length (default: 4096)")
    parser.add_argument("--n-threads", type=int, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--chat-format", help="llama-cpp-python chat format (default: the GGUF's template)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--model-alias", help="the model name the API reports (default: the file name)")
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's own logging")


def check(args: argparse.Namespace) -> None:
    """Fails early, naming the bad value, before anything loads.

    Raises:
        ValueError: an unknown drafter, a tree budget out of range or a GGUF path that is not a file.
    """
    from fastdec.integrations.llama_cpp import MAX_TREE
    from fastdec.integrations.llama_cpp import TREE_DRAFTERS as DRAFTERS

    if args.drafter not in DRAFTERS:
        raise ValueError(f"--drafter {args.drafter!r}: must be one of {', '.join(DRAFTERS)}")
    if args.tree_budget != "auto" and not 2 <= args.tree_budget <= MAX_TREE:
        raise ValueError(f"--tree-budget {args.tree_budget}: must be in 2..{MAX_TREE}")
    if not os.path.isfile(args.model):
        raise ValueError(f"GGUF model {args.model!r}: no such file")


@contextlib.contextmanager
def _llama_class_is(factory: Any) -> Iterator[None]:
    """While the server app loads its model, ``llama_cpp.Llama(...)`` builds ``factory(...)``."""
    llama_cpp = require("llama_cpp")
    original = llama_cpp.Llama
    setattr(llama_cpp, "Llama", factory)  # noqa: B010
    try:
        yield
    finally:
        setattr(llama_cpp, "Llama", original)  # noqa: B010


def create_app(args: argparse.Namespace) -> Any:
    """llama-cpp-python's FastAPI app serving ``args.model`` through :class:`FastdecLlama`."""
    check(args)
    require("llama_cpp")
    from llama_cpp.server.app import create_app as llama_create_app  # type: ignore[import-not-found]
    from llama_cpp.server.settings import ModelSettings, ServerSettings  # type: ignore[import-not-found]

    from fastdec.integrations.llama_cpp_tree import FastdecLlama

    model: dict[str, Any] = {
        "model": args.model,
        "model_alias": args.model_alias or os.path.basename(args.model),
    }
    for name in MODEL_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            model[name] = value
    factory = functools.partial(FastdecLlama, drafter=args.drafter, tree_budget=args.tree_budget)
    with _llama_class_is(factory):
        return llama_create_app(
            server_settings=ServerSettings(host=args.host, port=args.port),
            model_settings=[ModelSettings(**model)],
        )


def serve(args: argparse.Namespace) -> int:
    """Runs the server until interrupted (Ctrl-C or SIGTERM stop it cleanly); returns 0."""
    import signal

    check(args)
    uvicorn = require("uvicorn")
    app = create_app(args)

    def stopped(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was there before it: this one, so a requested stop exits with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopped)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
