"""The capacity limits of a connection, resource or key, as inlines of their owner's page.

A page never fails because the counters cannot be read: the "used now" column then says
"unavailable". Counters are per environment (DESIGN.md 2.15): the column reads the owner's
environment's counters (its store tag, empty for default/default).
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from connections.admin.tenancy import TenantInlineMixin
from connections.models import CAPACITY_OWNER_FIELDS, CapacityEntry
from connections.selectors import environment_info_get
from gateway.capacity.usage import capacity_usage_text

logger = logging.getLogger("vmx.admin")

_CAPACITY_HELP = (
    "Each row is one limit; every enabled row applies. Periods are fixed calendar windows in UTC "
    "(a week starts Monday 00:00; lifetime never resets). Requests count 1 per admitted request; tokens "
    "and cost (USD) are reserved from an estimate when a request is admitted and settled with the real "
    "figures when it ends. A dimension gives each client IP, or each value of a vmx.metadata field, a "
    "counter of its own. "
)
_LAST_POSITION = 32767
"""New rows sort after the existing ones until renumbering closes the gap."""


class _CapacityFormSet(BaseInlineFormSet[CapacityEntry, Any, Any]):
    def save_new(self, form: forms.ModelForm[CapacityEntry], commit: bool = True) -> CapacityEntry:
        form.instance.position = _LAST_POSITION
        return super().save_new(form, commit)


class _CapacityInline(TenantInlineMixin, admin.TabularInline[CapacityEntry, Any]):
    """Capacity limits of one owner; `help_text` is shown above the table."""

    model = CapacityEntry
    formset = _CapacityFormSet
    template = "admin/connections/capacity_inline.html"
    fields = ["period", "requests", "tokens", "cost_usd", "dimension", "dimension_field", "enabled", "used_now"]
    readonly_fields = ["used_now"]
    extra = 0
    verbose_name = "capacity limit"
    verbose_name_plural = "Capacity limits"
    help_text = _CAPACITY_HELP

    def get_queryset(self, request: HttpRequest) -> QuerySet[CapacityEntry]:
        # The "used now" column names the owner of every row, and its environment's counters.
        owners = [f"{owner}__environment__workspace" for owner in CAPACITY_OWNER_FIELDS]
        return super().get_queryset(request).select_related(*owners)

    @admin.display(description="Used now")
    def used_now(self, obj: CapacityEntry) -> str:
        if obj.pk is None:
            return "—"
        try:
            kind = obj.scope_kind
            owner = getattr(obj, kind)
            return capacity_usage_text(
                scope_kind=kind,
                scope_name=owner.name,
                limit=obj.limit_get(),
                environment=environment_info_get(environment=owner.environment).store_tag,
            )
        except Exception as exc:  # counters down or a bug there: the page still loads and saves
            logger.warning("capacity usage unavailable for limit %s: %s: %s", obj.pk, type(exc).__name__, exc)
            return "unavailable"


class ConnectionCapacityInline(_CapacityInline):
    fk_name = "connection"
    help_text = _CAPACITY_HELP + (
        "A connection that reached a limit is skipped and the next fallback model is tried; "
        "when every leg is skipped the client gets 429."
    )


class ResourceCapacityInline(_CapacityInline):
    fk_name = "resource"
    help_text = _CAPACITY_HELP + (
        "A request to a resource that reached a limit gets 429 (capacity_exceeded, or budget_exceeded for "
        "cost) until the window ends."
    )


class APIKeyCapacityInline(_CapacityInline):
    fk_name = "api_key"
    help_text = _CAPACITY_HELP + (
        "A request with a key that reached a limit gets 429 (capacity_exceeded, or budget_exceeded for "
        "cost) until the window ends."
    )
