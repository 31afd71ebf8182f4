"""``AuditTrail``: an append-only record of every step and decision, per account and per transfer.

Entries are sent (fire-and-forget, journaled, so each is recorded exactly once even across retries) to
one object per subject: ``AuditTrail/account:<id>`` and ``AuditTrail/transfer:<id>``. ``List`` reads
them in order. Each entry says when (engine clock), who acted, what, and the outcome.

Who acted: for the request that started a transfer, the caller the gateway verified
(:func:`podium.caller`), never a name the client wrote in its request; for every later step, the service
that acted or decided. ``Append`` is private (only the banking handlers write the trail); ``List`` is a
public read.
"""

from __future__ import annotations

from restate import Context, ObjectContext, ObjectSharedContext

from podium import Model, VirtualObject, send

audit = VirtualObject("AuditTrail", system="banking")


class AuditEntry(Model):
    at: float
    """Seconds since the epoch, from the engine's journaled clock."""
    transfer_id: str
    actor: str
    """Who acted: the verified caller for a client's request (``internal`` through a trusted door),
    otherwise the service that acted or decided."""
    action: str
    outcome: str
    detail: str = ""


@audit.handler("Append")
async def append(ctx: ObjectContext, entry: AuditEntry) -> None:
    entries = await ctx.get("entries", type_hint=list) or []
    entries.append(entry.model_dump(mode="json"))
    ctx.set("entries", entries)


@audit.handler("List", kind="shared", public="read")
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
