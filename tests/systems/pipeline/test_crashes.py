"""A pipeline waiting for its approval survives ``kill -9`` of its service and a restart of the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, new_key, process_env
from tests.systems.pipeline.conftest import fresh_app, pointer, result_of, switches, wait_for_phase

pytestmark = pytest.mark.engine

PIPELINE = "PipelineOrchestrator"


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def crash_env(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.systems.pipeline.apps:app", log_file=tmp_path / "pipeline.log") as pair:
        yield pair


def waiting_pipeline(env: PodiumEnv, app: str) -> str:
    pipeline_id = new_key("pipe")
    env.send(f"/{PIPELINE}/{pipeline_id}/Run", {"app": app, "version": "3.0.0"})
    wait_for_phase(env, PIPELINE, pipeline_id, "awaiting-approval")
    return pipeline_id


def assert_released_once(env: PodiumEnv, app: str, pipeline_id: str) -> None:
    result = result_of(env, PIPELINE, pipeline_id, timeout=90)
    assert result["status"] == "deployed", result["reason"]
    assert result["approval"]["by"] == "carol"
    assert result["environments"] == {"staging": "3.0.0", "production": "3.0.0"}
    assert pointer(app, "production") == "releases/3.0.0"
    assert switches(app, "staging") == [("deploy", None, "3.0.0")]
    assert switches(app, "production") == [("deploy", None, "3.0.0")]
    assert all(stage["status"] == "succeeded" for stage in result["stages"])


def test_kill_9_of_the_service_while_waiting_for_approval(
    crash_env: tuple[PodiumEnv, DeploymentProcess],
) -> None:
    env, process = crash_env
    app = fresh_app()
    pipeline_id = waiting_pipeline(env, app)
    process.kill()
    process.start()
    assert env.call(f"/{PIPELINE}/{pipeline_id}/Approve", {"by": "carol"})["outcome"] == "approved"
    assert_released_once(env, app, pipeline_id)


def test_an_engine_restart_while_waiting_for_approval(
    crash_env: tuple[PodiumEnv, DeploymentProcess], engine: Engine
) -> None:
    env, _ = crash_env
    app = fresh_app()
    pipeline_id = waiting_pipeline(env, app)
    engine.kill()
    engine.start()
    waiting = wait_for_phase(env, PIPELINE, pipeline_id, "awaiting-approval")
    assert waiting["metadata"]["approval"]["outcome"] == "waiting"
    assert env.call(f"/{PIPELINE}/{pipeline_id}/Approve", {"by": "carol"})["outcome"] == "approved"
    assert_released_once(env, app, pipeline_id)
