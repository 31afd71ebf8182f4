from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from tests.systems.migration.apps import app


@pytest.fixture
def podium_app() -> Any:
    return app


def seeded(env: PodiumEnv, rows: int, tag: str = "") -> str:
    """A fresh service id with ``rows`` legacy records (``tag`` is test data such as ``-badbatch``)."""
    service_id = new_key("svc") + tag
    assert env.call("/MigrationData/Seed", {"serviceId": service_id, "rows": rows}) == rows
    return service_id
