"""Shadow drafts (fastdec.generation.shadow): while budget="auto" runs plain decoding, a tree's
fate is read off the tokens that follow, and the controller learns the sizes' gains."""

from __future__ import annotations

import fastdec
import numpy as np
from fastdec.generation.budget import AutoBudget
from fastdec.generation.rows import Row
from fastdec.generation.shadow import ShadowDrafts, accepted_path


def test_accepted_path_is_greedy_verification() -> None:
    tree = fastdec.TokenTree([5, 7, 8, 9, 9], [-1, 0, 0, 1, 2])
    assert accepted_path(tree, []) == [0]
    assert accepted_path(tree, [8]) == [0, 2]
    assert accepted_path(tree, [7, 9, 1]) == [0, 1, 3]
    assert accepted_path(tree, [8, 9]) == [0, 2, 4]
    assert accepted_path(tree, [6, 7]) == [0]
    # the same verdict as greedy verification of the tree with those tokens as the argmax
    for future in ([7, 9], [8, 9], [8, 1], [3]):
        path = accepted_path(tree, future)
        # a node's argmax: the token after it in `future` (past its end: one no child has)
        argmax = [future[d] if d < len(future) else 0 for d in tree.depth]
        accepted = tree.verify_greedy(np.array(argmax, dtype=np.int32))[0]
        assert list(accepted) == path


def test_shadow_resolves_once_the_tokens_follow() -> None:
    drafter = fastdec.NgramDrafter("pld")
    row = Row([1, 2, 3, 4, 5, 1, 2, 3], 20, frozenset())
    drafter.start(row.request_id, row.tokens)
    shadow = ShadowDrafts()
    shadow.propose(drafter, [row], 4)  # prompt lookup: 3 -> 4 5 1 ...
    assert shadow.resolve([row]) == []  # nothing emitted yet
    for token in (4, 5, 9):
        emitted = row.emit([], token, False)
        drafter.accept(row.request_id, emitted)
    [(budget, nodes, path)] = shadow.resolve([row])
    assert budget == 4
    assert nodes == 4
    assert path == [0, 1, 2]
    shadow.propose(drafter, [row], 4)
    row.done = True  # a stopped row resolves with what it has
    assert len(shadow.resolve([row])) == 1


def test_observe_teaches_the_controller_without_a_step() -> None:
    auto = AutoBudget(candidates=(1, 2, 4))
    before = auto.expected_tokens(4)
    auto.observe(4, auto.counterfactual(4, auto.candidates, [[0, 1, 2, 3]]), 4)
    assert auto.expected_tokens(4) > before
    assert auto.known(4)
    assert auto.cost.samples == type(auto.cost.samples)()  # no cost sample: nothing ran
    assert auto.shadow_size() == 2  # nothing run yet: the size above plain
    auto.record(4, 0.01, {1: 1.0, 2: 1.0, 4: 1.0}, 4)
    assert auto.shadow_size() == 4
