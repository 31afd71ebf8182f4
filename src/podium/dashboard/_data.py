"""What the dashboard shows, read from the engine.

The engine's SQL over state, invocations and journals, and its admin API's service list. Nothing is
copied or cached beyond a few seconds, so the page cannot drift from the truth.

- A saga is a ``podium.saga.<name>`` state entry of an object or workflow (sagas that keep their log;
  see :class:`podium.Saga`). Its log names its invocation, whose row gives the start and end, and whose
  journal (while the engine keeps it) gives the time of every change of the log: the timeline.
- A pending approval is a workflow run, not finished, of a workflow with decision handlers
  (:func:`podium.add_approval_handlers` marks them in the handlers' metadata), whose promise is not
  resolved; its deadline is the wake-up time of the timer it races.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from podium._human import APPROVAL_METADATA, DECISION_METADATA
from podium._saga import STATE_PREFIX, DeadLetter, SagaLog, SagaStatus, StepRecord, StepStatus
from podium._services import SYSTEM_METADATA

NEEDS_A_PERSON = "needs a person"
"""The status shown for a saga a person must act on: a held dead letter, or one that gave up."""
PAGE_SIZE = 200
"""The most sagas one page of the list shows (the newest)."""
STATUSES = ("running", "compensating", "completed", "compensated", "failed", NEEDS_A_PERSON)
_INVOCATION_ID = re.compile(r"^inv_[0-9A-Za-z]+$")


async def _finished(request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
    """Await ``request`` to its end even if the page that asked for it goes away.

    A browser that leaves a page cancels its request, and the dashboard's handler with it; cancelled
    mid-response, its connection to the engine would be dropped without being closed.
    """
    return await asyncio.shield(request)


class EngineError(Exception):
    """The engine's admin API did not answer, or refused a query."""


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal (the admin API takes no parameters)."""
    return "'" + value.replace("'", "''") + "'"


def _command(row: dict[str, Any]) -> dict[str, Any]:
    """The body of a journal row's command (``entry_lite_json``: its fields without payloads)."""
    lite = json.loads(row.get("entry_lite_json") or "{}").get("Command", {})
    body: dict[str, Any] = next(iter(lite.values()), {}) if isinstance(lite, dict) else {}
    return body


def _wake_up(row: dict[str, Any]) -> dt.datetime | None:
    """When a journaled timer fires."""
    millis = _command(row).get("wake_up_time")
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC) if isinstance(millis, int) else None


def parse_time(text: str | None) -> dt.datetime | None:
    """An engine timestamp (RFC 3339) as an aware datetime."""
    return dt.datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Decider:
    """A workflow's approval and the handlers that decide it."""

    promise: str
    approve: str | None
    reject: str | None


@dataclass(frozen=True)
class ServiceInfo:
    """One service as the admin API lists it."""

    name: str
    system: str
    run_handler: str | None
    """The workflow's run handler (workflows only)."""
    approvals: tuple[Decider, ...] = ()


@dataclass
class Saga:
    """One saga as the list shows it."""

    system: str
    service: str
    key: str
    log: SagaLog
    invocation_status: str | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None

    @property
    def name(self) -> str:
        """The saga's name."""
        return self.log.name

    @property
    def ref(self) -> str:
        """Its address in the dashboard: ``service/key/name``, each part URL-quoted by the template."""
        return f"{self.service}/{self.key}/{self.name}"

    @property
    def open_letters(self) -> list[DeadLetter]:
        """Dead letters held for a person right now."""
        return [d for d in self.log.dead_letters if d.awakeable_id]

    @property
    def status(self) -> str:
        """Where it is, in the words of the list (``needs a person`` when someone must act)."""
        if self.open_letters or self.log.status == SagaStatus.NEEDS_ATTENTION:
            return NEEDS_A_PERSON
        return self.log.status.value

    @property
    def current_step(self) -> str | None:
        """The step running or being compensated now, when the saga has not ended."""
        if self.log.status == SagaStatus.RUNNING:
            running = [s.name for s in self.log.steps if s.status == StepStatus.REGISTERED]
            return running[-1] if running else None
        if self.log.status == SagaStatus.COMPENSATING:
            if self.open_letters:
                return f"undo {self.open_letters[0].step} (held)"
            undone = (StepStatus.COMPENSATED, StepStatus.RESOLVED, StepStatus.DEAD_LETTER)
            pending = [s.name for s in self.log.steps if s.has_compensation and s.status not in undone]
            return f"undo {pending[-1]}" if pending else None
        return None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to now while it runs)."""
        if self.started is None:
            return None
        end = self.ended or dt.datetime.now(dt.UTC)
        return max(0.0, (end - self.started).total_seconds())


@dataclass
class Bar:
    """One bar of a saga's timeline."""

    step: str
    kind: str
    """``action`` or ``undo``."""
    outcome: str
    start: dt.datetime
    end: dt.datetime
    open: bool = False
    """Still going (its end is now)."""


@dataclass
class Timeline:
    """When each step and each compensation ran, from the journal's times of the saga log's changes."""

    bars: list[Bar] = field(default_factory=list)
    deadline: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    kept: bool = True
    """False when the engine no longer keeps the journal (retention): only the log is left."""


@dataclass
class Approval:
    """A workflow waiting for a person's decision."""

    system: str
    service: str
    key: str
    promise: str
    approve: str | None
    reject: str | None
    started: dt.datetime | None
    deadline: dt.datetime | None
    invocation_id: str


@dataclass
class Minute:
    """What a system's sagas did in one minute."""

    at: dt.datetime
    ended: int = 0
    compensated: int = 0
    p99: float | None = None
    """Seconds within which 99% of the sagas that ended in this minute ran (the engine's estimate)."""


@dataclass(frozen=True)
class MinuteRow:
    """The engine's count of one system's sagas that ended in one minute."""

    system: str
    at: dt.datetime
    ended: int
    compensated: int
    p99: float | None


@dataclass
class SystemStats:
    """A system's sagas over the last minutes."""

    system: str
    running: int
    minutes: list[Minute]


@dataclass(frozen=True)
class SagaFilter:
    """Which sagas the list shows; every field left empty matches all."""

    system: str | None = None
    status: str | None = None
    key: str | None = None
    """A part of the saga's key."""
    since_minutes: int | None = None
    """Started within this many minutes."""
    dead_letters: bool = False
    """Only sagas with dead letters (held or not)."""


@dataclass
class SagaPage:
    """One page of the saga list."""

    sagas: list[Saga]
    """The newest sagas that match, newest first."""
    matching: int
    total: int
    """Every saga the engine holds."""
    systems: list[str]
    """Every system with sagas."""


_LOGS = (
    "WITH logs AS (SELECT service_name, service_key, key, value_utf8, "
    "json_get_str(value_utf8, 'name') AS name, "
    "json_get_str(value_utf8, 'invocationId') AS invocation_id, "
    "json_get_str(value_utf8, 'status') AS log_status, "
    'regexp_like(value_utf8, \'"awakeableId":\\s*"\') AS held, '
    "json_length(json_get(value_utf8, 'deadLetters')) AS letters "
    f"FROM state WHERE key LIKE {sql_text(STATE_PREFIX + '%')})"
)
"""Every saga log with the fields the list filters on. (Kept apart from the join below: DataFusion's
optimizer fails on JSON functions in a filter over that join.)"""


def _sagas_sql(columns: str, rest: str = "") -> str:
    """``SELECT columns`` over every saga log (``s``) joined to its invocation (``i``), then ``rest``."""
    return (
        f"{_LOGS} SELECT {columns} FROM logs s LEFT JOIN sys_invocation i ON i.id = s.invocation_id "
        f"WHERE s.name IS NOT NULL {rest}"
    )


_STATUS = (
    f"CASE WHEN s.held OR s.log_status = {sql_text(SagaStatus.NEEDS_ATTENTION.value)} "
    f"THEN {sql_text(NEEDS_A_PERSON)} ELSE s.log_status END"
)
"""The list's status of a saga in SQL: what :attr:`Saga.status` computes from the log."""
_SAGA_COLUMNS = (
    "s.service_name, s.service_key, s.value_utf8, i.status AS invocation_status, i.created_at, i.completed_at"
)


def _system(services: dict[str, ServiceInfo], service: str) -> str:
    info = services.get(service)
    return info.system if info else "-"


def _system_sql(services: dict[str, ServiceInfo]) -> str:
    """The system of ``s.service_name`` in SQL, from the services' metadata."""
    if not services:
        return "'-'"
    cases = " ".join(f"WHEN {sql_text(n)} THEN {sql_text(i.system)}" for n, i in sorted(services.items()))
    return f"CASE s.service_name {cases} ELSE '-' END"


def _condition(where: SagaFilter, services: dict[str, ServiceInfo]) -> str:
    """``where`` in SQL over :func:`_sagas_sql`."""
    parts = ["true"]
    if where.system:
        parts.append(f"{_system_sql(services)} = {sql_text(where.system)}")
    if where.status:
        parts.append(f"{_STATUS} = {sql_text(where.status)}")
    if where.key:
        parts.append(f"strpos(s.service_key, {sql_text(where.key)}) > 0")
    if where.since_minutes is not None:
        parts.append(
            f"(i.created_at IS NULL OR i.created_at >= now() - INTERVAL '{int(where.since_minutes)} minutes')"
        )
    if where.dead_letters:
        parts.append("s.letters > 0")
    return "(" + " AND ".join(parts) + ")"


def _saga(row: dict[str, Any], services: dict[str, ServiceInfo]) -> Saga | None:
    """A row of :func:`_sagas_sql` as a saga (None when the state entry is not a saga log after all)."""
    try:
        log = SagaLog.model_validate_json(row["value_utf8"])
    except ValueError:
        return None
    return Saga(
        system=_system(services, row["service_name"]),
        service=row["service_name"],
        key=row["service_key"],
        log=log,
        invocation_status=row.get("invocation_status"),
        started=parse_time(row.get("created_at")),
        ended=parse_time(row.get("completed_at")),
    )


class EngineData:
    """Reads what the dashboard shows from the engine's admin API.

    Args:
        admin_url: The admin API (loopback).
        http: The client to use (closed by the caller).
        services_ttl: Seconds the service list is reused (it changes only on registration).
    """

    def __init__(self, admin_url: str, http: httpx.AsyncClient, *, services_ttl: float = 5.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.http = http
        self.services_ttl = services_ttl
        self._services: dict[str, ServiceInfo] = {}
        self._services_at = 0.0

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` run by the engine (a column that is NULL is left out of its row)."""
        try:
            response = await _finished(
                self.http.post(
                    f"{self.admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}
                )
            )
        except httpx.HTTPError as exc:
            raise EngineError(f"the engine's admin API did not answer: {exc}") from exc
        if not response.is_success:
            raise EngineError(f"the engine refused a query ({response.status_code}): {response.text[:300]}")
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    async def services(self) -> dict[str, ServiceInfo]:
        """Every registered service, with its system and approval handlers."""
        if time.monotonic() - self._services_at < self.services_ttl:
            return self._services
        try:
            response = await _finished(self.http.get(f"{self.admin_url}/services"))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineError(f"the engine's admin API did not answer: {exc}") from exc
        found: dict[str, ServiceInfo] = {}
        for service in response.json()["services"]:
            handlers = service.get("handlers", [])
            run = next((h["name"] for h in handlers if h.get("ty") == "Workflow"), None)
            deciders: dict[str, dict[str, str]] = {}
            for handler in handlers:
                meta = handler.get("metadata") or {}
                if APPROVAL_METADATA in meta:
                    deciders.setdefault(meta[APPROVAL_METADATA], {})[meta.get(DECISION_METADATA, "")] = (
                        handler["name"]
                    )
            found[service["name"]] = ServiceInfo(
                name=service["name"],
                system=(service.get("metadata") or {}).get(SYSTEM_METADATA, "-"),
                run_handler=run,
                approvals=tuple(
                    Decider(promise, names.get("approve"), names.get("reject"))
                    for promise, names in sorted(deciders.items())
                ),
            )
        self._services, self._services_at = found, time.monotonic()
        return found

    # -- sagas ---------------------------------------------------------------------------------------

    async def sagas(self, where: SagaFilter | None = None, *, limit: int = PAGE_SIZE) -> SagaPage:
        """The newest ``limit`` sagas that match ``where``, and how many match and exist.

        The engine filters, orders and pages (a join of saga logs to their invocations), so only the
        page's logs leave it: the cost grows with the page, not with the number of sagas held.
        """
        where = where or SagaFilter()
        services = await self.services()
        condition = _condition(where, services)
        counts = await self.query(
            _sagas_sql(
                f"s.service_name, count(*) AS n, sum(CASE WHEN {condition} THEN 1 ELSE 0 END) AS matching",
                "GROUP BY s.service_name",
            )
        )
        rows = await self.query(
            _sagas_sql(
                _SAGA_COLUMNS,
                f"AND {condition} ORDER BY i.created_at DESC NULLS LAST, s.service_name DESC, "
                f"s.service_key DESC, s.key DESC LIMIT {int(limit)}",
            )
        )
        return SagaPage(
            sagas=[saga for row in rows if (saga := _saga(row, services)) is not None],
            matching=sum(int(r.get("matching") or 0) for r in counts),
            total=sum(int(r["n"]) for r in counts),
            systems=sorted({_system(services, r["service_name"]) for r in counts}),
        )

    async def saga(self, service: str, key: str, name: str) -> Saga | None:
        """One saga, or None when the engine holds no such log."""
        rows = await self.query(
            _sagas_sql(
                _SAGA_COLUMNS,
                f"AND s.service_name = {sql_text(service)} AND s.service_key = {sql_text(key)} "
                f"AND s.key = {sql_text(STATE_PREFIX + name)}",
            )
        )
        return _saga(rows[0], await self.services()) if rows else None

    async def stats(self, *, minutes: int = 15) -> list[SystemStats]:
        """Per system, minute by minute: sagas ended, compensated or failed, p99 duration; and running."""
        services = await self.services()
        system = _system_sql(services)
        ended = await self.query(
            _sagas_sql(
                f"{system} AS system, date_trunc('minute', i.completed_at) AS minute, count(*) AS ended, "
                "sum(CASE WHEN s.log_status IN ('compensated', 'failed') THEN 1 ELSE 0 END) AS compensated, "
                "approx_percentile_cont(date_part('epoch', i.completed_at) "
                "- date_part('epoch', i.created_at), 0.99) AS p99",
                f"AND i.completed_at >= now() - INTERVAL '{int(minutes)} minutes' GROUP BY 1, 2",
            )
        )
        running = await self.query(
            _sagas_sql(
                f"{system} AS system, count(*) AS n",
                "AND s.log_status IN ('running', 'compensating') GROUP BY 1",
            )
        )
        return stats(
            [
                MinuteRow(r["system"], at, int(r["ended"]), int(r.get("compensated") or 0), r.get("p99"))
                for r in ended
                if (at := parse_time(r.get("minute"))) is not None
            ],
            {r["system"]: int(r["n"]) for r in running},
            minutes=minutes,
        )

    async def timeline(self, saga: Saga) -> Timeline:
        """When each step and compensation ran, from the journal of the saga's invocation."""
        invocation = saga.log.invocation_id
        timeline = Timeline(start=saga.started, end=saga.ended)
        if not invocation or not _INVOCATION_ID.match(invocation):
            timeline.kept = False
            return timeline
        rows = await self.query(
            "SELECT index, entry_type, entry_json, entry_lite_json, appended_at FROM sys_journal "
            f"WHERE id = {sql_text(invocation)} "
            "AND entry_type IN ('Command: SetState', 'Command: Sleep') ORDER BY index"
        )
        state_key = STATE_PREFIX + saga.name
        snapshots: list[tuple[dt.datetime, SagaLog]] = []
        for row in rows:
            at = parse_time(row["appended_at"])
            if at is None:
                continue
            if row["entry_type"] == "Command: Sleep":
                if _command(row).get("name") == f"{saga.name} deadline":
                    timeline.deadline = _wake_up(row)
                continue
            command = json.loads(row["entry_json"]).get("Command", {}).get("SetState", {})
            if command.get("key") != state_key:
                continue
            try:
                snapshots.append((at, SagaLog.model_validate_json(bytes(command.get("value", [])))))
            except ValueError:
                continue
        if not snapshots:
            timeline.kept = False
            return timeline
        timeline.start = timeline.start or snapshots[0][0]
        timeline.bars = _bars(snapshots, saga.log, timeline.end)
        return timeline

    # -- approvals -----------------------------------------------------------------------------------

    async def approvals(self) -> list[Approval]:
        """Workflows waiting for a person's decision, the nearest deadline first."""
        services = await self.services()
        pending: list[Approval] = []
        for info in services.values():
            if not info.approvals or info.run_handler is None:
                continue
            runs = await self.query(
                "SELECT id, target_service_key, created_at FROM sys_invocation "
                f"WHERE target_service_name = {sql_text(info.name)} "
                f"AND target_handler_name = {sql_text(info.run_handler)} AND status <> 'completed'"
            )
            if not runs:
                continue
            ids = ", ".join(sql_text(r["id"]) for r in runs)
            entries = await self.query(
                "SELECT id, index, entry_type, entry_lite_json FROM sys_journal "
                f"WHERE id IN ({ids}) AND entry_type IN ('Command: GetPromise', 'Command: Sleep') "
                "ORDER BY id, index"
            )
            decided = {
                (r["service_key"], r["key"])
                for r in await self.query(
                    "SELECT service_key, key FROM sys_promise "
                    f"WHERE service_name = {sql_text(info.name)} AND completed = true"
                )
            }
            for run in runs:
                mine = [e for e in entries if e["id"] == run["id"]]
                for decider in info.approvals:
                    asked = [
                        e
                        for e in mine
                        if e["entry_type"] == "Command: GetPromise"
                        and _command(e).get("key") == decider.promise
                    ]
                    if not asked or (run["target_service_key"], decider.promise) in decided:
                        continue
                    after = asked[-1]["index"]
                    timers = [e for e in mine if e["entry_type"] == "Command: Sleep" and e["index"] > after]
                    pending.append(
                        Approval(
                            system=info.system,
                            service=info.name,
                            key=run["target_service_key"],
                            promise=decider.promise,
                            approve=decider.approve,
                            reject=decider.reject,
                            started=parse_time(run.get("created_at")),
                            deadline=_wake_up(timers[0]) if timers else None,
                            invocation_id=run["id"],
                        )
                    )
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        pending.sort(key=lambda a: (a.deadline or far, a.service, a.key))
        return pending

    # -- what changed ----------------------------------------------------------------------------------

    async def fingerprint(self) -> str:
        """A digest that changes whenever a saga log or an invocation's status changes (one row each)."""
        logs = await self.query(
            "SELECT count(*) AS n, md5(string_agg(md5(s.value), ',' "
            "ORDER BY s.service_name, s.service_key, s.key)) AS digest "
            f"FROM state s WHERE s.key LIKE {sql_text(STATE_PREFIX + '%')}"
        )
        invocations = await self.query(
            "SELECT count(*) AS n, max(modified_at) AS latest, "
            "sum(CASE WHEN status = 'completed' THEN 0 ELSE 1 END) AS busy FROM sys_invocation"
        )
        return json.dumps([logs, invocations], sort_keys=True, default=str)


def _bars(
    snapshots: Sequence[tuple[dt.datetime, SagaLog]], final: SagaLog, end: dt.datetime | None
) -> list[Bar]:
    """Bars for every step's action and compensation, from successive versions of the saga log."""
    now = end or dt.datetime.now(dt.UTC)
    first_seen: dict[str, dt.datetime] = {}
    action_end: dict[str, tuple[dt.datetime, str]] = {}
    undo_start: dict[str, dt.datetime] = {}
    undo_end: dict[str, tuple[dt.datetime, str]] = {}
    compensating_since: dt.datetime | None = None
    done_actions = (StepStatus.COMPLETED, StepStatus.FAILED)
    undone = (StepStatus.COMPENSATED, StepStatus.RESOLVED, StepStatus.DEAD_LETTER)
    last_undo_end: dt.datetime | None = None
    for at, log in snapshots:
        if log.status == SagaStatus.COMPENSATING and compensating_since is None:
            compensating_since = at
            last_undo_end = at
        for step in log.steps:
            first_seen.setdefault(step.name, at)
            if step.name not in action_end and (step.status in done_actions or step.status in undone):
                outcome = "failed" if step.status == StepStatus.FAILED else "completed"
                action_end[step.name] = (at, outcome)
            if step.status in undone and undo_end.get(step.name, (at, ""))[1] != step.status.value:
                # A dead letter retried or resolved later ends its bar later, with its new outcome.
                if step.name not in undo_start:
                    undo_start[step.name] = last_undo_end or at
                    last_undo_end = at
                undo_end[step.name] = (at, step.status.value)
    bars: list[Bar] = []
    for step in final.steps:
        start = first_seen.get(step.name)
        if start is None:
            continue
        ended = action_end.get(step.name)
        bars.append(
            Bar(
                step.name,
                "action",
                ended[1] if ended else _running(step),
                start,
                ended[0] if ended else now,
                open=ended is None,
            )
        )
        held = any(d.step == step.name and d.awakeable_id for d in final.dead_letters)
        if step.name in undo_end:
            finish, undo_outcome = undo_end[step.name]
            if held:  # waiting for a person since its last attempt failed
                finish, undo_outcome = now, "held"
            bars.append(Bar(step.name, "undo", undo_outcome, undo_start[step.name], finish, open=held))
    return bars


def _running(step: StepRecord) -> str:
    return "running" if step.status == StepStatus.REGISTERED else step.status.value


def stats(
    rows: Iterable[MinuteRow], running: dict[str, int], *, minutes: int = 15, now: dt.datetime | None = None
) -> list[SystemStats]:
    """Per system, the last ``minutes`` minutes (empty ones included), from the engine's counts."""
    now = now or dt.datetime.now(dt.UTC)
    first = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
    by_system: dict[str, SystemStats] = {}

    def entry(system: str) -> SystemStats:
        if system not in by_system:
            by_system[system] = SystemStats(
                system, 0, [Minute(first + dt.timedelta(minutes=i)) for i in range(minutes)]
            )
        return by_system[system]

    for system, count in running.items():
        entry(system).running = count
    for row in rows:
        index = int((row.at - first).total_seconds() // 60)
        if 0 <= index < minutes:
            minute = entry(row.system).minutes[index]
            minute.ended, minute.compensated, minute.p99 = row.ended, row.compensated, row.p99
    return [by_system[name] for name in sorted(by_system)]
