"""``PipelineApproval/{pipelineId}``: the manual gate before production, one per pipeline.

The pipeline creates an awakeable (the seed's "manual approval step (use awakeable)"), opens the gate
with its id and a deadline, and waits for the awakeable with a durable timer. People decide through
``PipelineOrchestrator/{id}/Approve`` or ``Reject``, which call ``Decide`` here. The gate is an exclusive
virtual object, so it is the single source of truth: the first decision wins and resolves the
awakeable, a second one gets 409 naming the first, and when the deadline passes the pipeline calls
``Close``, which records ``timed_out`` unless a decision got in first (then that decision stands: the
approver was told it was accepted, so the pipeline honours it).

Every handler is private: the pipeline opens and closes the gate, its public ``Approve``/``Reject``
decide (with ``by`` already set to the verified approver), and ``GetStatus`` shows the gate.
"""

from __future__ import annotations

from restate import ObjectContext, ObjectSharedContext

from podium import ApprovalOutcome, Decision, Model, TerminalError, VirtualObject
from services.pipeline.models import iso

gates = VirtualObject("PipelineApproval")


class GateOpen(Model):
    awakeable_id: str
    requested_at: str
    deadline_at: str
    what: str


class Gate(Model):
    pipeline_id: str
    what: str
    requested_at: str
    deadline_at: str
    outcome: ApprovalOutcome | None = None
    """None while waiting."""
    decision: Decision | None = None
    decided_at: str | None = None


async def _gate(ctx: ObjectContext | ObjectSharedContext) -> Gate | None:
    raw = await ctx.get("gate", type_hint=dict)
    return None if raw is None else Gate.model_validate(raw)


@gates.handler("Open")
async def open_gate(ctx: ObjectContext, req: GateOpen) -> Gate:
    """Start waiting for a decision (idempotent: a retry returns the open gate)."""
    existing = await _gate(ctx)
    if existing is not None:
        return existing
    gate = Gate(
        pipeline_id=ctx.key(), what=req.what, requested_at=req.requested_at, deadline_at=req.deadline_at
    )
    ctx.set("gate", gate.model_dump(mode="json"))
    ctx.set("awakeable", req.awakeable_id)
    return gate


@gates.handler("Decide")
async def decide(ctx: ObjectContext, decision: Decision) -> Gate:
    """Record the first decision and wake the pipeline; 409 if not waiting or already decided."""
    gate = await _gate(ctx)
    if gate is None:
        raise TerminalError(f"pipeline {ctx.key()} is not waiting for approval", 409)
    if gate.outcome is ApprovalOutcome.TIMED_OUT:
        raise TerminalError(f"the approval of pipeline {ctx.key()} timed out at {gate.decided_at}", 409)
    if gate.outcome is not None:
        by = f" by {gate.decision.by}" if gate.decision and gate.decision.by else ""
        raise TerminalError(f"approval of pipeline {ctx.key()} was already decided: {gate.outcome}{by}", 409)
    gate.outcome = ApprovalOutcome.APPROVED if decision.approved else ApprovalOutcome.REJECTED
    gate.decision = decision
    gate.decided_at = iso(await ctx.time())
    ctx.set("gate", gate.model_dump(mode="json"))
    awakeable = await ctx.get("awakeable", type_hint=str)
    assert awakeable is not None
    ctx.resolve_awakeable(awakeable, decision.model_dump(mode="json"))
    return gate


@gates.handler("Close")
async def close_gate(ctx: ObjectContext) -> Gate:
    """End the wait: the decision if one was recorded, else ``timed_out`` (later decisions get 409)."""
    gate = await _gate(ctx)
    if gate is None:
        raise TerminalError(f"pipeline {ctx.key()} has no approval gate", 404)
    if gate.outcome is None:
        gate.outcome = ApprovalOutcome.TIMED_OUT
        gate.decided_at = iso(await ctx.time())
        ctx.set("gate", gate.model_dump(mode="json"))
    return gate


@gates.handler("Get", kind="shared")
async def get_gate(ctx: ObjectSharedContext) -> Gate:
    """The gate: when it was opened, its deadline, and the outcome once there is one."""
    gate = await _gate(ctx)
    if gate is None:
        raise TerminalError(f"pipeline {ctx.key()} has no approval gate", 404)
    return gate
