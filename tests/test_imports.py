"""The package imports one way: no import cycles inside mrl_core, and nothing from app/ or experiments/.

Imports are read with ``ast`` at every depth (module, class and function level), so a cycle hidden behind
a function-level import counts too: the fix is to move what both sides need to a lower module (STYLE.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "mrl_core"
OUTSIDE_PACKAGES = {"app", "experiments"}


def module_paths(root: Path) -> dict[str, Path]:
    """Dotted name of every module under ``root``; a package's ``__init__.py`` stands for the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_statements(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(base, imported names, line) per import; relative bases made absolute.

    ``import a.b`` gives ("a.b", [], line); ``from a import b, c`` gives ("a", ["b", "c"], line).
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    statements = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            statements += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            statements.append((base, [alias.name for alias in node.names], node.lineno))
    return statements


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports.

    ``from X import y`` is an edge to ``X.y`` when that is a module and to ``X`` (its ``__init__``)
    otherwise; ``import X.y.z`` is an edge to the longest of ``X.y.z``, ``X.y``, ``X`` that is a module.
    """
    modules = module_paths(root)

    def known(name: str) -> str:
        parts = name.split(".")
        while ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts)

    graph = {}
    for module, path in modules.items():
        targets = set()
        for base, names, _ in import_statements(module, path):
            if base.split(".")[0] != root.name:
                continue
            if not names:
                targets.add(known(base))
            for name in names:
                targets.add(f"{base}.{name}" if f"{base}.{name}" in modules else known(base))
        graph[module] = targets - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every simple cycle, each as [a, b, ..., a] starting from its smallest module, in sorted order."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    reach = {module: reachable(module) for module in graph}
    cycles = []

    def extend(path: list[str]) -> None:
        for target in sorted(graph[path[-1]]):
            if target == path[0]:
                cycles.append(path + [target])
            # Only modules that lead back to the start (its strongly connected component) can close a cycle.
            elif target > path[0] and target not in path and path[0] in reach[target]:
                extend(path + [target])

    for start in sorted(graph):
        extend([start])
    return cycles


def outside_imports(root: Path) -> list[str]:
    """'file:line imports name' for every absolute import of app or experiments under ``root``."""
    found = []
    for module, path in module_paths(root).items():
        for base, _, line in import_statements(module, path):
            if base.split(".")[0] in OUTSIDE_PACKAGES:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {base}")
    return found


def test_mrl_core_has_no_import_cycles():
    cycles = find_cycles(import_graph(PACKAGE_ROOT))
    assert not cycles, "import cycles in mrl_core:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_mrl_core_never_imports_app_or_experiments():
    found = outside_imports(PACKAGE_ROOT)
    assert not found, "mrl_core must not depend on app/ or experiments/:\n" + "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root / "pkg"


def test_a_cycle_through_a_function_level_and_a_relative_import_is_found(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "import os\n",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/c.py": "def later():\n    from ..a import name\n",
        "pkg/b.py": "class B:\n    def method(self):\n        from pkg.sub.c import later\n",
    })
    graph = import_graph(root)
    assert graph["pkg.sub"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.low"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_a_package_init_importing_its_submodules_is_no_cycle_until_one_imports_the_init_back(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg import util\n",
        "pkg/util.py": "",
        "pkg/data/__init__.py": "from .loaders import load\nfrom .check import check\n",
        "pkg/data/loaders.py": "from .check import check\nfrom pkg import util\n",
        "pkg/data/check.py": "import pkg.util\n",
    })
    assert import_graph(root)["pkg.data.loaders"] == {"pkg.data.check", "pkg.util"}
    assert find_cycles(import_graph(root)) == []
    (root / "data" / "check.py").write_text("from pkg.data import load\n")
    assert find_cycles(import_graph(root)) == [
        ["pkg.data", "pkg.data.check", "pkg.data"],
        ["pkg.data", "pkg.data.loaders", "pkg.data.check", "pkg.data"],
    ]


def test_imports_of_app_or_experiments_are_named_with_file_and_line(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/view.py": "import numpy\n\n\ndef draw():\n    from app.widgets import chart\n",
        "pkg/apply.py": "import application\nfrom .app import x\n",
        "pkg/app.py": "",
    })
    assert outside_imports(root) == ["pkg/view.py:5 imports app.widgets"]
