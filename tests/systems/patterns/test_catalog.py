"""Seed 002's pattern catalog: each pattern runs, and fails the way the text says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.patterns import settings
from services.patterns.settings import PatternsSettings

pytestmark = pytest.mark.engine


# Pattern 1
def test_fan_out_validation_passes_a_good_user(podium_env: PodiumEnv) -> None:
    user = new_key("user")
    assert podium_env.call("/PatternCatalog/ValidateUser", {"userId": user}) == {
        "userId": user,
        "valid": True,
    }


@pytest.mark.parametrize(
    ("prefix", "check"),
    [("unverified", "email verified"), ("nokyc", "KYC completed"), ("blacklisted", "not blacklisted")],
)
def test_fan_out_validation_names_the_failed_check(podium_env: PodiumEnv, prefix: str, check: str) -> None:
    response = podium_env.post("/PatternCatalog/ValidateUser", {"userId": new_key(prefix)})
    assert response.status_code == 400
    assert response.json()["message"] == f"validation check failed: {check}"


# Pattern 2
def test_enrichment_uses_partial_data(podium_env: PodiumEnv) -> None:
    full = podium_env.call("/PatternCatalog/EnrichProduct", {"productId": "p1"})
    assert full["missing"] == []
    assert full["reviews"] == {"rating": 4.5, "count": 128}
    partial = podium_env.call("/PatternCatalog/EnrichProduct", {"productId": "p2-noreviews"})
    assert partial["missing"] == ["reviews"]
    assert partial["reviews"] is None
    assert partial["pricing"] == {"price": 19.99, "discount": 0.1}
    assert partial["recommendations"] == ["p2-noreviews-accessory", "p2-noreviews-refill"]


# Pattern 3
def test_batch_processes_every_user_in_order(podium_env: PodiumEnv) -> None:
    users = [new_key("u") for _ in range(25)]
    summary = podium_env.call("/PatternCatalog/ProcessUsers", {"userIds": users, "maxConcurrency": 4})
    assert summary["processed"] == 25
    assert [r["userId"] for r in summary["results"]] == users


def test_batch_stops_at_the_first_failure(podium_env: PodiumEnv) -> None:
    users = [new_key("u"), new_key("broken"), new_key("u")]
    response = podium_env.post("/PatternCatalog/ProcessUsers", {"userIds": users, "maxConcurrency": 1})
    assert response.status_code == 422
    assert "cannot be processed" in response.json()["message"]


# Pattern 4
@pytest.mark.parametrize(("query", "source"), [("q1", "cache"), ("cold:q2", "primary")])
def test_racing_takes_the_fastest_source(podium_env: PodiumEnv, query: str, source: str) -> None:
    data = podium_env.call("/PatternCatalog/FetchData", {"query": query, "timeoutMs": 5_000})
    assert data["source"] == source
    assert data["rows"] == [f"{query}#1", f"{query}#2"]


def test_racing_times_out(podium_env: PodiumEnv) -> None:
    response = podium_env.post("/PatternCatalog/FetchData", {"query": "slowdb:q3", "timeoutMs": 300})
    assert response.status_code == 504
    assert "no source answered within 300 ms" in response.json()["message"]


# Pattern 5
def test_approval_is_approved_or_escalates_on_timeout(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key("req")
    podium_env.send(f"/ApprovalWorkflow/{key}/Run", {"requestId": key, "amount": 250.0})
    waiting = assert_eventually(
        lambda: (
            (s := podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus"))["phase"] == "awaiting-approval" and s
        )
    )
    assert waiting["metadata"] == {"amount": 250.0, "deadlineMs": 24 * 3600 * 1000}  # the seed's 24 h
    podium_env.call(f"/ApprovalWorkflow/{key}/Approve", {"by": "dana"})  # the ingress is a trusted door
    done = assert_eventually(
        lambda: (s := podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus"))["isComplete"] and s
    )
    assert done["phase"] == "approved"

    monkeypatch.setattr(settings, "SETTINGS", PatternsSettings(approval_deadline=timedelta(milliseconds=300)))
    late = new_key("req")
    answer = podium_env.call(f"/ApprovalWorkflow/{late}/Run", {"requestId": late, "amount": 10.0})
    assert answer == {"requestId": late, "outcome": "escalated", "by": None}


def test_the_approval_deadline_is_the_deployments_not_the_callers(podium_env: PodiumEnv) -> None:
    key = new_key("req")
    # A client asking for a 300 ms deadline gets the deployment's setting (24 h) instead.
    podium_env.send(f"/ApprovalWorkflow/{key}/Run", {"requestId": key, "amount": 5, "timeoutMs": 300})
    waiting = assert_eventually(
        lambda: (
            (s := podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus"))["phase"] == "awaiting-approval" and s
        )
    )
    assert waiting["metadata"]["deadlineMs"] == 24 * 3600 * 1000
    podium_env.call(f"/ApprovalWorkflow/{key}/Reject", {"comment": "no"})
    assert_eventually(lambda: podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus")["phase"] == "rejected")


def test_the_decider_is_the_verified_subject_not_the_body(podium_env: PodiumEnv) -> None:
    key = new_key("req")
    podium_env.send(f"/ApprovalWorkflow/{key}/Run", {"requestId": key, "amount": 99.99})
    decision = podium_env.post(
        f"/ApprovalWorkflow/{key}/Approve",
        {"by": "mallory", "comment": "looks fine"},
        headers={SUBJECT_HEADER: "alice"},  # what the gateway sets from alice's token
    )
    assert decision.status_code == 200, decision.text
    result = podium_env.client.get(f"/restate/workflow/ApprovalWorkflow/{key}/attach")
    assert result.json() == {"requestId": key, "outcome": "approved", "by": "alice"}


@pytest.mark.parametrize("amount", [0.001, 5e-324, 1e10, 0, "lots"])
def test_approval_money_outside_the_amount_rule_is_a_400(podium_env: PodiumEnv, amount: Any) -> None:
    key = new_key("req")
    response = podium_env.post(f"/ApprovalWorkflow/{key}/Run", {"requestId": key, "amount": amount})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("invalid request: amount:")
    assert podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus")["phase"] == "pending"  # never waited


# Pattern 6
def test_saga_with_partial_compensation(podium_env: PodiumEnv) -> None:
    account = new_key("acct")
    ok = podium_env.call(
        "/PatternCatalog/ComplexTransaction", {"id": new_key("tx"), "accountId": account, "amount": 100}
    )
    assert (ok["status"], ok["balance"]) == ("completed", 900.0)
    failed = podium_env.call(
        "/PatternCatalog/ComplexTransaction",
        {"id": new_key("tx"), "accountId": account, "amount": 50, "failAnalytics": True},
    )
    assert failed["status"] == "rolled_back"
    assert "compensated: debit-account" in failed["reason"]  # the failed analytics step is not compensated
    assert failed["balance"] == 900.0
    cents = podium_env.call(
        "/PatternCatalog/ComplexTransaction", {"id": new_key("tx"), "accountId": account, "amount": 0.1}
    )
    assert cents["balance"] == 899.9  # summed in cents, never 899.9000000000001


@pytest.mark.parametrize("amount", [0.001, 5e-324, 1e10, -5, "lots"])
def test_transaction_money_outside_the_amount_rule_is_a_400(podium_env: PodiumEnv, amount: Any) -> None:
    account = new_key("acct")
    body = {"id": new_key("tx"), "accountId": account, "amount": amount}
    response = podium_env.post("/PatternCatalog/ComplexTransaction", body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("invalid request: amount:")
    assert podium_env.call_private(f"/DemoAccount/{account}/Balance") == 1_000.0


def test_the_ingress_refuses_the_demo_account_and_nothing_changes(podium_env: PodiumEnv) -> None:
    account = new_key("acct")
    podium_env.call(
        "/PatternCatalog/ComplexTransaction", {"id": new_key("tx"), "accountId": account, "amount": 100}
    )
    before = podium_env.call_private(f"/DemoAccount/{account}/Balance")
    for path, body in [
        (f"/DemoAccount/{account}/Credit", {"txId": new_key("tx"), "amount": 1_000_000}),
        (f"/DemoAccount/{account}/Debit", {"txId": new_key("tx"), "amount": 900}),
        (f"/DemoAccount/{account}/Balance", None),
        ("/Analytics/Remove", {"id": "tx", "accountId": account, "amount": 1}),
        ("/UserDirectory/KycCompleted", {"userId": "u"}),
        ("/DataStores/Primary", {"query": "q"}),
    ]:
        podium_env.assert_private(path, body)
    assert before == 900.0
    assert podium_env.call_private(f"/DemoAccount/{account}/Balance") == before


# Pattern 7
def test_status_tracking_while_running_and_on_failure(podium_env: PodiumEnv) -> None:
    key = new_key("job")
    podium_env.send(f"/DataProcessingWorkflow/{key}/Run", {"jobId": key, "stageMs": 300})

    def status() -> dict[str, Any]:
        answer: dict[str, Any] = podium_env.call(f"/DataProcessingWorkflow/{key}/GetStatus")
        return answer

    middle = assert_eventually(lambda: (s := status())["phase"] == "transform" and s)
    assert middle["progress"] == 0.4
    assert middle["completedSteps"] == ["download", "validate"]
    assert middle["isComplete"] is False
    done = assert_eventually(lambda: (s := status())["isComplete"] and s, timeout=30)
    assert done["phase"] == "completed"
    assert [h["phase"] for h in done["history"]] == [
        "download",
        "validate",
        "transform",
        "upload",
        "notify",
        "completed",
    ]

    failing = new_key("job")
    podium_env.send(
        f"/DataProcessingWorkflow/{failing}/Run", {"jobId": failing, "stageMs": 10, "failAt": "upload"}
    )
    end = assert_eventually(
        lambda: (s := podium_env.call(f"/DataProcessingWorkflow/{failing}/GetStatus"))["isComplete"] and s
    )
    assert end["phase"] == "failed"
    assert end["error"] == "upload failed"
    assert end["metadata"] == {"error": "upload failed", "stage": "upload"}
    assert end["progress"] == 0.6
