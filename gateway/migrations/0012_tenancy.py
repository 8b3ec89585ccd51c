"""Audit records and rollups gain `workspace` and `environment` (DESIGN.md 2.15); learned upstream
limits are kept per environment.

Every column is added with a constant default: on PostgreSQL 11+ that is a change of the catalog,
not a rewrite of the table, however many records it holds. Existing records and rollups are
`default/default`'s, which is where the configuration migration puts every existing object.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0011_audit_resource_known'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='dailyusagerollup',
            name='daily_usage_rollup_unique',
        ),
        migrations.RemoveConstraint(
            model_name='hourlyusagerollup',
            name='hourly_usage_rollup_unique',
        ),
        migrations.RemoveConstraint(
            model_name='upstreamratelimit',
            name='upstream_rate_limit_unique',
        ),
        migrations.RemoveConstraint(
            model_name='usagerollup',
            name='usage_rollup_unique',
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='environment',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='workspace',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='dailyusagerollup',
            name='environment',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='dailyusagerollup',
            name='workspace',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='hourlyusagerollup',
            name='environment',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='hourlyusagerollup',
            name='workspace',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='upstreamratelimit',
            name='environment',
            field=models.CharField(blank=True, default='', help_text="The environment's id (hex); empty for default/default.", max_length=32),
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='environment',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='workspace',
            field=models.CharField(default='default', max_length=63),
        ),
        migrations.AddIndex(
            model_name='auditrecord',
            index=models.Index(fields=['workspace', 'environment', 'created_at'], name='audit_tenant_created'),
        ),
        migrations.AddConstraint(
            model_name='dailyusagerollup',
            constraint=models.UniqueConstraint(fields=('day', 'workspace', 'environment', 'endpoint', 'resource', 'api_key', 'connection', 'model', 'status_class'), name='daily_usage_rollup_unique'),
        ),
        migrations.AddConstraint(
            model_name='hourlyusagerollup',
            constraint=models.UniqueConstraint(fields=('hour', 'workspace', 'environment', 'endpoint', 'resource', 'api_key', 'connection', 'model', 'status_class'), name='hourly_usage_rollup_unique'),
        ),
        migrations.AddConstraint(
            model_name='upstreamratelimit',
            constraint=models.UniqueConstraint(fields=('environment', 'connection', 'model'), name='upstream_rate_limit_unique'),
        ),
        migrations.AddConstraint(
            model_name='usagerollup',
            constraint=models.UniqueConstraint(fields=('minute', 'workspace', 'environment', 'endpoint', 'resource', 'api_key', 'connection', 'model', 'status_class'), name='usage_rollup_unique'),
        ),
    ]
