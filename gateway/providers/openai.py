"""OpenAI (and OpenAI-compatible servers via `baseURL`), through the official `openai` SDK."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator

import httpx2
import openai

from gateway.core.errors import (
    UpstreamAuthFailedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.providers.base import (
    CheckResult,
    ConfigField,
    Provider,
    UpstreamRequest,
    UpstreamResponse,
    passthrough_headers,
)

# Every concurrent stream holds one upstream connection: the SDK's default cap (1,000) would queue
# streams beyond it. Keep-alive connections are what makes the next call cheap.
CONNECTION_LIMITS = httpx2.Limits(max_connections=20_000, max_keepalive_connections=2_000, keepalive_expiry=30)
JSON_HEADERS = {"Content-Type": "application/json"}

# Upstream error messages sometimes echo part of the key ("Incorrect API key provided: sk-ab***yz").
_KEY_LIKE = re.compile(r"\b(sk|sess|org|proj)-[A-Za-z0-9_*.\-]{4,}")


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
                http_client=_http_client(),
            )
        return self._client

    def scrub(self, message: str) -> str:
        """`message` without the connection's key or anything shaped like one."""
        return _KEY_LIKE.sub(lambda m: f"{m.group(1)}-***", self.redactor.text(message))

    async def check(self) -> CheckResult:
        started = time.perf_counter()
        try:
            page = await self.client.with_options(timeout=15.0, max_retries=0).models.list()
        except openai.APIStatusError as exc:
            detail = f"upstream answered HTTP {exc.status_code}: {self.scrub(exc.message)}"
            return CheckResult(False, _elapsed_ms(started), detail)
        except openai.APIConnectionError as exc:
            if _timed_out(exc):
                return CheckResult(False, _elapsed_ms(started), "upstream timed out after 15 s")
            cause = exc.__cause__ or exc
            return CheckResult(False, _elapsed_ms(started), f"cannot reach upstream: {self.scrub(str(cause))}")
        count = len(page.data)
        return CheckResult(True, _elapsed_ms(started), f"ok, {count} model{'s' if count != 1 else ''} listed")

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        # client.post with cast_to=httpx2.Response keeps the SDK's auth, base URL, per-call
        # max_retries and error classes, and skips its model parsing: the body is relayed as is.
        name = self.connection.name
        try:
            response = await self.client.post(
                request.path,
                cast_to=httpx2.Response,
                content=request.body,
                options={"headers": JSON_HEADERS, "max_retries": request.max_retries, "timeout": request.timeout},
                stream=request.stream,
            )
        except openai.APIStatusError as exc:
            tries = _tries(exc.response.request)
            if exc.status_code in (401, 403):
                raise UpstreamAuthFailedError(
                    connection=name,
                    upstream_status=exc.status_code,
                    upstream_message=self.scrub(exc.message),
                    tries=tries,
                ) from None
            raise UpstreamStatusError(
                status=exc.status_code,
                body=exc.response.content,
                headers=passthrough_headers(exc.response.headers),
                connection=name,
                tries=tries,
            ) from None
        except openai.APIConnectionError as exc:
            tries = _tries(exc.request)
            if _timed_out(exc):
                raise UpstreamTimeoutError(
                    f"upstream of connection '{name}' did not answer within {request.timeout:g} s",
                    connection=name,
                    tries=tries,
                ) from None
            cause = self.scrub(_describe(exc.__cause__ or exc))
            raise UpstreamUnavailableError(
                f"cannot reach the upstream of connection '{name}': {cause}", connection=name, tries=tries
            ) from None
        headers = passthrough_headers(response.headers)
        tries = _tries(response.request)
        if not request.stream:
            return UpstreamResponse(status=response.status_code, headers=headers, body=response.content, tries=tries)
        return UpstreamResponse(
            status=response.status_code,
            headers=headers,
            chunks=self._relay(response, waited=request.timeout),
            closer=response.aclose,
            tries=tries,
        )

    async def _relay(self, response: httpx2.Response, *, waited: float) -> AsyncIterator[bytes]:
        name = self.connection.name
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx2.HTTPError as exc:
            if _timed_out(exc):  # the aiohttp transport calls a dropped connection a "timeout" too
                raise UpstreamTimeoutError(
                    f"upstream of connection '{name}' sent nothing for {waited:g} s mid-stream", connection=name
                ) from None
            raise UpstreamUnavailableError(
                f"upstream stream of connection '{name}' broke: {self.scrub(_describe(exc))}",
                connection=name,
            ) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _timed_out(error: BaseException) -> bool:
    """A real timeout, not a refused or reset connection. The SDK's aiohttp transport reports
    refused, reset and closed connections as connect *timeouts*; only a `TimeoutError` somewhere
    in the chain of causes says the upstream was too slow (DESIGN.md 2.13: 504 only then)."""
    cause: BaseException | None = error
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, TimeoutError):
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def _tries(request: httpx2.Request | None) -> int:
    """HTTP calls the SDK made: it numbers its retries in a header of the last request it sent."""
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1 if request is not None else 1
    except ValueError:
        return 1


def _describe(error: BaseException) -> str:
    """The innermost cause worth showing: 'ConnectionResetError: [Errno 104] …'."""
    seen = 0
    while (error.__cause__ or error.__context__) is not None and seen < 10:
        error, seen = error.__cause__ or error.__context__, seen + 1  # type: ignore[assignment]
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _http_client() -> httpx2.AsyncClient:
    """The SDK's aiohttp transport by default (VMX_UPSTREAM_TRANSPORT=aiohttp): the same SDK, auth,
    retries and error classes, with aiohttp's C HTTP parser under them instead of the pure-Python
    httpcore/h11 stack that was half of a worker's CPU under load. `httpx` selects the SDK default."""
    if os.environ.get("VMX_UPSTREAM_TRANSPORT", "aiohttp") == "aiohttp":
        return openai.DefaultAioHttpClient(limits=CONNECTION_LIMITS)
    return openai.DefaultAsyncHttpxClient(limits=CONNECTION_LIMITS)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
