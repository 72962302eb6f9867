"""The README's code blocks, read by the tests that run them (the quick starts must work as
printed). Shared by the main suite and the engine suites (tests/vllm, tests/llama)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(section: str, lang: str) -> list[str]:
    """The ``lang`` code blocks under the README heading ``## {section}``, in order."""
    text = README.read_text()
    head = f"\n## {section}\n"
    start = text.find(head)
    if start < 0:
        raise AssertionError(f"README has no section {section!r}")
    end = text.find("\n## ", start + len(head))
    body = text[start : end if end >= 0 else len(text)]
    found = re.findall(rf"```{lang}\n(.*?)```", body, re.S)
    if not found:
        raise AssertionError(f"README section {section!r} has no {lang} block")
    return found


def command(block: str) -> list[str]:
    """A shell block's one command as argv (line continuations joined, the comment dropped)."""
    line = " ".join(part.rstrip("\\").strip() for part in block.strip().splitlines())
    return shlex.split(line, comments=True)
