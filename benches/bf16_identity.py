"""Greedy identity with HF in bfloat16: how many prompts ``fastdec.generate`` reproduces token for
token against ``model.generate`` with both in bfloat16, per mode (linear path, drafter, budget).

    python benches/bf16_identity.py linear:none:1 auto:none:1 auto:trie:auto auto:trie:4

A mode is ``FASTDEC_CPU_LINEAR:drafter:budget`` (``none``: no drafts, the plain loop). Prompts:
every 8th of the first 80 Spec-Bench questions, chat template, 64 new tokens, 2 threads, a fresh
drafter registry per call. Prints one line per mode.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import fastdec
import torch
from fastdec.generation.registry import DrafterRegistry
from fastdec.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model, tok = load_model(str(SHARED / "models" / "smollm2-135m-instruct"), dtype="bfloat16")
    lines = (SHARED / "data" / "specbench" / "question.jsonl").read_text().splitlines()
    questions = [json.loads(line) for line in lines][:80:8]
    results: dict[str, list[bool]] = {}
    for q in questions:
        chat = [{"role": "user", "content": q["turns"][0]}]
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        ids = ids if isinstance(ids, list) else ids["input_ids"]
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=64)
        ref = out[0, len(ids) :].tolist()
        for mode in sys.argv[1:]:
            linear, drafter, budget = mode.split(":")
            os.environ["FASTDEC_CPU_LINEAR"] = linear
            got = fastdec.generate(
                model,
                [ids],
                drafter=None if drafter == "none" else drafter,
                max_new_tokens=64,
                budget=budget if budget == "auto" else int(budget),
                registry=DrafterRegistry(),
            )
            results.setdefault(mode, []).append(got.sequences[0][: len(ref)] == ref)
    for mode, same in results.items():
        print(f"{mode}: {sum(same)}/{len(same)} identical to HF bfloat16")


if __name__ == "__main__":
    main()
