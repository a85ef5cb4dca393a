"""Every environment variable the code reads is documented in docs/configuration.md, and every variable
documented there is still read somewhere."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
CODE = [*sorted((ROOT / "src" / "safetyml").rglob("*.py")), *sorted((ROOT / "serving").glob("*.py"))]
ENV_NAME = re.compile(r"\b(?:SAFETYML|MLFLOW)_[A-Z0-9_]+\b")
LOOKS_LIKE_ENV = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", "") == "os"
    )


def _env_reads(tree: ast.AST) -> list[ast.expr]:
    """Name arguments of os.environ.get/[...]/setdefault/pop, os.getenv and ``x in os.environ``."""
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and (
                (func.attr in {"get", "setdefault", "pop"} and _is_os_environ(func.value))
                or (func.attr == "getenv" and getattr(func.value, "id", "") == "os")
            ):
                found.append(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            found.append(node.slice)
        elif isinstance(node, ast.Compare) and any(_is_os_environ(c) for c in node.comparators):
            found.append(node.left)
    return found


def _module_constants(trees: dict[Path, ast.Module]) -> dict[str, str]:
    """Module-level ``NAME = "string"`` assignments across the code, and aliases of them
    (``HOME_ENV = envvars.HOME``), since names are imported between modules."""
    raw: dict[str, ast.expr] = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name):
                raw.setdefault(target.id, value)
    constants: dict[str, str] = {}
    for _ in range(3):  # aliases of aliases
        for name, value in raw.items():
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants[name] = value.value
            elif isinstance(value, ast.Name | ast.Attribute):
                ref = value.id if isinstance(value, ast.Name) else value.attr
                if ref in constants:
                    constants[name] = constants[ref]
    return constants


def variables_read_by_the_code() -> dict[str, str]:
    """{variable: first place} for every environment variable named or read in src/ and serving/."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in CODE}
    constants = _module_constants(trees)
    names: dict[str, str] = {}
    unresolved: list[str] = []
    for path, tree in trees.items():
        where = str(path.relative_to(ROOT))
        for match in ENV_NAME.finditer(path.read_text()):
            names.setdefault(match.group(), where)
        for arg in _env_reads(tree):
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.setdefault(arg.value, f"{where}:{arg.lineno}")
            elif isinstance(arg, ast.Name | ast.Attribute):
                ident = arg.id if isinstance(arg, ast.Name) else arg.attr
                if ident in constants:
                    names.setdefault(constants[ident], f"{where}:{arg.lineno}")
                elif LOOKS_LIKE_ENV.match(ident):
                    unresolved.append(f"{where}:{arg.lineno} ({ident})")
                # a lower-case variable is a generic helper's parameter (e.g. envvars.environment)
            else:
                unresolved.append(f"{where}:{arg.lineno}")
    assert not unresolved, f"environment variable names this test cannot resolve: {unresolved}"
    return names


def documented_variables() -> set[str]:
    rows = [line for line in CONFIG_PAGE.read_text().splitlines() if line.startswith("| `")]
    return {
        re.match(r"\| `([A-Z0-9_]+)`", row).group(1) for row in rows if re.match(r"\| `([A-Z0-9_]+)`", row)
    }


def test_every_environment_variable_read_by_the_code_is_documented():
    read = variables_read_by_the_code()
    missing = {name: where for name, where in read.items() if name not in documented_variables()}
    assert not missing, f"add these to the table in docs/configuration.md: {missing}"


def test_every_documented_variable_is_still_read():
    stale = documented_variables() - set(variables_read_by_the_code())
    assert not stale, f"docs/configuration.md documents variables no code reads: {sorted(stale)}"


def test_the_names_module_is_documented():
    from safetyml import envvars

    assert set(envvars.ALL) <= documented_variables()


def test_the_scan_finds_the_known_variables():
    """Guards the scanner itself: the variables named in the issue are found where they are read."""
    read = variables_read_by_the_code()
    expected = {"SAFETYML_HOME", "SAFETYML_API_TOKEN", "SAFETYML_POLICIES", "SAFETYML_HOST"}
    expected |= {"SAFETYML_SERVE_WORKERS", "SAFETYML_SERVE_THREADS", "MLFLOW_TRACKING_URI"}
    assert expected <= set(read)


def test_the_scan_resolves_constants_and_literals(tmp_path, monkeypatch):
    module = tmp_path / "m.py"
    module.write_text(
        'import os\nPORT_ENV = "APP_PORT"\n'
        'a = os.environ.get(PORT_ENV)\nb = os.getenv("APP_DEBUG")\nc = "APP_X" in os.environ\n'
        'd = os.environ["APP_Y"]\n'
    )
    monkeypatch.setitem(globals(), "CODE", [module])
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert set(variables_read_by_the_code()) == {"APP_PORT", "APP_DEBUG", "APP_X", "APP_Y"}


def _resolve(dotted: str) -> bool:
    """Whether ``safetyml.a.b.c`` names a module, or an attribute path inside one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_python_names_in_the_docs_exist():
    """``from safetyml.x import y`` lines and `safetyml.x.y` mentions in README.md and docs/ still resolve."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        names = [
            f"{module}.{name.strip()}"
            for module, imported in re.findall(r"^\s*from (safetyml[\w.]*) import ([\w, ]+)", text, re.M)
            for name in imported.split(",")
            if name.strip()
        ]
        names += re.findall(r"`(safetyml(?:\.\w+)+)(?![\w=])", text)  # not MLflow tags like safetyml.kind=job
        broken += [f"{page.relative_to(ROOT)}: {name}" for name in names if not _resolve(name)]
    assert not broken, f"docs name code that no longer exists: {broken}"
