"""Seed 002's pattern catalog: each pattern runs, and fails the way the text says."""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key

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
def test_approval_is_approved_or_escalates_on_timeout(podium_env: PodiumEnv) -> None:
    key = new_key("req")
    podium_env.send(f"/ApprovalWorkflow/{key}/Run", {"requestId": key, "amount": 250.0, "timeoutMs": 60_000})
    assert_eventually(
        lambda: podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus")["phase"] == "awaiting-approval"
    )
    podium_env.call(f"/ApprovalWorkflow/{key}/Approve", {"by": "dana"})
    done = assert_eventually(
        lambda: (s := podium_env.call(f"/ApprovalWorkflow/{key}/GetStatus"))["isComplete"] and s
    )
    assert done["phase"] == "approved"

    late = new_key("req")
    answer = podium_env.call(
        f"/ApprovalWorkflow/{late}/Run", {"requestId": late, "amount": 10.0, "timeoutMs": 300}
    )
    assert answer == {"requestId": late, "outcome": "escalated", "by": None}


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
