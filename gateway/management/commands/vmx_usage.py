from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.management.tenant_options import records_scope_add_arguments, records_scope_get
from gateway.audit.selectors import USAGE_GROUPS, since_parse, usage_totals

COLUMNS = [
    ("requests", "requests"),
    ("input_tokens", "input"),
    ("cached_tokens", "cached"),
    ("output_tokens", "output"),
    ("reasoning_tokens", "reasoning"),
    ("audio_tokens", "audio"),
    ("total_tokens", "total"),
]


class Command(BaseCommand):
    help = (
        "Token totals and cost (USD) from the audit, grouped by resource, model, API key, connection or "
        "environment (workspace/environment), over every environment unless given --workspace WORKSPACE or "
        "--environment WORKSPACE/ENVIRONMENT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default="24h", help="e.g. 1h, 24h, 7d (default 24h)")
        parser.add_argument("--by", default="resource", choices=USAGE_GROUPS)
        records_scope_add_arguments(parser, what="usage")

    def handle(
        self, *args: Any, since: str, by: str, workspace: str | None, environment: str | None, **options: Any
    ) -> None:
        workspace, environment = records_scope_get(workspace=workspace, environment=environment)
        try:
            rows = usage_totals(since=since_parse(since), by=by, workspace=workspace, environment=environment)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        width = max([len(by), 8, *(len(str(row[by] or "-")) for row in rows)])
        self.stdout.write(f"{by:<{width}}  " + " ".join(f"{label:>10}" for _, label in COLUMNS) + f" {'cost_usd':>12}")
        totals = dict.fromkeys((key for key, _ in COLUMNS), 0)
        cost: float | None = None
        for row in rows:
            self.stdout.write(
                f"{row[by] or '-':<{width}}  "
                + " ".join(f"{row[key]:>10}" for key, _ in COLUMNS)
                + f" {_money(row['cost_usd']):>12}"
            )
            for key in totals:
                totals[key] += row[key]
            if row["cost_usd"] is not None:
                cost = (cost or 0.0) + row["cost_usd"]
        self.stdout.write(
            f"{'TOTAL':<{width}}  " + " ".join(f"{totals[key]:>10}" for key, _ in COLUMNS) + f" {_money(cost):>12}"
        )


def _money(value: float | None) -> str:
    """USD with 6 decimals; '-' when no record of the group had a known price."""
    return "-" if value is None else f"{value:.6f}"
