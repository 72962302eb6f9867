"""Report dependency cycles among the Rust modules of each crate (`make lint`; stdlib only).

A module A that uses B while B uses A (directly or through others) is a cycle. Per crate
(`rust/*/src`), every `use crate::...` / `use super::...` / `use self::...` path and every inline
`crate::x::y` / `super::x` path is resolved to the module it names (following `pub use`
re-exports of a parent module to the child that defines the item). An edge is drawn at the level
where the two modules part: from a file to its sibling module under their common parent (for
`tree/mask.rs` using `tree/shape.rs`: `tree::mask -> tree::shape`), or between top-level modules
(`drafter/trie.rs` using `tree/build.rs`: `drafter -> tree`). References to a module's own
ancestors or descendants are not edges. Unit-test modules (`mod tests`) count like the rest of
the file.

Exits 1 and prints each cycle (with a file and path for each edge) if there is one.
Usage: python3 .ci/rust_module_cycles.py [CRATE_SRC_DIR ...]
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

Module = tuple[str, ...]

_STRIP = re.compile(
    r"""
      //[^\n]*                              # line comment (doc comments included)
    | /\*.*?\*/                             # block comment
    | r(?P<h>\#*)"(?:.|\n)*?"(?P=h)         # raw string
    | b?"(?:\\.|[^"\\])*"                   # string
    | b?'(?:\\.|[^'\\])'                    # char (a lifetime has no closing quote)
    """,
    re.VERBOSE | re.DOTALL,
)
_USE = re.compile(r"\buse\s+([^;]*);")
_INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
_MOD_DECL = re.compile(r"\bmod\s+(\w+)\s*;")
_PATH = re.compile(r"(?<![\w:])\$?((?:crate|super|self)(?:\s*::\s*\w+)+)")


def strip(text: str) -> str:
    """Comments and literals blanked (newlines kept, so line numbers stay)."""
    return _STRIP.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def expand_use(tree: str) -> list[list[str]]:
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]] (aliases and globs dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out: list[list[str]] = []

    def split_top(s: str) -> list[str]:
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        return [p for p in parts if p]

    def rec(prefix: list[str], s: str) -> None:
        if "{" in s:
            head, _, rest = s.partition("{")
            inner = rest[: rest.rindex("}")]
            head_parts = [p for p in head.split("::") if p]
            for part in split_top(inner):
                rec(prefix + head_parts, part)
            return
        parts = [p for p in s.split("::") if p and p != "*"]
        if parts and parts[-1] == "self":
            parts.pop()
        out.append(prefix + parts)

    rec([], tree)
    return out


class Crate:
    def __init__(self, src: Path) -> None:
        self.src = src
        self.files: dict[Module, Path] = {}
        self.modules: set[Module] = {()}
        self.reexports: dict[Module, dict[str, Module]] = {}
        self._discover((), src / "lib.rs")

    def _discover(self, module: Module, path: Path) -> None:
        self.files[module] = path
        self.modules.add(module)
        text = strip(path.read_text())
        for name in _MOD_DECL.findall(text):
            base = path.parent if path.name in ("lib.rs", "mod.rs") else path.with_suffix("")
            child = base / f"{name}.rs"
            if not child.exists():
                child = base / name / "mod.rs"
            if child.exists():
                self._discover((*module, name), child)
        for name in _INLINE_MOD.findall(text):
            self.modules.add((*module, name))

    def _scan(self, module: Module, text: str) -> Iterator[tuple[int, Module, list[str], bool]]:
        """(line, inline module path, path text, is_use) for every path in a file."""
        spans: list[tuple[int, int, Module]] = []  # inline `mod x { ... }` bodies
        for m in _INLINE_MOD.finditer(text):
            depth, i = 0, m.end() - 1
            for i in range(m.end() - 1, len(text)):
                depth += text[i] == "{"
                depth -= text[i] == "}"
                if depth == 0:
                    break
            spans.append((m.end(), i, (m.group(1),)))

        def scope(pos: int) -> Module:
            inner: Module = ()
            for start, end, name in spans:
                if start <= pos <= end:
                    inner += name
            return (*module, *inner)

        used: set[int] = set()
        for m in _USE.finditer(text):
            used.update(range(m.start(), m.end()))
            line = text.count("\n", 0, m.start()) + 1
            for parts in expand_use(m.group(1)):
                yield line, scope(m.start()), parts, True
        for m in _PATH.finditer(text):
            if m.start() in used:
                continue
            line = text.count("\n", 0, m.start()) + 1
            yield line, scope(m.start()), re.sub(r"\s+", "", m.group(1)).split("::"), False

    def resolve(self, scope: Module, parts: list[str], is_use: bool) -> Module | None:
        """The module a path names (deepest known module, re-exports followed)."""
        if not parts:
            return None
        head = parts[0]
        if head == "crate":
            cur: Module = ()
        elif head == "self":
            cur = scope
        elif head == "super":
            if not scope:
                return None
            cur = scope[:-1]
        elif is_use and (*scope, head) in self.modules:
            cur = scope  # 2018 paths: `use child::X` from the parent
            parts = ["self", *parts]
        else:
            return None  # an external crate or a local name
        for seg in parts[1:]:
            if seg == "super":
                if not cur:
                    return None
                cur = cur[:-1]
            elif seg == "self":
                pass
            elif (*cur, seg) in self.modules:
                cur = (*cur, seg)
            else:
                target = self.reexports.get(cur, {}).get(seg)
                if target is not None:
                    cur = target
                break
        return cur

    def collect_reexports(self) -> None:
        for _ in range(4):  # chains of re-exports (lib.rs re-exports what tree/mod.rs does)
            for module, path in self.files.items():
                text = strip(path.read_text())
                for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]*);", text):
                    for parts in expand_use(m.group(1)):
                        if len(parts) < 2:
                            continue
                        target = self.resolve(module, parts[:-1], True)
                        if target is None:
                            continue
                        last = self.resolve(module, parts, True)
                        if last is not None and last != target and last in self.modules:
                            target = last
                        self.reexports.setdefault(module, {})[parts[-1]] = target

    def edges(self) -> dict[tuple[Module, Module], list[str]]:
        self.collect_reexports()
        out: dict[tuple[Module, Module], list[str]] = {}
        for module, path in self.files.items():
            text = strip(path.read_text())
            for line, scope, parts, is_use in self._scan(module, text):
                target = self.resolve(scope, parts, is_use)
                if target is None:
                    continue
                k = 0
                while k < min(len(module), len(target)) and module[k] == target[k]:
                    k += 1
                if k == len(module) or k == len(target):
                    continue  # an ancestor or descendant (or itself)
                edge = (module[: k + 1], target[: k + 1])
                where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
                out.setdefault(edge, []).append(f"{where} ({'::'.join(parts)})")
        return out


def cycles(edges: dict[tuple[Module, Module], list[str]]) -> list[list[Module]]:
    """One cycle through each strongly connected component of more than one module."""
    graph: dict[Module, list[Module]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[Module, int] = {}
    low: dict[Module, int] = {}
    stack: list[Module] = []
    on: set[Module] = set()
    comps: list[list[Module]] = []

    def connect(v: Module) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    found = []
    for comp in comps:
        members = set(comp)
        start = min(comp)
        # shortest cycle through `start` inside the component (BFS)
        prev: dict[Module, Module] = {}
        queue, seen = [start], {start}
        end = None
        while queue and end is None:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    end = v
                    break
                if w in members and w not in seen:
                    seen.add(w)
                    prev[w] = v
                    queue.append(w)
        assert end is not None  # a strongly connected component has a cycle through `start`
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        found.append([*reversed(path), start])
    return found


def main(argv: list[str]) -> int:
    srcs = [Path(a) for a in argv] or sorted(ROOT.glob("rust/*/src"))
    bad = False
    for src in srcs:
        crate = Crate(src)
        edges = crate.edges()
        for cycle in cycles(edges):
            bad = True
            names = [("crate::" + "::".join(m)) if m else "crate" for m in cycle]
            print(f"{src}: module cycle {' -> '.join(names)}")
            for a, b in pairwise(cycle):
                for ref in edges[(a, b)][:3]:
                    print(f"    {'::'.join(a)} -> {'::'.join(b)}: {ref}")
    if not bad:
        print(f"no module cycles in {', '.join(str(s.relative_to(ROOT)) for s in srcs)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
