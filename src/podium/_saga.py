"""Sagas: steps with compensations that are recorded before their action runs.

A :class:`Saga` runs inside a handler. Each step names its compensation *before* the action starts, and
the saga writes that registration to the handler's durable state (a journal entry), so a crash between
the action and the next line can never leave an action without its undo. When a step fails terminally,
or the invocation is cancelled, the saga runs the registered compensations in reverse order, retrying
each with backoff; one that still fails becomes a dead letter in the saga log, which is readable at any
time and names the step, its payload, the error and the attempts.

Usage::

    async with Saga(ctx, "book-trip") as saga:
        flight = await saga.step(
            "reserve-flight",
            lambda: ctx.object_call(reserve_flight, key=flight_id, arg=request.flight),
            compensate=lambda: ctx.object_call(cancel_flight, key=flight_id, arg=None),
            payload={"reservationId": flight_id},
        )
        ...

If a step raises ``TerminalError``, leaving the ``async with`` block compensates and raises
:class:`SagaCompensated` (every compensation ran) or :class:`CompensationFailed` (some did not).
Non-terminal exceptions are left to the engine, which retries the invocation and replays the journal.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, TypeVar

from restate import Context, TerminalError

from podium._model import Model

T = TypeVar("T")
Action = Callable[[], Awaitable[T]]
Compensation = Callable[[], Awaitable[Any]]

STATE_PREFIX = "podium.saga."


class Scope(enum.StrEnum):
    """Which steps a rollback compensates."""

    ALL = "all"
    """Every step whose compensation was registered, including a step whose action failed: the action
    may have taken effect before it failed (a timeout, a crash), so its undo must be idempotent and
    tolerate "nothing to undo"."""
    COMPLETED = "completed"
    """Only the steps whose action is known to have succeeded."""


@dataclass(frozen=True)
class Backoff:
    """Attempts and delays for retrying a compensation (delays are durable timers)."""

    max_attempts: int = 5
    """Attempts before the compensation becomes a dead letter (the first one counts)."""
    initial_interval: timedelta = timedelta(milliseconds=200)
    """Delay after the first failure."""
    factor: float = 2.0
    """Each delay is the previous one times this."""
    max_interval: timedelta = timedelta(seconds=30)
    """Upper bound of a delay."""

    def delay(self, attempt: int) -> timedelta:
        """The delay after failed attempt number ``attempt`` (1-based)."""
        seconds = self.initial_interval.total_seconds() * self.factor ** (attempt - 1)
        return min(timedelta(seconds=seconds), self.max_interval)


@dataclass(frozen=True)
class Strategy:
    """How a saga rolls back. Use the ready-made constants, or build one."""

    scope: Scope = Scope.ALL
    """Which steps to compensate."""
    parallel: bool = False
    """Run compensations at the same time instead of in reverse order (for independent steps)."""
    best_effort: bool = False
    """Keep going past a compensation that keeps failing (it becomes a dead letter) instead of stopping
    there and leaving the earlier steps uncompensated for a person to inspect."""
    retry: Backoff = field(default_factory=Backoff)
    """Retries of each compensation."""


COMPENSATE_ALL = Strategy()
"""Default: every registered step, in reverse order, stopping at a compensation that keeps failing."""
COMPENSATE_COMPLETED = Strategy(scope=Scope.COMPLETED)
"""Only steps whose action succeeded, in reverse order."""
BEST_EFFORT = Strategy(best_effort=True)
"""Every registered step in reverse order, continuing past compensations that keep failing."""
PARALLEL = Strategy(parallel=True, best_effort=True)
"""Every registered step at once; each failing compensation is retried and dead-lettered on its own."""


class StepStatus(enum.StrEnum):
    """Where a step is in its life."""

    REGISTERED = "registered"
    """Compensation recorded; the action is running (or was cut off)."""
    COMPLETED = "completed"
    """The action succeeded."""
    FAILED = "failed"
    """The action failed terminally."""
    COMPENSATED = "compensated"
    """Its compensation ran successfully."""
    DEAD_LETTER = "dead_letter"
    """Its compensation kept failing; see the dead letters."""
    NOT_COMPENSATED = "not_compensated"
    """Rollback stopped before reaching it (an earlier compensation became a dead letter)."""


class SagaStatus(enum.StrEnum):
    """Where the saga is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    """Failed, and every compensation ran: nothing is held."""
    FAILED = "failed"
    """Failed, and some compensation is a dead letter: a person must act."""


class StepRecord(Model):
    """One step in the saga log."""

    name: str
    """The step's name, unique within the saga."""
    payload: Any = None
    """What the compensation needs to undo the step (ids, amounts), recorded at registration."""
    status: StepStatus = StepStatus.REGISTERED
    """Current status of the step."""
    has_compensation: bool = True
    """Whether an undo was registered (read-only steps have none)."""
    error: str | None = None
    """The action's error, or the last compensation error."""
    compensation_attempts: int = 0
    """How many times its compensation was tried."""


class DeadLetter(Model):
    """A compensation that kept failing: what a person needs to finish the undo by hand."""

    saga: str
    """The saga's name."""
    step: str
    """The step whose compensation failed."""
    payload: Any = None
    """The step's payload (what to undo)."""
    error: str
    """The last error."""
    attempts: int
    """How many times it was tried."""


class SagaLog(Model):
    """The saga's durable record: visible in status while it runs and after it ends."""

    name: str
    status: SagaStatus = SagaStatus.RUNNING
    steps: list[StepRecord] = []
    failure: str | None = None
    """Why the saga failed (the first terminal error)."""
    dead_letters: list[DeadLetter] = []


class SagaError(TerminalError):
    """A saga ended without completing. ``log`` is its final record; ``cause`` the first failure."""

    def __init__(self, message: str, *, log: SagaLog, cause: TerminalError, status_code: int) -> None:
        super().__init__(message, status_code=status_code)
        self.log = log
        self.cause = cause


class SagaCompensated(SagaError):
    """A step failed and every registered compensation ran; nothing is left held."""


class CompensationFailed(SagaError):
    """A step failed and at least one compensation kept failing; ``log.dead_letters`` says which."""


@dataclass
class _Step(Generic[T]):
    name: str
    action: Action[T]
    compensate: Compensation | None
    payload: Any


class Saga:
    """Compensating transaction inside a handler (see the module docs for an example).

    Args:
        ctx: The handler's context. With an object or workflow context the log is kept in the handler's
            state under ``podium.saga.<name>`` (readable by shared handlers with :func:`read_saga_log`);
            with a plain service context it lives in the journal only.
        name: The saga's name, unique within the handler's key.
        strategy: How to roll back (default :data:`COMPENSATE_ALL`).
    """

    def __init__(self, ctx: Context, name: str, *, strategy: Strategy = COMPENSATE_ALL) -> None:
        self.ctx = ctx
        self.name = name
        self.strategy = strategy
        self.log = SagaLog(name=name)
        self._compensations: dict[str, Compensation] = {}
        self._stateful = hasattr(ctx, "set")

    # -- running steps ---------------------------------------------------------------------------------

    def define(
        self,
        name: str,
        action: Action[T],
        *,
        compensate: Compensation | None = None,
        payload: Any = None,
    ) -> _Step[T]:
        """Describe a step without running it, for :meth:`parallel`."""
        return _Step(name, action, compensate, payload)

    async def step(
        self,
        name: str,
        action: Action[T],
        *,
        compensate: Compensation | None = None,
        payload: Any = None,
    ) -> T:
        """Register ``compensate`` durably, then run ``action`` and return its result.

        Args:
            name: Unique step name (shown in the log).
            action: Starts the work: returns a call future, a ``ctx.run_typed`` future, or a coroutine.
            compensate: Undoes the work; must be idempotent and succeed when there is nothing to undo.
            payload: JSON-serialisable data recorded with the step (ids to undo), for the log and dead
                letters.

        Raises:
            TerminalError: The action's terminal error; leaving the ``async with`` block compensates.
        """
        (result,) = await self.parallel(self.define(name, action, compensate=compensate, payload=payload))
        return result  # type: ignore[no-any-return]  # parallel() erases per-step types

    async def parallel(self, *steps: _Step[Any]) -> list[Any]:
        """Run independent steps at once: register every compensation, start every action, await all.

        Results come back in the order of ``steps``. Every action is awaited even when one fails, so the
        log knows which completed; then the first failure is raised.
        """
        records = [self._register(s) for s in steps]
        self._save()
        started = [s.action() for s in steps]
        results: list[Any] = []
        first_error: TerminalError | None = None
        for record, awaitable in zip(records, started, strict=True):
            try:
                results.append(await awaitable)
            except TerminalError as exc:
                record.status = StepStatus.FAILED
                record.error = exc.message
                results.append(None)
                first_error = first_error or exc
            else:
                record.status = StepStatus.COMPLETED
        self._save()
        if first_error is not None:
            raise first_error
        return results

    def _register(self, step: _Step[Any]) -> StepRecord:
        if any(r.name == step.name for r in self.log.steps):
            raise ValueError(f"saga {self.name!r} already has a step named {step.name!r}")
        record = StepRecord(
            name=step.name, payload=step.payload, has_compensation=step.compensate is not None
        )
        self.log.steps.append(record)
        if step.compensate is not None:
            self._compensations[step.name] = step.compensate
        return record

    def _save(self) -> None:
        if self._stateful:
            self.ctx.set(STATE_PREFIX + self.name, self.log.model_dump(mode="json"))  # type: ignore[attr-defined]

    # -- ending ----------------------------------------------------------------------------------------

    async def __aenter__(self) -> Saga:
        self._save()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.log.status = SagaStatus.COMPLETED
            self._save()
            return
        if isinstance(exc, TerminalError) and not isinstance(exc, SagaError):
            raise await self.compensate(exc) from exc
        # Anything else (a bug, or the SDK suspending the invocation) is retried by the engine, which
        # replays the journal: nothing to undo here.

    async def compensate(self, cause: TerminalError) -> SagaError:
        """Roll back now (normally called by ``async with``) and return the error describing the end."""
        self.log.status = SagaStatus.COMPENSATING
        self.log.failure = cause.message
        self._save()
        targets = [r for r in reversed(self.log.steps) if self._should_compensate(r)]
        if self.strategy.parallel:
            await self._compensate_parallel(targets)
        else:
            for record in targets:
                if not await self._compensate_one(record) and not self.strategy.best_effort:
                    for rest in targets[targets.index(record) + 1 :]:
                        rest.status = StepStatus.NOT_COMPENSATED
                    break
        dead = [r.name for r in self.log.steps if r.status == StepStatus.DEAD_LETTER]
        undone = [r.name for r in targets if r.status == StepStatus.COMPENSATED]
        if dead:
            self.log.status = SagaStatus.FAILED
            self._save()
            return CompensationFailed(
                f"{self.name} failed: {cause.message}; compensation failed for {', '.join(dead)} "
                "(see dead letters)",
                log=self.log,
                cause=cause,
                status_code=500,
            )
        self.log.status = SagaStatus.COMPENSATED
        self._save()
        undone_text = ", ".join(undone) if undone else "nothing to undo"
        return SagaCompensated(
            f"{self.name} failed: {cause.message}; compensated: {undone_text}",
            log=self.log,
            cause=cause,
            status_code=cause.status_code,
        )

    def _should_compensate(self, record: StepRecord) -> bool:
        if record.name not in self._compensations:
            return False
        if self.strategy.scope == Scope.COMPLETED:
            return record.status == StepStatus.COMPLETED
        return True

    async def _compensate_one(self, record: StepRecord) -> bool:
        undo = self._compensations[record.name]
        backoff = self.strategy.retry
        for attempt in range(1, backoff.max_attempts + 1):
            record.compensation_attempts = attempt
            try:
                await undo()
            except TerminalError as exc:
                record.error = exc.message
                if attempt < backoff.max_attempts:
                    await self.ctx.sleep(backoff.delay(attempt), name=f"retry compensation {record.name}")
                continue
            record.status = StepStatus.COMPENSATED
            self._save()
            return True
        self._dead_letter(record)
        return False

    async def _compensate_parallel(self, records: Sequence[StepRecord]) -> None:
        pending = list(records)
        backoff = self.strategy.retry
        for attempt in range(1, backoff.max_attempts + 1):
            started = [(r, self._compensations[r.name]()) for r in pending]
            failed: list[StepRecord] = []
            for record, awaitable in started:
                record.compensation_attempts = attempt
                try:
                    await awaitable
                except TerminalError as exc:
                    record.error = exc.message
                    failed.append(record)
                else:
                    record.status = StepStatus.COMPENSATED
            self._save()
            pending = failed
            if not pending:
                return
            if attempt < backoff.max_attempts:
                await self.ctx.sleep(backoff.delay(attempt), name="retry compensations")
        for record in pending:
            self._dead_letter(record)

    def _dead_letter(self, record: StepRecord) -> None:
        record.status = StepStatus.DEAD_LETTER
        self.log.dead_letters.append(
            DeadLetter(
                saga=self.name,
                step=record.name,
                payload=record.payload,
                error=record.error or "unknown error",
                attempts=record.compensation_attempts,
            )
        )
        self._save()


async def read_saga_log(ctx: Any, name: str) -> SagaLog | None:
    """The log of saga ``name`` of this object or workflow, from any handler (shared ones included)."""
    raw = await ctx.get(STATE_PREFIX + name)
    return None if raw is None else SagaLog.model_validate(raw)
