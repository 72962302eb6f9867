"""Constraints on the generated text, and the interface every kind shares.

Three kinds ship: :class:`fastdec.Regex` (a DFA; a state is an ``int``), :class:`fastdec.Grammar`
and :class:`fastdec.JsonSchema` (llguidance's Lark and JSON-schema compilers; a state is an
opaque :class:`fastdec.GrammarState`) and :class:`CallbackConstraint` (any Python checker; a state
is the tuple of tokens so far). They all satisfy :class:`Constraint`, which is what
:func:`fastdec.generate` and :mod:`fastdec.smc` take. A state is an immutable value: methods
return new states and never change the one given, so tree nodes and particles may share one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fastdec._core import _softmax64, awrs_sample

_Sample = tuple[int | None, float, int]


@runtime_checkable
class Constraint(Protocol):
    """What a constraint offers. ``allows(state, eos)`` is true exactly where the text is
    complete; ``sample*`` return ``(token or None at a dead end, weight, checks)``."""

    @property
    def vocab_size(self) -> int: ...
    def start(self) -> Any: ...
    def is_complete(self, state: Any) -> bool: ...
    def allows(self, state: Any, token: int) -> bool: ...
    def advance(self, state: Any, tokens: Any) -> Any | None: ...
    def mask(self, state: Any) -> npt.NDArray[np.int32]: ...
    def sample(
        self, state: Any, logits: Any, temperature: float = ..., estimator: str = ..., seed: int = ...
    ) -> _Sample: ...
    def sample_probs(self, state: Any, probs: Any, estimator: str = ..., seed: int = ...) -> _Sample: ...


State = tuple[int, ...]


class CallbackConstraint:
    """A constraint given by a Python function: ``check(tokens, token)`` says whether ``token``
    may follow the generated ``tokens`` (a tuple; the prompt is not included).

    AWRS calls ``check`` only for the tokens it draws (about 1 + sum p(r)/(p(r)+Z) of them per
    step, Lipkin et al. 2025), and the Rust sampler holds the GIL only during those calls. The
    full mask (:meth:`mask`) calls it once per vocabulary entry: it is there for comparison and
    for checkers that are cheap in bulk.

    Args:
        check: the predicate. It must be deterministic (AWRS checks each token once per step).
        vocab_size: the number of token ids the model scores.
        eos: the end-of-sequence ids; ``check(tokens, eos)`` decides whether the text may end
            there, and :meth:`is_complete` asks it.

    >>> digits = CallbackConstraint(lambda toks, t: t < 10 and len(toks) < 3, vocab_size=12)
    >>> digits.advance(digits.start(), [1, 2])
    (1, 2)
    >>> digits.allows((1, 2, 3), 4)
    False
    """

    def __init__(
        self, check: Callable[[State, int], bool], vocab_size: int, *, eos: Collection[int] = ()
    ) -> None:
        if not callable(check):
            raise TypeError(f"check must be callable, got {type(check).__name__}")
        if vocab_size < 1:
            raise ValueError(f"invalid vocab_size={vocab_size}: expected at least 1")
        bad = [e for e in eos if not 0 <= e < vocab_size]
        if bad:
            raise ValueError(f"eos ids {bad} are outside the vocabulary of {vocab_size} tokens")
        self._check = check
        self._vocab_size = vocab_size
        self.eos = frozenset(int(e) for e in eos)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def start(self) -> State:
        return ()

    def _token(self, token: int) -> int:
        t = int(token)
        if not 0 <= t < self._vocab_size:
            raise IndexError(f"token {t} out of range for {self._vocab_size} tokens in the vocabulary")
        return t

    def allows(self, state: State, token: int) -> bool:
        return bool(self._check(state, self._token(token)))

    def is_complete(self, state: State) -> bool:
        return any(self._check(state, e) for e in sorted(self.eos))

    def advance(self, state: State, tokens: Any) -> State | None:
        out = state
        for token in np.asarray(tokens).reshape(-1).tolist():
            if not self.allows(out, token):
                return None
            out = (*out, int(token))
        return out

    def mask(self, state: State) -> npt.NDArray[np.int32]:
        allowed = np.fromiter((bool(self._check(state, t)) for t in range(self._vocab_size)), bool)
        words = np.packbits(allowed, bitorder="little")
        words = np.pad(words, (0, -len(words) % 4))
        return words.view(np.int32).copy()

    def sample(
        self, state: State, logits: Any, temperature: float = 1.0, estimator: str = "none", seed: int = 0
    ) -> _Sample:
        probs = _softmax64(np.asarray(logits, dtype=np.float32).reshape(-1), temperature)
        return self.sample_probs(state, probs, estimator, seed)

    def sample_probs(self, state: State, probs: Any, estimator: str = "none", seed: int = 0) -> _Sample:
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if len(p) != self._vocab_size:
            raise ValueError(f"logits/probs have {len(p)} entries, the vocabulary {self._vocab_size}")
        return awrs_sample(p, lambda t: self._check(state, t), estimator, seed)

    def __repr__(self) -> str:
        name = getattr(self._check, "__qualname__", repr(self._check))
        return f"CallbackConstraint({name}, vocab_size={self._vocab_size})"
