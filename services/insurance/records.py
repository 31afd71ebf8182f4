"""``MedicalRecordsService``: a simulated medical-records provider that answers asynchronously.

A virtual object keyed by claim id. ``ClaimSaga`` creates an awakeable and files a request with
``Request``, handing over the awakeable's id; the provider answers later through the ``Deliver`` webhook,
which resolves the awakeable and wakes the saga.

- ``Request`` (private: the saga's) files the request (again with the same claim id: the same file
  back). For most policies the simulated provider schedules its own ``Deliver`` after
  :data:`AUTO_DELAY` (a durable delayed send); for manual policies (``POL-3001``) it waits for the real
  provider to call ``Deliver``.
- ``Deliver`` is the provider's webhook, the one public handler (``insurance:write``): ``{covered,
  findings?, provider?}``. Delivering the same records again returns the file; different records, or
  records for a withdrawn request, are refused (409); no request at all is 404. Through the gateway
  ``provider`` is the verified subject of the caller's token, whatever the body says.
- ``Withdraw`` (private) is called by the saga when its deadline passes: a late ``Deliver`` is then
  refused.
- ``Get`` (private) shows the file, including ``callbackId``, the raw awakeable id: whoever holds it can
  complete the saga's wait, so it stays inside.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

from restate import ObjectContext, ObjectSharedContext

from podium import INTERNAL_CALLER, TerminalError, VirtualObject, caller, send
from services.insurance import policies
from services.insurance.models import MedicalRecords, RecordsFile, RecordsRequest

AUTO_DELAY = timedelta(seconds=1)
"""How long the simulated provider takes to answer by itself."""

records = VirtualObject("MedicalRecordsService", system="insurance")


def iso(seconds: float) -> str:
    """An engine timestamp as ISO 8601 UTC."""
    return (
        dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


async def _load(ctx: ObjectContext | ObjectSharedContext) -> RecordsFile | None:
    raw = await ctx.get("file", type_hint=dict)
    return None if raw is None else RecordsFile.model_validate(raw)


def _save(ctx: ObjectContext, file: RecordsFile) -> RecordsFile:
    ctx.set("file", file.model_dump(mode="json"))
    return file


def _automatic_answer(req: RecordsRequest) -> MedicalRecords | None:
    mode = policies.records_mode(req.policy_id)
    if mode is policies.RecordsMode.COVERED:
        return MedicalRecords(
            covered=True,
            findings=f"treatment on {req.incident_date} consistent with the claim: {req.description}"[:2000],
            provider="auto",
        )
    if mode is policies.RecordsMode.NOT_COVERED:
        return MedicalRecords(
            covered=False,
            findings="pre-existing condition diagnosed before the policy started",
            provider="auto",
        )
    return None


@records.handler("Request")
async def request_records(ctx: ObjectContext, req: RecordsRequest) -> RecordsFile:
    existing = await _load(ctx)
    if existing is not None:
        return existing
    file = _save(
        ctx,
        RecordsFile(
            claim_id=ctx.key(),
            policy_id=req.policy_id,
            status="requested",
            callback_id=req.callback_id,
            requested_at=iso(await ctx.time()),
        ),
    )
    answer = _automatic_answer(req)
    if answer is not None:  # the simulated provider calls back by itself, later
        send(ctx, deliver, answer, key=ctx.key(), delay=AUTO_DELAY)
    return file


@records.handler("Deliver", public="write")
async def deliver(ctx: ObjectContext, found: MedicalRecords) -> RecordsFile:
    """The provider's webhook: the records of the claim (the object key); resolves the saga's wait."""
    subject = caller(ctx)
    if subject != INTERNAL_CALLER:  # through the gateway: who sent them is who the token says
        found = found.model_copy(update={"provider": subject})
    file = await _load(ctx)
    if file is None:
        raise TerminalError(f"no medical records were requested for claim {ctx.key()}", 404)
    if file.status == "withdrawn":
        raise TerminalError(
            f"the records request for claim {ctx.key()} was withdrawn (its deadline passed)", 409
        )
    if file.status == "delivered":
        if file.records == found:
            return file
        raise TerminalError(f"medical records for claim {ctx.key()} were already delivered", 409)
    ctx.resolve_awakeable(file.callback_id, found.model_dump(mode="json"))
    file.status, file.records, file.delivered_at = "delivered", found, iso(await ctx.time())
    return _save(ctx, file)


@records.handler("Withdraw")
async def withdraw(ctx: ObjectContext) -> RecordsFile:
    file = await _load(ctx)
    if file is None:
        raise TerminalError(f"no medical records were requested for claim {ctx.key()}", 404)
    if file.status == "requested":
        file.status = "withdrawn"
        _save(ctx, file)
    return file


@records.handler("Get", kind="shared")
async def get_file(ctx: ObjectSharedContext) -> RecordsFile:
    file = await _load(ctx)
    if file is None:
        raise TerminalError(f"no medical records were requested for claim {ctx.key()}", 404)
    return file
