"""End to end with a real agent: the Codex CLI answering through the gateway (Responses API)."""

from __future__ import annotations

import subprocess

from tests.integration.agent_tools import CODEX_PACKAGE, npm_tool
from tests.integration.conftest import ALL_KEY

CODEX_CONFIG = """
model = "default"
model_provider = "vmx"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
# Each of these reaches for the network at startup; this test stays on loopback.
plugins = false
remote_plugin = false
apps = false
shell_snapshot = false
unbounded_connection_retries = false

[model_providers.vmx]
name = "VM-X gateway"
base_url = "{base_url}/v1"
env_key = "VMX_KEY"
wire_api = "responses"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
http_headers = {{ "x-vmx-correlation-id" = "codex-e2e", "x-vmx-metadata-client" = "codex" }}
"""


def test_codex_exec_answers_through_the_gateway(gateway, upstream, tmp_path):
    codex = npm_tool(CODEX_PACKAGE, "codex")
    home, workdir = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (home / "config.toml").write_text(CODEX_CONFIG.format(base_url=gateway.base_url))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CODEX_HOME": str(home), "VMX_KEY": ALL_KEY}
    result = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "--ephemeral", "--color", "never", "Say hi to the gateway"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "echo: Say hi to the gateway" in result.stdout

    [sent] = upstream.calls("/a/v1/responses")
    body = sent.json()
    assert body["model"] == "gpt-4.1"  # the resource's upstream model, not the client's name for it
    assert body["stream"] is True and body["store"] is False
    assert {tool.get("name") for tool in body["tools"]} >= {"exec_command"}  # Codex's tools reach OpenAI untouched
    assert sent.headers["authorization"] == "Bearer sk-upstream-up-a"

    # Codex sends `Accept: text/event-stream` and our header; the request is audited as a stream.
    record = gateway.audit_by(correlation_id="codex-e2e")
    assert record["endpoint"] == "responses" and record["stream"] is True
    assert record["metadata"] == {"client": "codex"}
    assert record["usage"]["total_tokens"] == 50
