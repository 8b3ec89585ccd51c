"""Workspaces and environments, connections, AI resources (with their model entries), gateway API
keys and their capacity limits, and the members of workspaces with their roles.

Every connection, resource and API key belongs to one environment of one workspace (DESIGN.md
2.15): names are unique per environment, an object's environment is fixed once created, and
references (a model entry's connection, a key's resources) never cross environments. Objects
created without one belong to `default/default`, which every installation has.

Validation lives here (`clean()`), so the admin, the config file and the commands share it; writes
go through `connections.services`. Any save or delete bumps `ConfigRevision`, which is how every
worker learns that its in-process snapshot (`connections.selectors`) is stale. A capacity entry
belongs to exactly one owner (connection, resource or API key), enforced by a database constraint.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from connections.crypto import EncryptionKeyError, secret_decrypt, secret_encrypt
from gateway.core.jsonchecks import has_control_characters
from gateway.core.limits import DIMENSIONS, PERIODS, CapacityLimit, Metric
from gateway.providers.registry import UnknownProviderError, provider_choices, provider_class_get

# The configuration's limits, defined once: the fields below, the config file's reader and the
# management API's schema all use these.
MAX_RETRIES_LIMIT = 10
"""A model entry's `maxRetries`: 0 to this, done by the SDK within the leg."""
DEFAULT_TIMEOUT_MS = 600_000
MIN_TIMEOUT_MS = 1
MAX_TIMEOUT_MS = 86_400_000
"""A model entry's `timeoutMs` (per attempt; for streams the longest wait for the next event)."""
NAME_LENGTH = 64
"""Connection and API key names (slugs), and the names the audit keeps of them."""
RESOURCE_NAME_LENGTH = 128
MODEL_ID_LENGTH = 200
"""Upstream model ids, in model entries and prices."""
API_KEY_PREFIX_LENGTH = 8
API_KEY_MIN_LENGTH = 20

TENANT_NAME_LENGTH = 63
DEFAULT_WORKSPACE = "default"
DEFAULT_ENVIRONMENT = "default"
_TENANT_NAME = re.compile(r"[a-z0-9-]{1,63}")
_UUID_SHAPE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


def tenant_name_error(value: object) -> str | None:
    """Why `value` cannot name a workspace or an environment, or None.

    Names sit in base URLs and metric labels, and a path segment may be a name or an id: a name
    shaped like a UUID could be taken for another's id."""
    if not isinstance(value, str) or not _TENANT_NAME.fullmatch(value):
        return "use 1 to 63 lower-case letters, digits and -"
    if _UUID_SHAPE.fullmatch(value):
        return "must not be shaped like a UUID (ids are)"
    return None


def tenant_name_validator(value: str) -> None:
    error = tenant_name_error(value)
    if error is not None:
        raise ValidationError(error)


class Workspace(models.Model):
    """A team. Its name is fixed once created: base URLs and metric labels hold it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=TENANT_NAME_LENGTH, unique=True, validators=[tenant_name_validator])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Environment(models.Model):
    """One environment (`dev`, `prod`, …) of a workspace: what every configuration object and
    record belongs to. `default/default` exists in every installation and is never deleted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="environments")
    name = models.CharField(max_length=TENANT_NAME_LENGTH, validators=[tenant_name_validator])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace__name", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="environment_name_unique")]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """`workspace/environment`, as headers, files and logs write it."""
        return f"{self.workspace.name}/{self.name}"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ENVIRONMENT and self.workspace.name == DEFAULT_WORKSPACE


def environment_default() -> Environment:
    """`default/default`, made if missing (a migration makes it; a test flush may remove it)."""
    workspace, _ = Workspace.objects.get_or_create(name=DEFAULT_WORKSPACE)
    environment, _ = Environment.objects.get_or_create(workspace=workspace, name=DEFAULT_ENVIRONMENT)
    return environment


def environment_default_id() -> uuid.UUID:
    """The default of every `environment` foreign key: objects made without one are `default/default`'s."""
    return environment_default().pk


class Membership(models.Model):
    """A Django user's role in a workspace (DESIGN.md 2.15). An editor's or viewer's membership may
    be limited to some environments (none listed: all of them, present and future); an owner's
    never is. Grants add up: nothing denies."""

    class Role(models.TextChoices):
        OWNER = "owner"
        EDITOR = "editor"
        VIEWER = "viewer"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="workspace_memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    environments = models.ManyToManyField(
        Environment, blank=True, related_name="memberships", help_text="Empty: every environment of the workspace."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace__name", "user__username"]
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


def _environment_field(related_name: str) -> Any:
    return models.ForeignKey(
        Environment,
        on_delete=models.PROTECT,
        default=environment_default_id,
        related_name=related_name,
        help_text="Fixed once created.",
    )


resource_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
    "Use letters, digits and . _ : / @ + - (this is what clients send as `model`).",
)


class Connection(models.Model):
    environment = _environment_field("connections")
    name = models.SlugField(max_length=NAME_LENGTH, help_text="A slug unique in its environment, e.g. openai-main.")
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=32, choices=provider_choices)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret provider settings.")
    secrets_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["environment", "name"], name="connection_name_unique")]

    def __str__(self) -> str:
        return self.name

    def secrets_get(self) -> dict[str, str]:
        if not self.secrets_encrypted:
            return {}
        plaintext = secret_decrypt(self.secrets_encrypted, owner=f"connection '{self.name}'")
        value: dict[str, str] = orjson.loads(plaintext)
        return value

    def secrets_set(self, secrets: dict[str, str]) -> None:
        kept = {k: v for k, v in secrets.items() if v}
        self.secrets_encrypted = secret_encrypt(orjson.dumps(kept).decode()) if kept else ""

    def clean(self) -> None:
        try:
            provider = provider_class_get(self.provider)
        except UnknownProviderError as exc:
            raise ValidationError({"provider": str(exc)}) from exc
        if not isinstance(self.config, dict):
            raise ValidationError({"config": "must be an object"})
        misplaced = provider.secret_field_names() & self.config.keys()
        if misplaced:
            raise ValidationError(
                {"config": f"secret settings must not be stored in plain config: {sorted(misplaced)}"}
            )
        try:
            secrets = self.secrets_get()
        except EncryptionKeyError as exc:
            raise ValidationError({"config": str(exc)}) from exc
        errors = provider.config_errors({**self.config, **secrets})
        if errors:
            raise ValidationError({"config": [f"{name}: {message}" for name, message in errors.items()]})


class AIResource(models.Model):
    environment = _environment_field("resources")
    name = models.CharField(
        max_length=RESOURCE_NAME_LENGTH,
        validators=[resource_name_validator],
        help_text="What clients send as `model`; unique in its environment.",
    )
    description = models.TextField(blank=True)
    default_args = models.JSONField(
        default=dict,
        blank=True,
        help_text='Upstream arguments applied under the client\'s body, e.g. {"temperature": 0.2}.',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "AI resource"
        constraints = [models.UniqueConstraint(fields=["environment", "name"], name="resource_name_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not isinstance(self.default_args, dict):
            raise ValidationError({"default_args": "must be a JSON object"})
        reserved = {"model", "vmx", "__vmx_passthrough"} & self.default_args.keys()
        if reserved:
            raise ValidationError({"default_args": f"cannot set {', '.join(sorted(reserved))}"})


class ModelEntry(models.Model):
    """One upstream model a resource may use: position 0 is the primary, the rest are fallbacks."""

    resource = models.ForeignKey(AIResource, on_delete=models.CASCADE, related_name="model_entries")
    position = models.PositiveSmallIntegerField(default=0, help_text="0 is the primary; fallbacks follow in order.")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="model_entries")
    model = models.CharField(
        max_length=MODEL_ID_LENGTH,
        blank=True,
        help_text="Upstream model id, forwarded verbatim. Blank: the provider's default (gpt-4.1 for OpenAI).",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_RETRIES_LIMIT)],
        help_text="Retries within this leg (0 to 10), done by the SDK.",
    )
    timeout_ms = models.PositiveIntegerField(
        default=DEFAULT_TIMEOUT_MS,
        validators=[MinValueValidator(MIN_TIMEOUT_MS), MaxValueValidator(MAX_TIMEOUT_MS)],
        help_text="Per-attempt timeout; for streams, the longest wait for the next event.",
    )
    reasoning = models.BooleanField(
        default=True,
        help_text="Untick for a model that rejects reasoning parameters.",
    )

    class Meta:
        ordering = ["resource", "position", "id"]
        verbose_name = "model entry"
        verbose_name_plural = "model entries"

    def __str__(self) -> str:
        return f"{self.connection.name}/{self.model}" if self.connection_id else self.model

    def clean(self) -> None:
        if not self.model.strip() and self.connection_id:
            with contextlib.suppress(UnknownProviderError):
                self.model = provider_class_get(self.connection.provider).default_model
        self.model = self.model.strip()
        if not self.model:
            raise ValidationError({"model": "required"})
        if self.connection_id and self.resource_id and self.connection.environment_id != self.resource.environment_id:
            # As one that exists nowhere: nothing tells of another environment's objects.
            raise ValidationError({"connection": f"no connection '{self.connection.name}'"})


class APIKey(models.Model):
    """A gateway client key. Only its SHA-256 digest is stored; `prefix` identifies it to people."""

    environment = _environment_field("api_keys")
    name = models.SlugField(max_length=NAME_LENGTH, help_text="Unique in its environment.")
    prefix = models.CharField(max_length=API_KEY_PREFIX_LENGTH, editable=False)
    # Unique installation-wide: the flat /v1/ paths find a key of any environment by its digest.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    all_resources = models.BooleanField(default=False, help_text="Allow every resource, present and future.")
    resources = models.ManyToManyField(AIResource, blank=True, related_name="api_keys")
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"
        constraints = [models.UniqueConstraint(fields=["environment", "name"], name="api_key_name_unique")]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def digest_of(key: str) -> str:
        # Keys are long random strings, so a fast unsalted digest is safe and keeps lookup O(1).
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def key_set(self, key: str) -> None:
        if len(key) < API_KEY_MIN_LENGTH:
            raise ValidationError(f"must be at least {API_KEY_MIN_LENGTH} characters")
        if any(ch.isspace() for ch in key) or not key.isprintable():
            raise ValidationError("must not contain whitespace or control characters")
        self.digest = self.digest_of(key)
        self.prefix = key[:API_KEY_PREFIX_LENGTH]


pricing_model_validator = RegexValidator(
    r"^[^*\s\x00-\x1f\x7f]+\*?$",
    "An upstream model id, or a prefix ending in * (e.g. my-finetune-*); no spaces or control characters.",
)


class PricingEntry(models.Model):
    """The price of an upstream model (USD per 1M tokens), over the bundled table of OpenAI's
    published prices. `model` is an exact id or a `prefix*` pattern (the longest match wins)."""

    model = models.CharField(max_length=MODEL_ID_LENGTH, unique=True, validators=[pricing_model_validator])
    input = models.DecimalField(max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    cached_input = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Blank: cached input tokens cost the input price.",
    )
    output = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(0)], help_text="Reasoning tokens count here."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]
        verbose_name = "pricing entry"
        verbose_name_plural = "pricing"

    def __str__(self) -> str:
        return self.model


CAPACITY_OWNER_FIELDS = ("connection", "resource", "api_key")
"""The owner foreign keys of a capacity entry; each is also the scope kind the request path uses."""
MAX_CAPACITY_REQUESTS = 2_147_483_647
"""PostgreSQL's integer column: SQLite would store more, so the limit is the same everywhere."""
_PERIOD_LABELS = {"week": "week (from Monday 00:00 UTC)", "lifetime": "lifetime (never resets)"}
_DIMENSION_LABELS = {"": "whole scope", "source-ip": "per source IP", "metadata": "per metadata field"}


class CapacityEntry(models.Model):
    """One capacity limit (DESIGN.md 2.10) of a connection, an AI resource or an API key.

    Requests, tokens and cost are independent ceilings on one counter per window (and per
    dimension value); blank means not limited, but at least one must be given.
    """

    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.CASCADE, related_name="capacity_entries"
    )
    resource = models.ForeignKey(
        AIResource, null=True, blank=True, on_delete=models.CASCADE, related_name="capacity_entries"
    )
    api_key = models.ForeignKey(
        APIKey, null=True, blank=True, on_delete=models.CASCADE, related_name="capacity_entries"
    )
    position = models.PositiveSmallIntegerField(
        default=0, help_text="Order among its owner's limits (for display and export; every limit applies)."
    )
    period = models.CharField(
        max_length=16,
        choices=[(period, _PERIOD_LABELS.get(period, period)) for period in PERIODS],
        help_text="A fixed calendar window in UTC; the counter starts again from zero when it ends.",
    )
    requests = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_CAPACITY_REQUESTS)],
        help_text="Requests admitted per window. Blank: not limited.",
    )
    tokens = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Input + output tokens per window, reserved from an estimate when a request is admitted "
        "and settled with the real count when it ends. Blank: not limited.",
    )
    cost_usd = models.DecimalField(
        "cost (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Spend in US dollars per window at the configured prices, reserved and settled like tokens. "
        "Blank: not limited.",
    )
    dimension = models.CharField(
        max_length=16,
        blank=True,
        default="",
        choices=[(dimension, _DIMENSION_LABELS[dimension]) for dimension in DIMENSIONS],
        help_text="Whole scope: one counter. Per source IP: one counter per client address. "
        "Per metadata field: one counter per value of the vmx.metadata key in Dimension field.",
    )
    dimension_field = models.CharField(
        max_length=64,
        blank=True,
        help_text="The vmx.metadata key to count by (only with the metadata dimension); requests without it "
        "share the counter 'unknown'.",
    )
    enabled = models.BooleanField(default=True, help_text="Untick to keep the limit without enforcing it.")

    class Meta:
        ordering = ["position", "id"]
        verbose_name = "capacity limit"
        verbose_name_plural = "capacity limits"
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(connection__isnull=False, resource__isnull=True, api_key__isnull=True)
                    | models.Q(connection__isnull=True, resource__isnull=False, api_key__isnull=True)
                    | models.Q(connection__isnull=True, resource__isnull=True, api_key__isnull=False)
                ),
                name="capacityentry_exactly_one_owner",
                violation_error_message="A capacity limit belongs to exactly one connection, resource or API key.",
            )
        ]

    def __str__(self) -> str:
        limit = self.limit_get()
        metrics = [
            metric
            for metric, value in (
                (Metric.REQUESTS, limit.requests),
                (Metric.TOKENS, limit.tokens),
                (Metric.COST, limit.cost_usd),
            )
            if value is not None
        ]
        text = " and ".join(limit.describe(metric) for metric in metrics) or f"no limit per {self.period}"
        return text if self.enabled else f"{text} (disabled)"

    @property
    def scope_kind(self) -> str:
        """The owner field that is set: `connection`, `resource` or `api_key`."""
        for name in CAPACITY_OWNER_FIELDS:
            if getattr(self, f"{name}_id") is not None:
                return name
        raise ValueError("this capacity limit has no owner")

    def limit_get(self) -> CapacityLimit:
        """The frozen view the request path reads (cost as a float: it is counted in nano-USD)."""
        return CapacityLimit(
            period=self.period,
            requests=self.requests,
            tokens=self.tokens,
            cost_usd=None if self.cost_usd is None else float(self.cost_usd),
            dimension=self.dimension,
            dimension_field=self.dimension_field,
        )

    def clean(self) -> None:
        if self.requests is None and self.tokens is None and self.cost_usd is None:
            raise ValidationError("Give at least one of requests, tokens or cost (USD).")
        if self.dimension == "metadata":
            if not self.dimension_field.strip():
                raise ValidationError({"dimension_field": "required when dimension is metadata"})
            # As the request envelope refuses them in vmx.metadata keys, so such a field could never match.
            if has_control_characters(self.dimension_field):
                raise ValidationError({"dimension_field": "must not contain control characters"})
        elif self.dimension_field:
            raise ValidationError({"dimension_field": "must be empty unless dimension is metadata"})


class ConfigRevision(models.Model):
    """A single counter bumped on every configuration change (see module docstring)."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"revision {self.value}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1
        super().save(*args, **kwargs)


MANAGEMENT_TOKEN_PREFIX_LENGTH = 8
"""The token characters kept in the clear, to look a token up and recognise it in the admin."""


def management_token_digest(value: str) -> str:
    """What is stored of a management API token: its SHA-256, never the value."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class ManagementToken(models.Model):
    """A management API token (`Authorization: Token <value>`): only its digest and first
    characters are stored; it works until `expires_at` (if set) unless `revoked_at` is set."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="management_tokens")
    prefix = models.CharField(max_length=MANAGEMENT_TOKEN_PREFIX_LENGTH, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
