from django.db import migrations


def create_revision_row(apps, schema_editor):
    apps.get_model("connections", "ConfigRevision").objects.get_or_create(pk=1, defaults={"value": 0})


class Migration(migrations.Migration):
    dependencies = [("connections", "0001_initial")]

    operations = [migrations.RunPython(create_revision_row, migrations.RunPython.noop)]
