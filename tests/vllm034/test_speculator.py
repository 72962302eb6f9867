"""fastdec's vLLM 0.34 plugin through vLLM 0.34.0's own loader, config validation, speculator
construction, request state and write kernels (see conftest.py for what runs and what does not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fastdec
import numpy as np
import pytest
import torch
from fastdec.integrations.vllm_speculator import FastdecSpeculator
from fastdec.integrations.vllm_speculator_config import (
    FastdecSpeculatorConfig,
    HybridSpeculatorConfig,
    PldSpeculatorConfig,
    TrieSpeculatorConfig,
)
from runner import Runner
from vllm.config import VllmConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.v1.worker.gpu.spec_decode.speculator import BaseSpeculator
from vllm.v1.worker.gpu.spec_decode.speculator_config import registered_speculative_methods

K = 4
MAX_LEN = 160
METHODS = {
    "fastdec": FastdecSpeculatorConfig,
    "fastdec_trie": TrieSpeculatorConfig,
    "fastdec_pld": PldSpeculatorConfig,
    "fastdec_hybrid": HybridSpeculatorConfig,
}


def serve_config(model_dir: Path, speculative: dict[str, Any], max_num_seqs: int = 8) -> VllmConfig:
    """The engine config ``vllm serve MODEL --speculative-config JSON ...`` builds: vLLM's own
    argument parser, ``EngineArgs`` and config validation."""
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    args = parser.parse_args(
        [
            "--model",
            str(model_dir),
            "--speculative-config",
            json.dumps(speculative),
            "--skip-tokenizer-init",
            "--max-model-len",
            str(MAX_LEN),
            "--max-num-seqs",
            str(max_num_seqs),
            "--dtype",
            "float32",
        ]
    )
    return AsyncEngineArgs.from_cli_args(args).create_engine_config()


def runner(model_dir: Path, method: str, dense: bool = False, **options: Any) -> Runner:
    spec: dict[str, Any] = {"method": method, "num_speculative_tokens": K}
    if options:
        spec["speculator_options"] = options
    return Runner(serve_config(model_dir, spec), dense=dense)


def test_the_entry_point_registers_every_method() -> None:
    assert set(METHODS) <= set(registered_speculative_methods())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_serve_config_builds_the_speculator(model_dir: Path, method: str) -> None:
    config = serve_config(model_dir, {"method": method, "num_speculative_tokens": K})
    spec = config.speculative_config
    assert spec.custom_method == method
    assert type(spec.speculator_config) is METHODS[method]
    assert spec.num_speculative_tokens == K
    speculator = Runner(config).speculator
    assert isinstance(speculator, FastdecSpeculator)
    assert isinstance(speculator, BaseSpeculator)
    want = {"fastdec": "trie", "fastdec_trie": "trie", "fastdec_pld": "pld", "fastdec_hybrid": "hybrid"}[
        method
    ]
    assert speculator.proposer.drafter_name == want
    assert speculator.session.k == K
    assert not speculator.session.adaptive


def test_the_readme_quick_start_builds_the_speculator(model_dir: Path) -> None:
    """The README's vLLM 0.34 line as printed (MODEL substituted) through vLLM's own parser."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from readme_blocks import blocks, command

    (argv,) = [command(b) for b in blocks("Quick start: vLLM", "sh") if "fastdec_" in b]
    assert argv[:3] == ["vllm", "serve", "MODEL"], argv
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    extra = ["--skip-tokenizer-init", "--max-model-len", str(MAX_LEN), "--dtype", "float32"]
    args = parser.parse_args(["--model", str(model_dir), *argv[3:], *extra])
    config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    assert config.speculative_config.custom_method == "fastdec_trie"
    assert isinstance(Runner(config).speculator, FastdecSpeculator)


def test_num_speculative_tokens_has_a_default(model_dir: Path) -> None:
    config = serve_config(model_dir, {"method": "fastdec_pld"})
    assert config.speculative_config.num_speculative_tokens == 5


def test_options_reach_the_drafter(model_dir: Path) -> None:
    config = serve_config(
        model_dir,
        {
            "method": "fastdec",
            "num_speculative_tokens": K,
            "speculator_options": {
                "drafter": "pld",
                "prompt_lookup_min": 2,
                "prompt_lookup_max": 3,
                "max_requests": 64,
            },
        },
    )
    proposer = Runner(config).speculator.proposer
    assert (proposer.drafter_name, proposer.prompt_lookup_min, proposer.prompt_lookup_max) == ("pld", 2, 3)
    assert proposer.session.max_requests == 64


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"method": "fastdec_trie", "speculator_options": {"max_request": 8}},
            "unknown fastdec speculator option 'max_request'",
        ),
        ({"method": "fastdec_trie", "speculator_options": {"max_requests": "8"}}, "max_requests = '8'"),
        ({"method": "fastdec_trie", "speculator_options": {"drafter": "pld"}}, "drafter = 'pld'"),
        ({"method": "fastdec", "speculator_options": {"drafter": "eagle"}}, "drafter = 'eagle'"),
        (
            {"method": "fastdec_pld", "speculator_options": {"drafter_options": {"bogus": 1}}},
            "drafter_options",
        ),
        ({"method": "fastdec_trie", "speculator_options": {"adaptive": True}}, "'adaptive' is not offered"),
        (
            {"method": "fastdec_pld", "speculator_options": {"prompt_lookup_min": 4, "prompt_lookup_max": 2}},
            "need 1 <= min",
        ),
    ],
)
def test_a_bad_option_stops_the_engine_at_start(model_dir: Path, spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        serve_config(model_dir, {"num_speculative_tokens": K, **spec})


def reference_drafts(
    session: fastdec.DraftSession, runner: Runner, order: list[str], emitted: np.ndarray, k: int
) -> np.ndarray:
    """What the draft session gives for the same tokens, through its plain form (lists of
    whole rows, ids), padded as vLLM's ngram pads: the translation's reference."""
    rows = [runner.history(r) for r in order]
    got = session.step(rows, None, emitted.tolist(), ids=order, max_len=MAX_LEN)
    out = np.full((len(order), runner.k), -1, dtype=np.int64)
    for i, (row, draft) in enumerate(zip(rows, got, strict=True)):
        out[i, :k] = [*draft, *[row[-1]] * (k - len(draft))][:k]
    return out


def ngram_drafts(runner: Runner, order: list[str], emitted: np.ndarray, k: int) -> np.ndarray:
    """vLLM ``ngram``'s drafts from scratch: the longest suffix match of 1..5 tokens, earliest
    occurrence, padded with the last token; none for a row that emitted nothing."""
    pld = fastdec.NgramDrafter("pld", min_n=5, max_n=5, num_pred=K)
    out = np.full((len(order), runner.k), -1, dtype=np.int64)
    for i, rid in enumerate(order):
        row = runner.history(rid)
        room = min(k, MAX_LEN - len(row)) if emitted[i] else 0
        tree = pld.propose_for(np.asarray(row, dtype=np.int32), K + 1)
        draft = tree.tokens[tree.chain_view()[1:]].tolist()[: max(room, 0)]
        out[i, :k] = [*draft, *[row[-1]] * (k - len(draft))]
    return out


def text(seed: int, length: int) -> list[int]:
    """A repetitive token text (so drafts are accepted) distinct per seed."""
    rng = np.random.default_rng(seed)
    motif = rng.integers(10, 250, size=int(rng.integers(5, 12))).tolist()
    noise = rng.integers(10, 250, size=length).tolist()
    return [t if rng.random() < 0.8 else noise[i] for i, t in enumerate((motif * length)[:length])]


@pytest.mark.parametrize("dense", [False, True], ids=["uva-history", "dense-history"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_drafts_equal_the_session_across_a_moving_batch(model_dir: Path, method: str, dense: bool) -> None:
    """Requests arrive, prefill in chunks, finish and free their rows for new ones; the batch
    order changes every step and K changes with the batch size. Every step's ``[n, K]`` drafts
    equal the draft session's for the same tokens; for ``fastdec_pld`` also vLLM ngram's."""
    r = runner(model_dir, method, dense=dense)
    reference = type(r.speculator.spec.speculator_config).build_proposer(None, r.speculator.spec).session
    rng = np.random.default_rng(7)
    waiting = [(f"req-{i}", text(i, int(rng.integers(40, 120)))) for i in range(14)]
    live: list[str] = []
    steps = rows = drafted = 0
    while waiting or live:
        finished = {rid for rid in live if r.done(rid)}
        if finished:
            rows_ = [r.history(x) for x in sorted(finished)]
            reference.step(rows_, None, [0] * len(rows_), ids=sorted(finished))
            reference.finish(sorted(finished))
            r.finish(finished)
            live = [x for x in live if x not in finished]
        prefilling: set[str] = set()
        while waiting and len(live) < r.max_reqs and rng.random() < 0.6:
            rid, t = waiting.pop(0)
            cut = int(rng.integers(8, 24))
            r.add(rid, t[:cut], t[cut:])
            live.append(rid)
            if rng.random() < 0.3:
                prefilling.add(rid)  # a chunked prefill: this step samples nothing for it
        if not live:
            continue
        order = [live[i] for i in rng.permutation(len(live))]
        k = K if len(order) <= 3 else K - 2  # vLLM's num_speculative_tokens_per_batch_size
        got, emitted = r.step(order, k=k, prefilling=frozenset(prefilling))
        want = reference_drafts(reference, r, order, emitted, k)
        np.testing.assert_array_equal(got, want, err_msg=f"{method} step {steps}")
        if method == "fastdec_pld":
            np.testing.assert_array_equal(got, ngram_drafts(r, order, emitted, k))
        for rid in order:
            assert r.history(rid) == r.text[rid][: r.length(rid)]  # vLLM's kernels wrote the text
        steps += 1
        rows += len(order)
        drafted += int((emitted > 1).sum())
    assert steps > 20
    assert drafted > 0
    stats = r.speculator.session.stats()
    assert stats["started"] == 14
    assert stats["live"] == 0


def test_dummy_runs_leave_the_session_alone(model_dir: Path) -> None:
    r = runner(model_dir, "fastdec_trie")
    r.add("a", text(1, 30)[:20], text(1, 30)[20:])
    before = r.speculator.session.stats()
    got, _ = r.step(["a"], dummy=True)
    assert got.shape == (1, K)
    assert r.speculator.session.stats() == before
    got, _ = r.step(["a"])
    assert r.speculator.session.stats()["started"] == 1


def test_drafts_stop_at_max_model_len(model_dir: Path) -> None:
    r = runner(model_dir, "fastdec_pld")
    t = text(3, MAX_LEN + 20)
    r.add("a", t[: MAX_LEN - 2], t[MAX_LEN - 2 :])
    got, _ = r.step(["a"])
    history = r.history("a")
    room = MAX_LEN - len(history)
    assert room == 1
    assert got[0].tolist()[1:] == [history[-1]] * (K - 1)  # one draft token at most, then fill


@pytest.mark.parametrize("method", ["fastdec_trie", "fastdec_hybrid"])
def test_a_finished_request_is_drafted_from_later(model_dir: Path, method: str) -> None:
    """Cross-request memory: request b's prompt ends where request a's output began; its first
    drafts continue a's output, which b's own tokens do not contain. After ``reset_state`` (vLLM
    calls it once its warm-up requests are done), nothing is remembered."""
    r = runner(model_dir, method)
    prompt_a = list(range(20, 40))
    output_a = [200 + (i * 7) % 50 for i in range(40)]
    r.add("a", prompt_a, output_a)
    while not r.done("a"):
        r.step(["a"])
    r.finish({"a"})
    prompt_b = [*range(60, 75), *output_a[:6]]
    r.add("b", prompt_b, output_a[6:])
    got, emitted = r.step(["b"])
    assert emitted[0] == 1
    assert got[0].tolist() == output_a[7 : 7 + K]
    r.speculator.reset_state()
    r.finish({"b"})
    r.add("c", prompt_b, output_a[6:])
    got, _ = r.step(["c"])
    assert got[0].tolist() != output_a[7 : 7 + K]


def test_the_history_is_read_in_place(model_dir: Path) -> None:
    """With vLLM's UVA history (the plugin's ``prefer_dense_token_history`` is off) the
    speculator reads the host array vLLM's kernels write, no copy of it."""
    r = runner(model_dir, "fastdec_pld")
    uva = r.req_states.all_token_ids._uva_buf
    r.add("a", text(5, 40)[:30], text(5, 40)[30:])
    slots = np.asarray([r.req_states.req_id_to_index["a"]])
    rows, where = r.speculator._history(slots, np.asarray([30]))
    assert np.shares_memory(rows, uva.np)
    assert where.tolist() == slots.tolist()
    assert torch.equal(torch.from_numpy(rows[slots[0], :30]), r.req_states.all_token_ids.gpu[slots[0], :30])
