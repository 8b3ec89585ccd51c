from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from gateway.audit.retention import PURGE_PAUSE_SECONDS, audit_purge


class Command(BaseCommand):
    help = (
        "Delete audit records older than VMX_AUDIT_RETENTION_DAYS and rollups older than "
        "VMX_ROLLUP_RETENTION_DAYS, in chunks (safe while the gateway serves; it also runs this daily)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        report = audit_purge(dry_run=dry_run, pause=PURGE_PAUSE_SECONDS)
        verb = "would delete" if dry_run else "deleted"
        for label, count, before in (
            ("audit records", report.audit_records, report.audit_before),
            ("rollups", report.rollups, report.rollups_before),
        ):
            when = "kept forever (retention 0)" if before is None else f"older than {before:%Y-%m-%d %H:%M:%S} UTC"
            self.stdout.write(f"{label}: {verb} {count} {when}")
