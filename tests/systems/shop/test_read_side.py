"""The read side and the events after checkout: deduplication, ordering, rebuild, tracking, alerts."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from podium import INTERNAL_CALLER
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import MailProvider
from services.shop import rebuild
from services.shop.db import store_path
from services.shop.inventory import STOCK_ALERTS_EMAIL
from tests.systems.shop.conftest import events, order_body, place, recorded, stock, stuck
from tests.systems.shop.test_order_flow import HAPPY, trail, view

pytestmark = pytest.mark.engine


def completed_order(env: PodiumEnv, **overrides: Any) -> tuple[str, dict[str, Any]]:
    order_id, body = new_key("order"), order_body(**overrides)
    assert place(env, order_id, body)["status"] == "completed"
    return order_id, body


def deliver(env: PodiumEnv, stream: list[dict[str, Any]], handler: str = "Apply") -> Any:
    """Deliver a batch of one order's events to the read models, as the aggregate publishes it."""
    return env.post_private(f"/ShopReadModels/{handler}", {"events": stream, "order": {}})


def test_a_redelivered_event_is_applied_once(podium_env: PodiumEnv) -> None:
    order_id, body = completed_order(podium_env)
    before = view(podium_env, order_id)
    trail(podium_env, order_id, len(HAPPY))
    stream = events(podium_env, order_id)

    for batch in ([stream[1]], [stream[-1], stream[1]]):  # the bus delivers again
        assert deliver(podium_env, batch).status_code == 200

    after = podium_env.call(f"/ShopOrderView/{order_id}/Get")
    assert after["duplicatesIgnored"] == before["duplicatesIgnored"] + 3
    assert {k: v for k, v in after.items() if k != "duplicatesIgnored"} == {
        k: v for k, v in before.items() if k != "duplicatesIgnored"
    }
    audit = podium_env.call(f"/ShopAudit/{order_id}/Entries")
    assert [e["sequence"] for e in audit["entries"]] == [1, 2, 3, 4, 5]
    assert audit["duplicatesIgnored"] == 3
    listed = podium_env.call(f"/ShopCustomerOrders/{body['customerId']}/List")
    assert [(o["orderId"], o["version"]) for o in listed] == [(order_id, 5)]


def test_events_that_arrive_early_wait_for_the_gap(podium_env: PodiumEnv) -> None:
    source, _ = completed_order(podium_env)
    copy = new_key("order")  # the same history under a fresh id, delivered out of order
    stream = [{**e, "orderId": copy} for e in events(podium_env, source)]

    deliver(podium_env, [stream[2]])
    assert podium_env.post(f"/ShopOrderView/{copy}/Get").status_code == 404  # nothing applicable yet
    deliver(podium_env, [stream[0]])
    early = podium_env.call(f"/ShopOrderView/{copy}/Get")
    assert (early["version"], early["status"], early["pending"]) == (1, "placed", [3])
    assert len(podium_env.call(f"/ShopAudit/{copy}/Entries")["entries"]) == 1  # the trail waits too
    deliver(podium_env, [stream[4], stream[1], stream[3]])
    done = podium_env.call(f"/ShopOrderView/{copy}/Get")
    assert (done["version"], done["status"], done["pending"]) == (5, "completed", [])
    assert done["events"] == HAPPY


def test_a_batch_mixing_orders_is_refused(podium_env: PodiumEnv) -> None:
    first, _ = completed_order(podium_env)
    second, _ = completed_order(podium_env)
    response = deliver(podium_env, [events(podium_env, first)[0], events(podium_env, second)[1]])
    assert response.status_code == 400
    assert "events: a batch holds the events of one order" in response.json()["message"]


@pytest.mark.parametrize("handler", ["Apply", "Rebuild"])
def test_an_event_without_what_its_type_needs_is_a_400_never_a_retry(
    podium_env: PodiumEnv, handler: str
) -> None:
    source, body = completed_order(podium_env)
    customer = body["customerId"]
    view(podium_env, source)  # the read side has caught up with the order
    before = podium_env.call(f"/ShopCustomerOrders/{customer}/List")
    copy = new_key("order")  # a fresh stream, so the placed event is the one applied
    placed = {**events(podium_env, source)[0], "orderId": copy}
    placed["data"] = {k: v for k, v in placed["data"].items() if k != "customerId"}

    response = deliver(podium_env, [placed], handler)
    assert response.status_code == 400, response.text
    assert "not a valid OrderPlaced event: customerId: Field required" in response.json()["message"]
    assert podium_env.call(f"/ShopCustomerOrders/{customer}/List") == before
    assert podium_env.post(f"/ShopOrderView/{copy}/Get").status_code == 404
    assert stuck(podium_env, "ShopReadModels") == []


def test_a_conflicting_redelivery_changes_nothing_and_a_rebuild_replaces(podium_env: PodiumEnv) -> None:
    source, body = completed_order(podium_env)
    copy = new_key("order")
    stream = [{**e, "orderId": copy} for e in events(podium_env, source)]
    deliver(podium_env, stream[:1])
    stranger = new_key("cust")
    placed = {**stream[0], "data": {**stream[0]["data"], "customerId": stranger}}

    assert deliver(podium_env, [placed]).status_code == 200  # sequence 1 is applied already: ignored
    assert podium_env.call(f"/ShopCustomerOrders/{stranger}/List") == []
    assert podium_env.call(f"/ShopOrderView/{copy}/Get")["duplicatesIgnored"] == 1

    rebuilt = deliver(podium_env, [placed], "Rebuild")  # a rebuild replaces what was there
    assert rebuilt.status_code == 200, rebuilt.text
    assert [o["orderId"] for o in podium_env.call(f"/ShopCustomerOrders/{stranger}/List")] == [copy]
    assert [o["orderId"] for o in podium_env.call(f"/ShopCustomerOrders/{body['customerId']}/List")] == [
        source
    ]


def test_replay_rebuilds_the_same_read_model_from_the_event_store(podium_env: PodiumEnv) -> None:
    order_id, body = completed_order(podium_env)
    shipping = f"/ShopShipping/{order_id}"
    podium_env.call(f"{shipping}/UpdateTracking", {"updateId": "scan-1", "status": "in_transit"})
    recorded(podium_env, order_id, 6)
    incremental = view(podium_env, order_id)
    incremental_trail = trail(podium_env, order_id, 6)
    deliver(podium_env, events(podium_env, order_id)[:1])  # a duplicate

    rebuilt = podium_env.call(f"/ShopOrder/{order_id}/Replay")
    assert rebuilt["duplicatesIgnored"] == 0  # a fresh projection...
    assert {k: v for k, v in rebuilt.items() if k != "duplicatesIgnored"} == {
        k: v for k, v in incremental.items() if k != "duplicatesIgnored"
    }  # ...equal to the one built message by message
    assert podium_env.call(f"/ShopOrderView/{order_id}/Get") == rebuilt
    assert podium_env.call(f"/ShopAudit/{order_id}/Entries")["entries"] == incremental_trail
    listed = podium_env.call(f"/ShopCustomerOrders/{body['customerId']}/List")
    assert [(o["orderId"], o["version"]) for o in listed] == [(order_id, 6)]


def test_tracking_and_delivery_append_events_and_illegal_moves_are_409(podium_env: PodiumEnv) -> None:
    order_id, _ = completed_order(podium_env)
    shipping = f"/ShopShipping/{order_id}"
    scan = {"updateId": "scan-1", "status": "in_transit", "location": "Memphis, TN"}
    podium_env.call(f"{shipping}/UpdateTracking", scan)
    podium_env.call(f"{shipping}/UpdateTracking", scan)  # the carrier retries its webhook
    delivered = podium_env.call(f"{shipping}/ConfirmDelivery", {"signedBy": "A. Customer"})
    assert delivered["status"] == "delivered"
    assert delivered["scans"] == ["scan-1"]

    stream = recorded(podium_env, order_id, len(HAPPY) + 2)
    assert [e["type"] for e in stream] == [*HAPPY, "TrackingUpdated", "OrderDelivered"]
    assert {e["actor"] for e in stream[-2:]} == {INTERNAL_CALLER}  # sent through the ingress, no subject
    summary = view(podium_env, order_id)
    assert summary["status"] == "delivered"
    assert [(t["status"], t["location"]) for t in summary["tracking"]] == [("in_transit", "Memphis, TN")]

    late = podium_env.post(f"{shipping}/UpdateTracking", {"updateId": "scan-2", "status": "in_transit"})
    assert late.status_code == 409
    illegal = podium_env.post_private(
        f"/ShopOrder/{order_id}/Record",
        {"type": "InventoryReleased", "eventId": "sneaky", "actor": "someone", "data": {}},
    )
    assert illegal.status_code == 409
    assert "InventoryReleased is not allowed when the order is delivered" in illegal.json()["message"]
    assert len(events(podium_env, order_id)) == len(stream)
    no_shipment = podium_env.post(f"/ShopShipping/{new_key('order')}/ConfirmDelivery", {})
    assert no_shipment.status_code == 404


def test_low_stock_is_announced_once_per_crossing(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-10")  # threshold 2: alert when fewer than 2 are left

    def order(quantity: int) -> str:
        order_id, _ = completed_order(
            podium_env, items=[{"sku": sku, "quantity": quantity, "unitPrice": 3.0}]
        )
        return order_id

    def alerts() -> list[dict[str, Any]]:
        return [m for m in MailProvider().outbox(STOCK_ALERTS_EMAIL) if sku in m["subject"]]

    order(5)
    assert stock(podium_env, sku)["lowStockAlerts"] == 0
    second = order(4)  # 1 left: below the threshold
    order(1)  # 0 left: still low, no second alert
    level = stock(podium_env, sku)
    assert (level["available"], level["low"], level["lowStockAlerts"]) == (0, True, 1)
    assert len(assert_eventually(alerts, message="the low-stock alert")) == 1

    podium_env.call(f"/ShopOrder/{second}/Cancel", {"reason": "changed my mind"})  # back to 4: re-armed
    assert stock(podium_env, sku)["low"] is False
    order(3)  # 1 left: a second crossing
    assert stock(podium_env, sku)["lowStockAlerts"] == 2
    second_alerts = assert_eventually(
        lambda: a if len(a := alerts()) >= 2 else [], message="the second alert"
    )
    assert [m["subject"] for m in second_alerts] == [f"Low stock: {sku}"] * 2


def test_notifications_follow_the_customers_preferences(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    phone = "+1555" + str(int(customer.rsplit("-", 1)[1], 16) % 10**7).zfill(7)
    prefs = {"channels": ["sms", "push"], "phone": phone}
    refused = podium_env.post(f"/ShopCustomer/{customer}/SetPreferences", {"channels": ["sms"]})
    assert refused.status_code == 400
    assert "phone: required when channels include sms" in refused.json()["message"]
    podium_env.call(f"/ShopCustomer/{customer}/SetPreferences", prefs)

    order_id, body = completed_order(podium_env, customer_id=customer)
    sms = assert_eventually(lambda: MailProvider().outbox(phone, "sms"), message="the SMS")
    push = assert_eventually(lambda: MailProvider().outbox(customer, "push"), message="the push")
    assert [m["subject"] for m in push] == [f"Order {order_id} confirmed"]
    assert len(sms) == 1
    assert MailProvider().outbox(body["email"]) == []  # email is not among the chosen channels


def test_an_event_whose_data_does_not_fold_is_refused_with_400_and_the_order_is_untouched(
    podium_env: PodiumEnv,
) -> None:
    order_id, _ = completed_order(podium_env)
    before = events(podium_env, order_id)
    response = podium_env.post_private(
        f"/ShopOrder/{order_id}/Record",
        {"type": "TrackingUpdated", "eventId": "bad-scan", "actor": "someone", "data": {}},
    )
    assert response.status_code == 400, response.text
    assert "data: not a valid TrackingUpdated event: status: Field required" in response.json()["message"]
    assert events(podium_env, order_id) == before


def test_the_event_store_and_the_stock_refuse_clients_and_stay_untouched(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-5")
    order_id, _ = completed_order(podium_env, items=[{"sku": sku, "quantity": 2, "unitPrice": 3.0}])
    stream, level = events(podium_env, order_id), stock(podium_env, sku)

    podium_env.assert_private(
        f"/ShopOrder/{order_id}/Record",
        {"type": "OrderDelivered", "eventId": "forged", "actor": "mallory", "data": {}},
    )
    podium_env.assert_private("/ShopInventory/Release", {"orderId": order_id, "actor": "mallory"})
    podium_env.assert_private(
        "/ShopInventory/Reserve", {"orderId": new_key("order"), "lines": {sku: 3}, "actor": "mallory"}
    )

    assert events(podium_env, order_id) == stream
    assert stock(podium_env, sku) == level
    assert (level["available"], level["reserved"]) == (3, 2)


def test_every_read_model_is_rebuilt_from_the_stores_after_a_loss(
    podium_env: PodiumEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m services.shop.rebuild``: views, lists, trails and stock levels, all from the stores."""
    customer = new_key("cust")
    sku = new_key("LIMITED-5")
    done, _ = completed_order(podium_env, customer_id=customer)
    podium_env.call(f"/ShopShipping/{done}/UpdateTracking", {"updateId": "scan-1", "status": "in_transit"})
    cancelled = new_key("order")
    short = order_body(customer_id=customer, items=[{"sku": sku, "quantity": 9, "unitPrice": 1.0}])
    assert place(podium_env, cancelled, short)["status"] == "cancelled"  # 9 of 5: out of stock
    held, _ = completed_order(
        podium_env, customer_id=customer, items=[{"sku": sku, "quantity": 2, "unitPrice": 1.0}]
    )
    orders = {done: 6, cancelled: 3, held: 5}
    for order_id, length in orders.items():
        recorded(podium_env, order_id, length)
    before = {o: (view(podium_env, o), trail(podium_env, o, n)) for o, n in orders.items()}
    listed = podium_env.call(f"/ShopCustomerOrders/{customer}/List")
    assert sorted(o["orderId"] for o in listed) == sorted(orders)
    level = stock(podium_env, sku)

    # The loss: one order gone from every read model, one without its last events, one summary wrong,
    # and the SKU's level wrong.
    db = sqlite3.connect(store_path("orders"))
    with db:
        db.execute("delete from events where order_id = ?", (done,))
        db.execute("delete from orders where order_id = ?", (done,))
        db.execute("delete from events where order_id = ? and sequence > 1", (cancelled,))
        db.execute("update orders set version = 1, summary = '{}' where order_id = ?", (cancelled,))
        db.execute(
            "update orders set summary = replace(summary, 'completed', 'cancelled') where order_id = ?",
            (held,),
        )
    db.close()
    db = sqlite3.connect(store_path("inventory"))
    with db:
        db.execute("update levels set available = 0, reserved = 0 where sku = ?", (sku,))
    db.close()
    assert podium_env.post(f"/ShopOrderView/{done}/Get").status_code == 404
    assert podium_env.call(f"/ShopOrderView/{held}/Get")["status"] == "cancelled"

    capsys.readouterr()
    rebuild.main(["--ingress", podium_env.ingress_url, "--admin", podium_env.admin_url])
    report = json.loads(capsys.readouterr().out)
    assert report["orders"] >= len(orders)  # every order of the engine, other tests' too
    assert not set(orders) & set(report["failed"]), report["failed"]
    assert sku in report["levels"]["changed"]

    for order_id, (summary, entries) in before.items():
        rebuilt = podium_env.call(f"/ShopOrderView/{order_id}/Get")
        assert {k: v for k, v in rebuilt.items() if k != "duplicatesIgnored"} == {
            k: v for k, v in summary.items() if k != "duplicatesIgnored"
        }
        assert podium_env.call(f"/ShopAudit/{order_id}/Entries")["entries"] == entries
    assert podium_env.call(f"/ShopCustomerOrders/{customer}/List") == listed
    assert stock(podium_env, sku) == level
