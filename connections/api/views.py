"""The management API's endpoints over the configuration (the invariants: `connections.api`).

Every write goes through the config file's code and the services; a rename or a delete is a
service call (`connections.services`), as in the admin.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from connections.api.base import (
    ADD,
    CHANGE,
    DELETE,
    NON_FIELD,
    VIEW,
    JSONDocumentParser,
    ServiceUnavailableError,
    model_permissions,
    problems_as_errors,
)
from connections.api.formats import TextYAMLConfigParser, YAMLConfigParser, YAMLConfigRenderer
from connections.api.serializers import (
    APIKeyCreatedSerializer,
    APIKeySerializer,
    ConfigObjectSerializer,
    ConnectionSerializer,
    PricingSerializer,
    ResourceSerializer,
)
from connections.config_export import (
    api_keys_for_export,
    config_export,
    connections_for_export,
    dollars_escaped,
    resources_for_export,
)
from connections.config_file import ConfigDoc, ConfigFileError, config_apply, config_parse
from connections.crypto import EncryptionKeyError
from connections.models import AIResource, APIKey, CapacityEntry, Connection, ModelEntry, PricingEntry
from connections.services import (
    RENAME_WITH_LIMITS_DENIED,
    config_object_delete,
    config_object_rename,
    config_object_rename_permitted,
    connection_check,
)
from gateway.core.jsonchecks import has_unstorable_characters

CONFIG_MODELS: tuple[type[Model], ...] = (Connection, AIResource, APIKey, PricingEntry)
CONFIG_PARTS: tuple[type[Model], ...] = (ModelEntry, CapacityEntry)
"""Edited inside their owners (the admin's inlines), with permissions of their own."""


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

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # No stored name holds a NUL or a lone surrogate (the database refuses them; PostgreSQL
        # with an error): such a name is simply not found, before any query sees it.
        name = self.kwargs.get(self.lookup_field)
        if isinstance(name, str) and has_unstorable_characters(name):
            raise Http404(f"No {self.kind} with that name.")

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
        if new_name != name and not config_object_rename_permitted(user=request.user, obj=obj):
            raise PermissionDenied(RENAME_WITH_LIMITS_DENIED.format(kind=self.kind))
        with transaction.atomic():
            if new_name != name:
                self._rename(obj, new_name)
            serializer.apply(doc)
        return Response(self.represent(new_name))

    def _rename(self, obj: Any, new_name: str) -> None:
        if self.get_queryset().filter(**{self.name_field: new_name}).exists():
            raise serializers.ValidationError({self.name_field: [f"a {self.kind} named '{new_name}' already exists"]})
        try:
            config_object_rename(obj=obj, name=new_name)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(
                {self.name_field: exc.message_dict.get(self.name_field, exc.messages)}
            ) from exc

    def destroy(self, request: Request, name: str) -> Response:
        config_object_delete(obj=self.get_object())
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
