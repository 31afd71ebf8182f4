"""``ShopCustomer`` (notification preferences per customer) and ``ShopNotifier`` (sends by preference).

The seed's notification service is multi-channel with user preferences. The channels themselves are the
shared ``NotificationService`` (email, SMS, push, once per message id); this module adds what the shop
needs on top: which channels a customer wants (``ShopCustomer/{customerId}/SetPreferences``; email
only until they say otherwise) and a ``Notify`` that sends one message on each of them. Message ids are
``<messageId>-<channel>``, so a retried notification is sent once per channel.

A customer sets and reads their preferences (public: ``write``, ``read``); ``Notify`` is private (the
saga sends it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from restate import Context, ObjectContext, ObjectSharedContext

from podium import Model, Service, TerminalError, VirtualObject, call
from services.common.notifications import (
    EmailRequest,
    PushRequest,
    SmsRequest,
    send_email,
    send_push,
    send_sms,
)

customers = VirtualObject("ShopCustomer", system="shop")
notifier = Service("ShopNotifier", system="shop")

Channel = Literal["email", "sms", "push"]


class Preferences(Model):
    """How a customer wants to hear from the shop."""

    channels: list[Channel] = Field(default=["email"], min_length=1)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    """Overrides the email given with each order."""
    phone: str | None = Field(default=None, pattern=r"^\+[0-9]{6,15}$")
    """Needed for ``sms``."""

    @model_validator(mode="after")
    def _sms_needs_a_phone(self) -> Preferences:
        if "sms" in self.channels and self.phone is None:
            raise ValueError("phone: required when channels include sms")
        return self


class Notification(Model):
    """``ShopNotifier/Notify``: one message to a customer on each preferred channel."""

    customer_id: str = Field(min_length=1)
    message_id: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    """The order's email (used unless the preferences name another)."""
    subject: str = Field(min_length=1)
    body: str = ""


class Sent(Model):
    """What happened on each channel: ``delivered``, ``bounced`` or ``failed: <why>``."""

    channels: dict[str, str]


@customers.handler("SetPreferences", public="write")
async def set_preferences(ctx: ObjectContext, prefs: Preferences) -> Preferences:
    """Store the customer's channels (and the email and phone to use)."""
    ctx.set("preferences", prefs.model_dump(mode="json"))
    return prefs


@customers.handler("GetPreferences", kind="shared", public="read")
async def get_preferences(ctx: ObjectSharedContext) -> Preferences:
    """The customer's channels (email only until they choose)."""
    raw = await ctx.get("preferences", type_hint=dict)
    return Preferences() if raw is None else Preferences.model_validate(raw)


@notifier.handler("Notify")
async def notify(ctx: Context, req: Notification) -> Sent:
    """Send on every channel the customer chose, best effort: one failing channel spoils no other."""
    prefs = await call(ctx, get_preferences, None, key=req.customer_id)
    outcomes: dict[str, str] = {}
    for channel in prefs.channels:
        try:
            outcomes[channel] = await _send(ctx, channel, req, prefs)
        except TerminalError as exc:
            outcomes[channel] = f"failed: {exc.message}"
    return Sent(channels=outcomes)


async def _send(ctx: Context, channel: Channel, req: Notification, prefs: Preferences) -> str:
    message_id = f"{req.message_id}-{channel}"
    if channel == "email":
        to = prefs.email or req.email
        mail = EmailRequest(message_id=message_id, to=to, subject=req.subject, body=req.body)
        return (await call(ctx, send_email, mail)).status
    if channel == "sms":
        assert prefs.phone is not None  # the preferences refuse sms without a phone
        text = f"{req.subject}. {req.body}".strip()
        return (
            await call(ctx, send_sms, SmsRequest(message_id=message_id, to=prefs.phone, text=text))
        ).status
    push = PushRequest(message_id=message_id, user_id=req.customer_id, title=req.subject, body=req.body)
    return (await call(ctx, send_push, push)).status
