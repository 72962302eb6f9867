"""Per-row state of ``fastdec.generate``: one request of the batch, from prompt to stop."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

_request_ids = itertools.count()


@dataclass
class Row:
    """One prompt's sequence, its new tokens and its accepted lengths per step."""

    tokens: list[int]  # prompt, then every emitted token
    max_new_tokens: int
    eos: frozenset[int]
    request_id: str = field(default_factory=lambda: f"fastdec-{next(_request_ids)}")
    new: list[int] = field(default_factory=list)
    accepted_lengths: list[int] = field(default_factory=list)  # per step, bonus included
    done: bool = False

    @property
    def last(self) -> int:
        return self.tokens[-1]

    def emit(self, drafted: Sequence[int], bonus: int, dead: bool) -> list[int]:
        """Appends a step's accepted draft tokens and its bonus token (none at a ``dead`` end),
        cut after an EOS token (kept) and at ``max_new_tokens``; returns what was appended. The
        row is done after EOS, at the length limit, or at a dead end."""
        emitted = [*drafted] if dead else [*drafted, bonus]
        for i, t in enumerate(emitted):
            if t in self.eos:
                emitted = emitted[: i + 1]
                break
        emitted = emitted[: self.max_new_tokens - len(self.new)]
        self.tokens.extend(emitted)
        self.new.extend(emitted)
        self.accepted_lengths.append(len(emitted))
        self.done = dead or not emitted or emitted[-1] in self.eos or len(self.new) >= self.max_new_tokens
        return emitted
