"""SGLang plugin: a speculative algorithm ``FASTDEC``, SGLang's NGRAM worker over fastdec's corpus.

fastdec's wheel declares :func:`register` in the ``sglang.srt.plugins`` entry-point group, which
SGLang 0.5.23's ``load_plugins()`` runs in every process it starts (``SGLANG_PLUGINS=fastdec``
restricts the plugins loaded to this one). Then::

    FASTDEC_SGLANG='{"drafter": "trie"}' python -m sglang.launch_server --model-path MODEL \\
        --speculative-algorithm FASTDEC --speculative-num-draft-tokens 8

drafts with :class:`fastdec.integrations.sglang.FastdecNgramCorpus` (settings: its docs). The
algorithm (:func:`spec_class`) answers ``is_ngram()`` with True, so SGLang's scheduler, CUDA-graph
and overlap paths treat it as NGRAM, and resolves the server arguments as SGLang's own NGRAM
does (:func:`resolve_server_args`). Its worker (:func:`worker_class`) is SGLang's
``NGRAMWorker`` constructed with ``FastdecNgramCorpus`` where it builds its ``NgramCorpus``;
nothing else of the worker changes.

Nothing here imports SGLang until :func:`register` runs.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from fastdec.integrations.sglang import FastdecNgramCorpus

#: the name given to ``--speculative-algorithm``
ALGORITHM = "FASTDEC"


def resolve_server_args(server_args: Any) -> None:
    """SGLang 0.5.23's ``_handle_ngram`` for a plugin algorithm: the same checks and defaults,
    written as attribute assignments (SGLang hands a plugin a recorder that declares them).

    Raises:
        ValueError: a device other than cuda, cpu or xpu, an external corpus (not supported),
            topk > 1 with paged attention other than flashinfer, or DP attention.
    """
    from sglang.srt.runtime_context import attn_dp_enabled_of  # type: ignore[import-not-found,unused-ignore]

    cfg = server_args
    if cfg.device not in ("cuda", "cpu", "xpu"):
        raise ValueError(
            f"--speculative-algorithm {ALGORITHM}: device {cfg.device!r}; needs cuda, cpu or xpu"
        )
    if cfg.speculative_ngram_external_corpus_path is not None:
        raise ValueError(
            f"--speculative-algorithm {ALGORITHM} does not load external corpora "
            f"(--speculative-ngram-external-corpus-path {cfg.speculative_ngram_external_corpus_path!r})"
        )
    if cfg.device == "cpu" and not cfg.disable_overlap_schedule:
        server_args.disable_overlap_schedule = True  # SGLang: no overlap for speculation on CPU
    if cfg.max_running_requests is None:
        server_args.max_running_requests = 48
    server_args.enable_mixed_chunk = False
    server_args.speculative_eagle_topk = cfg.speculative_ngram_max_bfs_breadth
    if cfg.speculative_num_draft_tokens is None:
        server_args.speculative_num_draft_tokens = 12
    if cfg.speculative_num_steps is None:
        server_args.speculative_num_steps = cfg.speculative_num_draft_tokens // cfg.speculative_eagle_topk
    page_size = cfg.page_size or 1
    if cfg.speculative_eagle_topk > 1 and page_size > 1 and cfg.attention_backend != "flashinfer":
        raise ValueError(
            f"speculative_eagle_topk({cfg.speculative_eagle_topk}) > 1 with page_size({page_size}) > 1 "
            "is only supported by the 'flashinfer' attention backend (as for NGRAM)"
        )
    if attn_dp_enabled_of(cfg):
        raise ValueError(f"--speculative-algorithm {ALGORITHM} does not support DP attention (as NGRAM)")


@functools.cache
def spec_class() -> type:
    """The ``CustomSpecAlgo`` subclass registered for ``FASTDEC`` (imports SGLang)."""
    from sglang.srt.speculative.spec_info import CustomSpecAlgo  # type: ignore[import-not-found,unused-ignore]

    class FastdecSpecAlgo(CustomSpecAlgo):  # type: ignore[misc,unused-ignore]
        """NGRAM to SGLang's dispatch (``is_ngram``), with fastdec's corpus in the worker."""

        def is_ngram(self) -> bool:
            return True

        def has_draft_kv(self) -> bool:
            return False  # as NGRAM: the tree lives only in the verify mask

        def handle_server_args(self, server_args: Any) -> None:
            resolve_server_args(server_args)

    return FastdecSpecAlgo


@functools.cache
def worker_class() -> type:
    """SGLang's ``NGRAMWorker`` whose ``__init__`` builds a :class:`FastdecNgramCorpus` (imports
    SGLang's worker; its module ``NgramCorpus`` is left as it is)."""
    from sglang.srt.speculative import ngram_worker  # type: ignore[import-not-found,unused-ignore]

    base = ngram_worker.NGRAMWorker
    init = base.__init__
    # NGRAMWorker.__init__'s own code, resolving the name NgramCorpus to fastdec's class
    init_with_fastdec = types.FunctionType(
        init.__code__,
        {**init.__globals__, "NgramCorpus": FastdecNgramCorpus},
        init.__name__,
        init.__defaults__,
        init.__closure__,
    )
    return type(
        "FastdecNgramWorker",
        (base,),
        {"__init__": init_with_fastdec, "__module__": __name__, "__doc__": worker_class.__doc__},
    )


def _worker_factory(server_args: Any) -> type:
    return worker_class()


def register() -> None:
    """Registers ``FASTDEC`` with ``SpeculativeAlgorithm.register`` (the ``sglang.srt.plugins``
    entry point; a second call does nothing)."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm  # type: ignore[import-not-found,unused-ignore]

    try:
        SpeculativeAlgorithm.from_string(ALGORITHM)
        return  # registered already
    except ValueError:
        pass
    SpeculativeAlgorithm.register(ALGORITHM, supports_overlap=True, spec_class=spec_class())(_worker_factory)
