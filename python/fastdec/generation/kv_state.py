"""The KV cache of one ``fastdec.generate`` call, as the step loop sees it: prefill, score a
batch of trees in one forward pass, keep the accepted paths.

Rows are right-padded: row ``b`` has ``valid[b]`` real entries in slots ``0..valid[b]`` and the
cache ``past`` slots in all (``past = max(valid)``); the slots of a row that accepted fewer
tokens than others hold stale entries, masked by the tree mask (docs/design.md#kv-recipe). A ``DynamicCache``
grows per step and is compacted into new tensors; a ``StaticCache`` (``static_len`` slots per row,
fixed addresses) is compacted in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastdec.tree_batch import TreeBatch

from . import cache as kv
from .step_ops import StepOps


class TreeCache:
    """A transformers cache plus the per-row bookkeeping that tree verification needs."""

    def __init__(
        self, model: Any, prompts: Sequence[Sequence[int]], ops: StepOps, static_len: int | None = None
    ) -> None:
        self.model = model
        self.ops = ops
        self.static_len = static_len
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.cache = kv.new_cache(model, static_len)
        # The whole prompt is cached by the prefill, whose logits give the first token, as
        # ``model.generate`` does: plain steps then follow its numerics exactly, which matters in
        # bfloat16, where running the prompt's last token in a later forward can round
        # differently and flip a greedy argmax.
        self.valid = [len(p) for p in prompts]
        self.past = max(self.valid)
        self._prompts = prompts

    def prefill(self) -> torch.Tensor:
        """Runs every prompt (right-padded; the causal mask alone keeps real tokens from seeing
        pads) and returns the logits ``[B, 1, V]`` at each prompt's last token."""
        pre = torch.zeros((len(self.valid), self.past), dtype=torch.long)
        for b, p in enumerate(self._prompts):
            pre[b, : len(p)] = torch.tensor(p)
        last = [n - 1 for n in self.valid]
        keep = sorted(set(last))
        # only the positions some row needs go through the LM head (a [B, T, V] tensor of
        # logits would be most of the call's memory)
        to_keep: int | torch.Tensor = 1 if len(keep) == 1 else torch.tensor(keep, device=self.device)
        out = kv.run(
            self.model,
            self.cache,
            start=0,
            input_ids=pre.to(self.device),
            use_cache=True,
            logits_to_keep=to_keep,
        )
        logits: torch.Tensor = out.logits
        if len(keep) == 1:
            return logits[:, -1:]
        column = torch.tensor([keep.index(n) for n in last], device=logits.device)
        return logits[torch.arange(len(last), device=logits.device), column][:, None]

    def score(self, batch: TreeBatch) -> torch.Tensor:
        """The target's logits ``[B, N, V]`` at every tree node, from one forward pass; the
        trees' K/V are appended after slot ``past``."""
        valid = torch.tensor(self.valid, device=self.device)
        mask: torch.Tensor | None
        if (
            self.static_len is None
            and len(self.valid) == 1
            and batch.tokens.shape[1] == 1
            and self.valid[0] == self.past
        ):
            # One token over a dense cache: the causal default is the same mask, and sdpa runs
            # faster without an explicit one.
            mask, positions = None, valid[:, None]
        else:
            mask, positions = self.ops.tree_mask(batch, valid, self.past, self.dtype, kv_len=self.static_len)
        out = kv.run(
            self.model,
            self.cache,
            start=self.past,
            input_ids=batch.tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
        )
        return out.logits  # type: ignore[no-any-return]

    def compact(self, paths: Sequence[Sequence[int]], live: Sequence[bool]) -> None:
        """Keeps the K/V of each row's accepted path (root first) right after its valid entries,
        drops the rest of the trees, and counts the kept entries of the ``live`` rows (a
        finished row's trees are never kept)."""
        layers = kv.kv_tensors(self.cache)
        if self.static_len is None:
            new_kv, self.past = self.ops.compact_kv(layers, self.past, self.valid, paths)
            kv.set_kv_tensors(self.cache, new_kv)
        else:
            self.past = self.ops.compact_kv_in_place(layers, self.past, self.valid, paths)
            kv.set_length(self.cache, self.past)
        for b, path in enumerate(paths):
            if live[b]:
                self.valid[b] += len(path)
