"""The KV cache of one ``fastdec.generate`` call, as the step loop sees it: prefill, score a
batch of trees in one forward pass, keep the accepted paths.

Rows are right-padded: row ``b`` has ``valid[b]`` real entries in slots ``0..valid[b]`` and the
cache ``past`` slots in all (``past = max(valid)``); the slots of a row that accepted fewer
tokens than others hold stale entries, masked by the tree mask (docs/design.md#kv-recipe). A ``DynamicCache``
grows per step and is compacted into new tensors; a ``StaticCache`` (``static_len`` slots per row,
fixed addresses) is compacted in place.

Sliding-window layers (docs/design.md#sliding-window) get their own mask and, with the dynamic
cache, keep only what a window still needs: after each compaction the slots before
``min(valid) - window + 1`` of the live rows are dropped (``offset`` counts them), so those layers
hold the window plus the tree under verification, never the context. Trimming happens only after
acceptance, so a rejected tree never pushes out an entry the window still needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastdec.tree_batch import TreeBatch

from . import cache as kv
from .attention_layout import FULL, SLIDING, AttentionLayout, prefill_mask
from .step_ops import StepOps


class TreeCache:
    """A transformers cache plus the per-row bookkeeping that tree verification needs."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        ops: StepOps,
        static_len: int | None = None,
        layout: AttentionLayout | None = None,
    ) -> None:
        self.model = model
        self.ops = ops
        self.static_len = static_len
        self.layout = layout or AttentionLayout((), None)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.cache = kv.new_cache(model, static_len, all_full=self.layout.sliding)
        # leading slots the sliding layers have dropped (a static cache keeps them all)
        self.offset = 0
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
        extra: dict[str, Any] = {}
        if self.layout.sliding:
            rows, dtype, cols = len(self.valid), self.dtype, self.static_len
            window = self.layout.window
            extra["attention_mask"] = self.layout.masks(
                prefill_mask(rows, self.past, None, dtype, self.device, cols) if self.layout.mixed else None,
                prefill_mask(rows, self.past, window, dtype, self.device, cols),
            )
        out = kv.run(
            self.model,
            self.cache,
            start=0,
            input_ids=pre.to(self.device),
            use_cache=True,
            logits_to_keep=to_keep,
            **extra,
        )
        self._trim(range(len(self.valid)))
        logits: torch.Tensor = out.logits
        if len(keep) == 1:
            return logits[:, -1:]
        column = torch.tensor([keep.index(n) for n in last], device=logits.device)
        return logits[torch.arange(len(last), device=logits.device), column][:, None]

    def score(self, batch: TreeBatch) -> torch.Tensor:
        """The target's logits ``[B, N, V]`` at every tree node, from one forward pass; the
        trees' K/V are appended after slot ``past``."""
        valid = torch.tensor(self.valid, device=self.device)
        mask: Any
        if self.layout.sliding:
            full = None
            if self.layout.mixed:
                full, positions = self.ops.tree_mask(
                    batch, valid, self.past, self.dtype, kv_len=self.static_len
                )
            sliding, positions = self.ops.tree_mask(
                batch,
                valid,
                self.past,
                self.dtype,
                kv_len=self.static_len,
                window=self.layout.window,
                offset=self.offset,
            )
            mask = self.layout.masks(full, sliding)
        elif (
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
        if self.static_len is not None:
            self.past = self.ops.compact_kv_in_place(layers, self.past, self.valid, paths)
            kv.set_length(self.cache, self.past)
        elif not self.layout.sliding or self.offset == 0:
            new_kv, self.past = self.ops.compact_kv(layers, self.past, self.valid, paths)
            kv.set_kv_tensors(self.cache, new_kv)
        else:
            new_kv = list(layers)
            full = self.layout.layers(FULL)
            past = self.past
            if full:
                moved, self.past = self.ops.compact_kv([layers[i] for i in full], past, self.valid, paths)
                for i, pair in zip(full, moved, strict=True):
                    new_kv[i] = pair
            else:
                self.past = max(v + len(p) for v, p in zip(self.valid, paths, strict=True))
            # the sliding layers' slot s is their column s - offset; a finished row below the
            # offset has nothing left to keep there (its entries are never read again)
            local = [max(v - self.offset, 0) for v in self.valid]
            sliding = self.layout.layers(SLIDING)
            moved, length = self.ops.compact_kv(
                [layers[i] for i in sliding], past - self.offset, local, paths
            )
            pad = self.past - self.offset - length
            for i, (k, v) in zip(sliding, moved, strict=True):
                if pad > 0:  # only when every longer row finished: keep the columns aligned
                    k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (k, v))
                new_kv[i] = (k, v)
            kv.set_kv_tensors(self.cache, new_kv)
        for b, path in enumerate(paths):
            if live[b]:
                self.valid[b] += len(path)
        self._trim([b for b in range(len(paths)) if live[b]])

    def _trim(self, live: Sequence[int]) -> None:
        """Drops the sliding layers' slots that no live row's window reaches any more (a dynamic
        cache only: a static one keeps its fixed buffers)."""
        window = self.layout.window
        if window is None or self.static_len is not None or not live:
            return
        keep_from = max(min(self.valid[b] for b in live) - (window - 1), self.offset)
        drop = keep_from - self.offset
        if drop <= 0:
            return
        layers = kv.kv_tensors(self.cache)
        trimmed = list(layers)
        for i in self.layout.layers(SLIDING):
            k, v = layers[i]
            trimmed[i] = (k[:, :, drop:], v[:, :, drop:])
        kv.set_kv_tensors(self.cache, trimmed)
        self.offset = keep_from
