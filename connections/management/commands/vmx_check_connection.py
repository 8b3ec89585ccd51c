from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.crypto import EncryptionKeyError
from connections.management.tenant_options import ENVIRONMENT_METAVAR, environment_option_get
from connections.models import Connection
from connections.services import connection_check


class Command(BaseCommand):
    help = "Make one cheap upstream call with a connection and print the latency or the upstream error."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--environment",
            metavar=ENVIRONMENT_METAVAR,
            help="The connection's environment, e.g. acme/prod (default: default/default).",
        )

    def handle(self, *args: Any, name: str, environment: str | None, **options: Any) -> None:
        target = environment_option_get(environment)
        connection = Connection.objects.filter(environment=target, name=name).first()
        if connection is None:
            # As for one that exists nowhere: another environment's connection is not named.
            raise CommandError(f"no connection '{name}'" + ("" if environment is None else f" in {target.label}"))
        try:
            result = connection_check(connection=connection)
        except EncryptionKeyError as exc:
            raise CommandError(str(exc)) from exc
        if not result.ok:
            raise CommandError(f"{name}: failed after {result.latency_ms:.0f} ms: {result.detail}")
        self.stdout.write(f"{name}: {result.detail} in {result.latency_ms:.0f} ms")
