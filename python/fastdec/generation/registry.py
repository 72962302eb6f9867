"""What ``fastdec.generate`` keeps from one call to the next: the drafters it builds from a name
and the ``budget="auto"`` controllers, per model.

A drafter's shared state (Token Recycling's table, the trie of past outputs) and a controller's
measurements are worth keeping (a hot start: the next call drafts and sizes its trees from what
the previous ones learnt). Both are held under weak keys, so a collected model or drafter takes
its entries with it and a new drafter never inherits the measurements of a collected one.
"""

from __future__ import annotations

import weakref
from typing import Any

from fastdec._core import BaseDrafter
from fastdec.drafters import build_drafter

from .budget import AutoBudget


def make_drafter(name: str, vocab_size: int) -> BaseDrafter:
    """A fresh drafter of the kind ``name`` (one of :data:`fastdec.drafters.DRAFTER_NAMES`), as
    :func:`fastdec.drafters.build_drafter` builds it by default."""
    return build_drafter(name, vocab_size=vocab_size, label="unknown")


class DrafterRegistry:
    """Drafters built from a name and ``budget="auto"`` controllers, kept per model."""

    def __init__(self) -> None:
        self._drafters: weakref.WeakKeyDictionary[Any, dict[str, BaseDrafter]] = weakref.WeakKeyDictionary()
        self._budgets: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[BaseDrafter, AutoBudget]] = (
            weakref.WeakKeyDictionary()
        )

    def drafter(self, model: Any, drafter: str | BaseDrafter | None, vocab_size: int) -> BaseDrafter | None:
        """``drafter`` itself when it is a drafter object or ``None``; for a name, the drafter of
        that name this registry keeps for ``model`` (built on first use)."""
        if drafter is None or isinstance(drafter, BaseDrafter):
            return drafter
        if not isinstance(drafter, str):
            raise TypeError(f"drafter must be a name or a fastdec drafter, got {type(drafter).__name__}")
        per_model = self._drafters.setdefault(model, {})
        if drafter not in per_model:
            per_model[drafter] = make_drafter(drafter, vocab_size)
        return per_model[drafter]

    def auto_budget(self, model: Any, drafter: BaseDrafter) -> AutoBudget:
        """The tree-size controller of ``drafter`` on ``model`` (built on first use)."""
        per_model = self._budgets.setdefault(model, weakref.WeakKeyDictionary())
        if drafter not in per_model:
            per_model[drafter] = AutoBudget()
        return per_model[drafter]

    def clear(self) -> None:
        """Forgets every kept drafter and controller (the next call starts cold)."""
        self._drafters.clear()
        self._budgets.clear()


#: the registry ``fastdec.generate`` uses unless it is passed another one
DEFAULT_REGISTRY = DrafterRegistry()
