"""After checkout and around it: cancel at each stage, refunds, snapshots, the deadline, a contended SKU."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import CarrierProvider, MailProvider
from services.shop import settings
from services.shop.events import Event, fold
from services.shop.order import SNAPSHOT_EVERY
from services.shop.settings import ShopSettings
from services.shop.shipping import label_key
from tests.systems.money import money
from tests.systems.shop.conftest import events, order_body, place, recorded, stock, stuck
from tests.systems.shop.test_order_flow import HAPPY, view

pytestmark = pytest.mark.engine

CANCELLED_AFTER_CHECKOUT = [
    *HAPPY,
    "CancellationRequested",
    "ShipmentCancelled",
    "PaymentRefunded",
    "InventoryReleased",
    "OrderCancelled",
]


def cancel(env: PodiumEnv, order_id: str, *, subject: str = "alice", reason: str = "") -> Any:
    return env.post(f"/ShopOrder/{order_id}/Cancel", {"reason": reason}, headers={SUBJECT_HEADER: subject})


def limited_order(env: PodiumEnv, **overrides: Any) -> tuple[str, str, dict[str, Any]]:
    sku = new_key("LIMITED-6")
    order_id = new_key("order")
    body = order_body(items=[{"sku": sku, "quantity": 2, "unitPrice": 12.5}], **overrides)
    return order_id, sku, body


def test_a_completed_order_cancelled_before_pick_up_is_voided_refunded_released_and_told(
    podium_env: PodiumEnv,
) -> None:
    order_id, sku, body = limited_order(podium_env)
    assert place(podium_env, order_id, body)["status"] == "completed"
    assert stock(podium_env, sku)["available"] == 4

    response = cancel(podium_env, order_id, reason="found it cheaper")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "cancelled"
    assert result["events"] == CANCELLED_AFTER_CHECKOUT
    assert result["reason"] == "cancelled by alice: found it cheaper"
    assert (result["charged"], result["refunded"]) == (25.0, 25.0)
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 1, "net": 0, "requests": 1}
    assert stock(podium_env, sku)["available"] == 6
    assert podium_env.call_private(f"/ShopShipping/{order_id}/Get")["status"] == "cancelled"
    stream = events(podium_env, order_id)
    assert stream[len(HAPPY)]["actor"] == "alice"  # who cancelled, in the event store and the audit
    assert view(podium_env, order_id)["status"] == "cancelled"
    mails = assert_eventually(
        lambda: m if len(m := MailProvider().outbox(body["email"])) == 2 else [], message="the cancellation"
    )
    assert any("cancelled" in m["subject"] for m in mails)

    # Cancelling again answers the same and moves nothing.
    again = cancel(podium_env, order_id)
    assert again.status_code == 200
    assert again.json()["events"] == CANCELLED_AFTER_CHECKOUT
    assert money(f"{order_id}-payment")["refunds"] == 1


def test_a_cancel_sent_while_the_checkout_runs_waits_and_then_cancels_it(podium_env: PodiumEnv) -> None:
    order_id, sku, body = limited_order(podium_env, customer_id=new_key("slow"))  # the charge takes 3 s
    podium_env.send(f"/ShopOrder/{order_id}/Place", body)
    assert_eventually(
        lambda: podium_env.post(f"/ShopOrder/{order_id}/GetStatus").status_code == 200, message="the order"
    )
    response = cancel(podium_env, order_id)
    assert response.status_code == 200, response.text
    assert response.json()["events"] == CANCELLED_AFTER_CHECKOUT
    assert money(f"{order_id}-payment")["net"] == 0
    assert stock(podium_env, sku)["available"] == 6


def test_an_order_the_carrier_has_cannot_be_cancelled(podium_env: PodiumEnv) -> None:
    order_id, sku, body = limited_order(podium_env)
    place(podium_env, order_id, body)
    podium_env.call(f"/ShopShipping/{order_id}/UpdateTracking", {"updateId": "scan-1", "status": "picked_up"})
    before = recorded(podium_env, order_id, len(HAPPY) + 1)

    refused = cancel(podium_env, order_id)
    assert refused.status_code == 409
    assert "cannot be cancelled: the carrier already has it" in refused.json()["message"]
    podium_env.call(f"/ShopShipping/{order_id}/ConfirmDelivery", {"signedBy": "A. Customer"})
    delivered = cancel(podium_env, order_id)
    assert delivered.status_code == 409
    assert "cannot be cancelled" in delivered.json()["message"]

    assert [e["type"] for e in recorded(podium_env, order_id, len(before) + 1)] == [
        *[e["type"] for e in before],
        "OrderDelivered",
    ]
    assert money(f"{order_id}-payment")["refunds"] == 0
    assert stock(podium_env, sku)["available"] == 4


def test_cancelling_a_cancelled_or_unknown_order(podium_env: PodiumEnv) -> None:
    order_id = new_key("order")
    body = order_body(items=[{"sku": new_key("SOLDOUT"), "quantity": 1, "unitPrice": 5.0}])
    cancelled = place(podium_env, order_id, body)
    assert cancelled["status"] == "cancelled"
    assert cancel(podium_env, order_id).json() == cancelled
    missing = cancel(podium_env, new_key("order"))
    assert missing.status_code == 404


def test_partial_refunds_add_up_and_the_cancel_gives_back_the_rest(podium_env: PodiumEnv) -> None:
    order_id, sku, body = limited_order(podium_env)
    place(podium_env, order_id, body)
    operator = {SUBJECT_HEADER: "ops-bob"}

    def refund(refund_id: str, amount: float) -> Any:
        request = {"refundId": refund_id, "amount": amount, "reason": "damaged box"}
        return podium_env.post(f"/ShopOrder/{order_id}/Refund", request, headers=operator)

    first = refund("r-1", 10.0)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["refunded"]) == ("completed", 10.0)
    assert refund("r-1", 10.0).json()["refunded"] == 10.0  # the same refund id again: nothing more
    too_much = refund("r-2", 15.01)
    assert too_much.status_code == 409
    assert "amount: 15.01 is more than the 15.00 left to refund" in too_much.json()["message"]
    bad = refund("r-3", 0)
    assert bad.status_code == 400
    assert "amount" in bad.json()["message"]
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 1, "net": 1500, "requests": 1}

    result = cancel(podium_env, order_id).json()
    assert (result["status"], result["charged"], result["refunded"]) == ("cancelled", 25.0, 25.0)
    assert money(f"{order_id}-payment") == {"charges": 1, "refunds": 2, "net": 0, "requests": 1}
    stream = events(podium_env, order_id)
    refunds = [e for e in stream if e["type"] == "PaymentRefunded"]
    assert [(e["actor"], e["data"]["amount"]) for e in refunds] == [("ops-bob", 10.0), ("ShopOrder", 15.0)]
    assert stock(podium_env, sku)["available"] == 6


def test_the_state_from_the_snapshot_equals_the_full_replay(podium_env: PodiumEnv) -> None:
    order_id, _, body = limited_order(podium_env)
    place(podium_env, order_id, body)
    for n in range(1, 6):  # 5 + 5 events: past the first snapshot
        scan = {"updateId": f"scan-{n}", "status": "in_transit", "location": f"hub {n}"}
        podium_env.call(f"/ShopShipping/{order_id}/UpdateTracking", scan)
    stream = [Event.model_validate(e) for e in recorded(podium_env, order_id, 10)]
    assert len(stream) == 10 > SNAPSHOT_EVERY

    full = fold(stream)
    from_snapshot = fold(stream[SNAPSHOT_EVERY:], fold(stream[:SNAPSHOT_EVERY]))
    assert from_snapshot == full
    status = podium_env.call(f"/ShopOrder/{order_id}/GetStatus")  # loaded from the snapshot and its tail
    assert (status["version"], status["phase"], status["updatedAt"]) == (10, "completed", full.updated_at)
    summary = view(podium_env, order_id)
    assert [t["location"] for t in summary["tracking"]] == [f"hub {n}" for n in range(1, 6)]
    assert podium_env.call(f"/ShopOrder/{order_id}/Replay")["version"] == 10


def test_a_checkout_past_its_deadline_compensates_and_says_why(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "SETTINGS", ShopSettings(checkout_deadline=timedelta(seconds=2)))
    order_id, sku, body = limited_order(podium_env, customer_id=new_key("slow"))  # the charge takes 3 s
    result = place(podium_env, order_id, body)

    assert result["status"] == "cancelled"
    assert "checkout timed out after 0:00:02 during" in result["reason"]  # the charge, on a calm machine
    assert result["events"][-1] == "OrderCancelled"
    # The charge the gateway made after the deadline is found by its key and refunded (or voided).
    assert_eventually(
        lambda: money(f"{order_id}-payment")["net"] == 0 and stuck(podium_env, order_id) == [],
        timeout=20,
        message="the late charge to be refunded",
    )
    assert stock(podium_env, sku)["available"] == 6


def test_a_label_the_carrier_made_after_the_deadline_is_voided(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "SETTINGS", ShopSettings(checkout_deadline=timedelta(seconds=2)))
    carriers = CarrierProvider()
    # podium-post makes the label at once and answers 4 s later: after the checkout gave up.
    carriers.slow_down("podium-post", by=timedelta(seconds=4), lasting=timedelta(seconds=60))
    try:
        order_id, sku, body = limited_order(podium_env)
        result = place(podium_env, order_id, body)
        assert result["status"] == "cancelled"
        assert "during create-shipment" in result["reason"]
        assert "ShipmentCreated" not in result["events"]
        label = label_key(order_id, "podium-post")
        assert_eventually(
            lambda: (
                (carriers.label(label) or {}).get("status") == "voided" and stuck(podium_env, order_id) == []
            ),
            timeout=30,
            message="the late label to be voided",
        )
    finally:
        carriers.restore("podium-post")
    # The cancelled CreateShipment never recorded the label; the carrier's record is the truth.
    assert podium_env.post_private(f"/ShopShipping/{order_id}/Get").status_code == 404
    assert [e["key"] for e in carriers.effects(kind="void")].count(label) == 1  # voided once
    fallback = carriers.label(label_key(order_id, "podium-global"))
    assert (fallback or {}).get("status") == "voided"  # never made, and now never can be
    assert money(f"{order_id}-payment")["net"] == 0
    assert stock(podium_env, sku)["available"] == 6


def test_orders_racing_for_the_last_units_never_oversell(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-8")
    order_ids = [new_key("order") for _ in range(20)]

    def buy(order_id: str) -> str:
        body = order_body(items=[{"sku": sku, "quantity": 1, "unitPrice": 4.0}])
        status: str = place(podium_env, order_id, body)["status"]
        return status

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(buy, order_ids))

    assert sorted(outcomes) == ["cancelled"] * 12 + ["completed"] * 8
    level = stock(podium_env, sku)
    assert (level["available"], level["reserved"]) == (0, 8)
    for order_id, outcome in zip(order_ids, outcomes, strict=True):
        charges = money(f"{order_id}-payment")["charges"]
        assert charges == (1 if outcome == "completed" else 0)
