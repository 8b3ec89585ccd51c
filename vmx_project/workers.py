"""The gunicorn worker: uvicorn-worker's, with the lifespan protocol required.

With lifespan "on", a failed startup (e.g. a wrong VMX_ENCRYPTION_KEY) stops the worker, and
gunicorn stops with it, instead of serving requests that cannot succeed. The access log is built
only when one was asked for (VMX_ACCESS_LOG): otherwise every request would still format a log
record for a handler that discards it.
"""

import os

from uvicorn_worker import UvicornWorker


class GatewayUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    CONFIG_KWARGS = {
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "access_log": bool(os.environ.get("VMX_ACCESS_LOG")),
    }
