"""Admin for connections, AI resources and API keys (with their capacity limits), prices and
management tokens.

Validation is the models' (`clean()`); the forms here only translate between provider config
fields and the model's `config` / encrypted secrets, and keep secrets off every page. Who sees and
changes what, per environment, is `connections.admin.tenancy`'s; a form offers and accepts only
objects of its own environment (a model entry's connection, a key's resources).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from connections.admin.capacity import APIKeyCapacityInline, ConnectionCapacityInline, ResourceCapacityInline
from connections.admin.tenancy import (
    EnvironmentListFilter,
    TenantAdminMixin,
    TenantInlineMixin,
    TenantModelForm,
    WorkspaceListFilter,
    form_environment,
)
from connections.config_export import url_credentials_masked
from connections.crypto import EncryptionKeyError
from connections.models import (
    AIResource,
    APIKey,
    Connection,
    ManagementToken,
    ModelEntry,
    PricingEntry,
)
from connections.services import (
    api_key_generate,
    capacity_entries_renumber,
    config_object_rename_permitted,
    connection_check,
    model_entries_renumber,
)
from gateway.providers.base import ConfigField, Provider
from gateway.providers.registry import provider_choices, provider_class_get

_TENANT_COLUMNS = ["workspace_name", "environment_name"]
_TENANT_FILTERS = [WorkspaceListFilter, EnvironmentListFilter]


def _provider_classes() -> list[type[Provider]]:
    return [provider_class_get(slug) for slug, _ in provider_choices()]


def _config_field_name(provider: type[Provider], spec: ConfigField) -> str:
    return f"config__{provider.slug}__{spec.name}"


class ConnectionAdminForm(TenantModelForm):
    """Renders each provider's config fields; secrets are write-only."""

    class Meta:
        model = Connection
        fields = ["environment", "name", "description", "provider", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets_error: str | None = None
        try:
            self.stored_secrets = self.instance.secrets_get() if self.instance.pk else {}
        except EncryptionKeyError as exc:
            self.stored_secrets, self.secrets_error = {}, str(exc)
        for provider in _provider_classes():
            same_provider = self.instance.pk and self.instance.provider == provider.slug
            for spec in provider.config_fields:
                name = _config_field_name(provider, spec)
                help_text = spec.help_text
                if spec.secret:
                    stored = same_provider and spec.name in self.stored_secrets
                    help_text = "Stored encrypted; leave blank to keep it." if stored else "Stored encrypted."
                    widget: forms.Widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"})
                    self.fields[name] = forms.CharField(
                        label=spec.label, required=False, widget=widget, help_text=help_text, strip=True
                    )
                else:
                    self.fields[name] = (
                        forms.URLField(label=spec.label, required=False, help_text=help_text, assume_scheme="https")
                        if spec.kind == "url"
                        else forms.CharField(label=spec.label, required=False, help_text=help_text)
                    )
                    if same_provider:
                        # A URL stored before queries were refused shows no secret; saving it as
                        # shown is refused, so the operator rewrites it.
                        self.fields[name].initial = url_credentials_masked(self.instance.config.get(spec.name, ""))
                if spec.required:
                    self.fields[name].label = f"{spec.label} (required for {provider.label})"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.secrets_error:
            raise forms.ValidationError(self.secrets_error)
        slug = cleaned.get("provider")
        if not slug:
            return cleaned
        provider = provider_class_get(slug)
        keep_stored = self.instance.pk is not None and self.instance.provider == slug
        if keep_stored:  # a stored secret only goes where it went before
            after = {spec.name: cleaned.get(_config_field_name(provider, spec)) for spec in provider.config_fields}
            keep_stored = not provider.destination_changed(self.instance.config, after)
        config: dict[str, Any] = {}
        secrets: dict[str, str] = {}
        for spec in provider.config_fields:
            value = cleaned.get(_config_field_name(provider, spec)) or ""
            if spec.secret:
                if not value and keep_stored and spec.name in self.stored_secrets:
                    value = self.stored_secrets[spec.name]
                if value:
                    secrets[spec.name] = value
            elif value:
                config[spec.name] = value
        for name, message in provider.config_errors({**config, **secrets}).items():
            field_name = f"config__{slug}__{name}"
            self.add_error(field_name if field_name in self.fields else None, message)
        self.instance.config = config
        try:
            self.instance.secrets_set(secrets)
        except EncryptionKeyError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned

    def _update_errors(self, errors: ValidationError) -> None:
        # The model reports config problems under `config`, which is not a form field: they were
        # already attached to the provider's fields in clean(), or belong to the whole form.
        if hasattr(errors, "error_dict") and "config" in errors.error_dict:
            config_errors = errors.error_dict.pop("config")
            if not self.errors:
                errors.error_dict.setdefault(NON_FIELD_ERRORS, []).extend(config_errors)
        super()._update_errors(errors)  # type: ignore[misc]  # private ModelForm hook, not in the stubs


class _RenameNeedsLimitPermission:
    """The name of an object with limits is read-only to users who may not change limits: its
    counters are keyed by it, so a rename would reset them (`config_object_rename_permitted`)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and not config_object_rename_permitted(user=request.user, obj=obj):
            fields.append("name")
        return fields


@admin.register(Connection)
class ConnectionAdmin(TenantAdminMixin, _RenameNeedsLimitPermission, admin.ModelAdmin[Connection]):
    form = ConnectionAdminForm
    list_display = ["name", *_TENANT_COLUMNS, "provider", "enabled", "description", "updated_at"]
    list_filter = [*_TENANT_FILTERS, "provider", "enabled"]
    search_fields = ["name", "description"]
    actions = ["test_connection", "enable", "disable"]
    inlines = [ConnectionCapacityInline]

    def get_form(self, request: HttpRequest, obj: Connection | None = None, change: bool = False, **kwargs: Any) -> Any:
        # Provider settings are form-only fields added per instance; only model fields go here.
        kwargs["fields"] = ConnectionAdminForm.Meta.fields
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Connection | None = None) -> Any:
        fieldsets: list[Any] = [(None, {"fields": ["environment", "name", "description", "provider", "enabled"]})]
        for provider in _provider_classes():
            if provider.config_fields:
                fields = [_config_field_name(provider, spec) for spec in provider.config_fields]
                description = f"Used when the provider is {provider.label}. {provider.description}"
                fieldsets.append((f"{provider.label} settings", {"fields": fields, "description": description}))
        return fieldsets

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        capacity_entries_renumber(owner=form.instance)

    @admin.action(description="Test connection (one cheap upstream call)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in self.writable(request, queryset):
            try:
                result = connection_check(connection=connection)
            except EncryptionKeyError as exc:
                self.message_user(request, f"{connection.name}: {exc}", messages.ERROR)
                continue
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{connection.name}: {result.detail} ({result.latency_ms:.0f} ms)", level)

    @admin.action(description="Enable selected", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), True)

    @admin.action(description="Disable selected", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), False)


def _set_enabled(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any], enabled: bool
) -> None:
    # Saved one by one (not queryset.update) so the change signals reach every worker.
    count = 0
    for obj in queryset:
        if obj.enabled != enabled:
            obj.enabled = enabled
            obj.save(update_fields=["enabled", "updated_at"])
            count += 1
    model_admin.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {count} item(s).", messages.SUCCESS)


class _ModelEntryFormSet(BaseInlineFormSet[ModelEntry, AIResource, Any]):
    def clean(self) -> None:
        super().clean()
        # The resource may be new (no id yet, so ModelEntry.clean cannot compare): the parent
        # form has set its environment, which every connection must share.
        for form in self.forms:
            if not hasattr(form, "cleaned_data"):
                continue
            connection = form.cleaned_data.get("connection")
            if form.cleaned_data.get("DELETE") or not isinstance(connection, Connection):
                continue  # (a read-only inline's "cleaned" data is its initial ids)
            if connection.environment_id != self.instance.environment_id:
                form.add_error("connection", f"no connection '{connection.name}'")


class _PrimaryFormSet(_ModelEntryFormSet):
    def save_new(self, form: forms.ModelForm[ModelEntry], commit: bool = True) -> ModelEntry:
        form.instance.position = 0
        return super().save_new(form, commit)


class _FallbackFormSet(_ModelEntryFormSet):
    def save_new(self, form: forms.ModelForm[ModelEntry], commit: bool = True) -> ModelEntry:
        form.instance.position = max(form.instance.position, 1)
        return super().save_new(form, commit)


class _ModelEntryInline(TenantInlineMixin, admin.TabularInline[ModelEntry, AIResource]):
    """Connections offered are the resource's environment's."""

    model = ModelEntry

    def get_formset(self, request: HttpRequest, obj: AIResource | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        field = formset.form.base_fields.get("connection")
        if isinstance(field, forms.ModelChoiceField):
            environment = form_environment(request, AIResource, obj)
            field.queryset = Connection.objects.filter(environment=environment)
        return formset


class PrimaryModelInline(_ModelEntryInline):
    formset = _PrimaryFormSet
    fields = ["connection", "model", "max_retries", "timeout_ms", "reasoning"]
    min_num = 1
    max_num = 1
    extra = 0
    can_delete = False
    verbose_name = "primary model"
    verbose_name_plural = "Primary model"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEntry]:
        return super().get_queryset(request).filter(position=0)


class _FallbackForm(forms.ModelForm[ModelEntry]):
    position = forms.IntegerField(
        min_value=1, initial=1, help_text="Fallbacks are tried in ascending order; ties in the order added."
    )

    class Meta:
        model = ModelEntry
        fields = ["position", "connection", "model", "max_retries", "timeout_ms", "reasoning"]


class FallbackModelInline(_ModelEntryInline):
    form = _FallbackForm
    formset = _FallbackFormSet
    fields = ["position", "connection", "model", "max_retries", "timeout_ms", "reasoning"]
    extra = 0
    verbose_name = "fallback model"
    verbose_name_plural = "Fallback models (tried in order of position when the one before fails)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEntry]:
        return super().get_queryset(request).filter(position__gt=0)


@admin.register(AIResource)
class AIResourceAdmin(TenantAdminMixin, _RenameNeedsLimitPermission, admin.ModelAdmin[AIResource]):
    form = TenantModelForm
    offers_choices = True
    list_display = ["name", *_TENANT_COLUMNS, "primary_model", "fallback_count", "enabled", "updated_at"]
    list_filter = [*_TENANT_FILTERS, "enabled"]
    search_fields = ["name", "description"]
    fields = ["environment", "name", "description", "enabled", "default_args"]
    inlines = [PrimaryModelInline, FallbackModelInline, ResourceCapacityInline]
    actions = ["enable", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AIResource]:
        return super().get_queryset(request).prefetch_related("model_entries__connection")

    @admin.display(description="Primary model")
    def primary_model(self, obj: AIResource) -> str:
        entries = list(obj.model_entries.all())
        return str(entries[0]) if entries else "—"

    @admin.display(description="Fallbacks")
    def fallback_count(self, obj: AIResource) -> int:
        return max(len(obj.model_entries.all()) - 1, 0)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        model_entries_renumber(resource=form.instance)
        capacity_entries_renumber(owner=form.instance)

    @admin.action(description="Enable selected", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[AIResource]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), True)

    @admin.action(description="Disable selected", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[AIResource]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), False)


class APIKeyAdminForm(TenantModelForm):
    key = forms.CharField(
        required=False,
        strip=True,
        help_text="Leave blank to generate one. The value is shown once, then only its prefix is kept.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "size": 50}),
    )

    class Meta:
        model = APIKey
        fields = ["environment", "name", "all_resources", "resources", "enabled", "expires_at"]

    def clean_key(self) -> str:
        value: str = self.cleaned_data.get("key") or ""
        if value:
            self.instance.key_set(value)  # raises ValidationError on a weak value
            if APIKey.objects.filter(digest=self.instance.digest).exclude(pk=self.instance.pk).exists():
                raise forms.ValidationError("This key value is already in use.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("all_resources") and not cleaned.get("resources"):
            raise forms.ValidationError("Choose the resources this key may use, or tick “All resources”.")
        environment_id = cleaned["environment"].pk if cleaned.get("environment") else self.instance.environment_id
        foreign = [r.name for r in cleaned.get("resources") or () if r.environment_id != environment_id]
        if foreign:  # as one that exists nowhere: nothing tells of another environment's objects
            self.add_error("resources", f"no resource '{foreign[0]}'")
        return cleaned


@admin.register(APIKey)
class APIKeyAdmin(TenantAdminMixin, _RenameNeedsLimitPermission, admin.ModelAdmin[APIKey]):
    form = APIKeyAdminForm
    offers_choices = True
    list_display = ["name", *_TENANT_COLUMNS, "masked_key", "scope", "enabled", "expires_at", "created_at"]
    list_filter = [*_TENANT_FILTERS, "enabled", "all_resources"]
    search_fields = ["name", "prefix"]
    filter_horizontal = ["resources"]
    readonly_fields = ["masked_key", "created_at", "updated_at"]
    actions = ["enable", "disable"]
    inlines = [APIKeyCapacityInline]

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        if obj is None:
            return ["environment", "name", "key", "all_resources", "resources", "enabled", "expires_at"]
        return [
            *["environment", "name", "masked_key", "all_resources", "resources"],
            *["enabled", "expires_at", "created_at", "updated_at"],
        ]

    def get_form(self, request: HttpRequest, obj: APIKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:  # the value of an existing key cannot be seen or edited
            kwargs["fields"] = ["name", "all_resources", "resources", "enabled", "expires_at"]
        form: Any = super().get_form(request, obj, change, **kwargs)
        field = form.base_fields.get("resources")
        if isinstance(field, forms.ModelMultipleChoiceField):  # the key's environment's resources only
            field.queryset = AIResource.objects.filter(environment=form_environment(request, APIKey, obj))
        return form

    @admin.display(description="Key")
    def masked_key(self, obj: APIKey) -> str:
        return f"{obj.prefix}…" if obj.prefix else "—"

    @admin.display(description="Resources")
    def scope(self, obj: APIKey) -> str:
        return "all" if obj.all_resources else ", ".join(r.name for r in obj.resources.all()) or "none"

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIKey]:
        return super().get_queryset(request).prefetch_related("resources")

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            plaintext = form.cleaned_data.get("key") or api_key_generate()
            obj.key_set(plaintext)
            # Handed to response_add only: never stored, logged or put in a message cookie.
            request._vmx_new_key = plaintext  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        capacity_entries_renumber(owner=form.instance)

    def response_add(self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None) -> HttpResponse:
        plaintext = getattr(request, "_vmx_new_key", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "api_key": obj,
            "plaintext": plaintext,
            "title": f"API key “{obj.name}” created",
        }
        response = TemplateResponse(request, "admin/connections/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Enable selected", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), True)

    @admin.action(description="Disable selected", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        _set_enabled(self, request, self.writable(request, queryset), False)


@admin.register(PricingEntry)
class PricingEntryAdmin(admin.ModelAdmin[PricingEntry]):
    """Model prices (USD per 1M tokens) over the bundled table of OpenAI's published prices.

    Global: every member reads them (TenancyBackend grants the view permission); writes need the
    model permission, never a role, since a price moves every workspace's budgets."""

    list_display = ["model", "input", "cached_input", "output", "updated_at"]
    search_fields = ["model"]
    fields = ["model", "input", "cached_input", "output"]


@admin.register(ManagementToken)
class ManagementTokenAdmin(admin.ModelAdmin[ManagementToken]):
    """Management API tokens: listed by their first characters (only a digest is stored), made with
    `manage.py vmx_token create USER` (the value is printed once), revoked here or by the command."""

    list_display = ["prefix", "user", "description", "created_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "user__username"]
    fields = ["prefix", "user", "description", "created_at", "expires_at", "revoked_at"]
    readonly_fields = ["prefix", "user", "created_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a value shown once needs the command (an admin page would keep it)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ManagementToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")
