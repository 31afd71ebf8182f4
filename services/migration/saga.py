"""``MigrationSaga`` (seed 003 ex 6): move a service's data to a new database with zero downtime.

``POST /MigrationSaga/{serviceId}/Run`` with ``{batchSize, pauseMs}``, an operator's decision (public,
``operator``; the batch size and the pause are the operator's parameters of this migration):

1. dual-write on (undo: dual-write off), so new writes reach both databases;
2. historical data copied in batches, with a durable pause between batches; progress (batches done,
   rows copied) is in the status while it runs;
3. consistency check (counts and checksums of both sides);
4. **pivot**: traffic switched to the new database, the point of no return;
5. old system off.

Before the pivot a failure compensates (dual-write off) and ends ``failed`` with the reason. After it,
a failing step is retried (forward recovery); if it keeps failing the result is
``manual_intervention_required`` and nothing is rolled back. ``GetStatus`` shows phase, progress,
batches and rows copied, and the saga log at any time. A repeated ``Run`` returns the first result.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from restate import Context, ObjectContext, ObjectSharedContext, RunOptions

from podium import (
    Backoff,
    ManualInterventionNeeded,
    Model,
    RunOnce,
    Saga,
    SagaError,
    SagaLog,
    Service,
    Status,
    StatusTracker,
    Strategy,
    TerminalError,
    VirtualObject,
    call,
    read_saga_log,
    read_status,
)
from services.migration import stores

SERVICE_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""Service ids name folders: lower-case letters, digits and dashes."""
MAX_BATCH_SIZE = 100_000
"""The most rows one batch copies."""
MAX_BATCH = stores.SQLITE_MAX_INT // MAX_BATCH_SIZE
"""The highest batch number: the batch's offset (``batch * size``) must fit in SQLite's integers."""
_VALID_ID = re.compile(SERVICE_ID)
_RUN = RunOptions[Any](max_attempts=5, initial_retry_interval=timedelta(milliseconds=100))


def _terminal(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except stores.StoreError as exc:
        raise TerminalError(str(exc), 503) from exc


# -- the data service ----------------------------------------------------------------------------------

data = Service("MigrationData", system="migration")
"""The two databases. Public: ``Write`` (the application's traffic), ``Verify`` (a read) and ``Seed`` (an
operator creating the legacy data of a demo). The migration's own steps (dual-write, batch copy, traffic
switch, old system off) are private: only the saga runs them, in order, so no client can switch traffic
before the data is copied and checked."""


class SeedRequest(Model):
    service_id: str = Field(pattern=SERVICE_ID)
    rows: int = Field(ge=0, le=1_000_000)


class WriteRequest(Model):
    service_id: str = Field(pattern=SERVICE_ID)
    id: int = Field(ge=1, le=stores.SQLITE_MAX_INT)
    """A row id, stored as SQLite's integer primary key."""
    payload: str = Field(min_length=1)


class ServiceRef(Model):
    service_id: str = Field(pattern=SERVICE_ID)


class BatchRequest(Model):
    service_id: str = Field(pattern=SERVICE_ID)
    batch: int = Field(ge=0, le=MAX_BATCH)
    size: int = Field(ge=1, le=MAX_BATCH_SIZE)


class DualWrite(Model):
    service_id: str = Field(pattern=SERVICE_ID)
    enabled: bool


class Report(Model):
    service_id: str
    legacy_rows: int
    new_rows: int
    consistent: bool
    routing: dict[str, Any]


@data.handler("Seed", public="operator")
async def seed(ctx: Context, req: SeedRequest) -> int:
    count: int = await ctx.run_typed("seed", _terminal, _RUN, stores.seed, req.service_id, req.rows)
    return count


@data.handler("Write", public="write")
async def write(ctx: Context, req: WriteRequest) -> dict[str, Any]:
    result: dict[str, Any] = await ctx.run_typed(
        "write", _terminal, _RUN, stores.write, req.service_id, req.id, req.payload
    )
    return result


@data.handler("SetDualWrite")
async def set_dual_write(ctx: Context, req: DualWrite) -> dict[str, Any]:
    result: dict[str, Any] = await ctx.run_typed(
        "dual write", _terminal, _RUN, stores.set_dual_write, req.service_id, req.enabled
    )
    return result


@data.handler("CopyBatch")
async def copy_batch(ctx: Context, req: BatchRequest) -> int:
    copied: int = await ctx.run_typed(
        "copy", _terminal, _RUN, stores.copy_batch, req.service_id, req.batch, req.size
    )
    return copied


@data.handler("Verify", public="read")
async def verify(ctx: Context, req: ServiceRef) -> Report:
    def inspect() -> dict[str, Any]:
        return {**stores.verify(req.service_id), "routing": stores.routing(req.service_id)}

    found: dict[str, Any] = await ctx.run_typed("verify", inspect, _RUN)
    return Report(
        service_id=req.service_id,
        legacy_rows=found["legacyRows"],
        new_rows=found["newRows"],
        consistent=found["consistent"],
        routing=found["routing"],
    )


@data.handler("SwitchTraffic")
async def switch_traffic(ctx: Context, req: ServiceRef) -> dict[str, Any]:
    result: dict[str, Any] = await ctx.run_typed(
        "switch", _terminal, _RUN, stores.switch_traffic, req.service_id
    )
    return result


@data.handler("DisableLegacy")
async def disable_legacy(ctx: Context, req: ServiceRef) -> dict[str, Any]:
    result: dict[str, Any] = await ctx.run_typed(
        "disable", _terminal, _RUN, stores.disable_legacy, req.service_id
    )
    return result


# -- the saga ------------------------------------------------------------------------------------------


class Migration(Model):
    batch_size: int = Field(default=100, ge=1, le=MAX_BATCH_SIZE)
    pause_ms: int = Field(default=60_000, ge=0, le=3_600_000)
    """Pause between batches (the seed's one minute by default)."""
    forward_retries: int = Field(default=5, ge=1, le=100)
    """Attempts of a step after the pivot before a person is needed."""


class MigrationResult(Model):
    service_id: str
    status: Literal["completed", "failed", "manual_intervention_required"]
    batches: int
    rows_copied: int
    reason: str | None = None


class MigrationStatus(Status):
    saga: SagaLog | None = None


migrations = VirtualObject("MigrationSaga", system="migration")


@migrations.handler("Run", public="operator")
async def run(ctx: ObjectContext, req: Migration) -> MigrationResult:
    service_id = ctx.key()
    if not _VALID_ID.fullmatch(service_id):
        raise TerminalError(f"serviceId (the key): {service_id!r} must match {SERVICE_ID}", 400)
    once = RunOnce(ctx, req, MigrationResult)
    if (previous := await once.previous()) is not None:
        return previous
    ref = ServiceRef(service_id=service_id)
    status = StatusTracker(ctx)
    strategy = Strategy(
        forward_retry=Backoff(
            max_attempts=req.forward_retries,
            initial_interval=timedelta(milliseconds=200),
            max_interval=timedelta(seconds=30),
        )
    )
    batches = rows = 0
    try:
        async with Saga(ctx, "migration", strategy=strategy) as saga:
            await status.update(phase="dual-write", step="dual-write-on")
            await saga.step(
                "dual-write-on",
                lambda: call(ctx, set_dual_write, DualWrite(service_id=service_id, enabled=True)),
                compensate=lambda: call(ctx, set_dual_write, DualWrite(service_id=service_id, enabled=False)),
            )
            await status.update(phase="migrating", progress=0.1, completed_step="dual-write-on")

            total = (await call(ctx, verify, ref)).legacy_rows
            planned = max(1, -(-total // req.batch_size))
            while True:
                copied = await saga.step(
                    f"batch-{batches}",
                    lambda b=batches: call(
                        ctx, copy_batch, BatchRequest(service_id=service_id, batch=b, size=req.batch_size)
                    ),
                )
                batches += 1
                rows += copied
                progress = 0.1 + 0.6 * min(1.0, batches / planned)
                await status.update(
                    progress=round(progress, 3),
                    metadata={"batchesDone": batches, "batchesPlanned": planned, "rowsCopied": rows},
                )
                if copied < req.batch_size:
                    break
                await ctx.sleep(timedelta(milliseconds=req.pause_ms), name=f"pause after batch {batches}")

            await status.update(phase="verifying", step="verify")
            report = await saga.step("verify", lambda: call(ctx, verify, ref))
            if not report.consistent:
                raise TerminalError(
                    f"consistency check failed: legacy {report.legacy_rows} rows, new {report.new_rows} rows",
                    409,
                )
            await status.update(phase="switching", progress=0.8, completed_step="verify")

            await saga.pivot("switch-traffic", lambda: call(ctx, switch_traffic, ref))
            await status.update(phase="decommissioning", progress=0.9, completed_step="switch-traffic")
            await saga.step("disable-old-system", lambda: call(ctx, disable_legacy, ref))
    except ManualInterventionNeeded as failure:
        await status.fail(failure.message, phase="manual_intervention_required")
        return once.done(_result(service_id, "manual_intervention_required", batches, rows, failure.message))
    except SagaError as failure:
        await status.fail(failure.message)
        return once.done(_result(service_id, "failed", batches, rows, failure.message))
    await status.complete()
    return once.done(_result(service_id, "completed", batches, rows))


def _result(
    service_id: str, status: Any, batches: int, rows: int, reason: str | None = None
) -> MigrationResult:
    return MigrationResult(
        service_id=service_id, status=status, batches=batches, rows_copied=rows, reason=reason
    )


@migrations.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> MigrationStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no migration of {ctx.key()}", 404)
    return MigrationStatus(**status.model_dump(), saga=await read_saga_log(ctx, "migration"))


SERVICES: list[Service | VirtualObject] = [data, migrations]
