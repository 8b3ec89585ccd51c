"""Whether the server has given up waiting for open requests (the end of its graceful timeout).

SIGTERM lets open streams finish; when the graceful timeout runs out, the edge cancels what is
still running. A request cancelled for that reason is not a client that left: streams end with
the endpoint's error event and every such request is audited as 503 `server_shutting_down`
(DESIGN.md 2.13). The edge sets the flag; relays and views read it when they are cancelled.
"""

from __future__ import annotations

from gateway.errors import ServiceUnavailableError

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
