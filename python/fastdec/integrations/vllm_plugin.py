"""vLLM general plugin: registers fastdec's speculative methods with vLLM 0.34 and later.

vLLM loads this through the ``vllm.general_plugins`` entry point in every process (front end,
engine core, workers) and may load it more than once; registering the same names again is a
no-op. On vLLM 0.32 / 0.33, which have no ``register_speculative_method``, it does nothing:
those versions reach fastdec through ``custom_class`` (:mod:`fastdec.integrations.vllm`).

The methods (``--speculative-config '{"method": NAME, "num_speculative_tokens": K,
"speculator_options": {...}}'``):

* ``fastdec_trie``: :class:`fastdec.TrieDrafter`, per-request tries plus a shared trie of
  finished requests' outputs (cross-request memory);
* ``fastdec_pld``: prompt lookup with vLLM ``ngram``'s semantics;
* ``fastdec_hybrid``: the trie fused with an n-gram tree;
* ``fastdec``: the drafter named by the ``drafter`` option (default ``"trie"``).

Only the names are registered here, as qualified names vLLM resolves when a method is used,
so loading the plugin imports neither vLLM's speculator classes nor torch.
"""

from __future__ import annotations

_CONFIGS = "fastdec.integrations.vllm_speculator_config"

#: method name -> qualified name of its ``SpeculatorConfig``
METHODS: dict[str, str] = {
    "fastdec": f"{_CONFIGS}.FastdecSpeculatorConfig",
    "fastdec_trie": f"{_CONFIGS}.TrieSpeculatorConfig",
    "fastdec_pld": f"{_CONFIGS}.PldSpeculatorConfig",
    "fastdec_hybrid": f"{_CONFIGS}.HybridSpeculatorConfig",
}


def register() -> None:
    """Registers :data:`METHODS` with vLLM (the entry point; a no-op before vLLM 0.34)."""
    try:
        from vllm.v1.worker.gpu.spec_decode.speculator_config import (  # type: ignore[import-not-found, unused-ignore]
            register_speculative_method,
        )
    except ImportError:  # vLLM 0.32 / 0.33: the custom_class proposers instead
        return
    for name, config in METHODS.items():
        register_speculative_method(name, config)
