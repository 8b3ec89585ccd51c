"""The `mock` provider: answers in-process and deterministically, with no network.

For the offline quickstart, demos and load tests only: it never calls a model.
"""

from __future__ import annotations

from gateway.providers.base import CheckResult, Provider
from gateway.providers.registry import provider_register


@provider_register
class MockProvider(Provider):
    slug = "mock"
    label = "Mock (offline demo)"
    description = "Deterministic in-process answers for demos and load tests; never calls a model."
    default_model = "mock-1"

    async def check(self) -> CheckResult:
        return CheckResult(True, 0.0, "ok, the mock provider answers in-process")
