"""What a request cost: model prices and the cost of a usage (DESIGN.md 2.10, "Cost").

Pure: no Django. Prices are USD per 1M tokens. The price of an upstream model id is, in order:
an exact configured entry, the longest configured `prefix*` entry, the bundled table of OpenAI's
published prices (`gateway/data/openai-prices.json`, dated), else unknown (cost None). A dated
snapshot id such as `gpt-4.1-2025-04-14` takes the price of `gpt-4.1` where an exact one is looked up.

cost = ((input - cached) * input + cached * cachedInput + output * output) / 1e6, where output
tokens include reasoning tokens (OpenAI counts them there) and `cachedInput` defaults to `input`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

BUNDLED_PRICES = Path(__file__).resolve().parent / "data" / "openai-prices.json"
_DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None
    """None: cached input tokens cost as much as input tokens."""

    def cost_usd(self, *, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        cached = min(max(cached_tokens, 0), max(input_tokens, 0))
        cached_rate = self.input if self.cached_input is None else self.cached_input
        dollars = (input_tokens - cached) * self.input + cached * cached_rate + output_tokens * self.output
        return round(dollars / 1_000_000, 10)


@dataclass(frozen=True, slots=True)
class PriceList:
    """Configured prices: exact model ids and `prefix*` patterns, over the bundled table."""

    exact: Mapping[str, Price]
    prefixes: tuple[tuple[str, Price], ...] = ()
    """Longest prefix first."""

    @classmethod
    def from_entries(cls, entries: Mapping[str, Price]) -> PriceList:
        exact = {model: price for model, price in entries.items() if not model.endswith("*")}
        prefixes = sorted(
            ((model[:-1], price) for model, price in entries.items() if model.endswith("*")),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        return cls(exact=exact, prefixes=tuple(prefixes))

    def price(self, model: str) -> Price | None:
        found = self.exact.get(model) or self.exact.get(_DATED_SNAPSHOT.sub("", model))
        if found is not None:
            return found
        for prefix, price in self.prefixes:
            if model.startswith(prefix):
                return price
        return bundled_price(model)


EMPTY_PRICE_LIST = PriceList(exact={})


def bundled_price(model: str) -> Price | None:
    table = bundled_table()
    return table.get(model) or table.get(_DATED_SNAPSHOT.sub("", model))


@cache
def bundled_table() -> Mapping[str, Price]:
    return {model: price_from_document(values) for model, values in bundled_document()["models"].items()}


@cache
def bundled_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(BUNDLED_PRICES.read_text(encoding="utf-8"))
    return document


def price_from_document(values: Mapping[str, Any]) -> Price:
    """A price from the file format: `{input, output, cachedInput?}`."""
    cached = values.get("cachedInput")
    return Price(
        input=float(values["input"]),
        output=float(values["output"]),
        cached_input=None if cached is None else float(cached),
    )
