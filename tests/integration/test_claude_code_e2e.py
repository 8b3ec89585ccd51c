"""End to end with a real agent: Claude Code answering through /v1/messages and OpenAI Responses."""

from __future__ import annotations

import subprocess

from tests.integration.agent_tools import CLAUDE_CODE_PACKAGE, npm_tool
from tests.integration.conftest import ALL_KEY


def test_claude_code_prints_the_answer_through_the_gateway(gateway, upstream, tmp_path):
    claude = npm_tool(CLAUDE_CODE_PACKAGE, "claude")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": gateway.base_url,
        "ANTHROPIC_API_KEY": ALL_KEY,
        "ANTHROPIC_CUSTOM_HEADERS": "x-vmx-correlation-id: claude-code-e2e",
        # Stay on loopback: no telemetry, error reports, update checks or other side traffic.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "API_TIMEOUT_MS": "60000",
    }
    result = subprocess.run(
        [str(claude), "-p", "Say hi to the gateway", "--model", "claude-sonnet-4-6"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert "Say hi to the gateway" in result.stdout  # the fake upstream echoes the last user text

    [sent] = upstream.calls("/a/v1/responses")
    body = sent.json()
    assert body["model"] == "gpt-4.1" and body["stream"] is True and body["store"] is False
    # Adaptive thinking with display omitted and output_config.effort: reasoning without a summary.
    assert body["reasoning"] == {"effort": "high"}
    assert "reasoning.encrypted_content" in body["include"]
    assert len(body["tools"]) >= 10 and all(t["type"] == "function" and "strict" in t for t in body["tools"])
    assert "context_management" not in body and "metadata" not in body
    assert body["instructions"]  # the system blocks, cache_control dropped

    record = gateway.audit_by(correlation_id="claude-code-e2e")
    assert record["endpoint"] == "messages" and record["stream"] is True and record["status_code"] == 200
    assert record["resource"] == "claude-sonnet-4-6" and record["model"] == "gpt-4.1"
