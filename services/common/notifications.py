"""``NotificationService``: email, SMS and push through the messaging provider, once per message id.

Every sent message is recorded durably in the provider's outbox (``Outbox`` reads it). An email bounce
is a normal answer (``status: bounced``), not an error: whether a bounce matters is the caller's
decision. An SMS to an undeliverable number fails with 502.

**Circuit breakers.** Every call to the provider goes through :func:`send_message`: one circuit breaker
per channel (``email``, ``sms``, ``push``) and process, the shared ones of :mod:`services.common.circuits`
(:data:`CIRCUITS`, with the numbers of :class:`NotifySettings`). A provider that fails or times out
``breaker_failures`` times in a row is left alone for ``breaker_reset``; calls meanwhile are retried
when it half-opens, within ``attempts``. The shop's notifier (:mod:`services.shop.customers`) sends
through the same function, so both trip the same breakers. A refused recipient (the undeliverable
number) is the provider answering, so it never counts against the provider's breaker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from restate import Context, RunOptions

from podium import Deadline, Model, Service, TerminalError
from services.common.circuits import BreakerSettings, ProviderCircuits, guarded
from services.common.providers import MailProvider, ProviderError, ProviderTimeout


class NotifySettings(BaseSettings):
    """How messages reach the messaging provider; ``PODIUM_NOTIFY_<NAME>`` overrides each."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_NOTIFY_", frozen=True)

    attempts: int = Field(default=10, ge=1)
    """Attempts of one message, the first included, before it fails: a provider error, a timeout and a
    wait for an open circuit each use one."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures or timeouts of one channel's provider in a row that open its circuit."""
    breaker_reset: Deadline = timedelta(seconds=10)
    """How long an open circuit fails fast before it lets one call through (half-open)."""


SETTINGS = NotifySettings()
"""What the deployment runs with, read from the environment when it starts."""

CIRCUITS = ProviderCircuits(BreakerSettings(SETTINGS.breaker_failures, SETTINGS.breaker_reset))
"""The process's breakers, one per channel, shared by every message this process sends."""

REFUSED = "refused"
"""The status :func:`send_message` answers when the provider refuses the recipient."""

notifications = Service("NotificationService")
_RUN = RunOptions[dict[str, Any]](
    max_attempts=SETTINGS.attempts, initial_retry_interval=timedelta(milliseconds=100)
)


def send_message(
    mail: MailProvider, message_id: str, *, channel: str, to: str, subject: str, body: str
) -> dict[str, Any]:
    """Send one message through ``channel``'s circuit breaker: a ``ctx.run`` action.

    Returns:
        The provider's answer (``messageId``, ``status`` ``delivered`` or ``bounced``), or ``status``
        :data:`REFUSED` with ``detail`` and ``code`` when the provider refused the recipient (an
        undeliverable number): a final answer about this message, not a failure of the provider.

    Raises:
        RetryableError: The provider did not answer in time, or the channel's circuit is open.
    """

    def call_provider() -> dict[str, Any]:
        try:
            return mail.send(message_id, to=to, subject=subject, body=body, channel=channel)
        except ProviderTimeout:
            raise  # no answer: the provider's failure, which the breaker counts
        except ProviderError as exc:
            # The provider answered: it is up, and says this recipient cannot be reached. Counting that
            # as its failure would let five bad numbers in a row stop every customer's SMS.
            return {"status": REFUSED, "detail": exc.message, "code": exc.code}

    return guarded(channel, call_provider, CIRCUITS)


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
    answer = await ctx.run_typed(
        f"send {channel}",
        send_message,
        _RUN,
        mail,
        message_id,
        channel=channel,
        to=to,
        subject=subject,
        body=body,
    )
    if answer["status"] == REFUSED:
        raise TerminalError(answer["detail"], answer["code"])
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
