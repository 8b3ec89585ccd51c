"""`vmx_apply` / `vmx_export`: idempotent upserts, whole-file rejection with paths, masking."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from connections.config_file import SECRET_MASK
from connections.models import AIResource, APIKey, Connection, ModelEntry

pytestmark = pytest.mark.django_db

FULL = """
connections:
  - name: openai-main
    provider: openai
    description: Production key
    config:
      apiKey: ${OPENAI_API_KEY}
      baseURL: https://api.openai.com/v1
      organization: org-123
  - name: openai-backup
    provider: openai
    config: {apiKey: ${OPENAI_BACKUP_KEY}}
resources:
  - name: default
    model: {connection: openai-main, model: gpt-4.1, maxRetries: 2, timeoutMs: 60000}
    fallbackModels:
      - {connection: openai-backup, model: gpt-4o-mini, maxRetries: 0}
    defaultArgs: {temperature: 0.2}
  - name: plain
    model: {connection: openai-backup, model: o4-mini, reasoning: false}
apiKeys:
  - name: ci
    key: vmx-ci-0123456789abcdef
    resources: [default]
  - name: ops
    resources: "*"
"""


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-main-secret-0001")
    monkeypatch.setenv("OPENAI_BACKUP_KEY", "sk-backup-secret-0002")


def write(tmp_path: Path, text: str, name: str = "vmx.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def apply(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("vmx_apply", str(path), *args, stdout=out)
    return out.getvalue()


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("vmx_export", *args, stdout=out)
    return out.getvalue()


def test_apply_creates_everything_the_file_describes(tmp_path, secrets_env):
    output = apply(write(tmp_path, FULL))
    assert "connection openai-main: created" in output
    assert "resource default: created" in output
    # the generated key for `ops` is printed once; the explicit one for `ci` is not echoed
    assert "api key ops: vmx-" in output and "vmx-ci-0123456789abcdef" not in output

    main = Connection.objects.get(name="openai-main")
    assert main.description == "Production key"
    assert main.config == {"baseURL": "https://api.openai.com/v1", "organization": "org-123"}
    assert main.secrets_get() == {"apiKey": "sk-main-secret-0001"}
    entries = list(ModelEntry.objects.filter(resource__name="default").select_related("connection"))
    assert [(e.position, e.connection.name, e.model, e.max_retries, e.timeout_ms) for e in entries] == [
        (0, "openai-main", "gpt-4.1", 2, 60000),
        (1, "openai-backup", "gpt-4o-mini", 0, 600000),
    ]
    assert AIResource.objects.get(name="default").default_args == {"temperature": 0.2}
    assert ModelEntry.objects.get(resource__name="plain").reasoning is False
    ci = APIKey.objects.get(name="ci")
    assert ci.digest == APIKey.digest_of("vmx-ci-0123456789abcdef")
    assert list(ci.resources.values_list("name", flat=True)) == ["default"]
    assert APIKey.objects.get(name="ops").all_resources


def test_apply_twice_changes_nothing_and_keeps_generated_keys(tmp_path, secrets_env):
    path = write(tmp_path, FULL)
    apply(path)
    digest = APIKey.objects.get(name="ops").digest
    output = apply(path)
    assert "nothing changed" in output
    assert all(line.endswith("unchanged") for line in output.splitlines()[:-1])
    assert APIKey.objects.get(name="ops").digest == digest


def test_apply_updates_in_place(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    changed = FULL.replace("maxRetries: 2", "maxRetries: 5").replace("Production key", "Prod")
    output = apply(write(tmp_path, changed))
    assert "resource default: updated" in output and "connection openai-main: updated" in output
    assert ModelEntry.objects.get(resource__name="default", position=0).max_retries == 5


def test_export_masks_secrets_and_round_trips_unchanged(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    exported = export()
    assert "sk-main-secret" not in exported and "sk-backup-secret" not in exported
    data = yaml.safe_load(exported)
    main = next(c for c in data["connections"] if c["name"] == "openai-main")
    assert main["config"]["apiKey"] == SECRET_MASK
    assert next(k for k in data["apiKeys"] if k["name"] == "ops")["resources"] == "*"
    # Applying the masked export keeps every stored secret and changes nothing.
    output = apply(write(tmp_path, exported, "export.yaml"))
    assert "nothing changed" in output
    assert Connection.objects.get(name="openai-main").secrets_get() == {"apiKey": "sk-main-secret-0001"}


def test_export_with_secrets_rebuilds_the_same_configuration_elsewhere(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    out_file = tmp_path / "full.yaml"
    call_command("vmx_export", str(out_file), "--include-secrets", stdout=io.StringIO(), stderr=io.StringIO())
    assert "sk-main-secret-0001" in out_file.read_text()
    assert out_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    APIKey.objects.all().delete()
    AIResource.objects.all().delete()
    Connection.objects.all().delete()
    apply(out_file)
    assert Connection.objects.get(name="openai-backup").secrets_get() == {"apiKey": "sk-backup-secret-0002"}
    assert export() == export()  # stable output


def test_json_files_are_accepted(tmp_path, secrets_env):
    data = yaml.safe_load(FULL.replace("${OPENAI_BACKUP_KEY}", '"${OPENAI_BACKUP_KEY}"'))
    output = apply(write(tmp_path, json.dumps(data), "vmx.json"))
    assert "resource default: created" in output


def test_prune_deletes_what_the_file_does_not_list(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    smaller = """
    connections:
      - {name: openai-main, provider: openai, config: {apiKey: "${OPENAI_API_KEY}"}}
    resources:
      - {name: default, model: {connection: openai-main, model: gpt-4.1}}
    apiKeys:
      - {name: ci, resources: [default]}
    """
    output = apply(write(tmp_path, smaller), "--prune")
    assert "api key ops: deleted" in output and "resource plain: deleted" in output
    assert "connection openai-backup: deleted" in output
    assert sorted(Connection.objects.values_list("name", flat=True)) == ["openai-main"]
    assert sorted(AIResource.objects.values_list("name", flat=True)) == ["default"]
    assert sorted(APIKey.objects.values_list("name", flat=True)) == ["ci"]


def test_without_prune_a_file_may_refer_to_existing_objects(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    output = apply(write(tmp_path, "resources:\n  - {name: extra, model: {connection: openai-main, model: gpt-4o}}\n"))
    assert "resource extra: created" in output
    assert Connection.objects.count() == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            FULL.replace("connection: openai-backup, model: gpt-4o-mini", "connection: x, model: gpt-4o-mini"),
            "resources[0].fallbackModels[0].connection: no connection 'x'",
        ),
        (
            FULL.replace("provider: openai\n    description", "provider: gemini\n    description"),
            "connections[0].provider: unknown provider 'gemini'",
        ),
        (FULL.replace("maxRetries: 2", "maxRetries: 11"), "resources[0].model.maxRetries: must be between 0 and 10"),
        (FULL.replace("maxRetries: 2", "maxRetries: two"), "resources[0].model.maxRetries: must be an integer"),
        (FULL.replace("name: plain", "name: default"), "resources[1].name: duplicate resource name 'default'"),
        (
            FULL.replace("name: openai-backup\n", "name: openai-main\n"),
            "connections[1].name: duplicate connection name",
        ),
        (
            FULL.replace("fallbackModels:", "fallbackModel:"),
            "resources[0].fallbackModel: unknown key (did you mean 'fallbackModels'?)",
        ),
        (FULL.replace("resources: [default]", "resources: [nope]"), "apiKeys[0].resources[0]: no resource 'nope'"),
        (
            FULL.replace("${OPENAI_BACKUP_KEY}", "${NOT_SET_ANYWHERE}"),
            "connections[1].config.apiKey: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            FULL.replace("baseURL: https://api.openai.com/v1", "baseURL: nope"),
            "connections[0].config.baseURL: must be an http(s) URL",
        ),
        (FULL.replace("key: vmx-ci-0123456789abcdef", "key: short"), "apiKeys[0].key: must be at least 20 characters"),
        (FULL.replace("name: plain", "name: 'bad name'"), "resources[1].name: Use letters, digits"),
        (
            FULL.replace("model: {connection: openai-backup, model: o4-mini, reasoning: false}", "description: x"),
            "resources[1].model: required",
        ),
        ("connections: [\n  {name: a", "line 2"),
        ("- just\n- a list\n", "(top level): must be a mapping"),
        (
            FULL.replace("description: Production key", 'description: "Production\\0key"'),
            "connections[0].description: must not contain NUL characters",
        ),
    ],
)
def test_invalid_files_change_nothing_and_name_the_path(tmp_path, secrets_env, text, expected):
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, text))
    assert expected in str(info.value)
    assert "nothing was changed" in str(info.value)
    assert not Connection.objects.exists() and not AIResource.objects.exists() and not APIKey.objects.exists()


def test_a_failure_late_in_the_file_rolls_back_earlier_writes(tmp_path, secrets_env):
    apply(write(tmp_path, FULL))
    # The first change is fine; the key value clash only shows when saving the second key.
    clash = (
        FULL.replace("maxRetries: 2", "maxRetries: 3")
        + "  - {name: dup, key: vmx-ci-0123456789abcdef, resources: '*'}\n"
    )
    with pytest.raises(CommandError, match="apiKeys"):
        apply(write(tmp_path, clash))
    assert ModelEntry.objects.get(resource__name="default", position=0).max_retries == 2


def test_masked_secret_for_a_new_connection_is_rejected(tmp_path):
    text = f"connections:\n  - {{name: fresh, provider: openai, config: {{apiKey: '{SECRET_MASK}'}}}}\n"
    with pytest.raises(CommandError, match=r"connections\[0\]\.config\.apiKey: is the export mask"):
        apply(write(tmp_path, text))


def test_env_default_and_dollar_escape(tmp_path, monkeypatch):
    monkeypatch.delenv("MISSING_BASE", raising=False)
    text = """
    connections:
      - {name: oa, provider: openai, description: "costs $$5", config: {apiKey: "${MISSING_KEY:-sk-fallback-000}", baseURL: "${MISSING_BASE:-http://127.0.0.1:1/v1}"}}
    """
    apply(write(tmp_path, text))
    conn = Connection.objects.get(name="oa")
    assert conn.description == "costs $5"
    assert conn.config["baseURL"] == "http://127.0.0.1:1/v1"
    assert conn.secrets_get()["apiKey"] == "sk-fallback-000"


PRICING = """
pricing:
  - {model: gpt-4.1, input: 2.00, cachedInput: 0.50, output: 8.00}
  - {model: "my-finetune-*", input: 3, output: 12}
"""


def test_pricing_is_applied_exported_and_reapplied_unchanged(tmp_path, secrets_env):
    output = apply(write(tmp_path, FULL + PRICING))
    assert "pricing gpt-4.1: created" in output and "pricing my-finetune-*: created" in output
    exported = yaml.safe_load(export())
    assert exported["pricing"] == [
        {"model": "gpt-4.1", "input": 2, "cachedInput": 0.5, "output": 8},
        {"model": "my-finetune-*", "input": 3, "output": 12},
    ]
    again = apply(write(tmp_path, export(), "exported.yaml"))
    assert "pricing gpt-4.1: unchanged" in again and "created" not in again and "updated" not in again
    # The snapshot the gateway reads carries the prices.
    from connections.selectors import config_snapshot_build

    prices = config_snapshot_build().prices
    assert prices.price("my-finetune-7b").output == 12
    assert prices.price("gpt-4.1-2025-04-14").input == 2.0  # bundled snapshot id


def test_prune_removes_prices_the_file_does_not_list(tmp_path, secrets_env):
    apply(write(tmp_path, FULL + PRICING))
    # A file that leaves pricing out does not delete it silently: it must say `pricing: []`.
    with pytest.raises(CommandError, match="write `pricing: \\[\\]` to delete them all"):
        apply(write(tmp_path, FULL), "--prune")
    output = apply(write(tmp_path, FULL + "pricing: []\n"), "--prune")
    assert "pricing gpt-4.1: deleted" in output
    assert "pricing" not in yaml.safe_load(export())


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{model: gpt-4.1, input: -1, output: 8}", "pricing[0].input: must be a number >= 0"),
        ("{model: gpt-4.1, input: cheap, output: 8}", "pricing[0].input: must be an integer or float"),
        ("{model: gpt-4.1, input: 1}", "pricing[0].output: required"),
        ("{model: 'gpt *', input: 1, output: 1}", "pricing[0].model: An upstream model id"),
        ("{model: 'a*b*', input: 1, output: 1}", "pricing[0].model: An upstream model id"),
        ('{model: "gpt\\0", input: 1, output: 1}', "pricing[0].model: must not contain NUL characters"),
        ("{model: gpt-4.1, input: 0.0000001, output: 1}", "pricing[0].input: Ensure that there are no more than 6"),
        ("{model: gpt-4.1, input: 1, output: 1, currency: EUR}", "pricing[0].currency: unknown key"),
    ],
)
def test_invalid_prices_name_the_path(tmp_path, secrets_env, entry, expected):
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, FULL + f"pricing:\n  - {entry}\n"))
    assert expected in str(info.value)
    assert not AIResource.objects.exists()
