"""The package's folders show its architecture, and its imports respect it.

Every import of a ``dapo`` module (at module level or inside a function) is an edge of the
package's import graph. The graph has no circle, and no module imports a layer above its own:
``util`` < ``clip`` < ``data``/``metrics``/``synthetic``/``reference`` < ``methods`` < ``engine``
< ``experiments`` < ``cli``/``crosscheck`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dapo

PACKAGE = Path(dapo.__file__).resolve().parent
LAYERS = {"util": 0, "clip": 1, "data": 2, "metrics": 2, "synthetic": 2, "reference": 2, "methods": 3,
          "engine": 4, "experiments": 5, "cli": 6, "crosscheck": 6, "__main__": 7}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The ``dapo`` modules a file imports anywhere in it (``from a import b`` counts as ``a.b``
    when ``b`` is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dapo":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "dapo")
    return found


GRAPH = {name: {target for target in imports_of(path) if target in MODULES and target != name}
         for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return 0 if len(parts) == 1 else LAYERS[parts[1]]


def test_circles_are_found_when_there_are_some():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    assert circles(GRAPH) == []


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in MODULES if len(m.split(".")) > 1 and m.split(".")[1] not in LAYERS)
    assert not unknown, f"modules outside the layers of docs/ARCHITECTURE.md: {unknown}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward}"


def test_the_package_root_holds_only_folders_and_the_entry_points():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]
