"""Seed 002's OrderOrchestrator against a real engine: all five phases and every failure."""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key
from services.commerce import catalogue
from services.common.providers import MailProvider, PaymentGateway
from tests.systems.commerce.conftest import holds, order

pytestmark = pytest.mark.engine


def complete(env: PodiumEnv, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = env.call(f"/OrderOrchestrator/{body['id']}/CompleteOrder", body)
    return result


def money(order_id: str) -> dict[str, int]:
    """Net cents kept per provider for an order (charges minus refunds)."""
    gateway = PaymentGateway()
    net: dict[str, int] = {}
    for provider in ("primary", "backup"):
        charges = [e for e in gateway.effects(kind="charge") if e["key"] == f"{order_id}-payment-{provider}"]
        net[provider] = sum(gateway.balance_cents(c["subject"]) for c in charges)
        net[f"{provider}-charges"] = len(charges)
    return net


def assert_nothing_held(env: PodiumEnv, body: dict[str, Any]) -> None:
    for item in body["items"]:
        assert holds(env, item["sku"], body["id"]) == []


def test_success_runs_all_five_phases(podium_env: PodiumEnv) -> None:
    body = order()
    result = complete(podium_env, body)

    assert result["status"] == "completed"
    assert result["payment"]["provider"] == "primary"
    assert result["payment"]["status"] == "charged"
    assert result["fulfillment"]["label"]["trackingNumber"].startswith("PD")
    assert result["fulfillment"]["invoice"]["total"] == body["total"]
    assert result["notifications"] == {"sent": 3, "failed": 0, "errors": [None, None, None]}
    assert money(body["id"]) == {"primary": 3997, "primary-charges": 1, "backup": 0, "backup-charges": 0}
    assert [h["status"] for h in holds(podium_env, "ITEM-001", body["id"])] == ["committed"]
    assert len(MailProvider().outbox(body["userEmail"])) == 1
    assert len(MailProvider().outbox(body["userPhone"], "sms")) == 1

    status = podium_env.call(f"/OrderOrchestrator/{body['id']}/GetOrderStatus")
    assert status["phase"] == "completed"
    assert status["progress"] == 1.0
    assert status["isComplete"] is True
    assert [h["phase"] for h in status["history"]] == [
        "started",
        "validation",
        "reservation",
        "payment",
        "fulfillment",
        "completed",
    ]
    assert [h["progress"] for h in status["history"]][1:5] == [0.2, 0.4, 0.6, 0.8]
    assert status["saga"]["status"] == "completed"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"items": [{"sku": "SKU-SOLDOUT", "quantity": 1}]}, "inventory (out of stock: SKU-SOLDOUT)"),
        ({"method": "card-expired"}, "payment method"),
        ({"address": {"country": "AQ"}}, "shipping"),
        ({"user_id": "fraud-mallory"}, "fraud"),
        ({"total": 20_000.0}, "fraud"),
    ],
)
def test_validation_failure_is_a_400_and_holds_nothing(
    podium_env: PodiumEnv, change: dict[str, Any], reason: str
) -> None:
    body = order(**change)
    response = podium_env.post(f"/OrderOrchestrator/{body['id']}/CompleteOrder", body)
    assert response.status_code == 400
    assert response.json()["message"] == f"order validation failed: {reason}"
    assert_nothing_held(podium_env, body)
    assert money(body["id"])["primary-charges"] == 0


def test_slow_primary_loses_the_race_and_keeps_nothing(podium_env: PodiumEnv) -> None:
    body = order(method="card-slow-primary")
    result = complete(podium_env, body)
    assert result["status"] == "completed"
    assert result["payment"]["provider"] == "backup"
    # The primary did charge (its answer was late): the race refunded it by key.
    net = assert_eventually(lambda: (n := money(body["id"]))["primary"] == 0 and n, timeout=30)
    assert net["backup"] == 3997
    assert net["backup-charges"] == 1


def test_primary_down_falls_back_to_the_backup(podium_env: PodiumEnv) -> None:
    body = order(method="card-primary-down")
    result = complete(podium_env, body)
    assert result["payment"]["provider"] == "backup"
    assert money(body["id"]) == {"primary": 0, "primary-charges": 0, "backup": 3997, "backup-charges": 1}


def test_declined_by_both_providers_releases_stock_and_slot(podium_env: PodiumEnv) -> None:
    body = order(user_id=new_key("declined"))
    result = complete(podium_env, body)
    assert result["status"] == "failed"
    assert "payment failed" in result["reason"]
    assert_nothing_held(podium_env, body)
    assert podium_env.call_private(f"/ShippingService/{body['id']}-slot/Get")["status"] == "cancelled"
    assert money(body["id"])["primary-charges"] == money(body["id"])["backup-charges"] == 0
    saga = podium_env.call(f"/OrderOrchestrator/{body['id']}/GetOrderStatus")["saga"]
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("reserve-inventory", "compensated"),
        ("reserve-shipping", "compensated"),
        ("payment", "compensated"),
    ]


def test_no_shipping_slot_releases_stock_and_charges_nothing(podium_env: PodiumEnv) -> None:
    body = order(address={"city": "No Slots"})
    result = complete(podium_env, body)
    assert result["status"] == "failed"
    assert "no delivery slot" in result["reason"]
    assert_nothing_held(podium_env, body)
    assert money(body["id"])["primary-charges"] == 0


def test_damaged_stock_refunds_and_releases_everything(podium_env: PodiumEnv) -> None:
    body = order(
        items=[{"sku": "ITEM-003", "quantity": 1}, {"sku": "SKU-DAMAGED", "quantity": 1}], total=54.98
    )
    result = complete(podium_env, body)
    assert result["status"] == "failed"
    assert "stock is damaged" in result["reason"]
    assert_nothing_held(podium_env, body)
    assert podium_env.call_private(f"/ShippingService/{body['id']}-slot/Get")["status"] == "cancelled"
    net = money(body["id"])
    assert (net["primary-charges"], net["primary"]) == (1, 0)  # charged once, refunded once
    status = podium_env.call(f"/OrderOrchestrator/{body['id']}/GetOrderStatus")
    assert status["phase"] == "failed"
    assert status["isComplete"] is True
    assert "stock is damaged" in status["error"]


def test_failed_notifications_never_fail_the_order(podium_env: PodiumEnv) -> None:
    user = new_key("user")
    body = order(user_id=user, email=f"{user}@bounce.example.com", phone="+0001234567")
    result = complete(podium_env, body)
    assert result["status"] == "completed"
    assert result["notifications"]["sent"] == 1
    assert result["notifications"]["failed"] == 2
    assert result["notifications"]["errors"][0] == "bounced"
    assert "cannot be delivered" in result["notifications"]["errors"][1]


def test_the_same_order_twice_returns_the_same_result_and_charges_once(podium_env: PodiumEnv) -> None:
    body = order()
    first, second = complete(podium_env, body), complete(podium_env, body)
    assert first == second
    assert money(body["id"])["primary-charges"] == 1
    changed = {**body, "total": 1.0}
    response = podium_env.post(f"/OrderOrchestrator/{body['id']}/CompleteOrder", changed)
    assert response.status_code == 409


def test_status_can_be_polled_while_the_order_runs(podium_env: PodiumEnv) -> None:
    body = order(user_id=new_key("slow"))  # both providers answer 3 s late
    podium_env.send(f"/OrderOrchestrator/{body['id']}/CompleteOrder", body)

    def phase() -> str:
        response = podium_env.post(f"/OrderOrchestrator/{body['id']}/GetOrderStatus")
        return str(response.json()["phase"]) if response.status_code == 200 else "none"

    assert assert_eventually(lambda: phase() == "reservation", timeout=20)
    running = podium_env.call(f"/OrderOrchestrator/{body['id']}/GetOrderStatus")
    assert running["isComplete"] is False
    assert running["progress"] == 0.4
    assert assert_eventually(lambda: phase() == "completed", timeout=30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "other"}, "does not match the order id in the URL"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({"total": -5}, "total: Input should be greater than 0"),
        ({"total": 0.001}, "total: at most two decimals"),
        ({"total": 5e-324}, "total: at most two decimals"),
        ({"total": 1e10}, "total: Input should be less than or equal to 1000000000"),
        ({"total": "lots"}, "total: Input should be a valid decimal"),
        ({"userEmail": "nope"}, "userEmail: String should match pattern"),
        ({"items": [{"sku": "NOPE", "quantity": 1}]}, "unknown SKU 'NOPE'"),
    ],
)
def test_bad_orders_are_400(podium_env: PodiumEnv, change: dict[str, Any], message: str) -> None:
    body = {**order(), **change}
    key = new_key("order") if "id" in change else body["id"]
    response = podium_env.post(f"/OrderOrchestrator/{key}/CompleteOrder", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    # Refused at the door: nothing held, nothing charged, no status (the id can still be used).
    known = [i for i in body["items"] if i["sku"] in catalogue.PRICES]
    assert_nothing_held(podium_env, {"id": key, "items": known})
    assert money(key)["primary-charges"] == money(key)["backup-charges"] == 0
    if "unknown SKU" not in message:  # the checks of phase 1 run after the status starts
        assert podium_env.post(f"/OrderOrchestrator/{key}/GetOrderStatus").status_code == 404


def test_the_ingress_refuses_the_internal_services_and_nothing_changes(podium_env: PodiumEnv) -> None:
    body = order()
    order_id = body["id"]
    assert complete(podium_env, body)["status"] == "completed"
    invoice = podium_env.call_private(f"/Billing/{order_id}/Get")
    stock = {"reservationId": order_id, "items": body["items"]}

    # What a client could try once its order shipped: give the stock back, cancel the slot, void the
    # invoice, get its money back, or hold someone else's stock.
    attempts: list[tuple[str, Any]] = [
        ("/InventoryService/Release", stock),
        ("/InventoryService/Reserve", {"reservationId": new_key("intruder"), "items": body["items"]}),
        ("/StockLevel/ITEM-001/Release", {"holder": order_id}),
        (f"/ShippingService/{order_id}-slot/CancelSlot", None),
        (f"/Billing/{order_id}/VoidInvoice", None),
        (f"/PaymentService/{order_id}-payment-primary/Refund", {}),
        (f"/WarehouseService/{new_key('intruder')}/PickItems", {"items": body["items"]}),
        ("/StockLevel/ITEM-001/Get", None),
    ]
    for path, request in attempts:
        podium_env.assert_private(path, request)

    for item in body["items"]:
        assert [h["status"] for h in holds(podium_env, item["sku"], order_id)] == ["committed"]
    assert podium_env.call_private(f"/ShippingService/{order_id}-slot/Get")["status"] == "reserved"
    assert podium_env.call_private(f"/Billing/{order_id}/Get") == invoice
    assert invoice["status"] == "issued"
    assert money(order_id) == {"primary": 3997, "primary-charges": 1, "backup": 0, "backup-charges": 0}
    assert not [
        h
        for h in podium_env.call_private("/StockLevel/ITEM-001/Get")["holds"]
        if h["holder"].startswith("intruder-")
    ]
