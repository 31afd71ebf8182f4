"""Keep a stack of processes up: restart what exits, with backoff and a crash-loop limit.

``podium up`` runs the engine, every deployment and the gateway as :class:`Unit` s of one
:class:`Supervisor`. The policy is systemd's ``Restart=`` with a start limit (:class:`RestartPolicy`):

- a unit that exits while the stack is up, whatever the cause (a status, a signal, SIGKILL included), is
  started again after a delay that doubles from :attr:`RestartPolicy.delay` up to
  :attr:`RestartPolicy.max_delay`, and starts over once the unit has run for
  :attr:`RestartPolicy.reset_after`;
- a unit that exits more than :attr:`RestartPolicy.limit` times within :attr:`RestartPolicy.window` is
  left ``failed``; the others keep serving;
- a restart that does not come up (the process exits at once, or never answers its health check) counts
  as one more exit.

Every exit, restart and give-up is logged on the ``podium.supervisor`` logger with the exit status or the
signal's name. A deployment's granian master replaces a worker that dies (``--respawn-failed-workers``);
the supervisor sees the master's children change and logs that too. The engine restarts on the same data
directory, and then registers the running deployments again, so nothing depends on the engine's
registry having survived; invocations in flight resume by themselves (durable execution).

Restarts run on one long-lived starter thread, so the loop that watches keeps watching (and Ctrl-C keeps
working) while a unit starts, and so the kernel's parent-death signal (set per starting *thread*, see
:mod:`podium.runtime._process`) does not fire when a start finishes.

The supervisor writes the stack's state to a JSON file (``<data dir>/run/stack.json`` under ``podium up``)
at every change, atomically; :func:`read_stack` reads it back (``podium status`` does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import httpx

from podium.runtime._engine import Engine, EngineError, register_deployment
from podium.runtime._process import ChildProcess, child_pids, wait_until
from podium.runtime._serve import DeploymentProcess

log = logging.getLogger("podium.supervisor")
U = TypeVar("U", bound="Unit")

DEPLOYMENT_START_TIMEOUT = 60.0
"""Seconds a deployment may take to answer its health check after a (re)start."""
STATE_VERSION = 1
"""Version of the state file's format (:meth:`Supervisor.snapshot`)."""


def stack_file(data_dir: Path) -> Path:
    """Where ``podium up`` keeps the state of the stack it runs on ``data_dir``."""
    return data_dir / "run" / "stack.json"


class StartError(RuntimeError):
    """A unit did not come up: its process exited at start, or did not answer its health check in time."""


class UnitState(StrEnum):
    """Where a unit is in its life."""

    STARTING = "starting"
    """Its process was started; waiting for its health check."""
    RUNNING = "running"
    """Up and answering (it answered its health check when it started)."""
    RESTARTING = "restarting"
    """It exited; waiting out the backoff before it is started again."""
    FAILED = "failed"
    """It exited too often within the window; left down until ``podium up`` starts again."""
    STOPPED = "stopped"
    """Not started yet, or stopped with the stack."""


@dataclass(frozen=True)
class RestartPolicy:
    """When a unit that exits is started again, and when the supervisor gives up on it.

    The defaults: a crash costs half a second of that unit's service the first time, a unit that keeps
    crashing is retried less and less often (at most every 30 s), and one that crashed six times within a
    minute (five restarts did not help) is left ``failed`` rather than burning the machine's two cores.
    """

    delay: timedelta = timedelta(seconds=0.5)
    """Wait before the first restart after a good run; doubled for each restart that follows."""
    max_delay: timedelta = timedelta(seconds=30)
    """The longest wait between two restarts."""
    limit: int = 5
    """Exits allowed within :attr:`window`; one more and the unit is left failed (systemd's burst)."""
    window: timedelta = timedelta(seconds=60)
    """The sliding window over which exits are counted (systemd's interval)."""
    reset_after: timedelta = timedelta(seconds=60)
    """A unit that has run this long since its last start goes back to :attr:`delay` when it exits."""

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("the restart limit cannot be negative")
        if self.delay <= timedelta(0) or self.max_delay < self.delay:
            raise ValueError("restart delays must be positive, the longest at least the first")

    def delay_for(self, attempt: int) -> timedelta:
        """The wait before restart number ``attempt + 1`` since the last good run (0-based)."""
        doubled: timedelta = self.delay * (1 << min(attempt, 32))
        return min(doubled, self.max_delay)


def describe_exit(returncode: int | None) -> str:
    """How a process ended, from its exit status (negative: the signal that killed it).

    ``killed by SIGKILL``, ``status 1``; ``unknown status`` when it is not known.
    """
    if returncode is None:
        return "unknown status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"status {returncode}"


@dataclass(frozen=True)
class ExitRecord:
    """How a unit last went down."""

    at: datetime
    """When the supervisor noticed it (UTC)."""
    returncode: int | None
    """The process's exit status (negative: killed by that signal); None when it did not start."""
    reason: str
    """For a person: ``killed by SIGKILL``, ``status 1``, ``did not start: …``."""

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed it, if one did."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return None

    def to_json(self) -> dict[str, Any]:
        """The record as the state file keeps it."""
        return {
            "at": self.at.isoformat(),
            "returncode": self.returncode,
            "signal": self.signal,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExitRecord:
        """Read a record written by :meth:`to_json`."""
        return cls(datetime.fromisoformat(data["at"]), data.get("returncode"), str(data["reason"]))


def probe(url: str, *, timeout: float = 2.0) -> str | None:
    """GET ``url``: None when it answers 200, else what went wrong, for a person."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}"
    if response.status_code != 200:
        return f"{url}: {response.status_code}"
    return None


def check_health(urls: Sequence[str]) -> str | None:
    """None when every URL answers 200 (:func:`probe`), else what the first one that did not said."""
    for url in urls:
        problem = probe(url)
        if problem is not None:
            return problem
    return None


class Unit(ABC):
    """One supervised process (and whatever it forks).

    Args:
        name: Unique within a stack: ``engine``, a deployment's name, ``gateway``.
        kind: ``engine``, ``deployment``, ``gateway``, or another word for other processes.
        ports: The ports it listens on, the main one first.
        url: Its main URL, for people.
        health_urls: URLs that answer 200 when it is healthy (all of them).
        log_file: Where its output goes.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        ports: Sequence[int] = (),
        url: str | None = None,
        health_urls: Sequence[str] = (),
        log_file: Path | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.ports = list(ports)
        self.url = url
        self.health_urls = list(health_urls)
        self.log_file = log_file

    @property
    def label(self) -> str:
        """How messages name it: ``engine``, ``gateway``, ``deployment banking``."""
        return self.name if self.name == self.kind else f"{self.kind} {self.name}"

    @abstractmethod
    def start(self) -> None:
        """Start the process and return once it answers its health check.

        Raises:
            Exception: Any error means it did not come up; the supervisor stops what is left of it.
        """

    @abstractmethod
    def stop(self) -> None:
        """Stop it, and everything it forked, whether it is running or has died (idempotent)."""

    @abstractmethod
    def running(self) -> bool:
        """Whether its main process is alive."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """Its main process's id while started."""

    @abstractmethod
    def returncode(self) -> int | None:
        """Its exit status once its main process has exited (negative: the signal that killed it)."""

    def workers(self) -> list[int]:
        """Processes it runs under its main one that the supervisor should watch (none by default)."""
        return []

    def health(self) -> str | None:
        """None when every health URL answers 200; else what did not."""
        return check_health(self.health_urls)


class ProcessUnit(Unit):
    """A :class:`ChildProcess` that is healthy when its health URLs answer (the gateway; tests).

    Args:
        process: The process (not started).
        start_timeout: Seconds it may take to answer its health check.
        stop_grace: Seconds between SIGTERM and SIGKILL when it is stopped.
    """

    def __init__(
        self,
        name: str,
        process: ChildProcess,
        *,
        kind: str = "process",
        ports: Sequence[int] = (),
        url: str | None = None,
        health_urls: Sequence[str] = (),
        start_timeout: float = 30.0,
        stop_grace: float = 8.0,
    ) -> None:
        super().__init__(
            name, kind=kind, ports=ports, url=url, health_urls=health_urls, log_file=process.log_file
        )
        self.process = process
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace

    def start(self) -> None:
        """Start the process and wait until every health URL answers 200.

        Raises:
            StartError: It exited before answering, or did not answer within ``start_timeout``.
        """
        self.process.start()

        def ready() -> bool:
            if not self.process.running():
                raise StartError(
                    f"{self.label} exited at start ({describe_exit(self.process.returncode())}); "
                    f"see {self.process.log_file}:\n{self.process.tail()}"
                )
            return self.health() is None

        try:
            wait_until(ready, timeout=self.start_timeout, what=self.label)
        except TimeoutError as exc:
            raise StartError(f"{exc}; see {self.process.log_file}") from exc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL (its process group) after ``stop_grace`` seconds."""
        self.process.stop(grace=self.stop_grace)

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process.running()

    @property
    def pid(self) -> int | None:
        """The process id."""
        return self.process.pid

    def returncode(self) -> int | None:
        """The exit status once it has exited."""
        return self.process.returncode()


class EngineUnit(Unit):
    """The restate-server. Each time it starts again it registers the running deployments once more.

    The engine keeps its registry in its data directory, so the registrations would survive anyway;
    registering again (idempotent, :func:`register_deployment`) makes sure of it.
    """

    def __init__(self, engine: Engine, *, name: str = "engine") -> None:
        config = engine.config
        super().__init__(
            name,
            kind="engine",
            ports=[config.ingress_port, config.admin_port],
            url=config.ingress_url,
            health_urls=[f"{config.admin_url}/health", f"{config.ingress_url}/restate/health"],
            log_file=config.log_file,
        )
        self.engine = engine
        self._deployments: list[DeploymentUnit] = []

    def serves(self, deployment: DeploymentUnit) -> None:
        """Register ``deployment`` again whenever the engine starts again."""
        self._deployments.append(deployment)

    def start(self) -> None:
        """Start the engine on its data directory, then register every deployment that is running."""
        self.engine.start()
        registered = []
        for deployment in self._deployments:
            if not deployment.running():
                continue  # it registers itself when it is started again
            try:
                deployment.register()
            except EngineError as exc:
                log.warning("%s: could not register %s again: %s", self.label, deployment.label, exc)
            else:
                registered.append(deployment.name)
        if registered:
            log.info(
                "%s: deployments registered again: %s",
                self.label,
                ", ".join(registered),
                extra={"unit": self.name, "registered": registered},
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        self.engine.stop()

    def running(self) -> bool:
        """Whether restate-server is alive."""
        return self.engine.running()

    @property
    def pid(self) -> int | None:
        """restate-server's process id."""
        return self.engine.pid

    def returncode(self) -> int | None:
        """restate-server's exit status."""
        # Engine keeps its ChildProcess to itself and exposes no exit status.
        return self.engine.returncode()


class DeploymentUnit(Unit):
    """A deployment process (a granian master and its workers), registered with the engine when it starts.

    Args:
        name: The deployment's name (``[tool.podium] deployments``).
        process: The deployment process (not started).
        engine: The engine it is registered with; None: not registered.
    """

    def __init__(self, name: str, process: DeploymentProcess, *, engine: EngineUnit | None = None) -> None:
        super().__init__(
            name,
            kind="deployment",
            ports=[process.port],
            url=process.url,
            health_urls=[f"{process.url}/health"],
            log_file=process.log_file,
        )
        self.process = process
        self.engine = engine
        self.services: list[str] = []
        """The services the engine registered for it, at its last registration."""
        if engine is not None:
            engine.serves(self)

    def start(self) -> None:
        """Start the process, wait for its health check, and register it if the engine is up.

        While the engine is down the registration is left to the engine's own restart.
        """
        # A machine busy with the stack's own backlog can take seconds to start Python workers; a start
        # cut short would count as one more crash.
        self.process.start(timeout=DEPLOYMENT_START_TIMEOUT)
        if self.engine is not None and self.engine.running():
            self.register()

    def register(self) -> None:
        """Register the deployment with the engine (idempotent).

        Raises:
            EngineError: The engine refused it or cannot be reached.
        """
        assert self.engine is not None
        answer = register_deployment(self.engine.engine.admin_url, self.process.url)
        self.services = sorted(service["name"] for service in answer.get("services", []))

    def stop(self) -> None:
        """SIGTERM (granian stops its workers), then SIGKILL of the whole process group."""
        self.process.stop()

    def running(self) -> bool:
        """Whether the granian master (or hypercorn process) is alive."""
        return self.process.running()

    @property
    def pid(self) -> int | None:
        """The master's process id."""
        return self.process.pid

    def returncode(self) -> int | None:
        """The master's exit status."""
        # DeploymentProcess keeps its ChildProcess to itself and exposes no exit status.
        return self.process.returncode()

    def workers(self) -> list[int]:
        """The granian workers: the master's live children."""
        pid = self.process.pid
        return child_pids(pid) if pid is not None and self.process.running() else []


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class UnitStatus:
    """What the supervisor knows of one unit (a copy; the state file holds one per unit)."""

    name: str
    kind: str
    state: UnitState = UnitState.STOPPED
    pid: int | None = None
    """The main process's id while it runs."""
    workers: list[int] = field(default_factory=list)
    """Processes under the main one (a deployment's granian workers)."""
    ports: list[int] = field(default_factory=list)
    url: str | None = None
    health_urls: list[str] = field(default_factory=list)
    log_file: str | None = None
    started_at: datetime | None = None
    """When its current process came up (UTC)."""
    restarts: int = 0
    """Times it was started again after an exit."""
    worker_restarts: int = 0
    """Workers that died and were replaced (by granian) while the main process kept running."""
    last_exit: ExitRecord | None = None

    def to_json(self) -> dict[str, Any]:
        """The unit as the state file keeps it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state.value,
            "pid": self.pid,
            "workers": self.workers,
            "ports": self.ports,
            "port": self.ports[0] if self.ports else None,
            "url": self.url,
            "health": self.health_urls,
            "log_file": self.log_file,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "restarts": self.restarts,
            "worker_restarts": self.worker_restarts,
            "last_exit": self.last_exit.to_json() if self.last_exit else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitStatus:
        """Read a unit written by :meth:`to_json`."""
        started = data.get("started_at")
        last = data.get("last_exit")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            state=UnitState(data["state"]),
            pid=data.get("pid"),
            workers=list(data.get("workers") or []),
            ports=list(data.get("ports") or []),
            url=data.get("url"),
            health_urls=list(data.get("health") or []),
            log_file=data.get("log_file"),
            started_at=datetime.fromisoformat(started) if started else None,
            restarts=int(data.get("restarts", 0)),
            worker_restarts=int(data.get("worker_restarts", 0)),
            last_exit=ExitRecord.from_json(last) if last else None,
        )


@dataclass(frozen=True)
class StackState:
    """The state file of a supervised stack, as :func:`read_stack` reads it."""

    pid: int
    """The supervisor's process id (``podium up``)."""
    state: str
    """``starting``, ``running``, ``stopping`` or ``stopped``."""
    started_at: datetime
    updated_at: datetime
    units: list[UnitStatus]

    def supervisor_alive(self) -> bool:
        """Whether the process that wrote the file is still running (a file left by a killed one is not)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, someone else's
        # A pid can be reused: a process that started after the supervisor did is another one.
        started = _process_start(self.pid)
        return started is None or started <= self.started_at.timestamp() + 1.0


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from ``/proc`` (Linux); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return None
    # Fields after the command name (in parentheses, which may hold spaces); the start time is the 22nd
    # field of the line, in clock ticks since boot.
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def read_stack(path: Path) -> StackState:
    """Read a state file written by :class:`Supervisor`.

    Raises:
        FileNotFoundError: No stack has run with that file.
        ValueError: The file is not a state file this version understands.
    """
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is not a Podium stack state file (version {STATE_VERSION})")
    supervisor = data["supervisor"]
    return StackState(
        pid=int(supervisor["pid"]),
        state=str(supervisor["state"]),
        started_at=datetime.fromisoformat(supervisor["started_at"]),
        updated_at=datetime.fromisoformat(supervisor["updated_at"]),
        units=[UnitStatus.from_json(unit) for unit in data["units"]],
    )


@dataclass
class _Slot:
    """A unit and the supervisor's bookkeeping for it."""

    unit: Unit
    policy: RestartPolicy
    status: UnitStatus
    exits: deque[float] = field(default_factory=deque)
    """Monotonic times of its exits within the policy's window."""
    attempt: int = 0
    """Restarts since its last good run: the backoff's exponent."""
    started: float = 0.0
    """Monotonic time of its last successful start."""
    next_start: float = 0.0
    """Monotonic time at which a restarting unit is started again."""
    start: Future[None] | None = None
    """The restart in progress on the starter thread."""
    replaced: list[int] = field(default_factory=list)
    """Workers seen dying whose replacement has not been seen yet."""


class Supervisor:
    """Starts units in order, restarts those that exit (:class:`RestartPolicy`), stops them in reverse.

    Use as a context manager (leaving it stops every unit)::

        with Supervisor(state_file=stack_file(data_dir)) as supervisor:
            supervisor.add(EngineUnit(engine))
            supervisor.start()
            supervisor.run(stop_event)  # until the event is set (Ctrl-C)

    Args:
        policy: The restart policy of units added without one of their own.
        state_file: Where the stack's state is written at every change (None: nowhere).
        poll_interval: Seconds between two looks at the units.
    """

    def __init__(
        self,
        *,
        policy: RestartPolicy | None = None,
        state_file: Path | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.state_file = state_file
        self.poll_interval = poll_interval
        self._slots: list[_Slot] = []
        self._state = "starting"
        self._started_at = _now()
        self._lock = threading.Lock()
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podium-starter")
        self._owns_state_file = False
        """Set by :meth:`start` once no other live supervisor uses :attr:`state_file`."""

    def add(self, unit: U, *, policy: RestartPolicy | None = None) -> U:
        """Supervise ``unit`` (started by :meth:`start`, after the units added before it)."""
        if any(slot.unit.name == unit.name for slot in self._slots):
            raise ValueError(f"a unit named {unit.name!r} is supervised already")
        status = UnitStatus(
            unit.name,
            unit.kind,
            ports=list(unit.ports),
            url=unit.url,
            health_urls=list(unit.health_urls),
            log_file=str(unit.log_file) if unit.log_file else None,
        )
        self._slots.append(_Slot(unit, policy or self.policy, status))
        return unit

    @property
    def units(self) -> list[Unit]:
        """The supervised units, in start order."""
        return [slot.unit for slot in self._slots]

    def status(self, name: str | None = None) -> list[UnitStatus]:
        """Copies of the units' statuses (only ``name``'s when given)."""
        with self._lock:
            return [
                UnitStatus.from_json(slot.status.to_json())
                for slot in self._slots
                if name is None or slot.unit.name == name
            ]

    def start(
        self, stop: threading.Event | None = None, *, on_start: Callable[[Unit], None] | None = None
    ) -> None:
        """Start every unit in order (in this thread), each once it answers its health check.

        A stack that cannot come up at all is a mistake to report, not a crash to retry: the first unit
        that does not start raises, and leaving the ``with`` block stops the ones already started.

        Args:
            stop: Set (by Ctrl-C) to start no more units.
            on_start: Called with each unit once it is up (``podium up`` prints its URL).

        Raises:
            StartError: Another supervisor that is still running keeps its state in :attr:`state_file`.
            Exception: What the unit that did not start raised.
        """
        self._refuse_a_second_supervisor()
        self._owns_state_file = True
        self._write_state()
        for slot in self._slots:
            if stop is not None and stop.is_set():
                return
            with self._lock:
                slot.status.state = UnitState.STARTING
            self._write_state()
            slot.unit.start()
            self._came_up(slot, first=True)
            self._write_state()
            if on_start is not None:
                on_start(slot.unit)
        self._state = "running"
        self._write_state()

    def _refuse_a_second_supervisor(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            other = read_stack(self.state_file)
        except (OSError, ValueError, KeyError, TypeError):
            return  # unreadable: nobody can be using it
        if other.pid != os.getpid() and other.state != "stopped" and other.supervisor_alive():
            raise StartError(
                f"another supervisor (pid {other.pid}) runs this stack ({self.state_file}); "
                "stop it first, or use another data directory"
            )

    def run(self, stop: threading.Event) -> None:
        """Watch the units and restart those that exit, until ``stop`` is set."""
        while not stop.is_set():
            self.tick()
            stop.wait(self.poll_interval)

    def tick(self) -> None:
        """Look at every unit once: notice exits, start due restarts, finish restarts, watch workers."""
        changed = False
        for slot in self._slots:
            try:
                changed = self._check(slot) or changed
            except Exception:
                # One unit's trouble must not stop the supervision of the others.
                log.exception("supervising %s failed", slot.unit.label)
        if changed:
            self._write_state()

    def stop(self) -> None:
        """Stop every unit, in reverse order, and any restart in progress; the state file says stopped."""
        if self._state == "stopped":
            return
        self._state = "stopping"
        self._write_state()
        pending = [slot for slot in self._slots if slot.start is not None and not slot.start.cancel()]
        for slot in reversed(self._slots):
            self._stop_unit(slot)
        for slot in pending:
            # The restart fails fast once its process is gone; one that started it anew meanwhile is
            # stopped again below.
            assert slot.start is not None
            with contextlib.suppress(Exception):
                slot.start.exception()
            self._stop_unit(slot)
        self._starter.shutdown(wait=True, cancel_futures=True)
        self._state = "stopped"
        self._write_state()

    def _stop_unit(self, slot: _Slot) -> None:
        try:
            slot.unit.stop()
        except Exception:
            log.exception("stopping %s failed", slot.unit.label)
        with self._lock:
            slot.status.state = UnitState.STOPPED
            slot.status.pid = None
            slot.status.workers = []
            slot.start = None

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self, slot: _Slot) -> bool:
        """One look at one unit; whether its status changed."""
        state = slot.status.state
        if state is UnitState.RUNNING:
            workers = slot.unit.workers()  # before the liveness check: a dying master takes them along
            if not slot.unit.running():
                returncode = slot.unit.returncode()
                self._went_down(slot, returncode, describe_exit(returncode), ran=True)
                return True
            return self._watch_workers(slot, workers)
        if state is UnitState.RESTARTING and time.monotonic() >= slot.next_start:
            with self._lock:
                slot.status.state = UnitState.STARTING
                slot.start = self._starter.submit(slot.unit.start)
            return True
        if state is UnitState.STARTING and slot.start is not None and slot.start.done():
            error = slot.start.exception()
            slot.start = None
            if error is None:
                self._came_up(slot, first=False)
            else:
                self._went_down(slot, None, f"did not start: {error}", ran=False)
            return True
        return False

    def _came_up(self, slot: _Slot, *, first: bool) -> None:
        unit = slot.unit
        slot.started = time.monotonic()
        with self._lock:
            status = slot.status
            status.state = UnitState.RUNNING
            status.pid = unit.pid
            status.started_at = _now()
            status.workers = unit.workers()
            slot.replaced.clear()
        extra = {"unit": unit.name, "kind": unit.kind, "pid": unit.pid, "restarts": status.restarts}
        if first:
            log.debug("%s started (pid %s)", unit.label, unit.pid, extra=extra)
        else:
            log.info("%s restarted (pid %s, restart %d)", unit.label, unit.pid, status.restarts, extra=extra)

    def _went_down(self, slot: _Slot, returncode: int | None, reason: str, *, ran: bool) -> None:
        """Record an exit (or a start that failed) and schedule the restart, or give up."""
        unit = slot.unit
        policy = slot.policy
        # Reap it and kill what is left of its process group: orphaned workers would keep its port.
        try:
            unit.stop()
        except Exception:
            log.exception("cleaning up after %s failed", unit.label)
        now = time.monotonic()
        if ran and now - slot.started >= policy.reset_after.total_seconds():
            slot.attempt = 0
        slot.exits.append(now)
        while slot.exits and now - slot.exits[0] > policy.window.total_seconds():
            slot.exits.popleft()
        record = ExitRecord(_now(), returncode, reason)
        extra: dict[str, Any] = {
            "unit": unit.name,
            "kind": unit.kind,
            "pid": slot.status.pid,
            "returncode": returncode,
            "signal": record.signal,
        }
        failed = len(slot.exits) > policy.limit
        delay = policy.delay_for(slot.attempt)
        with self._lock:
            status = slot.status
            status.last_exit = record
            status.pid = None
            status.workers = []
            status.started_at = None
            if failed:
                status.state = UnitState.FAILED
            else:
                slot.attempt += 1
                status.restarts += 1
                slot.next_start = now + delay.total_seconds()
                status.state = UnitState.RESTARTING
        what = f"exited ({reason})" if ran else reason
        if failed:
            log.error(
                "%s %s: %d exits within %s, more than the limit of %d; left failed (the rest keeps serving)",
                unit.label,
                what,
                len(slot.exits),
                _seconds(policy.window),
                policy.limit,
                extra={**extra, "state": "failed"},
            )
            return
        log.warning(
            "%s %s; restarting in %s (restart %d)",
            unit.label,
            what,
            _seconds(delay),
            status.restarts,
            extra={**extra, "delay_s": delay.total_seconds(), "restarts": status.restarts},
        )

    def _watch_workers(self, slot: _Slot, workers: list[int]) -> bool:
        """Log workers that died and those started in their place; whether the list changed."""
        before = set(slot.status.workers)
        after = set(workers)
        if before == after:
            return False
        unit = slot.unit
        with self._lock:
            for pid in sorted(before - after):
                slot.status.worker_restarts += 1
                slot.replaced.append(pid)
                log.warning(
                    "%s: worker pid %d exited; its master starts another (worker restart %d)",
                    unit.label,
                    pid,
                    slot.status.worker_restarts,
                    extra={"unit": unit.name, "kind": unit.kind, "worker_pid": pid},
                )
            for pid in sorted(after - before):
                if slot.replaced:  # else a worker still coming up at start: nothing to report
                    old = slot.replaced.pop(0)
                    log.info(
                        "%s: worker pid %d replaced pid %d",
                        unit.label,
                        pid,
                        old,
                        extra={"unit": unit.name, "kind": unit.kind, "worker_pid": pid, "replaced": old},
                    )
            slot.status.workers = sorted(after)
        return True

    def snapshot(self) -> dict[str, Any]:
        """The stack's state as the state file keeps it."""
        with self._lock:
            return {
                "version": STATE_VERSION,
                "supervisor": {
                    "pid": os.getpid(),
                    "state": self._state,
                    "started_at": self._started_at.isoformat(),
                    "updated_at": _now().isoformat(),
                    "policy": {
                        "delay_s": self.policy.delay.total_seconds(),
                        "max_delay_s": self.policy.max_delay.total_seconds(),
                        "limit": self.policy.limit,
                        "window_s": self.policy.window.total_seconds(),
                        "reset_after_s": self.policy.reset_after.total_seconds(),
                    },
                },
                "units": [slot.status.to_json() for slot in self._slots],
            }

    def _write_state(self) -> None:
        """Replace the state file at once (write a temporary file beside it, then rename)."""
        if self.state_file is None or not self._owns_state_file:
            return
        text = json.dumps(self.snapshot(), indent=2)
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".stack-", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, self.state_file)
        except OSError:
            log.exception("could not write %s", self.state_file)


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g} s"
