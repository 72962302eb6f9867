"""The native classes and functions carry the docstrings of ``_core.pyi`` at runtime (``help()``).

The Rust ``///`` comments of the bindings hold the stub's docstring text verbatim; PyO3 turns them
into ``__doc__``. A class, method or function whose signature PyO3 knows gets the docstring
``name(signature)\\n--\\n\\n`` followed by the text; CPython moves that header to
``__text_signature__``, so ``__doc__`` holds the text alone and is compared as is.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastdec._core as core
import pytest

# _core.pyi re-exports constrained decoding from _core_constraints.pyi.
STUBS = [Path(__file__).parents[1] / "python" / "fastdec" / f for f in ("_core.pyi", "_core_constraints.pyi")]
# A stub-only base class documents methods every subclass defines natively.
SHARED_BASES = {"_Constraint": ("Regex", "Grammar", "JsonSchema")}

# Stub docstrings the native objects deliberately do not carry, with the reason.
SKIPPED = {
    "<module>": "describes the stub file; the native module's own docstring says what it is",
}
# Documented in the stub with `#:` comments (no docstrings): an int or str instance has its type's
# `__doc__`, so it cannot carry one.
CONSTANTS = ("MAX_NODES", "_MASK_AFTER", "__version__")


def stub_docs() -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring)`` of every stub item with a docstring. An ``@overload`` shares
    the one native docstring, so each overload's docstring (if any) must equal it."""
    for stub in STUBS:
        tree = ast.parse(stub.read_text(encoding="utf-8"))
        if stub == STUBS[0] and (doc := ast.get_docstring(tree)) is not None:
            yield "<module>", doc
        for node in tree.body:
            members = node.body if isinstance(node, ast.ClassDef) else []
            owners = SHARED_BASES.get(getattr(node, "name", ""))
            for item in [node, *members]:
                documented = isinstance(item, ast.ClassDef | ast.FunctionDef) and ast.get_docstring(item)
                if not documented:
                    continue
                if item is node:
                    if owners is None:  # the stub-only base itself has no runtime object
                        yield item.name, documented
                elif owners is None:
                    yield f"{node.name}.{item.name}", documented
                else:
                    yield from ((f"{owner}.{item.name}", documented) for owner in owners)


DOCS = list(stub_docs())


def runtime(qualname: str) -> Any:
    obj: Any = core
    for part in qualname.split("."):
        obj = getattr(obj, part)  # a property's class attribute is its descriptor
    return obj


def test_stub_has_docstrings() -> None:
    names = {name for name, _ in DOCS}
    want = {"TokenTree", "TokenTree.verify_greedy", "optimal_template", "Regex.sample", "Grammar.verify_tree"}
    assert want <= names


@pytest.mark.parametrize(("qualname", "doc"), DOCS, ids=[name for name, _ in DOCS])
def test_native_docstring_matches_stub(qualname: str, doc: str) -> None:
    if qualname in SKIPPED:
        pytest.skip(SKIPPED[qualname])
    obj = runtime(qualname)
    assert obj.__doc__ is not None, f"{qualname} has no runtime docstring"
    assert "\n--\n" not in obj.__doc__, "the text signature header leaked into __doc__"
    assert inspect.getdoc(obj) == inspect.cleandoc(doc)


def test_skipped_items_exist() -> None:
    assert set(SKIPPED) <= {name for name, _ in DOCS}
    for name in CONSTANTS:
        assert isinstance(getattr(core, name), int | str), name


@pytest.mark.parametrize("name", [n for n in core.__all__ if callable(getattr(core, n))])
def test_no_pointer_to_itself(name: str) -> None:
    doc = getattr(core, name).__doc__ or ""
    assert f"see `fastdec.{name.lower()}`" not in doc.lower()


def test_classes_show_their_signature() -> None:
    """``help(TokenTree)`` shows the constructor's parameters (PyO3 derives them from ``#[new]``)."""
    sig = inspect.signature(core.TokenTree)
    assert list(sig.parameters) == ["tokens", "parents", "scores"]
    assert sig.parameters["scores"].kind is inspect.Parameter.KEYWORD_ONLY
    assert core.TokenTree.__text_signature__ == "(tokens, parents, *, scores=None)"
