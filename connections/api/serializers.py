"""The management API's shapes: one serializer per configuration object, in the config file's
camelCase. The declared fields describe the shapes for the OpenAPI schema, with the limits the
models define; reading and writing go through the config file's code (`config_parse`,
`config_apply`), never through field validation, so the API and `vmx_apply` accept and refuse
the same documents with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

from rest_framework import serializers

from connections.api.base import NON_FIELD, ServiceUnavailableError, problems_as_errors
from connections.config_export import api_key_export, connection_export, price_export, resource_export
from connections.config_file import ApplyReport, ConfigDoc, ConfigFileError, config_apply, config_parse
from connections.crypto import EncryptionKeyError
from connections.models import (
    DEFAULT_TIMEOUT_MS,
    MAX_CAPACITY_REQUESTS,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT_MS,
    MIN_TIMEOUT_MS,
    MODEL_ID_LENGTH,
    NAME_LENGTH,
    RESOURCE_NAME_LENGTH,
    AIResource,
    APIKey,
    Connection,
    PricingEntry,
)
from gateway.core.limits import DIMENSIONS, PERIODS
from gateway.providers.registry import provider_choices


def _timestamps(obj: Any) -> dict[str, str]:
    return {
        "createdAt": obj.created_at.isoformat().replace("+00:00", "Z"),
        "updatedAt": obj.updated_at.isoformat().replace("+00:00", "Z"),
    }


def full_shape(fields: Mapping[str, serializers.Field[Any, Any, Any, Any]], item: Mapping[str, Any]) -> dict[str, Any]:
    """`item` (the file's compact form, which leaves out defaults and empty parts) with every
    readable field of `fields` present: a default where the field has one, `[]` for a list, `{}`
    for a mapping, `""` for a text with blanks allowed, else null. Reads then have one stable shape
    whatever is stored, as the schema documents it."""
    full: dict[str, Any] = {}
    for name, spec in fields.items():
        if spec.write_only:
            continue
        if name in item:
            value = item[name]
            if isinstance(spec, serializers.ListSerializer) and isinstance(spec.child, serializers.Serializer):
                value = [full_shape(spec.child.fields, v) for v in value]
            elif isinstance(spec, serializers.Serializer) and isinstance(value, Mapping):
                value = full_shape(spec.fields, value)
            full[name] = value
        elif spec.default is not serializers.empty:
            full[name] = spec.default
        elif isinstance(spec, serializers.ListSerializer | serializers.ListField):
            full[name] = []
        elif isinstance(spec, serializers.DictField):
            full[name] = {}
        elif isinstance(spec, serializers.CharField) and spec.allow_blank:
            full[name] = ""
        else:
            full[name] = None
    full.update((name, value) for name, value in item.items() if name not in full)
    return full


class CapacityLimitSerializer(serializers.Serializer[Any]):
    period = serializers.ChoiceField(choices=PERIODS)
    requests = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_CAPACITY_REQUESTS)
    tokens = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    costUsd = serializers.FloatField(required=False, allow_null=True, min_value=0)
    dimension = serializers.ChoiceField(choices=[d for d in DIMENSIONS if d], required=False, allow_null=True)
    dimensionField = serializers.CharField(
        required=False, allow_null=True, help_text="The vmx.metadata key; with metadata."
    )
    enabled = serializers.BooleanField(default=True)


class ConfigObjectSerializer(serializers.Serializer[Any]):
    """One object of the config file, read and written as the file's code reads and writes it."""

    section: ClassVar[str]
    """The file's list this object belongs in: `connections`, `resources`, `apiKeys`, `pricing`."""
    read_only_names: ClassVar[tuple[str, ...]] = ("createdAt", "updatedAt")

    def export(self, instance: Any) -> dict[str, Any]:
        raise NotImplementedError

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return full_shape(self.fields, {**self.export(instance), **_timestamps(instance)})

    def run_validation(self, data: Any = serializers.empty) -> ConfigDoc:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({NON_FIELD: ["Expected a JSON object."]})
        document = {key: value for key, value in data.items() if key not in self.read_only_names}
        try:
            return config_parse({self.section: [document]}, expand_env=False)
        except ConfigFileError as exc:
            raise serializers.ValidationError(problems_as_errors(exc.problems, prefix=f"{self.section}[0]")) from exc

    def apply(self, doc: ConfigDoc) -> ApplyReport:
        """Write `doc` (one object), in the caller's transaction."""
        try:
            return config_apply(doc)
        except ConfigFileError as exc:
            raise serializers.ValidationError(problems_as_errors(exc.problems, prefix=f"{self.section}[0]")) from exc
        except EncryptionKeyError as exc:
            raise ServiceUnavailableError(str(exc)) from exc


class ConnectionSerializer(ConfigObjectSerializer):
    section = "connections"

    name = serializers.SlugField(max_length=NAME_LENGTH)
    provider = serializers.ChoiceField(choices=[])
    description = serializers.CharField(required=False, allow_blank=True)
    config = serializers.DictField(
        help_text="Provider settings (openai: apiKey, baseURL, organization, project). Secrets are "
        "write-only: reads show ******** and sending ******** back keeps the stored value."
    )
    enabled = serializers.BooleanField(default=True)
    capacity = CapacityLimitSerializer(many=True, required=False)
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(serializers.ChoiceField, self.fields["provider"]).choices = provider_choices()

    def export(self, instance: Connection) -> dict[str, Any]:
        return connection_export(instance)


class ModelEntrySerializer(serializers.Serializer[Any]):
    connection = serializers.CharField(max_length=NAME_LENGTH)
    model = serializers.CharField(max_length=MODEL_ID_LENGTH, help_text="The upstream model id, forwarded verbatim.")
    maxRetries = serializers.IntegerField(default=0, min_value=0, max_value=MAX_RETRIES_LIMIT)
    timeoutMs = serializers.IntegerField(default=DEFAULT_TIMEOUT_MS, min_value=MIN_TIMEOUT_MS, max_value=MAX_TIMEOUT_MS)
    reasoning = serializers.BooleanField(default=True, help_text="false for a model that rejects reasoning.")


class ResourceSerializer(ConfigObjectSerializer):
    section = "resources"

    name = serializers.CharField(max_length=RESOURCE_NAME_LENGTH, help_text="What clients send as `model`.")
    description = serializers.CharField(required=False, allow_blank=True)
    model = ModelEntrySerializer(help_text="The primary model.")
    fallbackModels = ModelEntrySerializer(many=True, required=False)
    defaultArgs = serializers.DictField(required=False, help_text="Applied under the client's body.")
    enabled = serializers.BooleanField(default=True)
    capacity = CapacityLimitSerializer(many=True, required=False)
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)

    def export(self, instance: AIResource) -> dict[str, Any]:
        return resource_export(instance)


class APIKeySerializer(ConfigObjectSerializer):
    section = "apiKeys"
    read_only_names = ("createdAt", "updatedAt", "keyPrefix")

    name = serializers.SlugField(max_length=NAME_LENGTH)
    key = serializers.CharField(
        write_only=True,
        required=False,
        help_text="Optional explicit value (at least 20 characters); otherwise one is generated. "
        "Answered once, by the create; giving it on an update replaces the key's value.",
    )
    resources = serializers.JSONField(help_text='A list of resource names, or "*" for every resource.')
    enabled = serializers.BooleanField(default=True)
    expiresAt = serializers.DateTimeField(required=False, allow_null=True)
    capacity = CapacityLimitSerializer(many=True, required=False)
    keyPrefix = serializers.CharField(read_only=True, help_text="The first characters, to recognise it.")
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)

    def export(self, instance: APIKey) -> dict[str, Any]:
        return {**api_key_export(instance), "keyPrefix": instance.prefix}


class APIKeyCreatedSerializer(APIKeySerializer):
    """The answer to a create: the key's value, this once."""

    key = serializers.CharField(read_only=True, help_text="The key's value. Store it now: it is never shown again.")


class PricingSerializer(ConfigObjectSerializer):
    section = "pricing"

    model = serializers.CharField(
        max_length=MODEL_ID_LENGTH, help_text="An upstream model id, or a prefix ending in * (my-finetune-*)."
    )
    input = serializers.FloatField(min_value=0, help_text="USD per 1M input tokens.")
    cachedInput = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="USD per 1M cached input tokens (default: input)."
    )
    output = serializers.FloatField(min_value=0, help_text="USD per 1M output tokens, reasoning included.")
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)

    def export(self, instance: PricingEntry) -> dict[str, Any]:
        return price_export(instance)
