"""The package's shape: no import cycle, an `__all__` per subpackage, a lazy public API, a loud CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import safetyml

SRC = Path(safetyml.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: not inside functions, nor under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef | ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the safetyml modules it imports at import time."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for root in sorted(graph):
        if colour[root]:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        colour[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) in (
        ["a", "b", "c", "a"],
        ["b", "c", "a", "b"],
        ["c", "a", "b", "c"],
    )
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert "safetyml.scoring.scorer" in graph and graph["safetyml.batch.drivers"]  # the walk found modules
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


@pytest.mark.parametrize(
    "package",
    ["contract", "simulate", "features", "training", "explain", "scoring", "batch", "cli"],
)
def test_every_subpackage_declares_all(package: str) -> None:
    init = SRC / package / "__init__.py" if (SRC / package).is_dir() else SRC / f"{package}.py"
    tree = ast.parse(init.read_text())
    names = [
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]
    assert "__all__" in names, f"{init} has no __all__"
    module = __import__(f"safetyml.{package}", fromlist=["__all__"])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"safetyml.{package}.{name}"


def test_public_api_is_lazy_and_complete() -> None:
    code = (
        "import sys, safetyml\n"
        "heavy = [m for m in ('pandas', 'lightgbm', 'mlflow', 'bentoml', 'shap') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "names = ['simulate', 'load_tables', 'build_frame', 'train', 'load_model', 'Scorer', 'explain']\n"
        "assert set(names) <= set(safetyml.__all__), safetyml.__all__\n"
        "assert all(callable(getattr(safetyml, n)) for n in names)\n"
        "assert safetyml.Scorer.__name__ == 'Scorer'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_broken_area_module_stops_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    import safetyml.cli as cli

    monkeypatch.setattr(cli, "AREA_MODULES", ("safetyml.cli.no_such_area",))
    with pytest.raises(ImportError, match=r"area module safetyml\.cli\.no_such_area failed to import"):
        cli._register_areas()


def test_a_callable_package_runs_its_function_of_the_same_name() -> None:
    import types

    from safetyml._callable import make_callable

    module = types.ModuleType("fake_pkg.tool")
    module.tool = lambda x, y=1: x + y  # type: ignore[attr-defined]
    sys.modules["fake_pkg.tool"] = module
    try:
        make_callable("fake_pkg.tool")
        assert module(2, y=3) == 5  # type: ignore[operator]
    finally:
        del sys.modules["fake_pkg.tool"]
    assert sys.modules["safetyml.explain"].explain is safetyml.explain.explain  # type: ignore[attr-defined]
