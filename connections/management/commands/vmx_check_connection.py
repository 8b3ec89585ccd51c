from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.crypto import EncryptionKeyError
from connections.models import Connection
from connections.services import connection_check


class Command(BaseCommand):
    help = "Make one cheap upstream call with a connection and print the latency or the upstream error."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(f"no connection '{name}'")
        try:
            result = connection_check(connection=connection)
        except EncryptionKeyError as exc:
            raise CommandError(str(exc)) from exc
        if not result.ok:
            raise CommandError(f"{name}: failed after {result.latency_ms:.0f} ms: {result.detail}")
        self.stdout.write(f"{name}: {result.detail} in {result.latency_ms:.0f} ms")
