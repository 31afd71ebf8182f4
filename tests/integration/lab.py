"""Services that exercise the framework's primitives against a real engine (the "lab").

The lab plays a client-facing system (``system="lab"``): what a test drives the way a client would is
public, what only other lab handlers call is private, as in a real system, so tests read it with
``env.call_private``.

Public (what a client starts or reads):

- ``LabPatterns`` (write): runs fan_out, fan_out_fail, map_concurrent, race and with_timeout over
  workers, and waits for an awakeable.
- ``LabSaga/{run}``: ``Run`` (write) a saga built from a scenario (strategy, failures, pivot, deadline,
  a step whose request does not validate); ``Log`` (read) its saga log.
- ``LabApproval/{id}``: ``Run`` (write) a workflow waiting for approval with a deadline; ``Status``
  (read); ``Approve``/``Reject`` (operator, from ``add_approval_handlers``).
- ``LabDoors``: ``Whoami`` (read) answers :func:`podium.caller`; ``Deposit`` (write) calls the private
  ``LabVault/Put``; ``Convert`` (write) builds a model from its input inside the handler.

Private (only other lab handlers call them):

- ``LabWorker/Work``: one branch of a fan-out; sleeps, fails on request, reports when it started and
  ended (engine clock) and records its own cancellation in ``LabTracker``.
- ``LabEffects/{run:step}``: a saga step's side effect and its undo, with counters and scripted failures.
- ``LabTracker/{key}``: an append-only list of events, to check order and cancellations.
- ``LabVault/{key}``: ``Put`` keeps a value with the caller it saw; ``Get`` reads it (404 when empty).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Literal

import restate
from pydantic import Field
from restate import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RunOptions,
    WorkflowContext,
    WorkflowSharedContext,
)

import podium
from podium import (
    BEST_EFFORT,
    COMPENSATE_ALL,
    COMPENSATE_COMPLETED,
    PARALLEL,
    Backoff,
    BatchError,
    CompletionPolicy,
    FanOutError,
    Model,
    RaceError,
    Saga,
    SagaError,
    SagaLog,
    Service,
    Status,
    StatusTracker,
    Strategy,
    TerminalError,
    VirtualObject,
    Workflow,
    add_approval_handlers,
    call,
    fan_out,
    fan_out_fail,
    map_concurrent,
    race,
    read_saga_log,
    read_status,
    send,
    wait_for_approval,
    with_timeout,
)

# -- tracker ---------------------------------------------------------------------------------------------

tracker = VirtualObject("LabTracker", system="lab")


@tracker.handler("Mark")
async def mark(ctx: ObjectContext, event: str) -> None:
    events = await ctx.get("events", type_hint=list) or []
    events.append(event)
    ctx.set("events", events)


@tracker.handler("Events", kind="shared")
async def events(ctx: ObjectSharedContext) -> list[str]:
    return await ctx.get("events", type_hint=list) or []


# -- workers and patterns --------------------------------------------------------------------------------


class WorkItem(Model):
    id: str
    delay_ms: int = Field(default=0, ge=0)
    fail: bool = False
    tracker: str = "none"


class WorkResult(Model):
    id: str
    started_at: float
    ended_at: float


worker = Service("LabWorker", system="lab")


@worker.handler("Work")
async def work(ctx: Context, item: WorkItem) -> WorkResult:
    try:  # a cancellation surfaces at whichever await comes next
        started = await ctx.time()
        if item.delay_ms:
            await ctx.sleep(timedelta(milliseconds=item.delay_ms))
    except TerminalError:
        send(ctx, mark, f"cancelled:{item.id}", key=item.tracker)
        raise
    if item.fail:
        raise TerminalError(f"item {item.id} failed", 422)
    return WorkResult(id=item.id, started_at=started, ended_at=await ctx.time())


class Items(Model):
    items: list[WorkItem]


class BatchRequest(Items):
    max_concurrency: int = Field(ge=1)
    min_successes: int | None = None
    max_failures: int | None = None


class FanOutSummary(Model):
    results: list[WorkResult | None]
    errors: list[str | None]
    statuses: list[str]
    succeeded: int
    failed: int
    max_in_flight: int = 0
    error: str | None = None


class RaceSummary(Model):
    index: int
    value: WorkResult
    cancelled: list[int]


class TimeoutRequest(Model):
    item: WorkItem
    timeout_ms: int


class TimeoutSummary(Model):
    timed_out: bool
    value: WorkResult | None = None


patterns = Service("LabPatterns", system="lab")


def _start(ctx: Context, item: WorkItem) -> restate.RestateDurableCallFuture[WorkResult]:
    return call(ctx, work, item)


@patterns.handler("FanOut", public="write")
async def run_fan_out(ctx: Context, req: Items) -> FanOutSummary:
    result = await fan_out([_start(ctx, i) for i in req.items])
    return FanOutSummary(
        results=result.results,
        errors=[e.message if e else None for e in result.errors],
        statuses=[o.status for o in result.outcomes],
        succeeded=result.succeeded,
        failed=result.failed,
    )


@patterns.handler("FanOutFail", public="write")
async def run_fan_out_fail(ctx: Context, req: Items) -> FanOutSummary:
    try:
        values = await fan_out_fail([_start(ctx, i) for i in req.items])
    except FanOutError as exc:
        return FanOutSummary(
            results=[o.value for o in exc.outcomes],
            errors=[o.error.message if o.error else None for o in exc.outcomes],
            statuses=[o.status for o in exc.outcomes],
            succeeded=sum(o.ok for o in exc.outcomes),
            failed=sum(o.status == "failed" for o in exc.outcomes),
            error=exc.message,
        )
    return FanOutSummary(
        results=values,
        errors=[None] * len(values),
        statuses=["succeeded"] * len(values),
        succeeded=len(values),
        failed=0,
    )


@patterns.handler("Batch", public="write")
async def run_batch(ctx: Context, req: BatchRequest) -> FanOutSummary:
    policy = CompletionPolicy(min_successes=req.min_successes, max_failures=req.max_failures)
    try:
        result = await map_concurrent(
            req.items, lambda i: _start(ctx, i), max_concurrency=req.max_concurrency, policy=policy
        )
    except BatchError as exc:
        return FanOutSummary(
            results=[o.value for o in exc.outcomes],
            errors=[o.error.message if o.error else None for o in exc.outcomes],
            statuses=[o.status for o in exc.outcomes],
            succeeded=sum(o.ok for o in exc.outcomes),
            failed=sum(o.status == "failed" for o in exc.outcomes),
            error=exc.message,
        )
    return FanOutSummary(
        results=result.results,
        errors=[e.message if e else None for e in result.errors],
        statuses=[o.status for o in result.outcomes],
        succeeded=result.succeeded,
        failed=result.failed,
        max_in_flight=result.max_in_flight,
    )


@patterns.handler("Race", public="write")
async def run_race(ctx: Context, req: Items) -> RaceSummary:
    try:
        winner = await race([_start(ctx, i) for i in req.items])
    except RaceError as exc:
        raise TerminalError(exc.message, 502) from exc
    return RaceSummary(index=winner.index, value=winner.value, cancelled=winner.losers_cancelled)


@patterns.handler("Timeout", public="write")
async def run_timeout(ctx: Context, req: TimeoutRequest) -> TimeoutSummary:
    timed = await with_timeout(ctx, _start(ctx, req.item), timedelta(milliseconds=req.timeout_ms))
    return TimeoutSummary(timed_out=timed.timed_out, value=timed.value)


# -- saga effects and scenarios -------------------------------------------------------------------------


class EffectRequest(Model):
    fail_times: int = 0
    """Fail this many attempts, then succeed (-1: always fail)."""
    slow_ms: int = 0
    """Block this long inside a side effect before counting (a crash window)."""
    run: str = "none"


class EffectCounts(Model):
    actions: int = 0
    action_attempts: int = 0
    undos: int = 0
    undo_attempts: int = 0


effects = VirtualObject("LabEffects", system="lab")


async def _counts(ctx: ObjectContext | ObjectSharedContext) -> EffectCounts:
    raw = await ctx.get("counts", type_hint=dict)
    return EffectCounts() if raw is None else EffectCounts.model_validate(raw)


def _block(seconds: float) -> None:
    """A side effect that takes a while: the window a crash test kills the process in."""
    time.sleep(seconds)


async def _effect(ctx: ObjectContext, req: EffectRequest, kind: Literal["action", "undo"]) -> EffectCounts:
    counts = await _counts(ctx)
    attempts = counts.action_attempts + 1 if kind == "action" else counts.undo_attempts + 1
    if kind == "action":
        counts.action_attempts = attempts
    else:
        counts.undo_attempts = attempts
    ctx.set("counts", counts.model_dump(mode="json"))
    step = ctx.key().split(":", 1)[1]
    if req.fail_times < 0 or attempts <= req.fail_times:
        raise TerminalError(f"{kind} of {step} failed (attempt {attempts})", 503)
    if req.slow_ms:
        send(ctx, mark, f"{kind}-started:{step}", key=req.run)
        await ctx.run_typed("slow", _block, RunOptions[None](max_attempts=3), req.slow_ms / 1000)
    if kind == "action":
        counts.actions += 1
    else:
        counts.undos += 1
    ctx.set("counts", counts.model_dump(mode="json"))
    send(ctx, mark, f"{kind}:{step}", key=req.run)
    return counts


@effects.handler("Do")
async def do(ctx: ObjectContext, req: EffectRequest) -> EffectCounts:
    return await _effect(ctx, req, "action")


@effects.handler("Undo")
async def undo(ctx: ObjectContext, req: EffectRequest) -> EffectCounts:
    return await _effect(ctx, req, "undo")


@effects.handler("Counts", kind="shared")
async def counts(ctx: ObjectSharedContext) -> EffectCounts:
    return await _counts(ctx)


class StepSpec(Model):
    name: str
    action: EffectRequest = EffectRequest()
    undo: EffectRequest | None = EffectRequest()
    pivot: bool = False
    invalid: Literal["build", "await", "body"] | None = None
    """Build the action's request from a value that does not validate: when the saga calls the action
    (``build``), inside the coroutine it awaits (``await``), or in the saga's body before the step
    (``body``)."""


class Scenario(Model):
    steps: list[StepSpec]
    strategy: Literal["all", "completed", "best_effort", "parallel"] = "all"
    parallel_steps: bool = False
    """Run every step with saga.parallel instead of one after the other."""
    timeout_ms: int | None = None
    retry_attempts: int = 3
    keep_log: bool = True
    hold_ms: int | None = None
    """Hold dead letters for a person this long (``Strategy.hold``)."""


class ScenarioResult(Model):
    completed: bool
    error: str | None = None
    error_type: str | None = None
    log: SagaLog


STRATEGIES = {
    "all": COMPENSATE_ALL,
    "completed": COMPENSATE_COMPLETED,
    "best_effort": BEST_EFFORT,
    "parallel": PARALLEL,
}
FAST = Backoff(initial_interval=timedelta(milliseconds=50), max_interval=timedelta(milliseconds=200))

sagas = VirtualObject("LabSaga", system="lab")


@sagas.handler("Run", public="write")
async def run_scenario(ctx: ObjectContext, scenario: Scenario) -> ScenarioResult:
    run = ctx.key()
    base = STRATEGIES[scenario.strategy]
    strategy = Strategy(
        scope=base.scope,
        parallel=base.parallel,
        best_effort=base.best_effort,
        retry=Backoff(
            max_attempts=scenario.retry_attempts,
            initial_interval=FAST.initial_interval,
            max_interval=FAST.max_interval,
        ),
        forward_retry=Backoff(
            max_attempts=scenario.retry_attempts,
            initial_interval=FAST.initial_interval,
            max_interval=FAST.max_interval,
        ),
        hold=None if scenario.hold_ms is None else timedelta(milliseconds=scenario.hold_ms),
    )
    timeout = None if scenario.timeout_ms is None else timedelta(milliseconds=scenario.timeout_ms)
    saga = Saga(ctx, "lab", strategy=strategy, timeout=timeout, keep_log=scenario.keep_log)

    def action(spec: StepSpec) -> Any:
        req = spec.action.model_copy(update={"run": run})
        key = f"{run}:{spec.name}"
        if spec.invalid == "build":
            return lambda: call(
                ctx, do, EffectRequest.model_validate({"failTimes": "never", "run": run}), key=key
            )
        if spec.invalid == "await":

            async def build_then_call() -> EffectCounts:
                return await call(
                    ctx, do, EffectRequest.model_validate({"failTimes": "never", "run": run}), key=key
                )

            return build_then_call
        return lambda: call(ctx, do, req, key=key)

    def compensation(spec: StepSpec) -> Any:
        if spec.undo is None:
            return None
        req = spec.undo.model_copy(update={"run": run})
        return lambda: call(ctx, undo, req, key=f"{run}:{spec.name}")

    try:
        async with saga:
            if scenario.parallel_steps:
                await saga.parallel(
                    *(
                        saga.define(s.name, action(s), compensate=compensation(s), payload={"step": s.name})
                        for s in scenario.steps
                    )
                )
            else:
                for spec in scenario.steps:
                    if spec.invalid == "body":
                        EffectRequest.model_validate({"failTimes": "never", "run": run})
                    if spec.pivot:
                        await saga.pivot(spec.name, action(spec))
                    elif spec.name.startswith("built-"):
                        builder = saga.safe_step(spec.name)
                        undo_fn = compensation(spec)
                        if undo_fn is not None:
                            builder = builder.with_compensation(undo_fn, payload={"step": spec.name})
                        await builder.execute(action(spec))
                    else:
                        await saga.step(
                            spec.name,
                            action(spec),
                            compensate=compensation(spec),
                            payload={"step": spec.name},
                        )
    except SagaError as exc:
        return ScenarioResult(completed=False, error=exc.message, error_type=type(exc).__name__, log=exc.log)
    return ScenarioResult(completed=True, log=saga.log)


@sagas.handler("Log", kind="shared", public="read")
async def saga_log(ctx: ObjectSharedContext) -> SagaLog | None:
    return await read_saga_log(ctx, "lab")


# -- approval and status ---------------------------------------------------------------------------------


class ApprovalRequest(Model):
    timeout_ms: int = Field(gt=0)


class ApprovalReport(Model):
    outcome: str
    by: str | None = None


approvals = Workflow("LabApproval", system="lab")
add_approval_handlers(approvals)


@approvals.main("Run", public="write")
async def run_approval(ctx: WorkflowContext, req: ApprovalRequest) -> ApprovalReport:
    status = StatusTracker(ctx)
    await status.update(phase="waiting", progress=0.5, step="approval")
    result = await wait_for_approval(ctx, timeout=timedelta(milliseconds=req.timeout_ms))
    await status.update(completed_step="approval", metadata={"outcome": result.outcome.value})
    await status.complete(phase=result.outcome.value)
    return ApprovalReport(outcome=result.outcome, by=result.decision.by if result.decision else None)


@approvals.handler("Status", public="read")
async def approval_status(ctx: WorkflowSharedContext) -> Status:
    return await read_status(ctx) or Status.empty()


# -- awakeables -------------------------------------------------------------------------------------------


class AwakeRequest(Model):
    tracker: str
    timeout_ms: int = Field(gt=0)


class AwakeReport(Model):
    timed_out: bool
    value: str | None = None


@patterns.handler("WaitAwakeable", public="write")
async def wait_awakeable(ctx: Context, req: AwakeRequest) -> AwakeReport:
    awakeable_id, future = ctx.awakeable(type_hint=str)
    send(ctx, mark, f"awakeable:{awakeable_id}", key=req.tracker)
    timed = await with_timeout(ctx, future, timedelta(milliseconds=req.timeout_ms))
    return AwakeReport(timed_out=timed.timed_out, value=timed.value)


# -- doors: who may call what, and who asked -------------------------------------------------------------


class Stored(Model):
    value: str
    caller: str
    """What :func:`podium.caller` answered inside ``LabVault/Put``."""


vault = VirtualObject("LabVault", system="lab")


@vault.handler("Put")
async def put(ctx: ObjectContext, value: str) -> Stored:
    stored = Stored(value=value, caller=podium.caller(ctx))
    ctx.set("stored", stored)
    return stored


@vault.handler("Get", kind="shared")
async def get(ctx: ObjectSharedContext) -> Stored:
    stored = await ctx.get("stored", type_hint=Stored)
    if stored is None:
        raise TerminalError(f"vault {ctx.key()} is empty", 404)
    return stored


class DepositRequest(Model):
    vault: str
    value: str


class Asked(Model):
    caller: str
    """What :func:`podium.caller` answered in the handler the client called."""
    inner: str
    """What it answered in the handler that one called."""


class ConvertRequest(Model):
    fail_times: str
    """Turned into ``EffectRequest.fail_times`` (an int) inside the handler, not at the door."""


doors = Service("LabDoors", system="lab")


@doors.handler("Whoami", public="read")
async def whoami(ctx: Context) -> str:
    return podium.caller(ctx)


@doors.handler("Deposit", public="write")
async def deposit(ctx: Context, req: DepositRequest) -> Asked:
    stored = await call(ctx, put, req.value, key=req.vault)
    return Asked(caller=podium.caller(ctx), inner=stored.caller)


@doors.handler("Convert", public="write")
async def convert(ctx: Context, req: ConvertRequest) -> EffectRequest:
    return EffectRequest.model_validate({"failTimes": req.fail_times})


SERVICES = [tracker, worker, patterns, effects, sagas, approvals, vault, doors]
app = podium.app(services=SERVICES)
