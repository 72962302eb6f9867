"""CPU linear paths chosen by measurement (fastdec.generation.cpu_linear, linear_choice): every
path equals F.linear up to rounding, the choice follows the timings (injected here: the trick
wins, F.linear wins everywhere, mixed by row count), overrides and restoration, and generate's
output with every path."""

from __future__ import annotations

from typing import Any

import fastdec
import pytest
import torch
from fastdec.generation import cpu_linear as cl
from fastdec.generation import linear_choice as lc
from fastdec.generation.registry import DrafterRegistry

PATHS = [cl.LINEAR, cl.GEMM, cl.PAIRED, cl.ROWS] + ([cl.PACKED] if cl.packed_available(torch.float32) else [])


def model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(24, 40),
        torch.nn.Linear(40, 40),
        torch.nn.Linear(40, 40),
        torch.nn.Linear(40, 8, bias=False),
    )
    return m.to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_path_equals_f_linear(dtype: torch.dtype, path: cl.LinearPath) -> None:
    if path is cl.PACKED and not cl.packed_available(dtype):
        pytest.skip(f"this torch build has no oneDNN packed linear in {dtype}")
    m = model(dtype)
    store = cl.PackedWeights(1 << 30)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for rows in (1, 2, 3, 5, 64, 65):  # 65: past MAX_ROWS, F.linear itself
        for shape in ((1, rows, 24), (rows, 24)):
            x = torch.randn(*shape).to(dtype)
            want = m(x)
            for layer in m:
                cl.install(layer, path, store)
            got = m(x)
            for layer in m:
                cl.uninstall(layer)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, **tol)
    # a strided input (attention's output after its head transpose) is made contiguous first
    x = torch.randn(3, 24).to(dtype).t().contiguous().t()
    cl.install(m[0], path, store)
    torch.testing.assert_close(m[0](x), torch.nn.functional.linear(x, m[0].weight, m[0].bias), **tol)


@pytest.mark.parametrize("path", [cl.LINEAR, cl.GEMM, cl.ROWS], ids=lambda p: p.name)
def test_padded_rows_equal_f_linear_and_outputs_are_row_major(path: cl.LinearPath) -> None:
    """Rows padded with zeros up to ``pad_to`` give F.linear's rows; the output is row-major, as
    F.linear's (a transposed view would reach the next linear as a slow strided operand)."""
    m = model()
    store = cl.PackedWeights(0)
    for rows in (1, 2, 3, 4, 5):
        x = torch.randn(1, rows, 24)
        want = m(x)
        for layer in m:
            cl.install(layer, path, store, pad_to=4)
        got = m(x)
        y = m[0](x)
        for layer in m:
            cl.uninstall(layer)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert y.is_contiguous()


def test_packed_copies_follow_the_weight_and_the_cap() -> None:
    if not cl.packed_available(torch.float32):
        pytest.skip("this torch build has no oneDNN packed linear")
    m = model()
    first = m[1]
    nbytes = first.weight.numel() * 4
    store = cl.PackedWeights(nbytes)  # room for one 40 x 40 copy only
    assert store.get(first) is not None
    assert store.bytes == nbytes
    assert not store.fits([m[2]])
    assert store.get(m[2]) is None
    cl.install(m[2], cl.PACKED, store)
    x = torch.randn(2, 40)
    torch.testing.assert_close(m[2](x), torch.nn.functional.linear(x, m[2].weight, m[2].bias))
    cl.install(first, cl.PACKED, store)
    with torch.no_grad():
        first.weight.mul_(2)  # written in place: the stale copy must not be used
    torch.testing.assert_close(
        first(x), torch.nn.functional.linear(x, first.weight, first.bias), atol=1e-5, rtol=1e-5
    )


def table_timer(table: dict[str, dict[int, float]]) -> lc.Timer:
    """Seconds per call from ``table[path][bucket]`` (missing: far slower than anything)."""
    return lambda name, shape, rows: table.get(name, {}).get(rows, 1.0)


def routed(m: torch.nn.Module) -> dict[int, str | None]:
    return {i: (("forward" in layer.__dict__) and "patched") or None for i, layer in enumerate(m)}


def choices(router: lc.LinearRouter, rows: int) -> set[str]:
    router.use(rows)
    return set(router.measured[lc.bucket(rows) or 0].chosen.values())


def test_the_trick_wins() -> None:
    m = model()
    fast = {b: 1e-3 for b in lc.BUCKETS}
    router = lc.router_for(
        m, timer=table_timer({"linear": {b: 2e-3 for b in lc.BUCKETS}, "paired": fast, "gemm": fast})
    )
    assert choices(router, 1) == {"gemm"} or choices(router, 1) == {"paired"}
    assert choices(router, 4) == {"gemm"}
    assert all("forward" in layer.__dict__ for layer in m)
    router.release()
    assert not any("forward" in layer.__dict__ for layer in m)


def test_f_linear_wins_everywhere_and_nothing_is_patched() -> None:
    m = model()
    router = lc.router_for(m, timer=table_timer({"linear": {b: 1e-3 for b in lc.BUCKETS}}))
    for rows in (1, 2, 3, 5, 64):
        assert choices(router, rows) == {"linear"}
        assert not any("forward" in layer.__dict__ for layer in m)  # no per-call overhead at all
    assert router.use(65) >= 0
    assert not any("forward" in layer.__dict__ for layer in m)


def test_mixed_by_row_count() -> None:
    """F.linear wins at 1..3 rows, the GEMM path from 4 rows on (what an Intel Xeon measured)."""
    m = model()
    linear = {b: (1e-3 if b <= 3 else 3e-3) for b in lc.BUCKETS}
    gemm = {b: 2e-3 for b in lc.BUCKETS}
    router = lc.router_for(m, timer=table_timer({"linear": linear, "gemm": gemm, "paired": {1: 5e-3}}))
    assert choices(router, 1) == {"linear"}
    assert not any("forward" in layer.__dict__ for layer in m)
    assert choices(router, 3) == {"linear"}
    assert choices(router, 4) == {"gemm"}
    assert all("forward" in layer.__dict__ for layer in m)
    assert choices(router, 2) == {"linear"}
    assert not any("forward" in layer.__dict__ for layer in m)
    assert choices(router, 7) == {"gemm"}  # bucket 8
    note = router.note()
    assert "1 row F.linear" in note
    assert "4 rows weight @ x.T" in note
    assert "8 rows" in note
    router.release()


def test_a_path_must_beat_f_linear_by_the_margin() -> None:
    m = model()
    almost = {b: 0.98e-3 for b in lc.BUCKETS}
    router = lc.router_for(m, timer=table_timer({"linear": {b: 1e-3 for b in lc.BUCKETS}, "gemm": almost}))
    assert choices(router, 4) == {"linear"}


def test_a_slow_row_count_is_padded_to_a_faster_one() -> None:
    """3 rows slower than 4 (an AVX2 EPYC at 1 thread): bucket 3 runs padded to 4 rows with 4's
    path; 2 rows, as fast as 4, stay unpadded; 6 pads to 8 only when 8 beats it by the margin."""
    m = model()
    linear = {1: 1e-3, 2: 1.2e-3, 3: 3e-3, 4: 2.5e-3, 6: 3e-3, 8: 2.9e-3}
    gemm = {1: 2e-3, 2: 1.3e-3, 3: 2.8e-3, 4: 1.4e-3, 6: 3.5e-3, 8: 3.4e-3}
    router = lc.router_for(m, timer=table_timer({"linear": linear, "gemm": gemm}))
    assert choices(router, 3) == {"gemm"}
    assert router.measured[3].pad_to
    assert set(router.measured[3].pad_to.values()) == {4}
    assert all("forward" in layer.__dict__ for layer in m)
    x = torch.randn(1, 3, 24)
    router.release()
    want = m(x)
    router.use(3)
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)
    assert "3 rows weight @ x.T padded to 4 rows" in router.note()
    assert choices(router, 2) == {"linear"}
    assert not router.measured[2].pad_to
    assert choices(router, 5) == {"linear"}  # bucket 6: 8 rows (2.9) does not beat 6 (3.0) by 10 %
    assert not router.measured[6].pad_to
    assert lc.pad_target(1) is None
    assert lc.pad_target(4) is None
    assert lc.pad_target(64) is None
    assert [lc.pad_target(b) for b in (2, 3, 6, 12, 24, 48)] == [4, 4, 8, 16, 32, 64]
    router.release()


def test_buckets() -> None:
    assert [lc.bucket(r) for r in (1, 2, 3, 4, 5, 7, 9, 64)] == [1, 2, 3, 4, 6, 8, 12, 64]
    assert lc.bucket(0) is None
    assert lc.bucket(65) is None


def test_real_measurement_chooses_among_the_candidates() -> None:
    """The clock, not injected: every choice is a measured candidate and the note names the
    costs; the choices are kept for the process (a second router_for is the same router)."""
    m = model()
    router = lc.router_for(m)
    assert router.use(1) >= 0
    assert router.use(4) >= 0
    assert lc.router_for(m) is router
    for b in (1, 4):
        measured = router.measured[b]
        for shape, name in measured.chosen.items():
            assert name in measured.costs[shape]
            assert measured.costs[shape][name] > 0
    assert router.note().startswith("CPU linears (1 thread, float32), per forward: 1 row ")
    router.release()
    x = torch.randn(4, 24)
    torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize(
    ("value", "forced"),
    [("0", "linear"), ("linear", "linear"), ("1", "gemm"), ("gemm", "gemm"), ("auto", None)],
)
def test_override(monkeypatch: pytest.MonkeyPatch, value: str, forced: str | None) -> None:
    monkeypatch.setenv("FASTDEC_CPU_LINEAR", value)
    assert cl.forced_path() == forced
    m = model()
    router = lc.router_for(m)
    if forced == "gemm":
        router.use(1)
        assert all("forward" in layer.__dict__ for layer in m)
        assert "FASTDEC_CPU_LINEAR" in router.note()
    elif forced == "linear":
        router.use(4)
        assert not router.measured
        assert not any("forward" in layer.__dict__ for layer in m)
    router.release()


def test_bad_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTDEC_CPU_LINEAR", "fast")
    with pytest.raises(ValueError, match="FASTDEC_CPU_LINEAR='fast'"):
        cl.forced_path()
    monkeypatch.setenv(cl.PACK_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="FASTDEC_CPU_PACK_BYTES='lots'"):
        cl.pack_cap()


@pytest.mark.parametrize("value", ["linear", "gemm", "packed", "rows", "auto"])
def test_generate_equals_hf_with_every_path(
    stories_model: Any, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from test_generate import hf_greedy, stories_prompts

    monkeypatch.setenv("FASTDEC_CPU_LINEAR", value)
    stories = stories_model[0]
    stories.generation_config.eos_token_id = None
    prompts = stories_prompts()
    refs = [hf_greedy(stories, p, 40, None) for p in prompts]
    out = fastdec.generate(stories, prompts, drafter="trie", max_new_tokens=40, registry=DrafterRegistry())
    assert out.sequences == refs
    assert "CPU linears" in out.linear_note
    assert out.linear_note in out.budget_note
    assert not any("forward" in m.__dict__ for m in stories.modules())  # restored


def test_one_row_below_float32_keeps_f_linear() -> None:
    """A bfloat16 plain step runs transformers' own kernel, whatever the timings say; more rows
    are measured as in float32."""
    m = model(torch.bfloat16)
    fast = {b: 1e-4 for b in lc.BUCKETS}
    router = lc.router_for(
        m, timer=table_timer({"linear": {b: 1e-3 for b in lc.BUCKETS}, "gemm": fast, "paired": fast})
    )
    assert choices(router, 1) == {"linear"}
    assert not any("forward" in layer.__dict__ for layer in m)
    assert choices(router, 2) == {"gemm"}
    router.release()


def test_rows_kernel_against_f_linear_and_its_errors() -> None:
    """fastdec's rows kernel on random shapes (odd sizes: lane tails, row counts past one pass of
    8), one thread and several, with and without bias; bad inputs are named."""
    import numpy as np
    from fastdec._core import _linear_rows

    gen = torch.Generator().manual_seed(3)
    for rows, k, n in ((1, 1, 1), (3, 7, 5), (4, 576, 192), (9, 33, 130), (20, 64, 8)):
        x = torch.randn(rows, k, generator=gen)
        w = torch.randn(n, k, generator=gen)
        b = torch.randn(n, generator=gen)
        for bias in (None, b):
            want = torch.nn.functional.linear(x.double(), w.double(), None if bias is None else bias.double())
            for threads in (1, 2):
                out = np.empty((rows, n), dtype=np.float32)
                _linear_rows(x.numpy(), w.numpy(), None if bias is None else bias.numpy(), out, threads)
                torch.testing.assert_close(torch.from_numpy(out).double(), want, atol=1e-4, rtol=1e-4)
    x, w, out = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        _linear_rows(x, np.zeros((4, 5), np.float32), None, out)
    with pytest.raises(ValueError, match="bias has length 3, expected 4"):
        _linear_rows(x, w, np.zeros(3, np.float32), out)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        _linear_rows(x, w, None, out, 0)
    with pytest.raises(ValueError, match="weight must be C-contiguous"):
        _linear_rows(x, np.zeros((3, 4), np.float32).T, None, out)
    with pytest.raises(TypeError):
        _linear_rows(x.astype(np.float64), w, None, out)
