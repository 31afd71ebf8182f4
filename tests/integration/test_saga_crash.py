"""kill -9 of the service process in a saga: between steps, and in the middle of compensation.

Every step's action and every compensation must run exactly once (counters), in reverse order, after
the process comes back on the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from tests.integration.test_saga import counts, events, step

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def deployed(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.integration.lab:app", log_file=tmp_path / "lab.log") as pair:
        yield pair


@pytest.fixture
def deployment(deployed: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return deployed[1]


@pytest.fixture
def env(deployed: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return deployed[0]


def crash_when(env: PodiumEnv, deployment: DeploymentProcess, key: str, event: str) -> None:
    assert_eventually(lambda: event in events(env, key), timeout=30, message=event)
    deployment.kill()
    deployment.start()


def finished_log(env: PodiumEnv, key: str) -> dict[str, Any]:
    log: dict[str, Any] = assert_eventually(
        lambda: (
            (log := env.call(f"/LabSaga/{key}/Log"))
            and log["status"] not in ("running", "compensating")
            and log
        ),
        timeout=90,
        message="the saga to finish",
    )
    return log


def test_kill_9_between_steps_runs_each_action_once_then_compensates_once(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    key = new_key("saga")
    slow = step("b")
    slow["action"]["slowMs"] = 3_000
    env.send(f"/LabSaga/{key}/Run", {"steps": [step("a"), slow, step("c", fail=-1)]})
    crash_when(env, deployment, key, "action-started:b")

    log = finished_log(env, key)
    assert log["status"] == "compensated"
    for name in ("a", "b"):
        assert counts(env, key, name)["actions"] == 1
        assert counts(env, key, name)["actionAttempts"] == 1
    for name in ("a", "b", "c"):
        assert counts(env, key, name)["undos"] == 1
    assert [e for e in events(env, key) if e.startswith("undo:")] == ["undo:c", "undo:b", "undo:a"]


def test_kill_9_during_compensation_finishes_it_once_in_reverse_order(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    key = new_key("saga")
    slow_undo = step("b")
    slow_undo["undo"]["slowMs"] = 3_000
    env.send(f"/LabSaga/{key}/Run", {"steps": [step("a"), slow_undo, step("c", fail=-1)]})
    crash_when(env, deployment, key, "undo-started:b")

    log = finished_log(env, key)
    assert log["status"] == "compensated"
    for name in ("a", "b", "c"):
        assert counts(env, key, name)["undos"] == 1
        assert counts(env, key, name)["undoAttempts"] == 1
    assert [e for e in events(env, key) if e.startswith("undo:")] == ["undo:c", "undo:b", "undo:a"]
