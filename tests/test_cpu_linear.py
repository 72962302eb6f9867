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

PATHS = [cl.LINEAR, cl.GEMM, cl.PAIRED] + ([cl.PACKED] if cl.packed_available(torch.float32) else [])


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


@pytest.mark.parametrize("value", ["linear", "gemm", "packed", "auto"])
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
