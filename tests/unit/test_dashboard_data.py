"""The dashboard's reading of saga logs: statuses, timelines from successive logs, per-minute stats."""

from __future__ import annotations

import datetime as dt

from podium import DeadLetter, SagaLog, SagaStatus, StepRecord, StepStatus
from podium.dashboard._data import (
    NEEDS_A_PERSON,
    MinuteRow,
    Saga,
    SagaFilter,
    ServiceInfo,
    _bars,
    _condition,
    sql_text,
    stats,
)

T0 = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)


def at(ms: int) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


def log(status: SagaStatus, *steps: tuple[str, StepStatus], **extra: object) -> SagaLog:
    return SagaLog(
        name="book",
        status=status,
        steps=[StepRecord(name=name, status=state) for name, state in steps],
        **extra,  # type: ignore[arg-type]
    )


def test_sql_text_doubles_quotes() -> None:
    assert sql_text("o'brien") == "'o''brien'"


def test_a_held_dead_letter_or_a_saga_past_its_pivot_needs_a_person() -> None:
    held = DeadLetter(saga="book", step="a", error="down", attempts=5, awakeable_id="sign_1")
    saga = Saga("travel", "Trips", "t-1", log(SagaStatus.COMPENSATING, dead_letters=[held]))
    assert saga.status == NEEDS_A_PERSON
    assert saga.current_step == "undo a (held)"
    assert Saga("travel", "Trips", "t-2", log(SagaStatus.NEEDS_ATTENTION)).status == NEEDS_A_PERSON
    assert Saga("travel", "Trips", "t-3", log(SagaStatus.COMPENSATED)).status == "compensated"
    running = log(SagaStatus.RUNNING, ("a", StepStatus.COMPLETED), ("b", StepStatus.REGISTERED))
    assert Saga("travel", "Trips", "t-4", running).current_step == "b"


def test_the_timeline_is_read_from_successive_logs() -> None:
    snapshots = [
        (at(0), log(SagaStatus.RUNNING, ("a", StepStatus.REGISTERED))),
        (at(40), log(SagaStatus.RUNNING, ("a", StepStatus.COMPLETED), ("b", StepStatus.REGISTERED))),
        (at(90), log(SagaStatus.COMPENSATING, ("a", StepStatus.COMPLETED), ("b", StepStatus.FAILED))),
        (at(120), log(SagaStatus.COMPENSATING, ("a", StepStatus.COMPLETED), ("b", StepStatus.COMPENSATED))),
        (at(150), log(SagaStatus.COMPENSATED, ("a", StepStatus.COMPENSATED), ("b", StepStatus.COMPENSATED))),
    ]
    bars = _bars(snapshots, snapshots[-1][1], at(160))
    drawn = [(b.step, b.kind, b.outcome, b.start, b.end) for b in bars]
    assert drawn == [
        ("a", "action", "completed", at(0), at(40)),
        ("a", "undo", "compensated", at(120), at(150)),
        ("b", "action", "failed", at(40), at(90)),
        ("b", "undo", "compensated", at(90), at(120)),
    ]


def test_a_running_step_and_a_held_compensation_run_until_now() -> None:
    held = DeadLetter(saga="book", step="a", error="down", attempts=2, awakeable_id="sign_1")
    final = log(
        SagaStatus.COMPENSATING, ("a", StepStatus.DEAD_LETTER), ("b", StepStatus.FAILED), dead_letters=[held]
    )
    snapshots = [
        (at(0), log(SagaStatus.RUNNING, ("a", StepStatus.REGISTERED))),
        (at(30), log(SagaStatus.RUNNING, ("a", StepStatus.COMPLETED), ("b", StepStatus.REGISTERED))),
        (at(60), log(SagaStatus.COMPENSATING, ("a", StepStatus.COMPLETED), ("b", StepStatus.FAILED))),
        (at(90), final),
    ]
    bars = {(b.step, b.kind): b for b in _bars(snapshots, final, None)}
    assert bars["b", "action"].outcome == "failed"
    assert ("b", "undo") not in bars  # its action failed and COMPENSATE_ALL has not reached it yet
    undo = bars["a", "undo"]  # held for a person: still going
    assert (undo.outcome, undo.start, undo.open) == ("held", at(60), True)
    assert undo.end > at(90)
    gone = final.model_copy(update={"dead_letters": [held.model_copy(update={"awakeable_id": None})]})
    undone = {(b.step, b.kind): b for b in _bars([*snapshots[:-1], (at(90), gone)], gone, at(95))}
    assert (undone["a", "undo"].outcome, undone["a", "undo"].end) == ("dead_letter", at(90))
    assert not undone["a", "undo"].open
    still = log(SagaStatus.RUNNING, ("a", StepStatus.REGISTERED))
    (running,) = _bars([(at(0), still)], still, at(500))
    assert (running.outcome, running.end, running.open) == ("running", at(500), True)


def test_stats_place_the_engines_counts_in_a_window_of_minutes_per_system() -> None:
    now = T0 + dt.timedelta(minutes=14, seconds=30)

    def minute(system: str, index: int, ended: int, compensated: int, p99: float) -> MinuteRow:
        return MinuteRow(system, T0 + dt.timedelta(minutes=index), ended, compensated, p99)

    rows = [
        minute("travel", 14, 2, 1, 0.4),
        minute("travel", 3, 1, 0, 1.0),
        minute("travel", -5, 1, 0, 1.0),  # before the window: left out
    ]
    banking, travel = stats(rows, {"banking": 1}, minutes=15, now=now)
    assert (banking.system, banking.running, sum(m.ended for m in banking.minutes)) == ("banking", 1, 0)
    assert travel.running == 0
    assert [m.ended for m in travel.minutes].count(0) == 13
    last = travel.minutes[-1]
    assert (last.at, last.ended, last.compensated, last.p99) == (T0 + dt.timedelta(minutes=14), 2, 1, 0.4)
    assert travel.minutes[3].ended == 1
    assert travel.minutes[0].p99 is None


def test_the_list_filter_quotes_what_a_person_typed() -> None:
    services = {"Trips": ServiceInfo("Trips", "travel", "Run")}
    where = SagaFilter(
        system="trav'el", status="needs a person", key="o'1", since_minutes=5, dead_letters=True
    )
    sql = _condition(where, services)
    assert "= 'trav''el'" in sql
    assert "strpos(s.service_key, 'o''1') > 0" in sql
    assert "INTERVAL '5 minutes'" in sql
    assert "WHEN 'Trips' THEN 'travel'" in sql
    assert _condition(SagaFilter(), services) == "(true)"


def test_a_dead_letter_retried_later_ends_its_bar_then() -> None:
    snapshots = [
        (at(0), log(SagaStatus.RUNNING, ("a", StepStatus.REGISTERED))),
        (at(10), log(SagaStatus.COMPENSATING, ("a", StepStatus.FAILED))),
        (at(50), log(SagaStatus.COMPENSATING, ("a", StepStatus.DEAD_LETTER))),
        (at(900), log(SagaStatus.COMPENSATED, ("a", StepStatus.COMPENSATED))),
    ]
    (_, undo) = _bars(snapshots, snapshots[-1][1], at(900))
    assert (undo.outcome, undo.start, undo.end) == ("compensated", at(10), at(900))
