from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: a conftest named on the command line is imported before the
    # harness puts its engine's key in the environment, and the apps read it when they are built.
    from tests.systems.apps import commerce

    return commerce


def order(**overrides: Any) -> dict[str, Any]:
    """Seed 002's Order with a fresh id and user, so counters belong to this test."""
    user = overrides.pop("user_id", new_key("user"))
    body: dict[str, Any] = {
        "id": overrides.pop("id", new_key("order")),
        "userId": user,
        "userEmail": overrides.pop("email", f"{user}@example.com"),
        "userPhone": overrides.pop("phone", "+15550100"),
        "items": overrides.pop(
            "items", [{"sku": "ITEM-001", "quantity": 2}, {"sku": "ITEM-002", "quantity": 1}]
        ),
        "total": overrides.pop("total", 39.97),
        "paymentMethod": overrides.pop("method", "card-visa"),
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "country": "US", "zip": "12345"},
    }
    body["shippingAddress"].update(overrides.pop("address", {}))
    assert not overrides, f"unknown overrides {overrides}"
    return body


def holds(env: PodiumEnv, sku: str, holder: str) -> list[dict[str, Any]]:
    """The holds ``holder`` has on ``sku`` (``StockLevel`` is private: read it as other handlers do)."""
    return [h for h in env.call_private(f"/StockLevel/{sku}/Get")["holds"] if h["holder"] == holder]
