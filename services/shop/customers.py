"""``ShopCustomer/{customerId}``: a customer's notification preferences, and the notifications sent to them.

The seed's notification service is multi-channel (email, SMS, push), honours the customer's preferences
and records the delivery outcome of every notification. Here one virtual object per customer does all of
it, so an order's notifications cost one invocation per published batch and read nothing elsewhere:

- **Preferences** (``SetPreferences``, ``GetPreferences``; public): the channels a customer wants (email
  only until they say otherwise), with the email and phone to use. Every change is recorded with who made
  it (the verified subject, :func:`podium.caller`) and when (the engine's clock): ``PreferencesHistory``.
- **Subscriber** (``Notify``; private): the order aggregate publishes its events here (registered in
  :mod:`services.shop.subscriptions`), one :class:`~services.shop.events.Published` batch per command.
  Each order has one key in this object (``order:<orderId>``): its position in the order's stream (a
  :class:`~services.shop.events.Cursor`) and its outcomes, read and written once per batch. A
  redelivered event is ignored, one that arrives early waits for the gap, and events are handled in
  sequence order. The types of :data:`NOTIFIED` each send one message
  per channel the customer chose, rendered from a Jinja2 template (:func:`render`), with the message id
  ``<orderId>-<kind>-<channel>``, which is also the provider's idempotency key: a message is sent once,
  whatever is redelivered or retried.
- **Outcomes** (``Notifications``; public): every message's outcome per order (delivered, bounced,
  undeliverable, failed). A channel that fails spoils no other and never fails the handler: the provider
  call goes through the channel's circuit breaker (:func:`services.common.notifications.send_message`),
  and its ``ctx.run`` gives up after ``PODIUM_NOTIFY_ATTEMPTS`` attempts, recorded as ``failed``.

While a provider is down, the customer's object is busy with the retries (at most ``attempts`` of them,
the waits for an open circuit included), so their next notification and preference change wait behind
it: a customer's messages stay in order, and no other customer waits.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import jinja2
import restate
from pydantic import Field, model_validator
from restate import ObjectContext, ObjectSharedContext, RestateDurableFuture, RunOptions

from podium import InvalidInput, Model, TerminalError, VirtualObject, caller
from services.common.notifications import REFUSED, SETTINGS, send_message
from services.common.providers import MailProvider
from services.shop import settings
from services.shop.events import Cursor, Event, EventType, OrderState, Published, iso, offer

customers = VirtualObject(
    "ShopCustomer", system="shop", journal_retention=settings.SETTINGS.participant_retention
)

Channel = Literal["email", "sms", "push"]
Kind = Literal["confirmed", "cancelled", "delivered"]

KINDS: dict[EventType, Kind] = {
    EventType.ORDER_COMPLETED: "confirmed",
    EventType.ORDER_CANCELLED: "cancelled",
    EventType.ORDER_DELIVERED: "delivered",
}
"""The notification each notified event type sends (one message per channel the customer chose)."""

NOTIFIED: frozenset[EventType] = frozenset(KINDS)
"""The event types that notify the customer: what the aggregate publishes to ``Notify`` for."""

SMS_LIMIT = 160
"""Characters in one SMS: a longer rendering is cut (the templates stay well within it; a test checks)."""

SEND = RunOptions[dict[str, Any]](
    max_attempts=SETTINGS.attempts, initial_retry_interval=timedelta(milliseconds=100)
)
"""How each message's ``ctx.run`` retries before its channel is recorded ``failed`` (tests shorten it)."""


# -- models ----------------------------------------------------------------------------------------------


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


class PreferenceChange(Model):
    """One change of a customer's preferences: the audit trail's entry."""

    at: str
    """Engine clock, ISO 8601 UTC."""
    actor: str
    """The verified subject of the client who made it (``internal`` through the trusted ingress)."""
    preferences: Preferences
    """What they became."""


class PreferencesHistory(Model):
    """``PreferencesHistory``: every change of the customer's preferences, oldest first."""

    changes: list[PreferenceChange] = []


class DeliveryStatus(enum.StrEnum):
    """What became of one message."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    """The provider took it, and the mailbox refused it."""
    UNDELIVERABLE = "undeliverable"
    """The provider refused the recipient (an SMS to a number it cannot reach)."""
    FAILED = "failed"
    """Never sent: the provider kept failing (or its circuit stayed open), or there was no address."""


class NotificationOutcome(Model):
    """One message to the customer, and what became of it."""

    message_id: str
    """``<orderId>-<kind>-<channel>``: the provider's idempotency key too."""
    order_id: str
    kind: Kind
    channel: Channel
    to: str
    """Where it went, masked (``c***@example.com``, ``***0100``); the customer id for push."""
    status: DeliveryStatus
    detail: str = ""
    """The provider's message id when it was sent; why not, otherwise."""
    at: str
    """When the provider answered (ISO 8601 UTC, journaled with the answer); for a message that was never
    sent, when its event was recorded."""


class NotificationsQuery(Model):
    """``Notifications``: whose outcomes to read."""

    order_id: str = Field(min_length=1)


class OrderNotifications(Model):
    """``Notifications``: the outcomes of one order's notifications to this customer."""

    order_id: str
    version: int
    """The last event of the order the notifier has handled."""
    pending: list[int]
    """Events that arrived early and wait for a gap to fill."""
    notifications: list[NotificationOutcome]
    """Oldest first."""


class Skipped(Model):
    """An event of a delivered batch that sent nothing in this delivery, and why."""

    sequence: int
    type: EventType
    why: Literal["not notified", "duplicate", "early"]
    """``not notified``: its type tells the customer nothing; ``duplicate``: handled or waiting already;
    ``early``: it waits for the events before it (and is sent when they arrive)."""


class NotifyReport(Model):
    """What one ``Notify`` delivery did."""

    order_id: str
    version: int
    """The last event of the order handled so far."""
    sent: list[NotificationOutcome]
    """Every message of this delivery, whatever became of it."""
    skipped: list[Skipped]


class _OrderRecord(Model):
    """State ``order:<orderId>``: everything this customer's object keeps about one order, in one key."""

    cursor: Cursor = Cursor()
    """How far the order's stream was handled, and what arrived early."""
    early: OrderState | None = None
    """The order as of the newest early batch, kept only while some of its events wait."""
    notifications: list[NotificationOutcome] = []
    """The outcome of every message about the order so far, oldest first."""


class Rendered(Model):
    """A rendered notification."""

    subject: str
    """The email's subject or the push notification's title (empty for an SMS)."""
    body: str


# -- templates -------------------------------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("services.shop", "templates"),
    # A field a template names and the order lacks fails the rendering: never a blank or a "None".
    undefined=jinja2.StrictUndefined,
    # Plain text for mail bodies, SMS and push, never HTML: escaping would show "Tom &amp; Jerry". An
    # HTML email would get templates of its own, rendered with autoescape on.
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,  # an included part ends its last line, as its file does
)
_TITLE: dict[Channel, str | None] = {"email": "subject", "sms": None, "push": "title"}
"""The variable each channel's templates set (``{% set subject %}…{% endset %}``) for the heading."""


def render(kind: Kind, channel: Channel, order: OrderState) -> Rendered:
    """Render ``notifications/<kind>.<channel>.txt.j2`` for ``order``.

    The template sees ``order``: the fields of :class:`~services.shop.events.OrderState` that have a
    value (``order.tracking_number`` is undefined, not None, before the shipment), by their Python names.
    The body is the template's output; the heading is the variable of :data:`_TITLE` that it sets. An
    SMS is one line of at most :data:`SMS_LIMIT` characters.

    Raises:
        jinja2.TemplateError: No template for (kind, channel), or it names a field the order lacks
            (``UndefinedError``), or it sets no heading.
    """
    template = _TEMPLATES.get_template(f"notifications/{kind}.{channel}.txt.j2")
    module = template.make_module({"order": order.model_dump(by_alias=False, exclude_none=True)})
    body = str(module).strip()
    heading = _TITLE[channel]
    subject = ""
    if heading is not None:
        subject = " ".join(str(getattr(module, heading, "")).split())
        if not subject:
            raise jinja2.TemplateError(f"{template.name} sets no {heading}")
    if channel == "sms":
        body = " ".join(body.split())
        if len(body) > SMS_LIMIT:
            body = body[: SMS_LIMIT - 1] + "…"
    return Rendered(subject=subject, body=body)


# -- preferences ------------------------------------------------------------------------------------------


@customers.handler("SetPreferences", public="write")
async def set_preferences(ctx: ObjectContext, prefs: Preferences) -> Preferences:
    """Store the customer's channels (and the email and phone to use), recording who changed them."""
    current = await ctx.get("preferences", type_hint=Preferences)
    if prefs == (current or Preferences()):
        return prefs  # nothing changes, so nothing to audit
    history = await ctx.get("preferences-history", type_hint=PreferencesHistory) or PreferencesHistory()
    history.changes.append(PreferenceChange(at=iso(await ctx.time()), actor=caller(ctx), preferences=prefs))
    ctx.set("preferences", prefs)
    ctx.set("preferences-history", history)
    return prefs


@customers.handler("GetPreferences", kind="shared", public="read")
async def get_preferences(ctx: ObjectSharedContext) -> Preferences:
    """The customer's channels (email only until they choose)."""
    return await ctx.get("preferences", type_hint=Preferences) or Preferences()


@customers.handler("PreferencesHistory", kind="shared", public="read")
async def preferences_history(ctx: ObjectSharedContext) -> PreferencesHistory:
    """Every change of the customer's preferences, with its actor and time, oldest first."""
    return await ctx.get("preferences-history", type_hint=PreferencesHistory) or PreferencesHistory()


# -- the subscriber ---------------------------------------------------------------------------------------


@customers.handler("Notify")
async def notify(ctx: ObjectContext, batch: Published) -> NotifyReport:
    """Tell the customer what the batch's events mean to them, once per event, in sequence order."""
    order_id = _order_of(batch, ctx.key())
    record = await ctx.get(f"order:{order_id}", type_hint=_OrderRecord) or _OrderRecord()
    cursor = record.cursor
    ready: list[Event] = []
    skipped: list[Skipped] = []
    for event in sorted(batch.events, key=lambda e: e.sequence):
        duplicates = cursor.duplicates
        cursor, released = offer(cursor, event)
        if cursor.duplicates > duplicates:
            skipped.append(Skipped(sequence=event.sequence, type=event.type, why="duplicate"))
        elif not released:
            skipped.append(Skipped(sequence=event.sequence, type=event.type, why="early"))
        ready.extend(released)
    order = _newest_order(record, batch.order, waiting=bool(cursor.pending))

    skipped.extend(
        Skipped(sequence=e.sequence, type=e.type, why="not notified") for e in ready if e.type not in KINDS
    )
    sent: list[NotificationOutcome] = []
    if notified := [e for e in ready if e.type in KINDS]:
        prefs = await ctx.get("preferences", type_hint=Preferences) or Preferences()
        for event in notified:
            # One event's channels at once; the next event's after them, so messages go out in order.
            sent.extend(await _send_all(ctx, KINDS[event.type], order, prefs, event.at))

    record.cursor = cursor
    record.notifications.extend(sent)
    ctx.set(f"order:{order_id}", record)
    return NotifyReport(order_id=order_id, version=cursor.version, sent=sent, skipped=skipped)


@customers.handler("Notifications", kind="shared", public="read")
async def notifications(ctx: ObjectSharedContext, query: NotificationsQuery) -> OrderNotifications:
    """The outcome of every notification of one order sent to this customer, oldest first."""
    record = await ctx.get(f"order:{query.order_id}", type_hint=_OrderRecord) or _OrderRecord()
    return OrderNotifications(
        order_id=query.order_id,
        version=record.cursor.version,
        pending=sorted(record.cursor.pending),
        notifications=record.notifications,
    )


def _order_of(batch: Published, customer_id: str) -> str:
    """The one order of the batch, which must be this customer's (400 otherwise)."""
    order_ids = {e.order_id for e in batch.events}
    if len(order_ids) != 1 or batch.order.order_id not in ("", *order_ids):
        raise InvalidInput(f"events: a batch holds the events of one order, not {sorted(order_ids)}")
    if batch.order.customer_id != customer_id:
        raise InvalidInput(
            f"order.customerId: the order is {batch.order.customer_id!r}'s, not {customer_id!r}'s"
        )
    return order_ids.pop()


def _newest_order(record: _OrderRecord, seen: OrderState, *, waiting: bool) -> OrderState:
    """The newest state of the order known here: this batch's, or an early batch's still waiting.

    Events released from waiting are newer than this batch's state, so they are told with the early
    batch's state (the order after them), which is kept only while some event waits.
    """
    early = record.early
    newest = early if early is not None and early.version > seen.version else seen
    record.early = newest if waiting else None
    return newest


@dataclass
class _Message:
    """One message about to go out."""

    message_id: str
    kind: Kind
    channel: Channel
    to: str

    def outcome(self, order_id: str, status: DeliveryStatus, detail: str, at: str) -> NotificationOutcome:
        return NotificationOutcome(
            message_id=self.message_id,
            order_id=order_id,
            kind=self.kind,
            channel=self.channel,
            to=_mask(self.channel, self.to),
            status=status,
            detail=detail,
            at=at,
        )


async def _send_all(
    ctx: ObjectContext, kind: Kind, order: OrderState, prefs: Preferences, at: str
) -> list[NotificationOutcome]:
    """Send one message on each chosen channel, at once; each channel's failure is its own outcome."""
    outcomes: dict[Channel, NotificationOutcome] = {}
    runs: list[tuple[_Message, RestateDurableFuture[dict[str, Any]]]] = []
    for channel in prefs.channels:
        message = _Message(
            f"{order.order_id}-{kind}-{channel}", kind, channel, _address(channel, order, prefs)
        )
        if not message.to:
            detail = f"no {channel} address for the customer"
            outcomes[channel] = message.outcome(order.order_id, DeliveryStatus.FAILED, detail, at)
            continue
        try:
            rendered = render(kind, channel, order)
        except jinja2.TemplateError as exc:  # a bug of the template: no retry would mend it
            outcomes[channel] = message.outcome(order.order_id, DeliveryStatus.FAILED, f"template: {exc}", at)
            continue
        runs.append((message, _start(ctx, message, rendered)))

    await restate.gather(*(run for _, run in runs))
    for message, run in runs:
        try:
            answer = await run
        except TerminalError as exc:  # the provider kept failing for every attempt the run had
            answer = {}
            status, detail = DeliveryStatus.FAILED, exc.message
        else:
            if answer["status"] == REFUSED:
                status, detail = DeliveryStatus.UNDELIVERABLE, str(answer["detail"])
            else:
                status, detail = DeliveryStatus(answer["status"]), str(answer["messageId"])
        answered = str(answer["at"]) if "at" in answer else at
        outcomes[message.channel] = message.outcome(order.order_id, status, detail, answered)
    return [outcomes[channel] for channel in prefs.channels]


def _start(ctx: ObjectContext, message: _Message, rendered: Rendered) -> RestateDurableFuture[dict[str, Any]]:
    """The ``ctx.run`` that sends ``message`` through its channel's breaker, started, not awaited."""
    return ctx.run_typed(
        f"send {message.message_id}",
        _send_stamped,
        SEND,
        MailProvider(),
        message.message_id,
        channel=message.channel,
        to=message.to,
        subject=rendered.subject,
        body=rendered.body,
    )


def _send_stamped(
    mail: MailProvider, message_id: str, *, channel: str, to: str, subject: str, body: str
) -> dict[str, Any]:
    """:func:`send_message`, with the time of the answer (journaled with it: no clock entry of its own)."""
    answer = send_message(mail, message_id, channel=channel, to=to, subject=subject, body=body)
    return {**answer, "at": iso(time.time())}


def _address(channel: Channel, order: OrderState, prefs: Preferences) -> str:
    """Where ``channel``'s message goes: the preferred email (else the order's), the phone, the customer."""
    if channel == "email":
        return prefs.email or order.email
    if channel == "sms":
        return prefs.phone or ""
    return order.customer_id


def _mask(channel: Channel, to: str) -> str:
    """An address as the outcomes show it: enough to recognise, not enough to reuse."""
    if channel == "email" and "@" in to:
        local, domain = to.split("@", 1)
        return f"{local[:1]}***@{domain}"
    if channel == "sms":
        return f"***{to[-4:]}"
    return to
