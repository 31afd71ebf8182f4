"""Waiting for people: durable promises and approvals with deadlines that survive restarts.

A workflow waits on a named durable promise; a shared handler of the same workflow resolves it (a web
form, an operator's curl). The deadline is a durable timer held by the engine, so a restart of the
service or the engine neither loses the wait nor resets the clock.

Example::

    claims = Workflow("ClaimSaga")
    add_approval_handlers(claims)               # POST /ClaimSaga/{id}/Approve and /Reject

    @claims.main("Run")
    async def run(ctx: WorkflowContext, claim: Claim) -> ClaimResult:
        result = await wait_for_approval(ctx, timeout=timedelta(days=30))
        if result.outcome is ApprovalOutcome.TIMED_OUT: ...
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import TypeVar

from restate import TerminalError, WorkflowContext, WorkflowSharedContext

from podium._caller import INTERNAL_CALLER, caller
from podium._concurrency import Timed, with_timeout
from podium._model import Model
from podium._services import Access, Workflow

T = TypeVar("T")


async def race_promise_with_timeout(
    ctx: WorkflowContext, name: str, timeout: timedelta, type_hint: type[T]
) -> Timed[T]:
    """Wait for the workflow's durable promise ``name`` at most ``timeout``.

    Raises:
        TerminalError: If the promise was rejected before the deadline.
    """
    promise = ctx.promise(name, type_hint=type_hint)
    return await with_timeout(ctx, promise.value(), timeout, cancel=False)


APPROVAL_METADATA = "podium.approval"
"""Handler metadata (seen in the engine's admin API) naming the approval a decision handler decides, so
the dashboard finds pending approvals and their handlers without a list of its own."""
DECISION_METADATA = "podium.decision"
"""Handler metadata saying whether the handler approves or rejects."""


class Decision(Model):
    """A person's answer to an approval request (the seed's ``Approval``)."""

    approved: bool = True
    by: str | None = None
    """Who decided: the verified subject of the caller's token when it came through the gateway."""
    comment: str | None = None


class ApprovalOutcome(enum.StrEnum):
    """How an approval ended."""

    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class ApprovalResult(Model):
    """The outcome, and the decision when there was one."""

    outcome: ApprovalOutcome
    decision: Decision | None = None


async def wait_for_approval(
    ctx: WorkflowContext, *, timeout: timedelta, name: str = "approval"
) -> ApprovalResult:
    """Wait for approve or reject on promise ``name`` until ``timeout``; see :func:`add_approval_handlers`."""
    timed = await race_promise_with_timeout(ctx, name, timeout, dict)
    value = timed.value
    if timed.timed_out or value is None:
        # Close the door first, then look once more: a decision accepted just as the timer fired was
        # told it counts, so it does.
        ctx.set(_state_key(name), ApprovalOutcome.TIMED_OUT.value)
        value = await ctx.promise(name, type_hint=dict).peek()
        if value is None:
            return ApprovalResult(outcome=ApprovalOutcome.TIMED_OUT)
    decision = Decision.model_validate(value)
    outcome = ApprovalOutcome.APPROVED if decision.approved else ApprovalOutcome.REJECTED
    return ApprovalResult(outcome=outcome, decision=decision)


def _state_key(name: str) -> str:
    return f"podium.approval.{name}"


def add_approval_handlers(
    workflow: Workflow,
    *,
    name: str = "approval",
    approve: str = "Approve",
    reject: str = "Reject",
    public: Access | None = "operator",
) -> None:
    """Add shared handlers that decide the approval ``name`` of ``workflow``.

    ``approve`` takes a :class:`Decision` (``approved`` defaults to true, so ``{}`` approves and the
    seed's ``{"approved": false}`` rejects); ``reject`` always rejects. A decision that arrives before
    :func:`wait_for_approval` starts waiting is kept (the promise is durable) and applies when it does;
    one after the deadline is refused with 409, and so is a second decision, naming the first.

    Deciding is an operator action: both handlers are public with ``public="operator"`` unless told
    otherwise (``None`` keeps them for other handlers only). ``by`` is the verified subject of the
    caller's token when the decision came through the gateway; a ``by`` in the body counts only when
    it came through a trusted door (the ingress, or another handler).
    """

    async def decide(ctx: WorkflowSharedContext, decision: Decision) -> ApprovalResult:
        subject = caller(ctx)
        if subject != INTERNAL_CALLER or decision.by is None:
            decision = decision.model_copy(update={"by": subject})
        if await ctx.get(_state_key(name), type_hint=str) == ApprovalOutcome.TIMED_OUT.value:
            raise TerminalError(f"the deadline for {name} of {ctx.key()} has passed", 409)
        promise = ctx.promise(name, type_hint=dict)
        earlier = await promise.peek()
        if earlier is not None:
            first = Decision.model_validate(earlier)
            verdict = "approved" if first.approved else "rejected"
            raise TerminalError(f"{name} of {ctx.key()} was already decided: {verdict}", 409)
        await promise.resolve(decision.model_dump(mode="json"))
        outcome = ApprovalOutcome.APPROVED if decision.approved else ApprovalOutcome.REJECTED
        return ApprovalResult(outcome=outcome, decision=decision)

    async def approve_handler(ctx: WorkflowSharedContext, decision: Decision) -> ApprovalResult:
        return await decide(ctx, decision)

    async def reject_handler(ctx: WorkflowSharedContext, decision: Decision) -> ApprovalResult:
        return await decide(ctx, decision.model_copy(update={"approved": False}))

    workflow.handler(
        approve, public=public, metadata={APPROVAL_METADATA: name, DECISION_METADATA: "approve"}
    )(approve_handler)
    workflow.handler(reject, public=public, metadata={APPROVAL_METADATA: name, DECISION_METADATA: "reject"})(
        reject_handler
    )
