from django.db import migrations, models


def copy_started(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Until now a claimed run counted as done: keep today's schedule as it was.
    MaintenanceRun = apps.get_model("gateway", "MaintenanceRun")
    MaintenanceRun.objects.update(last_succeeded_at=models.F("last_started_at"))


class Migration(migrations.Migration):
    dependencies = [("gateway", "0009_count_tokens_endpoint")]

    operations = [
        migrations.AlterField(
            model_name="maintenancerun",
            name="last_started_at",
            field=models.DateTimeField(help_text="When a worker last claimed the run (its lease starts)."),
        ),
        migrations.AddField(
            model_name="maintenancerun",
            name="last_succeeded_at",
            field=models.DateTimeField(blank=True, null=True, help_text="When a run last finished."),
        ),
        migrations.RunPython(copy_started, migrations.RunPython.noop),
    ]
