from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.management.tenant_options import records_scope_add_arguments, records_scope_get
from gateway.audit.selectors import audit_record_as_dict, audit_records_list, since_parse
from gateway.models import AuditRecord


class Command(BaseCommand):
    help = (
        "Print audit records, newest first, of every environment unless given --workspace WORKSPACE or "
        "--environment WORKSPACE/ENVIRONMENT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="e.g. 1h, 30m, 7d, or an ISO date (default: no limit)")
        parser.add_argument("--limit", type=int, default=100)
        parser.add_argument("--format", choices=["jsonl", "table"], default="table")
        parser.add_argument("--request-id", default="")
        parser.add_argument("--correlation-id", default="")
        parser.add_argument("--resource", default="")
        parser.add_argument("--api-key", default="", help="The key's name.")
        parser.add_argument("--endpoint", default="", choices=["", *AuditRecord.Endpoint.values])
        records_scope_add_arguments(parser, what="records")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = since_parse(options["since"]) if options["since"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        workspace, environment = records_scope_get(workspace=options["workspace"], environment=options["environment"])
        records = audit_records_list(
            since=since,
            limit=options["limit"],
            request_id=options["request_id"],
            correlation_id=options["correlation_id"],
            resource=options["resource"],
            api_key=options["api_key"],
            endpoint=options["endpoint"],
            workspace=workspace or "",
            environment=environment or "",
        )
        if options["format"] == "jsonl":
            for record in records:
                self.stdout.write(orjson.dumps(audit_record_as_dict(record)).decode())
            return
        header = (
            f"{'time (UTC)':<19}  {'environment':<24} {'endpoint':<17} {'status':>6} {'resource':<20} "
            f"{'api key':<14} {'model':<22} {'tokens':>8} {'ms':>8}  request id"
        )
        self.stdout.write(header)
        for record in records:
            where = f"{record.workspace}/{record.environment}"
            self.stdout.write(
                f"{record.created_at:%Y-%m-%d %H:%M:%S}  {where[:24]:<24} "
                f"{record.endpoint + ('~' if record.stream else ''):<17} "
                f"{record.status_code:>6} {record.resource[:20]:<20} {record.api_key[:14]:<14} {record.model[:22]:<22} "
                f"{record.total_tokens:>8} {record.duration_ms:>8.0f}  {record.request_id}"
            )
