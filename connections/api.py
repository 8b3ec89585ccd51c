"""The management API over the configuration (DESIGN.md 2.11): connections, resources, API keys,
pricing and the whole configuration as one document.

Invariants:
- One validation path. A request body is read exactly as an entry of the config file: the
  serializers hand it to `config_file.config_parse` and write through `config_file.config_apply`,
  the code `vmx_apply` runs, over the services the admin uses. A mistake gets the file's message
  under the same path, without the section prefix (`fallbackModels[1].connection`).
- Shapes are the file's (camelCase); reads add only read-only facts (`createdAt`, `updatedAt`,
  an API key's `keyPrefix`), which writes ignore, so a GET body can be PUT back unchanged.
- Secrets are write-only: every read, and every answer to a write, shows `********` in their
  place, and sending `********` back keeps the stored value. An API key's value appears once, in
  the answer to the create that made it.
- `${VAR}` references are refused, never expanded: the server's environment is not the caller's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Model
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from connections.config_file import (
    ApplyReport,
    ConfigDoc,
    ConfigFileError,
    api_key_export,
    api_keys_for_export,
    config_apply,
    config_export,
    config_parse,
    config_text_parse,
    config_yaml_dump,
    connection_export,
    connections_for_export,
    dollars_escaped,
    price_export,
    resource_export,
    resources_for_export,
)
from connections.crypto import EncryptionKeyError
from connections.models import AIResource, APIKey, CapacityEntry, Connection, ModelEntry, PricingEntry
from connections.services import connection_check
from gateway.capacity.policy import PERIODS
from gateway.providers.registry import provider_choices
from vmx_project.api import (
    ADD,
    CHANGE,
    DELETE,
    VIEW,
    JSONDocumentParser,
    ServiceUnavailableError,
    model_permissions,
)

CONFIG_MODELS: tuple[type[Model], ...] = (Connection, AIResource, APIKey, PricingEntry)
CONFIG_PARTS: tuple[type[Model], ...] = (ModelEntry, CapacityEntry)
"""Edited inside their owners (the admin's inlines), with permissions of their own."""
NON_FIELD = "non_field_errors"
_PROBLEM = re.compile(r"^(?P<path>[^:]*?): (?P<message>.*)$", re.DOTALL)


def problems_as_errors(problems: Sequence[str], *, prefix: str = "") -> dict[str, list[str]]:
    """`config_parse`/`config_apply` complaints as DRF's `{"field path": ["message"]}`.

    A complaint reads `path: message`; `prefix` (`resources[0]`) is the place the document gave
    the object and is cut, so the caller sees paths in the body it sent.
    """
    errors: dict[str, list[str]] = {}
    for problem in problems:
        match = _PROBLEM.match(problem)
        path, message = (match.group("path"), match.group("message")) if match else ("", problem)
        if prefix and (path == prefix or path.startswith((f"{prefix}.", f"{prefix}["))):
            path = path[len(prefix) :].lstrip(".")
        errors.setdefault(path or NON_FIELD, []).append(message)
    return errors


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _timestamps(obj: Any) -> dict[str, str]:
    return {
        "createdAt": obj.created_at.isoformat().replace("+00:00", "Z"),
        "updatedAt": obj.updated_at.isoformat().replace("+00:00", "Z"),
    }


# ---------------------------------------------------------------------------------------------
# Serializers. The declared fields describe the shapes for the OpenAPI schema; reading and writing
# go through the config file's code (see the module docstring), never through field validation.


class CapacityLimitSerializer(serializers.Serializer[Any]):
    period = serializers.ChoiceField(choices=PERIODS)
    requests = serializers.IntegerField(required=False, min_value=0)
    tokens = serializers.IntegerField(required=False, min_value=0)
    costUsd = serializers.FloatField(required=False, min_value=0)
    dimension = serializers.ChoiceField(choices=["source-ip", "metadata"], required=False)
    dimensionField = serializers.CharField(required=False, help_text="The vmx.metadata key; with metadata.")
    enabled = serializers.BooleanField(default=True)


class ConfigObjectSerializer(serializers.Serializer[Any]):
    """One object of the config file, read and written as the file's code reads and writes it."""

    section: ClassVar[str]
    """The file's list this object belongs in: `connections`, `resources`, `apiKeys`, `pricing`."""
    read_only_names: ClassVar[tuple[str, ...]] = ("createdAt", "updatedAt")

    def export(self, instance: Any) -> dict[str, Any]:
        raise NotImplementedError

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {**self.export(instance), **_timestamps(instance)}

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

    name = serializers.SlugField(max_length=64)
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
    connection = serializers.CharField()
    model = serializers.CharField(help_text="The upstream model id, forwarded verbatim.")
    maxRetries = serializers.IntegerField(default=0, min_value=0, max_value=10)
    timeoutMs = serializers.IntegerField(default=600_000, min_value=1)
    reasoning = serializers.BooleanField(default=True, help_text="false for a model that rejects reasoning.")


class ResourceSerializer(ConfigObjectSerializer):
    section = "resources"

    name = serializers.CharField(help_text="What clients send as `model`.")
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

    name = serializers.SlugField(max_length=64)
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

    model = serializers.CharField(help_text="An upstream model id, or a prefix ending in * (my-finetune-*).")
    input = serializers.FloatField(min_value=0, help_text="USD per 1M input tokens.")
    cachedInput = serializers.FloatField(
        required=False, min_value=0, help_text="USD per 1M cached input tokens (default: input)."
    )
    output = serializers.FloatField(min_value=0, help_text="USD per 1M output tokens, reasoning included.")
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)

    def export(self, instance: PricingEntry) -> dict[str, Any]:
        return price_export(instance)


# ---------------------------------------------------------------------------------------------
# Views


class ConfigObjectViewSet(GenericViewSet[Any]):
    """List, create, get, replace (PUT), merge-patch (PATCH, RFC 7396) and delete one kind of
    configuration object, by name. A PUT or PATCH may rename the object (`name` in the body)."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    name_field: ClassVar[str] = "name"
    """The field that names the object in the file (pricing: `model`)."""
    kind: ClassVar[str]
    """How messages name the object."""
    report_kind: ClassVar[str]
    """How `ApplyReport.changes` names it."""
    serializer_class: type[ConfigObjectSerializer]

    def get_object(self) -> Any:
        name = self.kwargs[self.lookup_field]
        obj = self.get_queryset().filter(**{self.name_field: name}).first()
        if obj is None:
            raise Http404(f"No {self.kind} named '{name}'.")
        return obj

    def get_serializer_class(self) -> type[ConfigObjectSerializer]:
        return self.serializer_class

    def get_serializer(self, *args: Any, **kwargs: Any) -> ConfigObjectSerializer:
        return cast(ConfigObjectSerializer, super().get_serializer(*args, **kwargs))

    def represent(self, name: str, **extra: Any) -> dict[str, Any]:
        obj = self.get_queryset().get(**{self.name_field: name})
        return {**self.get_serializer().to_representation(obj), **extra}

    def list(self, request: Request) -> Response:
        serializer = self.get_serializer()
        return Response([serializer.to_representation(obj) for obj in self.get_queryset()])

    def retrieve(self, request: Request, name: str) -> Response:
        return Response(self.get_serializer().to_representation(self.get_object()))

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer()
        doc = serializer.run_validation(request.data)
        name = self._doc_name(doc)
        if self.get_queryset().filter(**{self.name_field: name}).exists():
            path = f"{request.path.rstrip('/')}/{name}/"
            raise serializers.ValidationError(
                {self.name_field: [f"a {self.kind} named '{name}' already exists; PUT or PATCH {path} to change it"]}
            )
        self.check_part_permissions(request, before=None, after=self._doc_item(doc))
        with transaction.atomic():
            report = serializer.apply(doc)
            if (self.report_kind, name, "created") not in report.changes:
                # Someone created it between the check above and this write: not ours to change.
                raise serializers.ValidationError({self.name_field: [f"a {self.kind} named '{name}' already exists"]})
        extra = self.created_extra(doc, report.created_keys)
        return Response(self.represent(name, **extra), status=status.HTTP_201_CREATED)

    def created_extra(self, doc: ConfigDoc, generated: Mapping[str, str]) -> dict[str, Any]:
        """Fields only the answer to a create carries."""
        return {}

    def update(self, request: Request, name: str) -> Response:
        return self._replace(request, name, partial=False)

    def partial_update(self, request: Request, name: str) -> Response:
        return self._replace(request, name, partial=True)

    def _replace(self, request: Request, name: str, *, partial: bool) -> Response:
        obj = self.get_object()
        serializer = self.get_serializer()
        data: Any = request.data
        current = {k: v for k, v in serializer.to_representation(obj).items() if k not in serializer.read_only_names}
        if partial:
            if not isinstance(data, Mapping):
                raise serializers.ValidationError({NON_FIELD: ["Expected a JSON object (a merge patch)."]})
            data = merge_patch(current, data)
        elif isinstance(data, Mapping) and self.name_field not in data:
            data = {self.name_field: dollars_escaped(name), **data}
        doc = serializer.run_validation(data)
        new_name = self._doc_name(doc)
        try:
            before = self._doc_item(serializer.run_validation(current))
        except serializers.ValidationError:  # stored in a shape the file cannot say (e.g. no model)
            before = None
        self.check_part_permissions(request, before=before, after=self._doc_item(doc))
        with transaction.atomic():
            if new_name != name:
                self._rename(obj, new_name)
            serializer.apply(doc)
        return Response(self.represent(new_name))

    def _rename(self, obj: Any, new_name: str) -> None:
        if self.get_queryset().filter(**{self.name_field: new_name}).exists():
            raise serializers.ValidationError({self.name_field: [f"a {self.kind} named '{new_name}' already exists"]})
        setattr(obj, self.name_field, new_name)
        # The services validate only what changed, and after a rename nothing else may have.
        others = [f.name for f in obj._meta.fields if f.name != self.name_field]
        try:
            obj.full_clean(exclude=others)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(
                {self.name_field: exc.message_dict.get(self.name_field, exc.messages)}
            ) from exc
        obj.save(update_fields=[self.name_field, "updated_at"])

    def destroy(self, request: Request, name: str) -> Response:
        self.get_object().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _doc_item(self, doc: ConfigDoc) -> Any:
        items: list[Any] = getattr(doc, _DOC_LISTS[self.get_serializer_class().section])
        return items[0]

    def _doc_name(self, doc: ConfigDoc) -> str:
        return str(self._doc_item(doc).name)

    def check_part_permissions(self, request: Request, *, before: Any, after: Any) -> None:
        """Limits and model entries are objects of their own, which the admin edits inline under
        their own permissions: a write that changes them needs those too, as in the admin."""
        parts = [("capacity", CapacityEntry), ("models", ModelEntry)]
        for attribute, model in parts:
            if not hasattr(after, attribute):
                continue
            old, new = getattr(before, attribute, []) if before is not None else [], getattr(after, attribute)
            if old != new and not request.user.has_perms(model_permissions([model], ADD, CHANGE, DELETE)):
                plural = model._meta.verbose_name_plural
                raise PermissionDenied(
                    f"Changing {attribute} needs the add, change and delete permissions on {plural}."
                )


def documented(singular: str, plural: str, **overrides: dict[str, Any]) -> Any:
    """The schema's summaries for a ConfigObjectViewSet; `overrides` are extend_schema arguments by action."""
    summaries = {
        "list": f"List {plural}",
        "create": f"Create {singular}",
        "retrieve": f"Get {singular}",
        "update": f"Replace {singular}",
        "partial_update": f"Change {singular} (JSON merge patch)",
        "destroy": f"Delete {singular}",
    }
    return extend_schema_view(
        **{
            action: extend_schema(
                **{
                    "summary": summary,
                    **({"responses": {204: None}} if action == "destroy" else {}),
                    **overrides.get(action, {}),
                }
            )
            for action, summary in summaries.items()
        }
    )


_IN_USE = OpenApiResponse(description="Still used by a resource")


_DOC_LISTS = {"connections": "connections", "resources": "resources", "apiKeys": "api_keys", "pricing": "pricing"}

_CHECK_RESULT = inline_serializer(
    name="ConnectionCheck",
    fields={
        "ok": serializers.BooleanField(),
        "latencyMs": serializers.FloatField(),
        "detail": serializers.CharField(help_text="What the upstream answered, or why the check failed."),
    },
)


@documented("a connection", "connections", destroy={"responses": {204: None, 409: _IN_USE}})
class ConnectionViewSet(ConfigObjectViewSet):
    queryset = connections_for_export()
    serializer_class = ConnectionSerializer
    kind = report_kind = "connection"

    def get_required_permissions(self, request: Request) -> list[str] | None:
        if self.action == "check":  # the admin offers this action to whoever may see connections
            return model_permissions([Connection], VIEW)
        return None

    @extend_schema(summary="Check a connection (one cheap upstream call)", request=None, responses=_CHECK_RESULT)
    @action(detail=True, methods=["post"])
    def check(self, request: Request, name: str) -> Response:
        try:
            result = connection_check(connection=self.get_object())
        except EncryptionKeyError as exc:
            raise ServiceUnavailableError(str(exc)) from exc
        return Response({"ok": result.ok, "latencyMs": round(result.latency_ms, 1), "detail": result.detail})


@documented("an AI resource", "AI resources")
class ResourceViewSet(ConfigObjectViewSet):
    queryset = resources_for_export()
    serializer_class = ResourceSerializer
    kind = report_kind = "resource"
    lookup_value_regex = ".+?"  # resource names may hold '/' (`team/default`)


@documented(
    "an API key",
    "API keys",
    create={"responses": {201: APIKeyCreatedSerializer}, "request": APIKeySerializer},
)
class APIKeyViewSet(ConfigObjectViewSet):
    queryset = api_keys_for_export()
    serializer_class = APIKeySerializer
    kind = "API key"
    report_kind = "api key"

    def created_extra(self, doc: ConfigDoc, generated: Mapping[str, str]) -> dict[str, Any]:
        key = doc.api_keys[0]
        return {"key": generated.get(key.name) or key.key}

    def create(self, request: Request) -> Response:
        response = super().create(request)
        response["Cache-Control"] = "no-store"  # the only answer that carries the key's value
        return response


@documented(
    "a model's price",
    "model prices (USD per 1M tokens) over the bundled table",
    create={"summary": "Price a model"},
    destroy={"summary": "Delete a model's price (the bundled table applies again)"},
)
class PricingViewSet(ConfigObjectViewSet):
    queryset = PricingEntry.objects.order_by("model")
    serializer_class = PricingSerializer
    kind = "price"
    report_kind = "pricing"
    lookup_field = "model"
    name_field = "model"
    lookup_value_regex = ".+?"  # model ids may hold '/' (`meta-llama/Llama-3.3-70B`)

    def retrieve(self, request: Request, model: str) -> Response:
        return super().retrieve(request, model)

    def update(self, request: Request, model: str) -> Response:
        return super().update(request, model)

    def partial_update(self, request: Request, model: str) -> Response:
        return super().partial_update(request, model)

    def destroy(self, request: Request, model: str) -> Response:
        return super().destroy(request, model)


# ---------------------------------------------------------------------------------------------
# The whole configuration as one document


class YAMLConfigRenderer(BaseRenderer):
    """`?format=yaml`: the file `vmx_export` writes (secrets masked)."""

    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return config_yaml_dump(data).encode()


class YAMLConfigParser(BaseParser):
    """A config file as the body (`Content-Type: application/yaml`), as `vmx_apply` reads one,
    but without YAML aliases (a few hundred bytes of them expand to gigabytes)."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return config_text_parse(stream.read().decode("utf-8"), source="the request body", allow_aliases=False)
        except UnicodeDecodeError as exc:
            raise serializers.ValidationError({NON_FIELD: ["The body is not UTF-8 text."]}) from exc
        except ConfigFileError as exc:
            raise serializers.ValidationError({NON_FIELD: exc.problems}) from exc


class TextYAMLConfigParser(YAMLConfigParser):
    media_type = "text/yaml"


_CHANGES = inline_serializer(
    name="ConfigChanges",
    fields={
        "dryRun": serializers.BooleanField(),
        "changed": serializers.BooleanField(),
        "changes": serializers.DictField(
            help_text="Per section (connections, resources, apiKeys, pricing), the names created, updated, "
            "deleted and unchanged."
        ),
        "createdKeys": serializers.DictField(
            child=serializers.CharField(),
            help_text="Values generated for new API keys, by name: shown once (never on a dry run).",
        ),
    },
)


class ConfigView(APIView):
    """GET the whole configuration in the config-file format; POST a document to apply it."""

    renderer_classes = [JSONRenderer, YAMLConfigRenderer]
    parser_classes = [JSONDocumentParser, YAMLConfigParser, TextYAMLConfigParser]

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # YAML is for the configuration itself: errors, metadata and reports are JSON.
        if request.method != "GET" or response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def get_required_permissions(self, request: Request) -> list[str]:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return model_permissions(CONFIG_MODELS, VIEW)
        actions = [ADD, CHANGE, DELETE] if _flag(request, "prune") else [ADD, CHANGE]
        # A document replaces limits and model entries whole: those need every permission.
        return model_permissions(CONFIG_MODELS, *actions) + model_permissions(CONFIG_PARTS, ADD, CHANGE, DELETE)

    @extend_schema(
        summary="Export the configuration (secrets masked)",
        parameters=[OpenApiParameter("format", str, enum=["json", "yaml"], description="yaml: the vmx_export file")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        return Response(config_export())

    @extend_schema(
        summary="Apply a configuration document (as vmx_apply)",
        parameters=[
            OpenApiParameter("prune", bool, description="Delete objects the document does not list."),
            OpenApiParameter("dry_run", bool, description="Answer what would change; change nothing."),
        ],
        request={
            "application/json": OpenApiTypes.OBJECT,
            "application/yaml": OpenApiTypes.STR,
            "text/yaml": OpenApiTypes.STR,
        },
        responses={(200, "application/json"): _CHANGES},
    )
    def post(self, request: Request) -> Response:
        dry_run, prune = _flag(request, "dry_run"), _flag(request, "prune")
        if prune and not request.data:
            # An empty body is more likely a mistake than a wish to delete everything.
            raise serializers.ValidationError(
                {
                    NON_FIELD: [
                        "An empty document with prune=true would delete everything; to do that, "
                        'send {"connections": [], "resources": [], "apiKeys": [], "pricing": []}.'
                    ]
                }
            )
        try:
            doc = config_parse(request.data, expand_env=False)
            report = config_apply(doc, prune=prune, dry_run=dry_run)
        except ConfigFileError as exc:
            raise serializers.ValidationError(problems_as_errors(exc.problems)) from exc
        except EncryptionKeyError as exc:
            raise ServiceUnavailableError(str(exc)) from exc
        body = {
            "dryRun": dry_run,
            "changed": report.changed,
            "changes": report.by_section(),
            "createdKeys": {} if dry_run else report.created_keys,
        }
        response = Response(body)
        if report.created_keys and not dry_run:
            response["Cache-Control"] = "no-store"
        return response


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "")
    if value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise serializers.ValidationError({name: ["must be true or false"]})
