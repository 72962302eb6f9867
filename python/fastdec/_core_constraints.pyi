"""Type stubs of ``fastdec._core``'s constrained decoding (re-exported by ``_core.pyi``; checked
by ``mypy.stubtest`` against ``_core_constraints.py``, which re-exports the native classes)."""

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from fastdec._core import TokenTree, _Floats, _IntArray, _Ints

__all__ = [
    "Grammar",
    "GrammarState",
    "JsonSchema",
    "PrunedTree",
    "Regex",
    "TokenVocab",
    "_softmax64",
    "awrs_sample",
]

_Sample = tuple[int | None, float, int]

@disjoint_base
class TokenVocab:
    """The bytes each token adds to the decoded text, the special tokens (never allowed by a
    constraint) and the end-of-sequence ids (allowed where the text is complete). The native
    base of :class:`fastdec.TokenVocab`, which adds the tokenizer constructors.

    Raises:
        ValueError: an empty vocabulary or a negative id.
        IndexError: a special or eos id outside the vocabulary.
    """

    def __new__(
        cls, tokens: Sequence[bytes], special: Sequence[int] = ..., eos: Sequence[int] = ...
    ) -> TokenVocab: ...
    @property
    def size(self) -> int: ...
    def __len__(self) -> int: ...
    def token_bytes(self, token: int) -> bytes: ...
    def is_eos(self, token: int) -> bool: ...

_S = TypeVar("_S")

class _Constraint(Generic[_S]):
    """The methods :class:`Regex` and :class:`Grammar` share over their kind of state ``_S`` (a
    stub-only base: each native class defines them, over the core's ``Constraint`` trait)."""

    @property
    def vocab_size(self) -> int: ...
    def start(self) -> _S:
        """The state of the empty text."""
    def is_live(self, state: _S) -> bool:
        """Whether the text can still be extended (or ended) validly."""
    def is_complete(self, state: _S) -> bool:
        """Whether the text is complete: end of sequence is allowed here."""
    def allows(self, state: _S, token: int) -> bool:
        """Whether ``token`` may follow the text (end of sequence: iff it is complete; other special
        tokens never)."""
    def advance(self, state: _S, tokens: _Ints) -> _S | None:
        """The state after ``tokens``, or None as soon as one is not allowed."""
    def mask(self, state: _S) -> _IntArray:
        """The allowed tokens as an int32 bitmask of ``ceil(V / 32)`` words (bit ``t % 32`` of
        word ``t // 32``), the layout of llguidance and XGrammar."""
    def fill_mask(self, state: _S, out: npt.NDArray[np.int32], row: int) -> None:
        """Writes the mask of ``state`` into row ``row`` of an int32 array ``[rows, ceil(V / 32)]``."""
    def sample(
        self,
        state: _S,
        logits: _Floats,
        temperature: float = 1.0,
        estimator: str = "none",
        seed: int = 0,
        mask_after: int = ...,
    ) -> _Sample:
        """One AWRS step: ``(token or None at a dead end, weight, checks)``; ``estimator`` is
        ``"none"``, ``"two-run"`` or ``"geometric"``. Without weights, after ``mask_after``
        rejections (default 32; 0: never) the token is drawn under the full mask instead (same
        law; bounds the cost when the model disagrees with the constraint)."""
    def sample_probs(
        self, state: _S, probs: Sequence[float], estimator: str = "none", seed: int = 0
    ) -> _Sample:
        """One AWRS step from probabilities (float64, normalised): ``(token or None, weight,
        checks)``."""
    def prune_tree(self, tree: TokenTree, state: _S) -> PrunedTree:
        """The subtree of ``tree`` whose every token the constraint allows after the text in
        ``state`` (the root stands for text already there), one walk in Rust; tokens outside the
        vocabulary are pruned."""
    def verify_tree(
        self,
        pruned: PrunedTree,
        *,
        logits: npt.NDArray[np.float32] | None = None,
        probs: npt.NDArray[np.float32] | npt.NDArray[np.float64] | None = None,
        seed: int = 0,
    ) -> tuple[list[int], int | None, _S]:
        """Verifies a tree from :meth:`prune_tree` against the target's rows at its nodes: greedy
        from ``logits`` (float32 ``[num_nodes, vocab_size]``; the allowed token of highest
        logit, lowest id among ties) or sampled from ``probs`` (float32/float64, one AWRS draw
        per visited node from ``seed``). Returns ``(accepted_nodes, bonus_token, state)``:
        accepted node ids root first, the token after them (None at a dead end: nothing allowed
        has mass) and the state after it."""

@final
class Regex(_Constraint[int]):
    """A regular expression (regex crate syntax) the whole decoded text must match, compiled to
    a DFA over the vocabulary's token bytes. A sequence's state is an ``int`` (the DFA state):
    free to copy, and rollback is keeping the old one.

    ``mask_cache_bytes`` (default 64 MiB; 0 turns it off) bounds a cache of full masks by DFA
    state, least recently used out first: a mask is a function of the state alone, and decoding
    revisits states, so each state's trie walk is paid once.

    Raises:
        ValueError: a syntax error (the message marks its position in the pattern) or a pattern
            whose automata would exceed ``max_dfa_bytes`` (default 256 MiB).
    """

    def __new__(
        cls, pattern: str, vocab: TokenVocab, max_dfa_bytes: int = ..., mask_cache_bytes: int = ...
    ) -> Regex: ...
    @property
    def pattern(self) -> str: ...
    @property
    def cached_masks(self) -> int:
        """Full masks held by the cache (see ``mask_cache_bytes``)."""

@final
class PrunedTree:
    """A draft tree cut down to what a constraint allows after a sequence's text (from
    ``Regex.prune_tree`` or ``Grammar.prune_tree``); it holds each kept node's state for that
    constraint's ``verify_tree``."""

    @property
    def tree(self) -> TokenTree:
        """The kept nodes, renumbered in their original order."""
    @property
    def changed(self) -> bool:
        """Whether nodes were removed (the tree's node ids no longer match the proposal)."""

@final
class GrammarState:
    """The parse state of one sequence under a :class:`Grammar`: an immutable value (methods
    return new states), so tree nodes and particles may share one."""

@disjoint_base
class Grammar(_Constraint[GrammarState]):
    """A Lark grammar (llguidance's dialect: ``start: ...``, regex terminals ``/.../``,
    ``%json {...}`` for an embedded JSON Schema) the whole decoded text must match, compiled by
    llguidance over the vocabulary. Same methods as :class:`Regex`; a state is a
    :class:`GrammarState`. Checking a token costs about a microsecond.

    Raises:
        ValueError: a grammar llguidance rejects (the message shows the line and column), or a
            vocabulary without an end-of-sequence id.
    """

    def __new__(cls, grammar: str, vocab: TokenVocab) -> Grammar: ...
    @property
    def source(self) -> str:
        """The grammar, or the JSON Schema text of a :class:`JsonSchema`."""

@final
class JsonSchema(Grammar):
    """A JSON Schema the decoded text must satisfy (llguidance's compiler: ``$ref``, ``anyOf``,
    formats, ``additionalProperties``, ...; see its ``docs/json_schema.md``).

    Args:
        schema: the schema as JSON text, a dict, or a bool.
        vocab: the model's vocabulary.
        whitespace_flexible: allow any JSON whitespace between tokens (llguidance's default);
            False allows none beyond the separators ``,`` and ``:``. An ``"x-guidance"`` entry
            in the schema overrides it.

    Raises:
        ValueError: text that is not JSON (with line and column) or a schema llguidance rejects
            (with the JSON pointer of the offending subschema, e.g. ``at /properties/a``).
        TypeError: a schema that is neither text, a dict nor a bool.
    """

    def __new__(
        cls, schema: str | dict[str, Any] | bool, vocab: TokenVocab, *, whitespace_flexible: bool = True
    ) -> JsonSchema: ...

def awrs_sample(
    probs: Sequence[float] | npt.NDArray[np.float64],
    check: Callable[[int], bool],
    estimator: str = "none",
    seed: int = 0,
) -> _Sample:
    """AWRS with a Python predicate as the constraint: the sampler runs without the GIL and takes
    it only to call ``check``, once per distinct token checked."""

def _softmax64(logits: _Floats, temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """Softmax at a temperature in float64, as the AWRS reference uses (for tests)."""
