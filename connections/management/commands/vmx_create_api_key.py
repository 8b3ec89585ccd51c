from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.management.tenant_options import ENVIRONMENT_METAVAR, environment_option_get
from connections.models import APIKey
from connections.services import api_key_save


class Command(BaseCommand):
    help = "Create a gateway API key in one environment (default default/default) and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--resources", help="Comma-separated resource names (of the key's environment).")
        scope.add_argument("--all", action="store_true", help="Allow every resource of the key's environment.")
        parser.add_argument("--key", help="Use this value instead of generating one (at least 20 characters).")
        parser.add_argument(
            "--environment",
            metavar=ENVIRONMENT_METAVAR,
            help="The environment the key belongs to, e.g. acme/prod (default: default/default).",
        )

    def handle(
        self,
        *args: Any,
        name: str,
        resources: str | None,
        all: bool,
        key: str | None,
        environment: str | None,
        **options: Any,
    ) -> None:
        target = environment_option_get(environment)
        if APIKey.objects.filter(environment=target, name=name).exists():
            where = "" if environment is None else f" in {target.label}"
            raise CommandError(f"an API key named '{name}' already exists{where}")
        names = None if all else [part.strip() for part in (resources or "").split(",") if part.strip()]
        if names == []:
            raise CommandError("--resources needs at least one resource name")
        try:
            _, generated, _ = api_key_save(name=name, resources=names, key=key, environment=target)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            ) from exc
        self.stdout.write(generated or key or "")
        where = "" if environment is None else f" in {target.label}"
        self.stderr.write(f"created API key '{name}'{where}" + (" (shown once; store it now)" if generated else ""))
