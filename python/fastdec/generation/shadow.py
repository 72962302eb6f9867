"""Shadow drafts: while ``budget="auto"`` runs plain decoding, what would a tree have gained?

A step at size 1 verifies no tree, so the controller (:mod:`.budget`) would learn nothing about
the tree sizes until its next probe, and a text that turns predictable (code that repeats its
names, a list, a quote of the prompt) would run plain for up to ``probe_max`` steps. Instead, a
row running plain gets a tree from the drafter anyway (microseconds, no forward), and the tokens
that plain decoding emits next are its verdict: under greedy decoding a tree accepts exactly the
longest root-to-node path that spells the target's next tokens, which the following steps
reveal. The tokens every size would have kept are then fed to the controller as if a step at the
shadow's size had run (:meth:`AutoBudget.observe`). Only drafters whose ``propose`` leaves their
state alone and that learn nothing from the target's top-k (trie, n-gram, prompt lookup, their
hybrid) are shadowed: Token Recycling pairs its feedback with its last proposal.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastdec._core import BaseDrafter, TokenTree

from .rows import Row


@dataclass
class _Pending:
    tree: TokenTree
    start: int  # len(row.new) when the tree was drafted: its root is the token before
    depth: int  # the tree's deepest node: how many emitted tokens decide its fate
    budget: int


class ShadowDrafts:
    """At most one unresolved shadow tree per row."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}

    def propose(self, draft: BaseDrafter, rows: list[Row], size: int) -> None:
        """Drafts a ``size``-node tree for every live row that has no shadow pending."""
        todo = [b for b, row in enumerate(rows) if not row.done and b not in self._pending]
        if not todo or size < 2:
            return
        trees = draft.propose_batch([rows[b].request_id for b in todo], [size] * len(todo))
        for i, b in enumerate(todo):
            tree = trees[i]
            self._pending[b] = _Pending(tree, len(rows[b].new), int(tree.max_depth), size)

    def resolve(self, rows: list[Row]) -> list[tuple[int, int, list[int]]]:
        """``(budget, real nodes, accepted path)`` (node indices, root first) of each shadow
        whose fate is known: enough tokens followed it, or its row stopped."""
        done = []
        for b, p in list(self._pending.items()):
            row = rows[b]
            future = row.new[p.start :]
            if len(future) < p.depth and not row.done:
                continue
            del self._pending[b]
            done.append((p.budget, p.tree.num_nodes, accepted_path(p.tree, future)))
        return done


def accepted_path(tree: TokenTree, future: list[int]) -> list[int]:
    """The path greedy verification keeps when the target's next tokens are ``future``: from the
    root, follow the child whose token is the next one, while there is one."""
    tokens, parents = tree.tokens, tree.parents
    path = [0]
    for token in future:
        node = path[-1]
        child = next((i for i in range(1, tree.num_nodes) if parents[i] == node and tokens[i] == token), None)
        if child is None:
            break
        path.append(child)
    return path
