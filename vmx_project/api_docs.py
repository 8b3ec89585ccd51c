"""The management API's interactive docs (`/api/docs/`).

Apart from connections.api.base, which DRF imports while it loads, so this module may import DRF's views.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

from vmx_project.security import CSP_HEADER, csp_header_value


class APIDocsView(SpectacularSwaggerSplitView):
    """Swagger UI served by the gateway itself (drf-spectacular-sidecar: no CDN, works offline).

    Its page has no inline script or style; Swagger UI draws its icons from `data:` images, which
    this page alone allows.
    """

    template_name = "api_docs.html"

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        policy = {**settings.SECURE_CSP, "img-src": [*settings.SECURE_CSP.get("img-src", []), "data:"]}
        response[CSP_HEADER] = csp_header_value(policy)
        return response
