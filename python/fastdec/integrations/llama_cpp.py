"""llama-cpp-python adapter: a ``LlamaDraftModel`` over any fastdec drafter.

``Llama(model_path, draft_model=FastdecDraftModel("trie"), logits_all=True)`` drafts with a
fastdec drafter inside llama-cpp-python's own ``generate`` loop (which verifies linear drafts).
llama-cpp-python calls the draft model with the whole context and nothing else
(``__call__(input_ids: np.ndarray[intc], /, **kwargs) -> np.ndarray[intc]``; no request id, and
one ``Llama`` serves one sequence at a time). The adapter is the vLLM proposer's machinery on a
batch of one row (:class:`fastdec.integrations.vllm.FastdecProposer`):

* the request is recognised by the proposer's :class:`fastdec.DraftSession` from the context (a
  fingerprint of the tokens seen at the previous call): a context that continues it is the same
  request, anything else starts a new one, and the old one is stopped at once (``grace_steps =
  1``: a ``Llama`` runs one sequence at a time), which is when a :class:`fastdec.TrieDrafter`
  adds its output to the shared trie (cross-request memory, at most ``max_requests`` tracked);
* the draft length is learnt from what was accepted (the tokens the next context gained) and
  the time between calls against the tokens verified (:class:`fastdec.DraftLength`, inside the
  session).

Pass ``logits_all=True`` to ``Llama`` as well: llama-cpp-python 0.3.36 sizes its scores buffer for
``n_batch`` rows without it, and a long prompt then fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fastdec._core import BaseDrafter
from fastdec.integrations._common import server_drafter
from fastdec.integrations.vllm import DRAFTERS, FastdecProposer

_NO_LIMIT = 2**31 - 1  # llama-cpp-python clips drafts to its context itself
#: drafter names :class:`FastdecLlama` builds itself ("none": plain decoding through the loop)
TREE_DRAFTERS = ("none", "pld", "trie", "hybrid")
MAX_TREE = 64  # nodes per step; a tree of N nodes has < N leaves, each a sequence id


def make_drafter(name: str, *, max_requests: int = 1024, **options: Any) -> BaseDrafter | None:
    """The fastdec drafter a name stands for (None for ``"none"``).

    Raises:
        ValueError: an unknown name, or options the drafter does not take (named).
    """
    if name not in TREE_DRAFTERS:
        raise ValueError(f"fastdec llama.cpp drafter = {name!r}: must be one of {TREE_DRAFTERS}")
    if name == "none":
        return None
    return server_drafter(
        name,
        label="fastdec llama.cpp",
        num_pred=10,
        pld_n=(1, 3),
        tree_n=(1, 3),
        max_requests=max_requests,
        options=options,
    )


class FastdecDraftModel:
    """A llama-cpp-python draft model that drafts with a fastdec drafter.

    Args:
        drafter: ``"pld"``, ``"trie"`` (default) or ``"hybrid"``, or a stateful fastdec drafter.
        num_pred_tokens: the most draft tokens per call (llama-cpp-python's own prompt lookup
            uses 10).
        adaptive: learn the draft length from measured acceptance and step time (default on
            except for ``"pld"``).
        **settings: further :data:`fastdec.integrations.vllm.SETTINGS` (``prompt_lookup_min`` /
            ``prompt_lookup_max``, ``drafter_options``, ``tree_budget``, ``max_requests``,
            ``stats_file``).

    Raises:
        ValueError: an unknown drafter name or a bad setting (named in the message).

    >>> import numpy as np
    >>> draft = FastdecDraftModel("pld", num_pred_tokens=3, prompt_lookup_min=1, prompt_lookup_max=2)
    >>> draft(np.array([5, 6, 7, 8, 5, 6], dtype=np.intc)).tolist()
    [7, 8, 5]
    """

    def __init__(
        self,
        drafter: str | BaseDrafter = "trie",
        *,
        num_pred_tokens: int = 10,
        adaptive: bool | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(drafter, str) and drafter not in DRAFTERS:
            raise ValueError(f"fastdec llama.cpp drafter = {drafter!r}: must be one of {DRAFTERS}")
        if isinstance(num_pred_tokens, bool) or not isinstance(num_pred_tokens, int) or num_pred_tokens < 1:
            raise ValueError(f"num_pred_tokens = {num_pred_tokens!r}: must be an int >= 1")
        settings.setdefault("grace_steps", 1)
        if adaptive is not None:
            settings["adaptive"] = adaptive
        #: the batch-of-one proposer doing the work (its ``stats()`` are this model's)
        self.proposer = FastdecProposer(
            drafter=drafter, num_speculative_tokens=num_pred_tokens, max_model_len=_NO_LIMIT, **settings
        )

    def __call__(self, input_ids: npt.ArrayLike, /, **kwargs: Any) -> npt.NDArray[np.intc]:
        """The draft continuing ``input_ids`` (the whole context, last sampled token included);
        empty when the drafter has nothing worth verifying."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int32).reshape(-1)
        if len(ids) == 0:
            return np.empty(0, dtype=np.intc)
        drafts = self.proposer.propose([[int(ids[-1])]], np.array([len(ids)]), ids[None, :])
        return np.asarray(drafts[0], dtype=np.intc)

    def stats(self) -> dict[str, Any]:
        """Steps, tokens drafted and accepted, seconds drafting, the draft-length controller's
        state and the request tracker's (see :meth:`FastdecProposer.stats`)."""
        return self.proposer.stats()

    def finish(self) -> None:
        """Stops the current request now (its output reaches the shared trie) instead of at the
        next unrelated context."""
        self.proposer.session.finish_all()


def _register() -> None:
    """Makes :class:`FastdecDraftModel` a virtual ``LlamaDraftModel`` where llama-cpp-python is
    installed (``isinstance`` checks pass; nothing here imports it otherwise)."""
    try:
        from llama_cpp.llama_speculative import LlamaDraftModel  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    LlamaDraftModel.register(FastdecDraftModel)


_register()
