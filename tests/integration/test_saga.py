"""Sagas against a real engine: order, counts, strategies, retries, dead letters, pivot, deadline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from podium import DeadLetterAction, IngressClient
from podium.testing import PodiumEnv, assert_eventually, new_key

pytestmark = pytest.mark.engine


def step(name: str, *, fail: int = 0, undo_fail: int = 0, undo: bool = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "action": {"failTimes": fail}, **extra}
    spec["undo"] = {"failTimes": undo_fail} if undo else None
    return spec


def run(env: PodiumEnv, steps: list[dict[str, Any]], **scenario: Any) -> tuple[str, dict[str, Any]]:
    key = new_key("saga")
    return key, env.call(f"/LabSaga/{key}/Run", {"steps": steps, **scenario})


def counts(env: PodiumEnv, key: str, step_name: str) -> dict[str, int]:
    answer: dict[str, int] = env.call_private(f"/LabEffects/{key}:{step_name}/Counts")
    return answer


def events(env: PodiumEnv, key: str) -> list[str]:
    answer: list[str] = env.call_private(f"/LabTracker/{key}/Events")
    return answer


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["log"]["steps"]}


def test_success_runs_each_action_once_and_no_undo(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("built-b"), step("c", undo=False)])
    assert result["completed"] is True
    assert result["log"]["status"] == "completed"
    assert statuses(result) == {"a": "completed", "built-b": "completed", "c": "completed"}
    for name in ("a", "built-b", "c"):
        assert counts(lab, key, name)["actions"] == 1
        assert counts(lab, key, name)["undos"] == 0
    assert lab.call(f"/LabSaga/{key}/Log")["status"] == "completed"


def test_without_a_kept_log_the_saga_compensates_alike_and_writes_no_state(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("b"), step("c", fail=-1)], keepLog=False)
    assert result["errorType"] == "SagaCompensated"
    assert statuses(result) == {"a": "compensated", "b": "compensated", "c": "compensated"}
    assert [e for e in events(lab, key) if e.startswith("undo:")] == ["undo:c", "undo:b", "undo:a"]
    assert lab.call(f"/LabSaga/{key}/Log") is None  # nothing in state: the log lived in memory only


def test_failure_compensates_every_registered_step_in_reverse_once(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("built-b"), step("c", fail=-1), step("d")])
    assert result["completed"] is False
    assert result["errorType"] == "SagaCompensated"
    assert "action of c failed" in result["error"]
    # c's action failed, but under COMPENSATE_ALL its undo still runs (it might have taken effect).
    assert statuses(result) == {"a": "compensated", "built-b": "compensated", "c": "compensated"}
    assert [e for e in events(lab, key) if e.startswith("undo:")] == ["undo:c", "undo:built-b", "undo:a"]
    for name in ("a", "built-b", "c"):
        assert counts(lab, key, name)["undos"] == 1
    assert counts(lab, key, "d") == {"actions": 0, "actionAttempts": 0, "undos": 0, "undoAttempts": 0}


def test_compensate_completed_skips_the_failed_step(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("b"), step("c", fail=-1)], strategy="completed")
    assert statuses(result) == {"a": "compensated", "b": "compensated", "c": "failed"}
    assert [e for e in events(lab, key) if e.startswith("undo:")] == ["undo:b", "undo:a"]
    assert counts(lab, key, "c")["undoAttempts"] == 0


def test_a_compensation_failing_twice_then_succeeding_is_retried(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("b", undo_fail=2), step("c", fail=-1)], retryAttempts=3)
    assert result["errorType"] == "SagaCompensated"
    b = next(s for s in result["log"]["steps"] if s["name"] == "b")
    assert (b["status"], b["compensationAttempts"]) == ("compensated", 3)
    assert counts(lab, key, "b")["undoAttempts"] == 3
    assert counts(lab, key, "b")["undos"] == 1


def test_a_compensation_that_never_succeeds_is_a_dead_letter_and_stops(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("b", undo_fail=-1), step("c", fail=-1)], retryAttempts=2)
    assert result["errorType"] == "CompensationFailed"
    assert "compensation failed for b" in result["error"]
    assert result["log"]["status"] == "failed"
    assert statuses(result) == {"a": "not_compensated", "b": "dead_letter", "c": "compensated"}
    (letter,) = result["log"]["deadLetters"]
    assert letter == {
        "saga": "lab",
        "step": "b",
        "payload": {"step": "b"},
        "error": "undo of b failed (attempt 2)",
        "attempts": 2,
        "awakeableId": None,
        "resolution": None,
        "note": None,
        "by": None,
    }
    assert counts(lab, key, "a")["undoAttempts"] == 0  # left for a person, in order
    assert lab.call(f"/LabSaga/{key}/Log")["deadLetters"] == [letter]


def test_best_effort_continues_past_a_dead_letter(lab: PodiumEnv) -> None:
    key, result = run(
        lab, [step("a"), step("b", undo_fail=-1), step("c", fail=-1)], strategy="best_effort", retryAttempts=2
    )
    assert result["errorType"] == "CompensationFailed"
    assert statuses(result) == {"a": "compensated", "b": "dead_letter", "c": "compensated"}
    assert counts(lab, key, "a")["undos"] == 1


def test_parallel_compensation_undoes_everything(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("b", undo_fail=1), step("c", fail=-1)], strategy="parallel")
    assert result["errorType"] == "SagaCompensated"
    assert set(statuses(result).values()) == {"compensated"}
    assert counts(lab, key, "b")["undoAttempts"] == 2
    for name in ("a", "b", "c"):
        assert counts(lab, key, name)["undos"] == 1


def test_parallel_steps_all_finish_before_compensating(lab: PodiumEnv) -> None:
    key, result = run(
        lab, [step("a"), step("b", fail=-1), step("c")], parallelSteps=True, strategy="completed"
    )
    assert statuses(result) == {"a": "compensated", "b": "failed", "c": "compensated"}
    assert counts(lab, key, "c")["actions"] == 1


def test_after_the_pivot_failures_are_retried_forward_not_compensated(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("p", pivot=True, undo=False), step("c", fail=2)], retryAttempts=3)
    assert result["completed"] is True
    assert result["log"]["pivot"] == "p"
    assert counts(lab, key, "c")["actionAttempts"] == 3
    assert counts(lab, key, "c")["actions"] == 1
    assert counts(lab, key, "a")["undoAttempts"] == 0


def test_after_the_pivot_a_step_that_keeps_failing_needs_a_person(lab: PodiumEnv) -> None:
    key, result = run(
        lab, [step("a"), step("p", pivot=True, undo=False), step("c", fail=-1)], retryAttempts=2
    )
    assert result["errorType"] == "ManualInterventionNeeded"
    assert "point of no return (p)" in result["error"]
    assert result["log"]["status"] == "needs_attention"
    assert counts(lab, key, "c")["actionAttempts"] == 2
    assert counts(lab, key, "a")["undoAttempts"] == 0  # nothing is rolled back after the pivot


def test_a_failing_pivot_still_compensates(lab: PodiumEnv) -> None:
    key, result = run(lab, [step("a"), step("p", pivot=True, fail=-1, undo=False)])
    assert result["errorType"] == "SagaCompensated"
    assert result["log"]["pivot"] is None
    assert counts(lab, key, "a")["undos"] == 1


def test_the_deadline_cancels_the_running_step_and_compensates(lab: PodiumEnv) -> None:
    slow = step("b")
    slow["action"]["slowMs"] = 2_000
    key, result = run(lab, [step("a"), slow, step("c")], timeoutMs=300)
    assert result["errorType"] == "SagaCompensated"
    assert "lab timed out after 0:00:00.300000 during b" in result["error"]
    assert statuses(result) == {"a": "compensated", "b": "compensated"}
    assert counts(lab, key, "c")["actionAttempts"] == 0


def test_cancelling_the_invocation_compensates(lab: PodiumEnv) -> None:
    key = new_key("saga")
    slow = step("b")
    slow["action"]["slowMs"] = 5_000
    invocation = lab.send(f"/LabSaga/{key}/Run", {"steps": [step("a"), slow, step("c")]})
    assert_eventually(lambda: "action-started:b" in events(lab, key), message="step b to start")
    lab.cancel(invocation)
    log = assert_eventually(
        lambda: (log := lab.call(f"/LabSaga/{key}/Log")) and log["status"] == "compensated" and log,
        timeout=30,
    )
    assert "cancelled" in log["failure"]
    assert counts(lab, key, "a")["undos"] == 1
    assert counts(lab, key, "c")["actionAttempts"] == 0


def test_bad_scenario_is_a_400(lab: PodiumEnv) -> None:
    response = lab.post(
        f"/LabSaga/{new_key('saga')}/Run", {"steps": [{"name": "a"}], "strategy": "sometimes"}
    )
    assert response.status_code == 400
    assert (
        "strategy: Input should be 'all', 'completed', 'best_effort' or 'parallel'"
        in response.json()["message"]
    )


@pytest.mark.parametrize("when", ["build", "await"])
def test_a_step_whose_request_does_not_validate_fails_and_the_saga_compensates(
    lab: PodiumEnv, when: str
) -> None:
    key, result = run(lab, [step("a"), step("b", invalid=when), step("c")], strategy="completed")
    assert result["errorType"] == "SagaCompensated"
    assert "invalid value: failTimes: Input should be a valid integer" in result["error"]
    assert statuses(result) == {"a": "compensated", "b": "failed"}
    assert counts(lab, key, "a") == {"actions": 1, "actionAttempts": 1, "undos": 1, "undoAttempts": 1}
    # b never reached its effect (its request could not be built), and nothing after it ran.
    assert counts(lab, key, "b")["actionAttempts"] == 0
    assert counts(lab, key, "c")["actionAttempts"] == 0


def test_a_value_that_does_not_validate_between_steps_compensates(lab: PodiumEnv) -> None:
    key = new_key("saga")
    response = lab.post(f"/LabSaga/{key}/Run", {"steps": [step("a"), step("b", invalid="body")]})
    assert counts(lab, key, "a")["undos"] == 1, "step a was left done: nothing compensated it"
    assert response.status_code == 200, response.text
    assert response.json()["errorType"] == "SagaCompensated"


def held_letter(env: PodiumEnv, key: str) -> dict[str, Any]:
    def open_letter() -> dict[str, Any]:
        log = env.call(f"/LabSaga/{key}/Log")
        assert log is not None
        assert log["deadLetters"], log
        letter: dict[str, Any] = log["deadLetters"][-1]
        assert letter["awakeableId"], letter
        return letter

    return assert_eventually(open_letter, message="a dead letter held for a person")


def test_a_held_dead_letter_retried_after_the_fault_is_gone_ends_compensated(lab: PodiumEnv) -> None:
    key = new_key("saga")
    scenario = {"steps": [step("a"), step("b", undo_fail=2), step("c", fail=-1)], "retryAttempts": 2}
    invocation = lab.send(f"/LabSaga/{key}/Run", {**scenario, "holdMs": 600_000})
    letter = held_letter(lab, key)
    assert (letter["step"], letter["attempts"], letter["resolution"]) == ("b", 2, None)
    assert counts(lab, key, "a")["undoAttempts"] == 0  # the rollback waits in order
    with IngressClient(lab.ingress_url) as client:
        client.act_on_dead_letter(letter["awakeableId"], DeadLetterAction(action="retry", by="ops-1"))
        result = client.attach(invocation)
    assert result["errorType"] == "SagaCompensated"
    assert statuses(result) == {"a": "compensated", "b": "compensated", "c": "compensated"}
    (closed,) = result["log"]["deadLetters"]
    assert (closed["resolution"], closed["by"], closed["awakeableId"]) == ("compensated", "ops-1", None)
    assert counts(lab, key, "b")["undos"] == 1
    assert counts(lab, key, "a")["undos"] == 1


def test_a_held_dead_letter_resolved_by_hand_records_the_note_and_goes_on(lab: PodiumEnv) -> None:
    key = new_key("saga")
    scenario = {"steps": [step("a"), step("b", undo_fail=-1), step("c", fail=-1)], "retryAttempts": 2}
    invocation = lab.send(f"/LabSaga/{key}/Run", {**scenario, "holdMs": 600_000})
    letter = held_letter(lab, key)
    note = "refunded by hand in the back office, ticket 4711"
    with IngressClient(lab.ingress_url) as client:
        client.act_on_dead_letter(
            letter["awakeableId"], DeadLetterAction(action="resolve", note=note, by="ops-2")
        )
        result = client.attach(invocation)
    assert result["errorType"] == "SagaCompensated"
    assert "resolved by hand: b" in result["error"]
    assert statuses(result) == {"a": "compensated", "b": "resolved", "c": "compensated"}
    (closed,) = result["log"]["deadLetters"]
    assert (closed["resolution"], closed["note"], closed["by"]) == ("resolved", note, "ops-2")
    assert counts(lab, key, "b")["undos"] == 0


def test_a_retry_that_fails_again_holds_the_dead_letter_again(lab: PodiumEnv) -> None:
    key = new_key("saga")
    scenario = {"steps": [step("b", undo_fail=4), step("c", fail=-1, undo=False)], "retryAttempts": 2}
    invocation = lab.send(f"/LabSaga/{key}/Run", {**scenario, "holdMs": 600_000})
    first = held_letter(lab, key)
    with IngressClient(lab.ingress_url) as client:
        client.act_on_dead_letter(first["awakeableId"], DeadLetterAction(action="retry"))
        second = assert_eventually(
            lambda: (letter := held_letter(lab, key))["awakeableId"] != first["awakeableId"] and letter
        )
        assert second["attempts"] == 4
        client.act_on_dead_letter(second["awakeableId"], DeadLetterAction(action="retry"))
        result = client.attach(invocation)
    assert statuses(result) == {"b": "compensated", "c": "failed"}
    assert counts(lab, key, "b")["undoAttempts"] == 5


def test_nobody_acting_within_the_hold_ends_the_saga_failed(lab: PodiumEnv) -> None:
    _, result = run(
        lab, [step("a"), step("b", undo_fail=-1), step("c", fail=-1)], retryAttempts=1, holdMs=300
    )
    assert result["errorType"] == "CompensationFailed"
    assert statuses(result) == {"a": "not_compensated", "b": "dead_letter", "c": "compensated"}
    (letter,) = result["log"]["deadLetters"]
    assert (letter["awakeableId"], letter["resolution"]) == (None, None)


def test_the_saga_log_names_its_invocation(lab: PodiumEnv) -> None:
    key = new_key("saga")
    invocation = lab.send(f"/LabSaga/{key}/Run", {"steps": [step("a")]})
    assert_eventually(lambda: (lab.call(f"/LabSaga/{key}/Log") or {}).get("invocationId") == invocation)


def test_resolving_a_dead_letter_needs_a_note() -> None:
    with pytest.raises(ValidationError, match="required to resolve a dead letter"):
        DeadLetterAction(action="resolve", note="  ")
    assert DeadLetterAction(action="retry").note is None
