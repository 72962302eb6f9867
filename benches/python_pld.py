"""Prompt lookup decoding in plain Python, the baseline drafter of ``replay.py``.

PLD (apoorvumang/prompt-lookup-decoding; Spec-Bench ``model/pld/pld.py``): for
n = 3 down to 1, take the last n tokens of the sequence (prompt + generated) and find their
earliest earlier occurrence; the tokens that followed it (up to 10) are the draft. The first n
with a match wins; no match gives an empty draft. Written the way a careful Python user would:
the sequence is a list, and ``list.index`` finds the candidate starts.
"""

from __future__ import annotations

import fastdec
import numpy as np
import numpy.typing as npt


def prompt_lookup(seq: list[int], max_ngram: int = 3, num_draft: int = 10) -> list[int]:
    """PLD's draft for ``seq``: the tokens after the earliest earlier match of its longest suffix.

    Args:
        seq: the whole sequence so far, prompt and generated tokens.
        max_ngram: longest suffix tried; shorter ones are tried down to 1.
        num_draft: most tokens to return.

    Returns:
        Up to ``num_draft`` tokens (fewer if the sequence ends first), ``[]`` when no suffix of
        length ``1..max_ngram`` occurs earlier.

    >>> prompt_lookup([5, 6, 7, 9, 5, 6, 7, 8, 5, 6, 7], num_draft=4)
    [9, 5, 6, 7]
    """
    end = len(seq)
    if num_draft <= 0:
        return []
    for n in range(min(max_ngram, end - 1), 0, -1):
        suffix = seq[end - n :]
        # A match starts at i in [0, end - n): any earlier occurrence, overlapping allowed, but
        # not the suffix itself. It always leaves at least one token after it.
        i = -1
        while True:
            try:
                i = seq.index(suffix[0], i + 1, end - n)
            except ValueError:
                break
            if seq[i : i + n] == suffix:
                return seq[i + n : i + n + num_draft]
    return []


class PythonPLD:
    """Prompt lookup decoding behind the replay's drafter protocol (one sequence per request).

    >>> d = PythonPLD()
    >>> d.start(0, np.array([1, 2, 3, 4, 1, 2], dtype=np.int32))
    >>> d.propose(0, budget=64).tokens.tolist()
    [2, 3, 4, 1, 2]
    """

    def __init__(self, *, max_ngram: int = 3, num_draft: int = 10) -> None:
        if max_ngram < 1 or num_draft < 0:
            raise ValueError(f"max_ngram must be >= 1 and num_draft >= 0, got {max_ngram}, {num_draft}")
        self.max_ngram = max_ngram
        self.num_draft = num_draft
        self._seqs: dict[int, list[int]] = {}

    def start(self, request_id: int, prompt_ids: npt.ArrayLike) -> None:
        """Begins a request whose context is ``prompt_ids`` ([P] int32, P >= 1)."""
        seq = np.asarray(prompt_ids).tolist()
        if not seq:
            raise ValueError("prompt_ids must not be empty: the root of every tree is its last token")
        self._seqs[request_id] = seq

    def propose(self, request_id: int, budget: int) -> fastdec.TokenTree:
        """A chain tree: the last token, then up to ``min(num_draft, budget - 1)`` drafts."""
        return self._tree(self._seqs[request_id], budget)

    def accept(self, request_id: int, emitted: npt.ArrayLike, topk_ids: npt.ArrayLike | None = None) -> None:
        """Appends the emitted tokens ([k] int32: accepted drafts and the bonus). PLD ignores top-k."""
        self._seqs[request_id].extend(np.asarray(emitted).tolist())

    def stop(self, request_id: int) -> None:
        del self._seqs[request_id]

    def propose_for(self, context_ids: npt.ArrayLike, budget: int) -> fastdec.TokenTree:
        """Stateless :meth:`propose` for the context ``context_ids`` ([L] int32, L >= 1)."""
        seq = np.asarray(context_ids).tolist()
        if not seq:
            raise ValueError("context_ids must not be empty")
        return self._tree(seq, budget)

    def _tree(self, seq: list[int], budget: int) -> fastdec.TokenTree:
        if budget < 1:
            raise ValueError(f"budget counts the root and must be >= 1, got {budget}")
        draft = prompt_lookup(seq, self.max_ngram, min(self.num_draft, budget - 1))
        return fastdec.TokenTree.chain([seq[-1], *draft])
