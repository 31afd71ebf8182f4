"""``NotificationService``: sends email through the mail provider, once per message id.

Every sent message is recorded durably in the provider's outbox (``Outbox`` reads it). A bounce is a
normal answer (``status: bounced``), not an error: whether a bounce matters is the caller's decision.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from restate import Context, RunOptions

from podium import Model, Service
from services.common.providers import MailProvider

notifications = Service("NotificationService")
_RUN = RunOptions[dict](max_attempts=10, initial_retry_interval=timedelta(milliseconds=100))


class EmailRequest(Model):
    message_id: str = Field(min_length=1)
    """Idempotency key: the same id is sent at most once."""
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    subject: str = Field(min_length=1)
    body: str = ""


class EmailResult(Model):
    message_id: str
    status: str
    """``delivered`` or ``bounced``."""
    provider_id: str


class OutboxRequest(Model):
    to: str = Field(min_length=1)


class OutboxMessage(Model):
    to: str
    subject: str
    body: str


async def _send(ctx: Context, req: EmailRequest) -> EmailResult:
    mail = MailProvider()

    def call_provider() -> dict:
        return mail.send(req.message_id, to=req.to, subject=req.subject, body=req.body)

    answer = await ctx.run_typed("send email", call_provider, _RUN)
    return EmailResult(message_id=req.message_id, status=answer["status"], provider_id=answer["messageId"])


@notifications.handler("SendConfirmation")
async def send_confirmation(ctx: Context, req: EmailRequest) -> EmailResult:
    return await _send(ctx, req)


@notifications.handler("SendEmail")
async def send_email(ctx: Context, req: EmailRequest) -> EmailResult:
    return await _send(ctx, req)


@notifications.handler("Outbox")
async def outbox(ctx: Context, req: OutboxRequest) -> list[OutboxMessage]:
    mail = MailProvider()

    def read() -> list[dict]:
        return [{"subject": m["subject"], "body": m["body"]} for m in mail.outbox(req.to)]

    # Reading the outbox is a query, but it still goes through the journal so replays see one answer.
    rows = await ctx.run_typed("read outbox", read, RunOptions[list[dict]](max_attempts=3))
    return [OutboxMessage(to=req.to, subject=r["subject"], body=r["body"]) for r in rows]
