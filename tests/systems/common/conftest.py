from __future__ import annotations

from typing import Any

import pytest

from tests.systems.apps import travel


@pytest.fixture
def podium_app() -> Any:
    return travel  # carries the shared services
