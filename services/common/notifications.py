"""``NotificationService``: email, SMS and push through the messaging provider, once per message id.

Every sent message is recorded durably in the provider's outbox (``Outbox`` reads it). An email bounce
is a normal answer (``status: bounced``), not an error: whether a bounce matters is the caller's
decision. An SMS to an undeliverable number fails with 502.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from restate import Context, RunOptions

from podium import Model, Service, TerminalError
from services.common.providers import MailProvider, ProviderError

notifications = Service("NotificationService")
_RUN = RunOptions[dict](max_attempts=10, initial_retry_interval=timedelta(milliseconds=100))


class EmailRequest(Model):
    message_id: str = Field(min_length=1)
    """Idempotency key: the same id is sent at most once."""
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    subject: str = Field(min_length=1)
    body: str = ""


class Delivery(Model):
    message_id: str
    status: str
    """``delivered`` or ``bounced``."""
    provider_id: str


class SmsRequest(Model):
    message_id: str = Field(min_length=1)
    to: str = Field(pattern=r"^\+[0-9]{6,15}$")
    text: str = Field(min_length=1)


class PushRequest(Model):
    message_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    body: str = ""


class OutboxRequest(Model):
    to: str = Field(min_length=1)
    channel: str = Field(default="email", pattern="^(email|sms|push)$")


class OutboxMessage(Model):
    to: str
    subject: str
    body: str


async def _deliver(ctx: Context, message_id: str, channel: str, to: str, subject: str, body: str) -> Delivery:
    mail = MailProvider()

    def call_provider() -> dict:
        try:
            return mail.send(message_id, to=to, subject=subject, body=body, channel=channel)
        except ProviderError as exc:
            raise TerminalError(exc.message, exc.code) from exc

    answer = await ctx.run_typed(f"send {channel}", call_provider, _RUN)
    return Delivery(message_id=message_id, status=answer["status"], provider_id=answer["messageId"])


async def _send(ctx: Context, req: EmailRequest) -> Delivery:
    return await _deliver(ctx, req.message_id, "email", req.to, req.subject, req.body)


@notifications.handler("SendConfirmation")
async def send_confirmation(ctx: Context, req: EmailRequest) -> Delivery:
    return await _send(ctx, req)


@notifications.handler("SendEmail")
async def send_email(ctx: Context, req: EmailRequest) -> Delivery:
    return await _send(ctx, req)


@notifications.handler("SendSMS")
async def send_sms(ctx: Context, req: SmsRequest) -> Delivery:
    return await _deliver(ctx, req.message_id, "sms", req.to, "", req.text)


@notifications.handler("SendPush")
async def send_push(ctx: Context, req: PushRequest) -> Delivery:
    return await _deliver(ctx, req.message_id, "push", req.user_id, req.title, req.body)


@notifications.handler("Outbox")
async def outbox(ctx: Context, req: OutboxRequest) -> list[OutboxMessage]:
    mail = MailProvider()

    def read() -> list[dict]:
        return [{"subject": m["subject"], "body": m["body"]} for m in mail.outbox(req.to, req.channel)]

    # Reading the outbox is a query, but it still goes through the journal so replays see one answer.
    rows = await ctx.run_typed("read outbox", read, RunOptions[list[dict]](max_attempts=3))
    return [OutboxMessage(to=req.to, subject=r["subject"], body=r["body"]) for r in rows]
