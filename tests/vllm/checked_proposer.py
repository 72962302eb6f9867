"""A proposer for the identity test: fastdec's :class:`PldProposer` and vLLM's own
``NgramProposer``, with the same settings, on the same inputs at every engine step.

It returns fastdec's drafts (so the engine runs fastdec) and counts the steps where the two
disagree; the counts go to the JSON file named by ``$FASTDEC_CHECK_FILE`` every step.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

from fastdec.integrations.vllm import PldProposer


class CheckedPldProposer(PldProposer):
    def __init__(self, vllm_config: Any) -> None:
        super().__init__(vllm_config)
        from vllm.v1.spec_decode.ngram_proposer import NgramProposer

        # vLLM forces 0/0 on custom_class configs: hand NgramProposer the settings fastdec read
        ngram_config = SimpleNamespace(
            speculative_config=SimpleNamespace(
                prompt_lookup_min=self.prompt_lookup_min,
                prompt_lookup_max=self.prompt_lookup_max,
                num_speculative_tokens=self.num_speculative_tokens,
            ),
            model_config=SimpleNamespace(max_model_len=self.max_model_len),
            scheduler_config=vllm_config.scheduler_config,
            parallel_config=vllm_config.parallel_config,
        )
        self.ngram = NgramProposer(ngram_config)  # type: ignore[arg-type]
        self.check = {
            "steps": 0,
            "rows": 0,
            "drafts": 0,
            "draft_tokens": 0,
            "mismatched_rows": 0,
            "examples": [],
        }

    def propose(
        self, sampled_token_ids: Any, num_tokens_no_spec: Any, token_ids_cpu: Any, **kwargs: Any
    ) -> Any:
        ours = super().propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu, **kwargs)
        theirs = self.ngram.propose(
            self.num_speculative_tokens, sampled_token_ids, num_tokens_no_spec, token_ids_cpu
        )
        c = self.check
        c["steps"] += 1
        c["rows"] += len(ours)
        c["drafts"] += sum(1 for d in ours if d)
        c["draft_tokens"] += sum(len(d) for d in ours)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if list(a) != list(b):
                c["mismatched_rows"] += 1
                if len(c["examples"]) < 5:
                    c["examples"].append({"row": i, "fastdec": list(a), "vllm": list(b)})
        path = os.environ.get("FASTDEC_CHECK_FILE")
        if path:
            with open(path + ".tmp", "w") as f:
                json.dump(c, f)
            os.replace(path + ".tmp", path)
        return ours
