"""Runtime dependencies: requirements.txt is the one list, pyproject.toml declares exactly it, and
the code that runs in production imports nothing that only the development requirements install."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("connections", "gateway", "vmx_project")


def requirement_lines(path: Path) -> list[str]:
    """What setuptools' `file:` directive reads from a requirements file: every line that is not
    blank or a comment, each taken as one requirement."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def declared_dependencies() -> list[str]:
    """pyproject.toml's runtime dependencies, as a build of the package reads them."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    if "dependencies" in project:
        return list(project["dependencies"])
    assert "dependencies" in project.get("dynamic", []), "pyproject.toml declares no dependencies"
    files = pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    return [line for name in files for line in requirement_lines(REPO / name)]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(REPO / "requirements.txt")]


def test_pyproject_declares_exactly_the_runtime_requirements():
    declared = sorted(str(Requirement(line)) for line in declared_dependencies())
    assert declared == sorted(str(requirement) for requirement in runtime_requirements())


def test_every_runtime_requirement_is_one_exact_pin():
    # Each line becomes a Requirement above (pip options such as -r or --hash would fail the build);
    # one `==` each keeps every install on the same code.
    for requirement in runtime_requirements():
        assert [spec.operator for spec in requirement.specifier] == ["=="], str(requirement)
        assert requirement.url is None, str(requirement)


def _installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions these requirements install, with their own dependencies."""
    found: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        extras = requirement.extras or {""}
        for line in metadata.requires(requirement.name) or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                pending.append(dependency)
    return found


def _imported_top_level_modules() -> dict[str, str]:
    """Third-party top-level modules the runtime packages import, each with one file importing it."""
    modules: dict[str, str] = {}
    for package in RUNTIME_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in RUNTIME_PACKAGES:
                        modules.setdefault(top, str(path.relative_to(REPO)))
    return modules


def test_runtime_code_imports_only_what_the_runtime_requirements_install():
    installed = _installed_closure(runtime_requirements())
    distributions = metadata.packages_distributions()
    missing = {
        module: where
        for module, where in _imported_top_level_modules().items()
        if not any(canonicalize_name(d) in installed for d in distributions.get(module, []))
    }
    assert missing == {}, "imported by runtime code but not installed by requirements.txt"
