"""OpenAI (and OpenAI-compatible servers via `baseURL`), through the official `openai` SDK."""

from __future__ import annotations

import re
import time

import openai

from gateway.providers.base import CheckResult, ConfigField, Provider
from gateway.providers.registry import provider_register

# Upstream error messages sometimes echo part of the key ("Incorrect API key provided: sk-ab***yz").
_KEY_LIKE = re.compile(r"\b(sk|sess|org|proj)-[A-Za-z0-9_*.\-]{4,}")


@provider_register
class OpenAIProvider(Provider):
    slug = "openai"
    label = "OpenAI"
    description = "OpenAI, or any OpenAI-compatible server through baseURL."
    default_model = "gpt-4.1"
    config_fields = (
        ConfigField("apiKey", "API key", required=True, secret=True),
        ConfigField(
            "baseURL",
            "Base URL",
            kind="url",
            help_text="Optional, e.g. https://api.openai.com/v1 (include the /v1).",
        ),
        ConfigField("organization", "Organization", help_text="Optional OpenAI-Organization header."),
        ConfigField("project", "Project", help_text="Optional OpenAI-Project header."),
    )

    _client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        """One pooled client per connection version (see the registry)."""
        if self._client is None:
            config = self.connection.config
            self._client = openai.AsyncOpenAI(
                api_key=self.connection.secrets.get("apiKey", ""),
                base_url=config.get("baseURL") or None,
                organization=config.get("organization") or None,
                project=config.get("project") or None,
                max_retries=0,
            )
        return self._client

    def scrub(self, message: str) -> str:
        """`message` without the connection's key or anything shaped like one."""
        secret = self.connection.secrets.get("apiKey")
        if secret:
            message = message.replace(secret, "***")
        return _KEY_LIKE.sub(lambda m: f"{m.group(1)}-***", message)

    async def check(self) -> CheckResult:
        started = time.perf_counter()
        try:
            page = await self.client.with_options(timeout=15.0, max_retries=0).models.list()
        except openai.APIStatusError as exc:
            detail = f"upstream answered HTTP {exc.status_code}: {self.scrub(exc.message)}"
            return CheckResult(False, _elapsed_ms(started), detail)
        except openai.APITimeoutError:
            return CheckResult(False, _elapsed_ms(started), "upstream timed out after 15 s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            return CheckResult(False, _elapsed_ms(started), f"cannot reach upstream: {self.scrub(str(cause))}")
        count = len(page.data)
        return CheckResult(True, _elapsed_ms(started), f"ok, {count} model{'s' if count != 1 else ''} listed")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
