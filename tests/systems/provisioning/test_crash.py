"""Crashes mid-provisioning: kill -9 of the service process, and a restart of the engine.

A ``slow-`` tenant's create steps block 2 s inside ``ctx.run`` after their effect. The crash lands while
the bucket step is in that window: the folder and ``bucket.json`` are on disk, but the engine has not
heard. After the restart the step runs again and finds the bucket (``existed``); the provisioning
finishes with one of each resource and one welcome email.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.providers import MailProvider
from services.provisioning import stores
from tests.systems.provisioning.conftest import (
    EVERYTHING,
    get_status,
    on_disk,
    resource_counts,
    tenant_request,
    tenant_rows,
)

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def deployment_pair(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(
        engine, "tests.systems.provisioning.apps:app", log_file=tmp_path / "provisioning.log"
    ) as pair:
        yield pair


@pytest.fixture
def deployment(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return deployment_pair[1]


@pytest.fixture
def env(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return deployment_pair[0]


def start_slow_provisioning(env: PodiumEnv) -> tuple[str, dict[str, Any]]:
    tenant_id, body = new_key("slow"), tenant_request()
    env.send(f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", body, idempotency_key=tenant_id)
    # Wait until the bucket is on disk: the bucket step is now inside its slow answer.
    assert_eventually(lambda: stores.bucket_info(tenant_id), timeout=20, message="the bucket")
    assert stores.operations(tenant_id) == ["database create created", "bucket create created"]
    return tenant_id, body


def assert_provisioned_exactly_once(env: PodiumEnv, tenant_id: str, body: dict[str, Any]) -> None:
    status = assert_eventually(
        lambda: (s := get_status(env, tenant_id))["isComplete"] and s,
        timeout=90,
        message="the provisioning to finish",
    )
    assert status["phase"] == "completed", status
    assert status["result"]["status"] == "provisioned"
    assert status["completedSteps"] == [
        "create-database",
        "create-bucket",
        "create-auth-realm",
        "create-billing-account",
        "send-welcome-email",
    ]
    assert status["saga"]["status"] == "completed"
    assert on_disk(tenant_id) == EVERYTHING
    assert resource_counts(tenant_id) == {"databases": 1, "buckets": 1, "realms": 1, "billingAccounts": 1}
    assert tenant_rows(tenant_id) == {
        "audit_log": 1,
        "projects": 0,
        "schema_migrations": 1,
        "tenant": 1,
        "users": 1,
    }
    # The cut-off bucket step ran again and found its bucket; nothing else was asked twice.
    assert stores.operations(tenant_id) == [
        "database create created",
        "bucket create created",
        "bucket create existed",
        "realm create created",
        "billing create created",
    ]
    assert len(MailProvider().outbox(body["adminEmail"])) == 1


def test_kill_9_of_the_service_mid_provisioning_finishes_it_once(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    tenant_id, body = start_slow_provisioning(env)
    running = get_status(env, tenant_id)
    assert (running["phase"], running["isComplete"]) == ("storage", False)
    deployment.kill()
    deployment.start()
    assert_provisioned_exactly_once(env, tenant_id, body)


def test_engine_restart_mid_provisioning_resumes_it(env: PodiumEnv, engine: Engine) -> None:
    tenant_id, body = start_slow_provisioning(env)
    engine.kill()
    engine.start()
    assert_provisioned_exactly_once(env, tenant_id, body)
