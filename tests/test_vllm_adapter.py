"""The vLLM proposers (``fastdec.integrations.vllm``) without vLLM: vLLM ``ngram``'s rule
transcribed, cross-request memory and the draft-length controller (``fastdec.DraftLength``,
in Rust). Request recognition through moving rows is tested on the draft session itself
(``tests/test_draft_session.py``). The same proposers run
inside the real engine in ``tests/vllm/`` (``make test-vllm``)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import fastdec
import numpy as np
import numpy.typing as npt
import pytest
from fastdec import DraftLength
from fastdec.integrations import vllm as fd_vllm

MAX_MODEL_LEN = 64


def earliest_lookup(ids: Sequence[int], min_n: int, max_n: int, k: int) -> list[int]:
    """vLLM ``NgramProposer``: the longest n in [min_n, max_n] whose suffix n-gram occurs
    earlier (earliest occurrence on ties), then up to k tokens after it."""
    ids = list(ids)
    for n in range(min(max_n, len(ids) - 1), min_n - 1, -1):
        gram = ids[-n:]
        for idx in range(len(ids) - n):
            if ids[idx : idx + n] == gram:
                return ids[idx + n : idx + n + k]
    return []


def vllm_reference(
    sampled: list[list[int]],
    counts: npt.NDArray[Any],
    rows: npt.NDArray[Any],
    *,
    k: int,
    min_n: int,
    max_n: int,
) -> list[list[int]]:
    """``NgramProposer.propose``: [] for rows with no sampled ids or at max_model_len."""
    out: list[list[int]] = []
    for i, sampled_ids in enumerate(sampled):
        n = int(counts[i])
        if not sampled_ids or n >= MAX_MODEL_LEN:
            out.append([])
            continue
        out.append(earliest_lookup(rows[i, :n].tolist(), min_n, max_n, min(k, MAX_MODEL_LEN - n)))
    return out


def pld(k: int, min_n: int = 1, max_n: int = 3, **kw: Any) -> fd_vllm.PldProposer:
    return fd_vllm.PldProposer(
        num_speculative_tokens=k, max_model_len=kw.pop("max_model_len", MAX_MODEL_LEN),
        prompt_lookup_min=min_n, prompt_lookup_max=max_n, **kw,
    )  # fmt: skip


def test_recorded_batch() -> None:
    rows = np.full((8, MAX_MODEL_LEN), 99, dtype=np.int32)
    counts = np.zeros(8, dtype=np.int32)
    row0 = [11, 12, 13, 14, 15, 16, 12, 13, 14]  # suffix [12, 13, 14] seen at 1
    rows[0, : len(row0)], counts[0] = row0, len(row0)
    rows[1, :5], counts[1] = [1, 2, 3, 1, 2], 5  # partial prefill: no sampled ids
    rows[2], counts[2] = np.arange(MAX_MODEL_LEN) % 7, MAX_MODEL_LEN  # at max_model_len
    row3 = ([40, 41, 42, 43, 44, 45] * 11)[:62]  # 62 tokens: the draft is clipped to 2
    rows[3, :62], counts[3] = row3, 62
    sampled = [[14], [], [int(rows[2, -1])], row3[-3:]]
    proposer = pld(5)
    drafts = proposer.propose(sampled, counts, rows)
    assert drafts == [[15, 16, 12, 13, 14], [], [], [42, 43]]
    assert drafts == vllm_reference(sampled, counts, rows, k=5, min_n=1, max_n=3)
    assert all(isinstance(t, int) for draft in drafts for t in draft)
    # vLLM's keyword call; the same rows again are the same requests with nothing new
    again = proposer.propose(
        sampled_token_ids=sampled, num_tokens_no_spec=counts, token_ids_cpu=rows, slot_mappings={}
    )
    assert again == drafts
    assert proposer.tracker.started == 3


def test_random_batches_match_reference() -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        k, min_n = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        max_n = min_n + int(rng.integers(0, 3))
        proposer = pld(k, min_n, max_n)
        num_rows = int(rng.integers(1, 9))
        rows = rng.integers(0, 4, size=(8, MAX_MODEL_LEN), dtype=np.int32)
        counts = rng.integers(1, MAX_MODEL_LEN + 1, size=8).astype(np.int32)
        sampled = [[] if rng.random() < 0.2 else [int(rows[i, counts[i] - 1])] for i in range(num_rows)]
        expected = vllm_reference(sampled, counts, rows, k=k, min_n=min_n, max_n=max_n)
        assert proposer.propose(sampled, counts, rows) == expected, trial


def test_cross_request_memory() -> None:
    """A finished request's output reaches the shared trie: a later request that starts the
    same way is drafted that output (prompt lookup alone cannot: it is not in its context)."""
    proposer = fd_vllm.TrieProposer(num_speculative_tokens=4, max_model_len=MAX_MODEL_LEN, grace_steps=1)
    rows = np.zeros((1, MAX_MODEL_LEN), dtype=np.int32)
    answer = [30, 31, 32, 33, 34, 35, 36]
    rows[0, :4] = [1, 2, 3, 30]
    counts = np.array([4])
    for t in range(1, len(answer)):  # request 1 decodes its answer one token a step
        proposer.propose([[answer[t - 1]]], counts, rows)
        rows[0, 3 + t], counts[0] = answer[t], 4 + t
    proposer.propose([], np.zeros(0, dtype=np.int32), rows)  # the request has left the batch
    assert proposer.tracker.stopped == 1
    rows[0, :] = 0
    rows[0, :5] = [9, 9, 2, 3, 30]  # another prompt, same last tokens
    assert proposer.propose([[30]], np.array([5]), rows) == [[31, 32, 33, 34]]


def test_settings_through_additional_config() -> None:
    config = SimpleNamespace(
        speculative_config=SimpleNamespace(
            num_speculative_tokens=3, prompt_lookup_min=0, prompt_lookup_max=0
        ),
        model_config=SimpleNamespace(max_model_len=MAX_MODEL_LEN),
        scheduler_config=SimpleNamespace(max_num_seqs=8),
        additional_config={"fastdec": {"prompt_lookup_min": 2, "prompt_lookup_max": 4, "grace_steps": 3}},
    )
    proposer = fd_vllm.PldProposer(config)
    assert (proposer.num_speculative_tokens, proposer.max_model_len) == (3, MAX_MODEL_LEN)
    assert (proposer.prompt_lookup_min, proposer.prompt_lookup_max) == (2, 4)
    assert proposer.tracker.grace_steps == 3
    assert not proposer.session.adaptive  # pld keeps vLLM ngram's fixed length unless asked
    assert proposer.load_model(object()) is None
    # vLLM's 0/0 for custom_class means "not set": vLLM ngram's defaults
    config.additional_config = {}
    assert (fd_vllm.PldProposer(config).prompt_lookup_min, fd_vllm.PldProposer(config).prompt_lookup_max) == (
        5,
        5,
    )
    config.additional_config = {"fastdec": {"prompt_lookup_max": 3}}
    assert fd_vllm.PldProposer(config).prompt_lookup_min == 3
    config.additional_config = {"fastdec": {"drafter": "hybrid"}}
    assert fd_vllm.FastdecProposer(config).drafter_name == "hybrid"
    assert fd_vllm.FastdecProposer(config).session.adaptive
    assert isinstance(fd_vllm.FastdecProposer(config).drafter, fastdec.HybridDrafter)
    assert fd_vllm.FastdecProposer(num_speculative_tokens=2, max_model_len=8).drafter_name == "trie"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prompt_lookup_mn": 2}, "unknown fastdec vLLM setting 'prompt_lookup_mn'"),
        ({"drafter": "eagle"}, "drafter = 'eagle'"),
        ({"grace_steps": "4"}, "grace_steps = '4'"),
        ({"adaptive": 1}, "adaptive = 1"),
        ({"prompt_lookup_min": 4, "prompt_lookup_max": 2}, "prompt_lookup_min = 4"),
        ({"drafter_options": {"depht": 3}}, "drafter_options = {'depht': 3}"),
        ({"tree_budget": 1}, "tree_budget = 1"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], message: str) -> None:
    config = SimpleNamespace(
        speculative_config=SimpleNamespace(num_speculative_tokens=3),
        model_config=SimpleNamespace(max_model_len=32),
        additional_config={"fastdec": settings},
    )
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        fd_vllm.FastdecProposer(config)


def test_fixed_drafter_classes_reject_another() -> None:
    with pytest.raises(ValueError, match="TrieProposer always drafts with 'trie'"):
        fd_vllm.TrieProposer(num_speculative_tokens=2, max_model_len=8, drafter="pld")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_speculative_tokens": 0, "max_model_len": 8}, {"num_speculative_tokens": 2}],
    ids=["nothing", "k=0", "no-max-len"],
)
def test_missing_config(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be an int >= 1"):
        fd_vllm.FastdecProposer(**kwargs)


def test_draft_length_cuts_when_tokens_cost() -> None:
    """Simulated engine: a draft token at depth j is accepted with probability 0.9 when the
    drafter is confident (0.95) and 0.1 when not (0.15). Cheap tokens: draft everything; tokens
    that cost 0.3 of a step: only the confident ones; 1.5 steps: none (0.9 of a token for
    more than a whole step's time lowers throughput)."""
    rng = np.random.default_rng(3)
    for cost, expect in ((0.001, "all"), (0.3, "confident"), (1.5, "none")):
        length = DraftLength(4)
        for _ in range(400):
            confident = rng.random() < 0.5
            conf = [0.95 if confident else 0.15] * 4
            keep = length.cut(conf)
            p = 0.9 if confident else 0.1
            accepted = 0
            while accepted < keep and rng.random() < p:
                accepted += 1
            draft = list(range(100, 100 + keep))
            emitted = [*draft[:accepted], 7]
            length.observe(draft, conf[:keep], emitted)
            # one row: a step costs 1 + cost * drafted tokens
            length.observe_step([keep], 1.0 + cost * keep, len(emitted))
        length.explore = 0.0
        low, high = length.cut([0.15] * 4), length.cut([0.95] * 4)
        if expect == "all":
            assert length.tau < 0.05
            assert low == high == 4
        elif expect == "confident":
            assert 0.2 < length.tau < 0.9
            assert low == 0
            assert high >= 2
        else:
            assert length.tau > 0.5
            assert low == high == 0
        assert length.probability(0, 0.95) == pytest.approx(0.9, abs=0.1)
        # the reported fit is the simulated cost: 1 s a step plus `cost` per draft token
        stats = length.stats()
        # (full and empty drafts dominate: a draft's cost is identified, not how it splits
        # between its tokens and the draft itself; one row a step: the row is the step)
        full = (
            4 * stats["seconds_per_token"]
            + stats["seconds_per_drafting_row"]
            + stats["seconds_per_drafting_step"]
        )
        assert full == pytest.approx(4 * cost, abs=1e-4)
        assert stats["step_fixed_seconds"] + stats["seconds_per_row"] == pytest.approx(1.0, abs=1e-4)
        assert stats["tau"] == pytest.approx(
            min(1.0, stats["seconds_per_token"] * stats["tokens_per_second"])
        )
        assert len(stats["acceptance_by_depth"]) == 4


def _simulate(length: DraftLength, rows: int, steps: int, seed: int) -> None:
    """An engine whose step costs 1 s + 0.02 s a row + 0.5 s when any row drafts + 0.01 s a
    draft token (vLLM on a CPU: the first draft token of a step is the dear one); chains are
    confident (each token accepted with probability 0.9) or weak (0.3), half and half."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        confident = rng.random(rows) < 0.5
        keeps = length.cut_batch([[0.95 if c else 0.15] * 4 for c in confident])
        emitted = rows
        for c, keep in zip(confident, keeps, strict=True):
            accepted = 0
            while accepted < keep and rng.random() < (0.9 if c else 0.3):
                accepted += 1
            draft = list(range(100, 100 + keep))
            length.observe(draft, [0.95 if c else 0.15] * keep, [*draft[:accepted], 7])
            emitted += accepted
        seconds = 1.0 + 0.02 * rows + 0.5 * any(keeps) + 0.01 * sum(keeps)
        length.observe_step(keeps, seconds, emitted)


def test_draft_length_pays_for_the_first_draft_token() -> None:
    """The per-step cost of verifying any draft is fitted apart from the per-token cost: at a
    batch of one a weak chain (expected gain about 0.4 tokens) does not pay for the 0.5 s a
    drafting step costs, a confident one does; at a batch of 16 the rows share that cost and
    weak chains are drafted too (only their first tokens: later ones fall below tau)."""
    one = DraftLength(4)
    _simulate(one, rows=1, steps=600, seed=5)
    stats = one.stats()

    def predicted(tokens: int) -> float:
        # the fitted line plus the measured correction for the step's width (1 row + tokens);
        # at one row whose drafts are mostly 0 or 4 tokens the line alone is not identified
        line = stats["step_fixed_seconds"] + stats["seconds_per_row"]
        if tokens:
            line += (
                stats["seconds_per_drafting_step"]
                + stats["seconds_per_drafting_row"]
                + tokens * stats["seconds_per_token"]
            )
        return float(line + stats["width_seconds"].get(1 + tokens, (0, 0.0))[1])

    assert predicted(0) == pytest.approx(1.02, abs=1e-3)
    assert predicted(4) == pytest.approx(1.56, abs=1e-3)
    one.explore = 0.0
    assert one.cut([0.15] * 4) == 0
    assert one.cut([0.95] * 4) == 4
    many = DraftLength(4)
    _simulate(many, rows=16, steps=300, seed=6)
    many.explore = 0.0
    stats = many.stats()
    assert stats["seconds_per_token"] == pytest.approx(0.01, abs=1e-4)
    # (some row always drafts: the drafting step's cost is part of every step's)
    step = stats["step_fixed_seconds"] + 16 * stats["seconds_per_row"] + stats["seconds_per_drafting_step"]
    assert step == pytest.approx(1.82, abs=1e-3)
    weak = many.cut_batch([[0.15] * 4] * 16)
    assert all(1 <= k <= 2 for k in weak), weak
    assert many.cut_batch([[0.95] * 4] * 16) == [4] * 16


def test_draft_length_tells_rows_apart_by_their_match() -> None:
    """Rows with the same confidence and streak: those whose text ends in 8 tokens seen before
    are right 95 % of the time, those whose last 2 tokens are new 10 %. With match bins the
    controller drafts the first and not the second; with one match bin it cannot tell them
    apart. A token costs a third of a step."""
    rng = np.random.default_rng(4)
    cuts = {}
    for bins in (5, 1):
        length = DraftLength(4, match_bins=bins)
        for _ in range(300):
            keeps = length.cut_batch([[1.0] * 4] * 2, streaks=[2, 2], matched=[8, 0])
            emitted = 2
            for matched, p, keep in zip((8, 0), (0.95, 0.1), keeps, strict=True):
                chain = [100, 101, 102, 103]
                accepted = 0
                while accepted < 4 and rng.random() < p:
                    accepted += 1
                out = [*chain[:accepted], 7][: min(accepted, keep) + 1]
                length.observe(chain, [1.0] * 4, out, streak=2, matched=matched)
                emitted += len(out) - 1
            length.observe_step(keeps, 1.0 + 0.33 * sum(keeps), emitted)
        assert length.probability(0, 1.0, 2, 8) > length.probability(0, 1.0, 2, 0) or bins == 1
        length.explore = 0.0
        cuts[bins] = length.cut_batch([[1.0] * 4] * 2, streaks=[2, 2], matched=[8, 0])
    assert cuts[5][0] >= 3, cuts
    assert cuts[5][1] == 0, cuts
    assert cuts[1][0] == cuts[1][1], cuts
    with pytest.raises(ValueError, match="matched has 1 entries for 2 chains"):
        length.cut_batch([[1.0], [1.0]], matched=[3])
    with pytest.raises(ValueError, match="match_bins = 9"):
        DraftLength(3, match_bins=9)


def test_draft_length_disabled_and_bad_settings() -> None:
    length = DraftLength(3, enabled=False)
    for _ in range(40):
        length.observe_step([1], 1.0, 1)
        length.observe_step([3], 3.0, 1)
    assert length.tau == 0.0
    assert length.cut([0.0, 0.0, 0.0]) == 3
    with pytest.raises(ValueError, match="explore = 2"):
        DraftLength(3, explore=2)
    with pytest.raises(ValueError, match="k = 0"):
        DraftLength(0)


def test_adaptive_proposer_drafts_less_when_batch_tokens_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole proposer on a fake clock: drafts that are rarely accepted and cost as much as
    a row are cut to nothing, so speculation stops costing at large batches."""
    proposer = fd_vllm.TrieProposer(num_speculative_tokens=5, max_model_len=512)
    clock = [0.0]
    monkeypatch.setattr(fd_vllm, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 5, size=(16, 512)).astype(np.int32)  # repetitive: the trie drafts
    counts = np.full(16, 40, dtype=np.int32)
    drafted = []
    for _ in range(120):
        drafts = proposer.propose([[int(rows[i, counts[i] - 1])] for i in range(16)], counts, rows)
        tokens = sum(1 + len(d) for d in drafts)
        clock[0] += 0.01 * tokens  # every verified token costs a row's time
        counts += 1  # a random continuation: drafts are accepted by chance only
        drafted.append(sum(len(d) for d in drafts))
    assert drafted[0] > 16
    assert np.mean(drafted[-20:]) < 0.25 * drafted[0], drafted
