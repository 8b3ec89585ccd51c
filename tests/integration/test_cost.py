"""Cost per request: the audit's cost_usd from the bundled prices and from `pricing` entries
(DESIGN.md 2.10, "Cost"), through the running gateway and the real openai SDK."""

from __future__ import annotations

import time

import openai
import pytest
import yaml

from tests.fakes.openai_upstream import CHAT_USAGE
from tests.integration.conftest import ALL_KEY
from tests.integration.server import manage

MESSAGES = [{"role": "user", "content": "Hello gateway"}]
PROMPT = CHAT_USAGE["prompt_tokens"]  # 40, of which 8 cached
CACHED = CHAT_USAGE["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
OUTPUT = CHAT_USAGE["completion_tokens"]  # 12, of which 5 reasoning


@pytest.fixture
def client(gateway):
    with openai.OpenAI(api_key=ALL_KEY, base_url=f"{gateway.base_url}/v1", max_retries=0) as sdk:
        yield sdk


def _cost_of(client, gateway, model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    return gateway.audit(raw.headers["x-vmx-request-id"])["cost_usd"]


def test_every_audit_record_carries_its_cost(client, gateway, upstream, tmp_path):
    # gpt-4.1 at the bundled price: 2.00 input, 0.50 cached input, 8.00 output per 1M tokens.
    expected = ((PROMPT - CACHED) * 2.00 + CACHED * 0.50 + OUTPUT * 8.00) / 1e6
    assert _cost_of(client, gateway, "default") == pytest.approx(expected)

    # A configured price wins over the bundled one, and a prefix entry prices a model the
    # bundled table does not know; the change reaches the running workers without a restart.
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(
        yaml.safe_dump(
            {
                "pricing": [
                    {"model": "gpt-4.1", "input": 10, "output": 20},
                    {"model": "house-model-*", "input": 1, "cachedInput": 0.1, "output": 2},
                ]
            }
        )
    )
    manage(gateway.env, "vmx_apply", str(pricing))
    try:
        overridden = ((PROMPT * 10) + OUTPUT * 20) / 1e6  # cachedInput defaults to input
        deadline = time.monotonic() + 5
        while (cost := _cost_of(client, gateway, "default")) != pytest.approx(overridden):
            assert time.monotonic() < deadline, f"cost {cost}, expected {overridden}"
            time.sleep(0.3)
        house = ((PROMPT - CACHED) * 1 + CACHED * 0.1 + OUTPUT * 2) / 1e6
        assert _cost_of(client, gateway, "up-a/house-model-7b") == pytest.approx(house)
        # No price anywhere: the cost is unknown, not zero.
        assert _cost_of(client, gateway, "up-a/someone-elses-model") is None

        usage = manage(gateway.env, "vmx_usage", "--since", "1h", "--by", "model").stdout
        header, *rows = usage.splitlines()
        assert header.split()[-1] == "cost_usd"
        house_row = next(row for row in rows if row.startswith("house-model-7b"))
        assert float(house_row.split()[-1]) == pytest.approx(house, abs=1e-6)
        unpriced_row = next(row for row in rows if row.startswith("someone-elses-model"))
        assert unpriced_row.split()[-1] == "-"  # unknown, not free
    finally:
        manage(
            gateway.env,
            "shell",
            "-c",
            "from connections.models import PricingEntry; PricingEntry.objects.all().delete()",
        )
