"""vLLM V1 adapter: a ``custom_class`` proposer that drafts with any fastdec drafter.

vLLM constructs the class named by its dotted path with its ``VllmConfig`` and calls ``propose``
once per step with the inputs of its built-in ``NgramProposer``::

    --speculative-config '{"method": "custom_class", "num_speculative_tokens": 5,
                           "model": "fastdec.integrations.vllm.FastdecProposer"}'

(or the dotted path of a subclass of yours that overrides :meth:`FastdecProposer.make_drafter`).
The arguments of ``propose``:

* ``sampled_token_ids: list[list[int]]`` -- per batch row, the tokens the last step emitted;
  empty for a request that emitted nothing (a partial prefill): it gets no draft.
* ``num_tokens_no_spec: [num_rows] int`` -- tokens of each row without drafts. vLLM writes the
  sampled tokens into ``token_ids_cpu`` and advances this count *before* it proposes, so the row
  already ends with them.
* ``token_ids_cpu: [max_num_seqs, max_model_len] int32`` -- the persistent batch's token rows;
  row ``i`` holds request ``i``'s prompt and output in ``[:num_tokens_no_spec[i]]``.

It returns one linear draft per row (``list[list[int]]``, ``[]`` = no speculation). The row
order changes between steps and no request id is passed, so the adapter is stateless: each row
is drafted with ``drafter.propose_for(context, k + 1)`` and the tree is cut to its
:meth:`~fastdec.TokenTree.chain_view` path. Like ``NgramProposer``, a row at ``max_model_len``
gets ``[]`` and a draft never runs past ``max_model_len``. vLLM passes no target logits, so a
:class:`fastdec.RecycleDrafter` cannot learn through this interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastdec._core import NgramDrafter
from fastdec.integrations._common import ContextDrafter, chain_tokens, node_budget


def _config_value(config: Any, *path: str) -> Any:
    """``config.path[0].path[1]...``, or None where an attribute is missing or None."""
    for name in path:
        config = getattr(config, name, None)
        if config is None:
            return None
    return config


def _first(*values: Any) -> Any:
    """The first value that is not None (None if all are)."""
    return next((value for value in values if value is not None), None)


class FastdecProposer:
    """vLLM's custom proposer interface over a fastdec drafter (linear drafts).

    Args:
        vllm_config: vLLM's ``VllmConfig`` (duck-typed: ``speculative_config.
            num_speculative_tokens``, ``speculative_config.prompt_lookup_min/max`` and
            ``model_config.max_model_len`` are read when present), or None.
        drafter: any object with ``propose_for(context_ids, budget) -> TokenTree``; None builds
            one with :meth:`make_drafter`.
        num_speculative_tokens: ``k``, the most draft tokens per request; overrides the config.
        max_model_len: the model's length limit; overrides the config.
        prompt_lookup_min, prompt_lookup_max: n-gram sizes of the default drafter; override the
            config. When neither is set anywhere they are 1 and 3; when one is set the other
            copies it (vLLM's rule).
        tree_budget: nodes asked of the drafter per request (root included), default ``k + 1``.
            A tree drafter's deepest path gets longer with more nodes; the draft is still cut
            to ``k`` tokens.
        sampled_in_rows: True (vLLM's layout) when ``token_ids_cpu[i, :num_tokens_no_spec[i]]``
            already ends with the sampled tokens; False appends ``sampled_token_ids[i]`` to the
            row first, for callers whose rows lag one step.

    Raises:
        ValueError: ``num_speculative_tokens`` or ``max_model_len`` is missing or < 1.

    Subclass and override :meth:`make_drafter` to give vLLM (which only passes the config) a
    different drafter.

    >>> import numpy as np
    >>> proposer = FastdecProposer(num_speculative_tokens=3, max_model_len=16)
    >>> rows = np.zeros((2, 16), dtype=np.int32)
    >>> rows[0, :6] = [5, 6, 7, 8, 5, 6]
    >>> proposer.propose([[6], []], np.array([6, 0]), rows)
    [[7, 8, 5], []]
    """

    def __init__(
        self,
        vllm_config: Any = None,
        *,
        drafter: ContextDrafter | None = None,
        num_speculative_tokens: int | None = None,
        max_model_len: int | None = None,
        prompt_lookup_min: int | None = None,
        prompt_lookup_max: int | None = None,
        tree_budget: int | None = None,
        sampled_in_rows: bool = True,
    ) -> None:
        spec = _config_value(vllm_config, "speculative_config")
        k = _first(num_speculative_tokens, _config_value(spec, "num_speculative_tokens"))
        limit = _first(max_model_len, _config_value(vllm_config, "model_config", "max_model_len"))
        if k is None or int(k) < 1:
            raise ValueError(f"num_speculative_tokens = {k!r}: must be an int >= 1")
        if limit is None or int(limit) < 1:
            raise ValueError(f"max_model_len = {limit!r}: must be an int >= 1")
        min_n = _first(prompt_lookup_min, _config_value(spec, "prompt_lookup_min"))
        max_n = _first(prompt_lookup_max, _config_value(spec, "prompt_lookup_max"))
        #: ``k``: the most draft tokens per request.
        self.num_speculative_tokens = int(k)
        self.max_model_len = int(limit)
        self.prompt_lookup_min = int(_first(min_n, max_n, 1))
        self.prompt_lookup_max = int(_first(max_n, min_n, 3))
        self.tree_budget = tree_budget
        self.sampled_in_rows = sampled_in_rows
        self.drafter: ContextDrafter = drafter if drafter is not None else self.make_drafter()

    def make_drafter(self) -> ContextDrafter:
        """The drafter used when none is given: vLLM ``NgramProposer``'s semantics.

        Returns:
            ``NgramDrafter("pld")`` matching n-grams of ``prompt_lookup_max`` down to
            ``prompt_lookup_min`` tokens (longest first, earliest occurrence) and drafting
            ``num_speculative_tokens`` tokens.
        """
        return NgramDrafter(
            "pld",
            min_n=self.prompt_lookup_min,
            max_n=self.prompt_lookup_max,
            num_pred=self.num_speculative_tokens,
        )

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No model to load (vLLM calls this with the target model)."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: npt.ArrayLike,
        token_ids_cpu: npt.ArrayLike,
        slot_mappings: Any = None,
        **kwargs: Any,
    ) -> list[list[int]]:
        """One linear draft per batch row.

        Args:
            sampled_token_ids: ``num_rows`` lists, the tokens each row emitted last step.
            num_tokens_no_spec: ``[>= num_rows] int`` tokens per row, drafts excluded.
            token_ids_cpu: ``[>= num_rows, max_model_len] int`` token rows (numpy, or a CPU
                tensor numpy can view).
            slot_mappings: unused (vLLM passes KV slot mappings).
            **kwargs: unused; later vLLM versions may pass more.

        Returns:
            ``num_rows`` drafts: row ``i`` gets at most ``min(k, max_model_len - n_i)`` tokens
            (``n_i`` its context length), and ``[]`` when it emitted nothing, is at
            ``max_model_len`` or the drafter has no guess.
        """
        counts = np.asarray(num_tokens_no_spec)
        rows = np.asarray(token_ids_cpu)
        k = self.num_speculative_tokens
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        todo: list[tuple[int, npt.NDArray[Any], int]] = []  # (row, context, draft length)
        for i, sampled in enumerate(sampled_token_ids):
            num_tokens = int(counts[i])
            if not len(sampled) or num_tokens >= self.max_model_len:
                continue
            context: npt.NDArray[Any] = rows[i, :num_tokens]
            if not self.sampled_in_rows:
                context = np.concatenate([context, np.asarray(sampled, dtype=context.dtype)])
            num_draft = min(k, self.max_model_len - len(context))
            if num_draft > 0 and len(context) > 0:
                todo.append((i, context, num_draft))
        budgets = [self.tree_budget if self.tree_budget is not None else node_budget(n) for _, _, n in todo]
        batch = getattr(self.drafter, "propose_for_batch", None)
        if batch is not None and todo:
            # fastdec drafters draft all rows in parallel without the GIL
            trees = batch([c for _, c, _ in todo], np.asarray(budgets, dtype=np.int32))
        else:
            trees = [self.drafter.propose_for(c, b) for (_, c, _), b in zip(todo, budgets, strict=True)]
        for (i, _, num_draft), tree in zip(todo, trees, strict=True):
            drafts[i] = chain_tokens(tree, num_draft).tolist()
        return drafts
