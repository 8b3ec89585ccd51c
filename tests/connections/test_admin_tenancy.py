"""The admin under workspaces and roles (DESIGN.md 2.15), as each kind of user meets it: what they
see, what they may change, and that another tenant's object answers exactly as a deleted one."""

from __future__ import annotations

import html
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from connections.models import AIResource, APIKey, Connection, Environment, Membership, Workspace, environment_default
from connections.services import (
    CapacitySpec,
    ModelEntrySpec,
    api_key_save,
    capacity_entries_replace,
    connection_save,
    environment_get_or_create,
    membership_save,
    resource_save,
)
from gateway.capacity.policy import Estimate, Scope, counters_for
from gateway.capacity.stores import Charge, capacity_store
from gateway.core.limits import CapacityLimit
from gateway.models import AuditRecord, UpstreamRateLimit
from tests.connections.test_admin_security import inline_code
from tests.forms import form_defaults

pytestmark = pytest.mark.django_db

MODELS = {"connection": Connection, "airesource": AIResource, "apikey": APIKey}
MISSING_PK = 10**6
DEFAULT_PERMS = [
    f"{action}_{model}"
    for model in ("connection", "airesource", "apikey", "modelentry", "capacityentry")
    for action in ("view", "add", "change", "delete")
]


@dataclass
class Objects:
    environment: Environment
    connection: Connection
    resource: AIResource
    key: APIKey

    def of(self, model: str):
        return {"connection": self.connection, "airesource": self.resource, "apikey": self.key}[model]


@dataclass
class World:
    default: Objects
    dev: Objects
    prod: Objects
    beta: Objects
    acme: Workspace
    owner: User
    editor: User
    viewer: User
    staff: User
    root: User

    def labels(self) -> dict[str, Objects]:
        return {o.environment.label: o for o in (self.default, self.dev, self.prod, self.beta)}


def _objects(environment: Environment) -> Objects:
    connection, _ = connection_save(name="main", provider="mock", config={}, environment=environment)
    resource, _ = resource_save(name="default", models=[ModelEntrySpec(connection="main")], environment=environment)
    key, _, _ = api_key_save(name="ci", resources=["default"], environment=environment)
    return Objects(environment, connection, resource, key)


@pytest.fixture
def world(django_user_model) -> World:
    """The same names in four environments; an owner, an editor and a viewer of `acme` (the last
    two limited to dev), a staff user with model permissions and no grant, a superuser."""
    environments = [environment_default()] + [
        environment_get_or_create(label=label)[0] for label in ("acme/dev", "acme/prod", "beta/main")
    ]
    default, dev, prod, beta = (_objects(environment) for environment in environments)
    acme = dev.environment.workspace
    users = {name: django_user_model.objects.create_user(name) for name in ("olga", "ed", "vera", "sam")}
    membership_save(workspace=acme, user=users["olga"], role="owner")
    membership_save(workspace=acme, user=users["ed"], role="editor", environments=["dev"])
    membership_save(workspace=acme, user=users["vera"], role="viewer", environments=["dev"])
    staff = users["sam"]
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(*Permission.objects.filter(codename__in=DEFAULT_PERMS))
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    return World(default, dev, prod, beta, acme, users["olga"], users["ed"], users["vera"], staff, root)


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(response) -> str:
    content: bytes = response.content
    return content.decode()


def change_url(obj) -> str:
    return f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"


def options(page: str, name: str) -> list[str]:
    """The values a <select name=...> offers (empty choice left out)."""
    match = re.search(rf'<select name="{re.escape(name)}"[^>]*>(.*?)</select>', page, re.S)
    assert match is not None, f"no select {name}"
    return [value for value in re.findall(r'<option value="([^"]*)"', match.group(1)) if value]


def submit(client: Client, url: str, **changes):
    """GET the form, change some fields, POST it back (as a browser would)."""
    data = {k: v for k, v in form_defaults(page_of(client.get(url))).items() if "__prefix__" not in k}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return client.post(url, data)


def errors(response) -> list[str]:
    return [html.unescape(e) for e in re.findall(r"errorlist[^>]*>(.*?)</ul>", page_of(response), re.S)]


def assert_as_missing(client: Client, url: str, obj, method: str = "get", data=None) -> None:
    """`obj` answers exactly as an object that does not exist (the admin's own answer to one)."""
    missing = url.replace(f"/{obj.pk}/", f"/{MISSING_PK}/")
    send = client.post if method == "post" else client.get
    hidden, absent = send(url, data or {}), send(missing, data or {})
    assert hidden.status_code == absent.status_code
    assert hidden.get("Location") == absent.get("Location")
    if hidden.status_code == 302:
        assert "Perhaps it was deleted?" in page_of(client.get(hidden["Location"]))


# -- Reading: changelists, columns, filters --------------------------------------------------------

VISIBLE = {
    "owner": ["acme/dev", "acme/prod"],
    "editor": ["acme/dev"],
    "viewer": ["acme/dev"],
    "staff": ["default/default"],
    "root": ["default/default", "acme/dev", "acme/prod", "beta/main"],
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", VISIBLE)
def test_changelists_show_only_the_environments_a_user_may_view(world, who, model):
    page = page_of(login(getattr(world, who)).get(f"/admin/connections/{model}/"))
    for label, objects in world.labels().items():
        assert (change_url(objects.of(model)) in page) == (label in VISIBLE[who]), label
        # The filters offer only what the user may view (never another tenant's names).
        assert (f"?environment={label.replace('/', '%2F')}" in page) == (label in VISIBLE[who])
    assert 'column-workspace_name"' in page and 'column-environment_name"' in page
    if who in ("editor", "viewer"):
        assert "acme/prod" not in page and "beta" not in page


def test_the_environment_filter_narrows_the_list(world):
    client = login(world.owner)
    page = page_of(client.get("/admin/connections/connection/", {"environment": "acme/prod"}))
    assert change_url(world.prod.connection) in page and change_url(world.dev.connection) not in page
    # A bare name within the chosen workspace, as the dashboard links.
    page = page_of(client.get("/admin/connections/connection/", {"workspace": "acme", "environment": "dev"}))
    assert change_url(world.dev.connection) in page and change_url(world.prod.connection) not in page
    # Another workspace's environment: nothing, as one that does not exist.
    page = page_of(client.get("/admin/connections/connection/", {"environment": "beta/main"}))
    assert change_url(world.beta.connection) not in page


def test_members_see_the_apps_their_role_reaches_in_the_index(world):
    page = page_of(login(world.viewer).get("/admin/"))
    for url in ("/admin/connections/connection/", "/admin/connections/workspace/", "/admin/gateway/auditrecord/"):
        assert url in page
    assert "/admin/connections/managementtoken/" not in page and "/admin/auth/user/" not in page


# -- Hidden objects answer as deleted ones -----------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", ["editor", "viewer", "staff"])
def test_another_environments_object_answers_as_a_deleted_one(world, who, model):
    client = login(getattr(world, who))
    for hidden in (world.prod.of(model), world.beta.of(model)):
        for suffix in ("change/", "history/", "delete/"):
            assert_as_missing(client, change_url(hidden).replace("change/", suffix), hidden)
        assert_as_missing(client, change_url(hidden), hidden, "post", {"name": "taken-over"})
        assert_as_missing(client, change_url(hidden).replace("change/", "delete/"), hidden, "post", {"post": "yes"})
        hidden.refresh_from_db()
        assert hidden.name != "taken-over"


@pytest.mark.parametrize(
    ("model_name", "field_name", "visible"),
    [
        ("modelentry", "connection", "connection"),
        ("apikey", "resources", "resource"),
        ("capacityentry", "api_key", "key"),
    ],
)
def test_autocomplete_lists_only_visible_objects(world, model_name, field_name, visible):
    query = {"app_label": "connections", "model_name": model_name, "field_name": field_name, "term": ""}
    for user, environments in ((world.editor, [world.dev]), (world.owner, [world.dev, world.prod])):
        response = login(user).get("/admin/autocomplete/", query)
        assert response.status_code == 200
        found = {item["id"] for item in response.json()["results"]}
        assert found == {str(getattr(objects, visible).pk) for objects in environments}


def test_bulk_actions_never_reach_hidden_objects(world):
    client = login(world.editor)
    selected = [world.dev.key.pk, world.prod.key.pk, world.beta.key.pk]
    confirm = client.post("/admin/connections/apikey/", {"action": "delete_selected", "_selected_action": selected})
    assert change_url(world.dev.key) in page_of(confirm)
    assert change_url(world.prod.key) not in page_of(confirm) and change_url(world.beta.key) not in page_of(confirm)
    client.post(
        "/admin/connections/apikey/", {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
    )
    assert not APIKey.objects.filter(pk=world.dev.key.pk).exists()
    assert APIKey.objects.filter(pk__in=selected[1:]).count() == 2

    connections = [world.dev.connection.pk, world.prod.connection.pk]
    client.post("/admin/connections/connection/", {"action": "disable", "_selected_action": connections})
    enabled = dict(Connection.objects.filter(pk__in=connections).values_list("environment__name", "enabled"))
    assert enabled == {"dev": False, "prod": True}


def test_an_editor_in_one_workspace_and_viewer_in_another_cannot_act_on_what_it_only_reads(world):
    beta = world.beta.environment.workspace
    membership_save(workspace=beta, user=world.editor, role="viewer")
    client = login(world.editor)
    assert change_url(world.beta.connection) in page_of(client.get("/admin/connections/connection/"))
    client.post(
        "/admin/connections/connection/",
        {"action": "disable", "_selected_action": [world.dev.connection.pk, world.beta.connection.pk]},
    )
    world.beta.connection.refresh_from_db()
    world.dev.connection.refresh_from_db()
    assert world.beta.connection.enabled and not world.dev.connection.enabled
    assert client.post(change_url(world.beta.connection), {"name": "x"}).status_code == 403


# -- Writing: viewers read, editors write in their environments, owners everywhere in theirs ---------


def test_a_viewer_reads_but_cannot_write(world):
    client = login(world.viewer)
    for model in MODELS:
        obj = world.dev.of(model)
        response = client.get(change_url(obj))
        assert response.status_code == 200 and 'name="_save"' not in page_of(response)
        assert client.post(change_url(obj), {"name": "renamed"}).status_code == 403
        assert client.get(f"/admin/connections/{model}/add/").status_code == 403
        assert client.post(change_url(obj).replace("change/", "delete/"), {"post": "yes"}).status_code == 403
        obj.refresh_from_db()
        assert obj.name in ("main", "default", "ci")
    actions = page_of(client.get("/admin/connections/connection/"))
    assert 'value="disable"' not in actions and 'value="delete_selected"' not in actions


def test_an_editor_writes_in_their_environments_only(world):
    client = login(world.editor)
    response = submit(client, change_url(world.dev.connection), description="edited by ed")
    assert response.status_code == 302, errors(response)
    world.dev.connection.refresh_from_db()
    assert world.dev.connection.description == "edited by ed"

    add = "/admin/connections/connection/add/"
    assert options(page_of(client.get(add)), "environment") == [str(world.dev.environment.pk)]
    response = submit(client, add, name="second", provider="mock")
    assert response.status_code == 302, errors(response)
    assert Connection.objects.get(name="second").environment == world.dev.environment
    refused = submit(client, add, name="third", provider="mock", environment=str(world.prod.environment.pk))
    assert refused.status_code == 200 and any("Select a valid choice" in e for e in errors(refused))
    assert not Connection.objects.filter(name="third").exists()


def test_an_owner_writes_in_every_environment_of_the_workspace_and_nowhere_else(world):
    client = login(world.owner)
    assert submit(client, change_url(world.prod.connection), description="prod edit").status_code == 302
    world.prod.connection.refresh_from_db()
    assert world.prod.connection.description == "prod edit"
    offered = options(page_of(client.get("/admin/connections/apikey/add/")), "environment")
    assert offered == [str(world.dev.environment.pk), str(world.prod.environment.pk)]


def test_an_objects_environment_is_fixed_once_created(world):
    client = login(world.owner)
    page = page_of(client.get(change_url(world.dev.resource)))
    assert 'name="environment"' not in page and "acme/dev" in page
    submit(client, change_url(world.dev.resource), environment=str(world.prod.environment.pk), description="moved?")
    world.dev.resource.refresh_from_db()
    assert world.dev.resource.environment == world.dev.environment and world.dev.resource.description == "moved?"


def test_a_rename_to_a_name_taken_in_the_environment_is_a_form_error(world):
    connection_save(name="other", provider="mock", config={}, environment=world.dev.environment)
    client = login(world.editor)
    response = submit(client, change_url(world.dev.connection), name="other")
    assert response.status_code == 200 and any("already exists" in e for e in errors(response))
    # The same name in another environment is no clash.
    assert submit(login(world.owner), change_url(world.prod.connection), name="other").status_code == 302


def test_staff_with_model_permissions_keep_working_in_default_as_before(world):
    client = login(world.staff)
    response = submit(client, change_url(world.default.connection), description="as before")
    assert response.status_code == 302, errors(response)
    add = "/admin/connections/connection/add/"
    page = page_of(client.get(add))
    assert options(page, "environment") == [str(world.default.environment.pk)]
    assert submit(client, add, name="new-one", provider="mock").status_code == 302
    assert Connection.objects.get(name="new-one").environment.label == "default/default"
    resource = submit(
        client,
        "/admin/connections/airesource/add/",
        name="chat",
        **{"model_entries-0-connection": str(world.default.connection.pk)},
    )
    assert resource.status_code == 302, errors(resource)


# -- Choices come from the object's environment; clean() refuses any other --------------------------


def test_add_forms_offer_the_chosen_environments_objects(world):
    client = login(world.owner)
    page = page_of(client.get("/admin/connections/airesource/add/"))
    assert options(page, "model_entries-0-connection") == [str(world.dev.connection.pk)]
    assert f'?environment={world.prod.environment.pk}"' in page  # a link to add in the other one
    prod_page = page_of(client.get("/admin/connections/airesource/add/", {"environment": world.prod.environment.pk}))
    assert options(prod_page, "model_entries-0-connection") == [str(world.prod.connection.pk)]
    key_page = page_of(client.get("/admin/connections/apikey/add/", {"environment": world.prod.environment.pk}))
    assert options(key_page, "resources") == [str(world.prod.resource.pk)]
    # Once created, the object's own environment decides.
    assert options(page_of(client.get(change_url(world.prod.key))), "resources") == [str(world.prod.resource.pk)]
    # An environment the user may not add in, or nonsense, is not picked.
    for asked in (world.beta.environment.pk, "not-a-uuid"):
        other = page_of(client.get("/admin/connections/airesource/add/", {"environment": asked}))
        assert options(other, "model_entries-0-connection") == [str(world.dev.connection.pk)]


def test_a_model_entry_cannot_reference_another_environments_connection(world):
    client = login(world.owner)
    added = submit(
        client,
        "/admin/connections/airesource/add/",
        name="cross",
        environment=str(world.dev.environment.pk),
        **{"model_entries-0-connection": str(world.prod.connection.pk)},
    )
    assert added.status_code == 200 and errors(added)
    assert not AIResource.objects.filter(name="cross").exists()
    changed = submit(
        client,
        change_url(world.dev.resource),
        **{"model_entries-0-connection": str(world.prod.connection.pk)},
    )
    assert changed.status_code == 200 and errors(changed)
    assert [e.connection_id for e in world.dev.resource.model_entries.all()] == [world.dev.connection.pk]


def test_a_key_cannot_reference_another_environments_resource(world):
    client = login(world.owner)
    added = submit(
        client,
        "/admin/connections/apikey/add/",
        name="cross",
        environment=str(world.dev.environment.pk),
        resources=[str(world.prod.resource.pk)],
    )
    assert added.status_code == 200 and errors(added)
    assert not APIKey.objects.filter(name="cross").exists()
    changed = submit(client, change_url(world.dev.key), resources=[str(world.prod.resource.pk)])
    assert changed.status_code == 200 and errors(changed)
    assert list(world.dev.key.resources.all()) == [world.dev.resource]


# -- Workspaces, environments, members ----------------------------------------------------------------


def ws_url(workspace: Workspace, suffix: str = "change/") -> str:
    return f"/admin/connections/workspace/{workspace.pk}/{suffix}"


def row_of(data, prefix: str, pk) -> int:
    return next(int(k.split("-")[1]) for k, v in data.items() if re.fullmatch(rf"{prefix}-\d+-id", k) and v == str(pk))


def workspace_post(client: Client, workspace: Workspace, **changes):
    data = {k: v for k, v in form_defaults(page_of(client.get(ws_url(workspace)))).items() if "__prefix__" not in k}
    for key, value in changes.items():
        data[key] = value
    return client.post(ws_url(workspace), data), data


def test_superusers_create_workspaces_and_nobody_else_does(world):
    response = submit(login(world.root), "/admin/connections/workspace/add/", name="gamma", description="team g")
    assert response.status_code == 302, errors(response)
    assert Workspace.objects.get(name="gamma").description == "team g"
    assert login(world.owner).get("/admin/connections/workspace/add/").status_code == 403
    bad = submit(login(world.root), "/admin/connections/workspace/add/", name="Not_OK")
    assert bad.status_code == 200 and any("lower-case" in e for e in errors(bad))


def test_owners_edit_description_environments_and_members(world):
    client = login(world.owner)
    dora = User.objects.create_user("dora")
    _, data = workspace_post(client, world.acme)
    envs, members = int(data["environments-TOTAL_FORMS"]), int(data["memberships-TOTAL_FORMS"])
    response, _ = workspace_post(
        client,
        world.acme,
        description="the acme team",
        **{
            "environments-0-name": "renamed",  # fixed once created: ignored
            "environments-TOTAL_FORMS": str(envs + 1),
            f"environments-{envs}-name": "qa",
            f"environments-{envs}-description": "for QA",
            "memberships-TOTAL_FORMS": str(members + 1),
            f"memberships-{members}-user": "dora",
            f"memberships-{members}-role": "viewer",
            f"memberships-{members}-environments": [str(world.prod.environment.pk)],
        },
    )
    assert response.status_code == 302, errors(response)
    world.acme.refresh_from_db()
    assert world.acme.description == "the acme team" and world.acme.name == "acme"
    assert sorted(world.acme.environments.values_list("name", flat=True)) == ["dev", "prod", "qa"]
    membership = Membership.objects.get(workspace=world.acme, user=dora)
    assert membership.role == "viewer" and [e.name for e in membership.environments.all()] == ["prod"]
    dora.refresh_from_db()
    assert dora.is_staff  # granting a membership lets the user sign in here
    assert change_url(world.prod.connection) in page_of(login(dora).get("/admin/connections/connection/"))


def test_the_member_form_refuses_what_the_api_refuses(world):
    client = login(world.owner)
    _, data = workspace_post(client, world.acme)
    members = int(data["memberships-TOTAL_FORMS"])
    page = page_of(client.get(ws_url(world.acme)))
    offered = set(re.findall(r'name="memberships-0-environments" value="([^"]+)"', page))
    assert offered == {str(world.dev.environment.pk), str(world.prod.environment.pk)}  # this workspace's only
    User.objects.create_user("dora")
    for user, role, environments, message in (
        ("zed", "viewer", [], "no user 'zed'"),
        ("dora", "owner", [str(world.dev.environment.pk)], "an owner's membership covers every environment"),
        ("dora", "viewer", [str(world.beta.environment.pk)], "Select a valid choice"),
    ):
        response, _ = workspace_post(
            client,
            world.acme,
            **{
                "memberships-TOTAL_FORMS": str(members + 1),
                f"memberships-{members}-user": user,
                f"memberships-{members}-role": role,
                f"memberships-{members}-environments": environments,
            },
        )
        assert response.status_code == 200 and any(message in e for e in errors(response)), errors(response)
    assert not Membership.objects.filter(user__username="dora").exists()


def test_editors_and_viewers_read_their_workspace_and_change_nothing(world):
    membership_save(workspace=world.acme, user=User.objects.create_user("pia"), role="viewer", environments=["prod"])
    for user in (world.editor, world.viewer):
        client = login(user)
        listing = page_of(client.get("/admin/connections/workspace/"))
        assert ws_url(world.acme) in listing and ws_url(world.dev.environment.workspace) in listing
        assert ws_url(world.beta.environment.workspace) not in listing
        page = page_of(client.get(ws_url(world.acme)))
        assert 'name="_save"' not in page and "olga" in page
        assert "prod" not in page  # an environment it holds no grant in does not exist for it
        # pia's membership is limited to an environment this reader may not know of.
        assert re.search(r"pia.*?viewer.*?field-environments_shown[^>]*>\s*<p>—</p>", page, re.S)
        assert client.post(ws_url(world.acme), {"description": "mine now"}).status_code == 403
        assert_as_missing(client, ws_url(world.beta.environment.workspace), world.beta.environment.workspace)
    world.acme.refresh_from_db()
    assert world.acme.description == ""


def test_an_environment_is_deleted_only_once_empty(world):
    client = login(world.owner)
    _, data = workspace_post(client, world.acme)
    dev_row = row_of(data, "environments", world.dev.environment.pk)
    response, _ = workspace_post(client, world.acme, **{f"environments-{dev_row}-DELETE": "on"})
    assert response.status_code == 200
    assert any(
        "environment acme/dev still holds: API key 'ci' in dev, connection 'main'" in e for e in errors(response)
    )
    assert Environment.objects.filter(pk=world.dev.environment.pk).exists()

    empty, _ = environment_get_or_create(label="acme/stage")
    dora = User.objects.create_user("dora")
    membership_save(workspace=world.acme, user=dora, role="viewer", environments=["stage"])
    _, data = workspace_post(client, world.acme)
    stage_row = row_of(data, "environments", empty.pk)
    response, _ = workspace_post(client, world.acme, **{f"environments-{stage_row}-DELETE": "on"})
    # Without it dora's membership would list none, which means every environment.
    assert any("the membership of 'dora'" in e for e in errors(response)), errors(response)
    Membership.objects.filter(user=dora).delete()
    response, _ = workspace_post(client, world.acme, **{f"environments-{stage_row}-DELETE": "on"})
    assert response.status_code == 302, errors(response)
    assert not Environment.objects.filter(pk=empty.pk).exists()


def test_default_default_is_never_deleted(world):
    client = login(world.root)
    default = world.default.environment.workspace
    world.default.key.delete()
    world.default.resource.delete()
    world.default.connection.delete()
    _, data = workspace_post(client, default)
    row = row_of(data, "environments", world.default.environment.pk)
    response, _ = workspace_post(client, default, **{f"environments-{row}-DELETE": "on"})
    assert any("default/default cannot be deleted" in e for e in errors(response))
    deleted = client.post(ws_url(default, "delete/"), {"post": "yes"}, follow=True)
    assert "the workspace default cannot be deleted" in html.unescape(page_of(deleted)).lower()
    assert Workspace.objects.filter(name="default").exists()


def test_a_workspace_is_deleted_by_a_superuser_once_empty(world):
    beta = world.beta.environment.workspace
    assert login(world.owner).post(ws_url(world.acme, "delete/"), {"post": "yes"}).status_code == 403
    client = login(world.root)
    refused = client.post(ws_url(beta, "delete/"), {"post": "yes"}, follow=True)
    assert "workspace beta still holds: api key 'ci' in main" in html.unescape(page_of(refused)).lower()
    assert Workspace.objects.filter(pk=beta.pk).exists() and Connection.objects.filter(pk=world.beta.connection.pk)
    for obj in (world.beta.key, world.beta.resource, world.beta.connection):
        obj.delete()
    assert client.post(ws_url(beta, "delete/"), {"post": "yes"}).status_code == 302
    assert not Workspace.objects.filter(pk=beta.pk).exists() and not Environment.objects.filter(workspace=beta)


def test_a_removed_member_is_refused_at_the_next_request(world):
    editor = login(world.editor)
    assert editor.get(change_url(world.dev.connection)).status_code == 200
    owner = login(world.owner)
    _, data = workspace_post(owner, world.acme)
    row = row_of(data, "memberships", Membership.objects.get(user=world.editor).pk)
    response, _ = workspace_post(owner, world.acme, **{f"memberships-{row}-DELETE": "on"})
    assert response.status_code == 302, errors(response)
    assert editor.get(change_url(world.dev.connection)).status_code == 403
    assert editor.get("/admin/connections/connection/").status_code == 403


# -- Audit records, learned upstream limits, pricing --------------------------------------------------


def _record(request_id: str, workspace: str, environment: str, resource: str = "default") -> AuditRecord:
    return AuditRecord.objects.create(
        request_id=request_id,
        created_at=timezone.now(),
        workspace=workspace,
        environment=environment,
        endpoint="chat.completions",
        resource=resource,
        api_key="ci",
        status_code=200,
        duration_ms=1.0,
    )


def test_audit_records_of_environments_a_user_may_not_read_do_not_exist(world):
    resource_save(name="prod-only", models=[ModelEntrySpec(connection="main")], environment=world.prod.environment)
    records = {label: _record(f"req_{label.replace('/', '_')}", *label.split("/")) for label in world.labels()}
    for user, readable in ((world.viewer, ["acme/dev"]), (world.owner, ["acme/dev", "acme/prod"])):
        client = login(user)
        page = page_of(client.get("/admin/gateway/auditrecord/"))
        for label, record in records.items():
            assert (change_url(record) in page) == (label in readable), (user, label)
            if label not in readable:
                assert_as_missing(client, change_url(record), record)
        assert 'column-workspace"' in page and 'column-environment"' in page
        assert ("prod-only" in page) == ("acme/prod" in readable)  # the resource filter's names
        assert "beta" not in page
    filtered = page_of(login(world.owner).get("/admin/gateway/auditrecord/", {"environment": "acme/prod"}))
    assert change_url(records["acme/prod"]) in filtered and change_url(records["acme/dev"]) not in filtered


def test_staff_with_the_audit_permission_read_default_only(world):
    world.staff.user_permissions.add(Permission.objects.get(codename="view_auditrecord"))
    records = [_record("req_default", "default", "default"), _record("req_acme", "acme", "dev")]
    page = page_of(login(world.staff).get("/admin/gateway/auditrecord/"))
    assert change_url(records[0]) in page and change_url(records[1]) not in page


def _learned(environment: Environment, *, tag: str) -> UpstreamRateLimit:
    return UpstreamRateLimit.objects.create(
        environment=tag,
        connection="main",
        model=f"model-{environment.name}",
        remaining_requests=0,
        exhausted_until=timezone.now() + timedelta(minutes=5),
        seen_at=timezone.now(),
    )


def test_learned_upstream_limits_are_listed_and_cleared_per_environment(world):
    dev = _learned(world.dev.environment, tag=world.dev.environment.pk.hex)
    prod = _learned(world.prod.environment, tag=world.prod.environment.pk.hex)
    default = _learned(world.default.environment, tag="")
    viewer_page = page_of(login(world.viewer).get("/admin/gateway/upstreamratelimit/"))
    assert change_url(dev) in viewer_page and "acme/dev" in viewer_page
    assert change_url(prod) not in viewer_page and change_url(default) not in viewer_page
    assert 'value="clear_learned_marks"' not in viewer_page  # a viewer reads; clearing is a write

    editor = login(world.editor)
    editor.post(
        "/admin/gateway/upstreamratelimit/",
        {"action": "clear_learned_marks", "_selected_action": [dev.pk, prod.pk, default.pk]},
    )
    for row in (dev, prod, default):
        row.refresh_from_db()
    assert dev.exhausted_until is None and prod.exhausted_until and default.exhausted_until
    root_page = page_of(login(world.root).get("/admin/gateway/upstreamratelimit/", {"environment": "acme/prod"}))
    assert change_url(prod) in root_page and change_url(dev) not in root_page
    assert "default/default" in page_of(login(world.root).get(change_url(default)))


def test_members_read_prices_and_writes_need_the_model_permission(world):
    for user in (world.viewer, world.owner):
        client = login(user)
        assert client.get("/admin/connections/pricingentry/").status_code == 200
        assert client.get("/admin/connections/pricingentry/add/").status_code == 403
    world.staff.user_permissions.add(Permission.objects.get(codename="add_pricingentry"))
    assert login(world.staff).get("/admin/connections/pricingentry/add/").status_code == 200


def _count(key: APIKey, limit: CapacityLimit, times: int) -> None:
    tag = "" if key.environment.is_default else key.environment.pk.hex
    counters = counters_for(Scope("api_key", key.name, tag), [limit], now=time.time(), source_ip=None, metadata={})
    for _ in range(times):
        async_to_sync(capacity_store().admit)(
            groups=[[Charge(counter, Estimate()) for counter in counters], []],
            reservation=secrets.token_hex(4),
            reservation_seconds=60,
        )


@pytest.mark.django_db(transaction=True)  # the database store works in its own threads
def test_used_now_reads_the_objects_own_environments_counters(world):
    limit = CapacityLimit(period="minute", requests=5)
    for objects, used in ((world.dev, 2), (world.prod, 1)):
        capacity_entries_replace(owner=objects.key, specs=[CapacitySpec(period="minute", requests=5)])
        _count(objects.key, limit, used)  # key `ci` in dev and key `ci` in prod count apart
    client = login(world.owner)
    assert "2 / 5 requests" in page_of(client.get(change_url(world.dev.key)))
    assert "1 / 5 requests" in page_of(client.get(change_url(world.prod.key)))


def test_the_new_pages_need_nothing_the_content_security_policy_forbids(world):
    client = login(world.owner)
    for url in (ws_url(world.acme), "/admin/connections/airesource/add/", "/admin/gateway/auditrecord/"):
        response = client.get(url)
        assert response.status_code == 200 and inline_code(page_of(response)) == []
