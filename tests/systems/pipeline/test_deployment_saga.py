"""The multi-stage deployment saga (seed 003 ex 4): staging, tests, production, DNS, and the rollbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from services.pipeline import environments
from tests.systems.pipeline.conftest import fresh_app, pointer, status_or_none, switches

pytestmark = pytest.mark.engine

SAGA = "DeploymentSaga"


def publish(env: PodiumEnv, app: str, version: str, variant: str = "ok") -> str:
    """Build the sample (``variant``) and publish it as ``<app>:<version>`` (a private stage: from inside)."""
    tag = f"{app}:{version}"
    built = env.call_private("/BuildService/Build", {"imageTag": tag, "version": version, "variant": variant})
    assert built["imageTag"] == tag
    return tag


def deploy(env: PodiumEnv, tag: str, version: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    deployment_id = new_key("deploy")
    request = {"deploymentId": deployment_id, "version": version, "imageTag": tag, **extra}
    answer: dict[str, Any] = env.call(f"/{SAGA}/{deployment_id}/Run", request)
    return deployment_id, answer


def record(hostname: str) -> dict[str, Any] | None:
    return environments.zone().get(hostname)


def test_a_deployment_reaches_production_and_dns_and_runs_once(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    tag = publish(podium_env, app, "2.0.0")
    deployment_id = new_key("deploy")
    request = {"deploymentId": deployment_id, "version": "2.0.0", "imageTag": tag}
    result = podium_env.call(f"/{SAGA}/{deployment_id}/Run", request)

    assert result["status"] == "deployed", result["reason"]
    assert result["hostname"] == f"{app}.podium.test"
    assert result["environments"] == {"staging": "2.0.0", "production": "2.0.0"}
    assert result["rolledBack"] == []
    assert pointer(app, "staging") == pointer(app, "production") == "releases/2.0.0"
    dns = record(f"{app}.podium.test")
    assert dns is not None
    assert (dns["app"], dns["environment"], dns["version"]) == (app, "production", "2.0.0")
    assert Path(dns["release"]) == environments.env_dir(app, "production") / "releases" / "2.0.0"
    assert result["dns"]["version"] == "2.0.0"
    assert list(result["logs"]) == ["deploy-staging", "integration-tests", "deploy-production", "update-dns"]
    for log in result["logs"].values():
        assert Path(log).is_file()
        assert Path(log).parent == Path(result["logDir"])
    assert [s["status"] for s in result["stages"]] == ["succeeded"] * 5

    status = status_or_none(podium_env, SAGA, deployment_id)
    assert status is not None
    assert (status["phase"], status["isComplete"]) == ("deployed", True)
    assert status["saga"]["status"] == "completed"
    assert [h["phase"] for h in status["history"]] == [
        "resolving-image",
        "deploying-staging",
        "integration-testing",
        "deploying-production",
        "updating-dns",
        "deployed",
    ]

    assert podium_env.call(f"/{SAGA}/{deployment_id}/Run", request) == result  # same result...
    assert switches(app, "staging") == [("deploy", None, "2.0.0")]  # ...and no second deploy
    assert switches(app, "production") == [("deploy", None, "2.0.0")]


def test_failing_tests_roll_staging_back_and_keep_the_logs(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    _, first = deploy(podium_env, publish(podium_env, app, "1.0.0"), "1.0.0")
    assert first["status"] == "deployed"

    tag = publish(podium_env, app, "1.1.0", "failing-integration")
    deployment_id, result = deploy(podium_env, tag, "1.1.0")
    assert result["status"] == "tests_failed"
    assert result["failedStage"] == "integration-tests"
    assert "integration tests in staging failed" in result["reason"]
    assert result["rolledBack"] == ["staging"]
    assert result["environments"] == {"staging": "1.0.0", "production": "1.0.0"}
    assert pointer(app, "staging") == "releases/1.0.0"
    assert switches(app, "staging")[-1] == ("rollback", "1.1.0", "1.0.0")
    assert switches(app, "production") == [("deploy", None, "1.0.0")]  # never touched
    assert record(f"{app}.podium.test")["version"] == "1.0.0"  # type: ignore[index]

    logs = result["logs"]
    assert list(logs) == ["deploy-staging", "integration-tests", "rollback-staging"]
    assert "test_a_quote_end_to_end" in Path(logs["integration-tests"]).read_text()
    assert "current → releases/1.0.0 (was 1.1.0)" in Path(logs["rollback-staging"]).read_text()
    stages = {s["name"]: s["status"] for s in result["stages"]}
    assert stages == {
        "resolve-image": "succeeded",
        "deploy-staging": "succeeded",
        "integration-tests": "failed",
        "deploy-production": "skipped",
        "update-dns": "skipped",
        "rollback-staging": "succeeded",
    }
    status = status_or_none(podium_env, SAGA, deployment_id)
    assert status is not None
    assert status["phase"] == "tests_failed"
    assert status["saga"]["status"] == "compensated"


def test_a_dns_failure_rolls_production_and_staging_back(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    _, first = deploy(podium_env, publish(podium_env, app, "1.0.0"), "1.0.0")
    assert first["status"] == "deployed"

    tag = publish(podium_env, app, "1.1.0")
    _, result = deploy(podium_env, tag, "1.1.0", hostname=f"{app}.invalid")
    assert result["status"] == "failed"
    assert result["failedStage"] == "update-dns"
    assert f"the DNS provider refused to update {app}.invalid" in result["reason"]
    assert "compensated: deploy-production, deploy-staging" in result["reason"]
    assert result["rolledBack"] == ["production", "staging"]  # in reverse order
    assert result["environments"] == {"staging": "1.0.0", "production": "1.0.0"}
    assert result["dns"] is None
    assert pointer(app, "production") == pointer(app, "staging") == "releases/1.0.0"
    assert switches(app, "production") == [
        ("deploy", None, "1.0.0"),
        ("deploy", "1.0.0", "1.1.0"),
        ("rollback", "1.1.0", "1.0.0"),
    ]
    assert record(f"{app}.podium.test")["version"] == "1.0.0"  # type: ignore[index]
    assert record(f"{app}.invalid") is None
    assert "refused by the DNS provider" in Path(result["logs"]["update-dns"]).read_text()
    assert Path(result["logs"]["rollback-production"]).is_file()


def test_a_production_deploy_failure_rolls_staging_back(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    tag = publish(podium_env, app, "1.0.0", "bad-production-config")
    _, result = deploy(podium_env, tag, "1.0.0")
    assert result["status"] == "failed"
    assert result["failedStage"] == "deploy-production"
    assert "health check of 1.0.0 in production failed" in result["reason"]
    assert result["rolledBack"] == ["staging"]  # production never switched: nothing to undo there
    assert result["environments"] == {"staging": None, "production": None}
    assert pointer(app, "staging") is None
    stages = {s["name"]: s for s in result["stages"]}
    assert (
        stages["rollback-production"]["detail"] == "this run never switched the pointer here: nothing to undo"
    )
    assert "currency must be an ISO 4217 code" in Path(result["logs"]["deploy-production"]).read_text()


@pytest.mark.parametrize(
    ("publish_as", "version", "reason"),
    [
        (None, "1.0.0", "is not in the registry (build it first)"),
        ("1.0.0", "2.0.0", "holds version 1.0.0, not 2.0.0; nothing deployed"),
    ],
)
def test_an_image_that_does_not_fit_fails_before_anything_is_deployed(
    podium_env: PodiumEnv, publish_as: str | None, version: str, reason: str
) -> None:
    app = fresh_app()
    tag = publish(podium_env, app, publish_as) if publish_as else f"{app}:{version}"
    _, result = deploy(podium_env, tag, version)
    assert result["status"] == "failed"
    assert result["failedStage"] == "resolve-image"
    assert reason in result["reason"]
    assert result["environments"] == {"staging": None, "production": None}
    assert not environments.env_dir(app, "staging").exists()


def test_a_tag_is_immutable(podium_env: PodiumEnv) -> None:
    app = fresh_app()
    publish(podium_env, app, "1.0.0")
    publish(podium_env, app, "1.0.0")  # the same bytes again: fine
    response = podium_env.post_private(
        "/BuildService/Build", {"imageTag": f"{app}:1.0.0", "version": "1.0.0", "variant": "insecure"}
    )
    assert response.status_code == 409
    assert "tags are immutable" in response.json()["message"]


@pytest.mark.parametrize(
    ("key", "request_body", "message"),
    [
        (
            "d-1",
            {"deploymentId": "d-2", "version": "1.0.0", "imageTag": "a:1"},
            "deploymentId: 'd-2' must equal",
        ),
        (
            "d-1",
            {"deploymentId": "d-1", "version": "1.0.0", "imageTag": "nocolon"},
            "imageTag: String should",
        ),
        ("d-1", {"deploymentId": "d-1", "version": "v1", "imageTag": "a:1"}, "version: String should match"),
        ("d-1", {"deploymentId": "d-1", "version": "1.0.0"}, "imageTag: field required"),
        (
            "d-1",
            {"deploymentId": "d-1", "version": "1.0.0", "imageTag": "a:1", "hostname": "Not A Host"},
            "hostname: String should match pattern",
        ),
    ],
)
def test_bad_input_is_a_400(
    podium_env: PodiumEnv, key: str, request_body: dict[str, Any], message: str
) -> None:
    response = podium_env.post(f"/{SAGA}/{key}/Run", request_body)
    assert response.status_code == 400
    assert message in response.json()["message"]
