from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: a conftest named on the command line is imported before the
    # harness puts its engine's key in the environment, and the apps read it when they are built.
    from tests.systems.apps import patterns

    return patterns
