"""The management API's shared policy (DESIGN.md 2.11): who may call it, and how errors look.
Both halves of the API use it: the configuration (`connections.api.views`) and what the gateway
records (`gateway.api`).

Invariants:
- Only active staff users get in (a DRF token or the admin's session); Django's model permissions
  then decide each call, reads included: a staff user with only *view* permissions reads and gets
  403 on every write.
- Every error is JSON in DRF's shape (`{"field": ["message"]}` or `{"detail": "..."}`), an
  unexpected exception included: it is logged with its traceback and answered with a 500 that
  names nothing of it (a message could carry a secret).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from django.db import IntegrityError
from django.db.models import Model, ProtectedError
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.core.jsonchecks import MAX_JSON_DEPTH, depth_exceeds

if TYPE_CHECKING:
    # Not at run time: DRF imports this module's permission class while rest_framework.views loads.
    from rest_framework.views import APIView

logger = logging.getLogger("vmx.api")

VIEW = "view"
ADD = "add"
CHANGE = "change"
DELETE = "delete"


def model_permissions(models: Sequence[type[Model]], *actions: str) -> list[str]:
    """`["connections.view_connection", ...]` for every model and action."""
    return [f"{m._meta.app_label}.{action}_{m._meta.model_name}" for m in models for action in actions]


class StaffModelPermissions(DjangoModelPermissions):
    """Staff only, then Django's model permissions, with *view* required for reads.

    A view may name its own requirement with `get_required_permissions(request)` (views that are
    not one model's list: audit, usage, configuration); when it has none, or that returns None,
    its queryset's model decides.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        own = getattr(view, "get_required_permissions", None)
        required = own(request) if own is not None else None
        if required is not None:
            return bool(user.has_perms(required))
        return super().has_permission(request, view)


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


class JSONDocumentParser(BaseParser):
    """JSON bodies, parsed by orjson (which refuses lone surrogates) and at most MAX_JSON_DEPTH deep:
    deeper documents are refused before any recursive code walks them."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error: {exc}") from None
        if depth_exceeds(data, MAX_JSON_DEPTH):
            raise exceptions.ParseError(f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
        return data


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service the gateway depends on is unavailable."
    default_code = "service_unavailable"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a delete refused because something still uses the object is a 409,
    and anything unexpected a JSON 500 instead of Django's HTML page."""
    from rest_framework.views import exception_handler

    from connections.crypto import EncryptionKeyError

    if isinstance(exc, EncryptionKeyError):  # reads decrypt to know which secrets are set
        exc = ServiceUnavailableError(str(exc))
    elif isinstance(exc, ProtectedError):
        # A connection's users are model entries; name the resource each belongs to.
        owners = (getattr(obj, "resource", obj) for obj in exc.protected_objects)
        users = sorted({f"{owner._meta.verbose_name} '{owner}'" for owner in owners})
        exc = ConflictError(f"Still used by {', '.join(users)}: change or delete those first.")
    elif isinstance(exc, IntegrityError):  # two writers raced for one name (ProtectedError is one too)
        exc = ConflictError("Another request changed the same object at the same moment; try again.")
    response = exception_handler(exc, context)
    if response is not None:
        return response
    request = context.get("request")
    # %r: a path is client text, and a NUL or a newline in it must not reach the log raw.
    logger.error("unexpected error in %r", getattr(request, "path", "?"), exc_info=exc)
    return Response({"detail": "The gateway failed to process the request; see its log."}, status=500)
