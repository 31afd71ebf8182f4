"""Seed 000's FulfillmentOrchestrator against a real engine: every step, every compensation, crashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.providers import MailProvider
from tests.systems.commerce.conftest import holds
from tests.systems.money import money

pytestmark = pytest.mark.engine

STEPS = [
    "reserve-inventory",
    "charge-payment",
    "create-pick-ticket",
    "reserve-shipping-slot",
    "create-shipping-label",
]


def fulfilment_request(**overrides: Any) -> dict[str, Any]:
    """A FulfillOrder body with a fresh customer (so counters belong to this test); 39.97 at list price."""
    customer = overrides.pop("customer_id", new_key("customer"))
    body: dict[str, Any] = {
        "customerId": customer,
        "customerEmail": overrides.pop("email", f"{customer}@example.com"),
        "items": overrides.pop(
            "items", [{"sku": "ITEM-001", "quantity": 2}, {"sku": "ITEM-002", "quantity": 1}]
        ),
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "country": "US", "zip": "12345"},
        "paymentMethod": overrides.pop("method", "card-visa"),
    }
    body["shippingAddress"].update(overrides.pop("address", {}))
    assert not overrides, f"unknown overrides {overrides}"
    return body


def fulfil(env: PodiumEnv, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = env.call(f"/FulfillmentOrchestrator/{order_id}/FulfillOrder", body)
    return result


def slot(env: PodiumEnv, shipment_id: str) -> dict[str, Any] | None:
    response = env.post_private(f"/ShippingService/{shipment_id}/Get")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def assert_nothing_held(env: PodiumEnv, holder: str, body: dict[str, Any]) -> None:
    for item in body["items"]:
        assert holds(env, item["sku"], holder) == [], item["sku"]


def test_success_runs_every_step_in_order(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), fulfilment_request()
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "completed", result
    assert result["amount"] == 39.97
    assert result["reservationId"] == f"{order_id}-fulfillment"
    assert result["paymentId"] == f"{order_id}-fulfillment-payment"
    assert result["pickTicket"].startswith("PT-")
    assert result["shipmentId"] == f"{order_id}-fulfillment-shipment"
    assert result["trackingNumber"].startswith("PD")
    assert result["carrier"] == "podium-express"
    assert result["trackingEmail"] == "delivered"
    assert result["reason"] is None
    assert result["compensated"] == []

    assert money(result["paymentId"]) == {"charges": 1, "refunds": 0, "net": 3997, "requests": 1}
    for sku in ("ITEM-001", "ITEM-002"):  # picked: the stock left the shelf
        assert [h["status"] for h in holds(podium_env, sku, result["reservationId"])] == ["committed"]
    assert slot(podium_env, result["shipmentId"]) == {
        "slotId": result["shipmentId"],
        "carrier": "podium-express",
        "status": "reserved",
    }
    mails = MailProvider().outbox(body["customerEmail"])
    assert len(mails) == 1
    assert result["trackingNumber"] in mails[0]["body"]

    status = podium_env.call(f"/FulfillmentOrchestrator/{order_id}/GetStatus")
    assert status["phase"] == "completed"
    assert status["isComplete"] is True
    assert status["progress"] == 1.0
    assert [h["phase"] for h in status["history"]] == [
        "started",
        "inventory-checked",
        "inventory-reserved",
        "charged",
        "picked",
        "shipped",
        "completed",
    ]
    assert status["completedSteps"] == [
        "check-inventory",
        "reserve-inventory",
        "charge-payment",
        "create-pick-ticket",
        "create-shipping-label",
        "send-tracking-email",
    ]
    assert status["saga"]["status"] == "completed"
    assert [(s["name"], s["status"]) for s in status["saga"]["steps"]] == [(n, "completed") for n in STEPS]


def test_out_of_stock_fails_before_anything_is_held(podium_env: PodiumEnv) -> None:
    order_id = new_key("order")
    body = fulfilment_request(
        items=[{"sku": "ITEM-003", "quantity": 1}, {"sku": "SKU-SOLDOUT", "quantity": 1}]
    )
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "failed"
    assert result["reason"] == "out of stock: SKU-SOLDOUT"
    assert result["reservationId"] is None
    assert result["paymentId"] is None
    assert_nothing_held(podium_env, f"{order_id}-fulfillment", body)
    assert money(f"{order_id}-fulfillment-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 0}
    assert slot(podium_env, f"{order_id}-fulfillment-shipment") is None
    status = podium_env.call(f"/FulfillmentOrchestrator/{order_id}/GetStatus")
    assert (status["phase"], status["isComplete"], status["error"]) == ("failed", True, result["reason"])
    assert status["saga"] is None  # the saga never started


@pytest.mark.parametrize("trigger", ["declined-customer", "expired-card"])
def test_failed_payment_releases_the_inventory(podium_env: PodiumEnv, trigger: str) -> None:
    change = (
        {"customer_id": new_key("declined")} if trigger == "declined-customer" else {"method": "card-expired"}
    )
    order_id, body = new_key("order"), fulfilment_request(**change)
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "failed"
    assert "card declined" in result["reason"]
    assert result["compensated"] == ["charge-payment", "reserve-inventory"]
    assert result["paymentId"] is None
    assert_nothing_held(podium_env, f"{order_id}-fulfillment", body)
    assert money(f"{order_id}-fulfillment-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 1}
    payment = podium_env.call_private(f"/PaymentService/{order_id}-fulfillment-payment/Get")
    assert payment["status"] == "declined"
    assert slot(podium_env, f"{order_id}-fulfillment-shipment") is None  # shipping never started
    assert MailProvider().outbox(body["customerEmail"]) == []
    saga = podium_env.call(f"/FulfillmentOrchestrator/{order_id}/GetStatus")["saga"]
    assert saga["status"] == "compensated"
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("reserve-inventory", "compensated"),
        ("charge-payment", "compensated"),
    ]


def test_damaged_stock_refunds_once_and_releases_the_picked_stock(podium_env: PodiumEnv) -> None:
    order_id = new_key("order")
    body = fulfilment_request(
        items=[{"sku": "ITEM-003", "quantity": 1}, {"sku": "SKU-DAMAGED", "quantity": 1}]
    )
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "failed"
    assert "stock is damaged" in result["reason"]
    assert result["amount"] == 54.98
    assert result["compensated"] == ["charge-payment", "reserve-inventory"]
    assert money(f"{order_id}-fulfillment-payment") == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert (
        podium_env.call_private(f"/PaymentService/{order_id}-fulfillment-payment/Get")["status"] == "refunded"
    )
    assert_nothing_held(podium_env, f"{order_id}-fulfillment", body)
    assert slot(podium_env, f"{order_id}-fulfillment-shipment") is None
    assert MailProvider().outbox(body["customerEmail"]) == []


@pytest.mark.parametrize(
    ("address", "reason", "carrier"),
    [
        ({"city": "No Slots"}, "no delivery slot left for No Slots", ""),
        ({"city": "No Labels"}, "no shipping label can be printed for No Labels", "podium-express"),
        ({"country": "AQ"}, "no shipping to AQ", ""),
    ],
    ids=["no-slot", "no-label", "no-shipping-zone"],
)
def test_failed_shipping_refunds_releases_and_cancels_the_slot(
    podium_env: PodiumEnv, address: dict[str, str], reason: str, carrier: str
) -> None:
    order_id, body = new_key("order"), fulfilment_request(address=address)
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "failed"
    assert result["reason"] == reason
    assert result["compensated"] == ["reserve-shipping-slot", "charge-payment", "reserve-inventory"]
    # Charged once, refunded exactly once; the stock (already picked) is back; the slot is cancelled.
    assert money(f"{order_id}-fulfillment-payment") == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert_nothing_held(podium_env, f"{order_id}-fulfillment", body)
    assert slot(podium_env, f"{order_id}-fulfillment-shipment") == {
        "slotId": f"{order_id}-fulfillment-shipment",
        "carrier": carrier,  # a slot that was never booked leaves a tombstone
        "status": "cancelled",
    }
    assert MailProvider().outbox(body["customerEmail"]) == []
    status = podium_env.call(f"/FulfillmentOrchestrator/{order_id}/GetStatus")
    assert status["phase"] == "failed"
    assert reason in status["error"]
    steps = {s["name"]: s["status"] for s in status["saga"]["steps"]}
    assert steps["create-pick-ticket"] == "completed"
    assert steps["reserve-inventory"] == steps["charge-payment"] == "compensated"


def test_a_bounced_tracking_email_never_fails_the_order(podium_env: PodiumEnv) -> None:
    customer = new_key("customer")
    order_id = new_key("order")
    body = fulfilment_request(customer_id=customer, email=f"{customer}@bounce.example.com")
    result = fulfil(podium_env, order_id, body)

    assert result["status"] == "completed"
    assert result["trackingEmail"] == "bounced"
    assert money(result["paymentId"]) == {"charges": 1, "refunds": 0, "net": 3997, "requests": 1}
    assert (slot(podium_env, result["shipmentId"]) or {}).get("status") == "reserved"


def test_the_same_order_twice_returns_the_same_result_and_charges_once(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), fulfilment_request()
    first = fulfil(podium_env, order_id, body)
    second = fulfil(podium_env, order_id, body)
    third = fulfil(podium_env, order_id, {**body, "orderId": order_id})  # the id in the body too: same

    assert first == second == third
    assert first["status"] == "completed"
    assert money(first["paymentId"]) == {"charges": 1, "refunds": 0, "net": 3997, "requests": 1}
    assert len(MailProvider().outbox(body["customerEmail"])) == 1

    changed = {**body, "items": [{"sku": "ITEM-004", "quantity": 1}]}
    response = podium_env.post(f"/FulfillmentOrchestrator/{order_id}/FulfillOrder", changed)
    assert response.status_code == 409
    assert "already used for a different request" in response.json()["message"]
    assert money(first["paymentId"])["charges"] == 1


def test_a_failed_order_repeated_is_the_same_failure_refunded_once(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), fulfilment_request(address={"city": "No Slots"})
    first, second = fulfil(podium_env, order_id, body), fulfil(podium_env, order_id, body)
    assert first == second
    assert first["status"] == "failed"
    assert money(f"{order_id}-fulfillment-payment") == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}


def test_status_shows_progress_while_the_order_runs(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), fulfilment_request(customer_id=new_key("slow"))  # 3 s to answer
    podium_env.send(f"/FulfillmentOrchestrator/{order_id}/FulfillOrder", body)

    def status() -> dict[str, Any]:
        response = podium_env.post(f"/FulfillmentOrchestrator/{order_id}/GetStatus")
        found: dict[str, Any] = response.json() if response.status_code == 200 else {"phase": "none"}
        return found

    running = assert_eventually(lambda: (s := status())["phase"] == "inventory-reserved" and s, timeout=20)
    assert running["currentStep"] == "charge-payment"
    assert running["progress"] == 0.3
    assert running["isComplete"] is False
    assert [s["name"] for s in running["saga"]["steps"]] == ["reserve-inventory", "charge-payment"]
    assert assert_eventually(lambda: status()["phase"] == "completed", timeout=30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customerEmail": None}, "customerEmail: field required"),
        ({"customerEmail": "nope"}, "customerEmail: String should match pattern"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({"items": [{"sku": "ITEM-001", "quantity": 0}]}, "items.0.quantity: Input should be greater than 0"),
        ({"items": [{"sku": "ITEM-001", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]}, "items.1.sku"),
        (
            {"shippingAddress": {"street": "1 Main St", "city": "X", "country": "USA"}},
            "shippingAddress.country",
        ),
        ({"orderId": "someone-else"}, "orderId: 'someone-else' does not match the order id in the URL"),
        (
            # 5,001 lines of 1,000 × 199.99: more than the payments' Amount rule lets one charge take.
            {"items": [{"sku": "ITEM-020", "quantity": 1_000}] * 5_001},
            "items: the order comes to 1000149990.00, which no payment can take: "
            "Input should be less than or equal to 1000000000",
        ),
    ],
    ids=[
        "no-email",
        "bad-email",
        "no-items",
        "zero-quantity",
        "unknown-sku",
        "bad-country",
        "other-id",
        "over-the-limit",
    ],
)
def test_bad_requests_are_400_naming_the_field(
    podium_env: PodiumEnv, change: dict[str, Any], message: str
) -> None:
    order_id = new_key("order")
    body = {k: v for k, v in {**fulfilment_request(), **change}.items() if v is not None}
    response = podium_env.post(f"/FulfillmentOrchestrator/{order_id}/FulfillOrder", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert podium_env.post(f"/FulfillmentOrchestrator/{order_id}/GetStatus").status_code == 404
    assert money(f"{order_id}-fulfillment-payment")["requests"] == 0


# -- kill -9 of the service process mid-order ----------------------------------------------------------


@pytest.fixture
def crash_engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def crash_deployment_pair(
    crash_engine: Engine, tmp_path: Path
) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(crash_engine, "tests.systems.apps:commerce", log_file=tmp_path / "commerce.log") as pair:
        yield pair


@pytest.fixture
def crash_deployment(crash_deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return crash_deployment_pair[1]


@pytest.fixture
def crash_env(crash_deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return crash_deployment_pair[0]


@pytest.mark.parametrize(
    "items",
    [
        [{"sku": "ITEM-001", "quantity": 2}, {"sku": "ITEM-002", "quantity": 1}],
        [{"sku": "ITEM-003", "quantity": 1}, {"sku": "SKU-DAMAGED", "quantity": 1}],
    ],
    ids=["completes", "compensates"],
)
def test_kill_9_mid_charge_completes_or_compensates_exactly_once(
    crash_env: PodiumEnv, crash_deployment: DeploymentProcess, items: list[dict[str, Any]]
) -> None:
    order_id = new_key("order")
    body = fulfilment_request(customer_id=new_key("slow"), items=items)  # the gateway answers 3 s late
    payment_id = f"{order_id}-fulfillment-payment"
    crash_env.send(f"/FulfillmentOrchestrator/{order_id}/FulfillOrder", body, idempotency_key=order_id)
    # The money has moved and the answer is on its way: the order is inside the slow window. Crash.
    assert_eventually(lambda: money(payment_id)["charges"], timeout=20, message="the charge")
    crash_deployment.kill()
    crash_deployment.start()

    def finished() -> dict[str, Any]:
        response = crash_env.post(f"/FulfillmentOrchestrator/{order_id}/GetStatus")
        status: dict[str, Any] = response.json()
        return status if response.status_code == 200 and status["isComplete"] else {}

    status = assert_eventually(finished, timeout=90, message="the order to finish")
    # The cut-off gateway call ran again after the restart and was answered from its record.
    assert money(payment_id)["requests"] == 2
    result = fulfil(crash_env, order_id, body)  # the stored result, not a second run
    if items[-1]["sku"] == "SKU-DAMAGED":
        assert status["phase"] == "failed", status
        assert result["status"] == "failed"
        assert money(payment_id) == {"charges": 1, "refunds": 1, "net": 0, "requests": 2}
        assert_nothing_held(crash_env, f"{order_id}-fulfillment", body)
        assert status["saga"]["status"] == "compensated"
        assert MailProvider().outbox(body["customerEmail"]) == []
    else:
        assert status["phase"] == "completed", status
        assert result["status"] == "completed"
        assert money(payment_id) == {"charges": 1, "refunds": 0, "net": 3997, "requests": 2}
        for item in items:
            assert [h["status"] for h in holds(crash_env, item["sku"], f"{order_id}-fulfillment")] == [
                "committed"
            ]
        assert (slot(crash_env, f"{order_id}-fulfillment-shipment") or {}).get("status") == "reserved"
        assert len(MailProvider().outbox(body["customerEmail"])) == 1
        assert [s["name"] for s in status["saga"]["steps"]] == STEPS
