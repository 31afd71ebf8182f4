"""Seed 002's pattern catalog, each pattern a runnable handler (see README.md for curl examples).

The patterns' own entry points are public (scopes ``patterns:read``, ``patterns:write``, and
``patterns:operator`` to decide an approval); what they call is private: the demo account and the
analytics store of pattern 6, and the simulated backends of :mod:`services.patterns.sources`. Money (the
amounts of patterns 5 and 6) follows the shared :data:`services.common.money.Amount` rule at the door.
The approval deadline of pattern 5 is the deployment's (:mod:`services.patterns.settings`), not the
caller's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field
from restate import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RunOptions,
    WorkflowContext,
    WorkflowSharedContext,
)

from podium import (
    COMPENSATE_COMPLETED,
    ApprovalOutcome,
    BatchError,
    FanOutError,
    Model,
    RaceError,
    Saga,
    SagaError,
    Service,
    Status,
    StatusTracker,
    TerminalError,
    VirtualObject,
    Workflow,
    add_approval_handlers,
    call,
    fan_out,
    fan_out_fail,
    process_batch,
    race,
    read_status,
    wait_for_approval,
)
from services.common.money import Amount, cents, units
from services.patterns import settings, sources
from services.patterns.sources import Data, Processed, ProductRef, Query, UserRef

catalog = Service("PatternCatalog", system="patterns")


# -- Pattern 1: fan-out validation (fail fast) ------------------------------------------------------------


class ValidationResult(Model):
    user_id: str
    valid: bool


@catalog.handler("ValidateUser", public="read")
async def validate_user(ctx: Context, req: UserRef) -> ValidationResult:
    """All three checks at once; the first failure (an error) cancels the rest; a ``false`` is a 400."""
    names = ["email verified", "KYC completed", "not blacklisted"]
    try:
        answers = await fan_out_fail(
            [
                call(ctx, sources.email_verified, req),
                call(ctx, sources.kyc_completed, req),
                call(ctx, sources.not_blacklisted, req),
            ]
        )
    except FanOutError as exc:
        raise TerminalError(f"validation failed: {exc.message}", 502) from exc
    failed = [name for name, ok in zip(names, answers, strict=True) if not ok]
    if failed:
        raise TerminalError(f"validation check failed: {', '.join(failed)}", 400)
    return ValidationResult(user_id=req.user_id, valid=True)


# -- Pattern 2: partial data enrichment (best effort) ---------------------------------------------------


class EnrichedProduct(Model):
    product_id: str
    details: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    inventory: dict[str, Any] | None = None
    reviews: dict[str, Any] | None = None
    recommendations: list[str] | None = None
    missing: list[str] = []
    """Sources that failed; their fields are null."""


@catalog.handler("EnrichProduct", public="read")
async def enrich_product(ctx: Context, req: ProductRef) -> EnrichedProduct:
    """Five sources at once; whatever answers is used, whatever fails is listed in ``missing``."""
    names = ["details", "pricing", "inventory", "reviews", "recommendations"]
    handlers = [sources.details, sources.pricing, sources.stock, sources.reviews, sources.recommendations]
    result = await fan_out([call(ctx, h, req) for h in handlers])  # type: ignore[arg-type]
    values = dict(zip(names, result.results, strict=True))
    missing = [name for name, error in zip(names, result.errors, strict=True) if error is not None]
    return EnrichedProduct(product_id=req.product_id, missing=missing, **values)


# -- Pattern 3: batch processing with a concurrency cap -------------------------------------------------


class UserBatch(Model):
    user_ids: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=10_000)
    max_concurrency: int = Field(default=10, ge=1, le=100)


class BatchSummary(Model):
    processed: int
    results: list[Processed]


@catalog.handler("ProcessUsers", public="write")
async def process_users(ctx: Context, req: UserBatch) -> BatchSummary:
    """At most ``maxConcurrency`` users in flight (a sliding window); the first failure stops the batch."""
    try:
        results = await process_batch(
            req.user_ids,
            lambda user_id: call(ctx, sources.process_user, UserRef(user_id=user_id)),
            max_concurrency=req.max_concurrency,
        )
    except BatchError as exc:
        raise TerminalError(f"batch processing failed: {exc.message}", exc.status_code) from exc
    return BatchSummary(processed=len(results), results=results)


# -- Pattern 4: service racing with a timeout ----------------------------------------------------------


class FetchRequest(Query):
    timeout_ms: int = Field(default=1_000, gt=0, le=60_000)
    """The demo's own parameter: how long the race runs before the timer wins (at most a minute)."""


@catalog.handler("FetchData", public="read")
async def fetch_data(ctx: Context, req: FetchRequest) -> Data:
    """Primary, cache and replica race; the first answer wins, the others are cancelled; the timer ends it."""
    query = Query(query=req.query)
    timer = ctx.sleep(timedelta(milliseconds=req.timeout_ms), name="fetch deadline")
    contenders: list[Any] = [
        call(ctx, sources.primary, query),
        call(ctx, sources.cache, query),
        call(ctx, sources.replica, query),
        timer,
    ]
    try:
        winner = await race(contenders)
    except RaceError as exc:
        raise TerminalError(f"every source failed: {exc.message}", 502) from exc
    if winner.index == len(contenders) - 1:
        raise TerminalError(f"no source answered within {req.timeout_ms} ms", 504)
    data: Data = winner.value
    return data


# -- Pattern 5: human-in-the-loop with a timeout --------------------------------------------------------


class ApprovalRequest(Model):
    """What needs a person's approval.

    The deadline is the deployment's ``approval_deadline`` setting, not the caller's: a ``timeoutMs`` in
    the body is ignored.
    """

    request_id: str = Field(min_length=1)
    amount: Amount


class ApprovalDecision(Model):
    request_id: str
    outcome: str
    """``approved``, ``rejected`` or ``escalated`` (nobody answered in time)."""
    by: str | None = None


approvals = Workflow("ApprovalWorkflow", system="patterns")
add_approval_handlers(approvals)


def _approval_deadline_ms() -> int:
    return round(settings.SETTINGS.approval_deadline.total_seconds() * 1000)


@approvals.main("Run", public="write")
async def process_with_approval(ctx: WorkflowContext, req: ApprovalRequest) -> ApprovalDecision:
    """Wait for ``Approve``/``Reject`` until the deadline; then escalate instead of waiting forever."""
    # Journaled once: a replay after a restart with another setting keeps the deadline it started with.
    deadline_ms = await ctx.run_typed("approval deadline", _approval_deadline_ms, RunOptions[int]())
    status = StatusTracker(ctx)
    await status.update(
        phase="awaiting-approval",
        progress=0.5,
        metadata={"amount": float(req.amount), "deadlineMs": deadline_ms},
    )
    result = await wait_for_approval(ctx, timeout=timedelta(milliseconds=deadline_ms))
    outcome = "escalated" if result.outcome is ApprovalOutcome.TIMED_OUT else result.outcome.value
    await status.complete(phase=outcome)
    return ApprovalDecision(
        request_id=req.request_id, outcome=outcome, by=result.decision.by if result.decision else None
    )


@approvals.handler("GetStatus", public="read")
async def approval_status(ctx: WorkflowSharedContext) -> Status:
    return await read_status(ctx) or Status.empty()


# -- Pattern 6: saga with partial compensation ----------------------------------------------------------


class Transaction(Model):
    id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    amount: Amount
    fail_analytics: bool = False
    """Test data: make the optional analytics step fail."""


class TransactionResult(Model):
    id: str
    status: str
    """``completed`` or ``rolled_back``."""
    reason: str | None = None
    balance: float


accounts = VirtualObject("DemoAccount")


class Movement(Model):
    tx_id: str
    amount: Amount


OPENING_BALANCE = 1_000.0


async def _move(ctx: ObjectContext, req: Movement, kind: str, sign: int) -> float:
    """Apply a movement once per transaction id and kind (a repeat returns the same balance)."""
    done: list[str] = await ctx.get("txs", type_hint=list) or []
    balance = await ctx.get("balance", type_hint=float)
    balance = OPENING_BALANCE if balance is None else balance
    if f"{kind}:{req.tx_id}" not in done:
        balance = units(cents(balance) + sign * cents(req.amount))  # exact: summed in cents
        ctx.set("txs", [*done, f"{kind}:{req.tx_id}"])
        ctx.set("balance", balance)
    return balance


@accounts.handler("Debit")
async def debit(ctx: ObjectContext, req: Movement) -> float:
    return await _move(ctx, req, "debit", -1)


@accounts.handler("Credit")
async def credit(ctx: ObjectContext, req: Movement) -> float:
    return await _move(ctx, req, "credit", +1)


@accounts.handler("Balance", kind="shared")
async def balance_of(ctx: ObjectSharedContext) -> float:
    balance = await ctx.get("balance", type_hint=float)
    return OPENING_BALANCE if balance is None else balance


analytics = Service("Analytics")


@analytics.handler("Record")
async def record(ctx: Context, tx: Transaction) -> None:
    if tx.fail_analytics:
        raise TerminalError(f"analytics store rejected {tx.id}", 503)
    await ctx.run_typed("record", lambda: None, RunOptions[None]())


@analytics.handler("Remove")
async def remove(ctx: Context, tx: Transaction) -> None:
    await ctx.run_typed("remove", lambda: None, RunOptions[None]())


@catalog.handler("ComplexTransaction", public="write")
async def complex_transaction(ctx: Context, tx: Transaction) -> TransactionResult:
    """Debit (critical) then analytics (optional); a failure compensates only the completed steps."""
    movement = Movement(tx_id=tx.id, amount=tx.amount)
    try:
        async with Saga(ctx, f"tx {tx.id}", strategy=COMPENSATE_COMPLETED) as saga:
            await saga.step(
                "debit-account",
                lambda: call(ctx, debit, movement, key=tx.account_id),
                compensate=lambda: call(ctx, credit, movement, key=tx.account_id),
            )
            await saga.step(
                "update-analytics",
                lambda: call(ctx, record, tx),
                compensate=lambda: call(ctx, remove, tx),
            )
    except SagaError as exc:
        balance = await call(ctx, balance_of, None, key=tx.account_id)
        return TransactionResult(id=tx.id, status="rolled_back", reason=exc.message, balance=balance)
    balance = await call(ctx, balance_of, None, key=tx.account_id)
    return TransactionResult(id=tx.id, status="completed", balance=balance)


# -- Pattern 7: workflow status tracking ---------------------------------------------------------------


class ProcessingJob(Model):
    job_id: str = Field(min_length=1)
    stage_ms: int = Field(default=200, ge=0, le=60_000)
    """The demo's own parameter: how long each stage takes (at most a minute)."""
    fail_at: str | None = None
    """Test data: the stage that fails (download, validate, transform, upload, notify)."""


class JobResult(Model):
    job_id: str
    status: str
    stages: list[str]


STAGES = [("download", 0.2), ("validate", 0.4), ("transform", 0.6), ("upload", 0.8), ("notify", 1.0)]

jobs = Workflow("DataProcessingWorkflow", system="patterns")


@jobs.main("Run", public="write")
async def run_job(ctx: WorkflowContext, job: ProcessingJob) -> JobResult:
    """Five stages; status shows the stage, progress and history; a failing stage is recorded and ends it."""
    status = StatusTracker(ctx)
    done: list[str] = []
    for stage, progress in STAGES:
        await status.update(phase=stage, step=stage)
        await ctx.sleep(timedelta(milliseconds=job.stage_ms), name=stage)
        if job.fail_at == stage:
            await status.update(metadata={"error": f"{stage} failed", "stage": stage})
            await status.fail(f"{stage} failed")
            raise TerminalError(f"job {job.job_id} failed at {stage}", 500)
        done.append(stage)
        await status.update(progress=progress, completed_step=stage)
    await status.complete()
    return JobResult(job_id=job.job_id, status="completed", stages=done)


@jobs.handler("GetStatus", public="read")
async def job_status(ctx: WorkflowSharedContext) -> Status:
    return await read_status(ctx) or Status.empty()


SERVICES = [catalog, approvals, accounts, analytics, jobs]
