"""``TransferOrchestrator`` (seed 000 ex 2) and ``MoneyTransferSaga`` (seed 003 ex 2).

Both move money between two ``AccountService`` accounts all or nothing, keyed by transfer id (a repeat
returns the first result; a different request for the same id is 409).

``TransferOrchestrator/{transferId}/Transfer``:

1. validate: both accounts exist, the source has the funds available;
2. fraud and compliance checks at once; either can block the transfer, with its reason;
3. saga: hold the funds (undo: release), debit the source capturing the hold (undo: credit it back as
   a reversal), credit the destination; a refused credit reverses the debit;
4. confirmation email to both owners (best effort).

Every step and decision goes to the audit trail (``AuditTrail/transfer:<id>`` and
``AuditTrail/account:<id>``) with the time and the actor. The actor of the request itself is the caller
the gateway verified (:func:`podium.caller`): a request names no actor of its own, and a field a client
adds for one is ignored.

``MoneyTransferSaga/{transferId}/Run`` is the seed's three-step saga: debit, credit, record; insufficient
funds is a clean ``failed`` result, and debit and credit are idempotent by transfer id.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator
from restate import ObjectContext, ObjectSharedContext

from podium import Model as _Model
from podium import (
    RunOnce,
    Saga,
    SagaError,
    SagaLog,
    TerminalError,
    VirtualObject,
    call,
    caller,
    fan_out,
    fan_out_fail,
    read_saga_log,
)
from services.banking.accounts import (
    Account,
    HoldRef,
    HoldRequest,
    Movement,
    credit,
    debit,
    get_account,
    hold,
    release_hold,
)
from services.banking.audit import record
from services.banking.compliance import ReleaseRequest
from services.banking.compliance import check as compliance_check
from services.banking.compliance import release as compliance_release
from services.common.fraud import Decision, TransferCheck, assess_transfer
from services.common.money import Amount, cents
from services.common.notifications import EmailRequest, send_email

ACTOR = "TransferOrchestrator"


class TransferRequest(_Model):
    from_account: str = Field(min_length=1)
    to_account: str = Field(min_length=1)
    amount: Amount
    reference: str = Field(default="", max_length=140)

    @model_validator(mode="after")
    def _two_accounts(self) -> TransferRequest:
        if self.from_account == self.to_account:
            raise ValueError("fromAccount and toAccount must differ")
        return self


class Transfer(_Model):
    transfer_id: str
    from_account: str
    to_account: str
    amount: float
    status: Literal["completed", "blocked", "failed"]
    reason: str | None = None
    saga: SagaLog | None = None


transfers = VirtualObject("TransferOrchestrator", system="banking")


async def _account(ctx: ObjectContext, account_id: str) -> Account | None:
    try:
        return await call(ctx, get_account, None, key=account_id)
    except TerminalError as exc:
        if exc.status_code == 404:
            return None
        raise


@transfers.handler("Transfer", public="write")
async def transfer(ctx: ObjectContext, req: TransferRequest) -> Transfer:
    once = RunOnce(ctx, req, Transfer)
    if (previous := await once.previous()) is not None:
        return previous
    tid = ctx.key()
    parties = [req.from_account, req.to_account]

    def result(status: Literal["completed", "blocked", "failed"], reason: str | None = None) -> Transfer:
        return once.done(
            Transfer(
                transfer_id=tid,
                from_account=req.from_account,
                to_account=req.to_account,
                amount=float(req.amount),
                status=status,
                reason=reason,
            )
        )

    # Who asked is the verified caller, never something the request says about itself.
    requested = f"{req.amount} {req.reference}".strip()
    await record(ctx, tid, parties, caller(ctx), "requested", "accepted", requested)

    # 1. validate
    source, destination = await _account(ctx, req.from_account), await _account(ctx, req.to_account)
    missing = [a for a, found in zip(parties, (source, destination), strict=True) if found is None]
    if missing:
        reason = f"no account {', '.join(missing)}"
        await record(ctx, tid, parties, "AccountService", "validate-accounts", "failed", reason)
        return result("failed", reason)
    assert source is not None
    if cents(source.available) < cents(req.amount):
        reason = f"insufficient funds: {source.available:.2f} available, {req.amount} needed"
        await record(ctx, tid, parties, "AccountService", "validate-funds", "failed", reason)
        return result("failed", reason)
    await record(ctx, tid, parties, "AccountService", "validate-funds", "ok")

    day = dt.datetime.fromtimestamp(await ctx.time(), tz=dt.UTC).date().isoformat()
    check = TransferCheck(
        transfer_id=tid, from_account=req.from_account, to_account=req.to_account, amount=req.amount, day=day
    )
    # The compliance check reserves against this day's limit; the undo releases it whether or not the
    # check got to answer (a release of nothing is a no-op).
    usage = [f"{req.from_account}:{day}"]
    hold_ref = HoldRef(hold_id=tid)
    try:
        async with Saga(ctx, "transfer") as saga:
            # 2. fraud and compliance at once; compliance reserves the day's usage, released on failure
            decisions: list[Decision] = await saga.step(
                "checks",
                lambda: fan_out_fail([call(ctx, assess_transfer, check), call(ctx, compliance_check, check)]),
                compensate=lambda: _release_usage(ctx, tid, usage),
            )
            for decision in decisions:
                outcome = "allowed" if decision.allowed else "blocked"
                await record(ctx, tid, parties, decision.actor, "check", outcome, decision.reason or "")
            blocked = [d for d in decisions if not d.allowed]
            if blocked:
                raise TerminalError(f"blocked by {blocked[0].actor}: {blocked[0].reason}", 403)

            # 3. money
            await saga.step(
                "hold-funds",
                lambda: call(ctx, hold, HoldRequest(hold_id=tid, amount=req.amount), key=req.from_account),
                compensate=lambda: call(ctx, release_hold, hold_ref, key=req.from_account),
                payload={"account": req.from_account, "holdId": tid},
            )
            await saga.step(
                "debit",
                lambda: call(
                    ctx, debit, Movement(tx_id=tid, amount=req.amount, hold_id=tid), key=req.from_account
                ),
                compensate=lambda: _reverse(ctx, tid, req, parties),
                payload={"account": req.from_account, "txId": tid},
            )
            await record(
                ctx, tid, parties, "AccountService", "debit", "ok", f"{req.from_account} -{req.amount}"
            )
            await saga.step(
                "credit",
                lambda: call(
                    ctx,
                    credit,
                    Movement(tx_id=tid, amount=req.amount, memo=f"from {req.from_account}"),
                    key=req.to_account,
                ),
                payload={"account": req.to_account, "txId": tid},
            )
            await record(
                ctx, tid, parties, "AccountService", "credit", "ok", f"{req.to_account} +{req.amount}"
            )
    except SagaError as failure:
        status: Literal["blocked", "failed"] = "blocked" if failure.cause.status_code == 403 else "failed"
        await record(ctx, tid, parties, ACTOR, "transfer", status, failure.message)
        return result(status, failure.message)

    await _confirm(ctx, tid, req, source, destination)
    await record(ctx, tid, parties, ACTOR, "transfer", "completed")
    return result("completed")


async def _release_usage(ctx: ObjectContext, tid: str, usage: list[str]) -> None:
    for key in usage:
        await call(ctx, compliance_release, ReleaseRequest(transfer_id=tid, usage_key=key))


async def _reverse(ctx: ObjectContext, tid: str, req: TransferRequest, parties: list[str]) -> None:
    movement = Movement(tx_id=f"{tid}:reversal", amount=req.amount, reverses=tid, memo="reversal")
    await call(ctx, credit, movement, key=req.from_account)
    await record(ctx, tid, parties, "AccountService", "reversal", "ok", f"{req.from_account} +{req.amount}")


async def _confirm(
    ctx: ObjectContext, tid: str, req: TransferRequest, source: Account, destination: Account | None
) -> None:
    """Best effort: a failed email is audited, never fatal."""
    sends = []
    for role, account in (("sent", source), ("received", destination)):
        if account is not None and account.email:
            sends.append(
                call(
                    ctx,
                    send_email,
                    EmailRequest(
                        message_id=f"{tid}-{role}",
                        to=account.email,
                        subject=f"Transfer {tid} {role}",
                        body=f"{req.amount} {role} ({req.from_account} → {req.to_account}). {req.reference}",
                    ),
                )
            )
    if not sends:
        return
    result = await fan_out(sends)
    outcome = "sent" if result.failed == 0 else f"{result.failed} failed"
    await record(ctx, tid, [req.from_account, req.to_account], "NotificationService", "confirmation", outcome)


@transfers.handler("Get", kind="shared", public="read")
async def get_transfer(ctx: ObjectSharedContext) -> Transfer:
    result = await RunOnce.result_of(ctx, Transfer)
    if result is None:
        raise TerminalError(f"no finished transfer {ctx.key()}", 404)
    result.saga = await read_saga_log(ctx, "transfer")
    return result


# -- seed 003, exercise 2 -------------------------------------------------------------------------------


class MoneyTransferRequest(_Model):
    """The seed's ``TransferRequest``."""

    transfer_id: str = Field(min_length=1)
    from_account: str = Field(min_length=1)
    to_account: str = Field(min_length=1)
    amount: Amount


class TransferResult(_Model):
    """The seed's ``TransferResult``, with the reason of a failure."""

    status: Literal["completed", "failed"]
    debit_tx_id: str | None = None
    credit_tx_id: str | None = None
    reason: str | None = None


money_transfers = VirtualObject("MoneyTransferSaga", system="banking")


@money_transfers.handler("Run", public="write")
async def run_money_transfer(ctx: ObjectContext, req: MoneyTransferRequest) -> TransferResult:
    if req.transfer_id != ctx.key():
        raise TerminalError(
            f"transferId: {req.transfer_id!r} does not match the id in the URL ({ctx.key()!r})", 400
        )
    if req.from_account == req.to_account:
        raise TerminalError("toAccount: must differ from fromAccount", 400)
    once = RunOnce(ctx, req, TransferResult)
    if (previous := await once.previous()) is not None:
        return previous
    tid = req.transfer_id
    debit_tx, credit_tx = f"{tid}:debit", f"{tid}:credit"
    parties = [req.from_account, req.to_account]
    await record(ctx, tid, parties, caller(ctx), "requested", "accepted", f"{req.amount}")
    missing = [a for a in parties if await _account(ctx, a) is None]
    if missing:
        return once.done(TransferResult(status="failed", reason=f"no account {', '.join(missing)}"))
    try:
        async with Saga(ctx, "money-transfer") as saga:
            await saga.step(
                "debit",
                lambda: call(ctx, debit, Movement(tx_id=debit_tx, amount=req.amount), key=req.from_account),
                compensate=lambda: call(
                    ctx,
                    credit,
                    Movement(
                        tx_id=f"{debit_tx}:reversal", amount=req.amount, reverses=debit_tx, memo="reversal"
                    ),
                    key=req.from_account,
                ),
            )
            await saga.step(
                "credit",
                lambda: call(ctx, credit, Movement(tx_id=credit_tx, amount=req.amount), key=req.to_account),
            )
            await saga.step(
                "record",
                lambda: record(
                    ctx, tid, parties, "MoneyTransferSaga", "transaction", "recorded", f"{req.amount}"
                ),
            )
    except SagaError as failure:
        await record(ctx, tid, parties, "MoneyTransferSaga", "transaction", "failed", failure.message)
        return once.done(TransferResult(status="failed", reason=failure.message))
    return once.done(TransferResult(status="completed", debit_tx_id=debit_tx, credit_tx_id=credit_tx))
