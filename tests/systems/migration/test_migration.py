"""The data-migration saga (seed 003 ex 6): batches, consistency, pivot, forward recovery, crashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, process_env, stuck_invocations
from services.migration import stores
from services.migration.saga import MAX_BATCH, MAX_BATCH_SIZE
from tests.systems.migration.conftest import seeded

pytestmark = pytest.mark.engine


def migrate(env: PodiumEnv, service_id: str, **options: Any) -> dict[str, Any]:
    body = {"batchSize": 100, "pauseMs": 20, "forwardRetries": 3, **options}
    answer: dict[str, Any] = env.call(f"/MigrationSaga/{service_id}/Run", body)
    return answer


def status(env: PodiumEnv, service_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/MigrationSaga/{service_id}/GetStatus")
    return answer


def test_a_migration_copies_every_row_and_switches(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 250)
    result = migrate(podium_env, service_id)
    assert result == {
        "serviceId": service_id,
        "status": "completed",
        "batches": 3,
        "rowsCopied": 250,
        "reason": None,
    }
    assert stores.count(service_id, "new") == 250
    assert stores.checksum(service_id, "new") == stores.checksum(service_id, "legacy")
    route = stores.routing(service_id)
    assert (route["primary"], route["dualWrite"], route["legacyEnabled"]) == ("new", False, False)
    final = status(podium_env, service_id)
    assert final["phase"] == "completed"
    assert final["metadata"] == {"batchesDone": 3, "batchesPlanned": 3, "rowsCopied": 250}
    assert final["saga"]["pivot"] == "switch-traffic"


def test_progress_is_visible_and_dual_write_catches_new_writes(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 300)
    podium_env.send(f"/MigrationSaga/{service_id}/Run", {"batchSize": 100, "pauseMs": 700})
    running = assert_eventually(
        lambda: (s := status_or_none(podium_env, service_id)) and s["metadata"].get("batchesDone") == 1 and s
    )
    assert running["phase"] == "migrating"
    assert running["isComplete"] is False
    assert running["metadata"]["rowsCopied"] == 100
    for record_id in (5, 1001, 1002):  # an update and two inserts while the copy runs
        podium_env.call(
            "/MigrationData/Write",
            {"serviceId": service_id, "id": record_id, "payload": f"written live {record_id}"},
        )
    done = assert_eventually(lambda: (s := status(podium_env, service_id))["isComplete"] and s, timeout=30)
    assert done["phase"] == "completed"
    assert stores.count(service_id, "new") == 302
    assert stores.checksum(service_id, "new") == stores.checksum(service_id, "legacy")


def status_or_none(env: PodiumEnv, service_id: str) -> dict[str, Any] | None:
    response = env.post(f"/MigrationSaga/{service_id}/GetStatus")
    return response.json() if response.status_code == 200 else None


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("-badbatch", "batch 3 of"),
        ("-inconsistent", "consistency check failed"),
        ("-noswitch", "the router refused to switch"),
    ],
)
def test_a_failure_before_the_pivot_turns_dual_write_off(
    podium_env: PodiumEnv, tag: str, reason: str
) -> None:
    service_id = seeded(podium_env, 450, tag)
    result = migrate(podium_env, service_id)
    assert result["status"] == "failed"
    assert reason in result["reason"]
    assert "compensated: dual-write-on" in result["reason"]
    route = stores.routing(service_id)
    assert (route["primary"], route["dualWrite"], route["legacyEnabled"]) == ("legacy", False, True)
    assert status(podium_env, service_id)["phase"] == "failed"


def test_after_the_pivot_a_failing_step_is_retried_forward(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 50, "-oldstuck")
    result = migrate(podium_env, service_id)
    assert result["status"] == "completed"
    route = stores.routing(service_id)
    assert route["shutdownAttempts"] == 3
    assert (route["primary"], route["legacyEnabled"]) == ("new", False)


def test_after_the_pivot_a_step_that_keeps_failing_needs_a_person(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 50, "-oldbroken")
    result = migrate(podium_env, service_id)
    assert result["status"] == "manual_intervention_required"
    assert "point of no return (switch-traffic)" in result["reason"]
    route = stores.routing(service_id)
    assert route["primary"] == "new"  # nothing rolled back after the pivot
    assert route["dualWrite"] is True
    assert route["shutdownAttempts"] == 3
    final = status(podium_env, service_id)
    assert final["phase"] == "manual_intervention_required"
    assert final["saga"]["status"] == "needs_attention"


def test_the_same_migration_twice_runs_once(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 120)
    first, second = migrate(podium_env, service_id), migrate(podium_env, service_id)
    assert first == second
    assert status(podium_env, service_id)["metadata"]["batchesDone"] == 2
    response = podium_env.post(f"/MigrationSaga/{service_id}/Run", {"batchSize": 7})
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("key", "body", "message"),
    [
        ("svc-ok", {"batchSize": 0}, "batchSize: Input should be greater than or equal to 1"),
        ("svc-ok", {"pauseMs": -1}, "pauseMs: Input should be greater than or equal to 0"),
        ("Bad_Id", {}, "serviceId (the key): 'Bad_Id' must match"),
    ],
)
def test_bad_input_is_a_400(podium_env: PodiumEnv, key: str, body: dict[str, Any], message: str) -> None:
    response = podium_env.post(f"/MigrationSaga/{key}/Run", body)
    assert response.status_code == 400
    assert message in response.json()["message"]


@pytest.mark.parametrize("field", ["batch", "size"])
def test_a_batch_number_or_size_sqlite_cannot_hold_is_a_400(podium_env: PodiumEnv, field: str) -> None:
    service_id = seeded(podium_env, 10)
    request = {"serviceId": service_id, "batch": 0, "size": 10, field: 2**63}
    response = podium_env.post_private("/MigrationData/CopyBatch", request)
    assert response.status_code == 400, response.text
    assert f"{field}: Input should be less than or equal to" in response.json()["message"]
    assert stores.count(service_id, "new") == 0
    assert [i for i in stuck_invocations(podium_env.admin_url) if "CopyBatch" in i["target"]] == []


def test_the_largest_batch_allowed_still_fits_in_sqlite(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 10)
    last = {"serviceId": service_id, "batch": MAX_BATCH, "size": MAX_BATCH_SIZE}
    assert podium_env.call_private("/MigrationData/CopyBatch", last) == 0  # past the end: nothing to copy


def test_a_row_id_sqlite_cannot_hold_is_a_400(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 10)
    response = podium_env.post("/MigrationData/Write", {"serviceId": service_id, "id": 2**63, "payload": "x"})
    assert response.status_code == 400, response.text
    assert "id: Input should be less than or equal to 9223372036854775807" in response.json()["message"]
    assert stores.count(service_id, "legacy") == 10


def test_the_migration_steps_are_closed_to_clients_and_change_nothing(podium_env: PodiumEnv) -> None:
    service_id = seeded(podium_env, 10)
    before = podium_env.call("/MigrationData/Verify", {"serviceId": service_id})
    ref = {"serviceId": service_id}
    for path, body in [
        ("/MigrationData/SetDualWrite", {**ref, "enabled": True}),
        ("/MigrationData/CopyBatch", {**ref, "batch": 0, "size": 10}),
        ("/MigrationData/SwitchTraffic", ref),
        ("/MigrationData/DisableLegacy", ref),
    ]:
        podium_env.assert_private(path, body)

    after = podium_env.call("/MigrationData/Verify", ref)
    assert after == before
    assert (after["newRows"], after["routing"]) == (
        0,
        {"primary": "legacy", "dualWrite": False, "legacyEnabled": True},
    )


# -- crashes -------------------------------------------------------------------------------------------


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def crash_env(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.systems.migration.apps:app", log_file=tmp_path / "migration.log") as pair:
        yield pair


def test_kill_9_mid_batch_finishes_with_every_row_once(
    crash_env: tuple[PodiumEnv, DeploymentProcess],
) -> None:
    env, process = crash_env
    service_id = seeded(env, 250, "-slow")
    env.send(f"/MigrationSaga/{service_id}/Run", {"batchSize": 100, "pauseMs": 10})
    assert_eventually(
        lambda: (s := status_or_none(env, service_id)) and s["phase"] == "migrating", timeout=20
    )
    process.kill()
    process.start()
    done = assert_eventually(lambda: (s := status(env, service_id))["isComplete"] and s, timeout=90)
    assert done["phase"] == "completed"
    assert done["metadata"]["rowsCopied"] == 250
    assert stores.checksum(service_id, "new") == stores.checksum(service_id, "legacy")


def test_an_engine_restart_during_a_pause_resumes_the_migration(
    crash_env: tuple[PodiumEnv, DeploymentProcess], engine: Engine
) -> None:
    env, _ = crash_env
    service_id = seeded(env, 250)
    env.send(f"/MigrationSaga/{service_id}/Run", {"batchSize": 100, "pauseMs": 1500})
    assert_eventually(
        lambda: (s := status_or_none(env, service_id)) and s["metadata"].get("batchesDone") == 1, timeout=20
    )
    engine.kill()
    engine.start()
    done = assert_eventually(lambda: (s := status(env, service_id))["isComplete"] and s, timeout=90)
    assert done["phase"] == "completed"
    assert done["metadata"]["batchesDone"] == 3
