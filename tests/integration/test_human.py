"""Approvals, promises and awakeables with deadlines; status; the ingress client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium import IngressClient, IngressError
from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from tests.integration import lab as app

pytestmark = pytest.mark.engine
SUBJECT = "x-podium-subject"


def client(env: PodiumEnv) -> IngressClient:
    return IngressClient(env.ingress_url, admin_url=env.admin_url, timeout=60)


def start_approval(env: PodiumEnv, timeout_ms: int) -> str:
    key = new_key("approval")
    env.send(f"/LabApproval/{key}/Run", {"timeoutMs": timeout_ms})
    assert_eventually(lambda: env.call(f"/LabApproval/{key}/Status")["phase"] == "waiting", message="waiting")
    return key


def outcome(env: PodiumEnv, key: str) -> dict[str, Any]:
    with client(env) as ingress:
        answer: dict[str, Any] = ingress.workflow_attach("LabApproval", key)
    return answer


def test_approve_resumes_the_workflow_and_status_tracks_it(lab: PodiumEnv) -> None:
    key = start_approval(lab, 60_000)
    decided = lab.call(f"/LabApproval/{key}/Approve", {"by": "alice", "comment": "fine"})
    assert decided["outcome"] == "approved"
    assert outcome(lab, key) == {"outcome": "approved", "by": "alice"}

    status = lab.call(f"/LabApproval/{key}/Status")
    assert status["phase"] == "approved"
    assert status["isComplete"] is True
    assert status["progress"] == 1.0
    assert status["completedSteps"] == ["approval"]
    assert status["metadata"] == {"outcome": "approved"}
    assert [h["phase"] for h in status["history"]] == ["waiting", "approved"]
    assert status["updatedAt"].endswith("Z")
    assert status["history"][0]["at"] <= status["updatedAt"]


@pytest.mark.parametrize(("handler", "body"), [("Reject", {"by": "bob"}), ("Approve", {"approved": False})])
def test_reject_in_either_form(lab: PodiumEnv, handler: str, body: dict[str, Any]) -> None:
    key = start_approval(lab, 60_000)
    assert lab.call(f"/LabApproval/{key}/{handler}", body)["outcome"] == "rejected"
    assert outcome(lab, key)["outcome"] == "rejected"


def test_a_second_decision_is_refused(lab: PodiumEnv) -> None:
    key = start_approval(lab, 60_000)
    lab.call(f"/LabApproval/{key}/Reject", {})
    response = lab.post(f"/LabApproval/{key}/Approve", {})
    assert response.status_code == 409
    assert "already decided: rejected" in response.json()["message"]


def test_no_decision_times_out_and_a_late_one_is_refused(lab: PodiumEnv) -> None:
    key = start_approval(lab, 500)
    assert outcome(lab, key) == {"outcome": "timed_out", "by": None}
    assert lab.call(f"/LabApproval/{key}/Status")["phase"] == "timed_out"
    late = lab.post(f"/LabApproval/{key}/Approve", {"by": "slowpoke"})
    assert late.status_code == 409
    assert "deadline for approval" in late.json()["message"]


@pytest.mark.parametrize(("handler", "outcome_name"), [("Approve", "approved"), ("Reject", "rejected")])
def test_the_decider_is_the_verified_subject_not_the_body(
    lab: PodiumEnv, handler: str, outcome_name: str
) -> None:
    key = start_approval(lab, 60_000)
    decided = lab.post(f"/LabApproval/{key}/{handler}", {"by": "mallory"}, headers={SUBJECT: "alice"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["outcome"] == outcome_name
    assert outcome(lab, key) == {"outcome": outcome_name, "by": "alice"}


def test_a_decision_without_subject_or_by_is_recorded_as_internal(lab: PodiumEnv) -> None:
    key = start_approval(lab, 60_000)
    lab.call(f"/LabApproval/{key}/Approve", {})
    assert outcome(lab, key) == {"outcome": "approved", "by": "internal"}


def test_awakeable_resolved_in_time_and_timed_out(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    with client(lab) as ingress:
        invocation = ingress.send(app.wait_awakeable, app.AwakeRequest(tracker=tracker, timeout_ms=60_000))
        awakeable = assert_eventually(
            lambda: next(
                (e.split(":", 1)[1] for e in lab.call_private(f"/LabTracker/{tracker}/Events")), None
            )
        )
        ingress.resolve_awakeable(awakeable, "ready")
        assert ingress.attach(invocation.id) == {"timedOut": False, "value": "ready"}
        late = ingress.call(app.wait_awakeable, app.AwakeRequest(tracker=new_key("t"), timeout_ms=300))
        assert late == app.AwakeReport(timed_out=True)


def race(*items: app.WorkItem) -> app.Items:
    return app.Items(items=list(items))


def test_ingress_client_calls_by_handler_reference(lab: PodiumEnv) -> None:
    with client(lab) as ingress:
        result = ingress.call(app.run_race, race(app.WorkItem(id="x")))
        assert isinstance(result, app.RaceSummary)
        assert (result.index, result.value.id) == (0, "x")
        with pytest.raises(IngressError) as failed:
            ingress.call(app.run_race, race(app.WorkItem(id="y", fail=True)))
        assert failed.value.status_code == 502
        assert "item y failed" in failed.value.message
        with pytest.raises(ValueError, match="a key is required"):
            ingress.call(app.saga_log)
        first = ingress.send(app.run_race, race(app.WorkItem(id="z")), idempotency_key="same-" + new_key())
        assert first.status == "Accepted"


def test_ingress_client_cannot_call_a_private_handler(lab: PodiumEnv) -> None:
    with client(lab) as ingress, pytest.raises(IngressError) as refused:
        ingress.call(app.work, app.WorkItem(id="x"))
    assert refused.value.status_code == 400
    assert "not public" in refused.value.message


def test_ingress_client_send_is_deduplicated_by_idempotency_key(lab: PodiumEnv) -> None:
    key = new_key("idem")
    with client(lab) as ingress:
        first = ingress.send(app.run_race, race(app.WorkItem(id="z")), idempotency_key=key)
        second = ingress.send(app.run_race, race(app.WorkItem(id="z")), idempotency_key=key)
        assert second.id == first.id
        assert second.status == "PreviouslyAccepted"
        assert ingress.attach(first.id)["value"]["id"] == "z"


def test_ingress_client_cancel_reaches_the_calls_in_flight(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    slow = app.WorkItem(id="slow", delay_ms=60_000, tracker=tracker)
    with client(lab) as ingress:
        invocation = ingress.send(app.run_timeout, app.TimeoutRequest(item=slow, timeout_ms=120_000))
        ingress.cancel(invocation.id)
        with pytest.raises(IngressError) as cancelled:
            ingress.attach(invocation.id)
        assert cancelled.value.status_code == 409
    assert_eventually(lambda: "cancelled:slow" in lab.call_private(f"/LabTracker/{tracker}/Events"))


# -- waits that survive crashes -------------------------------------------------------------------------


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def crash_env(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.integration.lab:app", log_file=tmp_path / "lab.log") as pair:
        yield pair


def test_the_deadline_survives_an_engine_restart(
    crash_env: tuple[PodiumEnv, DeploymentProcess], engine: Engine
) -> None:
    env, _ = crash_env
    key = start_approval(env, 4_000)
    engine.kill()
    engine.start()
    assert outcome(env, key)["outcome"] == "timed_out"


def test_a_waiting_approval_survives_kill_9_of_the_service(
    crash_env: tuple[PodiumEnv, DeploymentProcess], engine: Engine
) -> None:
    env, process = crash_env
    key = start_approval(env, 60_000)
    process.kill()
    process.start()
    assert env.call(f"/LabApproval/{key}/Approve", {"by": "carol"})["outcome"] == "approved"
    assert outcome(env, key) == {"outcome": "approved", "by": "carol"}
