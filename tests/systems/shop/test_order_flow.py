"""Seed 004's order saga on a real engine: the happy path, each compensation, idempotency, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podium import INTERNAL_CALLER, SUBJECT_HEADER
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import MailProvider
from services.shop.app import BENCH_FLOW
from tests.systems.money import money
from tests.systems.shop.conftest import events, order_body, place, recorded, stock, stuck

pytestmark = pytest.mark.engine

HAPPY = ["OrderPlaced", "InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderCompleted"]


def shipment(env: PodiumEnv, order_id: str) -> dict[str, Any] | None:
    response = env.post_private(f"/ShopShipping/{order_id}/Get")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def held(env: PodiumEnv, sku: str) -> int:
    reserved: int = stock(env, sku)["reserved"]
    return reserved


def view(env: PodiumEnv, order_id: str) -> dict[str, Any]:
    """The read model's summary, once it has caught up with the event store."""

    def caught_up() -> dict[str, Any]:
        response = env.post(f"/ShopOrderView/{order_id}/Get")
        found: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return found if found.get("version") == len(events(env, order_id)) else {}

    return assert_eventually(caught_up, timeout=15, message=f"the read model of {order_id}")


def trail(env: PodiumEnv, order_id: str, length: int) -> list[dict[str, Any]]:
    def complete() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = env.call(f"/ShopAudit/{order_id}/Entries")["entries"]
        return found if len(found) == length else []

    return assert_eventually(complete, timeout=15, message=f"the audit trail of {order_id}")


def test_an_order_completes_and_every_side_sees_it_once(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), order_body()
    widgets_before = held(podium_env, "WIDGET-1")
    result = place(podium_env, order_id, body)

    assert result["status"] == "completed", result
    assert result["events"] == HAPPY
    assert result["total"] == 49.97
    assert result["lines"] == {"GADGET-2": 1, "WIDGET-1": 2}
    assert result["paymentId"] == f"{order_id}-payment"
    assert result["trackingNumber"].startswith("PP")  # made by the carrier, podium-post
    assert result["carrier"] == "podium-post"
    assert result["reason"] is None

    # One charge at the gateway, one label, the stock held.
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 0, "net": 4997, "requests": 1}
    label = shipment(podium_env, order_id)
    assert label is not None
    assert label["trackingNumber"] == result["trackingNumber"]
    assert held(podium_env, "WIDGET-1") >= widgets_before + 2

    # The event store: gapless sequence, engine-clock times in order, one correlation id, each actor.
    stream = events(podium_env, order_id)
    assert [e["type"] for e in stream] == HAPPY
    assert [e["sequence"] for e in stream] == [1, 2, 3, 4, 5]
    assert [e["at"] for e in stream] == sorted(e["at"] for e in stream)
    assert len({e["correlationId"] for e in stream}) == 1
    assert stream[0]["actor"] == INTERNAL_CALLER  # placed through the trusted ingress, not the gateway
    assert {e["actor"] for e in stream[1:]} == {"ShopOrder"}

    # The read side caught up: the order's summary, the customer's list, the audit trail.
    summary = view(podium_env, order_id)
    assert {k: summary[k] for k in result} == result
    listed = podium_env.call(f"/ShopCustomerOrders/{body['customerId']}/List")
    assert [(o["orderId"], o["status"]) for o in listed] == [(order_id, "completed")]
    entries = trail(podium_env, order_id, 5)
    assert [(e["sequence"], e["operation"]) for e in entries] == list(enumerate(HAPPY, start=1))
    assert {e["correlationId"] for e in entries} == {stream[0]["correlationId"]}
    assert [e["actor"] for e in entries] == [e["actor"] for e in stream]

    # The customer was told once, by email (the default preference).
    mails = assert_eventually(lambda: MailProvider().outbox(body["email"]), message="the confirmation")
    assert len(mails) == 1
    assert result["trackingNumber"] in mails[0]["body"]

    status = podium_env.call(f"/ShopOrder/{order_id}/GetStatus")
    assert (status["phase"], status["progress"], status["isComplete"]) == ("completed", 1.0, True)
    assert status["completedSteps"] == [
        "reserve-inventory",
        "process-payment",
        "create-shipment",
        "complete-order",
    ]
    assert status["saga"]["status"] == "completed"
    assert [s["name"] for s in status["saga"]["steps"]] == [
        "validate-payment",
        "reserve-inventory",
        "process-payment",
        "create-shipment",
    ]


def test_a_declined_payment_releases_the_inventory_and_cancels(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-5")
    order_id = new_key("order")
    body = order_body(customer_id=new_key("declined"), items=[{"sku": sku, "quantity": 3, "unitPrice": 10.0}])
    result = place(podium_env, order_id, body)

    assert result["status"] == "cancelled"
    assert "card declined" in result["reason"]
    assert result["events"] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert money(f"{order_id}-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 1}
    assert stock(podium_env, sku)["available"] == 5
    assert shipment(podium_env, order_id) is None
    saga = podium_env.call(f"/ShopOrder/{order_id}/GetStatus")["saga"]
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("validate-payment", "completed"),
        ("reserve-inventory", "compensated"),
        ("process-payment", "compensated"),  # the refund found no charge and voided the payment id
    ]
    assert view(podium_env, order_id)["status"] == "cancelled"


def test_a_refused_payment_method_cancels_before_anything_is_held(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-5")
    order_id = new_key("order")
    body = order_body(method="card-expired", items=[{"sku": sku, "quantity": 3, "unitPrice": 10.0}])
    result = place(podium_env, order_id, body)

    assert result["status"] == "cancelled"
    assert result["reason"] == "payment method card-expired was refused: expired or unknown"
    assert result["events"] == ["OrderPlaced", "PaymentFailed", "OrderCancelled"]
    assert money(f"{order_id}-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 0}
    assert stock(podium_env, sku)["available"] == 5
    assert view(podium_env, order_id)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ({"country": "AQ"}, "no carrier takes the shipment to AQ 12345: podium-global refused"),
        ({"zip": "00000"}, "no carrier takes the shipment to US 00000: podium-post refused"),
    ],
    ids=["unshippable-country", "unshippable-zip"],
)
def test_a_failed_shipment_refunds_once_releases_and_cancels(
    podium_env: PodiumEnv, address: dict[str, str], reason: str
) -> None:
    sku = new_key("LIMITED-5")
    order_id = new_key("order")
    body = order_body(items=[{"sku": sku, "quantity": 2, "unitPrice": 12.5}], address=address)
    result = place(podium_env, order_id, body)

    assert result["status"] == "cancelled"
    assert result["reason"].startswith(reason)
    assert result["events"] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShippingFailed",
        "PaymentRefunded",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert (result["charged"], result["refunded"]) == (25.0, 25.0)
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert stock(podium_env, sku)["available"] == 5
    assert shipment(podium_env, order_id) is None
    # Placing it again returns the same cancellation and refunds nothing more.
    assert place(podium_env, order_id, body) == result
    assert money(f"{order_id}-payment")["refunds"] == 1
    mails = assert_eventually(lambda: MailProvider().outbox(body["email"]), message="the cancellation")
    assert [m["subject"] for m in mails] == [f"Order {order_id} cancelled"]


def test_out_of_stock_cancels_with_nothing_charged_or_held(podium_env: PodiumEnv) -> None:
    spare = new_key("LIMITED-3")
    order_id = new_key("order")
    items = [
        {"sku": spare, "quantity": 2, "unitPrice": 5.0},
        {"sku": new_key("SOLDOUT"), "quantity": 1, "unitPrice": 5.0},
    ]
    result = place(podium_env, order_id, order_body(items=items))

    assert result["status"] == "cancelled"
    assert result["reason"].startswith("out of stock: SOLDOUT-")
    assert result["events"] == ["OrderPlaced", "InventoryReservationFailed", "OrderCancelled"]
    assert money(f"{order_id}-payment") == {"charges": 0, "refunds": 0, "net": 0, "requests": 0}
    assert stock(podium_env, spare)["available"] == 3  # the line that could be held was let go
    assert view(podium_env, order_id)["status"] == "cancelled"


def test_the_same_order_twice_is_one_order_and_a_different_body_is_409(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), order_body()
    first = place(podium_env, order_id, body)
    again = place(podium_env, order_id, {**body, "orderId": order_id, "correlationId": "retry-1"})

    assert again == first
    assert len(events(podium_env, order_id)) == len(HAPPY)
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 0, "net": 4997, "requests": 1}

    changed = {**body, "items": [{"sku": "WIDGET-1", "quantity": 5, "unitPrice": 14.99}]}
    response = podium_env.post(f"/ShopOrder/{order_id}/Place", changed)
    assert response.status_code == 409, response.text
    assert "different request" in response.json()["message"]
    assert len(events(podium_env, order_id)) == len(HAPPY)
    assert money(f"{order_id}-payment")["charges"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customerId": None}, "customerId: field required"),
        ({"email": "nope"}, "email: String should match pattern"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({"items": [{"sku": "WIDGET-1", "quantity": 0, "unitPrice": 1}]}, "items.0.quantity"),
        ({"items": [{"sku": "WIDGET-1", "quantity": 1}]}, "items.0.unitPrice: field required"),
        ({"shippingAddress": {"street": "x", "city": "y", "zip": "1", "country": "usa"}}, "country"),
        ({"orderId": "someone-else"}, "orderId: 'someone-else' does not match the order id in the URL"),
        (
            {"items": [{"sku": "WIDGET-1", "quantity": 1000, "unitPrice": 1001}]},
            "items: the order comes to 1001000.00, above the 1,000,000 limit",
        ),
        # Valid for "> 0", but no payment takes less than a cent: refused here, before any saga starts,
        # by the same rule the payment uses (it used to start a checkout whose charge retried forever).
        (
            {"items": [{"sku": "WIDGET-1", "quantity": 1, "unitPrice": 0.001}]},
            "items.0.unitPrice: at most two decimals",
        ),
        (
            {"items": [{"sku": "WIDGET-1", "quantity": 1, "unitPrice": 5e-324}]},
            "items.0.unitPrice: at most two decimals",
        ),
        (
            {"items": [{"sku": "WIDGET-1", "quantity": 1, "unitPrice": 14.999}]},
            "items.0.unitPrice: at most two decimals",
        ),
    ],
    ids=[
        "no-customer",
        "bad-email",
        "no-items",
        "zero-quantity",
        "no-price",
        "bad-country",
        "other-id",
        "total",
        "sub-cent-price",
        "denormal-price",
        "fraction-of-a-cent",
    ],
)
def test_bad_requests_are_400_naming_the_field(
    podium_env: PodiumEnv, change: dict[str, Any], message: str
) -> None:
    order_id = new_key("order")
    body = {k: v for k, v in {**order_body(), **change}.items() if v is not None}
    response = podium_env.post(f"/ShopOrder/{order_id}/Place", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert events(podium_env, order_id) == []
    assert money(f"{order_id}-payment")["requests"] == 0
    assert stuck(podium_env, order_id) == []  # nothing started, so nothing is left retrying


def test_the_actor_is_the_verified_subject_not_the_request_body(podium_env: PodiumEnv) -> None:
    order_id = new_key("order")
    body = {**order_body(), "actor": "mallory"}  # a client naming its own actor is not believed
    assert place(podium_env, order_id, body, subject="alice")["status"] == "completed"

    stream = events(podium_env, order_id)
    assert [e["actor"] for e in stream] == ["alice"] + ["ShopOrder"] * (len(HAPPY) - 1)

    # The carrier's webhooks record the carrier's verified subject, whatever their bodies say.
    carrier = {SUBJECT_HEADER: "carrier-ups"}
    scan = {"updateId": "scan-1", "status": "in_transit", "actor": "mallory"}
    scanned = podium_env.post(f"/ShopShipping/{order_id}/UpdateTracking", scan, headers=carrier)
    assert scanned.status_code == 200, scanned.text
    signed = {"signedBy": "A. Customer", "actor": "mallory"}
    delivered = podium_env.post(f"/ShopShipping/{order_id}/ConfirmDelivery", signed, headers=carrier)
    assert delivered.status_code == 200, delivered.text

    stream = recorded(podium_env, order_id, len(HAPPY) + 2)
    assert [(e["type"], e["actor"]) for e in stream[-2:]] == [
        ("TrackingUpdated", "carrier-ups"),
        ("OrderDelivered", "carrier-ups"),
    ]
    entries = trail(podium_env, order_id, len(stream))
    assert [e["actor"] for e in entries] == [e["actor"] for e in stream]
    assert "mallory" not in {e["actor"] for e in entries}


def test_status_shows_the_phase_while_the_saga_runs(podium_env: PodiumEnv) -> None:
    order_id, body = new_key("order"), order_body(customer_id=new_key("slow"))  # the charge takes 3 s
    podium_env.send(f"/ShopOrder/{order_id}/Place", body)

    def status() -> dict[str, Any]:
        response = podium_env.post(f"/ShopOrder/{order_id}/GetStatus")
        found: dict[str, Any] = response.json() if response.status_code == 200 else {"phase": "none"}
        return found

    running = assert_eventually(lambda: (s := status())["phase"] == "inventory_reserved" and s, timeout=15)
    assert (running["progress"], running["currentStep"], running["isComplete"]) == (
        0.35,
        "process-payment",
        False,
    )
    assert running["completedSteps"] == ["reserve-inventory"]
    assert [s["name"] for s in running["saga"]["steps"]] == [
        "validate-payment",
        "reserve-inventory",
        "process-payment",
    ]
    assert assert_eventually(lambda: status()["phase"] == "completed", timeout=20)


def test_the_benchmark_flow_places_an_order_that_completes(podium_env: PodiumEnv) -> None:
    spec, path, template = BENCH_FLOW
    assert spec == "services.shop.app:standalone_app"
    key = new_key("bench")
    result = podium_env.call(path.replace("{key}", key), json.loads(template.replace("{key}", key)))
    assert (result["orderId"], result["status"], result["events"]) == (key, "completed", HAPPY)
    assert stock(podium_env, f"UNLIMITED-{key}")["available"] == 1_000_000_000 - 1
