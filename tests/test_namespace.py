"""Everything imports meshcast's code through the one `meshcast` namespace.

The repository's folders (`planner/`, `solver/`, ...) are also importable under their own
names when Python runs from the repository root; a module imported both ways would exist twice
(two classes of one name, two caches), so no source file may use the bare names."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

BARE = {"planner", "solver", "api", "executor", "pipeline", "testbed"}
FOLDERS = [*sorted(BARE), "tests", "benchmarks", "examples"]


def _sources() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT)) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
    )


def _bare_imports(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(), path)
    bare = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        bare += [f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] in BARE]
    return bare


def test_no_bare_package_imports() -> None:
    sources = _sources()
    assert len(sources) > 100  # the walk found the tree
    bare = [line for path in sources for line in _bare_imports(path)]
    assert not bare, f"imports of meshcast's code by its bare folder name: {bare}"


def test_public_names_load_from_the_top() -> None:
    import meshcast

    for name in meshcast.__all__:
        assert getattr(meshcast, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        meshcast.no_such_name  # noqa: B018
