"""The shared PaymentService: one payment per id, refunds that add up, payouts."""

from __future__ import annotations

import pytest

from podium.testing import PodiumEnv, new_key
from services.common.providers import PaymentGateway

pytestmark = pytest.mark.engine


def test_a_payment_id_cannot_be_reused_for_another_charge(podium_env: PodiumEnv) -> None:
    payment_id, customer = new_key("pay"), new_key("cust")
    first = podium_env.call(f"/PaymentService/{payment_id}/Charge", {"customerId": customer, "amount": 10})
    again = podium_env.call(f"/PaymentService/{payment_id}/Charge", {"customerId": customer, "amount": 10})
    assert again == first
    other = podium_env.post(
        f"/PaymentService/{payment_id}/Charge",
        {"customerId": customer, "amount": 10, "description": "another"},
    )
    assert other.status_code == 409
    assert "already used for a different charge" in other.json()["message"]
    assert PaymentGateway().requests(payment_id) == 1


def test_partial_refunds_add_up_and_never_exceed_the_charge(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    charged = podium_env.call(f"/PaymentService/{payment_id}/Charge", {"customerId": "c", "amount": 30})
    assert podium_env.post(f"/PaymentService/{payment_id}/Refund", {"amount": 0.001}).status_code == 400
    assert (
        podium_env.call(f"/PaymentService/{payment_id}/Refund", {"amount": 10})["status"]
        == "partially_refunded"
    )
    assert podium_env.call(f"/PaymentService/{payment_id}/Refund", {"amount": 10})["refunded"] == 20
    too_much = podium_env.post(f"/PaymentService/{payment_id}/Refund", {"amount": 10.01})
    assert too_much.status_code == 409
    assert podium_env.call(f"/PaymentService/{payment_id}/Refund", {})["status"] == "refunded"
    assert PaymentGateway().balance_cents(charged["chargeId"]) == 0


def test_a_refund_before_the_charge_voids_the_id(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    assert podium_env.call(f"/PaymentService/{payment_id}/Refund", {})["status"] == "voided"
    late = podium_env.post(f"/PaymentService/{payment_id}/Charge", {"customerId": "c", "amount": 5})
    assert late.status_code == 409
    assert PaymentGateway().requests(payment_id) == 0


def test_a_payout_is_sent_once(podium_env: PodiumEnv) -> None:
    payment_id = new_key("payout")
    body = {"customerId": "c", "amount": 99.5, "description": "claim"}
    first = podium_env.call(f"/PaymentService/{payment_id}/Payout", body)
    assert first["status"] == "paid_out"
    assert podium_env.call(f"/PaymentService/{payment_id}/Payout", body) == first
    sent = [e for e in PaymentGateway().effects(kind="payout") if e["key"] == payment_id]
    assert [e["amountCents"] for e in sent] == [9950]
    refused = podium_env.post(
        f"/PaymentService/{new_key('payout')}/Payout", {**body, "customerId": "declined-x"}
    )
    assert refused.status_code == 402
