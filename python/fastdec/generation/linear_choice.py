"""Choosing each CPU linear's path by measurement, on the machine at hand (see :mod:`.cpu_linear`
for the paths and why no fixed choice is right on every CPU).

The first time a decoding step of ``rows`` rows runs on a model (per weight dtype and torch
thread count), :meth:`LinearRouter.use` times every path on the model's own weights, for each
weight shape the model has, at the row-count bucket ``rows`` falls in (the tree sizes
``budget="auto"`` tries: 1, 2, 3, 4, 6, 8, 12, ..., 64; a bucket is measured at its upper end).
To time what a real step sees, weights come from memory, not cache: every timed run reads
other modules of the shape (or other slices of at most 2 MiB of a large one, the LM head, say,
their time scaled to the whole matrix) in a few back-to-back calls, as a forward would;
candidates take turns in a rotating order, ``F.linear`` is timed as the module runs it and the
other paths with the reshaping a routed forward adds, and each gets ``samples`` runs after an
untimed warm-up (plus, before the first bucket, one untimed ``F.linear`` pass over every module:
the thread pool and the clock ramp up, and without it the first bucket read 1.4x slow on a
2-core Xeon). A shape's cost for a path is its median run scaled to its modules; the fastest path
wins per (shape, bucket), but ``F.linear`` (what transformers runs) keeps a shape unless another
path beats it by ``margin`` (10 %: a noisy one-row calibration that mixed in ``weight @ x.T`` at a
5 % margin made the plain loop 3 % slower than transformers'). A bucket that is not a power of
two (2, 3, 6, 12, 24, 48) may also pad its rows with zeros up to the next power of two (at least
4): where that bucket's best path beats its own by the margin (an AVX2 EPYC at 1 thread runs a
3-row GEMM a third slower than a 4-row one), its steps run padded. A bucket costs 2-3 candidates x
``samples`` runs per shape, 10-35 ms for a 135M model, once per process; ``generate`` leaves that
time out of the step times its tree-size controller reads.

Choices are kept per model (weak keys) and thread count, for the process. Tests inject the
timings (``timer``) to check the choice without a clock.
"""

from __future__ import annotations

import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from . import cpu_linear as cl

#: the row counts a choice is measured at; ``rows`` uses the smallest bucket >= rows
BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: a timed call reads at most this many bytes of weight (a row slice of a larger matrix)
SLICE_BYTES = 2 << 20
SAMPLES = 3
#: back-to-back calls per timing: enough to read RUN_BYTES of weights, at most RUN_CALLS (fewer
#: where the shape has fewer distinct weights to read)
RUN_CALLS = 4
RUN_BYTES = 4 << 20
#: after the first round, a path slower than DROP x the fastest is not timed again
DROP = 1.5
MARGIN = 0.10

Shape = tuple[int, int, torch.dtype, bool]  # out features, in features, dtype, has bias
#: an injected clock for tests: (path name, shape, rows) -> seconds of one call on a whole module
Timer = Callable[[str, Shape, int], float]


def bucket(rows: int) -> int | None:
    """The bucket ``rows`` falls in, None above :data:`cl.MAX_ROWS` (those keep ``F.linear``)."""
    if not 1 <= rows <= cl.MAX_ROWS:
        return None
    return next(b for b in BUCKETS if b >= rows)


@dataclass
class _Group:
    """The routable linears of one weight shape, in model order."""

    shape: Shape
    modules: list[torch.nn.Linear]

    def slices_per_module(self) -> int:
        out, in_f, dtype, _ = self.shape
        step = max(1, SLICE_BYTES // max(in_f * torch.empty((), dtype=dtype).element_size(), 1))
        return -(-out // step)

    def slices(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """Endless (weight rows, bias rows, whole / slice) samples, module after module."""
        out, _, _, _ = self.shape
        while True:
            for m in self.modules:
                w = m.weight.detach()
                step = max(1, SLICE_BYTES // max(w.shape[1] * w.element_size(), 1))
                for start in range(0, out, step):
                    stop = min(out, start + step)
                    b = m.bias.detach()[start:stop] if m.bias is not None else None
                    yield w[start:stop], b, out / (stop - start)


@dataclass
class Measured:
    """One bucket's measurement: per shape, each path's cost per forward (seconds, all that
    shape's modules) and the chosen path."""

    rows: int
    costs: dict[Shape, dict[str, float]] = field(default_factory=dict)
    chosen: dict[Shape, str] = field(default_factory=dict)
    #: shapes whose rows are padded to more (:func:`pad_target`), and to how many
    pad_to: dict[Shape, int] = field(default_factory=dict)
    #: the chosen cost of a padded shape (its path's cost at the padded row count)
    padded_cost: dict[Shape, float] = field(default_factory=dict)

    def total(self, path: str | None = None) -> float | None:
        """Seconds per forward of every routed linear on ``path`` (None: the chosen paths), or
        None where ``path`` was not measured for some shape."""
        total = 0.0
        for shape, costs in self.costs.items():
            if path is None and shape in self.pad_to:
                total += self.padded_cost[shape]
                continue
            name = self.chosen[shape] if path is None else path
            if name not in costs:
                return None
            total += costs[name]
        return total


def pad_target(b: int) -> int | None:
    """The row count bucket ``b``'s rows may be padded to: the next power of two, at least 4
    (None for 1, whose padding is the paired row, and for powers of two)."""
    if b == 1:
        return None
    target = max(4, 1 << (b - 1).bit_length())
    return target if target != b and target <= cl.MAX_ROWS else None


class LinearRouter:
    """The path of every routable linear of one model, per row-count bucket, measured at first
    use; :meth:`use` installs the choice of a step's row count."""

    def __init__(
        self,
        modules: list[torch.nn.Linear],
        *,
        threads: int,
        forced: str | None = None,
        packed: cl.PackedWeights | None = None,
        timer: Timer | None = None,
        samples: int = SAMPLES,
        margin: float = MARGIN,
    ) -> None:
        groups: dict[Shape, list[torch.nn.Linear]] = {}
        for m in modules:
            shape = (int(m.weight.shape[0]), int(m.weight.shape[1]), m.weight.dtype, m.bias is not None)
            groups.setdefault(shape, []).append(m)
        self.groups = [_Group(s, ms) for s, ms in groups.items()]
        self.threads = threads
        self.forced = forced
        self.packed = packed if packed is not None else cl.PackedWeights(0)
        self.timer = timer
        self.samples = samples
        self.margin = margin
        self.measured: dict[int, Measured] = {}
        self.used: set[int] = set()  # buckets installed since the last release
        self._installed: dict[Shape, tuple[str, int]] = {}  # shape -> (path, pad_to); absent: F.linear
        self._lock = threading.Lock()

    def candidates(self, group: _Group, rows: int) -> list[cl.LinearPath]:
        """The paths measured for ``group`` at ``rows``: ``F.linear`` first, then the GEMM path,
        fastdec's rows kernel (float32) and, for one row, the paired row. (oneDNN's packed path
        is never measured: a freshly reordered copy runs its first calls several times slower
        than the copies a decoding loop keeps, so a short calibration cannot judge it;
        ``FASTDEC_CPU_LINEAR=packed`` forces it.)"""
        if group.shape[2] != torch.float32:
            if rows == 1:
                # Below float32 a plain step keeps transformers' own kernel: its rounding is what
                # HF greedy's is (bfloat16 argmaxes tie often enough for another summation order
                # to change the text), and on the Xeon measured the alternatives did not beat it.
                return [cl.LINEAR]
            return [cl.LINEAR, cl.GEMM]
        return [p for p in (cl.LINEAR, cl.GEMM, cl.PAIRED, cl.ROWS) if p.serves(rows)]

    def packed_fits(self, group: _Group) -> bool:
        """Whether ``FASTDEC_CPU_LINEAR=packed`` can serve ``group``: oneDNN runs its dtype and
        its copies fit the memory cap."""
        return cl.packed_available(group.shape[2]) and self.packed.fits(group.modules)

    def use(self, rows: int) -> float:
        """Installs the paths chosen for ``rows`` rows (measuring its bucket the first time, and
        reordering weights for a packed path the first time it is chosen); returns the seconds
        those first-time costs took (0 once known). Switching paths between steps is a real
        cost of the step and is not counted."""
        with self._lock:
            t0 = time.perf_counter()
            b = bucket(rows)
            pad: dict[Shape, int] = {}
            if b is None:
                plan: dict[Shape, str] = {}
            elif self.forced is not None:
                plan = {g.shape: self._forced_path(g, b) for g in self.groups}
            else:
                measured = self._measured(b)
                plan, pad = dict(measured.chosen), dict(measured.pad_to)
            if b is not None:
                self.used.add(b)
            for g in self.groups:  # reorder weights now, outside the timed step
                if cl.PATHS[plan.get(g.shape, "linear")].pack is not None:
                    for m in g.modules:
                        self.packed.get(m)
            first_time = time.perf_counter() - t0
            self._install(plan, pad)
        return first_time

    def release(self) -> None:
        """Restores every module's own forward (packed copies are kept for the next call)."""
        with self._lock:
            self._install({}, {})
            self.used.clear()

    def _measured(self, b: int) -> Measured:
        """Bucket ``b``'s choice, measured the first time: its own paths, then padding to
        :func:`pad_target` where that bucket's chosen path beats them by the margin."""
        if b not in self.measured:
            m = self._measure(b)
            target = pad_target(b)
            if target is not None:
                up = self._measured(target)
                for shape, costs in m.costs.items():
                    own = costs[m.chosen[shape]]
                    there = up.costs[shape][up.chosen[shape]]
                    if there < (1 - self.margin) * own:
                        m.chosen[shape] = up.chosen[shape]
                        m.pad_to[shape] = target
                        m.padded_cost[shape] = there
            self.measured[b] = m
        return self.measured[b]

    def _forced_path(self, group: _Group, rows: int) -> str:
        if self.forced == "gemm":
            return "paired" if rows == 1 else "gemm"
        if self.forced == "packed" and not self.packed_fits(group):
            return "linear"  # unavailable in this build or dtype, or over the memory cap
        if self.forced == "rows" and group.shape[2] != torch.float32:
            return "linear"  # float32 only
        return self.forced or "linear"

    def _install(self, plan: dict[Shape, str], pad: dict[Shape, int]) -> None:
        for g in self.groups:
            want = (plan.get(g.shape, "linear"), pad.get(g.shape, 0))
            if self._installed.get(g.shape, ("linear", 0)) == want:
                continue
            path = cl.PATHS[want[0]]
            for m in g.modules:
                if want == ("linear", 0):
                    cl.uninstall(m)
                else:
                    cl.install(m, path, self.packed, pad_to=want[1])
            if want == ("linear", 0):
                self._installed.pop(g.shape, None)
            else:
                self._installed[g.shape] = want

    @torch.inference_mode()
    def _measure(self, rows: int) -> Measured:
        out = Measured(rows)
        gen = torch.Generator().manual_seed(rows)
        if not self.measured and self.timer is None:
            self._warm_up()
        for g in self.groups:
            cands = self.candidates(g, rows)
            times: dict[str, list[float]] = {p.name: [] for p in cands}
            if self.timer is not None:
                for p in cands:
                    times[p.name] = [self.timer(p.name, g.shape, rows) for _ in range(self.samples)]
            else:
                self._time_group(g, cands, rows, times, gen)
            n = len(g.modules)
            costs = {name: statistics.median(ts) * n for name, ts in times.items()}
            best = min(costs, key=costs.__getitem__)
            if best != "linear" and costs[best] > (1 - self.margin) * costs["linear"]:
                best = "linear"
            out.costs[g.shape] = costs
            out.chosen[g.shape] = best
        return out

    def _warm_up(self) -> None:
        """One untimed pass of ``F.linear`` over every routed module before the first
        measurement (as a forward would run them): the thread pool wakes and the clock ramps up.
        Without it the first bucket measured read about 1.4x slow on a 2-core Xeon VM."""
        for g in self.groups:
            x = torch.zeros(1, g.shape[1], dtype=g.shape[2])
            for m in g.modules:
                torch.nn.functional.linear(x, m.weight, m.bias)

    def _time_group(
        self,
        g: _Group,
        cands: list[cl.LinearPath],
        rows: int,
        times: dict[str, list[float]],
        gen: torch.Generator,
    ) -> None:
        """``samples`` timings per candidate, each a run of back-to-back calls on distinct
        weights (as in a forward: a lone call between Python work also times thread wake-ups)."""
        _, in_f, dtype, _ = g.shape
        # the input as the model passes it ([batch, rows, in]): F.linear is timed as the module
        # runs it, the other paths with the reshaping a routed forward adds
        x = torch.randn(1, rows, in_f, generator=gen).to(dtype)
        linear = torch.nn.functional.linear
        routed = cl.routed

        def call(p: cl.LinearPath, operand: torch.Tensor, bias: torch.Tensor | None) -> None:
            if p is cl.LINEAR:
                linear(x, operand, bias)
            else:
                routed(lambda flat: p.compute(operand, bias, flat), x, rows, operand.shape[0])

        source = g.slices()
        w, b, _ = next(source)
        for p in cands:  # warm-up: MKL and oneDNN set up their kernels for this shape
            call(p, w, b)
        runs = len(cands) * self.samples
        per_run = -(-RUN_BYTES // max(w.numel() * w.element_size(), 1))
        per_run = max(1, min(per_run, RUN_CALLS, len(g.modules) * g.slices_per_module() // runs))
        clock = time.perf_counter
        for rep in range(self.samples):
            if rep == 1:  # a path far behind after one round is not timed again
                best = min(times[p.name][0] for p in cands)
                cands = [p for p in cands if p is cl.LINEAR or times[p.name][0] <= DROP * best]
            k = rep % len(cands)
            for p in cands[k:] + cands[:k]:
                batch = [next(source) for _ in range(per_run)]
                scale = sum(s for _, _, s in batch) / len(batch)
                t0 = clock()
                for w, b, _ in batch:
                    call(p, w, b)
                times[p.name].append((clock() - t0) / len(batch) * scale)

    def note(self, buckets: Iterable[int] | None = None) -> str:
        """What runs the CPU linears and why, for the ``buckets`` given (default: those used
        since the last release), e.g. ``CPU linears (2 threads, float32), per forward: 1 row
        F.linear 22.1 ms (weight @ x.T 22.6, paired row 56.0, oneDNN packed 28.9); 4 rows oneDNN
        packed 29.8 ms (F.linear 36.1, weight @ x.T 49.7)``."""
        if not self.groups:
            return ""
        dtypes = sorted({str(g.shape[2]).removeprefix("torch.") for g in self.groups})
        head = f"CPU linears ({self.threads} thread{'s' if self.threads != 1 else ''}, {'/'.join(dtypes)})"
        if self.forced is not None:
            return f"{head}: {cl.PATHS[self.forced].label} for every row count (FASTDEC_CPU_LINEAR)"
        parts = []
        for b in sorted(self.used if buckets is None else buckets):
            m = self.measured.get(b)
            if m is None:
                continue
            chosen = m.total()
            others = []
            for name, path in cl.PATHS.items():
                cost = m.total(name)
                if cost is not None and (m.pad_to or not all(c == name for c in m.chosen.values())):
                    others.append(f"{path.label} {cost * 1e3:.1f}")
            parts.append(
                f"{b} row{'s' if b != 1 else ''} {_label(m)} {(chosen or 0.0) * 1e3:.1f} ms"
                + (f" ({', '.join(others)})" if others else "")
            )
        return f"{head}, per forward: " + "; ".join(parts) if parts else f"{head}: nothing measured yet"


def _label(m: Measured) -> str:
    names = [
        cl.PATHS[n].label + (f" padded to {m.pad_to[s]} rows" if s in m.pad_to else "")
        for s, n in m.chosen.items()
    ]
    if len(set(names)) == 1:
        return names[0]
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    return "mixed (" + ", ".join(f"{n} for {c} shape(s)" for n, c in counts.items()) + ")"


_ROUTERS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], LinearRouter]] = weakref.WeakKeyDictionary()
_PACKED: weakref.WeakKeyDictionary[Any, cl.PackedWeights] = weakref.WeakKeyDictionary()


def router_for(model: Any, *, timer: Timer | None = None) -> LinearRouter:
    """The router of ``model`` at torch's current thread count and the model's current weights
    (kept for the process; measured choices carry over to the next call)."""
    modules = [m for m in model.modules() if cl.routable(m)]
    forced = cl.forced_path()
    key = (
        torch.get_num_threads(),
        forced,
        tuple((id(m), tuple(m.weight.shape), m.weight.dtype) for m in modules),
    )
    per_model = _ROUTERS.setdefault(model, {})
    router = per_model.get(key)
    if router is None or timer is not None:
        packed = _PACKED.get(model)
        if packed is None:
            packed = _PACKED[model] = cl.PackedWeights(cl.pack_cap())
        router = LinearRouter(modules, threads=key[0], forced=forced, packed=packed, timer=timer)
        if timer is None:
            per_model[key] = router
    return router


@contextmanager
def cpu_linears(model: Any) -> Iterator[LinearRouter]:
    """While active, ``model``'s CPU linears run the fastest path measured for each step's row
    count: call ``.use(rows)`` before each forward (it measures a row count the first time, and
    returns the seconds that took, to leave out of a step's timing), ``.note()`` says what was
    chosen and why. Every module's own forward is restored on exit."""
    router = router_for(model)
    try:
        yield router
    finally:
        router.release()
