"""Model prices and the cost of a request (gateway/pricing.py: pure, no Django)."""

from __future__ import annotations

import datetime

from gateway.core.pricing import Price, PriceList, bundled_document, bundled_price, bundled_table


def test_the_bundled_table_is_dated_and_complete():
    document = bundled_document()
    assert datetime.date.fromisoformat(document["date"])
    assert {"gpt-4.1", "gpt-4o-mini", "gpt-5", "o3"} <= set(bundled_table())
    assert all(price.input >= 0 and price.output >= 0 for price in bundled_table().values())


def test_configured_prices_win_exact_then_longest_prefix_then_bundled():
    prices = PriceList.from_entries(
        {"gpt-4.1": Price(10, 20), "ft-*": Price(1, 1), "ft-large-*": Price(5, 5), "gpt-*": Price(7, 7)}
    )
    assert prices.price("gpt-4.1") == Price(10, 20)  # exact over the bundled table and gpt-*
    assert prices.price("ft-large-v2") == Price(5, 5)  # the longest prefix
    assert prices.price("ft-small") == Price(1, 1)
    assert prices.price("gpt-4o-mini") == Price(7, 7)  # a configured prefix over the bundled table
    assert prices.price("gpt-4.1-2025-04-14") == Price(10, 20)  # a dated snapshot takes its model's entry
    assert PriceList(exact={}).price("gpt-4o-mini-2024-07-18") == bundled_price("gpt-4o-mini")
    assert PriceList(exact={}).price("someone-elses-model") is None


def test_cost_counts_cached_input_at_its_rate_and_reasoning_as_output():
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    # 40 input of which 8 cached, 12 output (reasoning tokens are part of output).
    assert price.cost_usd(input_tokens=40, cached_tokens=8, output_tokens=12) == (32 * 2 + 8 * 0.5 + 12 * 8) / 1e6
    # cachedInput defaults to input.
    assert Price(input=2.0, output=8.0).cost_usd(input_tokens=40, cached_tokens=8, output_tokens=0) == 80 / 1e6
    assert price.cost_usd(input_tokens=0, cached_tokens=0, output_tokens=0) == 0
    # A malformed usage (more cached than input) never gives a negative cost.
    assert price.cost_usd(input_tokens=5, cached_tokens=50, output_tokens=0) == 5 * 0.5 / 1e6
