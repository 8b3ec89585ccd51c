"""Writes to the configuration. Every function validates through the models' `full_clean()`.

Savers report whether they changed anything; an unchanged call writes nothing, so the
configuration revision (and every worker's snapshot) only moves on a real change.

Savers of connections, resources and keys work in one environment (`environment`, default
`default/default`): names are looked up there, references resolve there, and an object of another
environment is as one that exists nowhere (DESIGN.md 2.15).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from connections.entities import ConnectionInfo
from connections.models import (
    DEFAULT_TIMEOUT_MS,
    DEFAULT_WORKSPACE,
    AIResource,
    APIKey,
    CapacityEntry,
    Connection,
    Environment,
    Membership,
    ModelEntry,
    PricingEntry,
    Workspace,
    environment_default,
    tenant_name_error,
)
from connections.selectors import connection_info_get
from connections.signals import config_revision_bump
from gateway.providers import CheckResult, provider_class_get

API_KEY_TOKEN_BYTES = 30


@dataclass(frozen=True, slots=True)
class ModelEntrySpec:
    connection: str
    model: str = ""
    max_retries: int = 0
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    reasoning: bool = True


@dataclass(frozen=True, slots=True)
class CapacitySpec:
    """One capacity limit as a caller describes it (DESIGN.md 2.10); see `CapacityEntry`."""

    period: str
    requests: int | None = None
    tokens: int | None = None
    cost_usd: Decimal | None = None
    dimension: str = ""
    dimension_field: str = ""
    enabled: bool = True


def connection_save(
    *,
    name: str,
    provider: str,
    config: Mapping[str, Any],
    description: str = "",
    enabled: bool = True,
    keep_secrets: Iterable[str] = (),
    environment: Environment | None = None,
) -> tuple[Connection, bool]:
    """Create or update the connection `name`; returns it and whether anything changed.

    `config` holds every setting, secrets included; a secret named in `keep_secrets` keeps its
    stored value (e.g. a blank admin field or a masked value in a config file).
    """
    environment = environment or environment_default()
    connection = Connection.objects.filter(environment=environment, name=name).first() or Connection(
        environment=environment, name=name
    )
    secret_names = provider_class_get(provider).secret_field_names() if _known(provider) else frozenset()
    stored_secrets = connection.secrets_get() if connection.pk else {}
    new_secrets = {k: str(v) for k, v in config.items() if k in secret_names}
    for kept in keep_secrets:
        if kept in stored_secrets:
            new_secrets[kept] = stored_secrets[kept]
    new_config = {k: v for k, v in config.items() if k not in secret_names and v not in (None, "")}
    changed = (
        connection.pk is None
        or connection.provider != provider
        or connection.description != description
        or connection.enabled != enabled
        or connection.config != new_config
        or stored_secrets != {k: v for k, v in new_secrets.items() if v}
    )
    if not changed:
        return connection, False
    connection.provider = provider
    connection.description = description
    connection.enabled = enabled
    connection.config = new_config
    connection.secrets_set(new_secrets)
    connection.full_clean()
    connection.save()
    return connection, True


def _known(provider: str) -> bool:
    try:
        provider_class_get(provider)
    except LookupError:
        return False
    return True


@transaction.atomic
def resource_save(
    *,
    name: str,
    models: Sequence[ModelEntrySpec],
    description: str = "",
    default_args: Mapping[str, Any] | None = None,
    enabled: bool = True,
    environment: Environment | None = None,
) -> tuple[AIResource, bool]:
    """Create or update the resource `name` with `models` (primary first); returns (resource, changed)."""
    if not models:
        raise ValidationError({"model": "a resource needs a primary model"})
    environment = environment or environment_default()
    resource = AIResource.objects.filter(environment=environment, name=name).first() or AIResource(
        environment=environment, name=name
    )
    default_args = dict(default_args or {})
    before = _resource_state(resource) if resource.pk else None
    resource.description = description
    resource.default_args = default_args
    resource.enabled = enabled
    resource.full_clean()
    entries = []
    for position, spec in enumerate(models):
        connection = Connection.objects.filter(environment=environment, name=spec.connection).first()
        if connection is None:
            raise ValidationError({f"models.{position}.connection": f"no connection '{spec.connection}'"})
        entry = ModelEntry(
            resource=resource,
            position=position,
            connection=connection,
            model=spec.model,
            max_retries=spec.max_retries,
            timeout_ms=spec.timeout_ms,
            reasoning=spec.reasoning,
        )
        try:
            entry.full_clean(exclude=["resource"])
        except ValidationError as exc:
            # Keyed by entry position so callers can say which entry is wrong.
            raise ValidationError(
                {f"models.{position}.{name}": messages for name, messages in exc.message_dict.items()}
            ) from exc
        entries.append(entry)
    after = (
        description,
        default_args,
        enabled,
        [(e.connection.name, e.model, e.max_retries, e.timeout_ms, e.reasoning) for e in entries],
    )
    if before == after:
        return resource, False
    resource.save()
    resource.model_entries.all().delete()
    for entry in entries:
        entry.resource = resource
    ModelEntry.objects.bulk_create(entries)
    # bulk_create sends no post_save; make sure workers see the new entries.
    config_revision_bump()
    return resource, True


def _resource_state(resource: AIResource) -> tuple[Any, ...]:
    return (
        resource.description,
        resource.default_args,
        resource.enabled,
        [
            (e.connection.name, e.model, e.max_retries, e.timeout_ms, e.reasoning)
            for e in resource.model_entries.select_related("connection")
        ],
    )


def model_entries_renumber(*, resource: AIResource) -> None:
    """Close gaps in positions after an admin edit: the lowest stays primary."""
    for position, entry in enumerate(resource.model_entries.order_by("position", "id")):
        if entry.position != position:
            ModelEntry.objects.filter(pk=entry.pk).update(position=position)


_CapacityState = tuple[str, int | None, int | None, Decimal | None, str, str, bool]


def _capacity_state(entry: CapacityEntry) -> _CapacityState:
    # Positions are left out: an admin deletion may leave gaps that change no limit.
    return (
        entry.period,
        entry.requests,
        entry.tokens,
        entry.cost_usd,
        entry.dimension,
        entry.dimension_field,
        entry.enabled,
    )


def _capacity_owner_field(owner: Connection | AIResource | APIKey) -> str:
    if isinstance(owner, Connection):
        return "connection"
    if isinstance(owner, AIResource):
        return "resource"
    return "api_key"


@transaction.atomic
def capacity_entries_replace(*, owner: Connection | AIResource | APIKey, specs: Sequence[CapacitySpec]) -> bool:
    """Make the saved `owner`'s capacity limits equal to `specs`, in order; returns whether anything changed.

    Every entry is validated before anything is written (errors keyed `capacity.<index>.<field>`,
    so callers can say which entry is wrong); an unchanged list writes nothing.
    """
    if owner.pk is None:
        raise ValueError("save the owner before its capacity limits")
    owner_field = _capacity_owner_field(owner)
    entries = []
    for position, spec in enumerate(specs):
        entry = CapacityEntry(
            position=position,
            period=spec.period,
            requests=spec.requests,
            tokens=spec.tokens,
            cost_usd=spec.cost_usd,
            dimension=spec.dimension,
            dimension_field=spec.dimension_field,
            enabled=spec.enabled,
            **{owner_field: owner},
        )
        try:
            entry.full_clean()
        except ValidationError as exc:
            raise ValidationError(
                {f"capacity.{position}.{name}": messages for name, messages in exc.message_dict.items()}
            ) from exc
        entries.append(entry)
    current = [_capacity_state(entry) for entry in owner.capacity_entries.all()]
    if current == [_capacity_state(entry) for entry in entries]:
        return False
    owner.capacity_entries.all().delete()
    CapacityEntry.objects.bulk_create(entries)
    # The limits are part of the owner: its "updated" time says when they changed too.
    type(owner).objects.filter(pk=owner.pk).update(updated_at=timezone.now())
    # bulk_create sends no post_save; make sure workers see the new limits.
    config_revision_bump()
    return True


def capacity_entries_renumber(*, owner: Connection | AIResource | APIKey) -> None:
    """Close gaps in positions after an admin edit, keeping the order."""
    for position, entry in enumerate(owner.capacity_entries.order_by("position", "id")):
        if entry.position != position:
            CapacityEntry.objects.filter(pk=entry.pk).update(position=position)


def api_key_generate() -> str:
    return "vmx-" + secrets.token_urlsafe(API_KEY_TOKEN_BYTES)


@transaction.atomic
def api_key_save(
    *,
    name: str,
    resources: Sequence[str] | None,
    key: str | None = None,
    enabled: bool = True,
    expires_at: datetime | None = None,
    environment: Environment | None = None,
) -> tuple[APIKey, str | None, bool]:
    """Create or update the key `name`. `resources=None` allows every resource.

    Returns (api_key, plaintext, changed): plaintext is set only when a value was generated for a
    new key, so the caller can show it once. An existing key keeps its value unless `key` is given.
    """
    environment = environment or environment_default()
    api_key = APIKey.objects.filter(environment=environment, name=name).first() or APIKey(
        environment=environment, name=name
    )
    created = api_key.pk is None
    generated: str | None = None
    if key is None and created:
        key = generated = api_key_generate()
    digest_before = api_key.digest
    if key is not None:
        try:
            api_key.key_set(key)
        except ValidationError as exc:
            raise ValidationError({"key": exc.messages}) from exc
        if APIKey.objects.filter(digest=api_key.digest).exclude(pk=api_key.pk).exists():
            raise ValidationError({"key": "this value is already used by another key"})
    all_resources = resources is None
    wanted = sorted(set(resources or []))
    current = sorted(api_key.resources.values_list("name", flat=True)) if not created else []
    changed = (
        created
        or api_key.digest != digest_before
        or api_key.all_resources != all_resources
        or api_key.enabled != enabled
        or api_key.expires_at != expires_at
        or current != wanted
    )
    if not changed:
        return api_key, None, False
    api_key.all_resources = all_resources
    api_key.enabled = enabled
    api_key.expires_at = expires_at
    api_key.full_clean()
    api_key.save()
    resource_rows = list(AIResource.objects.filter(environment=api_key.environment_id, name__in=wanted))
    missing = set(wanted) - {r.name for r in resource_rows}
    if missing:
        raise ValidationError({"resources": f"no resource {sorted(missing)[0]!r}"})
    api_key.resources.set(resource_rows)
    return api_key, generated, True


def pricing_entry_save(
    *, model: str, input: Decimal, output: Decimal, cached_input: Decimal | None = None
) -> tuple[PricingEntry, bool]:
    """Create or update the price of `model` (an id or a `prefix*`); returns (entry, changed)."""
    entry = PricingEntry.objects.filter(model=model).first()
    if entry is not None and (entry.input, entry.cached_input, entry.output) == (input, cached_input, output):
        return entry, False
    entry = entry or PricingEntry(model=model)
    entry.input, entry.cached_input, entry.output = input, cached_input, output
    entry.full_clean()
    entry.save()
    return entry, True


def connection_check(*, connection: Connection) -> CheckResult:
    """One cheap upstream call with the connection's saved settings, from sync code."""
    return async_to_sync(_connection_check)(connection_info_get(connection=connection))


async def _connection_check(info: ConnectionInfo) -> CheckResult:
    # A throwaway provider: pooled clients are bound to the event loop that created them, and
    # async_to_sync runs this on a loop of its own.
    provider = provider_class_get(info.provider)(info)
    started = time.perf_counter()
    try:
        return await provider.check()
    except Exception as exc:  # whatever the provider raised, the operator gets a report, not a traceback
        detail = provider.redactor.text(f"{type(exc).__name__}: {exc}")
        return CheckResult(False, (time.perf_counter() - started) * 1000, f"the check failed: {detail}")
    finally:
        await provider.aclose()


ConfigObject = Connection | AIResource | APIKey | PricingEntry


def _name_field(obj: ConfigObject) -> str:
    """The field that names an object in the config file (a price is named by its `model`)."""
    return "model" if isinstance(obj, PricingEntry) else "name"


LIMIT_PERMISSIONS = tuple(f"connections.{action}_capacityentry" for action in ("add", "change", "delete"))
"""What changing limits takes, in the admin (its inline) and the API alike."""
RENAME_WITH_LIMITS_DENIED = (
    "Renaming a {kind} that has capacity limits starts their counters afresh, so it needs the "
    "permission to change limits (add, change and delete on capacity entries)."
)


def config_object_rename_permitted(*, user: Any, obj: ConfigObject) -> bool:
    """Whether `user` may rename `obj`. Counters are keyed by the object's name, so renaming an
    object with limits resets their windows: that is a change of its limits, and needs their
    permissions. Objects without limits (and prices) rename freely."""
    if isinstance(obj, PricingEntry) or not obj.capacity_entries.exists():
        return True
    # Asked of the object: a role grants limits in its environments only (DESIGN.md 2.15).
    return bool(user.has_perms(LIMIT_PERMISSIONS, obj))


@transaction.atomic
def config_object_rename(*, obj: ConfigObject, name: str) -> None:
    """Give `obj` the name `name` and nothing else; `ValidationError` keyed by the name's field
    when the name is invalid. Only the name is validated: after a rename nothing else changed."""
    field = _name_field(obj)
    setattr(obj, field, name)
    obj.full_clean(exclude=[f.name for f in obj._meta.fields if f.name != field])
    obj.save(update_fields=[field, "updated_at"])


def config_object_delete(*, obj: ConfigObject) -> None:
    """Delete `obj` (with its model entries and limits); `ProtectedError` while a resource still
    uses a connection."""
    obj.delete()


# -- Workspaces, environments and members (DESIGN.md 2.15) ----------------------------------------


class TenantInUseError(Exception):
    """A workspace or environment still holds configuration (the API answers 409 with this)."""


def workspace_save(*, name: str, description: str = "", id: uuid.UUID | None = None) -> tuple[Workspace, bool]:
    """Create the workspace `name` (with `id`, when given) or update its description."""
    workspace = Workspace.objects.filter(name=name).first()
    if workspace is None:
        workspace = Workspace(name=name, description=description)
        if id is not None:
            workspace.pk = id
        workspace.full_clean()
        workspace.save(force_insert=True)
        return workspace, True
    if workspace.description == description:
        return workspace, False
    workspace.description = description
    workspace.full_clean()
    workspace.save()
    return workspace, True


def environment_save(
    *, workspace: Workspace, name: str, description: str = "", id: uuid.UUID | None = None
) -> tuple[Environment, bool]:
    """Create the environment `name` of `workspace` (with `id`, when given) or update its description."""
    environment = Environment.objects.filter(workspace=workspace, name=name).first()
    if environment is None:
        environment = Environment(workspace=workspace, name=name, description=description)
        if id is not None:
            environment.pk = id
        environment.full_clean()
        environment.save(force_insert=True)
        return environment, True
    if environment.description == description:
        return environment, False
    environment.description = description
    environment.full_clean()
    environment.save()
    return environment, True


@transaction.atomic
def environment_get_or_create(*, label: str) -> tuple[Environment, bool]:
    """`workspace/environment`, made (workspace too) if missing; `ValidationError` for a bad label."""
    workspace_name, environment_name = tenant_label_parse(label)
    workspace = Workspace.objects.filter(name=workspace_name).first()
    created = workspace is None
    if workspace is None:
        workspace, _ = workspace_save(name=workspace_name)
    environment = Environment.objects.filter(workspace=workspace, name=environment_name).first()
    if environment is None:
        environment, _ = environment_save(workspace=workspace, name=environment_name)
        created = True
    return environment, created


def tenant_label_parse(label: object) -> tuple[str, str]:
    """`acme/prod` → ("acme", "prod"); `ValidationError` saying what is wrong otherwise."""
    if not isinstance(label, str) or label.count("/") != 1:
        raise ValidationError("write it as workspace/environment, e.g. acme/prod")
    workspace, environment = label.split("/")
    for part, what in ((workspace, "workspace"), (environment, "environment")):
        error = tenant_name_error(part)
        if error is not None:
            raise ValidationError(f"{what} {part!r}: {error}")
    return workspace, environment


def _left_in(environments: Iterable[Environment]) -> list[str]:
    left = []
    for model, kind in ((Connection, "connection"), (AIResource, "resource"), (APIKey, "API key")):
        for env_label, name in model.objects.filter(environment__in=list(environments)).values_list(
            "environment__name", "name"
        ):
            left.append(f"{kind} '{name}' in {env_label}")
    return sorted(left)


def environment_delete_refusal(*, environment: Environment) -> str | None:
    """Why `environment` cannot be deleted now (what is left in it), or None.

    A membership limited to this environment alone is left too: once it went, the membership
    would list none, which means every environment of the workspace."""
    if environment.is_default:
        return "the environment default/default cannot be deleted"
    left = _left_in([environment])
    if left:
        return f"environment {environment.label} still holds: {', '.join(left)}"
    only_here = sorted(
        membership.user.username
        for membership in Membership.objects.filter(environments=environment).prefetch_related("environments", "user")
        if len(membership.environments.all()) == 1
    )
    if only_here:
        names = ", ".join(f"'{name}'" for name in only_here)
        return (
            f"environment {environment.label} is the only environment the membership of {names} covers "
            "(without it the membership would cover every environment): change or remove it first"
        )
    return None


def environment_delete(*, environment: Environment) -> None:
    """Delete an environment with nothing left in it; `TenantInUseError` naming what is left
    (`environment_delete_refusal`). `default/default` is never deleted."""
    refusal = environment_delete_refusal(environment=environment)
    if refusal is not None:
        raise TenantInUseError(refusal)
    environment.delete()


@transaction.atomic
def workspace_delete(*, workspace: Workspace) -> None:
    """Delete a workspace whose environments hold nothing (they go with it); `default` never."""
    if workspace.name == DEFAULT_WORKSPACE:
        raise TenantInUseError("the workspace default cannot be deleted")
    environments = list(workspace.environments.all())
    left = _left_in(environments)
    if left:
        raise TenantInUseError(f"workspace {workspace.name} still holds: {', '.join(left)}")
    Membership.objects.filter(workspace=workspace).delete()
    for environment in environments:
        environment.delete()
    workspace.delete()


@transaction.atomic
def membership_save(
    *, workspace: Workspace, user: Any, role: str, environments: Sequence[str] = ()
) -> tuple[Membership, bool]:
    """Grant `user` `role` in `workspace`, limited to `environments` (names; empty: all). An owner's
    membership is never limited. Granting makes the user staff (they sign in to the admin)."""
    if role not in Membership.Role.values:
        raise ValidationError({"role": [f"must be one of {', '.join(Membership.Role.values)}"]})
    if role == Membership.Role.OWNER and environments:
        raise ValidationError({"environments": ["an owner's membership covers every environment"]})
    found = {env.name: env for env in workspace.environments.filter(name__in=list(environments))}
    for name in environments:
        if name not in found:
            raise ValidationError({"environments": [f"no environment '{name}' in workspace '{workspace.name}'"]})
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    created = membership is None
    wanted = sorted(found)
    if membership is not None:
        current = sorted(membership.environments.values_list("name", flat=True))
        if membership.role == role and current == wanted and user.is_staff:
            return membership, False
        membership.role = role
        membership.save()
    else:
        membership = Membership.objects.create(workspace=workspace, user=user, role=role)
    membership.environments.set(list(found.values()))
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return membership, created or True


def membership_delete(*, membership: Membership) -> None:
    membership.delete()
