"""Per-hour and per-day rollups beside the per-minute ones (DESIGN.md 2.12), counted from the
per-minute rows already written, so the dashboard's longer periods see the whole history."""

from datetime import UTC

from django.db import migrations, models


SUMS = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
    "total_tokens",
    "cost_usd",
    "priced",
    "duration_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
    *(f"latency_{i:02d}" for i in range(25)),
    *(f"ttft_{i:02d}" for i in range(25)),
)
DIMENSIONS = ("endpoint", "resource", "api_key", "connection", "model", "status_class")


def backfill(apps, schema_editor):
    """The hours and days of the per-minute rollups already written. Every instance must be
    stopped while this runs (`make run` migrates before it starts): rows an older server adds to
    the minutes afterwards would never reach the hours and days."""
    from django.db.models import Sum
    from django.db.models.functions import TruncDay, TruncHour

    minute = apps.get_model("gateway", "UsageRollup")
    for model_name, field, trunc in (
        ("HourlyUsageRollup", "hour", TruncHour),
        ("DailyUsageRollup", "day", TruncDay),
    ):
        model = apps.get_model("gateway", model_name)
        rows = (
            minute.objects.annotate(start=trunc("minute", tzinfo=UTC))
            .values("start", *DIMENSIONS)
            .annotate(**{f"{name}__total": Sum(name) for name in SUMS})
            .order_by()
        )
        batch = []
        for row in rows.iterator(chunk_size=2_000):
            batch.append(
                model(
                    **{field: row["start"]},
                    **{name: row[name] for name in DIMENSIONS},
                    **{name: row[f"{name}__total"] for name in SUMS},
                )
            )
            if len(batch) >= 2_000:
                model.objects.bulk_create(batch)
                batch = []
        model.objects.bulk_create(batch)


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0005_usage_rollups_backfill'),
    ]

    operations = [
        migrations.CreateModel(
            name='DailyUsageRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('endpoint', models.CharField(max_length=32)),
                ('resource', models.CharField(blank=True, max_length=300)),
                ('api_key', models.CharField(blank=True, max_length=64)),
                ('connection', models.CharField(blank=True, max_length=64)),
                ('model', models.CharField(blank=True, max_length=200)),
                ('status_class', models.PositiveSmallIntegerField(help_text="The status code's hundreds: 2, 4 or 5.")),
                ('requests', models.BigIntegerField(default=0)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('audio_tokens', models.BigIntegerField(default=0)),
                ('accepted_prediction_tokens', models.BigIntegerField(default=0)),
                ('rejected_prediction_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
                ('cost_usd', models.FloatField(default=0.0, help_text='The sum of the known costs.')),
                ('priced', models.BigIntegerField(default=0, help_text='Requests whose cost was known.')),
                ('duration_ms_sum', models.FloatField(default=0.0)),
                ('ttft_ms_sum', models.FloatField(default=0.0)),
                ('ttft_count', models.BigIntegerField(default=0)),
                ('day', models.DateTimeField(help_text="The day's start, midnight UTC.")),
                ('latency_00', models.BigIntegerField(default=0)),
                ('ttft_00', models.BigIntegerField(default=0)),
                ('latency_01', models.BigIntegerField(default=0)),
                ('ttft_01', models.BigIntegerField(default=0)),
                ('latency_02', models.BigIntegerField(default=0)),
                ('ttft_02', models.BigIntegerField(default=0)),
                ('latency_03', models.BigIntegerField(default=0)),
                ('ttft_03', models.BigIntegerField(default=0)),
                ('latency_04', models.BigIntegerField(default=0)),
                ('ttft_04', models.BigIntegerField(default=0)),
                ('latency_05', models.BigIntegerField(default=0)),
                ('ttft_05', models.BigIntegerField(default=0)),
                ('latency_06', models.BigIntegerField(default=0)),
                ('ttft_06', models.BigIntegerField(default=0)),
                ('latency_07', models.BigIntegerField(default=0)),
                ('ttft_07', models.BigIntegerField(default=0)),
                ('latency_08', models.BigIntegerField(default=0)),
                ('ttft_08', models.BigIntegerField(default=0)),
                ('latency_09', models.BigIntegerField(default=0)),
                ('ttft_09', models.BigIntegerField(default=0)),
                ('latency_10', models.BigIntegerField(default=0)),
                ('ttft_10', models.BigIntegerField(default=0)),
                ('latency_11', models.BigIntegerField(default=0)),
                ('ttft_11', models.BigIntegerField(default=0)),
                ('latency_12', models.BigIntegerField(default=0)),
                ('ttft_12', models.BigIntegerField(default=0)),
                ('latency_13', models.BigIntegerField(default=0)),
                ('ttft_13', models.BigIntegerField(default=0)),
                ('latency_14', models.BigIntegerField(default=0)),
                ('ttft_14', models.BigIntegerField(default=0)),
                ('latency_15', models.BigIntegerField(default=0)),
                ('ttft_15', models.BigIntegerField(default=0)),
                ('latency_16', models.BigIntegerField(default=0)),
                ('ttft_16', models.BigIntegerField(default=0)),
                ('latency_17', models.BigIntegerField(default=0)),
                ('ttft_17', models.BigIntegerField(default=0)),
                ('latency_18', models.BigIntegerField(default=0)),
                ('ttft_18', models.BigIntegerField(default=0)),
                ('latency_19', models.BigIntegerField(default=0)),
                ('ttft_19', models.BigIntegerField(default=0)),
                ('latency_20', models.BigIntegerField(default=0)),
                ('ttft_20', models.BigIntegerField(default=0)),
                ('latency_21', models.BigIntegerField(default=0)),
                ('ttft_21', models.BigIntegerField(default=0)),
                ('latency_22', models.BigIntegerField(default=0)),
                ('ttft_22', models.BigIntegerField(default=0)),
                ('latency_23', models.BigIntegerField(default=0)),
                ('ttft_23', models.BigIntegerField(default=0)),
                ('latency_24', models.BigIntegerField(default=0)),
                ('ttft_24', models.BigIntegerField(default=0)),
            ],
            options={
                'verbose_name': 'daily usage rollup',
            },
        ),
        migrations.CreateModel(
            name='HourlyUsageRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('endpoint', models.CharField(max_length=32)),
                ('resource', models.CharField(blank=True, max_length=300)),
                ('api_key', models.CharField(blank=True, max_length=64)),
                ('connection', models.CharField(blank=True, max_length=64)),
                ('model', models.CharField(blank=True, max_length=200)),
                ('status_class', models.PositiveSmallIntegerField(help_text="The status code's hundreds: 2, 4 or 5.")),
                ('requests', models.BigIntegerField(default=0)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('audio_tokens', models.BigIntegerField(default=0)),
                ('accepted_prediction_tokens', models.BigIntegerField(default=0)),
                ('rejected_prediction_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
                ('cost_usd', models.FloatField(default=0.0, help_text='The sum of the known costs.')),
                ('priced', models.BigIntegerField(default=0, help_text='Requests whose cost was known.')),
                ('duration_ms_sum', models.FloatField(default=0.0)),
                ('ttft_ms_sum', models.FloatField(default=0.0)),
                ('ttft_count', models.BigIntegerField(default=0)),
                ('hour', models.DateTimeField()),
                ('latency_00', models.BigIntegerField(default=0)),
                ('ttft_00', models.BigIntegerField(default=0)),
                ('latency_01', models.BigIntegerField(default=0)),
                ('ttft_01', models.BigIntegerField(default=0)),
                ('latency_02', models.BigIntegerField(default=0)),
                ('ttft_02', models.BigIntegerField(default=0)),
                ('latency_03', models.BigIntegerField(default=0)),
                ('ttft_03', models.BigIntegerField(default=0)),
                ('latency_04', models.BigIntegerField(default=0)),
                ('ttft_04', models.BigIntegerField(default=0)),
                ('latency_05', models.BigIntegerField(default=0)),
                ('ttft_05', models.BigIntegerField(default=0)),
                ('latency_06', models.BigIntegerField(default=0)),
                ('ttft_06', models.BigIntegerField(default=0)),
                ('latency_07', models.BigIntegerField(default=0)),
                ('ttft_07', models.BigIntegerField(default=0)),
                ('latency_08', models.BigIntegerField(default=0)),
                ('ttft_08', models.BigIntegerField(default=0)),
                ('latency_09', models.BigIntegerField(default=0)),
                ('ttft_09', models.BigIntegerField(default=0)),
                ('latency_10', models.BigIntegerField(default=0)),
                ('ttft_10', models.BigIntegerField(default=0)),
                ('latency_11', models.BigIntegerField(default=0)),
                ('ttft_11', models.BigIntegerField(default=0)),
                ('latency_12', models.BigIntegerField(default=0)),
                ('ttft_12', models.BigIntegerField(default=0)),
                ('latency_13', models.BigIntegerField(default=0)),
                ('ttft_13', models.BigIntegerField(default=0)),
                ('latency_14', models.BigIntegerField(default=0)),
                ('ttft_14', models.BigIntegerField(default=0)),
                ('latency_15', models.BigIntegerField(default=0)),
                ('ttft_15', models.BigIntegerField(default=0)),
                ('latency_16', models.BigIntegerField(default=0)),
                ('ttft_16', models.BigIntegerField(default=0)),
                ('latency_17', models.BigIntegerField(default=0)),
                ('ttft_17', models.BigIntegerField(default=0)),
                ('latency_18', models.BigIntegerField(default=0)),
                ('ttft_18', models.BigIntegerField(default=0)),
                ('latency_19', models.BigIntegerField(default=0)),
                ('ttft_19', models.BigIntegerField(default=0)),
                ('latency_20', models.BigIntegerField(default=0)),
                ('ttft_20', models.BigIntegerField(default=0)),
                ('latency_21', models.BigIntegerField(default=0)),
                ('ttft_21', models.BigIntegerField(default=0)),
                ('latency_22', models.BigIntegerField(default=0)),
                ('ttft_22', models.BigIntegerField(default=0)),
                ('latency_23', models.BigIntegerField(default=0)),
                ('ttft_23', models.BigIntegerField(default=0)),
                ('latency_24', models.BigIntegerField(default=0)),
                ('ttft_24', models.BigIntegerField(default=0)),
            ],
            options={
                'verbose_name': 'hourly usage rollup',
            },
        ),
        # The unique constraint's index starts with the minute: this one only cost writes.
        migrations.RemoveIndex(
            model_name='usagerollup',
            name='usage_rollup_minute',
        ),
        migrations.AddConstraint(
            model_name='dailyusagerollup',
            constraint=models.UniqueConstraint(fields=('day', 'endpoint', 'resource', 'api_key', 'connection', 'model', 'status_class'), name='daily_usage_rollup_unique'),
        ),
        migrations.AddConstraint(
            model_name='hourlyusagerollup',
            constraint=models.UniqueConstraint(fields=('hour', 'endpoint', 'resource', 'api_key', 'connection', 'model', 'status_class'), name='hourly_usage_rollup_unique'),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
