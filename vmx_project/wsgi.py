"""WSGI entry point, for tooling only: the gateway itself is served over ASGI (gunicorn.conf.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmx_project.settings")

application = get_wsgi_application()
