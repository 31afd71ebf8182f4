"""The doors against a real engine: private handlers, who asked, signed requests, invalid values."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from podium.testing import PodiumEnv, new_key

pytestmark = pytest.mark.engine

SUBJECT = "x-podium-subject"


def invocations(env: PodiumEnv, service: str, key: str) -> list[dict[str, Any]]:
    """Every invocation the engine has (or had, within its retention) of ``service`` for ``key``."""
    return env.query(
        "SELECT id, target, status FROM sys_invocation "
        f"WHERE target_service_name = '{service}' AND target_service_key = '{key}'"
    )


# -- public and private ---------------------------------------------------------------------------------


def test_the_engine_sees_the_lab_handlers_as_declared(podium_env: PodiumEnv) -> None:
    seen: dict[str, tuple[bool, str | None]] = {}
    for service in (
        "LabPatterns",
        "LabSaga",
        "LabApproval",
        "LabDoors",
        "LabWorker",
        "LabEffects",
        "LabVault",
    ):
        answer = httpx.get(f"{podium_env.admin_url}/services/{service}", timeout=10).json()
        assert answer["metadata"] == {"podium.system": "lab"}
        for handler in answer["handlers"]:
            seen[f"{service}/{handler['name']}"] = (
                handler["public"],
                handler.get("metadata", {}).get("podium.access"),
            )
    public = {name: kind for name, (is_public, kind) in seen.items() if is_public}
    assert public == {
        "LabPatterns/FanOut": "write",
        "LabPatterns/FanOutFail": "write",
        "LabPatterns/Batch": "write",
        "LabPatterns/Race": "write",
        "LabPatterns/Timeout": "write",
        "LabPatterns/WaitAwakeable": "write",
        "LabSaga/Run": "write",
        "LabSaga/Log": "read",
        "LabApproval/Run": "write",
        "LabApproval/Status": "read",
        "LabApproval/Approve": "operator",
        "LabApproval/Reject": "operator",
        "LabDoors/Whoami": "read",
        "LabDoors/Deposit": "write",
        "LabDoors/Convert": "write",
    }
    private = {name for name, (is_public, _) in seen.items() if not is_public}
    assert {"LabWorker/Work", "LabEffects/Do", "LabEffects/Undo", "LabVault/Put", "LabVault/Get"} <= private
    assert all(kind is None for name, (_, kind) in seen.items() if name in private)


def test_a_private_handler_is_refused_at_the_ingress_and_starts_nothing(podium_env: PodiumEnv) -> None:
    vault = new_key("vault")
    for send in ("", "/send"):
        refused = podium_env.post(f"/LabVault/{vault}/Put{send}", "stolen", headers={SUBJECT: "mallory"})
        assert refused.status_code == 400
        assert "not public" in refused.json()["message"]
    assert invocations(podium_env, "LabVault", vault) == []

    # Another handler calls it as before; the engine then does know an invocation for that key, so the
    # empty answer above was not a query that could see nothing.
    assert podium_env.call("/LabDoors/Deposit", {"vault": vault, "value": "kept"}) == {
        "caller": "internal",
        "inner": "internal",
    }
    assert [row["target"] for row in invocations(podium_env, "LabVault", vault)] == [f"LabVault/{vault}/Put"]
    assert podium_env.call_private(f"/LabVault/{vault}/Get") == {"value": "kept", "caller": "internal"}


def test_call_private_reaches_a_private_handler_and_passes_its_error_through(podium_env: PodiumEnv) -> None:
    vault = new_key("vault")
    empty = podium_env.post_private(f"/LabVault/{vault}/Get")
    assert empty.status_code == 404
    assert empty.json()["message"] == f"vault {vault} is empty"
    with pytest.raises(AssertionError, match=f"answered 404: .*vault {vault} is empty"):
        podium_env.call_private(f"/LabVault/{vault}/Get")

    assert podium_env.call_private(f"/LabVault/{vault}/Put", "direct") == {
        "value": "direct",
        "caller": "internal",
    }
    assert podium_env.call_private(f"/LabVault/{vault}/Get")["value"] == "direct"
    invalid = podium_env.post_private(f"/LabVault/{vault}/Put", {"not": "a string"})
    assert invalid.status_code == 400
    assert "invalid request" in invalid.json()["message"]


# -- who asked ------------------------------------------------------------------------------------------


def test_caller_is_the_subject_header_sent_through_the_ingress(lab: PodiumEnv) -> None:
    assert lab.post("/LabDoors/Whoami", headers={SUBJECT: "alice"}).json() == "alice"
    assert lab.call("/LabDoors/Whoami") == "internal"


def test_a_handler_called_by_another_sees_internal_whoever_asked_the_first(lab: PodiumEnv) -> None:
    vault = new_key("vault")
    answer = lab.post("/LabDoors/Deposit", {"vault": vault, "value": "v"}, headers={SUBJECT: "alice"})
    assert answer.json() == {"caller": "alice", "inner": "internal"}
    assert lab.call_private(f"/LabVault/{vault}/Get") == {"value": "v", "caller": "internal"}


# -- a value built inside a handler that does not validate ------------------------------------------------


def test_a_validation_error_inside_a_handler_is_a_400_that_is_not_retried(podium_env: PodiumEnv) -> None:
    idempotency_key = new_key("convert")
    response = podium_env.post(
        "/LabDoors/Convert", {"failTimes": "never"}, headers={"idempotency-key": idempotency_key}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid value: failTimes: Input should be a valid integer")
    (row,) = podium_env.query(
        "SELECT status, retry_count, completion_result, completion_failure FROM sys_invocation "
        f"WHERE target = 'LabDoors/Convert' AND idempotency_key = '{idempotency_key}'"
    )
    assert row["status"] == "completed"
    assert row["completion_result"] == "failure"
    assert "invalid value: failTimes" in row["completion_failure"]
    assert row.get("retry_count") in (None, 0)  # the engine omits it for an invocation never retried
    # The same handler with a value that converts answers normally.
    assert podium_env.call("/LabDoors/Convert", {"failTimes": "2"})["failTimes"] == 2


# -- request identity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/invoke/LabDoors/Whoami"), ("POST", "/invoke/LabVault/k/Put"), ("GET", "/discover")],
)
def test_a_deployment_refuses_requests_the_engine_did_not_sign(
    lab: PodiumEnv, method: str, path: str
) -> None:
    with httpx.Client(http2=False, timeout=10) as direct:
        response = direct.request(
            method,
            f"{lab.deployment_url}{path}",
            headers={
                "content-type": "application/vnd.restate.invocation.v5",
                "accept": "application/vnd.restate.endpointmanifest.v3+json",
            },
            content=b"",
        )
    assert response.status_code == 401
    # The engine's own, signed requests still work on the same deployment.
    assert lab.call("/LabDoors/Whoami") == "internal"


def test_a_forged_signature_is_refused(lab: PodiumEnv) -> None:
    response = httpx.post(
        f"{lab.deployment_url}/invoke/LabDoors/Whoami",
        headers={"x-restate-signature-scheme": "v1", "x-restate-jwt-v1": "e30.e30.c2lnbmF0dXJl"},
        timeout=10,
    )
    assert response.status_code == 401


def test_the_deployment_health_check_needs_no_signature(lab: PodiumEnv) -> None:
    assert httpx.get(f"{lab.deployment_url}/health", timeout=10).status_code == 200
