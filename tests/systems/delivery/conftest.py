from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from services.delivery import settings
from services.delivery.settings import DeliverySettings

TEST_DEADLINES = {
    "driver_answer": timedelta(seconds=2),
    "ready_timeout": timedelta(seconds=30),
    "delivery_timeout": timedelta(seconds=30),
}
"""Short enough that a driver who never answers costs a test two seconds, long enough for a slow run."""


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the harness has made the engine's
    # request-identity key, and an app built without it refuses every request.
    from tests.systems.delivery.apps import app

    return app


@pytest.fixture(autouse=True)
def test_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process deployment runs with :data:`TEST_DEADLINES` (a test may :func:`configure` others)."""
    configure(monkeypatch)


def configure(monkeypatch: pytest.MonkeyPatch, **deadlines: timedelta) -> None:
    """Run the in-process deployment with these deadlines (the rest from :data:`TEST_DEADLINES`)."""
    monkeypatch.setattr(settings, "SETTINGS", DeliverySettings(**{**TEST_DEADLINES, **deadlines}))


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
    }
    assert not overrides, overrides
    return body
