from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.config_file import ConfigFileError, config_apply, config_file_read, config_parse
from connections.crypto import EncryptionKeyError


class Command(BaseCommand):
    help = "Create or update connections, resources and API keys from a YAML/JSON file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--prune", action="store_true", help="Delete objects that the file does not list.")

    def handle(self, *args: Any, file: Path, prune: bool, **options: Any) -> None:
        try:
            report = config_apply(config_parse(config_file_read(file)), prune=prune)
        except ConfigFileError as exc:
            raise CommandError(f"{file}: nothing was changed:\n" + "\n".join(f"  {p}" for p in exc.problems)) from exc
        except EncryptionKeyError as exc:
            raise CommandError(f"{file}: nothing was changed: {exc}") from exc
        for line in report.lines:
            self.stdout.write(line)
        for name, key in report.created_keys.items():
            self.stdout.write(self.style.WARNING(f"api key {name}: {key}  (shown once; store it now)"))
        if not report.changed:
            self.stdout.write("nothing changed")
