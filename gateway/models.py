"""The audit record: one row per client request (DESIGN.md 2.9)."""

from __future__ import annotations

from django.db import models


class AuditRecord(models.Model):
    class Endpoint(models.TextChoices):
        CHAT_COMPLETIONS = "chat.completions"
        RESPONSES = "responses"
        MESSAGES = "messages"
        MESSAGES_COUNT_TOKENS = "messages.count_tokens", "Messages: count tokens"

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    # Names, as `api_key` and `resource` are: a record outlives the objects it names (DESIGN.md 2.15).
    workspace = models.CharField(max_length=63, default="default")
    environment = models.CharField(max_length=63, default="default")
    endpoint = models.CharField(max_length=32, choices=Endpoint.choices, db_index=True)
    stream = models.BooleanField(default=False)
    api_key = models.CharField(max_length=64, blank=True, db_index=True, help_text="The key's name.")
    resource = models.CharField(max_length=300, blank=True, db_index=True)
    resource_known = models.BooleanField(
        null=True,
        blank=True,
        help_text="False: the name the client sent matched no resource or connection (rolled up as "
        "`(unknown)`); null: recorded before this was kept.",
    )
    correlation_id = models.CharField(max_length=256, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(db_index=True)
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    duration_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Time to the first byte sent to the client.")
    connection = models.CharField(max_length=64, blank=True, help_text="The connection that answered.")
    model = models.CharField(max_length=200, blank=True, help_text="The upstream model that answered.")
    attempts = models.JSONField(default=list, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    audio_tokens = models.PositiveIntegerField(default=0)
    accepted_prediction_tokens = models.PositiveIntegerField(default=0)
    rejected_prediction_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(
        null=True, blank=True, help_text="From the model's price; empty when no model answered or its price is unknown."
    )
    request_body = models.JSONField(null=True, blank=True, help_text="Only with VMX_AUDIT_BODIES on.")
    response_body = models.JSONField(null=True, blank=True, help_text="Only with VMX_AUDIT_BODIES on.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit record"
        indexes = [models.Index(fields=["workspace", "environment", "created_at"], name="audit_tenant_created")]

    def __str__(self) -> str:
        return self.request_id


class CapacityCounter(models.Model):
    """One capacity counter of the database store (used when `REDIS_URL` is not set).

    `key` is the policy's counter key (scope, period, window start, dimension value). `reserved_*`
    are the sums of the live `CapacityReservation` rows of the same key (DESIGN.md 2.10). A limit
    with a dimension has an index row too (`key` = the policy's `values_key`, `requests` = how many
    values it counts), which its per-value rows name in `values_of`.
    """

    key = models.CharField(max_length=255, unique=True)
    values_of = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="The index of its limit's values (per-value counters)."
    )
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True, help_text="Empty: never (lifetime).")
    requests = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0, help_text="USD x 10^9.")
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_cost_nanos = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.key


class CapacityReservation(models.Model):
    """Tokens and cost held by a running request until it ends (or, if its worker died, expires)."""

    counter_key = models.CharField(max_length=255)
    reservation = models.CharField(max_length=64)
    tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["counter_key", "reservation"])]

    def __str__(self) -> str:
        return f"{self.reservation} on {self.counter_key}"


class UpstreamRateLimit(models.Model):
    """The last `x-ratelimit-*` headers an upstream sent per connection x model (DESIGN.md 2.10)."""

    environment = models.CharField(
        max_length=32, blank=True, default="", help_text="The environment's id (hex); empty for default/default."
    )
    connection = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    limit_requests = models.BigIntegerField(null=True, blank=True)
    remaining_requests = models.BigIntegerField(null=True, blank=True)
    reset_requests = models.CharField(max_length=32, blank=True, help_text="As the upstream said it, e.g. 1m30s.")
    limit_tokens = models.BigIntegerField(null=True, blank=True)
    remaining_tokens = models.BigIntegerField(null=True, blank=True)
    reset_tokens = models.CharField(max_length=32, blank=True)
    exhausted_until = models.DateTimeField(
        null=True, blank=True, help_text="Requests skip this connection x model until then (nothing left upstream)."
    )
    seen_at = models.DateTimeField(db_index=True)
    cleared_at = models.DateTimeField(
        null=True, blank=True, help_text="When an operator last cleared the mark (workers drop older marks)."
    )

    class Meta:
        ordering = ["connection", "model"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "connection", "model"], name="upstream_rate_limit_unique")
        ]
        verbose_name = "upstream rate limit"

    def __str__(self) -> str:
        return f"{self.connection}/{self.model}"


class RollupSums(models.Model):
    """The dimensions and sums a rollup row keeps (gateway/audit/rollups.py): per workspace, environment,
    endpoint, resource, API key, connection, model and status class, written by the audit writer in the same transaction
    as the records they count. Histogram columns `latency_NN` / `ttft_NN` count requests per
    duration bucket. The concrete tables add their period's start."""

    workspace = models.CharField(max_length=63, default="default")
    environment = models.CharField(max_length=63, default="default")
    endpoint = models.CharField(max_length=32)
    resource = models.CharField(max_length=300, blank=True)
    api_key = models.CharField(max_length=64, blank=True)
    connection = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    status_class = models.PositiveSmallIntegerField(help_text="The status code's hundreds: 2, 4 or 5.")
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    audio_tokens = models.BigIntegerField(default=0)
    accepted_prediction_tokens = models.BigIntegerField(default=0)
    rejected_prediction_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0, help_text="The sum of the known costs.")
    priced = models.BigIntegerField(default=0, help_text="Requests whose cost was known.")
    duration_ms_sum = models.FloatField(default=0.0)
    ttft_ms_sum = models.FloatField(default=0.0)
    ttft_count = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


def _one_row_per_period(period_field: str, *, name: str) -> models.UniqueConstraint:
    """One row per period and dimensions: what the writers' upserts add to. Its index, which
    starts with the period, also serves the reads by period and the purge."""
    dimensions = ["workspace", "environment", "endpoint", "resource", "api_key", "connection", "model", "status_class"]
    return models.UniqueConstraint(fields=[period_field, *dimensions], name=name)


class UsageRollup(RollupSums):
    """Per-minute sums of the audit: what usage totals read, exact to the minute."""

    minute = models.DateTimeField()

    class Meta:
        constraints = [_one_row_per_period("minute", name="usage_rollup_unique")]
        verbose_name = "usage rollup"

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.resource} {self.status_class}xx"


class HourlyUsageRollup(RollupSums):
    """Per-hour sums of the audit, written beside the per-minute ones: the dashboard's day and
    week read about sixty times fewer rows."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [_one_row_per_period("hour", name="hourly_usage_rollup_unique")]
        verbose_name = "hourly usage rollup"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.resource} {self.status_class}xx"


class DailyUsageRollup(RollupSums):
    """Per-day (UTC) sums of the audit, written beside the others: the dashboard's month reads
    about 24 times fewer rows than the hours."""

    day = models.DateTimeField(help_text="The day's start, midnight UTC.")

    class Meta:
        constraints = [_one_row_per_period("day", name="daily_usage_rollup_unique")]
        verbose_name = "daily usage rollup"

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.resource} {self.status_class}xx"


def _histogram_columns(model: type[models.Model]) -> None:
    from gateway.audit.rollups import BUCKETS

    for index in range(BUCKETS):
        models.BigIntegerField(default=0).contribute_to_class(model, f"latency_{index:02d}")
        models.BigIntegerField(default=0).contribute_to_class(model, f"ttft_{index:02d}")


_histogram_columns(UsageRollup)
_histogram_columns(HourlyUsageRollup)
_histogram_columns(DailyUsageRollup)


class MaintenanceRun(models.Model):
    """When a periodic job last started, across every worker and instance on this database: a
    worker runs the job only if its conditional update of this row claims the run."""

    name = models.CharField(max_length=64, unique=True)
    last_started_at = models.DateTimeField(help_text="When a worker last claimed the run (its lease starts).")
    last_succeeded_at = models.DateTimeField(null=True, blank=True, help_text="When a run last finished.")

    def __str__(self) -> str:
        return self.name
