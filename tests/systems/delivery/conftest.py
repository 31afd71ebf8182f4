from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from tests.systems.delivery.apps import app


@pytest.fixture
def podium_app() -> Any:
    return app


def zone_with(env: PodiumEnv, *drivers: str) -> str:
    """A fresh zone whose pool holds ``drivers`` (ids are made unique; their prefixes are test data)."""
    zone = new_key("zone")
    env.call(f"/DriverService/{zone}/AddDrivers", {"drivers": [f"{d}-{zone}" for d in drivers]})
    return zone


def delivery(zone: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": overrides.pop("customer_id", new_key("cust")),
        "restaurantId": overrides.pop("restaurant_id", new_key("pizzeria")),
        "zone": zone,
        "items": overrides.pop("items", [{"name": "margherita", "quantity": 2}]),
        "total": 24.5,
        "address": "5th Avenue 1",
        "driverAnswerMs": overrides.pop("driver_answer_ms", 2_000),
        "readyTimeoutMs": overrides.pop("ready_timeout_ms", 30_000),
        "deliveryTimeoutMs": overrides.pop("delivery_timeout_ms", 30_000),
    }
    assert not overrides, overrides
    return body
