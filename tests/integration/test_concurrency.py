"""fan_out, fan_out_fail, map_concurrent, race and with_timeout against a real engine."""

from __future__ import annotations

import random
from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key

pytestmark = pytest.mark.engine


def items(delays: list[int], fail: set[int] = frozenset(), tracker: str = "none") -> list[dict[str, Any]]:
    return [
        {"id": f"i{n}", "delayMs": d, "fail": n in fail, "tracker": tracker} for n, d in enumerate(delays)
    ]


def max_overlap(results: list[dict[str, Any]]) -> int:
    """The most intervals [startedAt, endedAt] open at one moment."""
    edges = sorted([(r["startedAt"], 1) for r in results] + [(r["endedAt"], -1) for r in results])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def cancelled(env: PodiumEnv, tracker: str) -> set[str]:
    return {
        e.split(":", 1)[1]
        for e in env.call_private(f"/LabTracker/{tracker}/Events")
        if e.startswith("cancelled:")
    }


def test_fan_out_returns_results_in_input_order_whatever_the_completion_order(lab: PodiumEnv) -> None:
    delays = [600, 400, 200, 0, 300, 100]
    random.Random(7).shuffle(delays)
    summary = lab.call("/LabPatterns/FanOut", {"items": items(delays, fail={2})})
    assert [r["id"] if r else None for r in summary["results"]] == ["i0", "i1", None, "i3", "i4", "i5"]
    assert summary["errors"][2] == "item i2 failed"
    assert summary["errors"].count(None) == 5
    assert (summary["succeeded"], summary["failed"]) == (5, 1)
    ended = {r["id"]: r["endedAt"] for r in summary["results"] if r}
    assert sorted(ended, key=ended.get) != [r for r in ended]  # they did finish in another order


def test_fan_out_fail_cancels_the_pending_calls_on_the_first_failure(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    summary = lab.call(
        "/LabPatterns/FanOutFail", {"items": items([0, 50, 30_000, 30_000], fail={1}, tracker=tracker)}
    )
    assert summary["statuses"] == ["succeeded", "failed", "cancelled", "cancelled"]
    assert "item i1 failed" in summary["error"]
    assert_eventually(lambda: cancelled(lab, tracker) == {"i2", "i3"}, message="the losers to be cancelled")


def test_fan_out_fail_returns_every_value_in_order_when_all_succeed(lab: PodiumEnv) -> None:
    summary = lab.call("/LabPatterns/FanOutFail", {"items": items([300, 0, 150])})
    assert [r["id"] for r in summary["results"]] == ["i0", "i1", "i2"]
    assert summary["error"] is None


def test_batch_never_exceeds_the_cap_and_keeps_input_order(lab: PodiumEnv) -> None:
    delays = [random.Random(n).randint(50, 400) for n in range(12)]
    summary = lab.call("/LabPatterns/Batch", {"items": items(delays), "maxConcurrency": 3})
    results = summary["results"]
    assert [r["id"] for r in results] == [f"i{n}" for n in range(12)]
    assert summary["maxInFlight"] == 3
    assert max_overlap(results) <= 3


def test_batch_is_a_sliding_window_not_fixed_chunks(lab: PodiumEnv) -> None:
    # With chunks of two, item 2 would wait for the slow item 0; a window starts it when item 1 ends.
    summary = lab.call("/LabPatterns/Batch", {"items": items([2000, 50, 50, 50]), "maxConcurrency": 2})
    first, _, third, fourth = summary["results"]
    assert third["startedAt"] < first["endedAt"]
    assert fourth["startedAt"] < first["endedAt"]


def test_batch_policy_max_failures_stops_and_cancels(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    summary = lab.call(
        "/LabPatterns/Batch",
        {
            "items": items([0, 30_000, 0, 0, 0], fail={0}, tracker=tracker),
            "maxConcurrency": 2,
            "maxFailures": 0,
        },
    )
    assert summary["statuses"] == ["failed", "cancelled", "not_started", "not_started", "not_started"]
    assert "batch failed after 1 failures" in summary["error"]
    assert_eventually(lambda: cancelled(lab, tracker) == {"i1"})


def test_batch_policy_min_successes_finishes_early(lab: PodiumEnv) -> None:
    summary = lab.call(
        "/LabPatterns/Batch",
        {"items": items([0, 0, 30_000, 30_000, 30_000]), "maxConcurrency": 3, "minSuccesses": 2},
    )
    assert summary["error"] is None
    assert summary["succeeded"] == 2
    statuses = summary["statuses"]
    assert statuses[:3] == ["succeeded", "succeeded", "cancelled"]
    assert statuses[3] in ("cancelled", "not_started")  # started only if item 0 finished before item 1
    assert statuses[4] == "not_started"


def test_batch_tolerates_failures_under_the_limit(lab: PodiumEnv) -> None:
    summary = lab.call(
        "/LabPatterns/Batch",
        {"items": items([0, 0, 0, 0], fail={1, 3}), "maxConcurrency": 2, "maxFailures": 2},
    )
    assert summary["error"] is None
    assert summary["statuses"] == ["succeeded", "failed", "succeeded", "failed"]


def test_race_first_success_wins_and_losers_are_cancelled(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    summary = lab.call("/LabPatterns/Race", {"items": items([30_000, 0, 30_000], tracker=tracker)})
    assert summary["index"] == 1
    assert summary["value"]["id"] == "i1"
    assert summary["cancelled"] == [0, 2]
    assert_eventually(lambda: cancelled(lab, tracker) == {"i0", "i2"})


def test_race_ignores_failures_while_another_can_win(lab: PodiumEnv) -> None:
    summary = lab.call("/LabPatterns/Race", {"items": items([0, 300], fail={0})})
    assert summary["index"] == 1


def test_race_all_failed_carries_every_cause(lab: PodiumEnv) -> None:
    response = lab.post("/LabPatterns/Race", {"items": items([0, 100], fail={0, 1})})
    assert response.status_code == 502
    message = response.json()["message"]
    assert "every contender failed" in message
    assert "item i0 failed" in message
    assert "item i1 failed" in message


def test_with_timeout_gives_the_value_in_time(lab: PodiumEnv) -> None:
    summary = lab.call("/LabPatterns/Timeout", {"item": items([0])[0], "timeoutMs": 10_000})
    assert summary == {"timedOut": False, "value": summary["value"]}
    assert summary["value"]["id"] == "i0"


def test_with_timeout_times_out_and_cancels_the_call(lab: PodiumEnv) -> None:
    tracker = new_key("tracker")
    item = items([30_000], tracker=tracker)[0]
    summary = lab.call("/LabPatterns/Timeout", {"item": item, "timeoutMs": 300})
    assert summary == {"timedOut": True, "value": None}
    assert_eventually(lambda: cancelled(lab, tracker) == {"i0"})
