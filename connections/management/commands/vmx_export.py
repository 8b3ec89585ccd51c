"""`manage.py vmx_export [FILE] [--environment ws/env] [--include-secrets]` (DESIGN.md 2.2, 2.15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.config_export import config_export_yaml
from connections.crypto import EncryptionKeyError
from connections.management.tenant_options import ENVIRONMENT_METAVAR, environment_option_get


class Command(BaseCommand):
    help = (
        "Write the configuration in the vmx_apply file format (secrets masked unless --include-secrets): "
        "default/default's objects and the prices, or with --environment that environment's objects under "
        "`environment: workspace/environment` and no prices."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", type=Path, help="Output file; standard output when omitted.")
        parser.add_argument(
            "--environment",
            metavar=ENVIRONMENT_METAVAR,
            help="Write this environment, e.g. acme/dev (apply it elsewhere with vmx_apply --environment).",
        )
        parser.add_argument("--include-secrets", action="store_true", help="Write secrets in clear text.")

    def handle(
        self, *args: Any, file: Path | None, environment: str | None, include_secrets: bool, **options: Any
    ) -> None:
        target = environment_option_get(environment) if environment is not None else None
        try:
            text = config_export_yaml(environment=target, include_secrets=include_secrets)
        except EncryptionKeyError as exc:
            raise CommandError(str(exc)) from exc
        if file is None:
            self.stdout.write(text, ending="")
            return
        # A file holding secrets is readable by its owner only.
        file.touch(mode=0o600 if include_secrets else 0o644, exist_ok=True)
        file.write_text(text, encoding="utf-8")
        self.stderr.write(f"wrote {file}")
