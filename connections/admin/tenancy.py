"""What every admin page of an environment's objects shares (DESIGN.md 2.15).

Invariants:
- One queryset decides what exists for a user (`TenantAdminMixin.get_queryset`: objects of the
  environments where the user may view them). The changelist, the change, history and delete
  pages, autocomplete and bulk actions all read it, so another workspace's object answers
  exactly as a deleted one does.
- Object permissions are asked of the object, `user.has_perm(perm, obj)`, which
  `connections.tenancy.TenancyBackend` answers from the user's grants; without an object Django's
  "somewhere" answer stands (the queryset narrows the list). Inlines ask of their parent.
- An object's environment is chosen on its add page among those where the user may add, then
  fixed. What a form offers to reference (a model entry's connection, a key's resources) is that
  environment's (`form_environment`), and the forms refuse anything else.
- List filters offer only environments the user may view, never a DISTINCT over a table.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from connections.models import Environment
from connections.tenancy import environments_permitted, grants_get, queryset_permitted

_PICKED_ATTRIBUTE = "_vmx_add_environment"


def perm_name(model: type[Model], action: str) -> str:
    """`app_label.action_model`, as `user.has_perm` takes it."""
    opts = model._meta
    return f"{opts.app_label}.{get_permission_codename(action, opts)}"


def readable_q(user: Any, model: type[Model], *, prefix: str = "") -> Q:
    """Environments (or, with `prefix`, objects of environments) where `user` may view `model`'s
    objects: the view or the change permission, as Django's admin counts either as reading."""
    grants = grants_get(user)
    if grants.active and grants.superuser:
        return Q()
    return grants.environments_q(perm_name(model, "view"), prefix=prefix) | grants.environments_q(
        perm_name(model, "change"), prefix=prefix
    )


def environments_readable(user: Any, model: type[Model]) -> QuerySet[Environment]:
    return Environment.objects.select_related("workspace").filter(readable_q(user, model))


def add_environments(request: HttpRequest, model: type[Model]) -> QuerySet[Environment]:
    """Where the user may add `model`'s objects: an add form's environment choices."""
    return environments_permitted(request.user, perm_name(model, "add"))


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def form_environment(request: HttpRequest, model: type[Model], obj: Any = None) -> Environment | None:
    """The environment a form of `model` works in: the object's own once created; on an add page
    the one being submitted, else the one asked for (`?environment=<id>`), else default/default,
    else the first where the user may add (None: nowhere)."""
    if obj is not None and not obj._state.adding:
        environment: Environment = obj.environment
        return environment
    picked: dict[str, Environment | None] = request.__dict__.setdefault(_PICKED_ATTRIBUTE, {})
    if model._meta.label not in picked:
        choices = list(add_environments(request, model))
        wanted = _uuid_or_none(request.POST.get("environment") or request.GET.get("environment"))
        by_id = {environment.pk: environment for environment in choices}
        default = next((environment for environment in choices if environment.is_default), None)
        picked[model._meta.label] = by_id.get(wanted) if wanted in by_id else default or next(iter(choices), None)
    return picked[model._meta.label]


class TenantModelForm(forms.ModelForm[Any]):
    """Names are unique per environment: the (environment, name) constraint is checked even when
    the environment is not a field of the form (it is read-only once created), so a clashing
    rename is a form error, not an IntegrityError."""

    def _get_validation_exclusions(self) -> set[str]:
        exclude: set[str] = super()._get_validation_exclusions()  # type: ignore[misc]  # private ModelForm hook
        if "environment" not in self.errors:
            exclude.discard("environment")
        return exclude


class WorkspaceListFilter(admin.SimpleListFilter):
    """The workspaces of the environments the user may view; `?workspace=acme`."""

    title = "workspace"
    parameter_name = "workspace"
    workspace_lookup = "environment__workspace__name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = sorted({environment.workspace.name for environment in model_admin.environments_listed(request)})
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.workspace_lookup: value})


class EnvironmentListFilter(admin.SimpleListFilter):
    """The environments the user may view (of the chosen workspace); `?environment=acme/prod`,
    or a bare name (`?workspace=acme&environment=prod`), as the dashboard links."""

    title = "environment"
    parameter_name = "environment"
    workspace_lookup = "environment__workspace__name"
    environment_lookup = "environment__name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        workspace = request.GET.get(WorkspaceListFilter.parameter_name)
        return [
            (environment.label, environment.label)
            for environment in model_admin.environments_listed(request)
            if workspace in (None, environment.workspace.name)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        workspace, slash, name = str(value).rpartition("/")
        where = {self.environment_lookup: name}
        if slash:
            where[self.workspace_lookup] = workspace
        return queryset.filter(**where)


def _environment_links(request: HttpRequest, choices: list[Environment], chosen: Environment | None) -> str:
    others = [environment for environment in choices if environment != chosen]
    if not others:
        return ""
    links = format_html_join(
        ", ", '<a href="?environment={}">{}</a>', ((environment.pk, environment.label) for environment in others)
    )
    return format_html(" What this page offers to choose below is {}'s; to add in another: {}.", chosen, links)


class TenantAdminMixin:
    """For the admin of a model with an `environment` foreign key (put before ModelAdmin)."""

    offers_choices = False
    """Whether the form offers objects of its environment (the add page then links the others)."""
    model: Any

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        return queryset.select_related("environment__workspace").filter(
            readable_q(request.user, self.model, prefix="environment__")
        )

    def environments_listed(self, request: HttpRequest) -> list[Environment]:
        """What the workspace and environment filters offer (read once per request)."""
        cache: dict[str, list[Environment]] = request.__dict__.setdefault("_vmx_listed_environments", {})
        label = self.model._meta.label
        if label not in cache:
            cache[label] = list(environments_readable(request.user, self.model))
        return cache[label]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_view_permission(request))  # type: ignore[misc]
        user = request.user
        return user.has_perm(perm_name(self.model, "view"), obj) or user.has_perm(perm_name(self.model, "change"), obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_change_permission(request))  # type: ignore[misc]
        return request.user.has_perm(perm_name(self.model, "change"), obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_delete_permission(request))  # type: ignore[misc]
        return request.user.has_perm(perm_name(self.model, "delete"), obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None:
            fields.append("environment")  # fixed once created
        return fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "environment":
            choices = add_environments(request, self.model)
            chosen = form_environment(request, self.model)
            help_text = "Fixed once created."
            if self.offers_choices:
                help_text += _environment_links(request, list(choices), chosen)
            kwargs.update(
                queryset=choices,
                initial=None if chosen is None else chosen.pk,
                show_hidden_initial=False,  # the model's callable default would render a hidden copy
                help_text=help_text,
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def writable(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """The selected objects the user may change (a bulk action acts on these alone)."""
        return queryset_permitted(request.user, queryset, perm_name(self.model, "change"))

    @admin.display(description="workspace", ordering="environment__workspace__name")
    def workspace_name(self, obj: Any) -> str:
        return str(obj.environment.workspace.name)

    @admin.display(description="environment", ordering="environment__name")
    def environment_name(self, obj: Any) -> str:
        return str(obj.environment.name)


class TenantInlineMixin:
    """For an inline whose permissions are asked of its parent object (an environment's object,
    or a workspace for its environments and members)."""

    model: Any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_view_permission(request, obj))  # type: ignore[misc]
        user = request.user
        return user.has_perm(perm_name(self.model, "view"), obj) or user.has_perm(perm_name(self.model, "change"), obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_add_permission(request, obj))  # type: ignore[misc]
        return request.user.has_perm(perm_name(self.model, "add"), obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_change_permission(request, obj))  # type: ignore[misc]
        return request.user.has_perm(perm_name(self.model, "change"), obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return bool(super().has_delete_permission(request, obj))  # type: ignore[misc]
        return request.user.has_perm(perm_name(self.model, "delete"), obj)
