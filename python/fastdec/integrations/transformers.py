"""HF transformers adapter: an assisted-generation candidate generator backed by a fastdec drafter.

Assisted generation (``model.generate(..., prompt_lookup_num_tokens=K)``) asks a
``CandidateGenerator`` once per step for ``get_candidates(input_ids [1, L]) ->
(candidate_input_ids [1, L + k], None)``: the sequence so far followed by ``k >= 0`` linear
draft tokens, which the target verifies in one forward pass; ``update_candidate_strategy`` is
then told how many matched. Batch size is 1 and drafts are linear (transformers' limits).

:func:`make_candidate_generator` builds such a generator over any fastdec drafter (default:
``NgramDrafter("pld")`` with the settings of transformers' ``PromptLookupCandidateGenerator``);
:func:`assisted_by` makes ``model.generate`` use it. The draft logic itself is
:func:`draft_candidates` / :func:`candidate_input_ids`, which need only numpy; torch and
transformers are imported when a generator is built.

Differences from ``PromptLookupCandidateGenerator``: drafts are clipped to
``max_length - L - 1`` tokens so the target's bonus token still fits (transformers clips the
continuation's end index at ``max_length``, which almost never binds), and the logits
processor check of forbidden candidates is not done.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fastdec._core import NgramDrafter
from fastdec._optional import require
from fastdec.integrations._common import ContextDrafter, chain_tokens, node_budget

_I64 = npt.NDArray[np.int64]


class CandidateGeneratorLike(Protocol):
    """The interface transformers' assisted generation calls (tensors typed loosely)."""

    def get_candidates(self, input_ids: Any, **kwargs: Any) -> tuple[Any, Any]: ...

    def update_candidate_strategy(self, input_ids: Any, scores: Any, num_matches: int) -> None: ...


def _eos_ids(eos_token_id: int | Sequence[int] | npt.ArrayLike | None) -> _I64:
    """``[num_eos] int64`` end-of-sequence ids (empty for None)."""
    if eos_token_id is None:
        return np.empty(0, dtype=np.int64)
    return np.asarray(eos_token_id, dtype=np.int64).reshape(-1)


def draft_candidates(
    drafter: ContextDrafter,
    context_ids: npt.ArrayLike,
    *,
    num_output_tokens: int,
    max_length: int | None = None,
    eos_token_id: int | Sequence[int] | npt.ArrayLike | None = None,
) -> _I64:
    """The linear draft after ``context_ids`` (the torch-free core of the generator).

    Args:
        drafter: any object with ``propose_for(context_ids, budget) -> TokenTree``.
        context_ids: ``[L] int`` the sequence so far (prompt and generated tokens).
        num_output_tokens: the most draft tokens.
        max_length: the generation's total length limit, or None; at most
            ``max_length - L - 1`` tokens are drafted.
        eos_token_id: an id or ids; the draft is cut before the first of them, so the target
            never accepts text past an end of sequence.

    Returns:
        ``[k] int64`` draft tokens, ``0 <= k <= num_output_tokens`` (empty: no guess).

    >>> import fastdec
    >>> drafter = fastdec.NgramDrafter("pld", max_n=2, num_pred=10)
    >>> draft_candidates(drafter, [4, 5, 6, 2, 7, 4, 5], num_output_tokens=3).tolist()
    [6, 2, 7]
    >>> draft_candidates(drafter, [4, 5, 6, 2, 7, 4, 5], num_output_tokens=3, eos_token_id=2).tolist()
    [6]
    """
    context = np.asarray(context_ids).reshape(-1)
    k = num_output_tokens
    if max_length is not None:
        k = min(k, max_length - len(context) - 1)
    if k <= 0 or len(context) == 0:
        return np.empty(0, dtype=np.int64)
    draft = chain_tokens(drafter.propose_for(context, node_budget(k)), k).astype(np.int64)
    eos = _eos_ids(eos_token_id)
    if eos.size:
        hits = np.flatnonzero(np.isin(draft, eos))
        if hits.size:
            draft = draft[: hits[0]]
    return draft


def candidate_input_ids(
    drafter: ContextDrafter,
    input_ids: npt.ArrayLike,
    *,
    num_output_tokens: int,
    max_length: int | None = None,
    eos_token_id: int | Sequence[int] | npt.ArrayLike | None = None,
) -> _I64:
    """``get_candidates`` on numpy: ``input_ids`` followed by the draft.

    Args:
        input_ids: ``[1, L] int`` the sequence so far (batch size 1).
        drafter, num_output_tokens, max_length, eos_token_id: as in :func:`draft_candidates`.

    Returns:
        ``[1, L + k] int64`` candidate input ids; ``k == 0`` (the input unchanged) means no
        draft, so the step decodes one token as usual.

    Raises:
        ValueError: ``input_ids`` is not ``[1, L]``.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {ids.shape}; assisted generation needs [1, L]")
    draft = draft_candidates(
        drafter,
        ids[0],
        num_output_tokens=num_output_tokens,
        max_length=max_length,
        eos_token_id=eos_token_id,
    )
    return np.concatenate([ids.astype(np.int64), draft[None, :]], axis=1)


@functools.cache
def _generator_class() -> type:
    """The ``CandidateGenerator`` subclass, defined once torch and transformers are imported."""
    torch = require("torch")
    base = require("transformers.generation.candidate_generator").CandidateGenerator

    class FastdecCandidateGenerator(base):  # type: ignore[misc, valid-type]
        """Assisted-generation candidates from a fastdec drafter (see :func:`make_candidate_generator`)."""

        def __init__(
            self,
            drafter: ContextDrafter,
            num_output_tokens: int,
            max_length: int | None,
            eos_token_id: Any,
        ) -> None:
            self.drafter = drafter
            self.num_output_tokens = num_output_tokens
            self.max_length = max_length
            self.eos_token_id = eos_token_id

        def get_candidates(self, input_ids: Any, **kwargs: Any) -> tuple[Any, None]:
            """``(candidate_input_ids [1, L + k] long, None)`` on ``input_ids``' device."""
            if input_ids.shape[0] != 1:
                raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; needs [1, L]")
            eos = self.eos_token_id
            if isinstance(eos, torch.Tensor):
                eos = eos.detach().cpu().numpy()
            draft = draft_candidates(
                self.drafter,
                input_ids[0].detach().cpu().numpy(),
                num_output_tokens=self.num_output_tokens,
                max_length=self.max_length,
                eos_token_id=eos,
            )
            if draft.size == 0:
                return input_ids, None
            tail = torch.from_numpy(draft).to(device=input_ids.device, dtype=input_ids.dtype)
            return torch.cat((input_ids, tail[None, :]), dim=1), None

        @property
        def num_drafting_tokens(self) -> int:
            """The most tokens drafted per step (transformers >= 5.25 sizes its cache's
            rollback record with it)."""
            return self.num_output_tokens

        def update_candidate_strategy(self, input_ids: Any, scores: Any, num_matches: int) -> None:
            """No-op, as in ``PromptLookupCandidateGenerator`` (the drafter is stateless here)."""

    return FastdecCandidateGenerator


def make_candidate_generator(
    drafter: ContextDrafter | None = None,
    *,
    num_output_tokens: int = 10,
    max_matching_ngram_size: int = 2,
    max_length: int | None = 20,
    eos_token_id: Any = None,
) -> CandidateGeneratorLike:
    """A ``transformers`` ``CandidateGenerator`` drafting with a fastdec drafter.

    Args:
        drafter: any object with ``propose_for(context_ids, budget) -> TokenTree``; default
            ``NgramDrafter("pld", min_n=1, max_n=max_matching_ngram_size,
            num_pred=num_output_tokens)``, transformers' prompt lookup.
        num_output_tokens: the most draft tokens per step.
        max_matching_ngram_size: the default drafter's longest n-gram.
        max_length: the generation's total length limit (``generation_config.max_length``).
        eos_token_id: an id, ids or tensor of ids; drafts stop before the first.

    Returns:
        An instance of a subclass of
        ``transformers.generation.candidate_generator.CandidateGenerator``.

    Raises:
        ImportError: torch or transformers is missing; the message says how to install them.
    """
    cls = _generator_class()
    if drafter is None:
        drafter = NgramDrafter("pld", min_n=1, max_n=max_matching_ngram_size, num_pred=num_output_tokens)
    generator: CandidateGeneratorLike = cls(drafter, num_output_tokens, max_length, eos_token_id)
    return generator


@contextlib.contextmanager
def assisted_by(
    model: Any,
    drafter: ContextDrafter | None = None,
    *,
    num_output_tokens: int = 10,
    max_matching_ngram_size: int = 2,
) -> Iterator[Callable[..., CandidateGeneratorLike]]:
    """Makes ``model.generate`` draft with a fastdec drafter inside the ``with`` block.

    transformers has no public argument for a custom candidate generator, so this shadows the
    private ``model._get_candidate_generator`` on the instance (restored on exit). Assisted
    generation must still be switched on, e.g. ``model.generate(..., prompt_lookup_num_tokens=
    num_output_tokens)``; the generator reads ``max_length`` and the EOS ids from the call's
    generation config.

    Args:
        model: a transformers ``PreTrainedModel``.
        drafter: as in :func:`make_candidate_generator`.
        num_output_tokens: as in :func:`make_candidate_generator`.
        max_matching_ngram_size: as in :func:`make_candidate_generator`.

    Yields:
        The installed factory (called by ``generate`` with its generation config).

    Raises:
        ImportError: torch or transformers is missing.
    """
    _generator_class()  # fail before patching if torch or transformers is missing

    def factory(generation_config: Any = None, *args: Any, **kwargs: Any) -> CandidateGeneratorLike:
        eos = getattr(generation_config, "_eos_token_tensor", None)
        if eos is None:
            eos = getattr(generation_config, "eos_token_id", None)
        return make_candidate_generator(
            drafter,
            num_output_tokens=num_output_tokens,
            max_matching_ngram_size=max_matching_ngram_size,
            max_length=getattr(generation_config, "max_length", None),
            eos_token_id=eos,
        )

    had_own = "_get_candidate_generator" in vars(model)
    previous = vars(model).get("_get_candidate_generator")
    model._get_candidate_generator = factory
    try:
        yield factory
    finally:
        if had_own:
            model._get_candidate_generator = previous
        else:
            del model._get_candidate_generator
