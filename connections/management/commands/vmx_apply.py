"""`manage.py vmx_apply FILE [--environment ws/env] [--prune]` (DESIGN.md 2.2, 2.15).

The target is `--environment`, else the file's own `environment:`, else `default/default` (the
output of a file that names none is what it was before environments existed). A target that does
not exist is created in the same transaction as the rest, so a refused file leaves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.config_file import ConfigFileError, config_apply, config_file_read, config_parse
from connections.crypto import EncryptionKeyError
from connections.management.tenant_options import ENVIRONMENT_METAVAR, environment_label_check


class Command(BaseCommand):
    help = (
        "Create or update connections, resources and API keys from a YAML/JSON file (idempotent), in one "
        "environment: --environment, else the file's `environment: workspace/environment`, else default/default."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--environment",
            metavar=ENVIRONMENT_METAVAR,
            help="Apply the file to this environment, e.g. acme/prod (created if missing); wins over the "
            "file's own `environment:`. A file for an environment may not hold `pricing` (prices are global).",
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete the target environment's objects that the file does not list (prices too, only in a "
            "file without an environment).",
        )

    def handle(self, *args: Any, file: Path, environment: str | None, prune: bool, **options: Any) -> None:
        if environment is not None:
            environment_label_check(environment)  # named as the flag, before the file is read
        try:
            report = config_apply(config_parse(config_file_read(file)), environment=environment, prune=prune)
        except ConfigFileError as exc:
            raise CommandError(f"{file}: nothing was changed:\n" + "\n".join(f"  {p}" for p in exc.problems)) from exc
        except EncryptionKeyError as exc:
            raise CommandError(f"{file}: nothing was changed: {exc}") from exc
        if report.overridden is not None:
            self.stdout.write(
                f"environment: --environment {report.environment} wins over the file's environment {report.overridden}"
            )
        for line in report.lines:
            self.stdout.write(line)
        for name, key in report.created_keys.items():
            self.stdout.write(self.style.WARNING(f"api key {name}: {key}  (shown once; store it now)"))
        if not report.changed:
            self.stdout.write("nothing changed")
