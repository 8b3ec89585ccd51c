from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.stop()
