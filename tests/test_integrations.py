"""Server adapters (``fastdec.integrations``) against recorded inputs of each server's layout.

Every expected draft is computed here independently: prompt lookup transcribed in plain Python
with vLLM's and transformers' rules, and SGLang's index buffers with a port of its
``reconstructIndicesFromTreeMask`` kernel applied to the mask the adapter produced.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import fastdec
import fastdec.integrations as integrations
import numpy as np
import numpy.typing as npt
import pytest
from fastdec.integrations import sglang as fd_sglang
from fastdec.integrations import transformers as fd_hf
from fastdec.integrations import vllm as fd_vllm

HEAVY = ("torch", "transformers", "vllm", "sglang", "sgl_kernel")


# --------------------------------------------------------------------------------------------
# references


def earliest_lookup(ids: Sequence[int], min_n: int, max_n: int, k: int) -> list[int]:
    """Longest n in [min_n, max_n] whose suffix n-gram occurs earlier (earliest occurrence wins),
    then up to k tokens after it: vLLM ``NgramProposer`` / PLD semantics."""
    ids = list(ids)
    length = len(ids)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        gram = ids[-n:]
        for idx in range(length - n):
            if ids[idx : idx + n] == gram:
                return ids[idx + n : idx + n + k]
    return []


def hf_prompt_lookup(
    ids: list[int], max_ngram: int, num_output: int, max_length: int, eos: Sequence[int]
) -> list[int]:
    """``PromptLookupCandidateGenerator.get_candidates`` transcribed (first valid match, cut at the
    first EOS), plus fastdec's clip to ``max_length - L - 1`` tokens."""
    length = len(ids)
    for n in range(min(max_ngram, length - 1), 0, -1):
        gram = ids[-n:]
        for idx in range(length - n + 1):
            start = idx + n
            end = min(start + num_output, length)
            if ids[idx:start] == gram and start < end:
                chosen = ids[start:end]
                for j, token in enumerate(chosen):
                    if token in eos:
                        chosen = chosen[:j]
                        break
                return chosen[: max(0, max_length - length - 1)]
    return []


def reconstruct_reference(
    tree_mask: npt.NDArray[np.bool_], seq_lens: Sequence[int], bs: int, n: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """SGLang's ``reconstructIndicesFromTreeMask``: positions, retrive_index, next_token and
    next_sibling derived from the flat [bs * n * n] mask alone."""
    mask = tree_mask.reshape(bs, n, n)
    positions, index, next_token, next_sibling = [], [], [], []
    for b in range(bs):
        for t in range(n):
            depth, parent = 0, -1
            for i in range(t - 1, -1, -1):
                if mask[b, t, i]:
                    depth += 1
                    if parent == -1:
                        parent = i
            positions.append(seq_lens[b] + depth)
            index.append(b * n + t)
            next_token.append(next((i for i in range(t + 1, n) if mask[b, i, t]), -1))
            sibling = -1
            if parent != -1:
                for i in range(t + 1, n):
                    if mask[b, i, parent] and not mask[b, i, parent + 1 : i].any():
                        sibling = i
                        break
            next_sibling.append(sibling)
    return positions, index, next_token, next_sibling


# --------------------------------------------------------------------------------------------
# package


def test_import_pulls_in_no_server_or_torch() -> None:
    code = (
        "import json, sys\n"
        "import fastdec.integrations as fi\n"
        "before = sorted(m for m in sys.modules if m.startswith('fastdec.integrations.'))\n"
        "import fastdec.integrations.vllm, fastdec.integrations.sglang, fastdec.integrations.sglang_plugin\n"
        "import fastdec.integrations.transformers\n"
        "for name in fi.__all__:\n"
        "    if name != 'FastdecLlama': getattr(fi, name)  # needs llama-cpp-python\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps([before, heavy]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, heavy = json.loads(done.stdout)
    assert before == []  # submodules load on first use
    assert heavy == []


def test_lazy_names() -> None:
    assert sorted(integrations.__all__) == sorted(set(integrations.__all__))
    needs_llama = {"FastdecLlama"}  # its module subclasses llama_cpp.Llama
    for name in integrations.__all__:
        spec = importlib.util.find_spec("llama_cpp")  # (benches/llama_cpp.py is not the package)
        if name in needs_llama and (spec is None or spec.submodule_search_locations is None):
            with pytest.raises(ImportError, match=r"fastdec\[llama\]"):
                getattr(integrations, name)
            continue
        assert getattr(integrations, name) is not None
        assert name in dir(integrations)
    assert integrations.FastdecProposer is fd_vllm.FastdecProposer
    assert integrations.build_sglang_drafts is fd_sglang.build_sglang_drafts
    assert integrations.draft_candidates is fd_hf.draft_candidates
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = integrations.no_such_name


@pytest.mark.parametrize(
    "module",
    ["_common", "vllm", "sglang", "transformers", "llama_cpp"],
    ids=lambda name: name,
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"fastdec.integrations.{module}"))
    assert result.failed == 0
    assert result.attempted > 0


# --------------------------------------------------------------------------------------------
# SGLang


def check_sglang_layout(drafts: fd_sglang.SGLangDrafts, bs: int, n: int, seq_lens: Sequence[int]) -> None:
    """Shapes, dtypes, padding and agreement with SGLang's index-reconstruction kernel."""
    assert drafts.batch_size == bs
    assert drafts.draft_token_num == n
    for name, shape in [
        ("draft_tokens", (bs * n,)),
        ("tree_mask", (bs * n * n,)),
        ("positions", (bs * n,)),
        ("retrive_index", (bs, n)),
        ("retrive_next_token", (bs, n)),
        ("retrive_next_sibling", (bs, n)),
        ("num_nodes", (bs,)),
    ]:
        array = getattr(drafts, name)
        assert array.shape == shape, name
        assert array.dtype == (np.bool_ if name == "tree_mask" else np.int32), name
    mask = drafts.tree_mask_3d()
    assert mask.shape == (bs, n, n)
    assert np.shares_memory(mask, drafts.tree_mask)
    for b in range(bs):
        m = int(drafts.num_nodes[b])
        assert mask[b].diagonal().all()
        assert not mask[b][np.triu_indices(n, 1)].any()  # parents first
        assert mask[b, :m, 0].all()
        assert not mask[b, m:, :m].any()
        assert not mask[b, :m, m:].any()
        assert (mask[b, m:, m:] == np.eye(n - m, dtype=bool)).all()  # padding sees only itself
    positions, index, next_token, next_sibling = reconstruct_reference(drafts.tree_mask, seq_lens, bs, n)
    assert drafts.positions.tolist() == positions
    assert drafts.retrive_index.reshape(-1).tolist() == index
    assert drafts.retrive_next_token.reshape(-1).tolist() == next_token
    assert drafts.retrive_next_sibling.reshape(-1).tolist() == next_sibling


def test_sglang_exact_layout() -> None:
    trees = [
        fastdec.TokenTree([9, 4, 5, 6], [-1, 0, 0, 1]),
        fastdec.TokenTree([7], [-1]),
        fastdec.TokenTree([3, 2, 1, 8, 5], [-1, 0, 1, 1, 0]),
    ]
    drafts = fd_sglang.build_sglang_drafts(trees, 5, np.array([10, 20, 0]), pad_id=0)
    t, f = True, False
    assert drafts.draft_tokens.tolist() == [9, 4, 5, 6, 0, 7, 0, 0, 0, 0, 3, 2, 1, 8, 5]
    assert drafts.tree_mask_3d().tolist() == [
        [[t, f, f, f, f], [t, t, f, f, f], [t, f, t, f, f], [t, t, f, t, f], [f, f, f, f, t]],
        np.eye(5, dtype=bool).tolist(),
        [[t, f, f, f, f], [t, t, f, f, f], [t, t, t, f, f], [t, t, f, t, f], [t, f, f, f, t]],
    ]
    assert drafts.positions.tolist() == [10, 11, 11, 12, 10, 20, 20, 20, 20, 20, 0, 1, 2, 2, 1]
    assert drafts.retrive_index.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert drafts.retrive_next_token.tolist() == [[1, 3, -1, -1, -1], [-1] * 5, [1, 2, -1, -1, -1]]
    assert drafts.retrive_next_sibling.tolist() == [[-1, 2, -1, -1, -1], [-1] * 5, [-1, 4, 3, -1, -1]]
    assert drafts.num_nodes.tolist() == [4, 1, 5]
    check_sglang_layout(drafts, 3, 5, [10, 20, 0])
    padded = fd_sglang.build_sglang_drafts(trees[1:2], 3, [4], pad_id=2)
    assert padded.draft_tokens.tolist() == [7, 2, 2]


def test_sglang_rejects_bad_input() -> None:
    tree = fastdec.TokenTree([9, 4, 5, 6], [-1, 0, 0, 1])
    with pytest.raises(ValueError, match="size"):
        fd_sglang.build_sglang_drafts([tree], 3, [0])
    with pytest.raises(ValueError, match="seq_lens"):
        fd_sglang.build_sglang_drafts([tree, tree], 4, [0])
    with pytest.raises(ValueError, match="pad_id"):
        fd_sglang.build_sglang_drafts([tree], 4, [0], pad_id=-1)
    empty = fd_sglang.build_sglang_drafts([], 4, [])
    assert empty.batch_size == 0
    assert empty.draft_tokens.shape == (0,)
    assert empty.tree_mask_3d().shape == (0, 4, 4)
    assert empty.retrive_next_token.shape == (0, 4)
    with pytest.raises(ValueError, match="draft_token_num"):
        fd_sglang.FastdecNgramCorpus(draft_token_num=0)


def sglang_contexts() -> list[list[int]]:
    return [
        [5, 6, 7, 8, 5, 6, 7, 9, 5, 6],  # two continuations of [5, 6]
        [1, 2, 3, 4],  # no repeat
        [3, 3, 3, 3, 3, 3, 3],
        [2],
    ]


def sglang_step(corpus: fd_sglang.FastdecNgramCorpus, contexts: list[list[int]]) -> fd_sglang.SGLangDrafts:
    """One ``batch_get`` as SGLang's NGRAM worker calls it (ids, tails, lengths)."""
    rids = [f"req-{b}" for b in range(len(contexts))]
    tokens, mask = corpus.batch_get(rids, contexts, [len(c) for c in contexts])
    drafts = corpus.last_drafts
    assert drafts is not None
    assert np.array_equal(tokens, drafts.draft_tokens)
    assert np.array_equal(mask, drafts.tree_mask)
    return drafts


def test_sglang_corpus_pld_chains() -> None:
    n = 6
    corpus = fd_sglang.FastdecNgramCorpus(draft_token_num=n, settings={"drafter": "pld"})
    contexts = sglang_contexts()
    drafts = sglang_step(corpus, contexts)
    check_sglang_layout(drafts, len(contexts), n, [len(c) - 1 for c in contexts])
    for b, context in enumerate(contexts):
        chain = [context[-1], *earliest_lookup(context, 1, 3, n - 1)]
        expected = chain + [0] * (n - len(chain))
        assert drafts.draft_tokens[b * n : (b + 1) * n].tolist() == expected
        assert drafts.num_nodes[b] == len(chain)
    assert drafts.draft_tokens[:n].tolist() == [6, 7, 8, 5, 6, 7]


def test_sglang_corpus_trees() -> None:
    n = 8
    drafter = fastdec.NgramDrafter("tree", num_pred=4)
    corpus = fd_sglang.FastdecNgramCorpus(draft_token_num=n, drafter=fastdec.NgramDrafter("tree", num_pred=4))
    contexts = sglang_contexts()
    drafts = sglang_step(corpus, contexts)
    check_sglang_layout(drafts, len(contexts), n, [len(c) - 1 for c in contexts])
    mask = drafts.tree_mask_3d()
    for b, context in enumerate(contexts):
        tree = drafter.propose_for(context, n)
        m = tree.num_nodes
        assert drafts.num_nodes[b] == m
        assert drafts.draft_tokens[b * n : b * n + m].tolist() == tree.tokens.tolist()
        assert np.array_equal(mask[b, :m, :m], tree.ancestor_mask())
    assert drafts.num_nodes[0] > drafts.retrive_next_token[0].max() > 0  # a real branch
    assert (drafts.retrive_next_sibling[0] >= 0).any()


# --------------------------------------------------------------------------------------------
# transformers


def hf_cases() -> list[tuple[list[int], int, int, int, list[int]]]:
    """(input ids, max_matching_ngram_size, num_output_tokens, max_length, eos ids)."""
    text = [4, 5, 6, 2, 7, 8, 4, 5, 6, 9, 4, 5]
    return [
        (text, 2, 10, 100, []),
        (text, 2, 3, 100, []),
        (text, 2, 10, 100, [9]),  # cut before the EOS
        (text, 2, 10, 100, [6]),  # EOS first: no draft
        (text, 2, 10, len(text) + 3, []),  # room for 2 drafts + the bonus
        (text, 2, 10, len(text) + 1, []),  # no room
        ([1, 2, 3, 4, 5], 2, 10, 100, []),  # no match
        ([7], 2, 10, 100, []),
        ([3, 1, 3, 1, 3, 1, 3], 3, 4, 100, []),
    ]


@pytest.mark.parametrize(("ids", "max_ngram", "num_output", "max_length", "eos"), hf_cases())
def test_hf_candidates_match_prompt_lookup(
    ids: list[int], max_ngram: int, num_output: int, max_length: int, eos: list[int]
) -> None:
    drafter = fastdec.NgramDrafter("pld", min_n=1, max_n=max_ngram, num_pred=num_output)
    input_ids = np.array([ids], dtype=np.int64)
    candidates = fd_hf.candidate_input_ids(
        drafter, input_ids, num_output_tokens=num_output, max_length=max_length, eos_token_id=eos or None
    )
    expected = hf_prompt_lookup(ids, max_ngram, num_output, max_length, eos)
    assert candidates.dtype == np.int64
    assert candidates.shape == (1, len(ids) + len(expected))
    assert candidates[0, : len(ids)].tolist() == ids
    assert candidates[0, len(ids) :].tolist() == expected


def test_hf_exact_drafts() -> None:
    drafter = fastdec.NgramDrafter("pld", min_n=1, max_n=2, num_pred=10)
    text = [4, 5, 6, 2, 7, 8, 4, 5, 6, 9, 4, 5]
    assert fd_hf.draft_candidates(drafter, text, num_output_tokens=10).tolist() == [
        6,
        2,
        7,
        8,
        4,
        5,
        6,
        9,
        4,
        5,
    ]
    assert fd_hf.draft_candidates(drafter, text, num_output_tokens=10, eos_token_id=[8, 9]).tolist() == [
        6,
        2,
        7,
    ]
    assert fd_hf.draft_candidates(drafter, text, num_output_tokens=10, max_length=15).tolist() == [6, 2]
    assert fd_hf.draft_candidates(drafter, [], num_output_tokens=4).tolist() == []


def test_hf_rejects_batches() -> None:
    with pytest.raises(ValueError, match=r"\[1, L\]"):
        fd_hf.candidate_input_ids(
            fastdec.NgramDrafter(), np.zeros((2, 4), dtype=np.int64), num_output_tokens=3
        )


def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def assert_needs_torch() -> None:
    """Without torch/transformers, building a generator or patching a model names the extra."""
    with pytest.raises(ImportError, match=r'pip install "fastdec\[torch\]"'):
        fd_hf.make_candidate_generator(num_output_tokens=3)
    model = SimpleNamespace()
    with (
        pytest.raises(ImportError, match=r'pip install "fastdec\[torch\]"'),
        fd_hf.assisted_by(model),
    ):
        pass  # pragma: no cover
    assert vars(model) == {}  # nothing was patched


def test_hf_generator() -> None:
    """The torch wrapper: a real ``CandidateGenerator`` giving transformers' own prompt-lookup
    candidates where torch and transformers are installed, else the ImportError that names the
    extra (not a skip)."""
    if not torch_available():
        assert_needs_torch()
        return
    torch = importlib.import_module("torch")
    hf = importlib.import_module("transformers.generation.candidate_generator")
    text = [4, 5, 6, 2, 7, 8, 4, 5, 6, 9, 4, 5]
    generator = fd_hf.make_candidate_generator(
        num_output_tokens=10, max_length=100, eos_token_id=torch.tensor([9])
    )
    assert isinstance(generator, hf.CandidateGenerator)
    # transformers >= 5.25 reads it in assisted generation (sizes the cache's rollback record)
    assert generator.num_drafting_tokens == 10
    candidates, logits = generator.get_candidates(torch.tensor([text]))
    assert logits is None
    assert candidates.dtype == torch.long
    assert candidates[0].tolist() == text + hf_prompt_lookup(text, 2, 10, 100, [9])
    unchanged, _ = generator.get_candidates(torch.tensor([[1, 2, 3]]))
    assert unchanged.tolist() == [[1, 2, 3]]
    assert generator.update_candidate_strategy(candidates, torch.zeros(1, 4, 10), 2) is None
    # transformers' own PromptLookupCandidateGenerator as the reference
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids = torch.from_numpy(rng.integers(0, 5, size=(1, int(rng.integers(1, 40)))))
        ngram, num = int(rng.integers(1, 4)), int(rng.integers(1, 8))
        ours = fd_hf.make_candidate_generator(
            num_output_tokens=num,
            max_matching_ngram_size=ngram,
            max_length=1000,
            eos_token_id=torch.tensor([4]),
        )
        theirs = hf.PromptLookupCandidateGenerator(
            eos_token_id=torch.tensor([4]),
            num_output_tokens=num,
            max_matching_ngram_size=ngram,
            max_length=1000,
        )
        assert torch.equal(ours.get_candidates(ids)[0], theirs.get_candidates(ids)[0]), ids
    model = SimpleNamespace()
    with fd_hf.assisted_by(model, num_output_tokens=4) as factory:
        assert model._get_candidate_generator is factory
        config = SimpleNamespace(max_length=50, _eos_token_tensor=None, eos_token_id=None)
        assert isinstance(factory(generation_config=config), hf.CandidateGenerator)
    assert vars(model) == {}


class CountingDrafter:
    """Counts the drafts a wrapped drafter makes."""

    def __init__(self, inner: fastdec.NgramDrafter) -> None:
        self.inner, self.calls, self.drafted = inner, 0, 0

    def propose_for(self, context_ids: npt.ArrayLike, budget: int) -> fastdec.TokenTree:
        tree = self.inner.propose_for(context_ids, budget)
        self.calls += 1
        self.drafted += tree.num_nodes - 1
        return tree


def test_hf_generate_is_lossless() -> None:
    """``model.generate`` inside ``assisted_by`` drafts with fastdec and emits exactly the greedy
    tokens (a tiny random Llama); without torch, the ImportError that names the extra."""
    if not torch_available():
        assert_needs_torch()
        return
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    prompt = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])
    settings: dict[str, Any] = {"max_new_tokens": 40, "do_sample": False, "eos_token_id": None}
    plain = model.generate(prompt, **settings)
    drafter = CountingDrafter(fastdec.NgramDrafter("pld", max_n=2, num_pred=5))
    with fd_hf.assisted_by(model, drafter, num_output_tokens=5):
        fast = model.generate(prompt, prompt_lookup_num_tokens=5, **settings)
    assert torch.equal(plain, fast)
    assert 0 < drafter.calls < 40
    assert drafter.drafted > 0
    assert "_get_candidate_generator" not in vars(model)
