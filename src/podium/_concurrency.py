"""Fan-out, fan-in, sliding-window batches, racing and timeouts over durable futures.

Every branch is one durable operation that the engine runs concurrently and records in the journal: a
call or send to another handler, a ``ctx.run_typed`` side effect, a sleep, a promise or an awakeable. A
branch that needs several steps belongs in a handler of its own, called as one branch. Because
completions come from the journal, every function here makes the same decisions when the handler is
replayed after a crash.

- :func:`fan_out`: run all, wait for all, results in **input order** with per-branch errors.
- :func:`fan_out_fail`: run all, fail on the first error and cancel the calls still running.
- :func:`map_concurrent` / :func:`process_batch`: at most N in flight, a new one starting as one ends,
  with a :class:`CompletionPolicy` (stop after K successes, or after more than F failures).
- :func:`race`: the first success wins; the other calls are cancelled.
- :func:`with_timeout`: a value or a timed-out marker, on any durable future.

Cancellation reaches calls to other handlers (the engine cancels the invocation, which runs its own
compensations); a ``ctx.run_typed`` already executing cannot be stopped and its result is discarded.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from restate import Context, RestateDurableCallFuture, RestateDurableFuture, TerminalError, wait_completed

T = TypeVar("T")
X = TypeVar("X")


class OutcomeStatus(enum.StrEnum):
    """What happened to one branch."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Started, then cancelled because the batch or race was decided without it."""
    NOT_STARTED = "not_started"
    """Never started because the batch was decided first."""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of one branch: a value, or the terminal error that ended it."""

    status: OutcomeStatus
    value: T | None = None
    error: TerminalError | None = None

    @property
    def ok(self) -> bool:
        """Whether the branch succeeded."""
        return self.status == OutcomeStatus.SUCCEEDED


@dataclass(frozen=True)
class FanOutResult(Generic[T]):
    """Outcomes of every branch, in the order the branches were given."""

    outcomes: list[Outcome[T]]

    @property
    def results(self) -> list[T | None]:
        """Each branch's value (None where it failed), in input order."""
        return [o.value for o in self.outcomes]

    @property
    def errors(self) -> list[TerminalError | None]:
        """Each branch's error (None where it succeeded), in input order."""
        return [o.error for o in self.outcomes]

    @property
    def succeeded(self) -> int:
        """How many branches succeeded."""
        return sum(1 for o in self.outcomes if o.status == OutcomeStatus.SUCCEEDED)

    @property
    def failed(self) -> int:
        """How many branches failed."""
        return sum(1 for o in self.outcomes if o.status == OutcomeStatus.FAILED)

    def values(self) -> list[T]:
        """Every value in input order; raises :class:`FanOutError` if any branch did not succeed."""
        if any(not o.ok for o in self.outcomes):
            raise FanOutError.from_outcomes("not every branch succeeded", self.outcomes)
        return [o.value for o in self.outcomes]  # type: ignore[misc]  # all succeeded, so all set


class FanOutError(TerminalError):
    """Branches failed. ``outcomes`` has every branch in input order; ``first`` the first failure."""

    def __init__(self, message: str, outcomes: Sequence[Outcome[Any]], first: int | None) -> None:
        status = 500
        if first is not None and outcomes[first].error is not None:
            status = outcomes[first].error.status_code  # type: ignore[union-attr]
        super().__init__(message, status_code=status)
        self.outcomes = list(outcomes)
        self.first = first

    @classmethod
    def from_outcomes(cls, reason: str, outcomes: Sequence[Outcome[Any]]) -> FanOutError:
        """Build the error, naming every failed branch and its cause."""
        failed = [(i, o) for i, o in enumerate(outcomes) if o.status == OutcomeStatus.FAILED]
        causes = "; ".join(f"#{i}: {o.error.message if o.error else '?'}" for i, o in failed)
        first = failed[0][0] if failed else None
        return cls(f"{reason} ({len(failed)} of {len(outcomes)} failed: {causes})", outcomes, first)


class RaceError(FanOutError):
    """Every contender in a race failed; the message carries every cause."""


async def _settle(future: RestateDurableFuture[T]) -> Outcome[T]:
    try:
        return Outcome(OutcomeStatus.SUCCEEDED, value=await future)
    except TerminalError as exc:
        return Outcome(OutcomeStatus.FAILED, error=exc)


async def _cancel(futures: Iterable[RestateDurableFuture[Any]]) -> None:
    for future in futures:
        if isinstance(future, RestateDurableCallFuture):
            await future.cancel_invocation()


async def fan_out(futures: Sequence[RestateDurableFuture[T]]) -> FanOutResult[T]:
    """Wait for every branch (best effort) and return all outcomes in input order.

    Example::

        result = await fan_out([ctx.service_call(fetch_details, pid), ctx.service_call(fetch_pricing, pid)])
        details, pricing = result.results          # None where a source failed
        if result.failed: ...
    """
    outcomes: list[Outcome[T] | None] = [None] * len(futures)
    index = {id(f): i for i, f in enumerate(futures)}
    pending = list(futures)
    while pending:
        done, pending = await wait_completed(*pending)
        for future in done:
            outcomes[index[id(future)]] = await _settle(future)
    return FanOutResult([o for o in outcomes if o is not None])


async def fan_out_fail(futures: Sequence[RestateDurableFuture[T]]) -> list[T]:
    """Wait for every branch; the first failure cancels the calls still running and raises.

    Returns:
        Every value, in input order.

    Raises:
        FanOutError: On the first failure (its status code is the failure's); ``outcomes`` shows which
            branches had succeeded, failed, or were cancelled.
    """
    outcomes: list[Outcome[T]] = [Outcome(OutcomeStatus.NOT_STARTED)] * len(futures)
    index = {id(f): i for i, f in enumerate(futures)}
    pending = list(futures)
    while pending:
        done, pending = await wait_completed(*pending)
        for future in done:
            outcomes[index[id(future)]] = await _settle(future)
        if any(o.status == OutcomeStatus.FAILED for o in outcomes):
            await _cancel(pending)
            for future in pending:
                outcomes[index[id(future)]] = Outcome(OutcomeStatus.CANCELLED)
            raise FanOutError.from_outcomes("fan-out failed", outcomes)
    return [o.value for o in outcomes]  # type: ignore[misc]  # all succeeded


@dataclass(frozen=True)
class CompletionPolicy:
    """When a batch is decided before every item has run."""

    min_successes: int | None = None
    """Stop (and cancel what is in flight) once this many items succeeded. None: run every item."""
    max_failures: int | None = None
    """Fail the batch once more than this many items failed. None: never fail early; 0: fail fast."""


@dataclass(frozen=True)
class BatchResult(FanOutResult[T]):
    """Outcomes of a batch, in input order; items never started are ``not_started``."""

    max_in_flight: int = 0
    """The most items that were running at once (never above the cap)."""


class BatchError(FanOutError):
    """A batch broke its :class:`CompletionPolicy`; ``outcomes`` shows every item."""


async def map_concurrent(
    items: Sequence[X],
    start: Callable[[X], RestateDurableFuture[T]],
    *,
    max_concurrency: int,
    policy: CompletionPolicy = CompletionPolicy(),
) -> BatchResult[T]:
    """Run ``start(item)`` for every item with at most ``max_concurrency`` in flight (sliding window).

    A new item starts as soon as one finishes, not when a whole chunk has. Results are in input order.

    Raises:
        ValueError: If ``max_concurrency`` is below 1.
        BatchError: When more than ``policy.max_failures`` items failed; items in flight are cancelled
            and the rest never start.
    """
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    outcomes: list[Outcome[T]] = [Outcome(OutcomeStatus.NOT_STARTED)] * len(items)
    in_flight: dict[int, tuple[int, RestateDurableFuture[T]]] = {}
    next_item = 0
    peak = 0
    successes = failures = 0

    def fill() -> None:
        nonlocal next_item, peak
        while next_item < len(items) and len(in_flight) < max_concurrency:
            future = start(items[next_item])
            in_flight[id(future)] = (next_item, future)
            next_item += 1
        peak = max(peak, len(in_flight))

    fill()
    while in_flight:
        done, _ = await wait_completed(*(f for _, f in in_flight.values()))
        for future in done:
            position, _ = in_flight.pop(id(future))
            outcome = await _settle(future)
            outcomes[position] = outcome
            if outcome.ok:
                successes += 1
            else:
                failures += 1
        decided_ok = policy.min_successes is not None and successes >= policy.min_successes
        decided_failed = policy.max_failures is not None and failures > policy.max_failures
        if decided_ok or decided_failed:
            await _cancel(f for _, f in in_flight.values())
            for position, _ in in_flight.values():
                outcomes[position] = Outcome(OutcomeStatus.CANCELLED)
            in_flight.clear()
            if decided_failed:
                raise BatchError.from_outcomes(f"batch failed after {failures} failures", outcomes)
            break
        fill()
    result = BatchResult(outcomes, max_in_flight=peak)
    if policy.min_successes is not None and successes < policy.min_successes:
        raise BatchError.from_outcomes(
            f"only {successes} of {policy.min_successes} required successes", outcomes
        )
    return result


async def process_batch(
    items: Sequence[X],
    start: Callable[[X], RestateDurableFuture[T]],
    *,
    max_concurrency: int,
) -> list[T]:
    """Every item with at most ``max_concurrency`` in flight; fail fast on the first failure.

    The seed's ``ProcessBatch``, with a sliding window instead of fixed chunks.

    Raises:
        BatchError: On the first failure (the calls in flight are cancelled).
    """
    result = await map_concurrent(
        items, start, max_concurrency=max_concurrency, policy=CompletionPolicy(max_failures=0)
    )
    return result.values()


@dataclass(frozen=True)
class RaceResult(Generic[T]):
    """The winner of a race: its position among the contenders, and its value."""

    index: int
    value: T
    losers_cancelled: list[int] = field(default_factory=list)
    """Contenders that were still running and were cancelled."""
    also_succeeded: list[int] = field(default_factory=list)
    """Contenders that finished successfully at the same moment as the winner (their effects happened:
    undo them if the race was over side effects). Seen mostly on replay, when results arrive together."""


async def race(futures: Sequence[RestateDurableFuture[T]]) -> RaceResult[T]:
    """The first contender to **succeed** wins; failures are ignored while another may still succeed.

    Raises:
        RaceError: If every contender failed, with each cause.
        ValueError: With no contenders.
    """
    if not futures:
        raise ValueError("race needs at least one contender")
    index = {id(f): i for i, f in enumerate(futures)}
    outcomes: list[Outcome[T]] = [Outcome(OutcomeStatus.NOT_STARTED)] * len(futures)
    pending = list(futures)
    while pending:
        done, pending = await wait_completed(*pending)
        for position, future in enumerate(done):
            outcome = await _settle(future)
            outcomes[index[id(future)]] = outcome
            if outcome.ok:
                also = [index[id(f)] for f in done[position + 1 :] if (await _settle(f)).ok]
                await _cancel(pending)
                cancelled = sorted(index[id(f)] for f in pending)
                return RaceResult(index[id(future)], outcome.value, cancelled, sorted(also))  # type: ignore[arg-type]
    raise RaceError.from_outcomes("every contender failed", outcomes)


@dataclass(frozen=True)
class Timed(Generic[T]):
    """A value, or the fact that the deadline came first."""

    value: T | None = None
    timed_out: bool = False


async def with_timeout(
    ctx: Context, future: RestateDurableFuture[T], timeout: timedelta, *, cancel: bool = True
) -> Timed[T]:
    """Wait for ``future`` at most ``timeout`` (a durable timer: it survives restarts of everything).

    Args:
        cancel: Cancel the call behind ``future`` when the deadline comes first (calls only).

    Raises:
        TerminalError: The future's own failure, if it failed before the deadline.
    """
    timer = ctx.sleep(timeout, name="timeout")
    done, _ = await wait_completed(future, timer)
    if any(f is future for f in done):
        return Timed(value=await future)
    if cancel:
        await _cancel([future])
    return Timed(timed_out=True)
