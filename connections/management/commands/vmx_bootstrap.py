from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from connections.models import AIResource, APIKey, Connection
from connections.services import ModelEntrySpec, api_key_save, connection_save, resource_save


class Command(BaseCommand):
    help = (
        "First start only: create an admin user, a working `default` resource (OpenAI when "
        "OPENAI_API_KEY is set, otherwise the offline mock provider) and a gateway API key. "
        "Prints generated credentials once; does nothing on later runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="", help="Base URL to print, e.g. http://127.0.0.1:8000")

    @transaction.atomic
    def handle(self, *args: Any, url: str, **options: Any) -> None:
        base_url = (url or "http://" + os.environ.get("VMX_BIND", "127.0.0.1:8000")).rstrip("/")
        said: list[str] = []

        user_model = get_user_model()
        if not user_model.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(15)
            user_model.objects.create_superuser("admin", "", password)
            said += [f"Admin:    {base_url}/admin/", "          user admin, password " + password]

        if not Connection.objects.exists() and not AIResource.objects.exists():
            said += self._default_resource()

        if not APIKey.objects.exists():
            _, key, _ = api_key_save(name="default", resources=None)
            said += [f"API key:  {key}", "          (allowed every resource)"]
            said += [
                f"Try it:   curl {base_url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\",
                "            -H 'Content-Type: application/json' \\",
                """            -d '{"model": "default", "messages": [{"role": "user", "content": "Hi"}]}'""",
            ]

        if said:
            banner = "=" * 78
            self.stdout.write(banner)
            self.stdout.write("VM-X gateway: first start. These credentials are shown once; store them now.")
            for line in said:
                self.stdout.write(line)
            self.stdout.write(banner)

    def _default_resource(self) -> list[str]:
        api_key = os.environ.get("OPENAI_API_KEY", "")
        if api_key:
            config = {"apiKey": api_key}
            if os.environ.get("OPENAI_BASE_URL"):
                config["baseURL"] = os.environ["OPENAI_BASE_URL"]
            connection_save(name="openai", provider="openai", config=config, description="Created at first start")
            resource_save(
                name="default",
                description="Created at first start",
                models=[
                    ModelEntrySpec(connection="openai", model="gpt-4.1"),
                    ModelEntrySpec(connection="openai", model="gpt-4o-mini"),
                ],
            )
            return ["Resource: default -> openai/gpt-4.1 (fallback gpt-4o-mini), from OPENAI_API_KEY"]
        connection_save(
            name="mock",
            provider="mock",
            config={},
            description="Offline demo provider: deterministic answers, no network. Replace for real use.",
        )
        resource_save(
            name="default", description="Offline demo", models=[ModelEntrySpec(connection="mock", model="mock-1")]
        )
        return ["Resource: default -> mock/mock-1 (offline demo; set OPENAI_API_KEY before first start for OpenAI)"]
