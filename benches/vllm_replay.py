"""Replay of the vLLM bench's recorded greedy outputs through vLLM's drafter call, on a step clock.

``benches/vllm.py`` measures each method in the real engine, one noisy run per cell. This replay
answers the question a single run cannot: how fast *could* each drafter be on this workload and
this machine, and how close do fastdec's proposers come? Greedy verification accepts a draft's
longest prefix that equals the model's own output, so the recorded outputs of a ``none`` run
(``benches/vllm_run.py`` writes prompts and outputs) decide every step without the model.

The engine is simulated as vLLM's scheduler runs it: ``--concurrency`` rows, requests admitted in
submission order as rows free (the two-turn workload's second turns only after every first turn,
as the bench submits them), a prefill samples the first token, each later step verifies the row's
last draft and emits the accepted tokens plus one. Drafters are called exactly as vLLM calls a
``custom_class`` proposer (fastdec's :class:`~fastdec.integrations.vllm.FastdecProposer`: the
token-row matrix, counts, sampled tokens) or as vLLM's ``suffix`` proposer calls Arctic
Inference's cache. Time is a step clock, the cost line fitted in the real engine (the draft-length
controller's own fit of step seconds on the step's shape, ``--cost``); fastdec's controller reads
that clock, so its cuts react to the same costs it would meet in the engine.

Policies per drafter: ``real`` (what the proposer drafts), ``oracle-cut`` (its full chain cut to
exactly the prefix that will be accepted: no controller can do better with that drafter),
``at suffix's lengths`` (its full chain cut to the length SuffixDecoding drafts at the same row
and step: the two differ only in their chains' tokens, so this row compares the drafters' chains
where SuffixDecoding is confident, apart from any draft-length controller), and ``best-oracle``
(per row and step the longest accepted prefix of every drafter in the run: the ceiling of any mix
of them). Writes ``benches/results/vllm_replay{tag}.{json,md,png}``.

    .venv-vllm/bin/python benches/vllm_replay.py --data benches/results/vllm_outputs.json \\
        --cost '{"const": 0.06, "per_token": 0.0055, "first": 0.001}' [--concurrency 1 4 16]

(``benches/vllm.py`` writes ``vllm_outputs.json``: its ``none`` run's prompts and outputs.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdec
import fastdec.integrations.vllm as fv
from fastdec.machine import machine_meta
from plotting import pyplot, save

ROOT = Path(__file__).resolve().parents[1]
# Step seconds = const + rows * per_row + any_draft * first + drafting_rows * per_drafting_row
#                + draft_tokens * per_token + prefill_tokens * per_prefill_token
COST_KEYS = ("const", "per_row", "first", "per_drafting_row", "per_token", "per_prefill_token")


class Clock:
    """The step clock fastdec's proposers read instead of ``time.perf_counter``."""

    def __init__(self) -> None:
        self.t = 0.0

    def perf_counter(self) -> float:
        return self.t


@dataclass
class Row:
    prompt: list[int]
    out: list[int]
    rid: str
    pos: int = 0  # output tokens emitted so far


class Suffix:
    """vLLM 0.32's ``suffix`` proposer logic over Arctic Inference's cache (its defaults)."""

    def __init__(self, k: int, max_len: int) -> None:
        from arctic_inference.suffix_decoding import SuffixDecodingCache

        self.k, self.max_len = k, max_len
        self.cache = SuffixDecodingCache(max_tree_depth=24, max_cached_requests=10000)

    def propose(
        self,
        sampled: Sequence[Sequence[int]],
        counts: np.ndarray,
        rows: np.ndarray,
        *,
        req_ids: list[str],
        prompts: list[int],
    ) -> list[list[int]]:
        drafts = []
        for i, got in enumerate(sampled):
            rid, n = req_ids[i], int(counts[i])
            if rid not in self.cache.active_requests:
                self.cache.start_request(rid, rows[i, : prompts[i]])
            self.cache.add_active_response(rid, list(got))
            pattern = rows[i, max(0, n - 24) : n]
            draft = self.cache.speculate(
                rid,
                pattern,
                max_spec_tokens=min(self.k, self.max_len - n - 1),
                max_spec_factor=1.0,
                min_token_prob=0.1,
            )
            drafts.append(list(draft.token_ids))
        for rid in self.cache.active_requests - set(req_ids):
            self.cache.stop_request(rid)
        return drafts


class Fastdec:
    """A fastdec ``custom_class`` proposer, called as vLLM calls it."""

    def __init__(self, cls: str, k: int, max_len: int, adaptive: bool | None, **settings: Any) -> None:
        extra: dict[str, Any] = (
            {"prompt_lookup_min": 2, "prompt_lookup_max": 4} if cls == "PldProposer" else {}
        )
        session = settings.pop("session", None)  # DraftSession keyword overrides
        extra |= settings
        if adaptive is not None:
            extra["adaptive"] = adaptive
        self.proposer = getattr(fv, cls)(num_speculative_tokens=k, max_model_len=max_len, **extra)
        if session:
            p = self.proposer
            opts = {"tree_budget": p.tree_budget, "max_gap": k + 9, "adaptive": p.session.adaptive} | session
            p.session = fastdec.DraftSession(p.drafter, k, **opts)

    def propose(
        self, sampled: Sequence[Sequence[int]], counts: np.ndarray, rows: np.ndarray, **_: Any
    ) -> list[list[int]]:
        return [list(map(int, d)) for d in self.proposer.propose(sampled, counts, rows)]


DRAFTERS: dict[str, Callable[[int, int, bool], Any]] = {
    "ngram": lambda k, n, full: Fastdec("PldProposer", k, n, False),  # equals vLLM's ngram (tested)
    "suffix": lambda k, n, full: Suffix(k, n),
    "fastdec-trie": lambda k, n, full: Fastdec("TrieProposer", k, n, False if full else None),
    "fastdec-hybrid": lambda k, n, full: Fastdec("HybridProposer", k, n, False if full else None),
}


@dataclass
class Tally:
    tokens: int = 0
    row_steps: int = 0
    drafted_rows: int = 0
    draft_tokens: int = 0
    accepted: int = 0
    seconds: float = 0.0
    wins: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "seconds": self.seconds,
            "tokens_per_s": self.tokens / self.seconds,
            "tokens_per_step": self.tokens / max(self.row_steps, 1),
            "acceptance": self.accepted / max(self.draft_tokens, 1),
            "draft_tokens": self.draft_tokens,
            "drafted_rows": self.drafted_rows,
            "wins": self.wins,
        }


def step_seconds(cost: dict[str, float], rows: int, drafting: int, tokens: int, prefill: int) -> float:
    return (
        cost["const"]
        + cost["per_row"] * rows
        + cost["first"] * (drafting > 0)
        + cost["per_drafting_row"] * drafting
        + cost["per_token"] * tokens
        + cost["per_prefill_token"] * prefill
    )


def accepted_prefix(draft: Sequence[int], future: Sequence[int]) -> int:
    n = 0
    for a, b in zip(draft, future, strict=False):
        if a != b:
            break
        n += 1
    return n


def simulate(
    phases: list[list[tuple[list[int], list[int]]]],
    names: list[str],
    policy: str,
    conc: int,
    k: int,
    cost: dict[str, float],
) -> Tally:
    """One engine run of every phase; ``names`` drafters all fed alike, ``policy`` decides which
    draft each row verifies and how much of it."""
    max_len = max(len(p) + len(o) for ph in phases for p, o in ph) + k + 2
    clock = Clock()
    fv.time = clock  # type: ignore[assignment]  # the proposers' step clock
    drafters = {n: DRAFTERS[n](k, max_len, policy != "real") for n in names}
    tally, counter = Tally(), 0
    for phase in phases:
        queue = deque(phase)
        slots: list[Row | None] = [None] * conc
        matrix = np.zeros((conc, max_len), dtype=np.int32)
        pending: dict[int, list[int]] = {}
        while queue or any(slots):
            emitted: dict[int, list[int]] = {}
            prefill = drafting = tokens = 0
            for s in range(conc):
                row = slots[s]
                if row is None and queue:
                    prompt, out = queue.popleft()
                    row = slots[s] = Row(prompt, out, f"r{counter}")
                    counter += 1
                    matrix[s, : len(prompt)] = prompt
                    prefill += len(prompt)
                    emitted[s] = out[:1]
                elif row is not None:
                    draft = pending.pop(s, [])
                    future = row.out[row.pos :]
                    a = min(accepted_prefix(draft, future), len(future) - 1)
                    emitted[s] = future[: a + 1]
                    drafting += bool(draft)
                    tokens += len(draft)
                    tally.accepted += a
                    tally.row_steps += 1
                else:
                    continue
                row = slots[s]
                assert row is not None
                n0 = len(row.prompt) + row.pos
                matrix[s, n0 : n0 + len(emitted[s])] = emitted[s]
                row.pos += len(emitted[s])
                tally.tokens += len(emitted[s])
            tally.drafted_rows += drafting
            tally.draft_tokens += tokens
            clock.t += step_seconds(cost, sum(r is not None for r in slots), drafting, tokens, prefill)
            for s, row in enumerate(slots):
                if row is not None and row.pos >= len(row.out):
                    slots[s] = None
            live = [s for s in range(conc) if slots[s] is not None]
            if not live:
                continue
            rows = [slots[s] for s in live]
            sampled = [emitted[s] for s in live]
            counts = np.array([len(r.prompt) + r.pos for r in rows])  # type: ignore[union-attr]
            view = matrix[live]
            ids = [r.rid for r in rows]  # type: ignore[union-attr]
            prompts = [len(r.prompt) for r in rows]  # type: ignore[union-attr]
            drafts = {
                n: d.propose(sampled, counts, view, req_ids=ids, prompts=prompts) for n, d in drafters.items()
            }
            for i, s in enumerate(live):
                row = slots[s]
                assert row is not None
                future = row.out[row.pos :]
                best, best_a = names[0], -1
                for n in names:
                    a = accepted_prefix(drafts[n][i], future)
                    if a > best_a:
                        best, best_a = n, a
                if policy == "real":
                    pending[s] = drafts[names[0]][i]
                    if len(names) > 1:  # a diagnosis against the same drafter's full chain
                        got = accepted_prefix(pending[s], future)
                        full = accepted_prefix(drafts[names[1]][i], future)
                        tally.wins["wasted"] = tally.wins.get("wasted", 0) + len(pending[s]) - got
                        tally.wins["missed"] = tally.wins.get("missed", 0) + max(0, full - got)
                        tally.wins["missed_no_draft"] = tally.wins.get("missed_no_draft", 0) + (
                            full if not pending[s] else 0
                        )
                elif policy == "suffix-length":
                    # the drafter's full chain cut to what SuffixDecoding drafts here (names[1]):
                    # the same lengths, so only the chains' tokens differ
                    pending[s] = drafts[names[0]][i][: len(drafts[names[1]][i])]
                    ahead = accepted_prefix(pending[s], future) - accepted_prefix(drafts[names[1]][i], future)
                    for key, n in (("tokens ahead of suffix", ahead), ("tokens behind suffix", -ahead)):
                        tally.wins[key] = tally.wins.get(key, 0) + max(0, n)
                else:
                    pending[s] = drafts[best][i][:best_a]
                    if best_a > 0:
                        tally.wins[best] = tally.wins.get(best, 0) + 1
    tally.seconds = clock.t
    return tally


def load(path: Path) -> dict[str, list[list[tuple[list[int], list[int]]]]]:
    raw = json.loads(path.read_text())
    out = {}
    for wl in ("two_turn", "code"):
        if wl not in raw:
            continue
        pairs = list(zip(raw[wl]["prompts"], raw[wl]["outputs"], strict=True))
        # the bench submits every first turn, then every second turn (which holds the first answer)
        out[wl] = [pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]] if wl == "two_turn" else [pairs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="vllm_outputs.json of benches/vllm.py")
    ap.add_argument("--render", type=Path, help="rewrite the table and plot from this JSON, run nothing")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cost", type=json.loads, default={}, help=f"JSON of {', '.join(COST_KEYS)} (seconds)")
    ap.add_argument(
        "--variant",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON"),
        help="one more fastdec proposer: FastdecProposer settings, e.g. "
        'fastdec-trie16 \'{"drafter": "trie", "drafter_options": {"max_match": 16}}\'',
    )
    ap.add_argument("--only", nargs="*", help="run only these methods (none, ngram, suffix are always run)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    args = ap.parse_args()
    if args.render:
        doc = json.loads(args.render.read_text())
        write(doc["results"], doc["meta"], args.out / args.render.stem)
        return
    if args.data is None or not args.cost:
        ap.error("--data and --cost are needed (or --render)")
    cost = {key: float(args.cost.get(key, 0.0)) for key in COST_KEYS}
    for name, settings in args.variant:
        opts = json.loads(settings)
        DRAFTERS[name] = lambda k, n, full, o=opts: Fastdec(
            "FastdecProposer", k, n, False if full else None, **json.loads(json.dumps(o))
        )
    if args.only is not None:
        for name in list(DRAFTERS):
            if name not in args.only and name not in ("ngram", "suffix"):
                del DRAFTERS[name]
    runs: list[tuple[str, str, list[str]]] = [("none", "real", [])]
    runs += [(n, "real", [n]) for n in DRAFTERS]
    runs += [(f"{n} oracle-cut", "oracle-cut", [n]) for n in DRAFTERS]
    runs += [(f"{n} at suffix's lengths", "suffix-length", [n, "suffix"]) for n in DRAFTERS if n != "suffix"]
    runs.append(("best-oracle", "best-oracle", list(DRAFTERS)))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for wl, phases in load(args.data).items():
        for conc in args.concurrency:
            cell = results.setdefault(wl, {}).setdefault(str(conc), {})
            for label, policy, names in runs:
                if not names:
                    cell[label] = none_run(phases, conc, cost)
                    continue
                cell[label] = simulate(phases, names, policy, conc, args.k, cost).summary()
                print(
                    wl, conc, label, {k: round(v, 3) for k, v in cell[label].items() if isinstance(v, float)}
                )
    meta = {**machine_meta(), "data": str(args.data), "k": args.k, "cost_seconds": cost}
    args.out.mkdir(parents=True, exist_ok=True)
    write(results, meta, args.out / f"vllm_replay{args.tag}")


def none_run(
    phases: list[list[tuple[list[int], list[int]]]], conc: int, cost: dict[str, float]
) -> dict[str, Any]:
    """No speculation: every row emits one token a step."""
    t = Tally()
    for phase in phases:
        queue, live = deque(phase), []
        while queue or live:
            prefill = 0
            while queue and len(live) < conc:
                p, o = queue.popleft()
                prefill += len(p)
                live.append(len(o))
            t.seconds += step_seconds(cost, len(live), 0, 0, prefill)
            t.tokens += len(live)
            t.row_steps += len(live)
            live = [n - 1 for n in live if n > 1]
    return t.summary()


def write(results: dict[str, Any], meta: dict[str, Any], stem: Path) -> None:
    lines = [
        f"# vLLM replay on a step clock (k = {meta['k']}; cost line in seconds {meta['cost_seconds']})",
        "",
        f"CPU: {meta.get('cpu', {}).get('model', '?')}, flags {meta.get('cpu', {}).get('flags', [])}. "
        "Drafting time is not charged (the engine run charges it); `oracle-cut`: the drafter's "
        "chain cut to exactly what is accepted; `at suffix's lengths`: the drafter's chain cut to "
        "the length `suffix` drafts at that row and step (only the chains' tokens differ); "
        "`best-oracle`: the longest accepted prefix of any drafter each step.",
        "",
    ]
    for wl, by_c in results.items():
        for conc, cell in by_c.items():
            base = cell["ngram"]["tokens_per_s"]
            suf = cell["suffix"]["tokens_per_s"]
            lines += [
                f"### {wl}, concurrency {conc}",
                "",
                "| method | tok/s | vs none | vs ngram | vs suffix | tokens/step | acceptance |",
                "|---|---|---|---|---|---|---|",
            ]
            for m, r in cell.items():
                tps = r["tokens_per_s"]
                lines.append(
                    f"| {m} | {tps:.1f} | {tps / cell['none']['tokens_per_s']:.2f}x | {tps / base:.2f}x | "
                    f"{tps / suf:.2f}x | {r['tokens_per_step']:.2f} | {r['acceptance']:.2f} |"
                )
            lines.append("")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    cells = [(wl, c) for wl, by_c in results.items() for c in by_c]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 4), sharey=False)
    for ax, (wl, c) in zip(np.atleast_1d(axes), cells, strict=True):
        cell = results[wl][c]
        names = list(cell)
        ax.barh(names, [cell[m]["tokens_per_s"] / cell["ngram"]["tokens_per_s"] for m in names])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_title(f"{wl} c={c}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("tok/s vs ngram on the replay's step clock")
    fig.tight_layout()
    save(fig, stem.with_suffix(".png"))


if __name__ == "__main__":
    main()
