"""The CI/CD pipeline (seed 000 ex 4): parallel build and unit tests, scan, staging, approval, production."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, new_key
from services.pipeline import builder, environments
from tests.systems.pipeline.conftest import (
    configure,
    fresh_app,
    pointer,
    result_of,
    status_or_none,
    switches,
    wait_for_phase,
)

pytestmark = pytest.mark.engine

PIPELINE = "PipelineOrchestrator"


def body(app: str, version: str, variant: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"app": app, "version": version, "variant": variant, **extra}


def run(env: PodiumEnv, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A pipeline that ends before the approval: its result."""
    pipeline_id = new_key("pipe")
    answer: dict[str, Any] = env.call(f"/{PIPELINE}/{pipeline_id}/Run", request)
    return pipeline_id, answer


def start(env: PodiumEnv, request: dict[str, Any]) -> str:
    """A pipeline sent off and waiting for its approval (staging deployed and tested)."""
    pipeline_id = new_key("pipe")
    env.send(f"/{PIPELINE}/{pipeline_id}/Run", request)
    wait_for_phase(env, PIPELINE, pipeline_id, "awaiting-approval")
    return pipeline_id


def decide(env: PodiumEnv, pipeline_id: str, handler: str, decision: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/{PIPELINE}/{pipeline_id}/{handler}", decision)
    return answer


def stages(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stage["name"]: stage for stage in result["stages"]}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_pipeline_ships_to_production_after_approval_and_runs_once(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    request = body(app, "1.0.0", approvalTimeoutMs=1)  # not the client's to set: ignored
    pipeline_id = start(podium_env, request)

    waiting = status_or_none(podium_env, PIPELINE, pipeline_id)
    assert waiting is not None
    assert waiting["isComplete"] is False
    approval = waiting["metadata"]["approval"]
    assert approval["outcome"] == "waiting"
    assert at(approval["deadlineAt"]) - at(approval["requestedAt"]) == dt.timedelta(hours=24)  # the setting
    assert waiting["result"] is None
    assert pointer(app, "staging") == "releases/1.0.0"  # staged and tested, production untouched
    assert pointer(app, "production") is None
    shown = {s["name"]: s["status"] for s in waiting["metadata"]["stages"]}
    assert shown == {
        "build": "succeeded",
        "unit-tests": "succeeded",
        "security-scan": "succeeded",
        "deploy-staging": "succeeded",
        "integration-tests": "succeeded",
        "approval": "waiting",
        "deploy-production": "pending",
    }

    gate = decide(podium_env, pipeline_id, "Approve", {"by": "alice", "comment": "ship it"})
    assert gate["outcome"] == "approved"
    again = podium_env.post(f"/{PIPELINE}/{pipeline_id}/Reject", {"by": "bob"})
    assert again.status_code == 409
    assert "already decided: approved by alice" in again.json()["message"]

    result = podium_env.call(f"/{PIPELINE}/{pipeline_id}/Run", request)  # waits for the first run
    assert result["status"] == "deployed", result["reason"]
    assert result["reason"] is None
    assert result["environments"] == {"staging": "1.0.0", "production": "1.0.0"}
    assert result["approval"]["outcome"] == "approved"
    assert (result["approval"]["by"], result["approval"]["comment"]) == ("alice", "ship it")
    assert result["findings"] == []

    # every stage, with its times from the engine's clock
    by_name = stages(result)
    assert list(by_name) == [
        "build",
        "unit-tests",
        "security-scan",
        "deploy-staging",
        "integration-tests",
        "approval",
        "deploy-production",
    ]
    for stage in by_name.values():
        assert stage["status"] == "succeeded", stage
        assert at(stage["startedAt"]) <= at(stage["endedAt"])
        assert stage["durationMs"] >= 0
    build, unit = by_name["build"], by_name["unit-tests"]
    assert at(build["startedAt"]) < at(unit["endedAt"])  # the two ran at the same time
    assert at(unit["startedAt"]) < at(build["endedAt"])
    assert at(unit["endedAt"]) <= at(by_name["security-scan"]["startedAt"])
    assert "5 passed" in unit["detail"]
    assert "4 passed" in by_name["integration-tests"]["detail"]

    # real artifacts and releases on disk
    artifact = result["artifact"]
    assert artifact["imageTag"] == f"{app}:1.0.0"
    assert artifact["wheel"] == "sample_app-1.0.0-py3-none-any.whl"
    assert Path(artifact["path"]).is_file()
    release = environments.env_dir(app, "production") / "releases" / "1.0.0"
    assert (release / "sample_app" / "_version.py").read_text().endswith('__version__ = "1.0.0"\n')
    assert (release / "sample_app-1.0.0.dist-info" / "RECORD").is_file()
    for name in ("build", "unit-tests", "security-scan", "deploy-staging", "integration-tests"):
        assert Path(by_name[name]["log"]).is_file(), name

    final = status_or_none(podium_env, PIPELINE, pipeline_id)
    assert final is not None
    assert (final["phase"], final["isComplete"], final["progress"]) == ("deployed", True, 1.0)
    phases = [h["phase"] for h in final["history"]]
    assert phases[:3] == ["building", "scanning", "deploying-staging"]
    assert phases[-3:] == ["awaiting-approval", "deploying-production", "deployed"]
    assert final["saga"]["status"] == "completed"
    assert final["result"] == result

    # the same request again: the same result, nothing built or deployed twice
    assert podium_env.call(f"/{PIPELINE}/{pipeline_id}/Run", request) == result
    assert switches(app, "staging") == [("deploy", None, "1.0.0")]
    assert switches(app, "production") == [("deploy", None, "1.0.0")]
    assert environments.releases(app, "production") == ["1.0.0"]
    different = podium_env.post(f"/{PIPELINE}/{pipeline_id}/Run", body(app, "1.0.1"))
    assert different.status_code == 409


def test_a_broken_build_fails_fast_and_deploys_nothing(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    _, result = run(podium_env, body(app, "1.0.0", "broken-build"))
    assert result["status"] == "build_failed"
    assert result["failedStage"] == "build"
    assert "build failed: src/sample_app/pricing.py:18: expected ':'" in result["reason"]
    by_name = stages(result)
    assert by_name["build"]["status"] == "failed"
    assert by_name["unit-tests"]["status"] in ("cancelled", "failed")  # fan_out_fail cancels the other
    for name in ("security-scan", "deploy-staging", "integration-tests", "approval", "deploy-production"):
        assert by_name[name]["status"] == "skipped"
        assert by_name[name]["startedAt"] is None
    assert result["environments"] == {"staging": None, "production": None}
    assert not environments.env_dir(app, "staging").exists()
    assert builder.get_image(f"{app}:1.0.0") is None
    assert "expected ':'" in Path(by_name["build"]["log"]).read_text()


def test_failing_unit_tests_stop_the_pipeline(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    pipeline_id, result = run(podium_env, body(app, "1.0.0", "failing-unit-tests"))
    assert result["status"] == "unit_tests_failed"
    assert result["failedStage"] == "unit-tests"
    assert "unit tests failed: 1 failed, 4 passed" in result["reason"]
    assert "test_percent_rounds_half_up" in result["reason"]
    assert stages(result)["build"]["status"] in ("succeeded", "cancelled")
    assert result["environments"] == {"staging": None, "production": None}
    status = status_or_none(podium_env, PIPELINE, pipeline_id)
    assert status is not None
    assert (status["phase"], status["isComplete"]) == ("unit_tests_failed", True)
    assert status["error"] == result["reason"]


def test_an_insecure_build_is_stopped_by_the_scan(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    _, result = run(podium_env, body(app, "1.0.0", "insecure"))
    assert result["status"] == "security_failed"
    assert result["failedStage"] == "security-scan"
    found = {(f["rule"], f["severity"], f["file"]) for f in result["findings"]}
    assert found == {
        ("PIPE-S001", "high", "sample_app/service.py"),  # eval()
        ("PIPE-S004", "high", "sample_app/service.py"),  # the hard-coded live key
        ("PIPE-D001", "medium", "sample_app-1.0.0.dist-info/METADATA"),  # requests, unpinned
        ("PIPE-D002", "high", "sample_app-1.0.0.dist-info/METADATA"),  # pyyaml==5.3
    }
    assert "3 high, 1 medium findings" in result["reason"]
    assert "eval() called" in result["reason"]
    assert "CVE-2020-14343" in result["reason"]
    report = json.loads(Path(result["logDir"], "security-scan.json").read_text())
    assert report["passed"] is False
    assert result["environments"] == {"staging": None, "production": None}
    assert stages(result)["deploy-staging"]["status"] == "skipped"


def test_failing_integration_tests_roll_staging_back_to_the_previous_release(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    first = start(podium_env, body(app, "1.0.0"))
    decide(podium_env, first, "Reject", {"by": "bob", "comment": "not this week"})
    rejected = result_of(podium_env, PIPELINE, first)
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "production deploy rejected by bob: not this week; production untouched"
    assert rejected["environments"] == {"staging": "1.0.0", "production": None}  # staging keeps 1.0.0
    assert stages(rejected)["deploy-production"]["status"] == "skipped"

    pipeline_id, result = run(podium_env, body(app, "1.1.0", "failing-integration"))
    assert result["status"] == "integration_failed"
    assert result["failedStage"] == "integration-tests"
    assert "integration tests in staging failed: 1 failed, 3 passed" in result["reason"]
    assert "compensated: deploy-staging" in result["reason"]
    assert result["rolledBack"] == ["staging"]
    assert result["environments"] == {"staging": "1.0.0", "production": None}
    assert pointer(app, "staging") == "releases/1.0.0"  # the pointer moved back
    assert environments.releases(app, "staging") == ["1.0.0", "1.1.0"]  # the bad release is kept
    assert switches(app, "staging") == [
        ("deploy", None, "1.0.0"),
        ("deploy", "1.0.0", "1.1.0"),
        ("rollback", "1.1.0", "1.0.0"),
    ]
    by_name = stages(result)
    assert by_name["integration-tests"]["status"] == "failed"
    assert by_name["rollback-staging"]["status"] == "succeeded"
    assert at(by_name["integration-tests"]["endedAt"]) <= at(by_name["rollback-staging"]["startedAt"])
    assert "test_a_quote_end_to_end" in Path(by_name["integration-tests"]["log"]).read_text()
    status = status_or_none(podium_env, PIPELINE, pipeline_id)
    assert status is not None
    assert status["saga"]["status"] == "compensated"
    assert [s["status"] for s in status["saga"]["steps"]] == ["compensated", "failed"]


def test_a_first_release_failing_integration_leaves_staging_empty(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    _, result = run(podium_env, body(app, "0.1.0", "failing-integration"))
    assert result["status"] == "integration_failed"
    assert result["rolledBack"] == ["staging"]
    assert pointer(app, "staging") is None
    assert switches(app, "staging") == [("deploy", None, "0.1.0"), ("rollback", "0.1.0", None)]


def test_no_decision_before_the_deadline_stops_the_pipeline(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, approval_timeout=dt.timedelta(milliseconds=500))
    app = fresh_app()
    pipeline_id = new_key("pipe")
    result = podium_env.call(f"/{PIPELINE}/{pipeline_id}/Run", body(app, "1.0.0"))
    assert result["status"] == "approval_timed_out"
    assert result["failedStage"] == "approval"
    assert result["reason"].startswith("no decision before the deadline (")
    assert result["approval"]["outcome"] == "timed_out"
    requested, deadline = at(result["approval"]["requestedAt"]), at(result["approval"]["deadlineAt"])
    assert deadline - requested == dt.timedelta(milliseconds=500)
    assert result["environments"] == {"staging": "1.0.0", "production": None}
    assert pointer(app, "production") is None
    late = podium_env.post(f"/{PIPELINE}/{pipeline_id}/Approve", {"by": "late-larry"})
    assert late.status_code == 409
    assert "timed out" in late.json()["message"]


def test_a_release_unhealthy_in_production_leaves_production_on_the_previous_one(
    podium_env: PodiumEnv,
) -> None:
    app = fresh_app()
    first = start(podium_env, body(app, "1.0.0"))
    decide(podium_env, first, "Approve", {"by": "alice"})
    assert result_of(podium_env, PIPELINE, first)["status"] == "deployed"

    second = start(podium_env, body(app, "1.1.0", "bad-production-config"))
    decide(podium_env, second, "Approve", {"by": "alice"})
    result = result_of(podium_env, PIPELINE, second)
    assert result["status"] == "deploy_failed"
    assert result["failedStage"] == "deploy-production"
    assert "health check of 1.1.0 in production failed" in result["reason"]
    assert "currency must be an ISO 4217 code, got 'EURO'" in result["reason"]
    assert result["environments"] == {"staging": "1.1.0", "production": "1.0.0"}
    assert pointer(app, "production") == "releases/1.0.0"
    assert switches(app, "production") == [("deploy", None, "1.0.0")]  # never switched to 1.1.0


def test_deciding_a_pipeline_that_is_not_waiting_is_refused(podium_env: PodiumEnv) -> None:
    response = podium_env.post(f"/{PIPELINE}/{new_key('pipe')}/Approve", {"by": "alice"})
    assert response.status_code == 409
    assert "is not waiting for approval" in response.json()["message"]
    assert podium_env.post(f"/{PIPELINE}/{new_key('pipe')}/GetStatus").status_code == 404


@pytest.mark.parametrize(
    ("key", "request_body", "message"),
    [
        ("p-ok", {"app": "shop"}, "version: field required"),
        ("p-ok", {"version": "1.0"}, "version: String should match pattern"),
        ("p-ok", {"version": "1.0.0", "variant": "flaky"}, "variant: Input should be 'ok', 'broken-build'"),
        ("p-ok", {"version": "1.0.0", "app": "Shop App"}, "app: String should match pattern"),
        ("bad!id", {"version": "1.0.0"}, "pipelineId (the key): 'bad!id' must match"),
    ],
)
def test_bad_input_is_a_400(
    podium_env: PodiumEnv, key: str, request_body: dict[str, Any], message: str
) -> None:
    response = podium_env.post(f"/{PIPELINE}/{key}/Run", request_body)
    assert response.status_code == 400
    assert message in response.json()["message"]


# -- doors: who decided, and what only the orchestrators may call ------------------------------------------


@pytest.mark.parametrize("handler", ["Approve", "Reject"])
def test_the_decision_is_recorded_as_the_verified_subject(podium_env: PodiumEnv, handler: str) -> None:
    app = fresh_app()
    pipeline_id = start(podium_env, body(app, "1.0.0"))
    response = podium_env.post(
        f"/{PIPELINE}/{pipeline_id}/{handler}",
        {"approved": False, "by": "mallory", "comment": "not this week"},
        headers={SUBJECT_HEADER: "release-manager-rita"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["by"] == "release-manager-rita"
    result = result_of(podium_env, PIPELINE, pipeline_id)
    assert result["status"] == "rejected"
    assert (result["approval"]["by"], result["approval"]["comment"]) == (
        "release-manager-rita",
        "not this week",
    )
    assert (
        result["reason"]
        == "production deploy rejected by release-manager-rita: not this week; production untouched"
    )
    gate = podium_env.call_private(f"/PipelineApproval/{pipeline_id}/Get")
    assert gate["decision"]["by"] == "release-manager-rita"


def test_the_stage_and_gate_handlers_are_closed_to_clients_and_change_nothing(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    pipeline_id = start(podium_env, body(app, "1.0.0"))
    gate_before = podium_env.call_private(f"/PipelineApproval/{pipeline_id}/Get")
    run = f"pipeline/{pipeline_id}"
    tag = f"{app}:1.0.0"
    for path, request in [
        (f"/PipelineApproval/{pipeline_id}/Decide", {"approved": True, "by": "mallory"}),  # skip the approval
        (f"/PipelineApproval/{pipeline_id}/Close", None),
        ("/DeployService/Deploy", {"run": run, "imageTag": tag, "environment": "production"}),
        ("/DeployService/Rollback", {"run": run, "app": app, "environment": "staging"}),
        ("/DeployService/UpdateDns", {"run": run, "hostname": f"{app}.podium.test", "imageTag": tag}),
        ("/BuildService/Build", {"imageTag": f"{app}:9.9.9", "version": "9.9.9", "variant": "insecure"}),
    ]:
        podium_env.assert_private(path, request)

    assert podium_env.call_private(f"/PipelineApproval/{pipeline_id}/Get") == gate_before  # still waiting
    assert pointer(app, "production") is None
    assert pointer(app, "staging") == "releases/1.0.0"
    assert switches(app, "staging") == [("deploy", None, "1.0.0")]
    assert environments.zone().get(f"{app}.podium.test") is None
    assert builder.get_image(f"{app}:9.9.9") is None
    status = status_or_none(podium_env, PIPELINE, pipeline_id)
    assert status is not None
    assert status["phase"] == "awaiting-approval"
    decide(podium_env, pipeline_id, "Reject", {"comment": "cleanup"})
    assert result_of(podium_env, PIPELINE, pipeline_id)["status"] == "rejected"
