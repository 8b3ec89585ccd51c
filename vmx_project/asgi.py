"""ASGI entry point: Django, wrapped for static files and the lifespan protocol.

Django 5.2's ASGI handler does not speak lifespan, so the wrapper here runs the gateway's startup
(configuration load, which fails fast on a wrong encryption key) and shutdown (close upstream
pools; later, flush queued audit records) around it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmx_project.settings")

from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.asgi import get_asgi_application
from servestatic import ServeStaticASGI

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LifespanMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from gateway.asgi.lifecycle import StartupError, gateway_shutdown, gateway_startup

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await gateway_startup()
                except StartupError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await gateway_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _with_static_files(app: ASGIApp) -> ASGIApp:
    """Serve the admin's static files straight from the installed apps (no collectstatic needed)."""
    static = ServeStaticASGI(app, prefix=settings.STATIC_URL)
    for finder in get_finders():
        for storage in getattr(finder, "storages", {}).values():
            static.add_files(storage.location, prefix=settings.STATIC_URL)
    return cast(ASGIApp, static)


def _build() -> ASGIApp:
    get_asgi_application()  # django.setup(); the handler below replaces Django's own
    from gateway.asgi.handler import GatewayASGIHandler

    django_app = cast(ASGIApp, GatewayASGIHandler())
    return LifespanMiddleware(_with_static_files(django_app))


application = _build()
