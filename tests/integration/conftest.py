from __future__ import annotations

from typing import Any

import pytest

from tests.integration.lab import app


@pytest.fixture
def podium_app() -> Any:
    return app
