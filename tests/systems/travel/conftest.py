from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: a conftest named on the command line is imported before the
    # harness puts its engine's key in the environment, and the apps read it when they are built.
    from tests.systems.apps import travel

    return travel


def trip_request(**overrides: Any) -> dict[str, Any]:
    """The seed's BookTrip body, with a fresh customer and email so counters belong to this test."""
    customer = overrides.pop("customer_id", new_key("customer"))
    body: dict[str, Any] = {
        "customerId": customer,
        "customerEmail": overrides.pop("email", f"{customer}@example.com"),
        "flight": {"from": "SFO", "to": "JFK", "date": "2024-12-15", "passengers": 2},
        "hotel": {"city": "New York", "checkIn": "2024-12-15", "checkOut": "2024-12-18", "guests": 2},
    }
    for section in ("flight", "hotel"):
        body[section].update(overrides.pop(section, {}))
    assert not overrides, f"unknown overrides {overrides}"
    return body


def holds(env: PodiumEnv, inventory: str, key: str, holder: str) -> list[dict[str, Any]]:
    """The holds ``holder`` has on inventory ``inventory/key`` (a private read: other handlers' view)."""
    availability = env.call_private(f"/{inventory}/{key}/Get")
    return [h for h in availability["holds"] if h["holder"] == holder]
