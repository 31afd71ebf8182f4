"""The shop system under test: its services plus the shared payments and notifications, and helpers."""

from __future__ import annotations

from typing import Any

import pytest

import podium
from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, assert_eventually, new_key, stuck_invocations
from services.common.app import SERVICES as COMMON_SERVICES
from services.shop.app import SERVICES as SHOP_SERVICES

shop = podium.app(services=[*SHOP_SERVICES, *COMMON_SERVICES])
"""Also served in a process of its own by the crash test (``tests.systems.shop.conftest:shop``)."""


@pytest.fixture
def podium_app() -> Any:
    return shop


def order_body(**overrides: Any) -> dict[str, Any]:
    """A ``Place`` body with a fresh customer (so counters belong to this test); total 49.97."""
    customer = overrides.pop("customer_id", new_key("cust"))
    body: dict[str, Any] = {
        "customerId": customer,
        "email": overrides.pop("email", f"{customer}@example.com"),
        "items": overrides.pop(
            "items",
            [
                {"sku": "WIDGET-1", "quantity": 2, "unitPrice": 14.99},
                {"sku": "GADGET-2", "quantity": 1, "unitPrice": 19.99},
            ],
        ),
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        "paymentMethod": overrides.pop("method", "card-visa"),
    }
    body["shippingAddress"].update(overrides.pop("address", {}))
    assert not overrides, f"unknown overrides {overrides}"
    return body


def place(
    env: PodiumEnv, order_id: str, body: dict[str, Any], *, subject: str | None = None
) -> dict[str, Any]:
    """Place an order and return the answer (failing the test on an error status).

    ``subject`` simulates the gateway: the verified subject of the client's token.
    """
    headers = {SUBJECT_HEADER: subject} if subject else {}
    response = env.post(f"/ShopOrder/{order_id}/Place", body, headers=headers)
    assert response.is_success, f"Place answered {response.status_code}: {response.text}"
    result: dict[str, Any] = response.json()
    return result


def events(env: PodiumEnv, order_id: str) -> list[dict[str, Any]]:
    """The order's event stream, from the event store."""
    found: list[dict[str, Any]] = env.call(f"/ShopOrder/{order_id}/Events")
    return found


def recorded(env: PodiumEnv, order_id: str, count: int) -> list[dict[str, Any]]:
    """The order's stream once it holds ``count`` events (a carrier's webhook tells the order one-way)."""
    return assert_eventually(
        lambda: s if len(s := events(env, order_id)) >= count else [], message=f"{count} events of {order_id}"
    )


def stock(env: PodiumEnv, sku: str) -> dict[str, Any]:
    """Stock level of one SKU (``ShopInventory/Levels``, the inventory's projection of its events)."""
    levels: list[dict[str, Any]] = env.call("/ShopInventory/Levels", {"skus": [sku]})
    return levels[0]


def stuck(env: PodiumEnv, key: str) -> list[dict[str, Any]]:
    """Invocations on ``key`` that the engine is retrying or has paused."""
    return [i for i in stuck_invocations(env.admin_url) if key in i["target"]]
