"""``ClaimSaga`` (seed 003 ex 5): validate, get medical records, wait for an adjuster, pay, close.

``POST /ClaimSaga/{claimId}/Run`` with a :class:`~services.insurance.models.Claim`:

1. **validate** the claim against the policy catalogue (``PolicyService/Check``): unknown policy, another
   customer's policy, an amount above the limit, an incident outside the cover → ``rejected_invalid``;
2. **request medical records**: an awakeable is created and its id filed with ``MedicalRecordsService``;
   the provider answers later through its ``Deliver`` webhook. No answer within the ``records_deadline``
   setting (14 days) → the request is withdrawn and the claim ends ``timeout``; records that do not
   support the claim → ``rejected``; the provider reporting an error (the awakeable rejected) →
   ``failed``;
3. **wait for the adjuster** on the workflow's durable promise ``approval`` (``Approve`` / ``Reject``,
   added by :func:`podium.add_approval_handlers`, operator actions) at most the ``approval_deadline``
   setting (30 days): rejected → ``rejected``, no decision → ``timeout``;
4. **pay** through the shared ``PaymentService``, keyed ``{claimId}-payment`` (a replay or a retry pays
   once). An approval cannot be withdrawn, so a failed payout is not compensated: the claim ends
   ``payment_failed`` with ``needsManualReview`` and the reason;
5. **close**: the result is stored (``GetStatus`` shows it) and a decision letter is emailed to the
   policyholder (a bounce does not change the outcome).

Every outcome is a result with a status and a reason, never an error; only a malformed request is refused
(400). The deadlines are the deployment's (:mod:`services.insurance.settings`), recorded in the journal
when the claim is filed, so a claim keeps the deadlines it was filed under. Every wait is a durable timer
or promise held by the engine: a crash of this process or a restart of the engine neither loses it nor
restarts its clock. The engine runs a workflow once per key: a second ``Run`` for the same claim id is
answered 409, and the first result is read with ``GET /restate/workflow/ClaimSaga/{claimId}/attach``
(waits) or ``.../output``.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

from pydantic import ValidationError
from restate import RunOptions, WorkflowContext, WorkflowSharedContext

from podium import (
    ApprovalOutcome,
    InvalidInput,
    Model,
    StatusTracker,
    TerminalError,
    Workflow,
    add_approval_handlers,
    call,
    read_status,
    wait_for_approval,
    with_timeout,
)
from services.common.notifications import EmailRequest, send_email
from services.common.payments import PayoutRequest, payout
from services.insurance import settings
from services.insurance.models import (
    Claim,
    ClaimOutcome,
    ClaimResult,
    ClaimStatus,
    MedicalRecords,
    PolicyCheck,
    PolicyVerdict,
    RecordsRequest,
    Stage,
)
from services.insurance.policies import check_claim
from services.insurance.records import iso, request_records, withdraw

claims = Workflow("ClaimSaga", system="insurance")
add_approval_handlers(claims)  # POST /ClaimSaga/{claimId}/Approve and /Reject

RETENTION = timedelta(days=365)
"""How long the engine keeps a closed claim's result and state (readable, and its id refused for a new
``Run``); the engine's default is a day."""

_FAILED_PHASES = {"timeout", "failed", "payment_failed", "cancelled"}
"""Outcomes that set the status' ``error`` (a person may want to look); the others are decisions."""


class _Deadlines(Model):
    """The deadlines a claim was filed under, in milliseconds (journaled once, the same on every replay)."""

    records_ms: int
    approval_ms: int


def _current_deadlines() -> _Deadlines:
    current = settings.SETTINGS
    return _Deadlines(
        records_ms=round(current.records_deadline.total_seconds() * 1000),
        approval_ms=round(current.approval_deadline.total_seconds() * 1000),
    )


def duration(ms: int) -> str:
    """A deadline in words: ``30 days``, ``4 s``, ``500 ms``."""
    for unit, size in (("days", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            count = ms // size
            return f"{count} {'day' if unit == 'days' and count == 1 else unit}"
    return f"{ms} ms"


class _Claim:
    """What the run handler knows so far; :meth:`close` turns it into the result."""

    def __init__(self, ctx: WorkflowContext, claim: Claim, status: StatusTracker) -> None:
        self.ctx = ctx
        self.claim = claim
        self.status = status
        self.stage: Stage = "validation"
        self.verdict: PolicyVerdict | None = None
        self.result = ClaimResult(
            claim_id=claim.claim_id,
            status="failed",
            stage="validation",
            amount=float(claim.amount),
            closed_at="",
        )

    async def close(self, outcome: ClaimOutcome, reason: str | None = None) -> ClaimResult:
        result = self.result
        result.status, result.reason, result.stage = outcome, reason, self.stage
        result.needs_manual_review = outcome == "payment_failed"
        await self.status.update(
            phase="closing", step="close", metadata={"outcome": outcome, "reason": reason}
        )
        result.letter_sent = await self._send_letter()
        result.closed_at = iso(await self.ctx.time())
        self.ctx.set("result", result.model_dump(mode="json"))
        if outcome in _FAILED_PHASES:
            await self.status.fail(reason or outcome, phase=outcome)
        else:
            await self.status.complete(phase=outcome)
        return result

    async def _send_letter(self) -> bool:
        to = self.verdict.contact_email if self.verdict else None
        if to is None:  # unknown policy, or not the holder: nobody to write to
            return False
        result = self.result
        body = f"Claim {result.claim_id} ({result.amount:.2f}) is closed: {result.status}."
        if result.reason:
            body += f"\nReason: {result.reason}"
        letter = EmailRequest(
            message_id=f"{result.claim_id}-letter",
            to=to,
            subject=f"Your claim {result.claim_id}: {result.status}",
            body=body,
        )
        try:
            sent = await call(self.ctx, send_email, letter)
        except TerminalError:
            return False
        return sent.status == "delivered"


@claims.main("Run", workflow_retention=RETENTION, public="write")
async def run(ctx: WorkflowContext, claim: Claim) -> ClaimResult:
    if claim.claim_id != ctx.key():
        raise InvalidInput(f"invalid request: claimId: {claim.claim_id!r} must equal the key {ctx.key()!r}")
    status = StatusTracker(ctx)
    state = _Claim(ctx, claim, status)
    await status.update(
        phase="validating",
        progress=0.1,
        step="validate",
        metadata={"claimId": claim.claim_id, "policyId": claim.policy_id, "amount": float(claim.amount)},
    )
    try:
        return await _process(ctx, claim, status, state)
    except TerminalError as exc:
        # Only a cancellation (or a service failing for good) gets here; it still ends as a result.
        if exc.status_code == 409 and exc.message == "cancelled":
            return await state.close("cancelled", f"cancelled by an operator while at {state.stage}")
        return await state.close("failed", f"{state.stage} failed: {exc.message}")


async def _process(ctx: WorkflowContext, claim: Claim, status: StatusTracker, state: _Claim) -> ClaimResult:
    claim_id = claim.claim_id
    filed_on = dt.datetime.fromtimestamp(await ctx.time(), tz=dt.UTC).date()
    # Settings are read once and journaled: a replay after the deployment was reconfigured keeps them.
    deadlines = await ctx.run_typed("deadlines", _current_deadlines, RunOptions[_Deadlines]())
    verdict = await call(
        ctx,
        check_claim,
        PolicyCheck(
            policy_id=claim.policy_id,
            customer_id=claim.customer_id,
            amount=float(claim.amount),
            incident_date=claim.incident_date,
            filed_on=filed_on,
        ),
    )
    state.verdict = verdict
    if not verdict.valid:
        return await state.close("rejected_invalid", verdict.reason)

    # -- medical records: an awakeable resolved by the provider's webhook, with a deadline ------------
    state.stage = "records"
    await status.update(phase="awaiting_records", progress=0.25, completed_step="validate", step="records")
    callback_id, arrived = ctx.awakeable(type_hint=dict)
    await call(
        ctx,
        request_records,
        RecordsRequest(
            policy_id=claim.policy_id,
            customer_id=claim.customer_id,
            incident_date=claim.incident_date,
            description=claim.description,
            callback_id=callback_id,
        ),
        key=claim_id,
    )
    try:
        timed = await with_timeout(ctx, arrived, timedelta(milliseconds=deadlines.records_ms))
    except TerminalError as exc:
        if exc.status_code == 409 and exc.message == "cancelled":
            raise
        return await state.close("failed", f"the medical records provider reported an error: {exc.message}")
    if timed.timed_out:
        file = await call(ctx, withdraw, None, key=claim_id)
        if file.records is None:  # else they were delivered just as the deadline passed: use them
            wait = duration(deadlines.records_ms)
            return await state.close("timeout", f"medical records were not received within {wait}")
        records = file.records
    else:
        try:
            records = MedicalRecords.model_validate(timed.value)
        except ValidationError as exc:  # the callback id is not secret: anyone could send junk
            return await state.close(
                "failed", f"the medical records callback sent invalid data: {exc.errors()[0]['msg']}"
            )
    state.result.records = records
    if not records.covered:
        return await state.close("rejected", f"medical records do not support the claim: {records.findings}")

    # -- the adjuster: the workflow's durable promise, with a 30-day deadline -------------------------
    state.stage = "approval"
    deadline = await ctx.time() + deadlines.approval_ms / 1000
    await status.update(
        phase="awaiting_approval",
        progress=0.5,
        completed_step="records",
        step="approval",
        metadata={"approvalDeadline": iso(deadline)},
    )
    approval = await wait_for_approval(ctx, timeout=timedelta(milliseconds=deadlines.approval_ms))
    state.result.approval = approval.decision
    if approval.outcome is ApprovalOutcome.TIMED_OUT:
        return await state.close("timeout", f"no adjuster decided within {duration(deadlines.approval_ms)}")
    if approval.outcome is ApprovalOutcome.REJECTED:
        decision = approval.decision
        who = decision.by if decision and decision.by else "the adjuster"
        why = f": {decision.comment}" if decision and decision.comment else ""
        return await state.close("rejected", f"rejected by {who}{why}")

    # -- the payout: once per claim; past the approval there is nothing to compensate -------------------
    state.stage = "payment"
    payment_id = f"{claim_id}-payment"
    state.result.payment_id = payment_id
    await status.update(phase="paying", progress=0.75, completed_step="approval", step="payment")
    try:
        await call(
            ctx,
            payout,
            PayoutRequest(
                customer_id=claim.customer_id, amount=claim.amount, description=f"payout of claim {claim_id}"
            ),
            key=payment_id,
        )
    except TerminalError as exc:
        return await state.close(
            "payment_failed",
            f"the claim was approved but the payout {payment_id} failed: {exc.message}; "
            "an approval cannot be withdrawn, so the claim needs manual review",
        )
    await status.update(completed_step="payment")
    return await state.close("paid")


@claims.handler("GetStatus", public="read")
async def get_status(ctx: WorkflowSharedContext) -> ClaimStatus:
    status = await read_status(ctx)
    raw = await ctx.get("result", type_hint=dict)
    result = None if raw is None else ClaimResult.model_validate(raw)
    base = status.model_dump() if status is not None else {}
    return ClaimStatus(**base, result=result)
