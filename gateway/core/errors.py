"""One error tree for everything the gateway answers with an error, its tables, and its bodies.

Each class carries its HTTP status and its type in both protocols (OpenAI and Anthropic), so a
view never decides statuses itself: it raises, and the renderer of the caller's shape
(`gateway.v1.renderers`) answers (DESIGN.md 2.8). The bodies are built here, once: the error
objects of both protocols, and the error frames that end a stream already under way. The
Anthropic status and type of an upstream failure come from one table (spec 4.2). Pure: no
Django. Messages never contain secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from gateway.core.sse import sse_data, sse_event


def openai_error_object(
    message: str, *, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: the body of an error answer, and of a Chat stream's error frame."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def anthropic_error_object(error_type: str, message: str) -> dict[str, Any]:
    """Anthropic's error object: the body of an error answer, and of a stream's `error` event."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


class GatewayError(Exception):
    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    anthropic_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def status_code(self) -> int:
        return self.status

    def openai_body(self) -> bytes:
        return orjson.dumps(
            openai_error_object(self.message, error_type=self.openai_type, param=self.param, code=self.code)
        )

    def anthropic_body(self, request_id: str | None = None) -> bytes:
        """Anthropic's error object, with the type a `/v1/messages` client gets (spec 4.1, 4.2)."""
        kind = anthropic_status_and_type(self)[1]
        body = anthropic_error_object(kind, self.message)
        if request_id:
            body["request_id"] = request_id
        return orjson.dumps(body)

    def anthropic_headers(self) -> dict[str, str]:
        """The headers an Anthropic client gets with this error."""
        return dict(self.headers)


class InvalidRequestError(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    openai_type = "invalid_request_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    openai_type = "invalid_request_error"
    anthropic_type = "permission_error"
    default_code = "model_not_allowed"


class NotFoundError(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "method_not_allowed"


class UpgradeRequiredError(GatewayError):
    """A WebSocket handshake: the gateway speaks HTTP only. 426 tells a client that tries
    WebSockets first to send the same request over plain HTTP; the connection it asked to switch
    is not reused. No `Upgrade` header: there is no protocol to upgrade to."""

    status = 426
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "websocket_not_supported"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"WebSockets are not served on {path}: send the request over HTTP (POST) instead.",
            headers={"connection": "close"},
        )


class RequestTooLargeError(GatewayError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


LONGEST_SDK_WAIT_SECONDS = 60
"""The openai and anthropic SDKs honour a Retry-After up to a minute and back off briefly beyond."""


class CapacityExceededError(GatewayError):
    """A limit of the API key, the resource or every connection is used up (DESIGN.md 2.10).

    `retry_after` is the seconds until the window ends (None for `lifetime`). When waiting is
    longer than an SDK would wait (or forever), `x-should-retry: false` spares the client retries
    that cannot succeed.
    """

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "capacity_exceeded"

    def __init__(self, message: str, *, retry_after: int | None = None, scope: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.scope = scope
        """Whose limit: `api_key`, `resource` or `connection` (metrics label it)."""
        if retry_after is not None:
            self.headers["retry-after"] = str(retry_after)
            self.headers["retry-after-ms"] = str(retry_after * 1000)
        if retry_after is None or retry_after > LONGEST_SDK_WAIT_SECONDS:
            self.headers["x-should-retry"] = "false"


class BudgetExceededError(CapacityExceededError):
    """A `costUsd` limit is spent."""

    openai_type = "insufficient_quota"
    default_code = "budget_exceeded"


class ServiceUnavailableError(GatewayError):
    """The gateway cannot serve yet (e.g. it started while the database was down)."""

    status = 503
    default_code = "service_unavailable"


class UpstreamError(GatewayError):
    """An upstream leg failed; routing moves on to the next leg (DESIGN.md 2.6).

    `tries` is how many HTTP calls the provider made for this leg (1 + its retries).
    """

    def __init__(self, message: str, *, connection: str = "", tries: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.connection = connection
        self.tries = tries

    def redact(self, text: Callable[[str], str], data: Callable[[bytes], bytes]) -> None:
        """Mask the connection's secrets in everything this error would relay or store (2.13)."""
        self.message = text(self.message)
        self.args = (self.message,)
        self.headers = {name: text(value) for name, value in self.headers.items()}


class UpstreamStatusError(UpstreamError):
    """The upstream answered an HTTP error. Its status and body reach the client as they were."""

    def __init__(
        self, *, status: int, body: bytes, headers: Mapping[str, str], connection: str, tries: int = 1
    ) -> None:
        self.upstream_status = status
        self.body = body
        self.parsed = _error_object(body)
        message = str(self.parsed.get("message") or f"upstream answered HTTP {status}")
        code = self.parsed.get("code")
        super().__init__(
            message, connection=connection, tries=tries, code=str(code) if code is not None else None, headers=headers
        )

    @property
    def status_code(self) -> int:
        return self.upstream_status

    def redact(self, text: Callable[[str], str], data: Callable[[bytes], bytes]) -> None:
        super().redact(text, data)
        self.body = data(self.body)
        self.parsed = _error_object(self.body)

    def anthropic_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.upstream_status == 429 and self.code == "insufficient_quota":
            headers["x-should-retry"] = "false"  # retrying cannot help: the account is out of credit
        return headers

    def openai_body(self) -> bytes:
        if self.parsed:  # a well-formed OpenAI error: forward it verbatim
            return self.body
        # Not JSON (a proxy's HTML page, say): still answer JSON.
        snippet = self.body[:200].decode("utf-8", "replace").strip()
        message = f"upstream answered HTTP {self.upstream_status}" + (f": {snippet}" if snippet else "")
        error_type = "server_error" if self.upstream_status >= 500 else "invalid_request_error"
        return orjson.dumps(openai_error_object(message, error_type=error_type))


class UpstreamStreamError(UpstreamError):
    """The upstream reported a failure inside its answer: an error as a stream's first event, or a
    response with `status: "failed"`. `code` is the upstream's failure code."""

    status = 502
    default_code = "upstream_stream_error"

    def __init__(self, message: str, *, connection: str, code: str | None = None) -> None:
        super().__init__(message, connection=connection, code=code)


class UpstreamAuthFailedError(UpstreamError):
    """The operator's credentials were refused (upstream 401/403): not the client's fault."""

    status = 502
    default_code = "upstream_auth_failed"

    def __init__(self, *, connection: str, upstream_status: int, upstream_message: str, tries: int = 1) -> None:
        self.upstream_status = upstream_status
        super().__init__(
            f"the upstream refused the credentials of connection '{connection}' "
            f"(HTTP {upstream_status}: {upstream_message}); the gateway operator must fix the connection",
            connection=connection,
            tries=tries,
        )


class UpstreamUnavailableError(UpstreamError):
    status = 502
    default_code = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    anthropic_type = "timeout_error"
    default_code = "upstream_timeout"


class NoAvailableModelError(GatewayError):
    status = 502
    default_code = "no_available_model"


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


# ------------------------------------------------------------------------------------------------
# The Anthropic status and type of a failure (spec 4.1, 4.2)

# Upstream failure codes that mean "the model refused", not "the service failed" (§3.3, §4.2).
POLICY_CODES = frozenset({"bio_policy", "misalignment_policy_violation"})

# §4.2 table: upstream HTTP status → (Anthropic status, Anthropic error type).
_STATUS_MAP: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    # 401/403 mean the operator's connection credentials were refused; the caller normally
    # handles them (docs/reference.md 2.6) — this is the fallback if it asks anyway.
    401: (502, "api_error"),
    403: (502, "api_error"),
    404: (404, "not_found_error"),
    409: (409, "invalid_request_error"),
    413: (413, "request_too_large"),
    422: (400, "invalid_request_error"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (500, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
}
_INVALID_INPUT_CODES = frozenset(
    {
        "invalid_prompt",
        "failed_to_download_image",
        "empty_image_file",
        "unsupported_image_media_type",
        "data_residency_mismatch",
        "context_length_exceeded",
    }
)


def anthropic_error_type(*, code: str | None, status: int | None = None) -> tuple[int, str]:
    """HTTP status and Anthropic error type for an upstream failure (§4.2).

    An upstream HTTP error status wins over the body's code (a 503 with `server_error` is still
    "overloaded"); without a status, the code of a `response.failed` / `error` event decides.
    """
    if status is not None and status >= 400:
        if status in _STATUS_MAP:
            return _STATUS_MAP[status]
        if status < 500:
            return status, "invalid_request_error"
        return 500, "api_error"
    c = (code or "").lower()
    if c in ("rate_limit_exceeded", "insufficient_quota"):
        return 429, "rate_limit_error"
    if c in ("server_is_overloaded", "slow_down"):
        return 529, "overloaded_error"
    if c in ("server_error", "vector_store_timeout"):
        return 500, "api_error"
    if (
        c in _INVALID_INPUT_CODES
        or c in POLICY_CODES  # only reached if the caller did not turn it into a refusal
        or c.startswith(("invalid_", "image_"))
        or c.endswith("_base64_image")
    ):
        return 400, "invalid_request_error"
    return 500, "api_error"


def anthropic_status_and_type(error: GatewayError) -> tuple[int, str]:
    """The HTTP status and Anthropic error type a `/v1/messages` client gets for `error`."""
    if isinstance(error, UpstreamStatusError):
        return anthropic_error_type(status=error.upstream_status, code=error.code)
    if isinstance(error, UpstreamStreamError) and error.code:
        return anthropic_error_type(code=error.code)
    return error.status_code, error.anthropic_type


# ------------------------------------------------------------------------------------------------
# Error frames: how a stream already under way ends when it fails (spec 4.3)


def chat_error_frame(error: GatewayError) -> bytes:
    """Chat Completions: an `error` object as the last data line, no `[DONE]` (the SDK raises)."""
    return sse_data(orjson.dumps(openai_error_object(error.message, error_type="server_error", code=error.code)))


def responses_error_frame(error: GatewayError, *, sequence_number: int) -> bytes:
    """Responses: an `error` event, numbered after the last event the client got."""
    payload = {
        "type": "error",
        "code": error.code or "server_error",
        "message": error.message,
        "param": None,
        "sequence_number": sequence_number,
    }
    return sse_event("error", orjson.dumps(payload))


def anthropic_error_frame(error_type: str, message: str) -> bytes:
    """Anthropic Messages: an `error` event, the stream's last."""
    return sse_event("error", orjson.dumps(anthropic_error_object(error_type, message)))
