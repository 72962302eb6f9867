"""``FastdecNgramCorpus`` (SGLang 0.5.23's ``NgramCorpus`` interface) without SGLang installed.

The calls are the ones SGLang's NGRAM worker makes: ``batch_get(req_ids, batch_tokens,
total_lens)`` with each request's last ``max_trie_depth`` tokens and whole length, then
``batch_put``, ``erase_match_state`` for requests that left the batch, ``reset`` on a flush.
tests/sglang runs the same corpus through SGLang's own worker code (``make test-sglang``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import fastdec
import numpy as np
import pytest
from fastdec.integrations import sglang as fd_sglang
from fastdec.integrations.sglang import FastdecNgramCorpus


def earliest_lookup(ids: Sequence[int], max_n: int, k: int) -> list[int]:
    """Prompt lookup: the longest suffix n-gram (n <= max_n) seen earlier, earliest occurrence,
    then up to k tokens after it."""
    ids = list(ids)
    for n in range(min(max_n, len(ids) - 1), 0, -1):
        for idx in range(len(ids) - n):
            if ids[idx : idx + n] == ids[-n:]:
                return ids[idx + n : idx + n + k]
    return []


def worker_step(
    corpus: FastdecNgramCorpus, seqs: dict[str, list[int]], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """What the worker passes for the requests ``seqs`` (id -> whole sequence): the last ``depth``
    tokens and the length of each."""
    rids = list(seqs)
    return corpus.batch_get(rids, [seqs[r][-depth:] for r in rids], [len(seqs[r]) for r in rids])


def check_worker_layout(tokens: np.ndarray, mask: np.ndarray, roots: Sequence[int], n: int) -> None:
    """What SGLang's worker and ``reconstruct_indices_from_tree_mask`` rely on."""
    bs = len(roots)
    assert tokens.dtype == np.int64
    assert mask.dtype == np.int64
    assert tokens.shape == (bs * n,)  # the worker asserts len(tokens) == bs * n
    assert mask.shape == (bs * n * n,)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    m = mask.reshape(bs, n, n).astype(bool)
    for b in range(bs):
        assert tokens[b * n] == roots[b]  # root = the request's last token
        assert m[b].diagonal().all()
        assert not m[b][np.triu_indices(n, 1)].any()  # parents before children


def test_pld_drafts_and_layout() -> None:
    n = 6
    corpus = FastdecNgramCorpus(draft_token_num=n, settings={"drafter": "pld"})
    seqs = {
        "a": [5, 6, 7, 8, 5, 6, 7, 9, 5, 6],
        "b": [1, 2, 3, 4],
        "c": [3, 3, 3, 3, 3, 3, 3],
        "d": [2],
    }
    tokens, mask = worker_step(corpus, seqs, 64)
    check_worker_layout(tokens, mask, [s[-1] for s in seqs.values()], n)
    for b, seq in enumerate(seqs.values()):
        chain = [seq[-1], *earliest_lookup(seq, 3, n - 1)]
        assert tokens[b * n : (b + 1) * n].tolist() == chain + [0] * (n - len(chain))
    assert tokens[:n].tolist() == [6, 7, 8, 5, 6, 7]
    drafts = corpus.last_drafts
    assert drafts is not None
    assert drafts.positions.reshape(-1, n)[:, 0].tolist() == [len(s) - 1 for s in seqs.values()]
    assert corpus.num_requests == 4


@pytest.mark.parametrize("drafter", ["pld", "trie", "hybrid"])
@pytest.mark.parametrize("growth", [[1] * 12, [3, 1, 4, 1, 5, 2, 6]], ids=["sync", "bursts"])
def test_state_follows_the_sequence(drafter: str, growth: list[int]) -> None:
    """Fed tails and lengths step by step (one token a step, or several as with overlap
    scheduling's spliced tokens), the drafter's context is the first tail plus every token since:
    its drafts equal a fresh drafter's from that whole context."""
    n, depth = 8, 6
    settings = {"drafter": drafter}
    corpus = FastdecNgramCorpus(max_trie_depth=depth, draft_token_num=n, settings=settings)
    text = [4, 5, 6, 7, 4, 5, 6, 8, 4, 5, 9, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 8, 4, 5, 6, 7, 4, 5, 6]
    seq = text[:10]
    context = seq[-depth:]  # what the drafter was started with
    drafted = 0
    for grow in growth:
        tokens, mask = worker_step(corpus, {"r": seq}, depth)
        assert corpus.last_drafts is not None
        drafted += int(corpus.last_drafts.num_nodes[0]) - 1
        reference = FastdecNgramCorpus(max_trie_depth=depth, draft_token_num=n, settings=settings)
        expected = reference.batch_get(["x"], [context], [len(seq)])
        assert np.array_equal(tokens, expected[0])
        assert np.array_equal(mask, expected[1])
        corpus.batch_put([seq[-depth:]])
        new = text[len(seq) : len(seq) + grow]
        seq, context = seq + new, context + new
    assert drafted >= len(growth)  # the drafts are not empty
    assert corpus.counters["started"] == 1
    assert corpus.counters["restarted"] == 0


def test_gap_or_shrink_restarts() -> None:
    corpus = FastdecNgramCorpus(max_trie_depth=4, draft_token_num=4, settings={"drafter": "pld"})
    corpus.batch_get(["r"], [[1, 2, 3, 4]], [10])
    corpus.batch_get(["r"], [[3, 4, 5, 6]], [12])  # grew by 2 <= 4: accepted
    assert corpus.counters == {"started": 1, "stopped": 0, "evicted": 0, "restarted": 0}
    corpus.batch_get(["r"], [[7, 8, 9, 1]], [20])  # grew by 8 > 4 tokens seen: start over
    corpus.batch_get(["r"], [[7, 8, 9, 1]], [15])  # shrank
    assert corpus.counters == {"started": 3, "stopped": 2, "evicted": 0, "restarted": 2}
    tokens, _ = corpus.batch_get(["r"], [[7, 8, 9, 1]], [15])  # same length: nothing new
    assert tokens[0] == 1
    assert corpus.counters["started"] == 3
    assert corpus.num_requests == 1


def test_finished_requests_reach_the_shared_trie() -> None:
    """SGLang erases the match state of requests that left the decode batch: that stops them, and
    a TrieDrafter adds their output to its shared trie for later requests."""
    n = 6
    corpus = FastdecNgramCorpus(draft_token_num=n, settings={"drafter": "trie"})
    output = [10, 11, 12, 13, 14, 15, 16]
    seq = [1, 2, 3]
    for token in output:  # request "a" generates `output`
        corpus.batch_get(["a"], [seq], [len(seq)])
        seq = [*seq, token]
    corpus.batch_get(["a"], [seq], [len(seq)])
    probe = [7, 8, 10, 11]
    before, _ = corpus.batch_get(["b"], [probe], [len(probe)])
    assert before[1:].tolist() == [0] * (n - 1)  # nothing to draft from b's own context
    corpus.erase_match_state(["a", "never-seen"])
    assert corpus.num_requests == 1
    after, _ = corpus.batch_get(["c"], [probe], [len(probe)])
    assert after[:4].tolist() == [11, 12, 13, 14]  # a's output continues the probe
    corpus.reset()
    assert corpus.num_requests == 0
    assert corpus.counters["stopped"] == 3
    again, _ = corpus.batch_get(["d"], [probe], [len(probe)])
    assert again[:4].tolist() == [11, 12, 13, 14]  # reset stops requests, keeps what was learnt


def test_no_leak_over_ten_thousand_request_ids() -> None:
    cap = 64
    drafter = fastdec.NgramDrafter("pld", num_pred=3, max_requests=4 * cap)
    corpus = FastdecNgramCorpus(draft_token_num=4, drafter=drafter, settings={"max_requests": cap})
    bs = 8
    for start in range(0, 10_000, bs):  # never erased: the cap evicts the least recently seen
        rids = [f"req-{i}" for i in range(start, start + bs)]
        corpus.batch_get(rids, [[1, 2, 1, i % 7] for i in range(bs)], [4] * bs)
        assert corpus.num_requests <= cap
        assert drafter.num_requests <= cap
    assert corpus.counters["evicted"] == 10_000 - cap
    trie = FastdecNgramCorpus(draft_token_num=4, settings={"drafter": "trie", "max_requests": cap})
    for start in range(0, 10_000, bs):  # erased as they leave, as the worker does
        rids = [f"req-{i}" for i in range(start, start + bs)]
        trie.batch_get(rids, [[1, 2, 1, i % 7] for i in range(bs)], [4] * bs)
        trie.batch_get(rids, [[1, 2, 1, i % 7, 2] for i in range(bs)], [5] * bs)
        trie.erase_match_state(rids)
        assert trie.num_requests == 0
    assert trie.counters["started"] == trie.counters["stopped"] == 10_000
    assert trie.counters["evicted"] == 0


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fd_sglang.ENV_VAR, json.dumps({"drafter": "pld", "max_requests": 3, "pad_id": 7}))
    corpus = FastdecNgramCorpus(draft_token_num=4)
    assert (corpus.drafter_name, corpus.max_requests, corpus.pad_id) == ("pld", 3, 7)
    assert isinstance(corpus.drafter, fastdec.NgramDrafter)
    tokens, _ = corpus.batch_get(["r"], [[1, 2, 3]], [3])
    assert tokens.tolist() == [3, 7, 7, 7]
    monkeypatch.delenv(fd_sglang.ENV_VAR)
    assert isinstance(FastdecNgramCorpus().drafter, fastdec.TrieDrafter)  # the default
    explicit = FastdecNgramCorpus(settings={"drafter": "hybrid", "drafter_options": {"depth": 8}})
    assert isinstance(explicit.drafter, fastdec.HybridDrafter)


@pytest.mark.parametrize(
    ("kwargs", "settings", "env", "match"),
    [
        ({"max_trie_depth": 1}, {}, None, "max_trie_depth = 1"),
        ({"min_bfs_breadth": 0}, {}, None, "min_bfs_breadth = 0"),
        ({"min_bfs_breadth": 3, "max_bfs_breadth": 2}, {}, None, "min_bfs_breadth = 3, max_bfs_breadth = 2"),
        ({"draft_token_num": 0}, {}, None, "draft_token_num = 0"),
        ({"draft_token_num": True}, {}, None, "draft_token_num = True"),
        ({"match_type": "DFS"}, {}, None, "match_type = 'DFS'"),
        ({"capacity": 0}, {}, None, "capacity = 0"),
        ({"external_sam_budget": -1}, {}, None, "external_sam_budget = -1"),
        ({}, {"drafter": "medusa"}, None, "drafter = 'medusa'"),
        ({}, {"drafter": "trie", "drafter_options": {"no_such": 1}}, None, "drafter_options"),
        ({}, {"drafter": "pld", "drafter_options": {"mode": "x"}}, None, "drafter_options"),
        ({}, {"max_requests": 0}, None, "max_requests = 0"),
        ({}, {"max_requests": "8"}, None, "max_requests = '8'"),
        ({}, {"pad_id": -1}, None, "pad_id = -1"),
        ({}, {"prompt_lookup_min": 4, "prompt_lookup_max": 2}, None, "prompt_lookup_min = 4"),
        ({}, {"prompt_lookup_max": 17}, None, "prompt_lookup_max = 17"),
        ({}, {"no_such": 1}, None, "'no_such'"),
        ({}, None, "{not json", "FASTDEC_SGLANG"),
        ({}, None, "[1, 2]", "FASTDEC_SGLANG"),
        ({}, None, '{"drafter": 3}', "drafter = 3"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    settings: dict[str, object] | None,
    env: str | None,
    match: str,
) -> None:
    if env is not None:
        monkeypatch.setenv(fd_sglang.ENV_VAR, env)
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace("(", r"\(")):
        FastdecNgramCorpus(**kwargs, settings=settings)  # type: ignore[arg-type]


def test_bad_calls() -> None:
    corpus = FastdecNgramCorpus(draft_token_num=4)
    with pytest.raises(ValueError, match="2 req_ids, 1 batch_tokens"):
        corpus.batch_get(["a", "b"], [[1]], [1, 1])
    with pytest.raises(ValueError, match="empty token tail"):
        corpus.batch_get(["a"], [[]], [0])
    tokens, mask = corpus.batch_get([], [], [])
    assert tokens.shape == (0,)
    assert mask.shape == (0,)
    with pytest.raises(ValueError, match="external corpora"):
        corpus.load_external_corpus_named("docs", [[1, 2, 3]])
    with pytest.raises(ValueError, match="docs"):
        corpus.commit_external_corpus_load("docs", 3)
    corpus.remove_external_corpus("docs")
    assert corpus.list_external_corpora() == {}
    assert corpus.remaining_token_budget == 10000000
    corpus.synchronize()


def test_debug_helpers(caplog: pytest.LogCaptureFixture) -> None:
    corpus = FastdecNgramCorpus(draft_token_num=4, settings={"drafter": "pld"})
    tokens, mask = corpus.batch_get(["r"], [[5, 6, 7, 5, 6]], [5])
    paths = corpus.leaf_paths_from_mask(tokens.tolist(), mask.reshape(4, 4).tolist())
    assert paths == [[6, 7, 5, 6]]
    with caplog.at_level("INFO", logger="fastdec.integrations.sglang"):
        corpus.debug_result(tokens, mask)
    assert "[6, 7, 5, 6]" in caplog.text


def test_plugin_module_imports_no_sglang() -> None:
    code = (
        "import sys, fastdec.integrations.sglang_plugin as p\n"
        "print(p.ALGORITHM, sorted(m for m in sys.modules if m.split('.')[0] in ('sglang', 'torch')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["FASTDEC", "[]"]
