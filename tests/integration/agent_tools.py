"""Real agent CLIs for end-to-end tests, installed from npm into `.tools/` (git-ignored).

Where npm is missing the tests that need them are skipped with a message, unless
`VMX_REQUIRE_E2E=1` (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.server import REPO

TOOLS = REPO / ".tools"
CODEX_PACKAGE = "@openai/codex@0.169.0"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code@2.1.332"


def _unavailable(reason: str) -> None:
    if os.environ.get("VMX_REQUIRE_E2E") == "1":
        pytest.fail(f"{reason} (VMX_REQUIRE_E2E=1 requires the end-to-end agent tests to run)")
    pytest.skip(reason)


def npm_tool(package: str, binary: str) -> Path:
    """The path of `binary` from `package`, installing it on first use."""
    prefix = TOOLS / package.lstrip("@").split("@")[0].replace("/", "-")
    path = prefix / "node_modules" / ".bin" / binary
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        _unavailable(f"npm is not installed, so {package} cannot be installed for the end-to-end test")
    prefix.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(npm), "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", package],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        _unavailable(f"npm install {package} failed: {result.stderr.strip()[-500:]}")
    return path
