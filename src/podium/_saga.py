"""Sagas: steps with compensations that are recorded before their action runs.

A :class:`Saga` runs inside a handler. Each step names its compensation *before* the action starts, and
the saga writes that registration to the handler's durable state (a journal entry), so a crash between
the action and the next line can never leave an action without its undo. When a step fails terminally,
or the invocation is cancelled, the saga runs the registered compensations in reverse order, retrying
each with backoff; one that still fails becomes a dead letter in the saga log, which is readable at any
time and names the step, its payload, the error and the attempts. With ``Strategy(hold=...)`` the saga
then waits for a person before it gives up: retry the compensation, or resolve the dead letter with a
note (:class:`DeadLetterAction`, sent with :meth:`podium.IngressClient.act_on_dead_letter` or from the
dashboard).

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

The saga logs what an operator needs on the ``podium.saga`` logger, with the fields ``event``, ``saga``,
``step``, ``attempt``, ``outcome`` and ``error`` (and the invocation's, see docs/logging.md): started, step
done, step failed, retried, pivot passed, deadline hit, compensating, compensation done or failed, dead
letter, ended. Nothing is logged again when the handler replays its journal.

At the same points it counts (``podium_saga_started_total``, ``..._ended_total``, ``..._dead_letters_total``,
``..._duration_seconds``) and, when tracing is on, makes one span per step and per compensation attempt,
parented under the engine's invocation span (see :mod:`podium._telemetry` and docs/observability.md).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from restate import Context, RestateDurableCallFuture, RestateDurableFuture, TerminalError, wait_completed

from podium._concurrency import with_timeout
from podium._context import can_write_state
from podium._logging import framework_logger
from podium._model import Model
from podium._services import invalid_value
from podium._telemetry import SagaTelemetry

T = TypeVar("T")
Action = Callable[[], Awaitable[T]]


def _start(action: Action[T]) -> Awaitable[T]:
    """Start a step's action; one that cannot even build its request fails its step.

    A ``ValidationError`` means the values are wrong, and a retry will not change them: the step fails
    like one that raised a terminal error, so the saga compensates instead of the engine retrying it.
    """
    try:
        return action()
    except ValidationError as exc:
        return _raise(invalid_value(exc))


async def _raise(error: TerminalError) -> Any:
    raise error


Compensation = Callable[[], Awaitable[Any]]

STATE_PREFIX = "podium.saga."

log = framework_logger("podium.saga")


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
    forward_retry: Backoff = field(default_factory=lambda: Backoff(max_attempts=10))
    """Retries of a step that fails after the pivot (forward recovery), before a person is needed."""
    hold: timedelta | None = None
    """How long a dead letter waits for a person before the saga gives up on it. While it waits (an
    awakeable, durable like every timer) a person can retry the compensation or resolve the dead letter
    with a note; either way the rollback goes on, and the saga can still end ``compensated``. ``None``
    (the default) gives up at once, as a caller waiting for the saga's answer expects."""


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
    RESOLVED = "resolved"
    """Its compensation kept failing and a person resolved the dead letter by hand (see its note)."""
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
    NEEDS_ATTENTION = "needs_attention"
    """Failed after the pivot; forward recovery gave up: a person must finish it."""


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
    attempts: int = 0
    """How many times the action was tried (more than one only in forward recovery)."""
    pivot: bool = False
    """Whether this step is the point of no return."""


class DeadLetterResolution(enum.StrEnum):
    """How a dead letter was closed by a person."""

    COMPENSATED = "compensated"
    """A person retried the compensation and it succeeded."""
    RESOLVED = "resolved"
    """A person finished the undo by hand and said so."""


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
    awakeable_id: str | None = None
    """While the saga holds the dead letter for a person (``Strategy.hold``): the awakeable that takes
    their :class:`DeadLetterAction`. None once they acted, or when the hold ended or never began."""
    resolution: DeadLetterResolution | None = None
    """How a person closed it; None while it is open."""
    note: str | None = None
    """What the person who closed it said."""
    by: str | None = None
    """Who closed it."""


class DeadLetterAction(Model):
    """A person's answer to a held dead letter: ``retry`` its compensation, or ``resolve`` it by hand."""

    action: Literal["retry", "resolve"]
    note: str | None = Field(default=None, max_length=2000, validate_default=True)
    """Why, or what was done by hand (required to resolve)."""
    by: str | None = Field(default=None, max_length=200)
    """Who acted."""

    @field_validator("note", mode="after")
    @classmethod
    def _resolving_says_why(cls, note: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("action") == "resolve" and not (note or "").strip():
            raise ValueError("required to resolve a dead letter (say what was done by hand)")
        return note


class SagaLog(Model):
    """The saga's durable record: visible in status while it runs and after it ends."""

    name: str
    invocation_id: str | None = None
    """The engine's id of the invocation running the saga (its journal shows when each step ran)."""
    status: SagaStatus = SagaStatus.RUNNING
    steps: list[StepRecord] = []
    failure: str | None = None
    """Why the saga failed (the first terminal error)."""
    failed_step: str | None = None
    """The step whose action failed first (None when the failure came from the handler's own code)."""
    pivot: str | None = None
    """The pivot step, once it has succeeded: from then on failures are recovered forward."""
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


class ManualInterventionNeeded(SagaError):
    """After the pivot a step kept failing; forward recovery gave up and a person must finish it."""


class SagaTimeout(TerminalError):
    """The saga's deadline passed while a step ran (status 408); the saga then compensates."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=408)


@dataclass
class _Step(Generic[T]):
    name: str
    action: Action[T]
    compensate: Compensation | None
    payload: Any
    pivot: bool = False


class StepBuilder(Generic[T]):
    """The seed's ``SafeStep(...).WithCompensation(...).Execute(...)``, made durable.

    ``saga.safe_step("reserve").with_compensation(undo, payload=ids).execute(action)`` is the same as
    ``saga.step("reserve", action, compensate=undo, payload=ids)``: the compensation is recorded before
    the action starts.
    """

    def __init__(self, saga: Saga, name: str) -> None:
        self._saga = saga
        self._name = name
        self._compensate: Compensation | None = None
        self._payload: Any = None

    def with_compensation(self, compensate: Compensation, *, payload: Any = None) -> StepBuilder[T]:
        """Set the undo (and what it needs, for the log and dead letters)."""
        self._compensate = compensate
        self._payload = payload
        return self

    async def execute(self, action: Action[T]) -> T:
        """Record the compensation, then run ``action`` and return its result."""
        return await self._saga.step(self._name, action, compensate=self._compensate, payload=self._payload)


class Saga:
    """Compensating transaction inside a handler (see the module docs for an example).

    Args:
        ctx: The handler's context. With an object or workflow context the log is kept in the handler's
            state under ``podium.saga.<name>`` (readable by shared handlers with :func:`read_saga_log`);
            with a plain service context it lives in the journal only.
        name: The saga's name, unique within the handler's key.
        strategy: How to roll back (default :data:`COMPENSATE_ALL`).
        timeout: A deadline for the steps (a durable timer started on entering the ``async with``). A
            step still running when it passes is cancelled (if it is a call) and the saga compensates
            with :class:`SagaTimeout` as the cause. Steps must return durable futures to be timed.
        keep_log: Write the saga log to the handler's state (one write per step) so that
            :func:`read_saga_log` can show it while the saga runs and after. False keeps it in memory
            only: compensation works the same (replay rebuilds the log from the journal), the saga
            errors still carry the log, but nobody else can read it; it saves the state writes (see
            docs/performance.md). In a stateless service handler there is no state, and no log is kept.
    """

    def __init__(
        self,
        ctx: Context,
        name: str,
        *,
        strategy: Strategy = COMPENSATE_ALL,
        timeout: timedelta | None = None,
        keep_log: bool = True,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.strategy = strategy
        self.timeout = timeout
        self.log = SagaLog(name=name, invocation_id=ctx.request().id)
        self._compensations: dict[str, Compensation] = {}
        self._stateful = keep_log and can_write_state(ctx)
        self._deadline: RestateDurableFuture[None] | None = None
        self._telemetry = SagaTelemetry(name)

    @property
    def past_pivot(self) -> bool:
        """Whether the pivot step has succeeded (failures are now recovered forward)."""
        return self.log.pivot is not None

    def _event(
        self,
        level: int,
        event: str,
        message: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        outcome: str | None = None,
        error: str | None = None,
    ) -> None:
        """Log one saga event with its fields (the logger drops it when the handler replays)."""
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"event": event, "saga": self.name}
        for name, value in (("step", step), ("attempt", attempt), ("outcome", outcome), ("error", error)):
            if value is not None:
                fields[name] = value
        log.log(level, message, extra=fields)

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

    def safe_step(self, name: str) -> StepBuilder[Any]:
        """Start a step in the builder form (see :class:`StepBuilder`)."""
        return StepBuilder(self, name)

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
                After the pivot it may be called again (forward recovery), so it must be idempotent.
            compensate: Undoes the work; must be idempotent and succeed when there is nothing to undo.
            payload: JSON-serialisable data recorded with the step (ids to undo), for the log and dead
                letters.

        Raises:
            TerminalError: The action's terminal error; leaving the ``async with`` block compensates.
        """
        (result,) = await self.parallel(self.define(name, action, compensate=compensate, payload=payload))
        return result  # type: ignore[no-any-return]  # parallel() erases per-step types

    async def pivot(self, name: str, action: Action[T], *, payload: Any = None) -> T:
        """Run the point-of-no-return step. Before it succeeds, failures compensate; after, they don't.

        Later steps that fail are retried with ``strategy.forward_retry``; if they still fail the saga
        ends with :class:`ManualInterventionNeeded` and the log says ``needs_attention``.
        """
        step = _Step(name, action, None, payload, pivot=True)
        (result,) = await self.parallel(step)
        self.log.pivot = name
        self._save()
        self._event(
            logging.INFO,
            "saga.pivot_passed",
            f"{self.name}: pivot {name} passed; no rollback from here",
            step=name,
        )
        return result  # type: ignore[no-any-return]

    async def parallel(self, *steps: _Step[Any]) -> list[Any]:
        """Run independent steps at once: register every compensation, start every action, await all.

        Results come back in the order of ``steps``. Every action is awaited even when one fails, so the
        log knows which completed; then the first failure is raised. After the pivot, a failing action
        is retried instead (forward recovery).
        """
        records = [self._register(s) for s in steps]
        self._save()
        for record in records:
            self._telemetry.step_begins(record.name)
        started = [_start(s.action) for s in steps]
        for record in records:
            record.attempts = 1
        results: list[Any] = []
        first_error: TerminalError | None = None
        for step, record, awaitable in zip(steps, records, started, strict=True):
            try:
                results.append(await self._await(record, awaitable))
            except TerminalError as exc:
                if self.past_pivot and not isinstance(exc, SagaTimeout):
                    results.append(await self._recover_forward(step, record, exc))
                    continue
                record.status = StepStatus.FAILED
                record.error = exc.message
                self._event(
                    logging.WARNING,
                    "saga.step_failed",
                    f"{self.name}: step {record.name} failed: {exc.message}",
                    step=record.name,
                    attempt=record.attempts,
                    outcome="failed",
                    error=exc.message,
                )
                self._telemetry.step_ended(
                    record.name, record.attempts, "failed", exc.message, pivot=record.pivot
                )
                results.append(None)
                if first_error is None:
                    first_error = exc
                    self.log.failed_step = self.log.failed_step or record.name
            else:
                record.status = StepStatus.COMPLETED
                self._event(
                    logging.INFO,
                    "saga.step_done",
                    f"{self.name}: step {record.name} done",
                    step=record.name,
                    attempt=record.attempts,
                    outcome="completed",
                )
                self._telemetry.step_ended(record.name, record.attempts, "completed", pivot=record.pivot)
        if first_error is not None:
            self._save()
            raise first_error
        # A completion is written with the next write (the next step's registration, or the end):
        # the journal already holds it, and one state write per step is half the engine work of two.
        return results

    async def _await(self, record: StepRecord, awaitable: Awaitable[Any]) -> Any:
        """Await a step's action, against the saga's deadline when there is one."""
        if self._deadline is None or not isinstance(awaitable, RestateDurableFuture):
            try:
                return await awaitable
            except ValidationError as exc:
                raise invalid_value(exc) from exc
        done, _ = await wait_completed(awaitable, self._deadline)
        if any(f is awaitable for f in done):
            try:
                return await awaitable
            except ValidationError as exc:
                raise invalid_value(exc) from exc
        if isinstance(awaitable, RestateDurableCallFuture):
            await awaitable.cancel_invocation()
        timeout = SagaTimeout(f"{self.name} timed out after {self.timeout} during {record.name}")
        self._event(
            logging.WARNING, "saga.deadline_hit", timeout.message, step=record.name, error=timeout.message
        )
        raise timeout

    async def _recover_forward(self, step: _Step[Any], record: StepRecord, error: TerminalError) -> Any:
        backoff = self.strategy.forward_retry
        while record.attempts < backoff.max_attempts:
            record.error = error.message
            self._save()
            delay = backoff.delay(record.attempts)
            self._event(
                logging.WARNING,
                "saga.step_retry",
                f"{self.name}: step {record.name} failed after the pivot (attempt {record.attempts}): "
                f"{error.message}; retrying in {delay.total_seconds():g} s",
                step=record.name,
                attempt=record.attempts,
                outcome="retrying",
                error=error.message,
            )
            self._telemetry.step_ended(record.name, record.attempts, "retrying", error.message)
            await self.ctx.sleep(delay, name=f"retry {record.name}")
            record.attempts += 1
            self._telemetry.step_begins(record.name)
            try:
                result = await _start(step.action)
            except ValidationError as exc:
                error = invalid_value(exc)
                continue
            except TerminalError as exc:
                error = exc
                continue
            record.status = StepStatus.COMPLETED
            record.error = None
            self._event(
                logging.INFO,
                "saga.step_done",
                f"{self.name}: step {record.name} done (attempt {record.attempts})",
                step=record.name,
                attempt=record.attempts,
                outcome="completed",
            )
            self._telemetry.step_ended(record.name, record.attempts, "completed")
            return result
        record.status = StepStatus.FAILED
        record.error = error.message
        self._event(
            logging.ERROR,
            "saga.step_failed",
            f"{self.name}: step {record.name} failed after the pivot, {record.attempts} attempts: "
            f"{error.message}; forward recovery gave up",
            step=record.name,
            attempt=record.attempts,
            outcome="failed",
            error=error.message,
        )
        self._telemetry.step_ended(record.name, record.attempts, "failed", error.message)
        raise error

    def _register(self, step: _Step[Any]) -> StepRecord:
        if any(r.name == step.name for r in self.log.steps):
            raise ValueError(f"saga {self.name!r} already has a step named {step.name!r}")
        record = StepRecord(
            name=step.name,
            payload=step.payload,
            has_compensation=step.compensate is not None,
            pivot=step.pivot,
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
        if self.timeout is not None:
            self._deadline = self.ctx.sleep(self.timeout, name=f"{self.name} deadline")
        self._event(logging.INFO, "saga.started", f"{self.name} started")
        self._telemetry.started()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.log.status = SagaStatus.COMPLETED
            self._save()
            self._event(logging.INFO, "saga.ended", f"{self.name} completed", outcome=SagaStatus.COMPLETED)
            self._telemetry.ended(SagaStatus.COMPLETED)
            return
        if isinstance(exc, ValidationError):
            # A value built in the saga's body (between steps) does not validate: no retry changes it,
            # so it ends the saga like a terminal error would.
            exc = invalid_value(exc)
        if not isinstance(exc, TerminalError) or isinstance(exc, SagaError):
            # Anything else (a bug, or the SDK suspending the invocation) is retried by the engine, which
            # replays the journal: nothing to undo here.
            return
        if self.past_pivot:
            self.log.status = SagaStatus.NEEDS_ATTENTION
            self.log.failure = exc.message
            self._save()
            self._event(
                logging.ERROR,
                "saga.ended",
                f"{self.name} needs attention: failed after its pivot ({self.log.pivot}): {exc.message}",
                outcome=SagaStatus.NEEDS_ATTENTION,
                error=exc.message,
            )
            self._telemetry.ended(SagaStatus.NEEDS_ATTENTION)
            raise ManualInterventionNeeded(
                f"{self.name} failed after its point of no return ({self.log.pivot}): {exc.message}; "
                "forward recovery gave up, a person must finish it",
                log=self.log,
                cause=exc,
                status_code=500,
            ) from exc
        raise await self.compensate(exc) from exc

    async def compensate(self, cause: TerminalError) -> SagaError:
        """Roll back now (normally called by ``async with``) and return the error describing the end."""
        self.log.status = SagaStatus.COMPENSATING
        self.log.failure = cause.message
        self._save()
        targets = [r for r in reversed(self.log.steps) if self._should_compensate(r)]
        self._event(
            logging.INFO,
            "saga.compensating",
            f"{self.name} compensating {len(targets)} steps after: {cause.message}",
            outcome=SagaStatus.COMPENSATING,
            error=cause.message,
        )
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
        by_hand = [r.name for r in targets if r.status == StepStatus.RESOLVED]
        if dead:
            self.log.status = SagaStatus.FAILED
            self._save()
            self._event(
                logging.ERROR,
                "saga.ended",
                f"{self.name} failed and needs attention: {cause.message}; compensation failed for "
                f"{', '.join(dead)} (see dead letters)",
                outcome=SagaStatus.FAILED,
                error=cause.message,
            )
            self._telemetry.ended(SagaStatus.FAILED)
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
        if by_hand:
            undone_text += f"; resolved by hand: {', '.join(by_hand)}"
        self._event(
            logging.WARNING,
            "saga.ended",
            f"{self.name} compensated ({undone_text}) after: {cause.message}",
            outcome=SagaStatus.COMPENSATED,
            error=cause.message,
        )
        self._telemetry.ended(SagaStatus.COMPENSATED)
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
        """Compensate one step with retries; a dead letter when they run out (held, when told to)."""
        if await self._try_compensation(record):
            return True
        return await self._dead_letter(record)

    async def _try_compensation(self, record: StepRecord) -> bool:
        """Run ``record``'s compensation up to ``strategy.retry.max_attempts`` more times."""
        undo = self._compensations[record.name]
        backoff = self.strategy.retry
        for round_attempt in range(1, backoff.max_attempts + 1):
            record.compensation_attempts += 1
            attempt = record.compensation_attempts
            self._telemetry.compensation_begins(record.name)
            try:
                await undo()
            except TerminalError as exc:
                record.error = exc.message
                last = round_attempt >= backoff.max_attempts
                self._compensation_failed(record, attempt, exc, round_attempt=round_attempt)
                if not last:
                    await self.ctx.sleep(
                        backoff.delay(round_attempt), name=f"retry compensation {record.name}"
                    )
                continue
            record.status = StepStatus.COMPENSATED
            self._save()
            self._compensated(record, attempt)
            return True
        return False

    async def _compensate_parallel(self, records: Sequence[StepRecord]) -> None:
        pending = list(records)
        backoff = self.strategy.retry
        for attempt in range(1, backoff.max_attempts + 1):
            started = []
            for record in pending:
                self._telemetry.compensation_begins(record.name)
                started.append((record, self._compensations[record.name]()))
            failed: list[StepRecord] = []
            for record, awaitable in started:
                record.compensation_attempts = attempt
                try:
                    await awaitable
                except TerminalError as exc:
                    record.error = exc.message
                    failed.append(record)
                    self._compensation_failed(record, attempt, exc, round_attempt=attempt)
                else:
                    record.status = StepStatus.COMPENSATED
                    self._compensated(record, attempt)
            self._save()
            pending = failed
            if not pending:
                return
            if attempt < backoff.max_attempts:
                await self.ctx.sleep(backoff.delay(attempt), name="retry compensations")
        for record in pending:
            await self._dead_letter(record)

    def _compensated(self, record: StepRecord, attempt: int) -> None:
        self._event(
            logging.INFO,
            "saga.compensation_done",
            f"{self.name}: step {record.name} compensated",
            step=record.name,
            attempt=attempt,
            outcome=StepStatus.COMPENSATED,
        )
        self._telemetry.compensation_ended(record.name, attempt, StepStatus.COMPENSATED)

    def _compensation_failed(
        self, record: StepRecord, attempt: int, error: TerminalError, *, round_attempt: int
    ) -> None:
        last = round_attempt >= self.strategy.retry.max_attempts
        then = (
            "no attempts left"
            if last
            else f"retrying in {self.strategy.retry.delay(round_attempt).total_seconds():g} s"
        )
        self._event(
            logging.WARNING,
            "saga.compensation_failed",
            f"{self.name}: compensation of {record.name} failed (attempt {attempt}): {error.message}; {then}",
            step=record.name,
            attempt=attempt,
            outcome="failed" if last else "retrying",
            error=error.message,
        )
        self._telemetry.compensation_ended(
            record.name, attempt, "failed" if last else "retrying", error.message
        )

    async def _dead_letter(self, record: StepRecord) -> bool:
        """Make ``record`` a dead letter; with ``strategy.hold``, wait for a person to act on it.

        Returns whether the step ended up undone after all (a person retried it successfully, or
        resolved it by hand), so the rollback goes on as if its compensation had succeeded.
        """
        self._event(
            logging.ERROR,
            "saga.dead_lettered",
            f"{self.name}: compensation of {record.name} kept failing after {record.compensation_attempts} "
            f"attempts; dead letter for a person: {record.error}",
            step=record.name,
            attempt=record.compensation_attempts,
            outcome=StepStatus.DEAD_LETTER,
            error=record.error,
        )
        self._telemetry.dead_letter()
        record.status = StepStatus.DEAD_LETTER
        letter = DeadLetter(
            saga=self.name,
            step=record.name,
            payload=record.payload,
            error=record.error or "unknown error",
            attempts=record.compensation_attempts,
        )
        self.log.dead_letters.append(letter)
        hold = self.strategy.hold
        while hold is not None:
            awakeable_id, answer = self.ctx.awakeable(type_hint=dict)
            letter.awakeable_id = awakeable_id
            self._save()
            timed = await with_timeout(self.ctx, answer, hold, cancel=False)
            letter.awakeable_id = None
            if timed.timed_out or timed.value is None:
                self._event(
                    logging.ERROR,
                    "saga.hold_ended",
                    f"{self.name}: nobody acted on the dead letter of {record.name} within {hold}",
                    step=record.name,
                    outcome=StepStatus.DEAD_LETTER,
                )
                break
            try:
                action = DeadLetterAction.model_validate(timed.value)
            except ValidationError:
                continue  # the clients validate first; an answer that does not parse holds it again
            letter.by, letter.note = action.by, action.note
            if action.action == "resolve":
                letter.resolution = DeadLetterResolution.RESOLVED
                record.status = StepStatus.RESOLVED
                self._save()
                self._event(
                    logging.WARNING,
                    "saga.dead_letter_resolved",
                    f"{self.name}: {action.by or 'a person'} resolved the dead letter of {record.name} by "
                    f"hand: {action.note}",
                    step=record.name,
                    outcome=StepStatus.RESOLVED,
                )
                return True
            self._event(
                logging.INFO,
                "saga.dead_letter_retry",
                f"{self.name}: {action.by or 'a person'} retries the compensation of {record.name}",
                step=record.name,
                outcome="retrying",
            )
            if await self._try_compensation(record):
                letter.resolution = DeadLetterResolution.COMPENSATED
                self._save()
                return True
            record.status = StepStatus.DEAD_LETTER
            letter.error = record.error or letter.error
            letter.attempts = record.compensation_attempts
        self._save()
        return False


async def read_saga_log(ctx: Any, name: str) -> SagaLog | None:
    """The log of saga ``name`` of this object or workflow, from any handler (shared ones included)."""
    raw = await ctx.get(STATE_PREFIX + name)
    return None if raw is None else SagaLog.model_validate(raw)
