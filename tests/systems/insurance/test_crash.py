"""Crashes while a claim waits: kill -9 of the service process, restarts of the engine, forced replays.

Each wait is held by the engine, not by the process: the approval promise, the records awakeable, the
approval deadline (a durable timer) and the provider's delayed callback (a delayed send).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import ALWAYS_REPLAY, Deployer, PodiumEnv, process_env, running_engine
from tests.systems.insurance.apps import app
from tests.systems.insurance.conftest import (
    claim,
    file_claim,
    filed,
    letters,
    outcome,
    payouts,
    status,
    wait_phase,
)

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def settings_env() -> dict[str, str]:
    """The deployment's settings, as its environment (a test parametrizes this to change a deadline)."""
    return {}


@pytest.fixture
def deployment_pair(
    engine: Engine, tmp_path: Path, settings_env: dict[str, str]
) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(
        engine, "tests.systems.insurance.apps:app", log_file=tmp_path / "insurance.log", env=settings_env
    ) as pair:
        yield pair


@pytest.fixture
def deployment(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return deployment_pair[1]


@pytest.fixture
def env(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return deployment_pair[0]


def assert_paid_once(env: PodiumEnv, claim_id: str, cents: int = 125_000) -> None:
    result = outcome(env, claim_id)
    assert result["status"] == "paid", result
    charged, requests = payouts(claim_id)
    assert [c["amountCents"] for c in charged] == [cents]
    assert requests == 1
    assert len(letters(claim_id)) == 1
    final = status(env, claim_id)
    assert final["phase"] == "paid"
    assert final["completedSteps"] == ["validate", "records", "approval", "payment"]


def test_kill_9_while_waiting_for_approval_resumes_and_pays_once(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(env, body)
    wait_phase(env, claim_id, "awaiting_approval")
    deployment.kill()
    deployment.start()
    decided = env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    assert decided["outcome"] == "approved"
    assert_paid_once(env, claim_id)


def test_kill_9_while_waiting_for_the_records_resumes_when_they_arrive(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(env, body)
    filed(env, claim_id)
    assert status(env, claim_id)["phase"] == "awaiting_records"
    deployment.kill()
    deployment.start()
    env.call(f"/MedicalRecordsService/{claim_id}/Deliver", {"covered": True, "findings": "fracture"})
    wait_phase(env, claim_id, "awaiting_approval", timeout=60)
    env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    assert_paid_once(env, claim_id)
    assert outcome(env, claim_id)["records"] == {
        "covered": True,
        "findings": "fracture",
        "provider": "manual",
    }


def test_kill_9_while_the_provider_is_about_to_call_back(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(env, body)
    filed(env, claim_id)
    deployment.kill()  # the provider's delayed callback is a send held by the engine
    deployment.start()
    wait_phase(env, claim_id, "awaiting_approval", timeout=60)
    env.call(f"/ClaimSaga/{claim_id}/Approve", {})
    assert_paid_once(env, claim_id)


@pytest.mark.parametrize("settings_env", [{"PODIUM_INSURANCE_APPROVAL_DEADLINE": "PT4S"}])
def test_the_approval_deadline_survives_an_engine_restart(env: PodiumEnv, engine: Engine) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(env, body)
    waiting = wait_phase(env, claim_id, "awaiting_approval")
    engine.kill()
    engine.start()
    result = outcome(env, claim_id)
    assert result["status"] == "timeout"
    assert result["stage"] == "approval"
    assert result["reason"] == "no adjuster decided within 4 s"
    deadline = waiting["metadata"]["approvalDeadline"]
    assert result["closedAt"] >= deadline  # neither lost nor fired early
    closed = dt.datetime.fromisoformat(result["closedAt"])
    assert closed - dt.datetime.fromisoformat(deadline) < dt.timedelta(seconds=30)  # nor restarted late
    assert payouts(claim_id) == ([], 0)


def test_an_engine_restart_while_waiting_for_approval_then_approve(env: PodiumEnv, engine: Engine) -> None:
    body = claim()
    claim_id = body["claimId"]
    file_claim(env, body)
    wait_phase(env, claim_id, "awaiting_approval")
    engine.kill()
    engine.start()
    env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    assert_paid_once(env, claim_id)


# -- forced replays: every await suspends, every step is replayed from the journal ----------------------


@pytest.fixture(scope="module")
def replay_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodiumEnv]:
    with (
        running_engine(tmp_path_factory.mktemp("insurance-replay"), env=ALWAYS_REPLAY) as engine,
        httpx.Client(base_url=engine.ingress_url, timeout=60) as client,
    ):
        deployer = Deployer(engine.admin_url)
        try:
            url = deployer.deploy(app)
            yield PodiumEnv(engine.ingress_url, engine.admin_url, url, client)
        finally:
            deployer.close()


def test_a_claim_replayed_at_every_step_is_paid_once(replay_env: PodiumEnv) -> None:
    body = claim("POL-3001")
    claim_id = body["claimId"]
    file_claim(replay_env, body)
    filed(replay_env, claim_id)
    replay_env.call(f"/MedicalRecordsService/{claim_id}/Deliver", {"covered": True})
    wait_phase(replay_env, claim_id, "awaiting_approval")
    replay_env.call(f"/ClaimSaga/{claim_id}/Approve", {"by": "adjuster-ann"})
    assert_paid_once(replay_env, claim_id)
    history = [h["phase"] for h in status(replay_env, claim_id)["history"]]
    assert history == ["validating", "awaiting_records", "awaiting_approval", "paying", "closing", "paid"]
