"""fastdec's ``SpeculatorConfig`` classes for vLLM 0.34 (registered by
:mod:`fastdec.integrations.vllm_plugin`).

vLLM builds a method's config in every process, so this module imports only vLLM's config
base and fastdec's settings table: neither torch nor the speculator. Settings arrive as
``speculator_options`` (the keys of :data:`fastdec.integrations.vllm.SETTINGS`, ``adaptive``
excepted) and are checked in :meth:`FastdecSpeculatorConfig.apply_options`, which vLLM calls
while it validates ``--speculative-config``: a bad option stops the engine at start with a
``ValueError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from vllm.v1.worker.gpu.spec_decode.speculator_config import (  # type: ignore[import-not-found, unused-ignore]
    SpeculatorConfig,
)

from fastdec.integrations.vllm import SETTINGS

if TYPE_CHECKING:
    from fastdec.integrations.vllm import FastdecProposer

#: draft length when ``num_speculative_tokens`` is not given (vLLM ``ngram``'s usual k)
DEFAULT_K = 5
#: settings of the ``custom_class`` proposers that make no sense here (and why)
REFUSED = {
    "adaptive": "vLLM 0.34 verifies num_speculative_tokens tokens a row whatever the draft "
    "(a shorter draft is padded, not cheaper), so the draft length is not learnt",
}


class FastdecSpeculatorConfig(SpeculatorConfig):  # type: ignore[misc]
    """The ``fastdec`` method: the drafter named by the ``drafter`` option (default trie)."""

    base_method = None
    speculator_class = "fastdec.integrations.vllm_speculator.FastdecSpeculator"
    supported_options = frozenset({"speculator_options"})
    # The token history stays in pinned host memory (UVA on a GPU): the speculator reads the
    # new tokens of each row where they lie, with no copy of the history per step.
    prefer_dense_token_history = False
    # Drafts carry no logits: vLLM's adaptive verification must not wait for any.
    adaptive_verification_uses_draft_logits = False
    #: the ``custom_class`` proposer whose settings and drafter this method uses
    proposer: ClassVar[str] = "FastdecProposer"

    @classmethod
    def configure(cls, spec: Any) -> None:
        """No draft model (the target's config stands in); ``num_speculative_tokens`` defaults
        to :data:`DEFAULT_K`."""
        super().configure(spec)
        if spec.num_speculative_tokens is None:
            spec.num_speculative_tokens = DEFAULT_K

    @classmethod
    def apply_options(cls, spec: Any) -> None:
        """Checks ``speculator_options`` by building the drafter they describe.

        Raises:
            ValueError: an unknown option, one of the wrong type or value, or ``drafter_options``
                the drafter does not take (each named).
        """
        cls.build_proposer(None, spec)

    @classmethod
    def options(cls, spec: Any) -> dict[str, Any]:
        """``spec.speculator_options`` checked against :data:`~fastdec.integrations.vllm.SETTINGS`."""
        found = spec.speculator_options or {}
        if not isinstance(found, Mapping):
            raise ValueError(f"speculator_options = {found!r}: must be a dict of fastdec settings")
        for name in found:
            if name in REFUSED:
                raise ValueError(
                    f"fastdec speculator option {name!r} is not offered on vLLM 0.34: {REFUSED[name]}"
                )
            if name not in SETTINGS:
                known = sorted(set(SETTINGS) - set(REFUSED))
                raise ValueError(f"unknown fastdec speculator option {name!r}; known: {known}")
        return dict(found)

    @classmethod
    def build_proposer(cls, vllm_config: Any, spec: Any) -> FastdecProposer:
        """The ``custom_class`` proposer of this method for ``spec``: its drafter and draft
        session (settings checked, fixed draft length)."""
        from fastdec.integrations import vllm as adapter

        proposer_cls: type[FastdecProposer] = getattr(adapter, cls.proposer)
        target = getattr(spec, "target_model_config", None)
        max_len = getattr(target, "max_model_len", None)
        if vllm_config is not None:
            max_len = vllm_config.model_config.max_model_len
        return proposer_cls(
            vllm_config,
            num_speculative_tokens=spec.num_speculative_tokens,
            max_model_len=max_len,
            adaptive=False,
            **cls.options(spec),
        )


class TrieSpeculatorConfig(FastdecSpeculatorConfig):
    """The ``fastdec_trie`` method: :class:`fastdec.TrieDrafter` with cross-request memory."""

    proposer = "TrieProposer"


class PldSpeculatorConfig(FastdecSpeculatorConfig):
    """The ``fastdec_pld`` method: prompt lookup with vLLM ``ngram``'s semantics."""

    proposer = "PldProposer"


class HybridSpeculatorConfig(FastdecSpeculatorConfig):
    """The ``fastdec_hybrid`` method: the trie fused with an n-gram tree."""

    proposer = "HybridProposer"
