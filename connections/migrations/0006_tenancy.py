"""Workspaces, environments and memberships (DESIGN.md 2.15).

Every connection, resource and API key made before this belongs to `default/default`, which this
migration creates: a single-tenant installation sees no change. Names become unique per
environment (API key digests stay unique everywhere)."""

import uuid

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import connections.models


def default_environment_created(apps, schema_editor):
    workspace_model = apps.get_model("connections", "Workspace")
    environment_model = apps.get_model("connections", "Environment")
    workspace, _ = workspace_model.objects.get_or_create(name="default")
    environment, _ = environment_model.objects.get_or_create(workspace=workspace, name="default")
    for model_name in ("Connection", "AIResource", "APIKey"):
        apps.get_model("connections", model_name).objects.filter(environment__isnull=True).update(
            environment=environment
        )


def _environment_field(related_name, *, null):
    return models.ForeignKey(
        null=null,
        default=None if null else connections.models.environment_default_id,
        help_text="Fixed once created.",
        on_delete=django.db.models.deletion.PROTECT,
        related_name=related_name,
        to="connections.environment",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("connections", "0005_management_tokens"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Workspace",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                (
                    "name",
                    models.CharField(
                        max_length=63, unique=True, validators=[connections.models.tenant_name_validator]
                    ),
                ),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.CreateModel(
            name="Environment",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=63, validators=[connections.models.tenant_name_validator])),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="environments",
                        to="connections.workspace",
                    ),
                ),
            ],
            options={"ordering": ["workspace__name", "name"]},
        ),
        migrations.AddConstraint(
            model_name="environment",
            constraint=models.UniqueConstraint(fields=("workspace", "name"), name="environment_name_unique"),
        ),
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "role",
                    models.CharField(
                        choices=[("owner", "Owner"), ("editor", "Editor"), ("viewer", "Viewer")], max_length=16
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "environments",
                    models.ManyToManyField(
                        blank=True,
                        help_text="Empty: every environment of the workspace.",
                        related_name="memberships",
                        to="connections.environment",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="workspace_memberships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="connections.workspace",
                    ),
                ),
            ],
            options={"ordering": ["workspace__name", "user__username"]},
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.UniqueConstraint(fields=("workspace", "user"), name="membership_unique"),
        ),
        migrations.AddField("connection", "environment", _environment_field("connections", null=True)),
        migrations.AddField("airesource", "environment", _environment_field("resources", null=True)),
        migrations.AddField("apikey", "environment", _environment_field("api_keys", null=True)),
        migrations.RunPython(default_environment_created, migrations.RunPython.noop),
        migrations.AlterField("connection", "environment", _environment_field("connections", null=False)),
        migrations.AlterField("airesource", "environment", _environment_field("resources", null=False)),
        migrations.AlterField("apikey", "environment", _environment_field("api_keys", null=False)),
        migrations.AlterField(
            model_name="airesource",
            name="name",
            field=models.CharField(
                help_text="What clients send as `model`; unique in its environment.",
                max_length=128,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
                        "Use letters, digits and . _ : / @ + - (this is what clients send as `model`).",
                    )
                ],
            ),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="name",
            field=models.SlugField(help_text="Unique in its environment.", max_length=64),
        ),
        migrations.AlterField(
            model_name="connection",
            name="name",
            field=models.SlugField(help_text="A slug unique in its environment, e.g. openai-main.", max_length=64),
        ),
        migrations.AddConstraint(
            model_name="airesource",
            constraint=models.UniqueConstraint(fields=("environment", "name"), name="resource_name_unique"),
        ),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.UniqueConstraint(fields=("environment", "name"), name="api_key_name_unique"),
        ),
        migrations.AddConstraint(
            model_name="connection",
            constraint=models.UniqueConstraint(fields=("environment", "name"), name="connection_name_unique"),
        ),
    ]
