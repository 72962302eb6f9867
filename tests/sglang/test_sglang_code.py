"""fastdec's SGLang corpus and plugin against SGLang 0.5.23's own Python code (see conftest.py for
what runs and the one stand-in). The real engine (a model forward) is not run."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastdec
import numpy as np
import pytest
import torch
from fastdec.integrations import sglang_plugin
from fastdec.integrations.sglang import ENV_VAR, FastdecNgramCorpus
from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_triton
from sglang.kernels.ops.speculative.spec_tree import verify_tree_greedy_triton
from sglang.srt import runtime_context
from sglang.srt.arg_groups.overrides import resolving_view
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins, load_plugins_by_group
from sglang.srt.server_args import prepare_server_args
from sglang.srt.speculative import ngram_worker
from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus
from sglang.srt.speculative.ngram_info import NgramVerifyInput
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

MODEL = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "smollm2-135m-instruct"
#: server arguments the NGRAM hook decides
RESOLVED = (
    "speculative_num_draft_tokens",
    "speculative_eagle_topk",
    "speculative_num_steps",
    "disable_overlap_schedule",
    "max_running_requests",
    "enable_mixed_chunk",
    "speculative_ngram_max_trie_depth",
)


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> None:
    assert (MODEL / "config.json").is_file(), f"the shared SmolLM2 is missing: {MODEL}"
    load_plugins()  # what every SGLang process does first


def resolved(algorithm: str, *args: str) -> Any:
    """``sglang serve``'s server arguments, resolved (``prepare_server_args`` + ``resolve_once``)."""
    server_args = prepare_server_args(
        ["--model-path", str(MODEL), "--device", "cpu", "--speculative-algorithm", algorithm, *args]
    )
    server_args.resolve_once()
    return server_args


def make_worker(*args: str) -> Any:
    """The worker SGLang builds for ``--speculative-algorithm FASTDEC``: ``create_worker`` of the
    registered algorithm, constructed by its own ``__init__`` under a published context."""
    server_args = resolved("FASTDEC", *args)
    runtime_context.publish(server_args, role="scheduler")
    algorithm = SpeculativeAlgorithm.from_string(resolving_view(server_args).speculative_algorithm)
    worker_cls = algorithm.create_worker(server_args)
    return worker_cls(server_args, 0, 0, SimpleNamespace(model_runner=SimpleNamespace()))


def params(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


# --------------------------------------------------------------------------------------------
# interface


def test_same_interface_as_ngram_corpus() -> None:
    theirs_init, ours_init = params(NgramCorpus.__init__), params(FastdecNgramCorpus.__init__)
    assert ours_init[: len(theirs_init)] == theirs_init  # every argument, in order, same defaults
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in ours_init[len(theirs_init) :])
    public = {name: value for name, value in vars(NgramCorpus).items() if not name.startswith("_")}
    assert "batch_get" in public
    assert "erase_match_state" in public
    for name, theirs in public.items():
        ours = inspect.getattr_static(FastdecNgramCorpus, name)
        if isinstance(theirs, property):
            assert isinstance(ours, property), name
        else:
            assert params(ours) == params(theirs), name


def test_worker_constructs_fastdec_corpus() -> None:
    worker = make_worker("--speculative-num-draft-tokens", "6", "--speculative-ngram-max-trie-depth", "9")
    assert isinstance(worker, ngram_worker.NGRAMWorker)
    assert type(worker).__name__ == "FastdecNgramWorker"
    corpus = worker.ngram_corpus
    assert isinstance(corpus, FastdecNgramCorpus)
    assert (corpus.draft_token_num, corpus.max_trie_depth) == (6, 9)
    assert (worker.draft_token_num, worker.max_trie_depth) == (6, 9)
    assert ngram_worker.NgramCorpus is NgramCorpus  # SGLang's module is left as it was
    assert isinstance(corpus.drafter, fastdec.TrieDrafter)


def test_settings_reach_the_worker_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, json.dumps({"drafter": "pld", "max_requests": 5}))
    corpus = make_worker().ngram_corpus
    assert (corpus.drafter_name, corpus.max_requests) == ("pld", 5)
    monkeypatch.setenv(ENV_VAR, json.dumps({"drafter": "medusa"}))
    with pytest.raises(ValueError, match="drafter = 'medusa'"):
        make_worker()


# --------------------------------------------------------------------------------------------
# plugin


def test_entry_point_found_by_sglangs_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    (entry,) = [
        e for e in importlib.metadata.entry_points(group=GENERAL_PLUGINS_GROUP) if e.name == "fastdec"
    ]
    assert entry.value == "fastdec.integrations.sglang_plugin:register"
    assert entry.dist is not None
    assert entry.dist.name == "fastdec"
    found = load_plugins_by_group(GENERAL_PLUGINS_GROUP)
    assert found["fastdec"] == (sglang_plugin.register, "fastdec")
    monkeypatch.setenv("SGLANG_PLUGINS", "someone-else")
    assert "fastdec" not in load_plugins_by_group(GENERAL_PLUGINS_GROUP)


def test_algorithm_registered() -> None:
    algorithm = SpeculativeAlgorithm.from_string("fastdec")
    assert isinstance(algorithm, sglang_plugin.spec_class())
    assert algorithm.name == "FASTDEC"
    assert algorithm.is_speculative()
    assert algorithm.is_ngram()
    assert not algorithm.is_eagle()
    assert not algorithm.has_draft_kv()
    assert algorithm.supports_overlap
    sglang_plugin.register()  # a second call (another load) is a no-op
    assert SpeculativeAlgorithm.from_string("FASTDEC") is algorithm
    assert SpeculativeAlgorithm.from_string("NGRAM") is SpeculativeAlgorithm.NGRAM


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--speculative-num-draft-tokens", "6"],
        ["--speculative-ngram-max-bfs-breadth", "4", "--max-running-requests", "8"],
        ["--speculative-num-steps", "3", "--disable-overlap-schedule"],
    ],
    ids=["defaults", "draft-tokens", "breadth", "steps"],
)
def test_server_args_resolve_as_for_ngram(args: list[str]) -> None:
    ngram, ours = resolving_view(resolved("NGRAM", *args)), resolving_view(resolved("FASTDEC", *args))
    assert ours.speculative_algorithm == "FASTDEC"
    assert {f: getattr(ours, f) for f in RESOLVED} == {f: getattr(ngram, f) for f in RESOLVED}


def test_external_corpus_refused() -> None:
    args = [
        "--speculative-ngram-external-corpus-path",
        "corpus.jsonl",
        "--speculative-ngram-external-sam-budget",
        "2",
    ]
    with pytest.raises(ValueError, match="external corpora"):
        resolved("FASTDEC", *args)


# --------------------------------------------------------------------------------------------
# the worker's draft path


class Request(SimpleNamespace):
    rid: str
    origin_input_ids_unpadded: list[int]
    output_ids: list[int]


TRUTH = {  # what each request's target generates after its prompt (repetitive: drafts pay)
    "r0": [5, 6, 7, 8, 9] * 30,
    "r1": [3, 1, 4, 1, 5, 9] * 30,
    "r2": [2] * 150,
}
PROMPTS = {"r0": [11, 12, 5, 6, 7, 8, 9, 13], "r1": [20, 21, 22], "r2": [30, 2, 2, 31]}


def decode_batch(reqs: list[Request], prev: list[list[int]] | None, n: int) -> SimpleNamespace:
    """A decode ``ScheduleBatch`` with what the NGRAM worker reads. ``prev``: with overlap
    scheduling, each request's accepted tokens of the last step, not yet in ``output_ids``."""
    bs = len(reqs)
    totals = [
        len(r.origin_input_ids_unpadded) + len(r.output_ids) + len(prev[b] if prev else [])
        for b, r in enumerate(reqs)
    ]
    seq_lens = torch.tensor([t - 1 for t in totals], dtype=torch.int64)  # cached: the root excluded
    spec_info = None
    if prev is not None:
        accept = torch.zeros(bs * n, dtype=torch.int64)
        for b, tokens in enumerate(prev):
            accept[b * n : b * n + len(tokens)] = torch.tensor(tokens)
        spec_info = SimpleNamespace(accept_tokens=accept, accept_lens=torch.tensor([len(p) for p in prev]))
    return SimpleNamespace(
        reqs=reqs,
        forward_mode=ForwardMode.DECODE,
        seq_lens=seq_lens,
        seq_lens_cpu=seq_lens.clone(),
        spec_info=spec_info,
        has_grammar=False,
        grammar_needs_sync=lambda: False,
        req_pool_indices=torch.arange(bs),
        req_to_token_pool=SimpleNamespace(req_to_token=torch.zeros((bs, 256), dtype=torch.int32)),
    )


def target_argmax(tree: fastdec.TokenTree, truth: list[int]) -> np.ndarray:
    """Per node, the target's next token: the true one where the node's path is the true
    continuation, else 0 (the padding token, which SGLang's own padding would then accept)."""
    out = np.zeros(tree.num_nodes, dtype=np.int64)
    parents, tokens = tree.parents.tolist(), tree.tokens.tolist()
    for i in range(tree.num_nodes):
        path, node = [], i
        while node > 0:
            path.append(tokens[node])
            node = parents[node]
        path.reverse()
        if truth[: len(path)] == path and len(path) < len(truth):
            out[i] = truth[len(path)]
    return out


def run_worker(worker: Any, *, overlap: bool, steps: int) -> Iterator[dict[str, Any]]:
    """Decodes the requests of TRUTH through the worker's ``_prepare_for_speculative_decoding`` and
    ``_update_ngram_corpus`` with SGLang's greedy tree verification, yielding each step's state."""
    n = worker.draft_token_num
    worker.enable_overlap = overlap  # (the CPU resolution turns overlap off; its code path is the worker's)
    worker.max_batch_size = len(TRUTH)
    worker._init_preallocated_tensors()
    reqs = [Request(rid=r, origin_input_ids_unpadded=list(PROMPTS[r]), output_ids=[]) for r in TRUTH]
    emitted = {r: [TRUTH[r][0]] for r in TRUTH}  # the prefill's token
    prev: list[list[int]] | None = None
    if overlap:
        prev = [[TRUTH[r][0]] for r in TRUTH]
    else:
        for req in reqs:
            req.output_ids.append(TRUTH[req.rid][0])
    for _ in range(steps):
        batch = decode_batch(reqs, prev, n)
        worker._prepare_for_speculative_decoding(batch)
        verify = batch.spec_info
        assert isinstance(verify, NgramVerifyInput)
        assert batch.forward_mode == ForwardMode.TARGET_VERIFY
        bs = len(reqs)
        trees = []
        target = np.zeros((bs, n), dtype=np.int64)
        drafts = worker.ngram_corpus.last_drafts
        for b, req in enumerate(reqs):
            m = int(drafts.num_nodes[b])
            tokens = drafts.draft_tokens[b * n : b * n + m]
            parents = [-1] + [int(np.flatnonzero(drafts.tree_mask_3d()[b, i, :i])[-1]) for i in range(1, m)]
            tree = fastdec.TokenTree(tokens, parents)
            trees.append(tree)
            target[b, :m] = target_argmax(tree, TRUTH[req.rid][len(emitted[req.rid]) :])
        predicts = torch.zeros(bs * n, dtype=torch.int32)
        accept_index = torch.full((bs, verify.max_tree_depth), -1, dtype=torch.int32)
        accept_num = torch.empty(bs, dtype=torch.int32)
        verify_tree_greedy_triton(
            predicts,
            accept_index,
            accept_num,
            verify.draft_token.reshape(bs, n),
            verify.retrieve_index,
            verify.retrieve_next_token,
            verify.retrieve_next_sibling,
            torch.from_numpy(target),
        )
        step_tokens = []
        for b, req in enumerate(reqs):
            nodes, num, bonus = trees[b].verify_greedy(target[b, : trees[b].num_nodes].astype(np.int32))
            assert int(accept_num[b]) == num  # SGLang's walk accepts what fastdec's does
            assert accept_index[b, : num + 1].tolist() == (b * n + nodes).tolist()
            new = [*trees[b].tokens[nodes[1:]].tolist(), bonus]
            assert new == TRUTH[req.rid][len(emitted[req.rid]) : len(emitted[req.rid]) + len(new)]
            emitted[req.rid] += new
            step_tokens.append(new)
        worker._update_ngram_corpus(batch)
        if overlap:
            assert prev is not None
            for req, tokens in zip(reqs, prev, strict=True):
                req.output_ids += tokens  # result processing runs a step late
            prev = step_tokens
        else:
            for req, tokens in zip(reqs, step_tokens, strict=True):
                req.output_ids += tokens
        yield {"batch": batch, "verify": verify, "drafts": drafts, "emitted": step_tokens}


def greedy_accepts(tokens: np.ndarray, mask: np.ndarray, bs: int, n: int, target: np.ndarray) -> list[int]:
    """Drafts SGLang accepts per request: its reconstruct and greedy-verify kernels (Triton) on
    a corpus's ``(tokens, mask)``, with ``target [bs, n]`` the target's argmax at every node."""
    tree_mask = torch.from_numpy(mask).to(torch.bool)
    positions = torch.empty(bs * n, dtype=torch.int64)
    index, next_token, next_sibling = (torch.empty((bs, n), dtype=torch.int64) for _ in range(3))
    seq_lens = torch.full((bs,), 100, dtype=torch.int64)
    reconstruct_indices_from_tree_mask_triton(
        tree_mask, seq_lens, positions, index, next_token, next_sibling, bs, n
    )
    accept_index = torch.full((bs, n), -1, dtype=torch.int32)
    accept_num = torch.empty(bs, dtype=torch.int32)
    candidates = torch.from_numpy(tokens).reshape(bs, n)
    predicts = torch.zeros(bs * n, dtype=torch.int32)
    verify_tree_greedy_triton(
        predicts,
        accept_index,
        accept_num,
        candidates,
        index,
        next_token,
        next_sibling,
        torch.from_numpy(target),
    )
    return accept_num.tolist()


@pytest.mark.parametrize("drafter", ["pld", "trie", "hybrid"])
def test_worker_draft_path(monkeypatch: pytest.MonkeyPatch, drafter: str) -> None:
    monkeypatch.setenv(ENV_VAR, json.dumps({"drafter": drafter}))
    worker = make_worker("--speculative-num-draft-tokens", "8", "--speculative-ngram-max-trie-depth", "6")
    n = worker.draft_token_num
    accepted = 0
    for step in run_worker(worker, overlap=False, steps=8):
        verify, drafts, batch = step["verify"], step["drafts"], step["batch"]
        bs = len(batch.reqs)
        assert verify.draft_token.tolist() == drafts.draft_tokens.tolist()
        # SGLang's reconstruct_indices_from_tree_mask (its Triton code) on our mask
        assert verify.positions.tolist() == drafts.positions.tolist()
        assert verify.retrieve_index.tolist() == drafts.retrive_index.tolist()
        assert verify.retrieve_next_token.tolist() == drafts.retrive_next_token.tolist()
        assert verify.retrieve_next_sibling.tolist() == drafts.retrive_next_sibling.tolist()
        # the worker's FULL_MASK form: all-True prefix columns, then our [n, n] block
        mask = drafts.tree_mask_3d()
        rows = []
        for b in range(bs):
            prefix = np.ones((n, int(batch.seq_lens[b])), dtype=bool)
            rows.append(np.concatenate([prefix, mask[b]], axis=1).reshape(-1))
        assert verify.custom_mask.tolist() == np.concatenate(rows).tolist()
        # the grammar path's host reference
        next_token, next_sibling = ngram_worker._derive_tree_links(drafts.tree_mask.astype(np.int64), bs, n)
        assert next_token.tolist() == drafts.retrive_next_token.tolist()
        assert next_sibling.tolist() == drafts.retrive_next_sibling.tolist()
        accepted += sum(len(e) - 1 for e in step["emitted"])
    assert accepted >= 3 * 8  # the drafts were accepted, not just well formed
    worker.ngram_corpus.erase_match_state([r for r in TRUTH])  # the departed requests
    assert worker.ngram_corpus.num_requests == 0


@pytest.mark.parametrize("drafter", ["pld", "trie"])
def test_overlap_lag_changes_nothing(monkeypatch: pytest.MonkeyPatch, drafter: str) -> None:
    """With overlap scheduling ``output_ids`` lags a step and the worker splices the accepted
    tokens in; the corpus sees the same sequences, so the drafts are the same."""
    monkeypatch.setenv(ENV_VAR, json.dumps({"drafter": drafter}))
    args = ("--speculative-num-draft-tokens", "8", "--speculative-ngram-max-trie-depth", "6")
    sync = [s["drafts"].draft_tokens.tolist() for s in run_worker(make_worker(*args), overlap=False, steps=6)]
    lagged = [
        s["drafts"].draft_tokens.tolist() for s in run_worker(make_worker(*args), overlap=True, steps=6)
    ]
    assert lagged == sync


def test_same_contract_as_sglangs_own_corpus() -> None:
    """SGLang's C++ NgramCorpus (JIT-built by its loader) in the same worker: the same dtypes,
    shapes and root tokens come back from both."""
    worker = make_worker("--speculative-num-draft-tokens", "8", "--speculative-ngram-max-trie-depth", "6")
    spec = runtime_context.get_spec()
    theirs = NgramCorpus(
        min_bfs_breadth=spec.speculative_ngram_min_bfs_breadth,
        max_bfs_breadth=spec.speculative_ngram_max_bfs_breadth,
        match_type=spec.speculative_ngram_match_type,
        capacity=spec.speculative_ngram_capacity,
        max_trie_depth=spec.speculative_ngram_max_trie_depth,
        draft_token_num=spec.speculative_num_draft_tokens,
        external_sam_budget=spec.speculative_ngram_external_sam_budget,
        external_corpus_max_tokens=spec.speculative_ngram_external_corpus_max_tokens,
    )
    ours = worker.ngram_corpus
    reqs = [Request(rid=r, origin_input_ids_unpadded=PROMPTS[r], output_ids=TRUTH[r][:9]) for r in TRUTH]
    batch = decode_batch(reqs, None, worker.draft_token_num)
    worker.ngram_corpus = theirs
    worker._update_ngram_corpus(batch)  # give SGLang's corpus something to match
    results = {}
    for name, corpus in (("sglang", theirs), ("fastdec", ours)):
        worker.ngram_corpus = corpus
        worker.enable_overlap = False
        results[name] = worker._prepare_draft_tokens(batch)  # asserts bs * n tokens
    n, bs = worker.draft_token_num, len(reqs)
    for tokens, mask in results.values():
        assert (tokens.dtype, mask.dtype) == (np.int64, np.int64)
        assert (tokens.shape, mask.shape) == ((bs * n,), (bs * n * n,))
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert tokens.reshape(bs, n)[:, 0].tolist() == [TRUTH[r][8] for r in TRUTH]
        square = mask.reshape(bs, n, n).astype(bool)
        assert all(square[b].diagonal().all() for b in range(bs))
        assert not np.triu(square, 1).any()
    sglang_tokens = results["sglang"][0].reshape(bs, n)
    assert (sglang_tokens[:, 1:] != 0).any()  # SGLang's corpus drafted something real
    # a target predicting the padding token 0 everywhere: SGLang's padding (token-0 children of
    # the root) is accepted, fastdec's (unreachable) is not (no real draft here is 0)
    zeros = np.zeros((bs, n), dtype=np.int64)
    padded = [int((sglang_tokens[b, 1:] == 0).any()) for b in range(bs)]
    assert any(padded)
    assert greedy_accepts(*results["sglang"], bs, n, zeros) == padded
    assert greedy_accepts(*results["fastdec"], bs, n, zeros) == [0] * bs


def test_leaf_paths_as_sglang() -> None:
    corpus = FastdecNgramCorpus(draft_token_num=8, settings={"drafter": "hybrid"})
    contexts = [[5, 6, 7, 5, 6, 8, 5, 6, 7, 5, 6], [1, 2, 1, 3, 1, 2, 1], [9]]
    tokens, mask = corpus.batch_get(["a", "b", "c"], contexts, [len(c) for c in contexts])
    for b in range(3):
        t = tokens.reshape(3, 8)[b].tolist()
        m = mask.reshape(3, 8, 8)[b].tolist()
        assert corpus.leaf_paths_from_mask(t, m) == NgramCorpus.leaf_paths_from_mask(None, t, m)  # type: ignore[arg-type]


def test_reconstruct_kernel_direct() -> None:
    """SGLang's Triton reconstruct on a bool copy of our int64 mask, as the worker copies it."""
    corpus = FastdecNgramCorpus(draft_token_num=5, settings={"drafter": "hybrid"})
    contexts = [[5, 6, 7, 5, 6, 8, 5, 6], [4], [3, 3, 3, 3]]
    _, mask = corpus.batch_get(["a", "b", "c"], contexts, [10, 20, 30])
    drafts = corpus.last_drafts
    assert drafts is not None
    bs, n = 3, 5
    tree_mask = torch.empty(bs * n * n, dtype=torch.bool)
    tree_mask.copy_(torch.from_numpy(mask))
    positions = torch.empty(bs * n, dtype=torch.int64)
    index, next_token, next_sibling = (torch.empty((bs, n), dtype=torch.int64) for _ in range(3))
    seq_lens = torch.tensor([9, 19, 29])
    reconstruct_indices_from_tree_mask_triton(
        tree_mask, seq_lens, positions, index, next_token, next_sibling, bs, n
    )
    assert positions.tolist() == drafts.positions.tolist()
    assert index.tolist() == drafts.retrive_index.tolist()
    assert next_token.tolist() == drafts.retrive_next_token.tolist()
    assert next_sibling.tolist() == drafts.retrive_next_sibling.tolist()
