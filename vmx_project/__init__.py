"""VM-X gateway: the Django project (settings, URLs, ASGI entry point)."""

__version__ = "0.2.0"
