"""What the code imports is what pyproject.toml declares, extras are imported lazily and name themselves when
missing, and the bento's requirements are the project's own pins."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from safetyml._optional import MissingExtraError, ensure, require
from safetyml.errors import SafetymlError

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
SERVE_TOOL = ROOT / "serving" / "make_requirements.py"

# shipped code: the package and the service module(s) the bento carries
SHIPPED = [
    *sorted((ROOT / "src" / "safetyml").rglob("*.py")),
    *sorted(set((ROOT / "serving").glob("*.py")) - {SERVE_TOOL}),
]
# code that runs only in a dev environment
DEV_CODE = [*sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py")), SERVE_TOOL]
# dev-only packages that shipped code may import, lazily, for a test-only helper (and why)
DEV_ONLY_IN_SHIPPED = {
    "shap": "explain.shap_values.shap_reference cross-checks our TreeSHAP against shap's C code"
}


@cache
def load_tool():
    """serving/make_requirements.py as a module (serving/ is not a package of the wheel)."""
    spec = importlib.util.spec_from_file_location("make_requirements", SERVE_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def declared(*groups: str) -> set[str]:
    """Distribution names declared by the runtime dependencies and the given extras (self-references
    followed), plus what a requested extra of a dependency brings (``dask[distributed]``)."""
    reqs = load_tool().root_requirements(groups)
    names = {canonicalize_name(req.name) for req in reqs}
    for req in (req for req in reqs if req.extras):
        for child in map(Requirement, metadata.distribution(req.name).requires or []):
            if child.marker and any(child.marker.evaluate({"extra": extra}) for extra in req.extras):
                names.add(canonicalize_name(child.name))
    return names


@cache
def module_distributions() -> dict[str, set[str]]:
    return {
        mod: {canonicalize_name(d) for d in dists} for mod, dists in metadata.packages_distributions().items()
    }


def third_party_imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, inside a function?) for each absolute import of a non-stdlib module."""
    local = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
    local |= {"safetyml", "serving", "tests", "benchmarks"}

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            else:
                names = []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    yield top, child.lineno, in_function
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, nested)

    yield from walk(ast.parse(path.read_text(), str(path)), False)


def distributions_of(module: str, where: str) -> set[str]:
    dists = module_distributions().get(module)
    assert dists, f"{where}: no installed distribution provides the module {module!r}"
    return dists


def test_every_import_of_the_shipped_code_is_declared():
    allowed = declared(*(name for name in EXTRAS if name != "dev"))
    missing = []
    for path in SHIPPED:
        for module, line, lazy in third_party_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module in DEV_ONLY_IN_SHIPPED and lazy:
                continue
            if not distributions_of(module, where) & allowed:
                missing.append(f"{where} imports {module}")
    assert not missing, "imported but not declared in pyproject (runtime or dask/serve extra): " + "; ".join(
        missing
    )


def test_packages_of_an_extra_are_imported_inside_functions():
    """``import safetyml.x`` must work with the runtime dependencies alone; only serving/ may need [serve]."""
    runtime = declared()
    eager = []
    for path in SHIPPED:
        if path.parent == ROOT / "serving":
            continue  # the service module is the [serve] extra's own code
        for module, line, lazy in third_party_imports(path):
            if not lazy and not distributions_of(module, str(path)) & runtime:
                eager.append(f"{path.relative_to(ROOT)}:{line} imports {module} at module level")
    assert not eager, "; ".join(eager)


def test_tests_and_benchmarks_import_only_declared_packages():
    allowed = declared(*EXTRAS)
    missing = []
    for path in DEV_CODE:
        for module, line, _ in third_party_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if not distributions_of(module, where) & allowed:
                missing.append(f"{where} imports {module}")
    assert not missing, "imported by dev code but not declared (add to the dev extra): " + "; ".join(missing)


def test_test_only_packages_are_not_runtime_dependencies():
    for name in ("shap", "httpx", "psutil", "pytest", "hypothesis", "ruff"):
        assert name not in declared("dask", "serve"), (
            f"{name} is for tests/benchmarks: declare it in dev only"
        )
        assert name in declared("dev")
    assert {"dask", "distributed"} <= declared("dask") - declared()
    assert {"bentoml", "starlette"} <= declared("serve") - declared()
    assert declared("dask", "serve") <= declared("dev"), "dev must include the dask and serve extras"


def test_require_returns_the_module_when_installed():
    import json

    assert require("json", "dask") is json


def test_require_names_the_extra_when_missing():
    with pytest.raises(MissingExtraError, match=r"pip install 'safetyml\[dask\]'") as info:
        require("safetyml_no_such_module.sub", "dask")
    assert isinstance(info.value, SafetymlError) and isinstance(info.value, ImportError)


def test_ensure_checks_without_importing():
    ensure("bentoml", "serve")  # installed with the dev extra: no error
    with pytest.raises(MissingExtraError, match=r"pip install 'safetyml\[serve\]'"):
        ensure("safetyml_no_such_module", "serve")


def test_require_does_not_blame_the_extra_for_a_broken_module(tmp_path, monkeypatch):
    (tmp_path / "present_but_broken.py").write_text("import safetyml_missing_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("present_but_broken", "serve")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "safetyml_missing_dependency_of_it"


# ------------------------------------------------------------------------------------------ the bento


def test_bento_requirements_are_current_and_pinned_by_constraints():
    tool = load_tool()
    on_disk = (ROOT / "serving" / "requirements.txt").read_text()
    assert on_disk == tool.render(), "serving/requirements.txt is out of date: run `make bento-requirements`"
    pins = set(tool.read_pins().values())
    lines = [line for line in on_disk.splitlines() if line and not line.startswith("#")]
    assert set(lines) <= pins, f"not in constraints.txt: {sorted(set(lines) - pins)}"
    names = {canonicalize_name(Requirement(line).name) for line in lines}
    assert declared("serve") <= names  # every runtime and serve dependency, at its pin
    assert {"jinja2", "lightgbm", "bentoml", "starlette"} <= names
    assert not names & {"pytest", "hypothesis", "ruff", "shap", "dask", "safetyml"}


def test_bento_requirements_follow_a_changed_pin(tmp_path):
    changed = tmp_path / "constraints.txt"
    changed.write_text((ROOT / "constraints.txt").read_text().replace("lightgbm==", "lightgbm==0.0.1+x#"))
    text = load_tool().render(constraints=changed)
    assert "\nlightgbm==0.0.1+x\n" in text and "\nlightgbm==4" not in text


def test_bentofile_installs_the_generated_requirements_and_libgomp():
    config = yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())
    assert (ROOT / config["python"]["requirements_txt"]).resolve() == ROOT / "serving" / "requirements.txt"
    assert "packages" not in config["python"], "list packages in pyproject, not by hand in the bentofile"
    assert "libgomp1" in config["docker"]["system_packages"]


@pytest.fixture
def without(monkeypatch):
    """Make ``ensure`` see the given top-level modules as not installed."""
    import importlib.util

    real = importlib.util.find_spec

    def hide(*modules: str) -> None:
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a)
        )

    return hide


def test_serve_without_the_serve_extra_names_it(without, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    monkeypatch.delenv("SAFETYML_API_TOKEN", raising=False)
    without("bentoml")
    result = CliRunner().invoke(app, ["serve", "--port", "3999"])
    assert result.exit_code == 2
    assert "pip install 'safetyml[serve]'" in result.output


def test_score_file_on_dask_without_the_dask_extra_names_it(without, tmp_path):
    from safetyml.batch.score_file import score_file

    (tmp_path / "in.parquet").write_bytes(b"")
    without("distributed")
    with pytest.raises(MissingExtraError, match=r"safetyml\[dask\]"):
        score_file("incident_risk", tmp_path / "in.parquet", tmp_path / "out.parquet", engine="dask")
