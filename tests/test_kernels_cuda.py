"""On a GPU: each CUDA kernel equals its torch reference at odd sizes, and fastdec.generate on
CUDA gives the CPU path's output. Skipped (with the reason) where CuPy sees no GPU; the CPU
emulation in test_kernels_emulated.py covers the same kernels everywhere."""

from __future__ import annotations

import fastdec
import numpy as np
import pytest
import torch
from fastdec import sampling
from fastdec.generation import tree_ops
from fastdec.kernels import launch

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda")
BATCHES = [1, 7, 33]
NODES = [1, 26, 81, 257]
PREFIXES = [0, 1, 1000]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def random_trees(rows: int, n: int, seed: int, vocab: int = 50000) -> list[fastdec.TokenTree]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        size = int(rng.integers(1, n + 1)) if rows > 1 else n  # ragged rows pad to n
        parents = [-1] + [int(rng.integers(max(0, i - 8), i)) for i in range(1, size)]
        tokens = rng.choice(vocab, size=size, replace=False)  # distinct, so siblings are too
        out.append(fastdec.TokenTree(tokens.tolist(), parents))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("past", PREFIXES)
@pytest.mark.parametrize("n", NODES)
@pytest.mark.parametrize("rows", BATCHES)
def test_tree_mask(rows: int, n: int, past: int, dtype: torch.dtype) -> None:
    batch = tree_ops.pad_trees(random_trees(rows, n, rows * n + past), GPU)
    rng = np.random.default_rng(past)
    valid = torch.from_numpy(rng.integers(0, past + 1, size=rows)).to(GPU)
    for kv_len in (None, past + batch.tokens.shape[1] + 13):
        want = tree_ops.tree_mask(batch, valid, past, dtype, kv_len)
        got = launch.tree_mask(batch, valid, past, dtype, kv_len)
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1], want[1])
    packed = launch.packed_tree_mask(batch).cpu().numpy().view(np.uint32)
    bits = np.unpackbits(packed.view(np.uint8), axis=-1, bitorder="little")[..., : batch.tokens.shape[1]]
    assert np.array_equal(bits.astype(bool), batch.ancestors().cpu().numpy())


@pytest.mark.parametrize("n", NODES)
@pytest.mark.parametrize("rows", BATCHES)
def test_verify_greedy(rows: int, n: int) -> None:
    ts = random_trees(rows, n, rows + n)
    batch = tree_ops.pad_trees(ts, GPU)
    rng = np.random.default_rng(n)
    argmax = rng.integers(0, 50000, size=batch.tokens.shape)
    for b, t in enumerate(ts):
        for i in range(1, t.num_nodes):
            if rng.random() < 0.7:
                argmax[b, t.parents[i]] = t.tokens[i]
    target = torch.from_numpy(argmax).to(GPU)
    assert launch.verify_greedy(batch, target) == tree_ops.verify_greedy(batch, target)


@pytest.mark.parametrize("vocab", [1000, 49152])
@pytest.mark.parametrize("n", NODES)
@pytest.mark.parametrize("rows", BATCHES)
def test_verify_stochastic(rows: int, n: int, vocab: int) -> None:
    ts = random_trees(rows, n, rows * n, vocab)
    batch = tree_ops.pad_trees(ts, GPU)
    gen = torch.Generator().manual_seed(rows + n)
    logits = torch.randn((rows, batch.tokens.shape[1], vocab), generator=gen) * 4
    for b, t in enumerate(ts):  # give the drafted children real mass, so paths get long
        for i in range(1, t.num_nodes):
            logits[b, t.parents[i], t.tokens[i]] += 9.0
    probs = sampling.warp_probs(logits.to(GPU), 1.0)
    coins = sampling.draw_coins(gen, (rows, batch.tokens.shape[1], 2))
    want = fastdec._core.verify_stochastic_batch(ts, probs.cpu().numpy(), coins.numpy())  # the Rust reference
    assert sampling.verify_stochastic_batch([(t.tokens, t.parents) for t in ts], probs, coins) == want
    paths, bonus = launch.verify_stochastic(batch, probs, coins)
    assert list(zip(paths, bonus, strict=True)) == want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("past", PREFIXES)
@pytest.mark.parametrize("n", NODES)
@pytest.mark.parametrize("rows", BATCHES)
def test_kv_compaction(rows: int, n: int, past: int, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(rows * n + past)
    valid = rng.integers(0, past + 1, size=rows).tolist()
    paths = []
    for _ in range(rows):
        size = int(rng.integers(0, min(n - 1, 8) + 1))
        paths.append([0, *sorted(rng.choice(np.arange(1, n), size=size, replace=False).tolist())])
    shape = (rows, 3, past + n, 64)
    layers = [
        (torch.randn(shape, device=GPU).to(dtype), torch.randn(shape, device=GPU).to(dtype)) for _ in range(4)
    ]
    want, want_len = tree_ops.compact_kv([(k.clone(), v.clone()) for k, v in layers], past, valid, paths)
    got, new_len = launch.compact_kv(layers, past, valid, paths)
    assert new_len == want_len
    for (gk, gv), (wk, wv) in zip(got, want, strict=True):
        for b in range(rows):
            keep = valid[b] + len(paths[b])
            assert torch.equal(gk[b, :, :keep], wk[b, :, :keep])
            assert torch.equal(gv[b, :, :keep], wv[b, :, :keep])


def test_generate_on_cuda_equals_cpu(
    stories_model: tuple[object, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    model_cpu, _ = stories_model
    model_gpu = copy.deepcopy(model_cpu).to(GPU)
    prompts = [[1, 403, 407], [1, 13, 260, 300, 14], [1]]
    for drafter in ("trie", "recycling", "pld"):
        want = fastdec.generate(model_cpu, prompts, drafter=drafter, max_new_tokens=48, budget=16)
        got = fastdec.generate(model_gpu, prompts, drafter=drafter, max_new_tokens=48, budget=16)
        assert got.sequences == want.sequences, drafter
    # sampling on the GPU: the kernels take the torch reference's decisions from the same coins
    kwargs = {"max_new_tokens": 48, "budget": 16, "temperature": 0.8, "seed": 3}
    monkeypatch.setenv("FASTDEC_KERNELS", "torch")
    ref = fastdec.generate(model_gpu, prompts, drafter=fastdec.TrieDrafter(), **kwargs)  # type: ignore[arg-type]
    monkeypatch.setenv("FASTDEC_KERNELS", "cuda")
    got = fastdec.generate(model_gpu, prompts, drafter=fastdec.TrieDrafter(), **kwargs)  # type: ignore[arg-type]
    assert got.sequences == ref.sequences
