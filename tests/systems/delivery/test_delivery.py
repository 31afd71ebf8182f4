"""Food delivery (seed 000 ex 3): awakeables, driver reassignment, tracking, cancellation at any stage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env, stuck_invocations
from services.common.providers import PaymentGateway
from tests.systems.delivery.conftest import configure, delivery, zone_with

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
    """The zone's drivers (a private handler: it shows the awakeable ids)."""
    return {d["id"]: d for d in env.call_private(f"/DriverService/{zone}/Get")}


def kitchen(env: PodiumEnv, restaurant_id: str, order_id: str) -> dict[str, Any]:
    """The restaurant's view of an order (a private handler: it shows the awakeable id)."""
    answer: dict[str, Any] = env.call_private(
        f"/RestaurantService/{restaurant_id}/Get", {"orderId": order_id}
    )
    return answer


def stuck(env: PodiumEnv, *keys: str) -> list[dict[str, Any]]:
    """Invocations the engine retries or has paused whose target names one of ``keys``."""
    return [row for row in stuck_invocations(env.admin_url) if any(key in row["target"] for key in keys)]


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


def test_a_declining_driver_and_a_silent_one_are_passed_over(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, driver_answer=timedelta(milliseconds=500))
    zone = zone_with(podium_env, "decliner-a", "sleepy-b", "zed")
    result = place(podium_env, delivery(zone))
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
    assert kitchen(podium_env, body["restaurantId"], order_id)["status"] == "cancelled"


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


def test_food_never_ready_times_out_and_compensates(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, ready_timeout=timedelta(milliseconds=400))
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    result = place(podium_env, delivery(zone, restaurant_id=new_key("manual-kitchen")), order_id)
    assert result["status"] == "failed"
    assert "timed out waiting for the restaurant" in result["reason"]
    assert net_cents(order_id) == (1, 0)
    assert pool(podium_env, zone)[f"ada-{zone}"]["status"] == "available"


@pytest.mark.parametrize("stage", ["driver-offer", "food", "pickup", "delivery"])
def test_the_customer_can_cancel_at_any_stage(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    if stage == "driver-offer":
        configure(monkeypatch, driver_answer=timedelta(seconds=60))
        zone = zone_with(podium_env, "manual-driver")
        body = delivery(zone)
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
    assert kitchen(podium_env, body["restaurantId"], order_id)["status"] == "cancelled"
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
        ({"total": 5e-324}, "total: at most two decimals"),  # found by fuzzing: refused by the charge
        ({"total": 0.001}, "total: at most two decimals"),
        ({"total": 10_000.01}, "total: Input should be less than or equal to 10000"),
        ({"total": "lots"}, "total: Input should be a valid decimal"),
        ({"zone": ""}, "zone: String should match pattern"),
        ({"restaurantId": "../kitchen"}, "restaurantId: String should match pattern"),
    ],
)
def test_bad_orders_are_400(podium_env: PodiumEnv, change: dict[str, Any], message: str) -> None:
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    body = {**delivery(zone), **change}
    response = podium_env.post(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", body)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert status(podium_env, order_id) is None  # nothing started
    assert net_cents(order_id) == (0, 0)
    assert pool(podium_env, zone)[f"ada-{zone}"]["status"] == "available"


def test_an_order_id_that_cannot_name_a_payment_is_400(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "ada")
    response = podium_env.post("/DeliveryOrchestrator/order%20one/PlaceOrder", delivery(zone))
    assert response.status_code == 400
    assert "orderId (the key): 'order one' must match" in response.json()["message"]
    assert pool(podium_env, zone)[f"ada-{zone}"]["status"] == "available"


def test_the_customer_cannot_set_the_deadlines(podium_env: PodiumEnv) -> None:
    """The old request fields are ignored: a 1 ms kitchen deadline in the body would fail the order."""
    zone = zone_with(podium_env, "ada")
    order_id = new_key("order")
    body = {
        **delivery(zone, restaurant_id=new_key("manual-kitchen")),
        "driverAnswerMs": 1,
        "readyTimeoutMs": 1,
        "deliveryTimeoutMs": 1,
    }
    podium_env.send(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", body)
    assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == "driver-assigned")
    podium_env.call(f"/RestaurantService/{body['restaurantId']}/Ready", {"orderId": order_id})
    final = assert_eventually(lambda: (s := status(podium_env, order_id)) and s["isComplete"] and s)
    assert final["phase"] == "delivered"


# -- bad input from webhooks and fuzzing: 4xx at the door, never a retry ------------------------------


@pytest.mark.parametrize(
    ("drivers", "message"),
    [
        ([""], "drivers.0: String should match pattern"),  # found by fuzzing: Offer then retried forever
        (["ok-driver", "two words"], "drivers.1: String should match pattern"),
        ([], "drivers: List should have at least 1 item"),
    ],
)
def test_a_driver_id_of_the_wrong_form_never_joins_a_pool(
    podium_env: PodiumEnv, drivers: list[str], message: str
) -> None:
    zone = zone_with(podium_env, "ada")
    response = podium_env.post(f"/DriverService/{zone}/AddDrivers", {"drivers": drivers})
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert list(pool(podium_env, zone)) == [f"ada-{zone}"]
    order_id = new_key("order")
    assert place(podium_env, delivery(zone), order_id)["status"] == "delivered"
    assert stuck(podium_env, zone, order_id) == []


@pytest.mark.parametrize(
    ("path", "body", "status_code", "message"),
    [
        ("/RestaurantService/{restaurant}/Ready", {"orderId": "not an id"}, 400, "orderId: String should"),
        ("/RestaurantService/{restaurant}/Ready", {"orderId": ""}, 400, "orderId: String should"),
        ("/RestaurantService/{restaurant}/Ready", {}, 400, "orderId: field required"),
        ("/RestaurantService/{restaurant}/Ready", {"orderId": "{unknown}"}, 404, "has no order"),
        (
            "/DriverService/{zone}/Answer",
            {"driverId": "", "orderId": "{order}", "accept": True},
            400,
            "driverId: String should",
        ),
        (
            "/DriverService/{zone}/Answer",
            {"driverId": "{unknown}", "orderId": "{order}", "accept": True},
            404,
            "no driver",
        ),
        (
            "/DriverService/{zone}/PickedUp",
            {"driverId": "{driver}", "orderId": "{unknown}"},
            409,
            "no open task",
        ),
        (
            "/DriverService/{zone}/Location",
            {"driverId": "{driver}", "orderId": "{order}", "lat": 91, "lon": 0},
            400,
            "lat: Input should be less than or equal to 90",
        ),
    ],
)
def test_a_webhook_with_a_bad_or_unknown_id_is_refused_at_once(
    podium_env: PodiumEnv, path: str, body: dict[str, Any], status_code: int, message: str
) -> None:
    zone = zone_with(podium_env, "manual-driver")
    restaurant = new_key("manual-kitchen")
    order_id = new_key("order")
    driver = f"manual-driver-{zone}"
    podium_env.send(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", delivery(zone, restaurant_id=restaurant))
    assert_eventually(lambda: pool(podium_env, zone)[driver]["status"] == "offered")

    names = {
        "zone": zone,
        "restaurant": restaurant,
        "order": order_id,
        "driver": driver,
        "unknown": new_key("x"),
    }
    filled = {k: v.format(**names) if isinstance(v, str) else v for k, v in body.items()}
    response = podium_env.post(path.format(**names), filled)
    assert response.status_code == status_code, response.text
    assert message in response.json()["message"]
    assert stuck(podium_env, zone, restaurant, order_id) == []
    assert pool(podium_env, zone)[driver]["status"] == "offered"  # the real offer is still open
    assert kitchen(podium_env, restaurant, order_id)["status"] == "accepted"
    podium_env.call(f"/DeliveryOrchestrator/{order_id}/Cancel")
    assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == "cancelled")


@pytest.mark.parametrize(
    "awakeable",
    [
        "not-an-awakeable",
        "",
        "sign_1" + "Zm9v" * 12,  # the right alphabet, the wrong length: InvalidAwakeableId in the engine
        "sign_1" + "A" * 37 + "B",  # bits past the 28 bytes: the engine refuses it too
    ],
    ids=["free-text", "empty", "too-long", "not-canonical"],
)
def test_a_kitchen_order_whose_ready_id_is_no_awakeable_id_is_refused(
    podium_env: PodiumEnv, awakeable: str
) -> None:
    """Found by fuzzing: the kitchen's own Ready then failed with InvalidAwakeableId, retried forever."""
    restaurant = new_key("pizzeria")  # an automatic kitchen: it calls Ready by itself
    order_id = new_key("order")
    submission = {
        "orderId": order_id,
        "items": [{"name": "margherita", "quantity": 1}],
        "readyAwakeable": awakeable,
    }
    response = podium_env.post_private(f"/RestaurantService/{restaurant}/Submit", submission)
    assert response.status_code == 400
    assert "readyAwakeable: " in response.json()["message"]
    missing = podium_env.post_private(f"/RestaurantService/{restaurant}/Get", {"orderId": order_id})
    assert missing.status_code == 404  # nothing kept, so nothing will ever try to resolve it
    assert stuck(podium_env, restaurant) == []


# -- doors: what only the orchestrator may call -------------------------------------------------------------


def test_the_orchestrators_handlers_are_closed_to_clients_and_change_nothing(podium_env: PodiumEnv) -> None:
    zone = zone_with(podium_env, "manual-driver")
    restaurant = new_key("manual-kitchen")
    order_id = new_key("order")
    driver = f"manual-driver-{zone}"
    podium_env.send(f"/DeliveryOrchestrator/{order_id}/PlaceOrder", delivery(zone, restaurant_id=restaurant))
    assert_eventually(lambda: pool(podium_env, zone)[driver]["status"] == "offered")
    drivers_before, kitchen_before = pool(podium_env, zone), kitchen(podium_env, restaurant, order_id)

    forged = {"driverId": driver, "orderId": order_id}
    for path, body in [
        (f"/DriverService/{zone}/Release", forged),  # would free the driver from the order
        (f"/DriverService/{zone}/Withdraw", forged),
        (
            f"/DriverService/{zone}/Offer",
            {"orderId": new_key("order"), "answerAwakeable": "sign_1" + "A" * 38},
        ),
        (f"/RestaurantService/{restaurant}/Cancel", {"orderId": order_id}),  # would stop the kitchen
        (f"/DeliveryTracker/{order_id}/Update", {"lat": 0, "lon": 0}),
    ]:
        podium_env.assert_private(path, body)

    assert pool(podium_env, zone) == drivers_before
    assert kitchen(podium_env, restaurant, order_id) == kitchen_before
    current = status(podium_env, order_id)
    assert current is not None
    assert current["location"] is None  # no position was forged
    assert net_cents(order_id) == (1, 2450)  # charged once, nothing refunded
    podium_env.call(f"/DeliveryOrchestrator/{order_id}/Cancel")
    assert_eventually(lambda: (s := status(podium_env, order_id)) and s["phase"] == "cancelled")
    assert net_cents(order_id) == (1, 0)


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
