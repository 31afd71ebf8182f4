"""``AuditTrail``: an append-only record of every step and decision, per account and per transfer.

Entries are sent (fire-and-forget, journaled, so each is recorded exactly once even across retries) to
one object per subject: ``AuditTrail/account:<id>`` and ``AuditTrail/transfer:<id>``. ``List`` reads
them in order. Each entry says when (engine clock), who acted (the service), what, and the outcome.
"""

from __future__ import annotations

from restate import Context, ObjectContext, ObjectSharedContext

from podium import Model, VirtualObject, send

audit = VirtualObject("AuditTrail")


class AuditEntry(Model):
    at: float
    """Seconds since the epoch, from the engine's journaled clock."""
    transfer_id: str
    actor: str
    """The service that acted or decided."""
    action: str
    outcome: str
    detail: str = ""


@audit.handler("Append")
async def append(ctx: ObjectContext, entry: AuditEntry) -> None:
    entries = await ctx.get("entries", type_hint=list) or []
    entries.append(entry.model_dump(mode="json"))
    ctx.set("entries", entries)


@audit.handler("List", kind="shared")
async def list_entries(ctx: ObjectSharedContext) -> list[AuditEntry]:
    return [AuditEntry.model_validate(e) for e in await ctx.get("entries", type_hint=list) or []]


async def record(
    ctx: Context,
    transfer_id: str,
    accounts: list[str],
    actor: str,
    action: str,
    outcome: str,
    detail: str = "",
) -> None:
    """Record one audit entry under the transfer and under each account."""
    entry = AuditEntry(
        at=await ctx.time(),
        transfer_id=transfer_id,
        actor=actor,
        action=action,
        outcome=outcome,
        detail=detail,
    )
    send(ctx, append, entry, key=f"transfer:{transfer_id}")
    for account in dict.fromkeys(accounts):
        send(ctx, append, entry, key=f"account:{account}")
