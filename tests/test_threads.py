"""Many Python threads sharing one tree and one template (STYLE.md §7: one stress test).

Large trees release the GIL around masks and verification, and the lazily built buffers (ancestor
bits, leaf paths) are first touched from all threads at once, so this exercises real concurrency.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import fastdec
import numpy as np
import pytest
import reference as ref
from strategies import make_parents, make_tokens

THREADS = 8
ROUNDS = 12


def work(
    tree: fastdec.TokenTree, template: fastdec.TreeTemplate, fills: list[list[int]], argmax: list[int]
) -> dict[str, object]:
    """Everything a decoding step does with shared objects; returns comparable results."""
    out: dict[str, object] = {}
    for k, tokens in enumerate(fills):
        filled = template.fill(tokens)
        out[f"fill{k}.tokens"] = filled.tokens.copy()
        out[f"fill{k}.parents"] = filled.parents.copy()
        out[f"fill{k}.leaf_paths"] = filled.leaf_paths().copy()
        out[f"fill{k}.verify"] = filled.verify_greedy((filled.tokens + 1) % 6)
        # small trees copy a mask block cached in the (template-shared) shape
        out[f"fill{k}.mask_f16"] = filled.additive_mask(3, "float16")
        out[f"fill{k}.mask_f32"] = filled.additive_mask(2)
        out[f"fill{k}.ancestor_bits"] = filled.ancestor_bits()
    out["ancestor_bits"] = tree.ancestor_bits()
    out["ancestor_mask"] = tree.ancestor_mask()
    out["mask_bf16"] = tree.additive_mask(17, "bfloat16")
    out["mask_f32"] = tree.additive_mask(5)
    out["leaf_paths"] = tree.leaf_paths().copy()
    out["position_ids"] = tree.position_ids(9)
    out["padded"] = tree.padded(tree.num_nodes + 3)
    out["verify"] = tree.verify_greedy(argmax)
    out["verify_batch"] = fastdec.verify_greedy_batch([tree, tree], argmax + argmax)
    out["best_first_subtree"] = tree.best_first_subtree(50).tokens.copy()
    return out


def same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.timeout(120)
def test_shared_tree_and_template_across_threads() -> None:
    rng = np.random.default_rng(1234)
    n = 700
    parents = make_parents(rng, n, "random")
    tokens = make_tokens(rng, parents, 8, extremes=False)
    kids = ref.children(parents)
    argmax = [tokens[c[0]] if c else 3 for c in kids]  # follows the first child everywhere
    fills = [rng.integers(0, 6, 81).tolist() for _ in range(4)]  # small vocab: merges happen
    fills.append(list(range(81)))  # no merge: the filled tree shares the template's shape
    template_paths = fastdec.TreeTemplate.token_recycling().paths()

    # single-threaded expectations from fresh objects, checked against the reference
    expected = work(fastdec.TokenTree(tokens, parents), fastdec.TreeTemplate.token_recycling(), fills, argmax)
    ref_nodes, ref_num, ref_bonus = ref.verify_greedy(tokens, parents, argmax)
    assert same(expected["verify"], (np.array(ref_nodes, dtype=np.int32), ref_num, ref_bonus))
    assert not kids[ref_nodes[-1]]
    assert ref_num == ref.depth(parents)[ref_nodes[-1]]
    assert np.array_equal(expected["ancestor_bits"], ref.ancestor_bits(parents))
    assert np.array_equal(expected["mask_bf16"], ref.additive_mask(parents, 17, "bfloat16"))
    for k, fill in enumerate(fills):
        fill_parents = ref.trie_merge(fill, ref.template(template_paths).parents)[1]
        assert np.array_equal(expected[f"fill{k}.mask_f16"], ref.additive_mask(fill_parents, 3, "float16"))

    for _ in range(ROUNDS):
        # fresh shared objects every round, so their lazy buffers are built under contention
        tree = fastdec.TokenTree(tokens, parents)
        template = fastdec.TreeTemplate.token_recycling()
        barrier = threading.Barrier(THREADS)

        def run(
            _: int,
            tree: fastdec.TokenTree = tree,
            template: fastdec.TreeTemplate = template,
            barrier: threading.Barrier = barrier,
        ) -> list[object]:
            barrier.wait(timeout=30)
            return work(tree, template, fills, argmax)

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(run, range(THREADS)))
        for r in results:
            assert same(r, expected)
