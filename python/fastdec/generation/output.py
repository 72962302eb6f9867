"""What ``fastdec.generate`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerateOutput:
    """What ``fastdec.generate`` returns. Token lists hold the new tokens of each row (an EOS
    token, when produced, is the last one)."""

    sequences: list[list[int]]
    # per row, per forward: tokens emitted (bonus included); the first entry is the prefill's token
    accepted_lengths: list[list[int]]
    budgets: list[int] = field(default_factory=list)  # per decode step (the prefill not counted)
    # budget="auto": the size it runs and why (AutoBudget.explain); then, on a CPU, linear_note
    budget_note: str = ""
    linear_note: str = ""  # the CPU linear path per row count and the measured costs behind it
    steps: int = 0  # decode steps after the prefill
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    draft_seconds: float = 0.0
    forward_seconds: float = 0.0
    # of decode_seconds, measuring CPU linear paths (first use per model and thread count)
    calibration_seconds: float = 0.0

    @property
    def new_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def mean_accepted(self) -> float:
        """Mean tokens emitted per row-step, the bonus token included (MAT)."""
        n = sum(len(a) for a in self.accepted_lengths)
        return sum(sum(a) for a in self.accepted_lengths) / n if n else 0.0

    @property
    def tokens_per_second(self) -> float:
        total = self.prefill_seconds + self.decode_seconds
        return self.new_tokens / total if total > 0 else 0.0
