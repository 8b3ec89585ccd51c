"""Workspaces, with their environments and members inline (DESIGN.md 2.15).

Superusers create and delete workspaces; owners edit the description, the environments (a name
is fixed once created) and the members (role, environments); every member reads them. A user
sees the workspaces where they hold a grant (and `default`), and of those the environments that
exist for them. Deleting goes through `connections.services`, whose refusal (what is left in
it) is the admin's error message; `default` and `default/default` are never deleted.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from connections.admin.tenancy import TenantInlineMixin, perm_name
from connections.models import Environment, Membership, Workspace
from connections.services import (
    TenantInUseError,
    environment_delete,
    environment_delete_refusal,
    membership_delete,
    membership_save,
    workspace_delete,
)
from connections.tenancy import grants_get, workspaces_visible


class _EnvironmentForm(forms.ModelForm[Environment]):
    class Meta:
        model = Environment
        fields = ["name", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:  # base URLs and metric labels hold it (a new row has a pk already)
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "Fixed once created."


class _EnvironmentFormSet(BaseInlineFormSet[Environment, Workspace, Any]):
    def delete_existing(self, obj: Environment, commit: bool = True) -> None:
        if commit:
            environment_delete(environment=obj)  # refuses again should something have come since


class EnvironmentInline(TenantInlineMixin, admin.TabularInline[Environment, Workspace]):
    model = Environment
    form = _EnvironmentForm
    formset = _EnvironmentFormSet
    fields = ["name", "description", "id"]
    readonly_fields = ["id"]
    extra = 0
    verbose_name_plural = "Environments (deleted only once nothing is left in them)"

    def get_formset(self, request: HttpRequest, obj: Workspace | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)

        class RefusedDeletionForm(formset.form):  # type: ignore[misc,name-defined]
            def hand_clean_DELETE(self) -> None:
                # The admin's own check names PROTECTed objects; the service's refusal also
                # covers default/default and memberships limited to this environment alone.
                if self.cleaned_data.get("DELETE") and not self.instance._state.adding:
                    refusal = environment_delete_refusal(environment=self.instance)
                    if refusal is not None:
                        raise ValidationError(refusal)

        formset.form = RefusedDeletionForm
        return formset

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        # Those that exist for the user: a member limited to dev does not learn of prod.
        visible = grants_get(request.user).visible_environments_q()
        return super().get_queryset(request).select_related("workspace").filter(visible)


class _EnvironmentChoices(forms.ModelMultipleChoiceField[Environment]):
    def label_from_instance(self, obj: Any) -> str:
        return str(obj.name)


class _MembershipForm(forms.ModelForm[Membership]):
    user = forms.CharField(label="User", max_length=150, help_text="A username.")

    class Meta:
        model = Membership
        fields = ["user", "role", "environments"]
        field_classes = {"environments": _EnvironmentChoices}
        widgets = {"environments": forms.CheckboxSelectMultiple}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.initial["user"] = self.instance.user.username
            self.fields["user"].disabled = True
            self.fields["user"].help_text = "To give it to another user, delete this row and add one."

    def clean_user(self) -> Any:
        if not self.instance._state.adding:
            return self.instance.user
        username = self.cleaned_data["user"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise ValidationError(f"no user '{username}'")
        return user

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("role") == Membership.Role.OWNER and cleaned.get("environments"):
            self.add_error("environments", "an owner's membership covers every environment")
        return cleaned


class _MembershipFormSet(BaseInlineFormSet[Membership, Workspace, Any]):
    """Saved through `membership_save`, which also makes the user staff (they sign in here)."""

    def _grant(self, form: forms.ModelForm[Membership]) -> Membership:
        data = form.cleaned_data
        membership, _ = membership_save(
            workspace=self.instance,
            user=data["user"],
            role=data["role"],
            environments=[environment.name for environment in data.get("environments") or ()],
        )
        return membership

    def save_new(self, form: forms.ModelForm[Membership], commit: bool = True) -> Membership:
        return self._grant(form) if commit else super().save_new(form, commit)

    def save_existing(self, form: forms.ModelForm[Membership], obj: Membership, commit: bool = True) -> Membership:
        return self._grant(form) if commit else super().save_existing(form, obj, commit)

    def delete_existing(self, obj: Membership, commit: bool = True) -> None:
        if commit:
            membership_delete(membership=obj)


class MembershipInline(TenantInlineMixin, admin.TabularInline[Membership, Workspace]):
    model = Membership
    form = _MembershipForm
    formset = _MembershipFormSet
    readonly_fields = ["environments_shown"]
    extra = 0
    verbose_name_plural = "Members (editors and viewers: no environment ticked means every one)"
    visible_environment_ids: frozenset[uuid.UUID] = frozenset()
    """Set per request by `WorkspaceAdmin.get_inline_instances`: what the reader may know of."""

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return ["user", "role", "environments"]
        return ["user", "role", "environments_shown"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user").prefetch_related("environments")

    def get_formset(self, request: HttpRequest, obj: Workspace | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        field = formset.form.base_fields.get("environments")
        if isinstance(field, forms.ModelMultipleChoiceField):
            field.queryset = Environment.objects.filter(workspace=obj) if obj else Environment.objects.none()
        return formset

    @admin.display(description="Environments")
    def environments_shown(self, membership: Membership) -> str:
        environments = list(membership.environments.all())
        if not environments:
            return "all"
        shown = [e.name for e in environments if e.pk in self.visible_environment_ids]
        return ", ".join(shown) or "—"


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin[Workspace]):
    list_display = ["name", "description", "environment_names", "id", "created_at"]
    search_fields = ["name", "description"]
    inlines = [EnvironmentInline, MembershipInline]

    def get_fields(self, request: HttpRequest, obj: Workspace | None = None) -> Any:
        return ["name", "description"] if obj is None else ["name", "description", "id", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Workspace | None = None) -> Any:
        return [] if obj is None else ["name", "id", "created_at", "updated_at"]  # base URLs hold the name

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workspace]:
        visible = Environment.objects.filter(grants_get(request.user).visible_environments_q())
        queryset = super().get_queryset(request).prefetch_related(Prefetch("environments", queryset=visible))
        return queryset.filter(pk__in=workspaces_visible(request.user).values("pk"))

    def get_inline_instances(self, request: HttpRequest, obj: Workspace | None = None) -> Any:
        inlines = super().get_inline_instances(request, obj)
        visible = frozenset(
            Environment.objects.filter(grants_get(request.user).visible_environments_q()).values_list("pk", flat=True)
        )
        for inline in inlines:
            if isinstance(inline, MembershipInline):
                inline.visible_environment_ids = visible
        return inlines

    @admin.display(description="Environments")
    def environment_names(self, workspace: Workspace) -> str:
        return ", ".join(environment.name for environment in workspace.environments.all()) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Workspace | None = None) -> bool:
        if obj is None:
            return super().has_view_permission(request)
        user = request.user
        return user.has_perm(perm_name(Workspace, "view"), obj) or user.has_perm(perm_name(Workspace, "change"), obj)

    def has_change_permission(self, request: HttpRequest, obj: Workspace | None = None) -> bool:
        if obj is None:
            return super().has_change_permission(request)
        return request.user.has_perm(perm_name(Workspace, "change"), obj)

    def has_delete_permission(self, request: HttpRequest, obj: Workspace | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through the service's checks
        return actions

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Environments are PROTECTed from a plain delete; the service deletes them with the
        # workspace once nothing is left in them.
        workspace = objs[0]
        environments = [f"Environment: {e.label}" for e in workspace.environments.select_related("workspace")]
        members = [f"Membership: {m}" for m in workspace.memberships.select_related("user", "workspace")]
        counts = {"workspaces": 1, "environments": len(environments), "memberships": len(members)}
        return [f"Workspace: {workspace}", [*environments, *members]], counts, set(), []

    def delete_model(self, request: HttpRequest, obj: Workspace) -> None:
        workspace_delete(workspace=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except TenantInUseError as exc:  # rolled back whole; nothing was deleted
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:connections_workspace_change", args=[object_id]))
