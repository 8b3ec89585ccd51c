"""Config as code per environment (DESIGN.md 2.2, 2.15): `vmx_apply --environment` or the file's
own `environment:`, `vmx_export --environment`, promotion from one environment to another, and the
commands' `--environment` / `--workspace` options. Run on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from psycopg.conninfo import make_conninfo

from connections.config_export import config_export, config_export_yaml
from connections.config_file import SECRET_MASK, ConfigFileError, config_apply, config_parse
from connections.models import AIResource, APIKey, Connection, Environment, PricingEntry, Workspace
from connections.services import (
    ModelEntrySpec,
    connection_save,
    environment_get_or_create,
    resource_save,
)
from gateway.audit.store import rows_write

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]

DEV = """
connections:
  - name: main
    provider: openai
    config: {apiKey: sk-dev-secret-0001, baseURL: https://api.openai.com/v1}
resources:
  - name: default
    model: {connection: main, model: gpt-4.1-mini}
apiKeys:
  - name: ci
    resources: [default]
"""

PRICING = """
pricing:
  - {model: gpt-4.1, input: 2, output: 8}
"""


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


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def env(label: str) -> Environment:
    workspace, name = label.split("/")
    return Environment.objects.get(workspace__name=workspace, name=name)


def names(model: type, label: str) -> list[str]:
    return sorted(model.objects.filter(environment=env(label)).values_list("name", flat=True))  # type: ignore[attr-defined]


def state() -> list[tuple[str, ...]]:
    """Everything a refused file must leave as it was."""
    rows: list[tuple[str, ...]] = [("ws", w) for w in Workspace.objects.values_list("name", flat=True)]
    rows += [("env", e.label) for e in Environment.objects.select_related("workspace")]
    for model in (Connection, AIResource, APIKey):
        rows += [
            (model.__name__, str(e), n, str(u))
            for e, n, u in model.objects.values_list("environment", "name", "updated_at")
        ]
    rows += [("price", m) for m in PricingEntry.objects.values_list("model", flat=True)]
    return sorted(rows)


# -- where a file goes ---------------------------------------------------------------------------


def test_flag_creates_the_workspace_and_environment_and_reports_it(tmp_path):
    output = apply(write(tmp_path, DEV), "--environment", "acme/dev")
    lines = output.splitlines()
    assert lines[:2] == ["workspace acme: created", "environment acme/dev: created"]
    assert "connection main: created" in lines and "resource default: created" in lines
    assert names(Connection, "acme/dev") == ["main"]
    assert names(APIKey, "acme/dev") == ["ci"]
    # default/default holds nothing of it
    assert names(Connection, "default/default") == [] and names(AIResource, "default/default") == []
    # again: the environment is there, nothing changes
    again = apply(write(tmp_path, DEV), "--environment", "acme/dev").splitlines()
    assert again[0] == "environment acme/dev: unchanged" and again[-1] == "nothing changed"
    # a second environment of the same workspace: only the environment is new
    third = apply(write(tmp_path, DEV), "--environment", "acme/prod").splitlines()
    assert third[0] == "environment acme/prod: created" and "workspace acme: created" not in third


def test_the_file_names_its_own_environment(tmp_path):
    output = apply(write(tmp_path, "environment: acme/prod\n" + DEV))
    assert output.splitlines()[:2] == ["workspace acme: created", "environment acme/prod: created"]
    assert names(AIResource, "acme/prod") == ["default"]
    assert "nothing changed" in apply(write(tmp_path, "environment: acme/prod\n" + DEV))


def test_the_flag_wins_over_the_file_and_says_so(tmp_path):
    output = apply(write(tmp_path, "environment: acme/dev\n" + DEV), "--environment", "acme/prod")
    assert output.splitlines()[0] == "environment: --environment acme/prod wins over the file's environment acme/dev"
    assert "environment acme/prod: created" in output
    assert names(Connection, "acme/prod") == ["main"]
    # the file's environment was not made
    assert not Environment.objects.filter(name="dev").exists()
    # the same environment in both: nothing to say
    same = apply(write(tmp_path, "environment: acme/prod\n" + DEV), "--environment", "acme/prod")
    assert "wins over" not in same


def test_a_file_without_environment_is_default_defaults_as_before(tmp_path):
    output = apply(write(tmp_path, DEV + PRICING))
    key_line = next(line for line in output.splitlines() if line.startswith("api key ci: vmx-"))
    assert output == (
        "connection main: created\nresource default: created\napi key ci: created\npricing gpt-4.1: created\n"
        f"{key_line}\n"
    )
    assert names(Connection, "default/default") == ["main"]
    assert Workspace.objects.count() == 1 and Environment.objects.count() == 1
    assert apply(write(tmp_path, DEV + PRICING)) == (
        "connection main: unchanged\nresource default: unchanged\napi key ci: unchanged\n"
        "pricing gpt-4.1: unchanged\nnothing changed\n"
    )


def test_same_names_live_apart_in_each_environment(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/dev")
    apply(write(tmp_path, DEV.replace("sk-dev-secret-0001", "sk-prod-secret-0002")), "--environment", "acme/prod")
    apply(write(tmp_path, DEV.replace("gpt-4.1-mini", "gpt-4o")))
    assert Connection.objects.filter(name="main").count() == 3
    assert Connection.objects.get(environment=env("acme/dev")).secrets_get()["apiKey"] == "sk-dev-secret-0001"
    assert Connection.objects.get(environment=env("acme/prod")).secrets_get()["apiKey"] == "sk-prod-secret-0002"
    models = {
        r.environment.label: r.model_entries.get().model
        for r in AIResource.objects.select_related("environment__workspace")
    }
    assert models == {"acme/dev": "gpt-4.1-mini", "acme/prod": "gpt-4.1-mini", "default/default": "gpt-4o"}


# -- prune ----------------------------------------------------------------------------------------

TWO = (
    DEV
    + """
  - name: ops
    resources: "*"
"""
)


def test_prune_deletes_only_in_the_target_environment(tmp_path):
    for label in ("acme/dev", "acme/prod"):
        apply(write(tmp_path, TWO), "--environment", label)
    apply(write(tmp_path, TWO + PRICING))
    smaller = """
    connections:
      - {name: main, provider: openai, config: {apiKey: sk-dev-secret-0001}}
    resources: []
    apiKeys: []
    """
    output = apply(write(tmp_path, smaller), "--environment", "acme/dev", "--prune")
    assert "api key ci: deleted" in output and "api key ops: deleted" in output
    assert "resource default: deleted" in output
    assert "pricing" not in output  # prices are global: an environment's prune leaves them
    assert names(APIKey, "acme/dev") == [] and names(AIResource, "acme/dev") == []
    assert names(Connection, "acme/dev") == ["main"]
    for label in ("acme/prod", "default/default"):
        assert names(APIKey, label) == ["ci", "ops"] and names(AIResource, label) == ["default"]
    assert list(PricingEntry.objects.values_list("model", flat=True)) == ["gpt-4.1"]


def test_an_environments_prune_needs_no_pricing_section(tmp_path):
    apply(write(tmp_path, TWO + PRICING))
    apply(write(tmp_path, TWO), "--environment", "acme/dev")
    # A file without an environment must say `pricing: []` to prune prices; an environment's never.
    output = apply(write(tmp_path, DEV), "--environment", "acme/dev", "--prune")
    assert output.splitlines() == ["environment acme/dev: unchanged", *_unchanged(DEV), "api key ops: deleted"]
    with pytest.raises(CommandError, match=r"write `pricing: \[\]` to delete them all"):
        apply(write(tmp_path, DEV), "--prune")


def _unchanged(text: str) -> list[str]:
    return ["connection main: unchanged", "resource default: unchanged", "api key ci: unchanged"]


# -- pricing is global ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("environment: acme/prod\n" + DEV + PRICING, ()),
        (DEV + PRICING, ("--environment", "acme/prod")),
        (DEV + PRICING, ("--environment", "default/default")),
        ("environment: acme/prod\n" + DEV + "pricing: []\n", ()),
    ],
)
def test_an_environments_file_with_pricing_is_refused_whole(tmp_path, text, args):
    apply(write(tmp_path, "pricing:\n  - {model: gpt-4o, input: 1, output: 2}\n"))
    before = state()
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, text), *args, *(("--prune",) if "[]" in text else ()))
    assert "pricing: prices are global; apply them in a file without an environment" in str(info.value)
    assert "nothing was changed" in str(info.value)
    assert state() == before  # no workspace, environment, object or price was made or deleted


def test_the_api_can_refuse_pricing_for_default_default():
    doc = config_parse(yaml.safe_load(PRICING))
    with pytest.raises(ConfigFileError) as info:
        config_apply(doc, pricing_allowed=False)
    assert info.value.problems == ["pricing: prices are global; apply them in a file without an environment"]
    assert not PricingEntry.objects.exists()
    # the same document where nothing names an environment
    assert config_apply(doc).lines == ["pricing gpt-4.1: created"]


# -- references resolve inside the environment -------------------------------------------------------


def test_another_environments_objects_are_as_ones_that_exist_nowhere(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/prod")
    connection_save(name="shared", provider="mock", config={})  # default/default's
    resource_save(name="fast", models=[ModelEntrySpec(connection="shared")])
    text = """
    resources:
      - {name: r1, model: {connection: main, model: m}}
      - {name: r2, model: {connection: nowhere, model: m}}
      - {name: r3, model: {connection: shared, model: m}}
    apiKeys:
      - {name: k, resources: [fast]}
    """
    apply(write(tmp_path, "connections: []\n"), "--environment", "acme/dev")
    before = state()
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, text), "--environment", "acme/dev")
    message = str(info.value)
    assert "resources[0].model.connection: no connection 'main'" in message  # acme/prod's
    assert "resources[1].model.connection: no connection 'nowhere'" in message
    assert "resources[2].model.connection: no connection 'shared'" in message  # default/default's
    assert "apiKeys[0].resources[0]: no resource 'fast'" in message
    assert state() == before
    # default/default cannot reach acme/prod's either
    with pytest.raises(CommandError, match=r"resources\[0\]\.model\.connection: no connection 'main'"):
        apply(write(tmp_path, "resources:\n  - {name: r1, model: {connection: main, model: m}}\n"))


# -- export and promotion ------------------------------------------------------------------------


def test_export_of_an_environment_names_it_and_holds_no_prices(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/dev")
    apply(write(tmp_path, TWO + PRICING))
    data = yaml.safe_load(export("--environment", "acme/dev"))
    assert list(data) == ["environment", "connections", "resources", "apiKeys"]
    assert data["environment"] == "acme/dev"
    assert [k["name"] for k in data["apiKeys"]] == ["ci"]  # not default/default's `ops`
    assert data["connections"][0]["config"]["apiKey"] == SECRET_MASK
    # without the flag: default/default and the prices, no environment, as before
    flat = yaml.safe_load(export())
    assert list(flat) == ["connections", "resources", "apiKeys", "pricing"]
    assert [k["name"] for k in flat["apiKeys"]] == ["ci", "ops"]
    assert config_export() == flat
    # applied back where it came from, the environment's export changes nothing
    assert apply(write(tmp_path, export("--environment", "acme/dev"))).splitlines() == [
        "environment acme/dev: unchanged",
        *_unchanged(DEV),
        "nothing changed",
    ]


def test_export_of_an_unknown_or_malformed_environment_names_the_flag():
    with pytest.raises(CommandError, match=r"--environment 'acme/prod': no environment 'prod' in workspace 'acme'"):
        export("--environment", "acme/prod")
    with pytest.raises(CommandError, match=r"--environment 'acme': write it as workspace/environment"):
        export("--environment", "acme")


def test_promoting_dev_to_prod_keeps_prods_secrets(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/dev")
    prod = DEV.replace("sk-dev-secret-0001", "sk-prod-secret-0002").replace("gpt-4.1-mini", "gpt-4o")
    apply(write(tmp_path, prod), "--environment", "acme/prod")
    prod_key = APIKey.objects.get(environment=env("acme/prod"), name="ci").digest
    # dev gains a fallback and a limit; the export carries them, masked
    resource_save(
        name="default",
        models=[ModelEntrySpec(connection="main", model="gpt-4.1-mini"), ModelEntrySpec(connection="main", model="o4")],
        environment=env("acme/dev"),
    )
    exported = write(tmp_path, export("--environment", "acme/dev"), "dev.yaml")
    assert "sk-dev-secret" not in exported.read_text()

    output = apply(exported, "--environment", "acme/prod")
    assert output.splitlines()[:2] == [
        "environment: --environment acme/prod wins over the file's environment acme/dev",
        "environment acme/prod: unchanged",
    ]
    assert "resource default: updated" in output
    main = Connection.objects.get(environment=env("acme/prod"), name="main")
    assert main.secrets_get() == {"apiKey": "sk-prod-secret-0002"}  # the target's, never dev's
    entries = AIResource.objects.get(environment=env("acme/prod"), name="default").model_entries.all()
    assert [(e.connection.environment.label, e.model) for e in entries] == [
        ("acme/prod", "gpt-4.1-mini"),
        ("acme/prod", "o4"),
    ]
    assert APIKey.objects.get(environment=env("acme/prod"), name="ci").digest == prod_key  # keeps its value
    # dev is untouched, and prod now exports as dev did (but for its name)
    assert Connection.objects.get(environment=env("acme/dev")).secrets_get() == {"apiKey": "sk-dev-secret-0001"}
    promoted = yaml.safe_load(export("--environment", "acme/prod"))
    assert {**promoted, "environment": "acme/dev"} == yaml.safe_load(exported.read_text())


def test_promoting_a_connection_new_in_the_target_needs_its_secret(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/dev")
    exported = write(tmp_path, export("--environment", "acme/dev"), "dev.yaml")
    before = state()
    with pytest.raises(CommandError) as info:
        apply(exported, "--environment", "acme/prod")
    assert (
        "connections[0].config.apiKey: is the export mask '********', but connection 'main' has no stored value "
        "to keep; give the real value"
    ) in str(info.value)
    assert state() == before  # acme/prod was not created


def test_a_masked_secret_does_not_follow_a_changed_address_into_the_target(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/dev")
    apply(
        write(tmp_path, DEV.replace("https://api.openai.com/v1", "https://proxy.example/v1")),
        "--environment",
        "acme/prod",
    )
    with pytest.raises(CommandError, match=r"connections\[0\]\.config\.apiKey: is the export mask .* address"):
        apply(write(tmp_path, export("--environment", "acme/dev"), "dev.yaml"), "--environment", "acme/prod")


def test_python_interface_for_the_api(tmp_path):
    """What the management API calls: an `Environment` wins over the document's own."""
    target, _ = environment_get_or_create(label="acme/prod")
    doc = config_parse(yaml.safe_load("environment: acme/dev\n" + DEV))
    assert doc.environment == "acme/dev"
    report = config_apply(doc, environment=target, dry_run=True)
    assert (report.environment, report.overridden) == ("acme/prod", "acme/dev")
    assert report.by_section()["connections"]["created"] == ["main"]
    assert not Connection.objects.exists()  # a dry run
    report = config_apply(doc, environment=target)
    assert names(Connection, "acme/prod") == ["main"] and not Environment.objects.filter(name="dev").exists()
    exported = config_export(environment=target)
    assert exported["environment"] == "acme/prod" and "pricing" not in exported
    assert config_export_yaml(environment=target).count("environment: acme/prod") == 1
    # a dry run of a document naming a new environment creates nothing
    doc = config_parse(yaml.safe_load("environment: beta/qa\n" + DEV))
    assert config_apply(doc, dry_run=True).lines[:2] == ["workspace beta: created", "environment beta/qa: created"]
    assert not Workspace.objects.filter(name="beta").exists()


# -- bad targets -----------------------------------------------------------------------------------

UUID_NAME = "3f2b8c1e-9d4a-4f6b-8e2c-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("acme", "--environment 'acme': write it as workspace/environment, e.g. acme/prod"),
        ("acme/prod/x", "--environment 'acme/prod/x': write it as workspace/environment"),
        ("Acme/Prod", "--environment 'Acme/Prod': workspace 'Acme': use 1 to 63 lower-case letters, digits and -"),
        (f"{UUID_NAME}/prod", f"workspace '{UUID_NAME}': must not be shaped like a UUID"),
        (f"acme/{UUID_NAME}", f"environment '{UUID_NAME}': must not be shaped like a UUID"),
        ("acme/", "--environment 'acme/': environment '': use 1 to 63"),
    ],
)
def test_a_bad_flag_names_it_and_changes_nothing(tmp_path, label, expected):
    before = state()
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, DEV), "--environment", label)
    assert expected in str(info.value)
    assert state() == before


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("environment: 42", "environment: write it as workspace/environment, e.g. acme/prod"),
        ("environment: acme", "environment: write it as workspace/environment"),
        ("environment: Acme/Prod", "environment: workspace 'Acme': use 1 to 63 lower-case letters"),
        (f"environment: acme/{UUID_NAME}", f"environment: environment '{UUID_NAME}': must not be shaped like a UUID"),
        ("environment:", "environment: write it as workspace/environment"),
        ("environment: [acme, prod]", "environment: write it as workspace/environment"),
    ],
)
def test_a_bad_environment_in_the_file_names_it_and_changes_nothing(tmp_path, line, expected):
    before = state()
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, f"{line}\n{DEV}"))
    assert expected in str(info.value) and "nothing was changed" in str(info.value)
    assert state() == before


# -- the other commands --------------------------------------------------------------------------


def test_create_api_key_in_an_environment(tmp_path):
    apply(write(tmp_path, DEV), "--environment", "acme/prod")
    connection_save(name="shared", provider="mock", config={})
    resource_save(name="fast", models=[ModelEntrySpec(connection="shared")])
    out, err = run("vmx_create_api_key", "deploy", "--resources", "default", "--environment", "acme/prod")
    key = APIKey.objects.get(name="deploy")
    assert key.environment == env("acme/prod") and key.digest == APIKey.digest_of(out.strip())
    assert "created API key 'deploy' in acme/prod" in err
    # the same name in default/default is another key; without the flag it goes there
    run("vmx_create_api_key", "deploy", "--all")
    assert APIKey.objects.get(name="deploy", environment=env("default/default")).all_resources
    # resources resolve inside the key's environment
    with pytest.raises(CommandError, match="no resource 'fast'"):
        run("vmx_create_api_key", "ci2", "--resources", "fast", "--environment", "acme/prod")
    with pytest.raises(CommandError, match="already exists in acme/prod"):
        run("vmx_create_api_key", "deploy", "--all", "--environment", "acme/prod")
    with pytest.raises(CommandError, match="--environment 'acme/qa': no environment 'qa' in workspace 'acme'"):
        run("vmx_create_api_key", "x", "--all", "--environment", "acme/qa")
    with pytest.raises(CommandError, match="--environment 'Acme/Prod': workspace 'Acme'"):
        run("vmx_create_api_key", "x", "--all", "--environment", "Acme/Prod")
    assert APIKey.objects.count() == 3


def test_check_connection_in_an_environment():
    prod, _ = environment_get_or_create(label="acme/prod")
    connection_save(name="offline", provider="mock", config={}, environment=prod)
    out, _ = run("vmx_check_connection", "offline", "--environment", "acme/prod")
    assert out.startswith("offline: ok")
    with pytest.raises(CommandError, match=r"^no connection 'offline'$"):
        run("vmx_check_connection", "offline")  # default/default has none
    with pytest.raises(CommandError, match="--environment 'acme': write it as"):
        run("vmx_check_connection", "offline", "--environment", "acme")


def _records() -> None:
    base = {
        "created_at": timezone.now(),
        "endpoint": "chat.completions",
        "status_code": 200,
        "duration_ms": 5.0,
        "model": "gpt-4.1",
    }
    rows_write(
        [
            {**base, "request_id": "req_dflt", "api_key": "ci", "resource": "default", "total_tokens": 10},
            {
                **base,
                "request_id": "req_prod",
                "workspace": "acme",
                "environment": "prod",
                "api_key": "ci",
                "resource": "default",
                "total_tokens": 30,
                "input_tokens": 30,
            },
            {
                **base,
                "request_id": "req_dev",
                "workspace": "acme",
                "environment": "dev",
                "api_key": "ci",
                "resource": "default",
                "total_tokens": 20,
                "input_tokens": 20,
            },
        ]
    )


def _jsonl(*args: str) -> list[dict[str, Any]]:
    out, _ = run("vmx_audit", "--format", "jsonl", *args)
    return [orjson.loads(line) for line in out.splitlines()]


def test_audit_shows_every_environment_unless_given_one():
    _records()
    every = _jsonl()
    assert {(r["request_id"], r["workspace"], r["environment"]) for r in every} == {
        ("req_dflt", "default", "default"),
        ("req_prod", "acme", "prod"),
        ("req_dev", "acme", "dev"),
    }
    assert [r["request_id"] for r in _jsonl("--environment", "acme/prod")] == ["req_prod"]
    assert {r["request_id"] for r in _jsonl("--workspace", "acme")} == {"req_prod", "req_dev"}
    assert [r["request_id"] for r in _jsonl("--environment", "default/default")] == ["req_dflt"]
    assert _jsonl("--environment", "gone/old") == []  # records may outlive their environment
    table, _ = run("vmx_audit")
    assert "environment" in table.splitlines()[0]
    assert any("acme/prod" in line and "req_prod" in line for line in table.splitlines())
    with pytest.raises(CommandError, match="--environment 'prod': write it as workspace/environment"):
        run("vmx_audit", "--environment", "prod")
    with pytest.raises(CommandError, match="--workspace 'Acme': use 1 to 63"):
        run("vmx_audit", "--workspace", "Acme")
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("vmx_audit", "--workspace", "acme", "--environment", "acme/prod")


def test_usage_by_environment_and_filtered():
    _records()
    out, _ = run("vmx_usage", "--by", "environment")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"acme/prod", "acme/dev", "default/default", "TOTAL"}
    assert rows["acme/prod"][7] == "30" and rows["TOTAL"][7] == "60"  # the total column
    out, _ = run("vmx_usage", "--environment", "acme/dev")
    assert out.splitlines()[-1].split()[7] == "20"
    out, _ = run("vmx_usage", "--workspace", "acme", "--by", "environment")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["acme/prod", "acme/dev", "TOTAL"]
    with pytest.raises(CommandError, match="--environment 'acme': write it as"):
        run("vmx_usage", "--environment", "acme")


# -- exit codes, from a real process ---------------------------------------------------------------


@pytest.fixture
def process_database(tmp_path: Path) -> Iterator[str]:
    """An empty database of the suite's backend for `manage.py` run as a process."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        yield f"sqlite:///{tmp_path / 'process.sqlite3'}"
        return
    params = {k.lower(): str(db[k]) for k in ("HOST", "PORT", "USER", "PASSWORD") if db.get(k)}
    name = f"vmx_cfg_{secrets.token_hex(4)}"
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    user = params.get("user", "") + (f":{params['password']}" if params.get("password") else "")
    yield f"postgres://{user + '@' if user else ''}{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}/{name}"
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_manage_py_exits_non_zero_for_a_bad_target(tmp_path, process_database):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VMX_", "DJANGO_", "DATABASE_"))}
    environ |= {
        "DATABASE_URL": process_database,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_SECRET_KEY": "config-tenancy-tests-secret-key-0123456789",
        "VMX_ENCRYPTION_KEY": "3q2wLtmXA9mD2DqS6s1sZbFq8oP1w0M3rM7Bq6J0x9E=",
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "manage.py", *args]
        return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=120)

    assert manage("migrate", "--no-input").returncode == 0
    good = write(tmp_path, DEV)
    bad_flag = manage("vmx_apply", str(good), "--environment", "acme")
    assert bad_flag.returncode != 0 and "--environment 'acme': write it as workspace/environment" in bad_flag.stderr
    bad_file = manage("vmx_apply", str(write(tmp_path, "environment: 42\n" + DEV, "bad.yaml")))
    assert bad_file.returncode != 0 and "environment: write it as workspace/environment" in bad_file.stderr
    priced = manage("vmx_apply", str(write(tmp_path, DEV + PRICING, "priced.yaml")), "--environment", "acme/prod")
    assert priced.returncode != 0 and "pricing: prices are global" in priced.stderr
    # nothing was made: the environment does not exist
    missing = manage("vmx_export", "--environment", "acme/prod")
    assert missing.returncode != 0 and "no environment 'prod' in workspace 'acme'" in missing.stderr
    applied = manage("vmx_apply", str(good), "--environment", "acme/prod")
    assert applied.returncode == 0 and applied.stdout.startswith(
        "workspace acme: created\nenvironment acme/prod: created\n"
    )
    exported = manage("vmx_export", "--environment", "acme/prod")
    assert exported.returncode == 0 and "environment: acme/prod" in exported.stdout
