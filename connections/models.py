"""Connections, AI resources (with their model entries) and gateway API keys.

Validation lives here (`clean()`), so the admin, the config file and the commands share it; writes
go through `connections.services`. Any save or delete bumps `ConfigRevision`, which is how every
worker learns that its in-process snapshot (`connections.selectors`) is stale.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from connections.crypto import EncryptionKeyError, secret_decrypt, secret_encrypt
from gateway.providers.registry import UnknownProviderError, provider_choices, provider_class_get

MAX_RETRIES_LIMIT = 10
DEFAULT_TIMEOUT_MS = 600_000
API_KEY_PREFIX_LENGTH = 8
API_KEY_MIN_LENGTH = 20

resource_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
    "Use letters, digits and . _ : / @ + - (this is what clients send as `model`).",
)


class Connection(models.Model):
    name = models.SlugField(max_length=64, unique=True, help_text="Unique slug, e.g. openai-main.")
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=32, choices=provider_choices)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret provider settings.")
    secrets_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

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
    name = models.CharField(
        max_length=128,
        unique=True,
        validators=[resource_name_validator],
        help_text="What clients send as `model`.",
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
        max_length=200,
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
        validators=[MinValueValidator(1), MaxValueValidator(86_400_000)],
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


class APIKey(models.Model):
    """A gateway client key. Only its SHA-256 digest is stored; `prefix` identifies it to people."""

    name = models.SlugField(max_length=64, unique=True)
    prefix = models.CharField(max_length=API_KEY_PREFIX_LENGTH, editable=False)
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

    model = models.CharField(max_length=200, unique=True, validators=[pricing_model_validator])
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


class ConfigRevision(models.Model):
    """A single counter bumped on every configuration change (see module docstring)."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"revision {self.value}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1
        super().save(*args, **kwargs)
