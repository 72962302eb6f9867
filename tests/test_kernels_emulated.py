"""The CUDA kernels (``cuda/*.cu``), executed on the CPU by ``cuda_emu``, through the very
launchers ``fastdec.generate`` uses on a GPU, equal the torch references on random trees, paths
and caches. The emulator also checks every launch's argument types against the kernel's C
signature. (On a GPU, ``test_kernels_cuda.py`` runs the same comparisons on the device.)"""

from __future__ import annotations

from pathlib import Path

import fastdec
import numpy as np
import pytest
import torch
from cuda_emu import Emulator
from fastdec.generation import tree_ops
from fastdec.kernels import launch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import trees
from test_sampling import cases as sampling_cases

CPU = torch.device("cpu")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    return Emulator(Path(tmp_path_factory.mktemp("cuda_emu")))


def build(cases: list) -> list[fastdec.TokenTree]:  # type: ignore[type-arg]
    return [fastdec.TokenTree(c.tokens, c.parents) for c in cases]


@settings(max_examples=40, deadline=None)
@given(
    cases=st.lists(trees(max_nodes=70, large=70, vocab="small"), min_size=1, max_size=4),
    past=st.integers(0, 40),
    extra=st.sampled_from([None, 0, 7, 100]),
    dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
def test_tree_mask(
    emu: Emulator, cases: list, past: int, extra: int | None, dtype: torch.dtype, data: st.DataObject
) -> None:  # type: ignore[type-arg]
    batch = tree_ops.pad_trees(build(cases), CPU)
    valid = torch.tensor([data.draw(st.integers(0, past)) for _ in cases])
    n = batch.tokens.shape[1]
    kv_len = None if extra is None else past + n + extra
    # a sliding-window layer's mask too: its window and the slots it has dropped
    window = data.draw(st.sampled_from([None, 1, 3, 16]))
    offset = 0 if window is None else data.draw(st.integers(0, int(valid.min())))
    windowed = {"window": window, "offset": offset}
    want_mask, want_pos = tree_ops.tree_mask(batch, valid, past, dtype, kv_len, **windowed)
    mask, pos = launch.tree_mask(batch, valid, past, dtype, kv_len, **windowed, execute=emu)
    assert mask.dtype == dtype
    assert mask.shape == want_mask.shape
    assert torch.equal(
        mask.view(torch.int16 if dtype != torch.float32 else torch.int32),
        want_mask.view(torch.int16 if dtype != torch.float32 else torch.int32),
    )
    assert torch.equal(pos, want_pos)


@settings(max_examples=30, deadline=None)
@given(cases=st.lists(trees(max_nodes=80, large=300, vocab="small"), min_size=1, max_size=3))
def test_packed_tree_mask(emu: Emulator, cases: list) -> None:  # type: ignore[type-arg]
    batch = tree_ops.pad_trees(build(cases), CPU)
    packed = launch.packed_tree_mask(batch, execute=emu).numpy().view(np.uint32)
    n = batch.tokens.shape[1]
    bits = np.unpackbits(packed.view(np.uint8), axis=-1, bitorder="little")[..., :n].astype(bool)
    assert np.array_equal(bits, batch.ancestors().numpy())


@settings(max_examples=60, deadline=None)
@given(
    cases=st.lists(trees(max_nodes=90, large=300, vocab="tiny"), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
)
def test_verify_greedy(emu: Emulator, cases: list, seed: int) -> None:  # type: ignore[type-arg]
    ts = build(cases)
    batch = tree_ops.pad_trees(ts, CPU)
    rng = np.random.default_rng(seed)
    argmax = rng.integers(0, 3, size=batch.tokens.shape)
    for b, t in enumerate(ts):  # long accepted paths are likely
        for i in range(1, t.num_nodes):
            if rng.random() < 0.6:
                argmax[b, t.parents[i]] = t.tokens[i]
    target = torch.from_numpy(argmax)
    got = launch.verify_greedy(batch, target, execute=emu)
    assert got == tree_ops.verify_greedy(batch, target)
    # ... and the Rust reference itself.
    flat = np.concatenate([argmax[b, : t.num_nodes] for b, t in enumerate(ts)]).astype(np.int32)
    nodes, num, bonus = fastdec.verify_greedy_batch(ts, flat)
    assert got == ([row[: k + 1].tolist() for row, k in zip(nodes, num, strict=True)], bonus.tolist())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(sampling_cases(max_nodes=10), min_size=1, max_size=4)
    | st.lists(sampling_cases(max_nodes=6, big_vocab=True), min_size=1, max_size=2),
    st.integers(0, 2),
)
def test_verify_stochastic(emu: Emulator, batch_cases: list, pad: int) -> None:  # type: ignore[type-arg]
    ts = [fastdec.TokenTree(c.tokens, c.parents) for c in batch_cases]
    vocab = max(c.probs.shape[1] for c in batch_cases)
    n = max(len(c.tokens) for c in batch_cases) + pad
    probs = torch.zeros((len(ts), n, vocab))
    coins = torch.full((len(ts), n, 2), 0.5, dtype=torch.float64)
    for b, c in enumerate(batch_cases):
        k, v = c.probs.shape
        probs[b, :k, :v] = torch.from_numpy(c.probs)
        coins[b, :k] = torch.from_numpy(c.coins)
    batch = tree_ops.pad_trees(ts, CPU)
    batch = tree_ops.TreeBatch(
        tokens=torch.nn.functional.pad(batch.tokens, (0, n - batch.tokens.shape[1])),
        parents=torch.nn.functional.pad(batch.parents, (0, n - batch.parents.shape[1]), value=-1),
        depth=torch.nn.functional.pad(batch.depth, (0, n - batch.depth.shape[1])),
        num_nodes=batch.num_nodes,
    )
    try:  # the Rust reference
        want = fastdec._core.verify_stochastic_batch(ts, probs.numpy(), coins.numpy())
    except ValueError:
        with pytest.raises(ValueError, match="no mass"):
            launch.verify_stochastic(batch, probs, coins, execute=emu)
        return
    paths, bonus = launch.verify_stochastic(batch, probs, coins, execute=emu)
    assert list(zip(paths, bonus, strict=True)) == want


def test_verify_stochastic_rejects_bad_probs(emu: Emulator) -> None:
    batch = tree_ops.pad_trees([fastdec.TokenTree([0, 1], [-1, 0])], CPU)
    probs = torch.tensor([[[0.5, 0.3, float("nan")], [0.2, 0.0, 0.8]]])  # the stop row (root) has a NaN
    coins = torch.tensor([[[0.9, 0.5], [0.5, 0.5]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="finite and non-negative"):
        launch.verify_stochastic(batch, probs, coins, execute=emu)
    with pytest.raises(ValueError, match="no mass"):
        launch.verify_stochastic(batch, torch.zeros((1, 2, 3)), coins, execute=emu)


@st.composite
def kv_steps(draw: st.DrawFn) -> tuple[int, list[int], list[list[int]], int]:
    """past, valid lengths and accepted paths (ascending node ids from 0) of one step."""
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    past = draw(st.integers(0, 20))
    valid = [draw(st.integers(0, past)) for _ in range(rows)]
    if draw(st.booleans()):
        valid[0] = past
    paths = []
    for _ in range(rows):
        nodes = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
        paths.append([0, *nodes])
    return past, valid, paths, n


@settings(max_examples=80, deadline=None)
@given(
    step=kv_steps(),
    layers=st.integers(1, 3),
    heads=st.integers(1, 3),
    dim=st.sampled_from([1, 3, 8, 64]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    static_extra=st.sampled_from([None, 5]),
)
def test_kv_compaction(
    emu: Emulator,
    step: tuple[int, list[int], list[list[int]], int],
    layers: int,
    heads: int,
    dim: int,
    dtype: torch.dtype,
    static_extra: int | None,
) -> None:
    past, valid, paths, n = step
    rows = len(valid)
    gen = torch.Generator().manual_seed(past * 7 + n)
    slots = past + n + (static_extra or 0)
    # Layers as a preallocated buffer's slices (strided, like a StaticCache view) or whole tensors.
    full = torch.randn((2 * layers, rows, heads, slots, dim), generator=gen).to(dtype)
    cache = [(full[2 * i], full[2 * i + 1]) for i in range(layers)]
    if static_extra is None:
        want, want_len = tree_ops.compact_kv([(k.clone(), v.clone()) for k, v in cache], past, valid, paths)
        got, new_len = launch.compact_kv(cache, past, valid, paths, execute=emu)
        assert new_len == want_len
        for (gk, gv), (wk, wv) in zip(got, want, strict=True):
            assert torch.equal(gk, wk)
            assert torch.equal(gv, wv)
    else:
        ref = full.clone()
        ref_cache = [(ref[2 * i], ref[2 * i + 1]) for i in range(layers)]
        want_len = tree_ops.compact_kv_in_place(ref_cache, past, valid, paths)
        assert launch.compact_kv_in_place(cache, past, valid, paths, execute=emu) == want_len
        for b in range(rows):  # the filled part of every row, and nothing of the other rows touched
            keep = valid[b] + len(paths[b])
            assert torch.equal(full[:, b, :, :keep], ref[:, b, :, :keep])


def test_kv_compaction_unit_follows_alignment(emu: Emulator) -> None:
    """A row of 64 fp16 values moves in 16-byte units; an odd head dim in 2-byte ones."""
    for dim, unit in [(64, "uint4"), (3, "unsigned short"), (4, "uint2")]:
        k = torch.randn((1, 1, 6, dim)).half()
        emu.launches.clear()
        launch.compact_kv_in_place([(k, k.clone())], 4, [4], [[0, 1]], execute=emu)
        assert not emu.launches  # already in place: no launch
        src = k.clone()
        launch.compact_kv_in_place([(k, k.clone())], 2, [2], [[0, 2]], execute=emu)
        assert emu.launches[-1].kernel == f"kv_compact<{unit}>"
        assert torch.equal(k[0, 0, 3], src[0, 0, 4])


def test_emulator_rejects_a_python_int_for_an_int_parameter(emu: Emulator) -> None:
    """The check has teeth: CuPy would pass a Python int as 8 bytes and shift the arguments."""
    batch = tree_ops.pad_trees([fastdec.TokenTree.chain([1, 2])], CPU)
    good: list[launch.Launch] = []
    launch.verify_greedy(batch, torch.zeros((1, 2), dtype=torch.int64), execute=lambda ln, d: good.append(ln))
    bad = launch.Launch(**{**good[0].__dict__, "args": (*good[0].args[:4], 2, *good[0].args[5:])})
    with pytest.raises(AssertionError, match="int32"):
        emu(bad, CPU)


# ------------------------------------------------------------------------------------------------
# backend choice, and a whole fastdec.generate run through the (emulated) kernels


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdec import kernels

    monkeypatch.delenv("FASTDEC_KERNELS", raising=False)
    assert kernels.backend("cpu") == "torch"
    monkeypatch.setenv("FASTDEC_KERNELS", "torch")
    assert kernels.backend("cuda") == "torch"
    monkeypatch.setenv("FASTDEC_KERNELS", "cuda")
    with pytest.raises(RuntimeError, match="not on a CUDA device"):
        kernels.backend("cpu")
    monkeypatch.setenv("FASTDEC_KERNELS", "gpu")
    with pytest.raises(ValueError, match="FASTDEC_KERNELS='gpu'"):
        kernels.backend("cpu")


def test_generate_rejects_forced_kernels_on_cpu(
    stories_model: tuple[torch.nn.Module, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTDEC_KERNELS", "cuda")
    with pytest.raises(RuntimeError, match="FASTDEC_KERNELS=cuda"):
        fastdec.generate(stories_model[0], [[1, 403]], max_new_tokens=4)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_generate_through_the_kernels(
    emu: Emulator,
    stories_model: tuple[torch.nn.Module, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    cache: str,
    temperature: float,
) -> None:
    """fastdec.generate with every tree operation done by the kernel sources (emulated on the
    CPU, through the launchers): the same tokens as the torch path."""
    from fastdec.generation import loop
    from fastdec.generation.step_ops import StepOps

    model = stories_model[0]
    prompts = [[1, 403, 407, 261], [1, 13, 260], [1, 300, 301, 302, 303, 304]]
    kwargs = {"max_new_tokens": 24, "budget": 12, "temperature": temperature, "seed": 5, "cache": cache}
    # fresh drafters: a shared one would draft differently the second time (it learned the first
    # run's text), and sampling decisions depend on the drafts
    want = fastdec.generate(model, prompts, drafter=fastdec.TrieDrafter(), **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(loop, "step_ops", lambda device: StepOps("cuda"))
    monkeypatch.setattr(launch, "run_cupy", emu)
    emu.launches.clear()
    got = fastdec.generate(model, prompts, drafter=fastdec.TrieDrafter(), **kwargs)  # type: ignore[arg-type]
    assert got.sequences == want.sequences
    kinds = {ln.kernel.split("<")[0] for ln in emu.launches}
    verify = "verify_greedy" if temperature == 0 else "verify_stochastic"
    assert kinds == {"tree_mask", verify, "kv_compact"}
