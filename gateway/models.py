"""The audit record: one row per client request (DESIGN.md 2.9)."""

from __future__ import annotations

from django.db import models


class AuditRecord(models.Model):
    class Endpoint(models.TextChoices):
        CHAT_COMPLETIONS = "chat.completions"
        RESPONSES = "responses"
        MESSAGES = "messages"

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    endpoint = models.CharField(max_length=32, choices=Endpoint.choices, db_index=True)
    stream = models.BooleanField(default=False)
    api_key = models.CharField(max_length=64, blank=True, db_index=True, help_text="The key's name.")
    resource = models.CharField(max_length=300, blank=True, db_index=True)
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

    def __str__(self) -> str:
        return self.request_id
