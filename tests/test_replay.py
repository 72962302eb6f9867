"""The model-free replay benchmark (benches/replay.py): verification, prompt lookup, calibration.

The calibration needs ``../shared`` (Spec-Bench data and the Llama-2 tokenizer); without it these
tests fail with FileNotFoundError instead of skipping, as the benchmark is meaningless without it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import fastdec
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import replay
import replay_data
from python_pld import PythonPLD, prompt_lookup

# --- (a) one verification step --------------------------------------------------------------------

# prompt [1, 10], answer [11, 12, 13, 14]
RECORDED = np.array([1, 10, 11, 12, 13, 14], dtype=np.int32)


@pytest.mark.parametrize(
    ("tokens", "parents", "pos", "expected"),
    [
        ([10, 11, 12, 99], None, 2, (2, 3)),  # two drafts accepted, bonus 13
        ([10, 11, 12, 13, 14], None, 2, (4, 4)),  # the whole answer: bonus clipped at its end
        ([10, 50], None, 2, (0, 1)),  # first draft wrong: bonus only
        ([10], None, 2, (0, 1)),  # empty draft
        ([10, 50, 11, 12, 60, 13], [-1, 0, 0, 2, 2, 3], 2, (3, 4)),  # path 0-2-3-5 of a tree
        ([10, 11, 50, 12], [-1, 0, 1, 1], 2, (2, 3)),  # the second child matches
        ([12, 13, 14, 15], None, 4, (2, 2)),  # at the end: 13, 14 accepted, no bonus
        ([13, 14, 0], None, 5, (1, 1)),  # nothing past the end, whatever token is drafted there
        ([13, 14, 15], [-1, 0, 0], 5, (1, 1)),
    ],
)
def test_verify_step(
    tokens: list[int], parents: list[int] | None, pos: int, expected: tuple[int, int]
) -> None:
    tree = fastdec.TokenTree.chain(tokens) if parents is None else fastdec.TokenTree(tokens, parents)
    assert replay.verify_step(tree, RECORDED, pos) == expected


def test_verify_step_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="root"):
        replay.verify_step(fastdec.TokenTree.chain([11, 12]), RECORDED, 2)
    with pytest.raises(ValueError, match="pos"):
        replay.verify_step(fastdec.TokenTree.chain([14]), RECORDED, 6)
    with pytest.raises(ValueError, match="pos"):
        replay.verify_step(fastdec.TokenTree.chain([1]), RECORDED, 0)


class ScriptedDrafter:
    """Drafts the next ``k`` recorded tokens, the first ``wrong_at`` of them right; logs calls."""

    def __init__(self, answer: list[int], k: int, wrong_at: int) -> None:
        self.answer, self.k, self.wrong_at = answer, k, wrong_at
        self.calls: list[tuple[str, int, list[int]]] = []
        self.seq: list[int] = []

    def start(self, request_id: int, prompt_ids: np.ndarray) -> None:
        self.calls.append(("start", request_id, prompt_ids.tolist()))
        self.seq = prompt_ids.tolist()

    def propose(self, request_id: int, budget: int) -> fastdec.TokenTree:
        done = len(self.seq) - 3
        draft = self.answer[done : done + self.k]
        draft = [t if i < self.wrong_at else 999 for i, t in enumerate(draft)]
        return fastdec.TokenTree.chain([self.seq[-1], *draft])

    def accept(self, request_id: int, emitted: np.ndarray, topk_ids: np.ndarray | None = None) -> None:
        assert emitted.dtype == np.int32
        self.calls.append(("accept", request_id, emitted.tolist()))
        self.seq += emitted.tolist()

    def stop(self, request_id: int) -> None:
        self.calls.append(("stop", request_id, []))


def test_replay_loop_emits_the_recorded_answer() -> None:
    answer = [20, 21, 22, 23, 24, 25, 26]
    request = replay_data.Request(
        question_id=0,
        turn=0,
        category="qa",
        prompt_ids=np.array([1, 5, 6], dtype=np.int32),
        answer_ids=np.array(answer, dtype=np.int32),
    )
    drafter = ScriptedDrafter(answer, k=3, wrong_at=2)  # 2 of 3 drafts right: 3 tokens per step
    trace = replay.replay({"s": drafter}, [request, request], budget=64)["s"]
    assert trace.emitted.tolist() == [3, 3, 1] * 2  # the last step is clipped at the answer's end
    assert trace.draft_size.tolist() == [3, 3, 1] * 2
    assert trace.request.tolist() == [0, 0, 0, 1, 1, 1]
    assert (trace.propose_ns > 0).all()
    assert (trace.accept_ns > 0).all()
    assert drafter.calls[:5] == [
        ("start", 0, [1, 5, 6]),
        ("accept", 0, [20, 21, 22]),
        ("accept", 0, [23, 24, 25]),
        ("accept", 0, [26]),
        ("stop", 0, []),
    ]
    summary = replay.summarize(trace, np.ones(6, dtype=bool))
    assert summary["mat"] == 7 / 3
    assert summary["steps"] == 6


def test_replay_rejects_trees_over_budget() -> None:
    request = replay_data.Request(0, 0, "qa", np.array([1, 5], np.int32), np.array([7, 8, 9], np.int32))
    with pytest.raises(ValueError, match="budget"):
        replay.replay({"s": ScriptedDrafter([7, 8, 9], k=3, wrong_at=3)}, [request], budget=2)


# --- (b) prompt lookup on hand-checked contexts ---------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "expected"),
    [
        ([1, 2, 3, 4, 1, 2, 3], [4, 1, 2, 3]),  # n = 3; the continuation stops where the sequence does
        ([5, 6, 7, 9, 5, 6, 7, 8, 5, 6, 7], [9, 5, 6, 7, 8, 5, 6, 7]),  # earliest of two matches
        ([1, 2, 3, 9, 2, 3], [9, 2, 3]),  # no earlier [9, 2, 3]: n = 2
        ([4, 5, 6, 7, 5], [6, 7, 5]),  # n = 1
        ([5, 9, 8, 5, 7, 8, 5], [7, 8, 5]),  # n = 2 wins over the earlier n = 1 match at 0
        ([7, 7], [7]),  # n = 1, overlapping the suffix but not the suffix itself
        ([7, 7, 7, 7], [7]),  # n = 3 at 0 overlaps the suffix at 1
        ([1, 2, 3], []),  # no match
        ([3], []),  # a single token has no earlier occurrence
        ([0, *range(100, 120), 0], list(range(100, 110))),  # at most 10 tokens
    ],
)
def test_prompt_lookup(seq: list[int], expected: list[int]) -> None:
    assert prompt_lookup(seq) == expected
    tree = PythonPLD().propose_for(np.array(seq, dtype=np.int32), budget=64)
    assert tree.tokens.tolist() == [seq[-1], *expected]
    assert tree.parents.tolist() == list(range(-1, len(expected)))


def test_python_pld_budget_and_state() -> None:
    pld = PythonPLD()
    pld.start(7, np.array([1, 2, 3, 4, 5, 1, 2], dtype=np.int32))
    pld.start(8, np.array([9, 9], dtype=np.int32))
    assert pld.propose(7, budget=64).tokens.tolist() == [2, 3, 4, 5, 1, 2]
    assert pld.propose(7, budget=3).tokens.tolist() == [2, 3, 4]  # budget counts the root
    assert pld.propose(7, budget=1).tokens.tolist() == [2]
    pld.accept(7, np.array([3, 9], dtype=np.int32))  # now ... 1 2 3 9: [2, 3, 9] is new, [3, 9] too
    assert pld.propose(7, budget=64).tokens.tolist() == [9]
    pld.accept(7, np.array([4], dtype=np.int32))  # [9, 4] new, [4] at 3
    assert pld.propose(7, budget=64).tokens.tolist() == [4, 5, 1, 2, 3, 9, 4]
    assert pld.propose(8, budget=64).tokens.tolist() == [9, 9]
    pld.stop(7)
    with pytest.raises(KeyError):
        pld.propose(7, budget=64)
    with pytest.raises(ValueError, match="budget"):
        pld.propose(8, budget=0)
    with pytest.raises(ValueError, match="empty"):
        pld.start(9, np.array([], dtype=np.int32))


# --- (c) Spec-Bench: prompts, and the calibration ---------------------------------------------------


@pytest.fixture(scope="module")
def requests() -> list[replay_data.Request]:
    return replay_data.load_requests()  # FileNotFoundError (not a skip) without ../shared


@pytest.fixture(scope="module")
def pld_trace(requests: list[replay_data.Request]) -> replay.Trace:
    return replay.replay({"pld-python": PythonPLD()}, requests, budget=64)["pld-python"]


def test_missing_shared_folder_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(replay_data, "SHARED", tmp_path / "shared")
    with pytest.raises(FileNotFoundError, match="shared"):
        replay_data.load_requests()


def test_requests_follow_fastchat_vicuna_v11(requests: list[replay_data.Request]) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(replay_data.SHARED / replay_data.TOKENIZER))
    root = replay_data.SHARED / "data" / "specbench"
    questions = [json.loads(line) for line in (root / "question.jsonl").read_text().splitlines()]
    answers = [
        json.loads(line)["choices"][0]["turns"]
        for line in (root / "vicuna-7b-v1.3" / "vanilla.jsonl").read_text().splitlines()
    ]
    assert len(requests) == 560
    assert len({r.question_id for r in requests}) == 480
    assert [r.question_id for r in requests[:4]] == [81, 81, 82, 82]
    assert len(replay_data.load_requests(limit=80)) == 160
    it = iter(requests)
    for q, a in zip(questions, answers, strict=True):
        # FastChat's text "SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:", tokenized as the
        # Hugging Face Llama tokenizer does: BOS first, "</s>" split off as the EOS id.
        assert len(q["turns"]) <= 2
        first = f"{replay_data.SYSTEM} USER: {q['turns'][0]} ASSISTANT:"
        prompts = [[1, *sp.encode(first)]]
        if len(q["turns"]) == 2:
            second = f"USER: {q['turns'][1]} ASSISTANT:"
            prompts.append([1, *sp.encode(f"{first} {a[0]}"), 2, *sp.encode(second)])
        for j, prompt in enumerate(prompts):
            r = next(it)
            assert (r.question_id, r.turn, r.category) == (q["question_id"], j, q["category"])
            assert r.prompt_ids.tolist() == prompt
            assert r.answer_ids.tolist() == sp.encode(a[j])  # no EOS appended
    assert next(it, None) is None


def test_pld_calibration(requests: list[replay_data.Request], pld_trace: replay.Trace) -> None:
    result = replay.report(pld_trace, requests)
    assert result["overall"]["tokens"] == sum(len(r.answer_ids) for r in requests)
    assert result["overall"]["mat"] == pytest.approx(1.755, abs=0.02)
    assert result["groups"]["translation"]["mat"] == pytest.approx(1.11, abs=0.02)
    assert result["groups"]["summarization"]["mat"] == pytest.approx(2.74, abs=0.02)


def _inline_pld_mat(requests: list[replay_data.Request]) -> tuple[int, int]:
    """(tokens, steps) of prompt lookup decoding, replayed without the harness, PythonPLD or fastdec."""
    tokens = steps = 0
    for r in requests:
        seq = np.concatenate([r.prompt_ids, r.answer_ids]).astype(np.int64)
        pos, end = len(r.prompt_ids), len(seq)
        while pos < end:
            draft = seq[:0]
            for n in (3, 2, 1):
                if pos > n:
                    starts = np.lib.stride_tricks.sliding_window_view(seq[: pos - 1], n)  # [pos - n, n]
                    hits = np.flatnonzero((starts == seq[pos - n : pos]).all(axis=1))
                    if len(hits):
                        draft = seq[hits[0] + n : min(hits[0] + n + 10, pos)]
                        break
            ahead = seq[pos : pos + len(draft)]  # shorter than the draft at the end of the answer
            accepted = int(np.cumprod(draft[: len(ahead)] == ahead).sum())
            emitted = min(accepted + 1, end - pos)
            tokens, steps, pos = tokens + emitted, steps + 1, pos + emitted
    return tokens, steps


def test_pld_subset_matches_an_inline_replay(
    requests: list[replay_data.Request], pld_trace: replay.Trace
) -> None:
    subset = replay_data.load_requests(limit=80)
    assert [r.question_id for r in subset] == [r.question_id for r in requests[: len(subset)]]
    in_subset = pld_trace.request < len(subset)
    harness = replay.summarize(pld_trace, in_subset)
    tokens, steps = _inline_pld_mat(subset)
    assert (harness["tokens"], harness["steps"]) == (tokens, steps)
    assert harness["mat"] == pytest.approx(tokens / steps, abs=1e-9)


def test_cli_writes_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    argv = ["replay.py", "--drafters", "pld-python", "--limit", "3", "--budget", "4", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    replay.main()
    report = json.loads((tmp_path / "replay.json").read_text())
    assert report["meta"]["requests"] == 6
    assert report["meta"]["budget"] == 4
    assert report["results"]["pld-python"]["overall"]["mean_draft"] <= 3
    assert "mt_bench" in (tmp_path / "replay.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:  # the plot needs the bench extra
        assert (tmp_path / "replay.png").is_file()
