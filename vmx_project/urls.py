from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "VM-X gateway"
admin.site.site_title = "VM-X gateway"
admin.site.index_title = "Configuration"

# Unknown paths answer JSON (an API client may have mistyped /v1/); the admin keeps its own page.
handler404 = "gateway.views.page_not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("gateway.urls")),
]
