"""The gunicorn worker: uvicorn-worker's, with the lifespan protocol required and a deadline on
the client's request.

With lifespan "on", a failed startup (e.g. a wrong VMX_ENCRYPTION_KEY) stops the worker, and
gunicorn stops with it, instead of serving requests that cannot succeed. The access log is built
only when one was asked for (VMX_ACCESS_LOG): otherwise every request would still format a log
record for a handler that discards it.

HTTP is uvicorn's httptools protocol (what "auto" picks when httptools is installed, as it is
here) subclassed to drop clients that do not send a complete request within VMX_CLIENT_TIMEOUT
seconds: uvicorn itself has no header or body read timeout (gateway/asgi/protocol.py). uvicorn's
Config takes a protocol class for `http` as well as a name.

uvicorn's own proxy-header handling is off: by default it believes `X-Forwarded-For` (and
`X-Forwarded-Proto`) from any peer in `FORWARDED_ALLOW_IPS` (127.0.0.1 unless set), rewriting the
peer address before the gateway sees it, so a client on the same host could choose its own
`source-ip` counter. The gateway applies one rule itself, `VMX_TRUSTED_PROXIES`
(gateway/core/addresses.py); the scheme behind a TLS proxy is Django's `DJANGO_BEHIND_TLS_PROXY`.
"""

import os
from typing import Any

from uvicorn_worker import UvicornWorker

from gateway.asgi.protocol import GatewayHttpToolsProtocol


class GatewayUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    CONFIG_KWARGS = {
        "loop": "auto",
        "http": GatewayHttpToolsProtocol,
        "lifespan": "on",
        "proxy_headers": False,
        "access_log": bool(os.environ.get("VMX_ACCESS_LOG")),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn kills a worker `graceful_timeout` seconds after SIGTERM. uvicorn gives up on open
        # requests a little earlier, so the gateway can still end each one properly (an error event
        # for a stream), audit it and write the audit queue before the kill (DESIGN.md 2.13).
        graceful = float(self.cfg.graceful_timeout)
        self.config.timeout_graceful_shutdown = max(1.0, graceful - min(5.0, graceful / 4))
