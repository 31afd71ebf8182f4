"""Seed 003's OrderSaga against a real engine: the seed's request, each compensation, idempotency."""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from services.common.providers import MailProvider
from tests.systems.commerce.conftest import holds
from tests.systems.commerce.test_fulfillment import assert_nothing_held, money, slot

pytestmark = pytest.mark.engine


def saga_request(**overrides: Any) -> dict[str, Any]:
    """The seed's OrderRequest, with a fresh order id and customer so counters belong to this test."""
    body: dict[str, Any] = {
        "orderId": overrides.pop("order_id", new_key("order")),
        "customerId": overrides.pop("customer_id", new_key("cust")),
        "items": overrides.pop("items", [{"sku": "ITEM-001", "quantity": 2}]),
        "amount": overrides.pop("amount", 99.99),
    }
    assert not overrides, f"unknown overrides {overrides}"
    return body


def run(env: PodiumEnv, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = env.call(f"/OrderSaga/{body['orderId']}/Run", body)
    return result


def steps(env: PodiumEnv, order_id: str) -> list[tuple[str, str]]:
    saga = env.call(f"/OrderSaga/{order_id}/GetStatus")["saga"]
    return [(s["name"], s["status"]) for s in saga["steps"]]


def test_the_seeds_order_completes(podium_env: PodiumEnv) -> None:
    body = saga_request()
    order_id, customer = body["orderId"], body["customerId"]
    result = run(podium_env, body)

    assert result == {
        "status": "completed",
        "paymentId": f"{order_id}-saga-payment",
        "reservationId": f"{order_id}-saga-reservation",
        "shipmentId": f"{order_id}-saga-shipment",
        "trackingNumber": result["trackingNumber"],
        "confirmationEmail": True,
    }
    assert result["trackingNumber"].startswith("PD")
    assert money(result["paymentId"]) == {"charges": 1, "refunds": 0, "net": 9999, "requests": 1}
    assert [h["status"] for h in holds(podium_env, "ITEM-001", result["reservationId"])] == ["committed"]
    assert holds(podium_env, "ITEM-001", result["reservationId"])[0]["units"] == 2
    shipment = slot(podium_env, result["shipmentId"])
    assert shipment is not None
    assert shipment["status"] == "reserved"
    mails = MailProvider().outbox(f"{customer}@example.com")  # the email on file
    assert len(mails) == 1
    assert mails[0]["subject"] == f"Order {order_id} confirmed"
    assert steps(podium_env, order_id) == [
        ("charge-payment", "completed"),
        ("reserve-inventory", "completed"),
        ("create-shipment", "completed"),
    ]
    status = podium_env.call(f"/OrderSaga/{order_id}/GetStatus")
    assert [h["phase"] for h in status["history"]] == [
        "started",
        "charged",
        "reserved",
        "shipped",
        "completed",
    ]
    assert status["completedSteps"][-1] == "send-confirmation"


def test_inventory_failing_refunds_the_payment(podium_env: PodiumEnv) -> None:
    body = saga_request(items=[{"sku": "ITEM-001", "quantity": 1}, {"sku": "SKU-SOLDOUT", "quantity": 1}])
    order_id = body["orderId"]
    result = run(podium_env, body)

    assert result["status"] == "failed"
    assert "cannot reserve stock: sold out" in result["reason"]
    assert result["paymentId"] == f"{order_id}-saga-payment"
    assert "reservationId" not in result
    assert "shipmentId" not in result
    assert result["compensated"] == ["reserve-inventory", "charge-payment"]
    assert money(result["paymentId"]) == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert podium_env.call_private(f"/PaymentService/{result['paymentId']}/Get")["status"] == "refunded"
    assert_nothing_held(podium_env, f"{order_id}-saga-reservation", body)
    assert slot(podium_env, f"{order_id}-saga-shipment") is None  # shipping never started
    assert MailProvider().outbox(f"{body['customerId']}@example.com") == []
    assert steps(podium_env, order_id) == [
        ("charge-payment", "compensated"),
        ("reserve-inventory", "compensated"),
    ]


@pytest.mark.parametrize(
    ("prefix", "reason", "carrier"),
    [
        ("noslots", "no delivery slot left for No Slots", ""),
        ("nolabels", "no shipping label can be printed for No Labels", "podium-express"),
    ],
)
def test_shipment_failing_releases_inventory_and_refunds(
    podium_env: PodiumEnv, prefix: str, reason: str, carrier: str
) -> None:
    body = saga_request(customer_id=new_key(prefix))  # the address on file has no slots / no labels
    order_id = body["orderId"]
    result = run(podium_env, body)

    assert result["status"] == "failed"
    assert result["reason"] == reason
    assert result["paymentId"] == f"{order_id}-saga-payment"
    assert result["reservationId"] == f"{order_id}-saga-reservation"
    assert "shipmentId" not in result
    assert result["compensated"] == ["create-shipment", "reserve-inventory", "charge-payment"]
    assert money(result["paymentId"]) == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert_nothing_held(podium_env, result["reservationId"], body)
    assert slot(podium_env, f"{order_id}-saga-shipment") == {
        "slotId": f"{order_id}-saga-shipment",
        "carrier": carrier,
        "status": "cancelled",
    }
    assert MailProvider().outbox(f"{body['customerId']}@example.com") == []
    assert steps(podium_env, order_id) == [
        ("charge-payment", "compensated"),
        ("reserve-inventory", "compensated"),
        ("create-shipment", "compensated"),
    ]


def test_a_declined_payment_holds_nothing(podium_env: PodiumEnv) -> None:
    body = saga_request(customer_id=new_key("declined"))
    order_id = body["orderId"]
    result = run(podium_env, body)

    assert result["status"] == "failed"
    assert "card declined" in result["reason"]
    assert result["compensated"] == ["charge-payment"]  # the refund of a declined charge moves nothing
    assert set(result) == {"status", "reason", "compensated"}
    assert money(f"{order_id}-saga-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 1}
    assert_nothing_held(podium_env, f"{order_id}-saga-reservation", body)
    assert slot(podium_env, f"{order_id}-saga-shipment") is None


def test_a_failed_email_is_not_critical(podium_env: PodiumEnv) -> None:
    body = saga_request(customer_id=new_key("bounce"))  # the email on file is at bounce.example.com
    result = run(podium_env, body)

    assert result["status"] == "completed"
    assert result["confirmationEmail"] is False
    assert "reason" not in result
    assert money(result["paymentId"]) == {"charges": 1, "refunds": 0, "net": 9999, "requests": 1}
    assert [h["status"] for h in holds(podium_env, "ITEM-001", result["reservationId"])] == ["committed"]
    assert (slot(podium_env, result["shipmentId"]) or {}).get("status") == "reserved"
    assert MailProvider().outbox(f"{body['customerId']}@bounce.example.com") == []
    assert steps(podium_env, body["orderId"])[-1] == ("create-shipment", "completed")


def test_the_same_order_twice_returns_the_same_result_and_charges_once(podium_env: PodiumEnv) -> None:
    body = saga_request()
    first, second = run(podium_env, body), run(podium_env, body)
    assert first == second
    assert first["status"] == "completed"
    assert money(first["paymentId"]) == {"charges": 1, "refunds": 0, "net": 9999, "requests": 1}
    assert len(MailProvider().outbox(f"{body['customerId']}@example.com")) == 1

    response = podium_env.post(f"/OrderSaga/{body['orderId']}/Run", {**body, "amount": 1.0})
    assert response.status_code == 409
    assert "already used for a different request" in response.json()["message"]
    assert money(first["paymentId"])["charges"] == 1


def test_a_failed_order_repeated_is_refunded_once(podium_env: PodiumEnv) -> None:
    body = saga_request(items=[{"sku": "SKU-SOLDOUT", "quantity": 1}])
    first, second = run(podium_env, body), run(podium_env, body)
    assert first == second
    assert first["status"] == "failed"
    assert money(first["paymentId"]) == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": None}, "amount: field required"),
        ({"amount": -5}, "amount: Input should be greater than 0"),
        ({"amount": 0.001}, "amount: at most two decimals"),
        ({"amount": 5e-324}, "amount: at most two decimals"),
        ({"amount": 1e10}, "amount: Input should be less than or equal to 1000000000"),
        ({"amount": "lots"}, "amount: Input should be a valid decimal"),
        ({"customerId": None}, "customerId: field required"),
        ({"customerId": "a b"}, "customerId: String should match pattern"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({"items": [{"sku": "ITEM-001"}]}, "items.0.quantity: field required"),
        ({"items": [{"sku": "NOPE", "quantity": 1}]}, "items.0.sku: unknown SKU 'NOPE'"),
        ({"orderId": "someone-else"}, "orderId: 'someone-else' does not match the order id in the URL"),
    ],
    ids=[
        "no-amount",
        "negative-amount",
        "tenth-of-a-cent",
        "denormal-amount",
        "amount-too-big",
        "amount-not-a-number",
        "no-customer",
        "bad-customer",
        "no-items",
        "no-quantity",
        "unknown-sku",
        "other-id",
    ],
)
def test_bad_requests_are_400_naming_the_field(
    podium_env: PodiumEnv, change: dict[str, Any], message: str
) -> None:
    order_id = new_key("order")
    body = {k: v for k, v in {**saga_request(order_id=order_id), **change}.items() if v is not None}
    response = podium_env.post(f"/OrderSaga/{order_id}/Run", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert podium_env.post(f"/OrderSaga/{order_id}/GetStatus").status_code == 404
    assert money(f"{order_id}-saga-payment")["requests"] == 0
