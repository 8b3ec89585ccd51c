from typing import Any

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.routers import DefaultRouter

from connections.api.views import APIKeyViewSet, ConfigView, ConnectionViewSet, PricingViewSet, ResourceViewSet
from gateway.api import AuditViewSet, CapacityView, UpstreamLimitsView, UpstreamLimitView, UsageView
from gateway.observability.views import dashboard_view
from vmx_project.api_docs import APIDocsView
from vmx_project.views import landing_page

admin.site.site_header = "VM-X gateway"
admin.site.site_title = "VM-X gateway"
admin.site.index_title = "Configuration"
admin.site.index_template = "admin/vmx_index.html"  # the dashboard's link on top of the index

# Unknown paths answer JSON (an API client may have mistyped /v1/); the admin keeps its own page.
handler404 = "vmx_project.views.page_not_found"
handler500 = "vmx_project.views.server_error"


# The management API (DESIGN.md 2.11). The /v1/ client endpoints are not part of it: they live in
# gateway.v1.urls, on the lean path (docs/architecture.md).
class APIRouter(DefaultRouter):
    """DRF's router, whose root page also lists the API's views that are not viewsets."""

    extra_root_views = {"usage": "api-usage", "capacity": "api-capacity", "config": "api-config"}
    # No `.json` suffix routes: every path ends in a slash, and the views take no format argument.
    include_format_suffixes = False

    def get_api_root_view(self, api_urls: Any = None) -> Any:
        root = {prefix: self.routes[0].name.format(basename=basename) for prefix, _, basename in self.registry}
        return self.APIRootView.as_view(api_root_dict={**root, **self.extra_root_views})


api_v1 = APIRouter()
api_v1.register("connections", ConnectionViewSet, basename="connection")
api_v1.register("resources", ResourceViewSet, basename="resource")
api_v1.register("api-keys", APIKeyViewSet, basename="api-key")
api_v1.register("pricing", PricingViewSet, basename="pricing")
api_v1.register("audit", AuditViewSet, basename="audit")

# The schema and its docs are public: they describe this version of the code, nothing of the
# installation (every call they document still needs a staff user).
schema_view = SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[])
docs_view = APIDocsView.as_view(url_name="api-schema", permission_classes=[AllowAny], authentication_classes=[])

urlpatterns = [
    path("", landing_page, name="landing"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/usage/", UsageView.as_view(), name="api-usage"),
    path("api/v1/capacity/", CapacityView.as_view(), name="api-capacity"),
    path("api/v1/capacity/upstream-limits/", UpstreamLimitsView.as_view(), name="api-upstream-limits"),
    # A model id may hold slashes (`org/model`): the connection's name cannot.
    path(
        "api/v1/capacity/upstream-limits/<str:connection>/<path:model>/",
        UpstreamLimitView.as_view(),
        name="api-upstream-limit",
    ),
    path("api/v1/config/", ConfigView.as_view(), name="api-config"),
    path("api/v1/", include(api_v1.urls)),
    path("api/schema/", schema_view, name="api-schema"),
    path("api/docs/", docs_view, name="api-docs"),
    path("", include("gateway.observability.urls")),
    path("", include("gateway.v1.urls")),
]
