"""``kill -9`` under load, against the whole stack as ``podium up`` runs it, its supervisor included.

``podium up`` starts the engine, seven deployments (``common``, ``travel``, ``banking``, and the shop's
four: ``shop``, ``shop-inventory``, ``shop-shipping``, ``shop-notify``; travel, banking and shop with two
granian workers each) and the gateway, on free ports, with a data directory of the
test's own. Mixed load (bank transfers, trip bookings, shop orders, 3:2:1; :class:`tests.chaos.load.Load`)
goes through the gateway with a token, :data:`RATE` requests a second for :data:`LOAD`, on a schedule
(an open loop, from a thread). Meanwhile the test kills with SIGKILL, at moments drawn at random,
:data:`KILLS` times in all: single granian workers, whole deployments (the master's process group),
the engine and the gateway, each at least once. Before it kills a unit it waits for the supervisor to
say, in its state file, that the unit runs with all its workers; after, it waits for the state file to
say the unit runs again (in another process, one restart more; a worker: another pid in its place).

Then, with nothing restarted by the test: ``podium up`` ran the whole time and printed every crash and
every restart; every unit runs, with as many restarts as it had kills, and those never killed whole kept
their process; every accepted request ended; and the checker (:func:`tests.chaos.checker.check_all`)
finds nothing: 0 lost, money conserved, ledgers right, no hold left, trips confirmed or fully
compensated, inventory and shop stock conserved, each charge, refund and email made once at the
simulated providers, no invocation backing off or paused. Ctrl-C stops it all and leaves no process.

The moments, kinds and targets of the kills and the load's mix come from one seed, printed at the start
and taken from ``PODIUM_CHAOS_SEED`` when it is set, so a failing run can be replayed::

    PODIUM_CHAOS_SEED=123456 .venv/bin/pytest -s tests/chaos/test_kills.py

The figures of the run (requests, kills, the supervisor's recovery time for each, the drain) are
printed at the end (``-s`` shows them); docs/operations.md quotes some.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import pytest

from podium.runtime import StackState, UnitState, UnitStatus, free_port
from podium.testing import assert_eventually, new_key, query
from tests.chaos.checker import FINAL, Facts, check_all, figures
from tests.chaos.gather import Stack, gather, snapshot, wait_until_ended
from tests.chaos.load import Load, Request
from tests.integration.stack import Up, alive, children
from tests.systems.deployments import podium_config

pytestmark = pytest.mark.engine

SEED_ENV = "PODIUM_CHAOS_SEED"
"""Set it to replay a run: the seed decides the load's mix and the kills' moments, kinds and targets."""
RATE = 20
"""Requests a second the load sends (transfers, trips, orders 3:2:1)."""
LOAD = timedelta(minutes=2)
"""How long the load runs."""
KILLS = 10
"""SIGKILLs in a run: at least one of each kind, the others drawn."""
FIRST_KILL = (4.0, 8.0)
"""Seconds into the load before the first kill (drawn between the two)."""
GAP = (6.0, 10.0)
"""Seconds between two planned kills (drawn); a kill comes later when its unit is not back yet."""
RESPAWN_QUIET = 6.0
"""Seconds between a worker's replacement and the next worker kill in that deployment: granian gives up
(its master exits) when a worker it replaced less than 5.5 s before dies again, which would turn a
worker kill into a deployment kill."""
ACCOUNTS = 32
"""Bank accounts the transfers move money between: enough that few trip the fraud check's velocity rule
(more than 30 transfers out of one account within a minute), so most transfers complete."""
WORKERS = {
    "common": 1,
    "travel": 2,
    "banking": 2,
    "shop": 2,
    "shop-inventory": 1,
    "shop-shipping": 1,
    "shop-notify": 1,
}
"""The deployments the load needs (their apps as the project's ``[tool.podium]`` names them), with their
granian workers; those with two have workers to kill."""
APPS = {d["name"]: d["app"] for d in podium_config()["deployments"]}
SCOPES = (
    "banking:operator",
    "banking:write",
    "banking:read",
    "travel:write",
    "travel:read",
    "shop:write",
    "shop:read",
)
"""What the load's token carries: opening accounts, sending, and reading the invocations' results."""
SENDERS = 320
"""Requests under way at once, at most (threads and connections): enough for 15 s of load held up by a
door that is restarting, so the schedule holds."""
BACK_WITHIN = 90.0
"""Seconds the supervisor gets to bring a killed process back before the test calls it a failure."""

KillKind = Literal["worker", "deployment", "engine", "gateway"]
KINDS: tuple[KillKind, ...] = ("worker", "deployment", "engine", "gateway")
WEIGHTS = (3, 3, 2, 1)
"""How often each kind is drawn beyond the one of each every run has."""


class KillsUp(Up):
    """``podium up`` on free ports (tests/integration/test_cli.py's helper) serving the load's deployments."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        entries = "".join(
            f'  {{ name = "{name}", app = "{APPS[name]}", port = {free_port()}, workers = {workers} }},\n'
            for name, workers in WORKERS.items()
        )
        self.config.write_text(f"[tool.podium]\ndeployments = [\n{entries}]\n")

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway}"


@dataclass(frozen=True)
class Planned:
    """A kill to make: when (seconds into the load), what kind, which unit."""

    into_load: float
    kind: KillKind
    unit: str


@dataclass
class Kill:
    """A kill made, and when the state file said the unit ran again."""

    planned: Planned
    pid: int
    """The process killed: a worker's pid, a deployment's master (its process group), the engine's, the
    gateway's."""
    at: datetime
    """When the signal was sent (UTC)."""
    into_load: float
    """Seconds into the load it was sent (later than planned when the unit was not back yet)."""
    back: datetime
    """When the unit ran again, by the state file: its ``started_at``; a worker's replacement: the
    ``updated_at`` of the state that first listed it."""
    noticed: datetime | None = None
    """When the supervisor saw the exit (``last_exit.at``); None for a worker, whose exit it does not
    time."""
    new_pid: int | None = None
    """The unit's new main process (whole kills)."""

    @property
    def recovery(self) -> float:
        """Seconds from the signal to the unit running again."""
        return (self.back - self.at).total_seconds()

    @property
    def label(self) -> str:
        """The unit as ``podium up`` names it: ``engine``, ``gateway``, ``deployment travel``."""
        return (
            self.planned.unit
            if self.planned.unit in ("engine", "gateway")
            else f"deployment {self.planned.unit}"
        )


def plan(rng: random.Random) -> list[Planned]:
    """:data:`KILLS` kills: one of each kind, the rest drawn by :data:`WEIGHTS`, at drawn moments."""
    kinds = [*KINDS, *rng.choices(KINDS, weights=WEIGHTS, k=KILLS - len(KINDS))]
    rng.shuffle(kinds)
    with_workers = sorted(name for name, n in WORKERS.items() if n > 1)
    planned, moment = [], rng.uniform(*FIRST_KILL)
    for kind in kinds:
        if kind == "worker":
            unit = rng.choice(with_workers)
        elif kind == "deployment":
            unit = rng.choice(sorted(WORKERS))
        else:
            unit = kind
        planned.append(Planned(round(moment, 1), kind, unit))
        moment += rng.uniform(*GAP)
    assert moment - GAP[0] < LOAD.total_seconds(), "the kills must fit in the load"
    return planned


def unit_of(stack: StackState, name: str) -> UnitStatus:
    (found,) = [unit for unit in stack.units if unit.name == name]
    return found


def whole(up: KillsUp, name: str) -> UnitStatus:
    """``name`` once the state file says it runs with all its workers (polled)."""

    def running() -> UnitStatus:
        unit = up.unit(name)
        assert unit.state is UnitState.RUNNING, f"{name} is {unit.state}"
        assert len(unit.workers) == WORKERS.get(name, 0), f"{name} has workers {unit.workers}"
        return unit

    found: UnitStatus = assert_eventually(running, timeout=BACK_WITHIN, message=f"{name} to run")
    return found


class Killer:
    """Makes the planned kills on schedule, each once its unit is whole, and waits for it to come back."""

    def __init__(self, up: KillsUp, supervisor: subprocess.Popen[bytes], rng: random.Random) -> None:
        self.up = up
        self.supervisor = supervisor
        self.rng = rng
        self.kills: list[Kill] = []
        self._respawned: dict[str, float] = {}
        """Monotonic time at which each deployment's last replaced worker was seen."""

    def run(self, planned: list[Planned], load_start: float, stop: threading.Event) -> list[Kill]:
        for kill in planned:
            due = load_start + kill.into_load
            if kill.kind == "worker" and kill.unit in self._respawned:
                due = max(due, self._respawned[kill.unit] + RESPAWN_QUIET)
            # Pacing the schedule (the load runs meanwhile); the test's checks all poll the state file.
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            self.kills.append(self.make(kill, load_start))
        return self.kills

    def make(self, planned: Planned, load_start: float) -> Kill:
        unit = whole(self.up, planned.unit)
        stack = self.up.stack()
        assert self.supervisor.poll() is None, "podium up exited"
        assert (stack.pid, stack.state) == (self.supervisor.pid, "running")
        if planned.kind == "worker":
            victim = self.rng.choice(sorted(unit.workers))
            os.kill(victim, signal.SIGKILL)
        elif planned.kind == "deployment":
            assert unit.pid is not None
            victim = unit.pid
            os.killpg(victim, signal.SIGKILL)  # the master and its workers
        else:
            assert unit.pid is not None
            victim = unit.pid
            os.kill(victim, signal.SIGKILL)
        at, into_load = datetime.now(UTC), time.monotonic() - load_start
        if planned.kind == "worker":
            back = self._replaced(unit, victim)
            self._respawned[unit.name] = time.monotonic()
            return Kill(planned, victim, at, into_load, back=back)
        after = self._restarted(unit)
        assert after.last_exit is not None
        assert after.started_at is not None
        assert after.last_exit.signal == "SIGKILL", after.last_exit
        return Kill(
            planned,
            victim,
            at,
            into_load,
            back=after.started_at,
            noticed=after.last_exit.at,
            new_pid=after.pid,
        )

    def _replaced(self, before: UnitStatus, victim: int) -> datetime:
        """When the state file first listed the worker granian started in ``victim``'s place."""

        def replaced() -> StackState:
            stack = self.up.stack()
            unit = unit_of(stack, before.name)
            if unit.pid != before.pid:
                pytest.fail(f"{before.name}: its master exited when worker {victim} was killed ({unit})")
            assert unit.worker_restarts == before.worker_restarts + 1, unit
            assert victim not in unit.workers, unit
            assert len(unit.workers) == len(before.workers), unit
            return stack

        stack: StackState = assert_eventually(
            replaced, timeout=BACK_WITHIN, interval=0.05, message=f"a worker in place of {victim}"
        )
        return stack.updated_at

    def _restarted(self, before: UnitStatus) -> UnitStatus:
        def restarted() -> UnitStatus:
            unit = self.up.unit(before.name)
            assert unit.state is UnitState.RUNNING, unit
            assert unit.pid != before.pid, unit
            assert unit.restarts == before.restarts + 1, unit
            return unit

        unit: UnitStatus = assert_eventually(
            restarted, timeout=BACK_WITHIN, interval=0.05, message=f"{before.name} to run again"
        )
        return unit


@pytest.fixture
def seed() -> int:
    chosen = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1_000_000))
    print(f"\nchaos seed {chosen} (replay: {SEED_ENV}={chosen} pytest -s tests/chaos/test_kills.py)")
    return chosen


@pytest.fixture
def up(tmp_path: Path) -> KillsUp:
    print(f"podium up's data, logs and output in {tmp_path}")
    return KillsUp(tmp_path)


@dataclass
class Timeline:
    """Moments of the run, for the figures (UTC; the engine's timestamps are too)."""

    began: datetime = field(default_factory=lambda: datetime.now(UTC))
    up: datetime | None = None
    """``podium up`` said it was up."""
    load_start: datetime | None = None
    load_end: datetime | None = None
    """Every request of the load was accepted (or refused)."""
    finished: datetime | None = None
    """The engine completed the run's last invocation (its ``completed_at``; reads left out)."""
    confirmed: datetime | None = None
    """The test had read every accepted request's final status."""
    gathered: datetime | None = None


READS = ("Get", "GetBooking", "Events")
"""The read handlers :mod:`tests.chaos.gather` calls: invocations of the test's, not of the load's."""


def finished_at(admin_url: str, tag: str) -> datetime:
    """When the engine completed the last invocation of the run tagged ``tag`` (its reads left out)."""
    reads = ", ".join(f"'{name}'" for name in READS)
    (row,) = query(
        admin_url,
        "SELECT max(completed_at) AS last FROM sys_invocation "
        f"WHERE target_service_key LIKE '%{tag}%' AND target_handler_name NOT IN ({reads})",
    )
    return datetime.fromisoformat(row["last"])


@pytest.mark.timeout(600)
def test_kill_9_under_load_brings_everything_back_and_loses_nothing(seed: int, up: KillsUp) -> None:
    timeline = Timeline()
    rng = random.Random(seed)
    planned = plan(rng)
    with (
        up.running() as process,
        Stack(up.ingress_url, up.admin_url, up.data / "providers") as facts_stack,
        httpx.Client(
            base_url=up.gateway_url,
            timeout=30,
            limits=httpx.Limits(max_connections=SENDERS, max_keepalive_connections=64),
        ) as client,
    ):
        timeline.up = datetime.now(UTC)
        first = {unit.name: whole(up, unit.name) for unit in up.stack().units}
        assert set(first) == {"engine", *WORKERS, "gateway", "dashboard"}
        client.headers["authorization"] = f"Bearer {up.token(*SCOPES)}"
        before = snapshot(facts_stack)
        tag = new_key("kill")
        load = Load(client, tag=tag, seed=seed)
        load.open_accounts(ACCOUNTS)
        requests = load.mix(int(RATE * LOAD.total_seconds()) + 1)
        killer = Killer(up, process, rng)
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="open-loop") as runner:
            timeline.load_start, load_start = datetime.now(UTC), time.monotonic()
            sending = runner.submit(load.send_open_loop, requests, rate=RATE, stop=stop, senders=SENDERS)
            try:
                kills = killer.run(planned, load_start, stop)
            except BaseException:
                stop.set()  # the kills went wrong: send no more
                raise
            finally:
                sent = sending.result()
                timeline.load_end = datetime.now(UTC)
                print(report_load(seed, sent, killer.kills))
        assert len(sent) == len(requests)
        assert process.poll() is None, "podium up exited during the load"
        wait_until_ended(facts_stack, sent, timeout=180)
        timeline.confirmed = datetime.now(UTC)
        timeline.finished = finished_at(up.admin_url, tag)
        facts = gather(facts_stack, load, before)
        timeline.gathered = datetime.now(UTC)
        print(report_outcome(sent, facts, kills, timeline))
        last, said, spawned = up.stack(), up.said(), children(process)

        assert [f"{r.kind} {r.key}: {r.refused}" for r in sent if not r.accepted] == []
        assert check_all(facts) == []
        # The stack never went down as a whole: the same podium up ran from start to end, and every unit
        # runs, with one restart per kill of it; those never killed whole kept their first process.
        assert process.poll() is None
        assert (last.pid, last.state) == (process.pid, "running")
        whole_kills = Counter(k.planned.unit for k in kills if k.planned.kind != "worker")
        worker_kills = Counter(k.planned.unit for k in kills if k.planned.kind == "worker")
        for unit in last.units:
            assert unit.state is UnitState.RUNNING, unit
            assert len(unit.workers) == WORKERS.get(unit.name, 0), unit
            assert (unit.restarts, unit.worker_restarts) == (whole_kills[unit.name], worker_kills[unit.name])
            if not whole_kills[unit.name]:
                assert unit.pid == first[unit.name].pid, unit
        # podium up printed every crash and every restart.
        for kill in kills:
            if kill.planned.kind == "worker":
                assert f"{kill.label}: worker pid {kill.pid} exited; its master starts another" in said
                assert f"replaced pid {kill.pid}" in said
            else:
                assert f"{kill.label} exited (killed by SIGKILL); restarting in" in said
                assert f"{kill.label} restarted (pid {kill.new_pid}, restart" in said
        assert said.count(" exited (") == sum(whole_kills.values())
        assert "left failed" not in said
    # Ctrl-C (up.running sends SIGINT on leaving): everything stopped, nothing left behind.
    assert process.returncode == 0
    assert "stopping ..." in up.said()
    assert [child.pid for child in spawned if alive(child.pid)] == []
    assert up.stack().state == "stopped"
    print(f"stopped with Ctrl-C; {seconds(timeline.began, datetime.now(UTC)):.0f} s in all")


def seconds(start: datetime | None, end: datetime | None) -> float:
    assert start is not None
    assert end is not None
    return (end - start).total_seconds()


def report_load(seed: int, sent: list[Request], kills: list[Kill]) -> str:
    """The load as sent and the kills, with the supervisor's recovery time for each."""
    lines = [f"\n== kill -9 under load: seed {seed} =="]
    times = sorted(r.sent_at for r in sent if r.sent_at is not None)
    if len(times) > 1:
        lines.append(
            f"load: {len(sent)} requests over {times[-1] - times[0]:.1f} s "
            f"({(len(times) - 1) / (times[-1] - times[0]):.1f}/s); {sum(len(r.replies) > 1 for r in sent)} "
            f"sent again after a network error or a 502/503/504 ({sum(len(r.replies) - 1 for r in sent)} "
            "retries in all)"
        )
    per_kind = Counter(k.planned.kind for k in kills)
    lines.append(f"kills: {len(kills)} ({', '.join(f'{kind} {per_kind[kind]}' for kind in KINDS)})")
    for number, kill in enumerate(kills, start=1):
        noticed = ""
        if kill.noticed is not None:
            noticed = f"noticed after {(kill.noticed - kill.at).total_seconds():.2f} s, "
        lines.append(
            f"  {number:>2}. at {kill.into_load:5.1f} s  {kill.planned.kind:<10} {kill.planned.unit:<8} "
            f"pid {kill.pid:<7}  {noticed}running again after {kill.recovery:.2f} s"
        )
    for kind in KINDS:
        recoveries = [k.recovery for k in kills if k.planned.kind == kind]
        if recoveries:
            lines.append(
                f"  recovery, {kind}: median {statistics.median(recoveries):.2f} s, "
                f"max {max(recoveries):.2f} s"
            )
    return "\n".join(lines)


def report_outcome(sent: list[Request], facts: Facts, kills: list[Kill], timeline: Timeline) -> str:
    """Requests sent, accepted and ended per kind, their outcomes and effects, the drain, the durations."""
    ended = {s.key for s in facts.sent if s.accepted and s.outcome in FINAL[s.kind]}
    lines = []
    for kind in ("transfer", "trip", "order"):
        mine = [r for r in sent if r.kind == kind]
        accepted = [r for r in mine if r.accepted]
        lines.append(
            f"  {kind + 's':<9} sent {len(mine):>5}  accepted {len(accepted):>5}  "
            f"ended {sum(r.key in ended for r in accepted):>5}"
        )
    shown = figures(facts)
    lines.append(
        "  outcomes and effects: "
        + ", ".join(f"{name} {n}" for name, n in sorted(shown.items()) if not name.endswith(" sent"))
    )
    last_kill = max((k.at for k in kills), default=None)
    lines.append(
        f"drain: the run's last invocation completed {seconds(timeline.load_end, timeline.finished):.1f} s "
        f"after the load's last request was accepted, {seconds(last_kill, timeline.finished):.1f} s after "
        f"the last kill; every final status read {seconds(timeline.load_end, timeline.confirmed):.1f} s "
        "after the load"
    )
    lines.append(
        f"durations: start {seconds(timeline.began, timeline.up):.0f} s, load "
        f"{seconds(timeline.load_start, timeline.load_end):.0f} s, until every request was seen ended "
        f"{seconds(timeline.load_end, timeline.confirmed):.0f} s, gather "
        f"{seconds(timeline.confirmed, timeline.gathered):.0f} s"
    )
    return "\n".join(lines)
