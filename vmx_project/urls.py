from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "VM-X gateway"
admin.site.site_title = "VM-X gateway"
admin.site.index_title = "Configuration"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("gateway.urls")),
]
