"""The supervisor on its own: real processes killed with SIGKILL, restarted with backoff, given up on.

Each test drives the supervisor's loop itself (``tick``) while it polls, so what happens between two
looks is what the test did, and nothing runs on after the test.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from podium.runtime import (
    ChildProcess,
    DeploymentProcess,
    DeploymentUnit,
    Engine,
    EngineUnit,
    ProcessUnit,
    RestartPolicy,
    Supervisor,
    UnitState,
    UnitStatus,
    check_health,
    free_port,
    read_stack,
)
from podium.testing import assert_eventually, test_engine_config

T = TypeVar("T")

QUICK = RestartPolicy(
    delay=timedelta(seconds=0.2),
    max_delay=timedelta(seconds=5),
    limit=5,
    window=timedelta(seconds=60),
    reset_after=timedelta(seconds=60),
)

# A process that answers its health check, then dies with status 3 a moment later: a crash loop.
FLAKY = """
import http.server, os, sys, threading

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        threading.Timer(0.2, os._exit, (3,)).start()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def web_unit(tmp: Path, name: str, *, code: str | None = None) -> ProcessUnit:
    """A small HTTP server as a unit; healthy when it answers ``/``."""
    port = free_port()
    argv = [sys.executable, "-c", code, str(port)] if code else [sys.executable, "-m", "http.server"]
    if not code:
        argv += [str(port), "--bind", "127.0.0.1", "--directory", str(tmp)]
    process = ChildProcess(argv, log_file=tmp / f"{name}.log", name=name)
    url = f"http://127.0.0.1:{port}"
    return ProcessUnit(name, process, kind="web", ports=[port], url=url, health_urls=[f"{url}/"])


def supervising(supervisor: Supervisor, check: Callable[[], T], *, timeout: float = 30, message: str) -> T:
    """Run the supervisor's loop until ``check`` holds."""

    def step() -> T:
        supervisor.tick()
        return check()

    return assert_eventually(step, timeout=timeout, interval=0.05, message=message)


def status(supervisor: Supervisor, name: str) -> UnitStatus:
    (found,) = supervisor.status(name)
    return found


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "podium.supervisor"]


@contextmanager
def supervised(tmp: Path, policy: RestartPolicy = QUICK) -> Iterator[Supervisor]:
    with Supervisor(policy=policy, state_file=tmp / "run" / "stack.json") as supervisor:
        yield supervisor


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_restart_delays_double_up_to_the_longest() -> None:
    policy = RestartPolicy()
    delays = [policy.delay_for(n).total_seconds() for n in range(9)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    with pytest.raises(ValueError, match="positive"):
        RestartPolicy(delay=timedelta(0))


def test_a_killed_unit_is_restarted_with_backoff_while_the_other_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="podium.supervisor")
    policy = RestartPolicy(
        delay=timedelta(seconds=0.2), max_delay=timedelta(seconds=5), reset_after=timedelta(seconds=2.5)
    )
    with supervised(tmp_path, policy) as supervisor:
        victim = supervisor.add(web_unit(tmp_path, "victim"))
        other = supervisor.add(web_unit(tmp_path, "other"))
        supervisor.start()
        other_pid = other.pid
        assert other_pid is not None

        def kill_and_see_restart(restart: int, delay: str) -> None:
            pid = victim.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            supervising(
                supervisor,
                lambda: status(supervisor, "victim").state is UnitState.RUNNING and victim.pid != pid,
                message="the victim restarted",
            )
            assert f"web victim exited (killed by SIGKILL); restarting in {delay} (restart {restart})" in (
                messages(caplog)
            )
            assert victim.health() is None
            # the other unit was not touched: the same process, still answering
            assert other.pid == other_pid
            assert other.health() is None

        kill_and_see_restart(1, "0.2 s")
        kill_and_see_restart(2, "0.4 s")  # again soon after: the wait doubles

        # once it has run for reset_after, the next restart waits the first delay again
        def ran_well() -> bool:
            started = status(supervisor, "victim").started_at
            assert started is not None
            return datetime.now(UTC) - started > timedelta(seconds=2.7)

        supervising(supervisor, ran_well, message="a good run")
        kill_and_see_restart(3, "0.2 s")

        crash = next(r for r in caplog.records if "killed by SIGKILL" in r.getMessage())
        fields = {name: getattr(crash, name) for name in ("signal", "returncode", "unit")}
        assert fields == {"signal": "SIGKILL", "returncode": -9, "unit": "victim"}
        state = read_stack(tmp_path / "run" / "stack.json")
        (shown,) = [u for u in state.units if u.name == "victim"]
        assert shown.restarts == 3
        assert shown.pid == victim.pid
        assert shown.last_exit is not None
        assert shown.last_exit.signal == "SIGKILL"
        assert state.pid == os.getpid()
        assert state.supervisor_alive()


def test_a_crash_loop_is_left_failed_and_the_rest_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="podium.supervisor")
    policy = RestartPolicy(delay=timedelta(seconds=0.1), max_delay=timedelta(seconds=0.4), limit=3)
    with supervised(tmp_path, policy) as supervisor:
        flaky = supervisor.add(web_unit(tmp_path, "flaky", code=FLAKY))
        steady = supervisor.add(web_unit(tmp_path, "steady"))
        supervisor.start()
        steady_pid = steady.pid
        supervising(
            supervisor, lambda: status(supervisor, "flaky").state is UnitState.FAILED, message="flaky failed"
        )
        shown = status(supervisor, "flaky")
        assert shown.restarts == 3  # three restarts allowed, the fourth exit within the window is the end
        assert shown.pid is None
        assert shown.last_exit is not None
        assert shown.last_exit.returncode == 3
        said = messages(caplog)
        assert [m for m in said if "restarting in" in m] == [
            "web flaky exited (status 3); restarting in 0.1 s (restart 1)",
            "web flaky exited (status 3); restarting in 0.2 s (restart 2)",
            "web flaky exited (status 3); restarting in 0.4 s (restart 3)",
        ]
        assert any(
            "web flaky exited (status 3): 4 exits within 60 s, more than the limit of 3" in m for m in said
        )
        assert not flaky.running()
        # a failed unit stays failed; the other one serves on, in the same process
        for _ in range(5):
            supervisor.tick()
        assert status(supervisor, "flaky").state is UnitState.FAILED
        assert status(supervisor, "steady").state is UnitState.RUNNING
        assert steady.pid == steady_pid
        assert check_health(steady.health_urls) is None
        on_disk = {u.name: u.state for u in read_stack(tmp_path / "run" / "stack.json").units}
        assert on_disk == {"flaky": UnitState.FAILED, "steady": UnitState.RUNNING}


@pytest.mark.engine
def test_workers_are_watched_orphans_are_reaped_and_stop_leaves_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="podium.supervisor")
    engine = Engine(test_engine_config(tmp_path / "engine"))
    seen: set[int] = set()
    with supervised(tmp_path) as supervisor:
        engine_unit = EngineUnit(engine)
        supervisor.add(engine_unit)
        process = DeploymentProcess("tests.integration.lab:app", log_file=tmp_path / "lab.log", workers=2)
        lab = DeploymentUnit("lab", process, engine=engine_unit)
        supervisor.add(lab)
        supervisor.start()
        assert "LabSaga" in lab.services
        port = process.port
        workers = supervising(supervisor, lambda: len(w := lab.workers()) == 2 and w, message="2 workers")
        seen.update([engine.pid or 0, lab.pid or 0, *workers])

        # a worker dies: granian replaces it, the master (and the unit) stay up
        master = lab.pid
        os.kill(workers[0], signal.SIGKILL)
        replaced = supervising(
            supervisor,
            lambda: len(w := status(supervisor, "lab").workers) == 2 and workers[0] not in w and w,
            message="a new worker",
        )
        seen.update(replaced)
        assert lab.pid == master
        assert status(supervisor, "lab").restarts == 0
        assert status(supervisor, "lab").worker_restarts == 1
        said = messages(caplog)
        assert (
            f"deployment lab: worker pid {workers[0]} exited; its master starts another (worker restart 1)"
            in said
        )
        assert any(f"replaced pid {workers[0]}" in m for m in said)

        # the master alone dies: its workers, orphaned, still hold the port; they are killed, and the
        # deployment comes back on the same port
        orphans = lab.workers()
        assert master is not None
        os.kill(master, signal.SIGKILL)
        supervising(
            supervisor,
            lambda: status(supervisor, "lab").state is UnitState.RUNNING and lab.pid != master,
            message="the deployment restarted",
        )
        assert not any(alive(pid) for pid in orphans)
        assert process.port == port
        assert lab.health() is None
        seen.update([lab.pid or 0, *lab.workers()])
        assert "deployment lab exited (killed by SIGKILL); restarting in 0.2 s (restart 1)" in messages(
            caplog
        )
    assert 0 not in seen
    assert not [pid for pid in seen if alive(pid)]
    state = read_stack(tmp_path / "run" / "stack.json")
    assert state.state == "stopped"
    assert {u.state for u in state.units} == {UnitState.STOPPED}
