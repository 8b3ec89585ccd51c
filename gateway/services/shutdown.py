"""Whether the server has given up waiting for open requests (the end of its graceful timeout).

SIGTERM lets open streams finish; when the graceful timeout runs out, the edge cancels what is
still running. A request cancelled for that reason is not a client that left: streams end with
the endpoint's error event and every such request is audited as 503 `server_shutting_down`
(DESIGN.md 2.13). The edge sets the flag; relays and views read it when they are cancelled.
"""

from __future__ import annotations

from gateway.core.errors import ServiceUnavailableError

CLIENT_GONE = "client_disconnected"
CLIENT_GONE_MESSAGE = "the client closed the connection mid-stream"

_forced = False


def shutdown_force() -> None:
    global _forced
    _forced = True


def shutdown_forced() -> bool:
    return _forced


def shutdown_error() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "the gateway is shutting down and could not finish this request in time; retry it",
        code="server_shutting_down",
    )


def cancellation_outcome() -> tuple[int, str, str, ServiceUnavailableError | None]:
    """How a stream cancelled right now ends, as (audit status, error type, message, error to send).

    The error is None when the client left (nothing can be sent; the cancellation goes on);
    otherwise the stream ends with that error as its last event instead of looking complete.
    """
    if not _forced:
        return 499, CLIENT_GONE, CLIENT_GONE_MESSAGE, None
    error = shutdown_error()
    return error.status_code, error.code or "", error.message, error
