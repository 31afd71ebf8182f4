"""The shared PaymentService: one payment per id, refunds that add up, payouts, money by the shared rule.

Every handler of the common deployment is private, so the tests call them the way other services do,
from inside the engine (``call_private``), and prove that the ingress refuses them.
"""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from services.common.providers import PaymentGateway

pytestmark = pytest.mark.engine


def test_a_payment_id_cannot_be_reused_for_another_charge(podium_env: PodiumEnv) -> None:
    payment_id, customer = new_key("pay"), new_key("cust")
    body = {"customerId": customer, "amount": 10}
    first = podium_env.call_private(f"/PaymentService/{payment_id}/Charge", body)
    again = podium_env.call_private(f"/PaymentService/{payment_id}/Charge", body)
    assert again == first
    other = podium_env.post_private(
        f"/PaymentService/{payment_id}/Charge",
        {"customerId": customer, "amount": 10, "description": "another"},
    )
    assert other.status_code == 409
    assert "already used for a different charge" in other.json()["message"]
    assert PaymentGateway().requests(payment_id) == 1


def test_partial_refunds_add_up_and_never_exceed_the_charge(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    path = f"/PaymentService/{payment_id}"
    charged = podium_env.call_private(f"{path}/Charge", {"customerId": "c", "amount": 30})
    assert podium_env.post_private(f"{path}/Refund", {"amount": 0.001}).status_code == 400
    assert podium_env.call_private(f"{path}/Refund", {"amount": 10})["status"] == "partially_refunded"
    assert podium_env.call_private(f"{path}/Refund", {"amount": 10})["refunded"] == 20
    too_much = podium_env.post_private(f"{path}/Refund", {"amount": 10.01})
    assert too_much.status_code == 409
    assert podium_env.call_private(f"{path}/Refund", {})["status"] == "refunded"
    assert PaymentGateway().balance_cents(charged["chargeId"]) == 0


def test_a_refund_before_the_charge_voids_the_id(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    assert podium_env.call_private(f"/PaymentService/{payment_id}/Refund", {})["status"] == "voided"
    late = podium_env.post_private(f"/PaymentService/{payment_id}/Charge", {"customerId": "c", "amount": 5})
    assert late.status_code == 409
    assert PaymentGateway().requests(payment_id) == 0


def test_a_payout_is_sent_once(podium_env: PodiumEnv) -> None:
    payment_id = new_key("payout")
    body = {"customerId": "c", "amount": 99.5, "description": "claim"}
    first = podium_env.call_private(f"/PaymentService/{payment_id}/Payout", body)
    assert first["status"] == "paid_out"
    assert podium_env.call_private(f"/PaymentService/{payment_id}/Payout", body) == first
    sent = [e for e in PaymentGateway().effects(kind="payout") if e["key"] == payment_id]
    assert [e["amountCents"] for e in sent] == [9950]
    refused = podium_env.post_private(
        f"/PaymentService/{new_key('payout')}/Payout", {**body, "customerId": "declined-x"}
    )
    assert refused.status_code == 402


def test_amounts_travel_as_json_numbers_and_are_kept_in_exact_cents(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    path = f"/PaymentService/{payment_id}"
    charged = podium_env.call_private(f"{path}/Charge", {"customerId": "c", "amount": 19.99})
    assert charged["amount"] == 19.99
    assert [e["amountCents"] for e in PaymentGateway().effects(subject=charged["chargeId"])] == [1999]
    refunded = podium_env.call_private(f"{path}/Refund", {"amount": 0.07})
    assert (refunded["amount"], refunded["refunded"]) == (19.99, 0.07)
    assert PaymentGateway().balance_cents(charged["chargeId"]) == 1992


BAD_MONEY = [
    pytest.param(
        "Charge", {"customerId": "c", "amount": 0.001}, "at most two decimals", id="charge-tenth-cent"
    ),
    pytest.param(
        "Charge", {"customerId": "c", "amount": 5e-324}, "at most two decimals", id="charge-denormal"
    ),
    pytest.param("Charge", {"customerId": "c", "amount": 1e10}, "less than or equal to", id="charge-too-big"),
    pytest.param("Charge", {"customerId": "c", "amount": 0}, "greater than 0", id="charge-zero"),
    pytest.param("Charge", {"customerId": "c", "amount": "lots"}, "decimal", id="charge-not-a-number"),
    pytest.param(
        "Payout", {"customerId": "c", "amount": 12.345}, "at most two decimals", id="payout-tenth-cent"
    ),
    pytest.param("Payout", {"customerId": "c", "amount": -1}, "greater than 0", id="payout-negative"),
]


@pytest.mark.parametrize(("handler", "body", "problem"), BAD_MONEY)
def test_money_outside_the_amount_rule_is_a_400_naming_the_field(
    podium_env: PodiumEnv, handler: str, body: dict[str, Any], problem: str
) -> None:
    payment_id = new_key("pay")
    response = podium_env.post_private(f"/PaymentService/{payment_id}/{handler}", body)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "amount:" in message
    assert problem in message
    # Refused before the gateway heard of it, and nothing recorded: the id is still free.
    assert PaymentGateway().requests(payment_id) == 0
    assert podium_env.post_private(f"/PaymentService/{payment_id}/Get").status_code == 404


def test_a_fraud_check_takes_money_by_the_same_rule(podium_env: PodiumEnv) -> None:
    check = "/FraudService/Check"
    assert podium_env.call_private(check, {"userId": "u", "amount": 250}) is True
    assert podium_env.call_private(check, {"userId": "u", "amount": 10_000.01}) is False
    response = podium_env.post_private(check, {"userId": "u", "amount": 0.001})
    assert response.status_code == 400
    assert "amount:" in response.json()["message"]


def test_the_ingress_refuses_private_handlers_and_nothing_changes(podium_env: PodiumEnv) -> None:
    payment_id = new_key("pay")
    path = f"/PaymentService/{payment_id}"
    podium_env.call_private(f"{path}/Charge", {"customerId": "c", "amount": 40})
    before = podium_env.call_private(f"{path}/Get")

    for handler, body in [("Refund", {}), ("Charge", {"customerId": "c", "amount": 40}), ("Get", None)]:
        podium_env.assert_private(f"{path}/{handler}", body)
    fresh = new_key("pay")
    podium_env.assert_private(f"/PaymentService/{fresh}/Payout", {"customerId": "c", "amount": 40})

    assert podium_env.call_private(f"{path}/Get") == before
    assert PaymentGateway().balance_cents(before["chargeId"]) == 4000
    assert PaymentGateway().requests(payment_id) == 1
    assert PaymentGateway().requests(fresh) == 0
    assert podium_env.post_private(f"/PaymentService/{fresh}/Get").status_code == 404
