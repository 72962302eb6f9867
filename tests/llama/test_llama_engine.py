"""fastdec inside the real llama.cpp (llama-cpp-python 0.3.36): the draft model in
``Llama(draft_model=...)``, the tree loop of :class:`FastdecLlama`, and ``fastdec serve-llama``."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from fastdec.integrations.llama_cpp import MAX_TREE, FastdecDraftModel
from fastdec.integrations.llama_cpp_tree import FastdecLlama
from llama_cpp.llama_speculative import LlamaDraftModel

#: prompts whose answers repeat what they were given (where drafting pays)
PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "# The same function, with a docstring:\ndef fibonacci(n):\n",
    "Repeat the list exactly: apple, banana, cherry, date, elderberry, fig, grape.\n"
    "apple, banana, cherry, date, elderberry, fig, grape.\nAgain:\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
]
COMMON = {"n_ctx": 1024, "n_threads": 2, "verbose": False, "seed": 0}


def plain_tokens(llm: llama_cpp.Llama, prompt: str, n: int) -> list[int]:
    """``n`` greedy tokens from llama-cpp-python's own loop (one token per decode)."""
    tokens = llm.tokenize(prompt.encode())
    return list(itertools.islice(llama_cpp.Llama.generate(llm, tokens, temp=0.0), n))


def tree_tokens(llm: FastdecLlama, prompt: str, n: int) -> list[int]:
    return list(itertools.islice(llm.generate(llm.tokenize(prompt.encode()), temp=0.0), n))


def test_every_emitted_token_is_the_verifying_argmax(q4_gguf: Path) -> None:
    """Greedy tree verification is exact: walking each verified tree, every emitted token is the
    argmax the same forward computed at its parent node, and the drafts do get accepted."""
    llm = FastdecLlama(str(q4_gguf), drafter="trie", tree_budget=16, **COMMON)
    llm.record_steps = True
    out = tree_tokens(llm, PROMPTS[0], 96)
    assert len(out) == 96
    steps = llm.recorded
    assert steps
    emitted_all: list[int] = []
    for tree, argmax, emitted in steps:
        node = 0
        first_child, next_sibling, tokens = tree.first_child, tree.next_sibling, tree.tokens
        for token in emitted[:-1]:
            assert token == argmax[node]
            child = first_child[node]
            while child >= 0 and tokens[child] != token:
                child = next_sibling[child]
            assert child >= 0, "an accepted token that is not a child"
            node = child
        assert emitted[-1] == argmax[node]  # the bonus token
        emitted_all += emitted
    assert emitted_all[:96] == out
    assert llm.spec_stats["accepted"] > 0
    assert llm.mean_accepted_tokens() > 1.2, llm.spec_stats
    assert max(tree.num_nodes for tree, _, _ in steps) > 2  # real trees, not only chains


@pytest.mark.parametrize("drafter", ["trie", "hybrid", "pld", "none"])
def test_f32_tree_loop_equals_plain_decoding(f32_gguf: Path, drafter: str) -> None:
    """With F32 weights llama.cpp's arithmetic does not depend on the batch: the tree loop's
    greedy output equals llama-cpp-python's plain loop token for token, on every prompt
    (``none``: the loop's one-token steps)."""
    plain = llama_cpp.Llama(str(f32_gguf), **COMMON)
    fast = FastdecLlama(str(f32_gguf), drafter=drafter, tree_budget=16, **COMMON)
    for prompt in PROMPTS:
        assert tree_tokens(fast, prompt, 48) == plain_tokens(plain, prompt, 48), prompt
    if drafter == "none":
        assert fast.spec_stats["drafted"] == 0
        assert fast.spec_stats["steps"] == fast.spec_stats["emitted"]
    else:
        assert fast.spec_stats["accepted"] > 0


def test_auto_tree_budget_measures_sizes_and_equals_plain(f32_gguf: Path) -> None:
    """``tree_budget="auto"`` (the default): one controller per instance tries tree sizes
    (plain decoding, size 1, among them), keeps what it learnt across requests, reports its
    choice, and changes no token (F32)."""
    plain = llama_cpp.Llama(str(f32_gguf), **COMMON)
    fast = FastdecLlama(str(f32_gguf), drafter="pld", **COMMON)
    auto = fast.auto_budget
    assert auto is not None
    for prompt in PROMPTS:
        assert tree_tokens(fast, prompt, 64) == plain_tokens(plain, prompt, 64), prompt
    tried = [size for size, runs in auto.runs.items() if runs]
    assert 1 in tried, auto.runs
    assert len(tried) >= 3, auto.runs
    assert sum(auto.runs.values()) == fast.spec_stats["steps"]
    assert fast.budget_note().startswith("auto budget:"), fast.budget_note()
    assert FastdecLlama(str(f32_gguf), drafter="none", **COMMON).auto_budget is None
    fixed = FastdecLlama(str(f32_gguf), drafter="trie", tree_budget=8, **COMMON)
    assert fixed.auto_budget is None
    assert fixed.budget_note() == "fixed tree budget: 8 nodes"


def test_completion_api_and_cross_request_memory(f32_gguf: Path) -> None:
    """``create_completion`` runs the tree loop at temperature 0 (and plain decoding above it);
    the trie remembers the first answer, so the same request again is accepted more (F32: the
    two answers are equal whatever trees verified them)."""
    llm = FastdecLlama(str(f32_gguf), drafter="trie", tree_budget=16, **COMMON)
    first = llm.create_completion(PROMPTS[2], max_tokens=48, temperature=0.0)
    s1 = dict(llm.spec_stats)
    second = llm.create_completion(PROMPTS[2], max_tokens=48, temperature=0.0)
    s2 = {k: llm.spec_stats[k] - s1[k] for k in s1}
    assert first["choices"][0]["text"] == second["choices"][0]["text"] != ""
    assert s2["steps"] < s1["steps"], (s1, s2)
    sampled = llm.create_completion(PROMPTS[2], max_tokens=8, temperature=0.7, seed=1)
    assert llm.spec_stats["steps"] == s1["steps"] + s2["steps"]  # sampling decoded plainly
    assert sampled["choices"][0]["text"]


def test_draft_model_inside_llama_generate(q4_gguf: Path) -> None:
    """The drop-in: llama-cpp-python's own speculative loop with a fastdec draft model."""
    draft = FastdecDraftModel("trie", num_pred_tokens=10)
    assert isinstance(draft, LlamaDraftModel)
    llm = llama_cpp.Llama(str(q4_gguf), draft_model=draft, logits_all=True, **COMMON)
    out = llm.create_completion(PROMPTS[1], max_tokens=48, temperature=0.0)
    assert out["choices"][0]["text"]
    stats = draft.stats()
    assert stats["steps"] > 0, stats
    assert stats["accepted"] > 0, stats


def test_bad_drafter_and_bad_path_are_named(q4_gguf: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'nope'"):
        FastdecLlama(str(q4_gguf), drafter="nope", **COMMON)
    with pytest.raises(ValueError, match=r"missing\.gguf"):
        FastdecLlama(str(tmp_path / "missing.gguf"), **COMMON)
    for bad_budget in (1, MAX_TREE + 1, "big"):
        with pytest.raises(ValueError, match=f"tree_budget = {bad_budget!r}"):
            FastdecLlama(str(q4_gguf), tree_budget=bad_budget, **COMMON)
    run = [sys.executable, "-m", "fastdec", "serve-llama"]
    bad = subprocess.run([*run, str(tmp_path / "missing.gguf")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert "missing.gguf" in bad.stderr
    bad = subprocess.run(
        [*run, str(q4_gguf), "--drafter", "nope"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2, bad.stderr
    assert "'nope'" in bad.stderr
    for budget in ("1", "big"):
        bad = subprocess.run(
            [*run, str(q4_gguf), "--tree-budget", budget], capture_output=True, text=True, timeout=120
        )
        assert bad.returncode == 2, bad.stderr
        assert f"--tree-budget {budget}" in bad.stderr or f"'{budget}'" in bad.stderr, bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def _serving(argv: list[str], port: int) -> Iterator[tuple[str, dict]]:
    """Runs ``argv`` (a ``serve-llama`` command on ``port``) until it answers ``/v1/models``;
    yields the base URL and that answer; on exit stops it with SIGTERM and checks status 0."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
                    models = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        yield base, models
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stdout.read() if proc.stdout else ""


def test_serve_llama_answers_and_stops(q4_gguf: Path) -> None:
    """``fastdec serve-llama`` on 127.0.0.1: completions and chat answer over HTTP, the greedy
    answer equals the in-process tree loop's, and SIGTERM stops it with status 0."""
    port = _free_port()
    cmd = [sys.executable, "-m", "fastdec", "serve-llama", str(q4_gguf), "--port", str(port)]
    # a fixed tree size: with Q4_1 the answer depends on the trees verified, and the auto
    # controller's choice on the clock
    cmd += ["--n-ctx", "1024", "--n-threads", "2", "--drafter", "trie", "--tree-budget", "16"]
    with _serving(cmd, port) as (base, models):
        assert models["data"][0]["id"] == q4_gguf.name
        body = {"prompt": PROMPTS[2], "max_tokens": 24, "temperature": 0, "repeat_penalty": 1.0}
        text = _post(f"{base}/v1/completions", body)["choices"][0]["text"]
        local = FastdecLlama(str(q4_gguf), drafter="trie", tree_budget=16, **COMMON)
        assert (
            text == local.create_completion(PROMPTS[2], max_tokens=24, temperature=0.0)["choices"][0]["text"]
        )
        chat = _post(
            f"{base}/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0},
        )
        assert chat["choices"][0]["message"]["content"]


def test_chat_runs_the_tree_loop_and_equals_plain(f32_gguf: Path) -> None:
    """Chat formats add a stopping criterion; the tree loop applies it as ``Llama.generate``
    does, so chat answers go through the loop and equal plain decoding's (F32)."""
    messages = [{"role": "user", "content": "List the days of the week, then list them again."}]
    plain = llama_cpp.Llama(str(f32_gguf), **COMMON)
    fast = FastdecLlama(str(f32_gguf), drafter="trie", tree_budget=16, **COMMON)
    want = plain.create_chat_completion(messages, max_tokens=64, temperature=0.0)
    got = fast.create_chat_completion(messages, max_tokens=64, temperature=0.0)
    assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
    assert got["usage"] == want["usage"]
    assert fast.spec_stats["steps"] > 0
    assert fast.spec_stats["accepted"] > 0


def test_readme_quick_start(q4_gguf: Path) -> None:
    """The README's llama.cpp quick start as printed, with the GGUF and port substituted: the
    server answers a chat request and stops on SIGTERM; the Python block answers too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from readme_blocks import blocks, command

    section = "Quick start: llama.cpp"
    serve, python_block = blocks(section, "sh")[0], blocks(section, "python")[0]
    argv = command(serve)
    assert argv[:3] == ["fastdec", "serve-llama", "model.gguf"], argv
    port = _free_port()
    argv = [sys.executable, "-m", "fastdec", "serve-llama", str(q4_gguf), *argv[3:]]
    argv[argv.index("--port") + 1] = str(port)
    with _serving(argv, port) as (base, _):
        chat = _post(
            f"{base}/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0},
        )
        assert chat["choices"][0]["message"]["content"]
    scope: dict[str, object] = {}
    code = python_block.replace('"model.gguf"', repr(str(q4_gguf)))
    exec(compile(code, "README.md (llama.cpp quick start)", "exec"), scope)
    out = scope["out"]
    assert isinstance(out, dict)
    assert out["choices"][0]["message"]["content"]
