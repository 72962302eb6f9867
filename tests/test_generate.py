"""fastdec.generate on real models: greedy output identical to model.generate, KV compaction
exact, sampling lossless (chi-square against the model's exact law)."""

from __future__ import annotations

from typing import Any

import fastdec
import numpy as np
import pytest
import torch
from fastdec.generation import cache as kv
from fastdec.generation.tree_ops import compact_kv, pad_trees, tree_mask, verify_greedy

DRAFTERS = ["recycling", "trie", "ngram", "pld", "hybrid", None]


def hf_greedy(model: Any, prompt: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=0,
    )
    return [int(t) for t in out[0, len(prompt) :]]


def stories_prompts() -> list[list[int]]:
    # BOS, then token ids of short story openings (llama2.c tok512 ids), and a repetitive one
    rng = np.random.default_rng(0)
    return [
        [1],
        [1, *rng.integers(3, 512, 6).tolist()],
        [1, *([300, 301, 302, 303] * 4)],
    ]


@pytest.fixture(scope="module")
def stories(stories_model: Any) -> Any:
    model = stories_model[0] if isinstance(stories_model, tuple) else stories_model
    model.generation_config.eos_token_id = None
    return model


@pytest.mark.parametrize("drafter", DRAFTERS)
def test_stories_greedy_identical(stories: Any, drafter: str | None) -> None:
    prompts = stories_prompts()
    refs = [hf_greedy(stories, p, 60, None) for p in prompts]
    for p, want in zip(prompts, refs, strict=True):
        out = fastdec.generate(stories, [p], drafter=drafter, max_new_tokens=60, budget=16)
        assert out.sequences[0] == want
    # batch > 1: ragged prompts in one call, with the automatic budget
    out = fastdec.generate(stories, prompts, drafter=drafter, max_new_tokens=60, budget="auto")
    assert out.sequences == refs
    if drafter is not None:
        assert out.mean_accepted > 1.0


@pytest.mark.parametrize("drafter", ["trie", "recycling", None])
def test_static_cache_greedy_identical(stories: Any, drafter: str | None) -> None:
    story = hf_greedy(stories, [1], 60, None)
    prompts = [*stories_prompts(), [1, *story, 1]]
    refs = [hf_greedy(stories, p, 50, None) for p in prompts]
    for budget in (8, "auto"):
        out = fastdec.generate(
            stories, prompts, drafter=drafter, max_new_tokens=50, budget=budget, cache="static"
        )
        assert out.sequences == refs
    out = fastdec.generate(
        stories, prompts[-1:], drafter=drafter, max_new_tokens=50, budget=16, cache="static"
    )
    assert out.sequences == refs[-1:]


@pytest.mark.parametrize("drafter", ["trie", "pld", "recycling"])
def test_eos_and_max_new_tokens_cut_a_path(stories: Any, drafter: str) -> None:
    from fastdec.generation.registry import make_drafter

    # a prompt holding a story the model wrote: drafters can copy from it, so the first
    # occurrence of a token in the output can sit inside an accepted drafted path
    story = hf_greedy(stories, [1], 60, None)
    prompt = [1, *story, 1]
    vocab = stories.config.vocab_size
    free_out = fastdec.generate(
        stories, [prompt], drafter=make_drafter(drafter, vocab), max_new_tokens=80, budget=32
    )
    free = free_out.sequences[0]
    assert free == hf_greedy(stories, prompt, 80, None)
    ends = np.cumsum(free_out.accepted_lengths[0]) - 1  # index of each step's last token
    # each distinct token of the free run, used as EOS, must stop both at its first occurrence;
    # a fresh drafter makes the same steps, so we know when EOS sat inside an accepted path
    inside = 0
    for eos in sorted(set(free[5:60])):
        want = hf_greedy(stories, prompt, 80, eos)
        out = fastdec.generate(
            stories,
            [prompt],
            drafter=make_drafter(drafter, vocab),
            max_new_tokens=80,
            eos_token_id=eos,
            budget=32,
        )
        assert out.sequences[0] == want
        assert want[-1] == eos
        inside += free.index(eos) not in ends
    if drafter != "recycling":  # the cold recycling table rarely gets long paths accepted
        assert inside > 0
    for n in (1, 2, 7, 13):
        out = fastdec.generate(
            stories, [prompt], drafter=make_drafter(drafter, vocab), max_new_tokens=n, budget=32
        )
        assert out.sequences[0] == free[:n]


def test_top_k_reaches_a_recycle_part_of_a_hybrid(stories: Any) -> None:
    """generate asks the drafter (wants_topk), not its class, whether to pass top-k: a Token
    Recycling part inside a hybrid learns ranks above 0, which emitted bigrams alone never fill."""
    prompt = stories_prompts()[1]
    recycle = fastdec.RecycleDrafter(stories.config.vocab_size)
    hybrid = fastdec.HybridDrafter([recycle, fastdec.TrieDrafter()])
    out = fastdec.generate(stories, [prompt], drafter=hybrid, max_new_tokens=30, budget=16)
    assert out.sequences[0] == hf_greedy(stories, prompt, 30, None)
    assert any(recycle.row(t)[1] >= 0 for t in out.sequences[0])


def test_kv_compaction_matches_a_fresh_forward(stories: Any) -> None:
    """After every step, the next-token logits from the compacted cache equal those of a fresh
    forward over the whole accepted sequence (fp32, atol 1e-4), for ragged rows."""
    model = stories
    drafter = fastdec.TrieDrafter()
    story = hf_greedy(model, [1], 60, None)
    prompts = [*stories_prompts()[:2], [1, *story, 1]]  # the last one lets drafts be copied
    seqs = [list(p) for p in prompts]
    for b, p in enumerate(prompts):
        drafter.start(b, p)
    cache = kv.new_cache(model)
    valid = [len(p) - 1 for p in prompts]
    past = max(valid)
    pre = torch.zeros((len(prompts), past), dtype=torch.long)
    for b, p in enumerate(prompts):
        pre[b, : len(p) - 1] = torch.tensor(p[:-1])

    def tree_forward(trees: list[fastdec.TokenTree]) -> tuple[Any, torch.Tensor]:
        batch = pad_trees(trees, torch.device("cpu"))
        mask, pos = tree_mask(batch, torch.tensor(valid), past, torch.float32)
        out = kv.run(
            model, cache, input_ids=batch.tokens, attention_mask=mask, position_ids=pos, use_cache=True
        )
        return batch, out.logits

    with torch.inference_mode():
        kv.run(model, cache, input_ids=pre, use_cache=True)
        for _ in range(12):
            trees = [drafter.propose(b, 24) for b in range(len(prompts))]
            batch, logits = tree_forward(trees)
            paths, bonus = verify_greedy(batch, logits.argmax(-1))
            new_kv, past = compact_kv(kv.kv_tensors(cache), past, valid, paths)
            kv.set_kv_tensors(cache, new_kv)
            for b, t in enumerate(trees):
                valid[b] += len(paths[b])
                emitted = [int(t.tokens[i]) for i in paths[b][1:]] + [bonus[b]]
                seqs[b].extend(emitted)
                drafter.accept(b, emitted)
            # probe: the new roots through the compacted cache vs fresh forwards
            snapshot = [(k.clone(), v.clone()) for k, v in kv.kv_tensors(cache)]
            got = tree_forward([fastdec.TokenTree.chain([s[-1]]) for s in seqs])[1][:, 0]
            kv.set_kv_tensors(cache, snapshot)  # undo the probe's append
            for b, s in enumerate(seqs):
                fresh = model(input_ids=torch.tensor([s])).logits[0, -1]
                torch.testing.assert_close(got[b], fresh, atol=1e-4, rtol=0)
    assert max(len(s) - len(p) for s, p in zip(seqs, prompts, strict=True)) > 12 + 6  # drafts were accepted


SMOLLM_PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "List the days of the week, then list them again in reverse order.",
]


@pytest.mark.parametrize("drafter", DRAFTERS)
def test_smollm_greedy_identical(smollm_model: Any, drafter: str | None) -> None:
    model, tok = smollm_model
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in SMOLLM_PROMPTS
    ]
    prompts = [list(p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p) for p in prompts]
    eos = tok.eos_token_id
    refs = [hf_greedy(model, p, 40, eos) for p in prompts]
    out = fastdec.generate(
        model, prompts[:1], drafter=drafter, max_new_tokens=40, eos_token_id=eos, budget=16
    )
    assert out.sequences[0] == refs[0]
    out = fastdec.generate(model, prompts, drafter=drafter, max_new_tokens=40, eos_token_id=eos)
    assert out.sequences == refs


def exact_two_token_law(
    model: Any, prompt: list[int], temperature: float, top_k: int | None, top_p: float | None
) -> dict[tuple[int, int], float]:
    """The exact law of the first two sampled tokens: p(x1) p(x2 | x1) under the warped model."""
    from fastdec.sampling import warp_probs

    with torch.inference_mode():
        p1 = warp_probs(model(torch.tensor([prompt])).logits[0, -1:].float(), temperature, top_k, top_p)[
            0
        ].double()
        support = torch.nonzero(p1 > 0).flatten()
        rows = torch.tensor([[*prompt, int(x)] for x in support])
        p2 = warp_probs(model(rows).logits[:, -1].float(), temperature, top_k, top_p).double()
    law = {}
    for i, x1 in enumerate(support.tolist()):
        for x2 in torch.nonzero(p2[i] > 0).flatten().tolist():
            law[(x1, x2)] = float(p1[x1] * p2[i, x2])
    return law


def chi_square_pvalue(counts: dict[tuple[int, int], int], law: dict[tuple[int, int], float], n: int) -> float:
    """Pearson chi-square of observed pairs against the law; cells expecting < 5 are pooled."""
    from scipy.stats import chi2

    big = [c for c, p in law.items() if p * n >= 5]
    obs = [counts.get(c, 0) for c in big]
    exp = [law[c] * n for c in big]
    rest_obs, rest_exp = n - sum(obs), n - sum(exp)
    if rest_exp >= 5:
        obs.append(rest_obs)
        exp.append(rest_exp)
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
    return float(chi2.sf(stat, len(obs) - 1))


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, None, None), (0.7, 40, None), (0.9, None, 0.8)]
)
def test_sampling_is_lossless(
    stories: Any, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """First-two-token frequencies of speculative sampling (a warm Token Recycling drafter, whose
    drafts are the model's own likely tokens, so acceptance is exercised) against the model's exact
    law, chi-square at fixed seeds. The same counts against a slightly different law must fail,
    showing the test has power."""
    prompt = stories_prompts()[1]
    drafter = fastdec.RecycleDrafter(stories.config.vocab_size)
    for p in stories_prompts():  # warm the table with the model's own top-k
        fastdec.generate(stories, [p], drafter=drafter, max_new_tokens=40, budget=32)
    law = exact_two_token_law(stories, prompt, temperature, top_k, top_p)
    counts: dict[tuple[int, int], int] = {}
    n, multi = 0, 0
    for seed in range(6):
        out = fastdec.generate(
            stories,
            [prompt] * 500,
            drafter=drafter,
            max_new_tokens=3,  # the prefill gives the first; a tree step the second and third
            budget=32,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        for seq, acc in zip(out.sequences, out.accepted_lengths, strict=True):
            counts[(seq[0], seq[1])] = counts.get((seq[0], seq[1]), 0) + 1
            multi += acc[1] > 1  # the second token was an accepted draft
            n += 1
    assert multi > n // 4  # drafts were accepted often
    assert chi_square_pvalue(counts, law, n) > 1e-4
    wrong = exact_two_token_law(stories, prompt, temperature * 1.25, top_k, top_p)
    assert chi_square_pvalue(counts, wrong, n) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": 0}, ValueError, "budget"),
        ({"budget": "big"}, ValueError, "budget"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"drafter": "nope"}, ValueError, "drafter"),
        ({"cache": "paged"}, ValueError, "cache"),
        ({"input_ids": [[1, 5000]]}, ValueError, "5000"),
        ({"input_ids": [[]]}, ValueError, "prompt"),
        ({"input_ids": [[1], [1, 2]], "streamer": object()}, ValueError, "streamer"),
        ({"constraint": object()}, ValueError, "constraint"),
        ({"temperature": 1.0, "top_p": 1.5}, ValueError, "top_p"),
    ],
)
def test_bad_arguments(stories: Any, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"input_ids": [[1, 2, 3]], "max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=match):
        fastdec.generate(stories, args.pop("input_ids"), **args)


def test_registry_keeps_drafters_and_budgets_per_model(stories: Any) -> None:
    from fastdec.generation.registry import DrafterRegistry

    reg = DrafterRegistry()
    prompt = [1, *([300, 301, 302, 303] * 4)]
    first = fastdec.generate(stories, [prompt], drafter="trie", max_new_tokens=12, registry=reg)
    trie = reg.drafter(stories, "trie", stories.config.vocab_size)
    assert isinstance(trie, fastdec.TrieDrafter)
    assert trie.global_nodes > 0  # the finished request's output went into the shared trie
    auto = reg.auto_budget(stories, trie)
    assert sum(auto.runs.values()) == first.steps  # the call's steps were recorded there
    # the next call drafts with the same objects (a hot start) ...
    fastdec.generate(stories, [prompt], drafter="trie", max_new_tokens=12, registry=reg)
    assert reg.drafter(stories, "trie", stories.config.vocab_size) is trie
    assert reg.auto_budget(stories, trie) is auto
    assert sum(auto.runs.values()) > first.steps
    # ... and another registry, or a cleared one, starts cold
    assert DrafterRegistry().drafter(stories, "trie", stories.config.vocab_size) is not trie
    reg.clear()
    assert reg.drafter(stories, "trie", stories.config.vocab_size) is not trie
