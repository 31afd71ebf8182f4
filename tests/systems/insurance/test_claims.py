"""The insurance-claim saga (seed 003 ex 5) against a real engine: every path, idempotency, bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, new_key
from tests.systems.insurance.conftest import (
    claim,
    configure,
    file_claim,
    filed,
    letters,
    outcome,
    payouts,
    records_file,
    status,
    wait_phase,
)

pytestmark = pytest.mark.engine


def assert_nothing_paid(claim_id: str) -> None:
    charged, requests = payouts(claim_id)
    assert charged == []
    assert requests == 0


def deliver(env: PodiumEnv, claim_id: str, records: dict[str, Any]) -> dict[str, Any]:
    """Play the records provider: wait for the request to be filed, then call the webhook."""
    filed(env, claim_id)
    answer: dict[str, Any] = env.call(f"/MedicalRecordsService/{claim_id}/Deliver", records)
    return answer


# -- success ---------------------------------------------------------------------------------------------


def test_an_approved_claim_is_paid_once_and_closed(podium_env: PodiumEnv) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    waiting = wait_phase(podium_env, claim_id, "awaiting_approval")
    assert waiting["isComplete"] is False
    assert waiting["completedSteps"] == ["validate", "records"]
    assert waiting["metadata"]["approvalDeadline"].endswith("Z")
    assert waiting["result"] is None
    assert payouts(claim_id) == ([], 0)  # nothing is paid before the adjuster decides

    decided = podium_env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann", "comment": "ok"})
    assert decided["outcome"] == "approved"
    result = outcome(podium_env, claim_id)
    assert result["status"] == "paid"
    assert result["reason"] is None
    assert result["stage"] == "payment"
    assert result["paymentId"] == f"{claim_id}-payment"
    assert result["approval"] == {"approved": True, "by": "adjuster-ann", "comment": "ok"}
    assert result["records"]["covered"] is True
    assert result["records"]["provider"] == "auto"
    assert result["needsManualReview"] is False
    assert result["letterSent"] is True

    charged, requests = payouts(claim_id)
    assert [c["amountCents"] for c in charged] == [125_000]
    assert requests == 1
    sent = letters(claim_id)
    assert len(sent) == 1
    assert sent[0]["subject"] == f"Your claim {claim_id}: paid"
    assert sent[0]["body"] == f"Claim {claim_id} (1250.00) is closed: paid."

    final = status(podium_env, claim_id)
    assert final["phase"] == "paid"
    assert final["isComplete"] is True
    assert final["progress"] == 1.0
    assert final["error"] is None
    assert final["completedSteps"] == ["validate", "records", "approval", "payment"]
    assert [h["phase"] for h in final["history"]] == [
        "validating",
        "awaiting_records",
        "awaiting_approval",
        "paying",
        "closing",
        "paid",
    ]
    assert final["result"] == result
    assert filed(podium_env, claim_id)["status"] == "delivered"


def test_the_seeds_approve_body_and_a_records_provider_played_by_hand(podium_env: PodiumEnv) -> None:
    body = claim("POL-3001", amount=980.5)
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    file = filed(podium_env, claim_id)
    assert file["status"] == "requested"
    assert file["callbackId"]
    assert status(podium_env, claim_id)["phase"] == "awaiting_records"

    records = {"covered": True, "findings": "fracture treated 2025-03-14", "provider": "st-mary"}
    delivered = deliver(podium_env, claim_id, records)
    assert delivered["status"] == "delivered"
    assert delivered["records"] == records
    # The provider's webhook may fire twice: the same records are accepted again, different ones refused.
    assert podium_env.call(f"/MedicalRecordsService/{claim_id}/Deliver", records)["status"] == "delivered"
    changed = podium_env.post(f"/MedicalRecordsService/{claim_id}/Deliver", {**records, "covered": False})
    assert changed.status_code == 409
    assert "already delivered" in changed.json()["message"]

    wait_phase(podium_env, claim_id, "awaiting_approval")
    assert podium_env.call(f"/ClaimSaga/{claim_id}/Approve", {"approved": True})["outcome"] == "approved"
    result = outcome(podium_env, claim_id)
    assert result["status"] == "paid"
    assert result["records"] == records
    charged, _ = payouts(claim_id)
    assert [c["amountCents"] for c in charged] == [98_050]


# -- rejections ------------------------------------------------------------------------------------------


def in_two_days() -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("overrides", "reason", "letter"),
    [
        ({"policyId": "POL-9999"}, "policy POL-9999 does not exist", False),
        ({"customerId": "cust-mallory"}, "policy POL-1001 does not belong to customer cust-mallory", False),
        (
            {"policyId": "POL-1002", "customerId": "cust-bob", "amount": 2000.01},
            "amount 2000.01 exceeds the coverage limit 2000.00 of policy POL-1002",
            True,
        ),
        (
            {"policyId": "POL-1003", "customerId": "cust-carol"},
            "incident date 2025-03-14 is outside the cover of policy POL-1003 (2019-01-01 to 2022-12-31)",
            True,
        ),
        ({"incidentDate": "FUTURE"}, "is after the filing date", True),
    ],
    ids=["unknown-policy", "not-the-holder", "over-the-limit", "expired-policy", "future-incident"],
)
def test_an_invalid_claim_is_rejected_before_anything_happens(
    podium_env: PodiumEnv, overrides: dict[str, Any], reason: str, letter: bool
) -> None:
    if overrides.get("incidentDate") == "FUTURE":
        overrides = {**overrides, "incidentDate": in_two_days()}
    body = claim(**overrides)
    claim_id = body["claimId"]
    result = podium_env.call(f"/ClaimSaga/{claim_id}/Run", body)  # the seed's synchronous call
    assert result["status"] == "rejected_invalid"
    assert reason in result["reason"]
    assert result["stage"] == "validation"
    assert result["paymentId"] is None
    assert result["letterSent"] is letter
    assert len(letters(claim_id)) == (1 if letter else 0)
    assert records_file(podium_env, claim_id) is None  # no records were requested
    assert_nothing_paid(claim_id)
    final = status(podium_env, claim_id)
    assert final["phase"] == "rejected_invalid"
    assert final["isComplete"] is True
    assert final["error"] is None
    assert final["metadata"]["reason"] == result["reason"]


def test_records_that_do_not_support_the_claim_reject_it(podium_env: PodiumEnv) -> None:
    body = claim("POL-2001")
    result = podium_env.call(f"/ClaimSaga/{body['claimId']}/Run", body)
    assert result["status"] == "rejected"
    assert result["stage"] == "records"
    assert result["reason"] == (
        "medical records do not support the claim: pre-existing condition diagnosed before the policy started"
    )
    assert result["records"]["covered"] is False
    assert result["approval"] is None
    assert_nothing_paid(body["claimId"])
    assert [h["phase"] for h in status(podium_env, body["claimId"])["history"]] == [
        "validating",
        "awaiting_records",
        "closing",
        "rejected",
    ]


def test_records_delivered_by_hand_that_do_not_support_the_claim_reject_it(podium_env: PodiumEnv) -> None:
    body = claim("POL-3001")
    file_claim(podium_env, body)
    deliver(podium_env, body["claimId"], {"covered": False, "findings": "cosmetic surgery"})
    result = outcome(podium_env, body["claimId"])
    assert (result["status"], result["stage"]) == ("rejected", "records")
    assert result["reason"] == "medical records do not support the claim: cosmetic surgery"
    assert_nothing_paid(body["claimId"])


def test_records_that_never_arrive_time_out_and_a_late_delivery_is_refused(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, records_deadline=dt.timedelta(milliseconds=500))
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    result = outcome(podium_env, claim_id)
    assert result["status"] == "timeout"
    assert result["stage"] == "records"
    assert result["reason"] == "medical records were not received within 500 ms"
    assert filed(podium_env, claim_id)["status"] == "withdrawn"
    late = podium_env.post(f"/MedicalRecordsService/{claim_id}/Deliver", {"covered": True})
    assert late.status_code == 409
    assert "withdrawn" in late.json()["message"]
    assert_nothing_paid(claim_id)
    final = status(podium_env, claim_id)
    assert (final["phase"], final["isComplete"], final["error"]) == ("timeout", True, result["reason"])


def test_a_records_provider_error_fails_the_claim_cleanly(podium_env: PodiumEnv) -> None:
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    file = filed(podium_env, claim_id)
    response = podium_env.client.post(
        f"/restate/awakeables/{file['callbackId']}/reject",
        content=b"archive unavailable",
        headers={"content-type": "text/plain"},
    )
    assert response.is_success, response.text
    result = outcome(podium_env, claim_id)
    assert result["status"] == "failed"
    assert result["stage"] == "records"
    assert "the medical records provider reported an error: archive unavailable" in result["reason"]
    assert_nothing_paid(claim_id)


@pytest.mark.parametrize(
    ("handler", "decision"),
    [
        ("Reject", {"by": "adjuster-bo", "comment": "not an accident"}),
        ("Approve", {"approved": False, "by": "adjuster-bo", "comment": "not an accident"}),
    ],
)
def test_the_adjuster_rejects(podium_env: PodiumEnv, handler: str, decision: dict[str, Any]) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    wait_phase(podium_env, claim_id, "awaiting_approval")
    assert podium_env.call(f"/ClaimSaga/{claim_id}/{handler}", decision)["outcome"] == "rejected"
    result = outcome(podium_env, claim_id)
    assert result["status"] == "rejected"
    assert result["stage"] == "approval"
    assert result["reason"] == "rejected by adjuster-bo: not an accident"
    assert result["approval"] == {"approved": False, "by": "adjuster-bo", "comment": "not an accident"}
    assert_nothing_paid(claim_id)
    assert letters(claim_id)[0]["subject"] == f"Your claim {claim_id}: rejected"
    again = podium_env.post(f"/ClaimSaga/{claim_id}/Approve", {})
    assert again.status_code == 409
    assert "already decided: rejected" in again.json()["message"]


def test_no_decision_before_the_deadline_times_out(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, approval_deadline=dt.timedelta(milliseconds=700))
    body = claim()
    claim_id = body["claimId"]
    result = podium_env.call(f"/ClaimSaga/{claim_id}/Run", body)
    assert result["status"] == "timeout"
    assert result["stage"] == "approval"
    assert result["reason"] == "no adjuster decided within 700 ms"
    assert result["approval"] is None
    assert_nothing_paid(claim_id)
    final = status(podium_env, claim_id)
    assert final["phase"] == "timeout"
    assert final["error"] == result["reason"]
    assert final["updatedAt"] >= final["metadata"]["approvalDeadline"]


def test_a_declined_payout_after_approval_is_reported_for_manual_review(podium_env: PodiumEnv) -> None:
    body = claim("POL-4001")
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    wait_phase(podium_env, claim_id, "awaiting_approval")
    podium_env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    result = outcome(podium_env, claim_id)
    assert result["status"] == "payment_failed"
    assert result["stage"] == "payment"
    assert result["needsManualReview"] is True
    assert result["approval"]["approved"] is True  # the approval stands: it cannot be withdrawn
    assert result["paymentId"] == f"{claim_id}-payment"
    assert f"the claim was approved but the payout {claim_id}-payment failed" in result["reason"]
    assert "the account of customer declined-frank refused the payout" in result["reason"]
    assert "needs manual review" in result["reason"]
    charged, requests = payouts(claim_id)
    assert charged == []  # no money moved
    assert requests == 1  # asked once; the decline is final
    payment = podium_env.call_private(f"/PaymentService/{claim_id}-payment/Get")
    assert payment["status"] == "refused"
    final = status(podium_env, claim_id)
    assert (final["phase"], final["isComplete"]) == ("payment_failed", True)
    assert final["error"] == result["reason"]


def test_cancelling_a_waiting_claim_closes_it_cleanly(podium_env: PodiumEnv) -> None:
    body = claim()
    claim_id = body["claimId"]
    invocation = file_claim(podium_env, body)
    wait_phase(podium_env, claim_id, "awaiting_approval")
    podium_env.cancel(invocation)
    result = outcome(podium_env, claim_id)
    assert result["status"] == "cancelled"
    assert result["reason"] == "cancelled by an operator while at approval"
    assert_nothing_paid(claim_id)


# -- idempotency -----------------------------------------------------------------------------------------


def test_a_second_approval_is_refused_and_the_claim_is_paid_once(podium_env: PodiumEnv) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    wait_phase(podium_env, claim_id, "awaiting_approval")
    podium_env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    for handler, decision in (("Approve", {"by": "adjuster-cy"}), ("Reject", {})):
        again = podium_env.post(f"/ClaimSaga/{claim_id}/{handler}", decision)
        assert again.status_code == 409
        assert "already decided: approved" in again.json()["message"]
    result = outcome(podium_env, claim_id)
    assert result["status"] == "paid"
    assert result["approval"]["by"] == "adjuster-ann"
    charged, requests = payouts(claim_id)
    assert len(charged) == 1
    assert requests == 1
    assert len(letters(claim_id)) == 1


def test_a_repeated_run_is_refused_and_the_first_result_stays_readable(podium_env: PodiumEnv) -> None:
    body = claim("POL-2001")
    claim_id = body["claimId"]
    first = podium_env.call(f"/ClaimSaga/{claim_id}/Run", body)
    again = podium_env.post(f"/ClaimSaga/{claim_id}/Run", body)
    assert again.status_code == 409
    assert again.json()["message"] == "the workflow method was already invoked"
    assert podium_env.client.get(f"/restate/workflow/ClaimSaga/{claim_id}/output").json() == first
    assert podium_env.client.get(f"/restate/workflow/ClaimSaga/{claim_id}/attach").json() == first
    assert status(podium_env, claim_id)["result"] == first
    assert len(letters(claim_id)) == 1


def test_get_status_of_an_unknown_claim_is_pending(podium_env: PodiumEnv) -> None:
    answer = status(podium_env, new_key("claim"))
    assert (answer["phase"], answer["isComplete"], answer["result"]) == ("pending", False, None)


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": None}, "amount: field required"),
        ({"amount": -5}, "amount: Input should be greater than 0"),
        ({"amount": 10.005}, "amount: at most two decimals"),
        ({"amount": 5e-324}, "amount: at most two decimals"),
        ({"amount": 1_000_000.01}, "amount: Input should be less than or equal to 1000000"),
        ({"incidentDate": "14/03/2025"}, "incidentDate: Input should be a valid date"),
        ({"policyId": ""}, "policyId: String should have at least 1 character"),
        (
            {"description": None, "customerId": None},
            "customerId: field required; description: field required",
        ),
        ({"claimId": "other-claim"}, "claimId: 'other-claim' must equal the key"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    podium_env: PodiumEnv, change: dict[str, Any], message: str
) -> None:
    body = claim()
    key = body["claimId"]
    for field, value in change.items():
        if value is None:
            del body[field]
        else:
            body[field] = value
    response = podium_env.post(f"/ClaimSaga/{key}/Run", body)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert records_file(podium_env, key) is None
    assert_nothing_paid(key)


def test_a_malformed_body_is_a_400(podium_env: PodiumEnv) -> None:
    key = new_key("claim")
    response = podium_env.post(
        f"/ClaimSaga/{key}/Run", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_a_refused_run_uses_up_its_claim_id(podium_env: PodiumEnv) -> None:
    """The engine runs a workflow once per key, even one that failed validation: use a new claim id."""
    body = claim()
    assert podium_env.post(f"/ClaimSaga/{body['claimId']}/Run", {**body, "amount": 0}).status_code == 400
    assert podium_env.post(f"/ClaimSaga/{body['claimId']}/Run", body).status_code == 409
    fixed = {**body, "claimId": new_key("claim"), "policyId": "POL-2001", "customerId": "cust-dan"}
    assert podium_env.call(f"/ClaimSaga/{fixed['claimId']}/Run", fixed)["status"] == "rejected"


# -- deadlines are the deployment's, not the claimant's ---------------------------------------------------


def test_a_claimant_cannot_shorten_the_deadlines(podium_env: PodiumEnv) -> None:
    """The old request fields are ignored: the claim waits the deployment's 30 days for the adjuster."""
    body = claim(approvalTimeoutMs=1, recordsTimeoutMs=1)
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    waiting = wait_phase(podium_env, claim_id, "awaiting_approval")
    asked = dt.datetime.fromisoformat(waiting["history"][-1]["at"])  # when it reached the adjuster
    deadline = dt.datetime.fromisoformat(waiting["metadata"]["approvalDeadline"])
    assert deadline - asked > dt.timedelta(days=29)
    assert filed(podium_env, claim_id)["status"] == "delivered"  # the records did not time out either
    podium_env.call(f"/ClaimSaga/{claim_id}/Reject", {"comment": "cleanup"})
    assert outcome(podium_env, claim_id)["status"] == "rejected"


# -- doors: private handlers, and who decided ---------------------------------------------------------------


def test_the_records_requests_cannot_be_changed_through_the_ingress(podium_env: PodiumEnv) -> None:
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    before = filed(podium_env, claim_id)
    assert before["status"] == "requested"

    podium_env.assert_private(f"/MedicalRecordsService/{claim_id}/Withdraw")
    forged = {
        "policyId": "POL-3001",
        "customerId": "cust-erin",
        "incidentDate": "2025-03-14",
        "description": "x",
        "callbackId": before["callbackId"],
    }
    other = new_key("claim")
    podium_env.assert_private(f"/MedicalRecordsService/{other}/Request", forged)
    podium_env.assert_private(f"/MedicalRecordsService/{claim_id}/Get")

    assert records_file(podium_env, claim_id) == before  # still waiting for the provider
    assert records_file(podium_env, other) is None  # nothing was filed
    assert status(podium_env, claim_id)["phase"] == "awaiting_records"
    deliver(podium_env, claim_id, {"covered": False, "findings": "cleanup"})
    assert outcome(podium_env, claim_id)["status"] == "rejected"


@pytest.mark.parametrize("handler", ["Approve", "Reject"])
def test_the_decision_is_recorded_as_the_verified_subject(podium_env: PodiumEnv, handler: str) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    wait_phase(podium_env, claim_id, "awaiting_approval")
    response = podium_env.post(
        f"/ClaimSaga/{claim_id}/{handler}",
        {"approved": False, "by": "adjuster-mallory", "comment": "not an accident"},
        headers={SUBJECT_HEADER: "adjuster-zoe"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["by"] == "adjuster-zoe"
    result = outcome(podium_env, claim_id)
    assert result["approval"] == {"approved": False, "by": "adjuster-zoe", "comment": "not an accident"}
    assert result["reason"] == "rejected by adjuster-zoe: not an accident"
    assert status(podium_env, claim_id)["metadata"]["reason"] == result["reason"]


def test_the_records_are_recorded_as_sent_by_the_verified_subject(podium_env: PodiumEnv) -> None:
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(podium_env, body)
    filed(podium_env, claim_id)
    records = {"covered": True, "findings": "fracture", "provider": "st-mallory"}
    response = podium_env.post(
        f"/MedicalRecordsService/{claim_id}/Deliver", records, headers={SUBJECT_HEADER: "st-mary-lab"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["records"]["provider"] == "st-mary-lab"
    wait_phase(podium_env, claim_id, "awaiting_approval")
    podium_env.call(f"/ClaimSaga/{claim_id}/Reject", {"comment": "cleanup"})
    assert outcome(podium_env, claim_id)["records"] == {**records, "provider": "st-mary-lab"}
