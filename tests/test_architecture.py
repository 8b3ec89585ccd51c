"""The import contract (docs/architecture.md, "Imports"), as `make check` runs it with
import-linter: it holds on this tree, it names every room of `gateway`, and it fails when a
module breaks it (checked on a copy of the tree with forbidden imports written into it)."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import gateway

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("gateway", "connections", "vmx_project")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )


def _copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_first_contract_names_every_room_of_gateway_but_core_and_providers():
    rooms = {f"gateway.{module.name}" for module in pkgutil.iter_modules(gateway.__path__)}
    forbidden = set(_contracts()[0]["forbidden_modules"])
    assert rooms - {"gateway.core", "gateway.providers"} == forbidden


def test_the_contracts_hold_and_each_fails_when_broken(tmp_path):
    root = _copy(tmp_path)
    kept = _lint(root)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    breaks = {
        # (file, a line it gains): one per contract, in the contracts' order
        "connections/selectors.py": "from gateway.audit import entry as _audit_entry\n",
        "gateway/capacity/usage.py": "from gateway.v1 import renderers as _renderers\n",
        "gateway/converters/common.py": "from django.conf import settings as _settings\n",
    }
    for relative, line in breaks.items():
        path = root / relative
        path.write_text(path.read_text() + line)
    broken = _lint(root)
    assert broken.returncode != 0
    report = " ".join(broken.stdout.split())  # the report wraps long contract names
    for contract in _contracts():
        assert f"{contract['name']} BROKEN" in report, report
