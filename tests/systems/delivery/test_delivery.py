"""Food delivery (seed 000 ex 3): awakeables, driver reassignment, tracking, cancellation at any stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.providers import PaymentGateway
from tests.systems.delivery.conftest import delivery, zone_with

pytestmark = pytest.mark.engine


def place(env: PodiumEnv, body: dict[str, Any], order_id: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(
        f"/DeliveryOrchestrator/{order_id or new_key('order')}/PlaceOrder", body
    )
    return answer


def status(env: PodiumEnv, order_id: str) -> dict[str, Any] | None:
    response = env.post(f"/DeliveryOrchestrator/{order_id}/GetStatus")
    return response.json() if response.status_code == 200 else None


def net_cents(order_id: str) -> tuple[int, int]:
    """(charges, cents kept) for an order's payment."""
    gateway = PaymentGateway()
    charges = [e for e in gateway.effects(kind="charge") if e["key"] == f"{order_id}-payment"]
    return len(charges), sum(gateway.balance_cents(c["subject"]) for c in charges)


def pool(env: PodiumEnv, zone: str) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in env.call(f"/DriverService/{zone}/Get")}


def test_an_order_is_delivered_with_tracking(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    result = place(podium_env, delivery(zone), order_id)
    assert result["status"] == "delivered"
    assert result["driverId"] == f"ada-{zone}"
    assert net_cents(order_id) == (1, 2450)
    final = status(podium_env, order_id)
    assert final is not None
    assert final["phase"] == "delivered"
    assert [h["phase"] for h in final["history"]] == [
        "submitted",
        "accepted",
        "paid",
        "driver-assigned",
        "food-ready",
        "picked-up",
        "delivered",
    ]
    assert all(h["at"].endswith("Z") for h in final["history"])
    location = assert_eventually(lambda: (s := status(podium_env, order_id)) and s["location"])
    assert (location["lat"], location["lon"], location["driverId"]) == (40.748, -73.986, f"ada-{zone}")
    assert pool(podium_env, zone)[f"ada-{zone}"]["status"] == "available"


def test_a_declining_driver_and_a_silent_one_are_passed_over(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "decliner-a", "sleepy-b", "zed")
    result = place(podium_env, delivery(zone, driver_answer_ms=500))
    assert result["status"] == "delivered"
    assert result["driverId"] == f"zed-{zone}"
    drivers = pool(podium_env, zone)
    assert {d["status"] for d in drivers.values()} == {"available"}


def test_no_driver_accepting_refunds_and_tells_the_restaurant(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "decliner-a")
    order_id = new_key("order")
    body = delivery(zone)
    result = place(podium_env, body, order_id)
    assert result["status"] == "failed"
    assert "no driver accepted" in result["reason"]
    assert net_cents(order_id) == (1, 0)
    kitchen = podium_env.call(f"/RestaurantService/{body['restaurantId']}/Get", {"orderId": order_id})
    assert kitchen["status"] == "cancelled"


@pytest.mark.parametrize(
    ("restaurant", "items", "reason"),
    [
        ("closed-diner", None, "is closed"),
        ("bistro", [{"name": "sold-out", "quantity": 1}], "cannot make: sold-out"),
    ],
)
def test_a_rejecting_restaurant_charges_nothing(
    podium_env: PodiumEnv, restaurant: str, items: list[dict[str, Any]] | None, reason: str
) -> None:
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    overrides: dict[str, Any] = {"restaurant_id": new_key(restaurant)}
    if items:
        overrides["items"] = items
    result = place(podium_env, delivery(zone, **overrides), order_id)
    assert result["status"] == "rejected"
    assert reason in result["reason"]
    assert net_cents(order_id) == (0, 0)


def test_food_never_ready_times_out_and_compensates(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    result = place(
        podium_env, delivery(zone, restaurant_id=new_key("manual-kitchen"), ready_timeout_ms=400), order_id
    )
    assert result["status"] == "failed"
    assert "timed out waiting for the restaurant" in result["reason"]
    assert net_cents(order_id) == (1, 0)
    assert pool(podium_env, zone)[f"ada-{zone}"]["status"] == "available"


@pytest.mark.parametrize("stage", ["driver-offer", "food", "pickup", "delivery"])
def test_the_customer_can_cancel_at_any_stage(podium_env: PodiumEnv, stage: str) -> None:
    if stage == "driver-offer":
        zone = zone_with(podium_env, "manual-driver")
        body = delivery(zone, driver_answer_ms=60_000)
        wait_for = "paid"
    else:
        zone = zone_with(podium_env, "manual-driver")
        body = delivery(zone, restaurant_id=new_key("manual-kitchen"))
        wait_for = "driver-assigned"
    order_id = new_key("order")
    driver_id = f"manual-driver-{zone}"
    podium_env.send(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", body)
    assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == "paid")
    if stage != "driver-offer":
        assert_eventually(lambda: pool(podium_env, zone)[driver_id]["status"] == "offered")
        podium_env.call(
            f"/DriverService/{zone}/Answer", {"driverId": driver_id, "orderId": order_id, "accept": True}
        )
        assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == wait_for)
    if stage in ("pickup", "delivery"):
        podium_env.call(f"/RestaurantService/{body['restaurantId']}/Ready", {"orderId": order_id})
        assert_eventually(lambda: pool(podium_env, zone)[driver_id]["pickupAwakeable"] is not None)
    if stage == "delivery":
        podium_env.call(f"/DriverService/{zone}/PickedUp", {"driverId": driver_id, "orderId": order_id})
        assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == "picked-up")

    assert podium_env.call(f"/DeliveryOrchestrator/{order_id}/Cancel")["cancelled"] is True
    final = assert_eventually(
        lambda: (s := status(podium_env, order_id)) and s["isComplete"] and s, timeout=30
    )
    assert final["phase"] == "cancelled"
    assert net_cents(order_id) == (1, 0)  # refunded
    assert pool(podium_env, zone)[driver_id]["status"] == "available"
    kitchen = podium_env.call(f"/RestaurantService/{body['restaurantId']}/Get", {"orderId": order_id})
    assert kitchen["status"] == "cancelled"
    assert podium_env.call(f"/DeliveryOrchestrator/{order_id}/Cancel")["cancelled"] is False


def test_the_same_order_twice_is_delivered_once(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    body = delivery(zone)
    assert place(podium_env, body, order_id) == place(podium_env, body, order_id)
    assert net_cents(order_id) == (1, 2450)
    assert pool(podium_env, zone)[f"ada-{zone}"]["deliveries"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"items": []}, "items: List should have at least 1 item"),
        ({"total": 0}, "total: Input should be greater than 0"),
        ({"zone": ""}, "zone: String should have at least 1 character"),
    ],
)
def test_bad_orders_are_400(podium_env: PodiumEnv, change: dict[str, Any], message: str) -> None:
    body = {**delivery("z"), **change}
    response = podium_env.post(f"/DeliveryOrchestrator/{new_key('order')}/PlaceOrder", body)
    assert response.status_code == 400
    assert message in response.json()["message"]


# -- waits that survive crashes -------------------------------------------------------------------------


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def crash_env(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.systems.delivery.apps:app", log_file=tmp_path / "delivery.log") as pair:
        yield pair


def test_waiting_on_the_restaurant_survives_kill_9_and_an_engine_restart(
    crash_env: tuple[PodiumEnv, DeploymentProcess], engine: Engine
) -> None:
    env, process = crash_env
    zone = zone_with(env, "ada")
    order_id = new_key("order")
    body = delivery(zone, restaurant_id=new_key("manual-kitchen"))
    env.send(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", body)
    assert_eventually(lambda: (s := status(env, order_id)) and s["phase"] == "driver-assigned")
    process.kill()
    process.start()
    engine.kill()
    engine.start()
    env.call(f"/RestaurantService/{body['restaurantId']}/Ready", {"orderId": order_id})
    final = assert_eventually(lambda: (s := status(env, order_id)) and s["isComplete"] and s, timeout=60)
    assert final["phase"] == "delivered"
    assert net_cents(order_id) == (1, 2450)
