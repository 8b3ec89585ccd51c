"""Count the audit records written before rollups existed (DESIGN.md 2.12), so usage, the
dashboard and the commands see the whole history. Additive: records the new code writes while
this runs are counted by it, and both add to the same rows."""

from django.db import migrations

CHUNK = 5_000
FIELDS = (
    "request_id",
    "created_at",
    "endpoint",
    "resource",
    "api_key",
    "connection",
    "model",
    "status_code",
    "duration_ms",
    "ttft_ms",
    "cost_usd",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
    "total_tokens",
)


def backfill(apps, schema_editor):
    from gateway.audit.store import rollups_upsert
    from gateway.audit.rollups import rollups_from_rows

    audit = apps.get_model("gateway", "AuditRecord")
    rollup = apps.get_model("gateway", "UsageRollup")
    batch = []
    for row in audit.objects.order_by("id").values(*FIELDS).iterator(chunk_size=CHUNK):
        batch.append(row)
        if len(batch) >= CHUNK:
            rollups_upsert(rollups_from_rows(batch), model=rollup, period_field="minute")
            batch = []
    rollups_upsert(rollups_from_rows(batch), model=rollup, period_field="minute")


class Migration(migrations.Migration):
    dependencies = [("gateway", "0004_usage_rollups")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
