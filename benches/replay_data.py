"""Spec-Bench requests for the model-free replay: Vicuna v1.1 prompts and Vicuna-7B's greedy answers.

Inputs live in ``../shared`` (see its README, "Replaying real outputs"): the 480 Spec-Bench
questions, Vicuna-7B-v1.3's greedy answers (``vanilla.jsonl``) and the Llama-2 SentencePiece
tokenizer. Every turn becomes one request ``(prompt_ids, answer_ids)``:

* turn 1: ``[BOS] + sp(SYSTEM + " USER: " + question + " ASSISTANT:")``
* turn j > 1: the previous turn's ``prompt_ids + answer_ids``, then ``[EOS]`` (the "</s>" that
  FastChat's template puts after every answer), then ``sp("USER: " + question + " ASSISTANT:")``,
  whose leading "▁US" piece is the space before "USER".
* answer: ``sp(answer)``; SentencePiece's leading "▁" is the space the model emits after
  "ASSISTANT:". The answer does not end with EOS: the recorded text is all that is replayed.

This equals the Hugging Face Llama tokenizer on FastChat's full conversation text
(``SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:``, "</s>" split off as id 2), token for
token, on all 80 second turns. Without the final EOS, prompt lookup decoding replays to MAT
1.7551, the shared README's calibration (1.755); appending EOS to every finished answer gives
1.7513 instead.

Tokenizing takes a few seconds, so the result is cached in ``benches/.cache/`` under a hash of
the inputs (data files, tokenizer model, sentencepiece version and this module's format).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CACHE_DIR = REPO / "benches" / ".cache"

QUESTIONS = Path("data/specbench/question.jsonl")
ANSWERS = Path("data/specbench/vicuna-7b-v1.3/vanilla.jsonl")
TOKENIZER = Path("tokenizers/llama2/tokenizer.model")

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
BOS, EOS = 1, 2
# Bump when the way requests are built changes: it invalidates the cache.
FORMAT_VERSION = 1

# Spec-Bench's reporting groups: the eight MT-bench categories are reported as one.
MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
GROUPS = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")


def group_of(category: str) -> str:
    return "mt_bench" if category in MT_BENCH else category


@dataclass(frozen=True)
class Request:
    """One turn to replay: the drafter sees ``prompt_ids`` and must then produce ``answer_ids``."""

    question_id: int
    turn: int  # 0-based
    category: str
    prompt_ids: np.ndarray  # [P] int32, BOS first
    answer_ids: np.ndarray  # [A] int32, the recorded greedy answer

    @property
    def group(self) -> str:
        return group_of(self.category)


def shared_dir() -> Path:
    """``../shared`` next to the repository; raises if it or an input file is missing."""
    missing = [p for p in (QUESTIONS, ANSWERS, TOKENIZER) if not (SHARED / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the replay benchmark needs the shared folder at {SHARED.resolve()} (next to the "
            f"repository) with {', '.join(map(str, missing))}; it is missing"
        )
    return SHARED


def load_requests(limit: int | None = None) -> list[Request]:
    """All Spec-Bench turns in file order (question order, turns in order).

    Args:
        limit: keep only the first ``limit`` questions (all of their turns).

    Raises:
        FileNotFoundError: ``../shared`` or one of its input files is missing.
    """
    root = shared_dir()
    sources = [root / QUESTIONS, root / ANSWERS, root / TOKENIZER]
    import sentencepiece

    h = hashlib.sha256(f"v{FORMAT_VERSION} sentencepiece {sentencepiece.__version__}".encode())
    for path in sources:
        h.update(path.read_bytes())
    cache = CACHE_DIR / f"specbench-{h.hexdigest()[:16]}.npz"
    if cache.is_file():
        requests = _from_arrays(dict(np.load(cache, allow_pickle=False)))
    else:
        arrays = _tokenize(*sources)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cache)  # atomic: concurrent runs never read a half-written cache
        requests = _from_arrays(arrays)
    if limit is not None:
        keep = {r.question_id for r in requests[: _first_turns(requests, limit)]}
        requests = [r for r in requests if r.question_id in keep]
    return requests


def _first_turns(requests: list[Request], num_questions: int) -> int:
    """Number of leading requests that belong to the first ``num_questions`` questions."""
    seen = 0
    for i, r in enumerate(requests):
        if r.turn == 0:
            if seen == num_questions:
                return i
            seen += 1
    return len(requests)


def _tokenize(questions: Path, answers: Path, tokenizer: Path) -> dict[str, np.ndarray]:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
    qs = _read_jsonl(questions)
    ans = {a["question_id"]: a for a in _read_jsonl(answers)}
    qids, turns, cats, prompts, answers_ids = [], [], [], [], []
    for q in qs:
        recorded = ans[q["question_id"]]["choices"][0]["turns"]
        if len(recorded) != len(q["turns"]):
            raise ValueError(f"question {q['question_id']}: {len(q['turns'])} turns, {len(recorded)} answers")
        context: list[int] = []
        for j, (question, answer) in enumerate(zip(q["turns"], recorded, strict=True)):
            if j == 0:
                prompt = [BOS, *sp.encode(f"{SYSTEM} USER: {question} ASSISTANT:")]
            else:
                prompt = [*context, EOS, *sp.encode(f"USER: {question} ASSISTANT:")]
            answer_ids = sp.encode(answer)
            context = prompt + answer_ids
            qids.append(q["question_id"])
            turns.append(j)
            cats.append(q["category"])
            prompts.append(prompt)
            answers_ids.append(answer_ids)
    return {
        "question_id": np.array(qids, dtype=np.int32),
        "turn": np.array(turns, dtype=np.int32),
        "category": np.array(cats, dtype=str),
        "cu_prompt": np.cumsum([0] + [len(p) for p in prompts]).astype(np.int64),
        "cu_answer": np.cumsum([0] + [len(a) for a in answers_ids]).astype(np.int64),
        "prompt_ids": np.array([t for p in prompts for t in p], dtype=np.int32),
        "answer_ids": np.array([t for a in answers_ids for t in a], dtype=np.int32),
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _from_arrays(a: dict[str, np.ndarray]) -> list[Request]:
    cp, ca = a["cu_prompt"], a["cu_answer"]
    return [
        Request(
            question_id=int(a["question_id"][i]),
            turn=int(a["turn"][i]),
            category=str(a["category"][i]),
            prompt_ids=a["prompt_ids"][cp[i] : cp[i + 1]],
            answer_ids=a["answer_ids"][ca[i] : ca[i + 1]],
        )
        for i in range(len(a["turn"]))
    ]
