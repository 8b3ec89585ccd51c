"""Audit: one record per client request (DESIGN.md 2.9), built here while the request runs and
handed to the writer (`writer.py`) when it ends.

Invariants (DESIGN.md 2.9, 2.13): `AuditEntry.finish()` is idempotent and never raises into the
request; metric labels never carry client text (`_outcome`); bodies, when stored at all
(`VMX_AUDIT_BODIES`), never carry inline base64 payloads (`summarize_payloads`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from gateway.audit.writer import audit_writer
from gateway.core.errors import CapacityExceededError, GatewayError
from gateway.core.pricing import PriceList
from gateway.core.usage import Usage
from gateway.observability import metrics

logger = logging.getLogger("vmx.audit")


@dataclass(slots=True)
class AuditEntry:
    request_id: str
    endpoint: str
    stream: bool = False
    workspace: str = "default"
    environment: str = "default"
    """The key's environment, by name (DESIGN.md 2.15)."""
    api_key: str = ""
    resource: str = ""
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    source_ip: str | None = None
    started: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ttft_ms: float | None = None
    connection: str = ""
    model: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    request_body: Any = None
    response_body: Any = None
    prices: PriceList | None = None
    """The configuration's prices when the request started; None: the cost is not computed."""
    on_finish: Callable[[AuditEntry, float | None], None] | None = None
    """Called once with the entry and its cost when the request ends (capacity settles here)."""
    resource_known: bool = False
    """`resource` names a configured resource or connection (metrics and rollups keep it; otherwise
    `(unknown)`)."""
    direct: bool = False
    """A `connection/model-id` address: metrics label it `(direct)`, never by the client's id."""
    finished: bool = False
    stream_open: bool = False
    """Counted in `vmx_open_streams` (from the first byte of a stream to its end)."""

    def attempt(
        self,
        *,
        connection: str,
        model: str,
        started: float,
        error: GatewayError | None,
        status_code: int | None = None,
        notes: list[str] | None = None,
        tries: int = 1,
    ) -> None:
        """Record one leg. `notes` say how the leg's call was revised (e.g. retried without reasoning);
        `tries` counts its HTTP calls (0 when the leg was skipped without calling)."""
        if error is not None:
            # The upstream's own status when it answered; None for timeouts and connect errors.
            status_code = getattr(error, "upstream_status", None)
        entry: dict[str, Any] = {
            "connection": connection,
            "model": model,
            "status_code": status_code,
            "error": error.message if error is not None else None,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "tries": tries,
        }
        if notes:
            entry["notes"] = notes
        self.attempts.append(entry)
        outcome = _outcome(error, tries=tries)
        metrics.attempt_finished(
            connection=connection,
            model=metrics.DIRECT if self.direct else model,
            outcome=outcome,
            workspace=self.workspace,
            environment=self.environment,
        )
        if tries == 0 and outcome in ("capacity_exceeded", "upstream_rate_limited"):
            metrics.capacity_rejected(
                scope="connection", code=outcome, workspace=self.workspace, environment=self.environment
            )

    def first_byte(self) -> None:
        if self.stream and not self.stream_open and not self.finished:
            self.stream_open = True
            metrics.open_streams.inc()
        if self.ttft_ms is None:
            self.ttft_ms = round((time.monotonic() - self.started) * 1000, 1)

    def finish(self, *, status_code: int, error_type: str = "", error_message: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        cost_usd = self.cost_usd()
        if self.on_finish is not None:
            try:
                self.on_finish(self, cost_usd)
            except Exception:  # never into the request: the record below must still be written
                logger.exception("settling request %s failed", self.request_id)
        row = {
            "request_id": self.request_id,
            "created_at": self.created_at,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "workspace": self.workspace,
            "environment": self.environment,
            "api_key": self.api_key,
            "resource": self.resource[:300],
            "resource_known": self.resource_known if self.resource else None,
            "correlation_id": self.correlation_id[:256],
            "metadata": self.metadata,
            "source_ip": self.source_ip,
            "status_code": status_code,
            "error_type": error_type[:64],
            "error_message": error_message[:4000],
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            "ttft_ms": self.ttft_ms,
            "connection": self.connection,
            "model": self.model[:200],
            "attempts": self.attempts,
            **self.usage.as_dict(),
            "cost_usd": cost_usd,
        }
        if settings.VMX_AUDIT_BODIES:
            row["request_body"] = summarize_payloads(self.request_body)
            row["response_body"] = summarize_payloads(self.response_body)
        audit_writer.submit(row)
        if self.stream_open:
            self.stream_open = False
            metrics.open_streams.dec()
        metrics.request_finished(row, resource_known=self.resource_known, direct=self.direct)

    def cost_usd(self) -> float | None:
        """What the answer cost at the model's price; None when no model answered or it has no price."""
        if not self.model or self.prices is None:
            return None
        price = self.prices.price(self.model)
        if price is None:
            _unpriced(self.model)
            return None
        usage = self.usage
        return price.cost_usd(
            input_tokens=usage.input_tokens, cached_tokens=usage.cached_tokens, output_tokens=usage.output_tokens
        )

    def finish_error(self, error: GatewayError) -> None:
        # Connection limits are counted per leg skipped (`attempt`); a 429 because every leg was
        # skipped is not counted again.
        if isinstance(error, CapacityExceededError) and not self.finished and error.scope != "connection":
            metrics.capacity_rejected(
                scope=error.scope or "api_key",
                code=error.code or "capacity_exceeded",
                workspace=self.workspace,
                environment=self.environment,
            )
        self.finish(
            status_code=error.status_code, error_type=error.code or error.openai_type, error_message=error.message
        )


_unpriced_models: set[str] = set()
MAX_UNPRICED_REPORTED = 1_000


def _outcome(error: GatewayError | None, *, tries: int) -> str:
    """A leg's outcome as a metric label: a small fixed set, never text from the upstream."""
    if error is None:
        return "ok"
    if tries == 0:  # skipped without a call: the error names why (routing's two reasons)
        return error.message if error.message in ("capacity_exceeded", "upstream_rate_limited") else "skipped"
    status = getattr(error, "upstream_status", None)
    if isinstance(status, int):
        return f"http_{status}"
    return type(error).default_code or "error"


def _unpriced(model: str) -> None:
    """One log line per model without a price (per process), so an operator learns to add one."""
    if model in _unpriced_models or len(_unpriced_models) >= MAX_UNPRICED_REPORTED:
        return
    _unpriced_models.add(model)
    logger.warning("no price for model '%s': its audit records have no cost_usd; add a `pricing` entry for it", model)


# ------------------------------------------------------------------------------------------------
# Optional body storage: inline base64 payloads are summarised, never stored.

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)
_BASE64ISH = re.compile(r"^[A-Za-z0-9+/=_-]+$", re.ASCII)
MIN_BASE64_SUMMARY = 512


def summarize_payloads(value: Any) -> Any:
    """`value` with data URLs and long base64 strings replaced by a size and sha256 summary."""
    if isinstance(value, dict):
        return {k: summarize_payloads(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summarize_payloads(v) for v in value]
    if isinstance(value, str) and len(value) >= MIN_BASE64_SUMMARY:
        match = _DATA_URL.match(value)
        payload = value[match.end() :] if match else value
        if match or _BASE64ISH.match(payload):
            try:
                size = len(
                    base64.b64decode(
                        payload + "=" * (-len(payload) % 4),
                        altchars=b"-_" if "-" in payload or "_" in payload else None,
                    )
                )
            except (binascii.Error, ValueError):
                return value
            digest = hashlib.sha256(payload.encode("ascii")).hexdigest()
            kind = match.group(1) if match and match.group(1) else "base64"
            return f"[{kind}: {size} bytes, sha256 {digest}]"
    return value
