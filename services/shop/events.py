"""The order's domain events, its state machine, and the pure fold from events to state.

Nothing here talks to the engine: the aggregate (:mod:`services.shop.order`), the projections
(:mod:`services.shop.projections`) and the unit tests all use these functions, so "current state is a
fold over the events" is one piece of code, tested without a server.

The state machine is the seed's saga diagram::

    (new) ──OrderPlaced──▶ placed
    placed ──InventoryReserved──▶ inventory_reserved ──PaymentProcessed──▶ paid
    placed ──InventoryReservationFailed──▶ reservation_failed ──OrderCancelled──▶ cancelled
    inventory_reserved ──PaymentFailed──▶ payment_failed ──InventoryReleased──▶ inventory_released
    paid ──ShipmentCreated──▶ shipped ──OrderCompleted──▶ completed ──OrderDelivered──▶ delivered
    paid ──ShippingFailed──▶ shipping_failed ──PaymentRefunded──▶ refunded ──InventoryReleased──▶ …
    inventory_released ──OrderCancelled──▶ cancelled
    shipped, completed ──TrackingUpdated──▶ (same state)

and the ways out that the deadline, the payment method check and the customer add::

    placed ──PaymentFailed──▶ payment_rejected ──OrderCancelled──▶ cancelled  (method refused, nothing held)
    payment_failed ──PaymentRefunded──▶ refunded          (a charge whose answer came after the deadline)
    reservation_failed ──InventoryReleased──▶ inventory_released    (a hold made after the deadline)
    completed ──CancellationRequested──▶ cancelling ──ShipmentCancelled──▶ shipment_cancelled
    shipment_cancelled ──PaymentRefunded──▶ refunded ──InventoryReleased──▶ … ──OrderCancelled──▶ cancelled
    shipment_cancelled ──InventoryReleased──▶ inventory_released     (refunded in full before the cancel)
    completed, delivered ──PaymentRefunded──▶ (same state: a partial refund)
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from podium import Model


class EventType(enum.StrEnum):
    """Every domain event an order can record."""

    ORDER_PLACED = "OrderPlaced"
    INVENTORY_RESERVED = "InventoryReserved"
    INVENTORY_RESERVATION_FAILED = "InventoryReservationFailed"
    PAYMENT_PROCESSED = "PaymentProcessed"
    PAYMENT_FAILED = "PaymentFailed"
    SHIPMENT_CREATED = "ShipmentCreated"
    SHIPPING_FAILED = "ShippingFailed"
    PAYMENT_REFUNDED = "PaymentRefunded"
    INVENTORY_RELEASED = "InventoryReleased"
    ORDER_COMPLETED = "OrderCompleted"
    ORDER_CANCELLED = "OrderCancelled"
    TRACKING_UPDATED = "TrackingUpdated"
    ORDER_DELIVERED = "OrderDelivered"
    CANCELLATION_REQUESTED = "CancellationRequested"
    SHIPMENT_CANCELLED = "ShipmentCancelled"


class OrderStatus(enum.StrEnum):
    """Where an order is; each status is reached by exactly the events of :data:`TRANSITIONS`."""

    NEW = "new"
    PLACED = "placed"
    INVENTORY_RESERVED = "inventory_reserved"
    RESERVATION_FAILED = "reservation_failed"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    SHIPPED = "shipped"
    SHIPPING_FAILED = "shipping_failed"
    REFUNDED = "refunded"
    INVENTORY_RELEASED = "inventory_released"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DELIVERED = "delivered"
    CANCELLING = "cancelling"
    PAYMENT_REJECTED = "payment_rejected"
    SHIPMENT_CANCELLED = "shipment_cancelled"


S, E = OrderStatus, EventType
TRANSITIONS: dict[tuple[OrderStatus, EventType], OrderStatus] = {
    (S.NEW, E.ORDER_PLACED): S.PLACED,
    (S.PLACED, E.INVENTORY_RESERVED): S.INVENTORY_RESERVED,
    (S.PLACED, E.INVENTORY_RESERVATION_FAILED): S.RESERVATION_FAILED,
    (S.RESERVATION_FAILED, E.ORDER_CANCELLED): S.CANCELLED,
    (S.INVENTORY_RESERVED, E.PAYMENT_PROCESSED): S.PAID,
    (S.INVENTORY_RESERVED, E.PAYMENT_FAILED): S.PAYMENT_FAILED,
    (S.PAYMENT_FAILED, E.INVENTORY_RELEASED): S.INVENTORY_RELEASED,
    (S.PAID, E.SHIPMENT_CREATED): S.SHIPPED,
    (S.PAID, E.SHIPPING_FAILED): S.SHIPPING_FAILED,
    (S.SHIPPING_FAILED, E.PAYMENT_REFUNDED): S.REFUNDED,
    (S.REFUNDED, E.INVENTORY_RELEASED): S.INVENTORY_RELEASED,
    (S.INVENTORY_RELEASED, E.ORDER_CANCELLED): S.CANCELLED,
    (S.SHIPPED, E.ORDER_COMPLETED): S.COMPLETED,
    (S.SHIPPED, E.TRACKING_UPDATED): S.SHIPPED,
    (S.COMPLETED, E.TRACKING_UPDATED): S.COMPLETED,
    (S.COMPLETED, E.ORDER_DELIVERED): S.DELIVERED,
    (S.PLACED, E.PAYMENT_FAILED): S.PAYMENT_REJECTED,
    (S.PAYMENT_REJECTED, E.ORDER_CANCELLED): S.CANCELLED,
    (S.PAYMENT_FAILED, E.PAYMENT_REFUNDED): S.REFUNDED,
    (S.RESERVATION_FAILED, E.INVENTORY_RELEASED): S.INVENTORY_RELEASED,
    (S.COMPLETED, E.CANCELLATION_REQUESTED): S.CANCELLING,
    (S.CANCELLING, E.SHIPMENT_CANCELLED): S.SHIPMENT_CANCELLED,
    (S.SHIPMENT_CANCELLED, E.PAYMENT_REFUNDED): S.REFUNDED,
    (S.SHIPMENT_CANCELLED, E.INVENTORY_RELEASED): S.INVENTORY_RELEASED,
    (S.COMPLETED, E.PAYMENT_REFUNDED): S.COMPLETED,
    (S.DELIVERED, E.PAYMENT_REFUNDED): S.DELIVERED,
}
"""The only legal moves: (status, event) → next status. Anything else is an illegal transition."""

FINISHED = frozenset({S.COMPLETED, S.CANCELLED, S.DELIVERED})
"""Statuses in which the saga is over (tracking may still move a completed order on)."""

PROGRESS: dict[OrderStatus, tuple[float, str | None]] = {
    S.NEW: (0.0, None),
    S.PLACED: (0.1, "reserve-inventory"),
    S.INVENTORY_RESERVED: (0.35, "process-payment"),
    S.PAID: (0.6, "create-shipment"),
    S.SHIPPED: (0.85, "complete-order"),
    S.COMPLETED: (1.0, None),
    S.DELIVERED: (1.0, None),
    S.RESERVATION_FAILED: (0.5, "cancel-order"),
    S.PAYMENT_FAILED: (0.5, "release-inventory"),
    S.SHIPPING_FAILED: (0.5, "refund-payment"),
    S.REFUNDED: (0.7, "release-inventory"),
    S.INVENTORY_RELEASED: (0.9, "cancel-order"),
    S.CANCELLED: (1.0, None),
    S.CANCELLING: (0.3, "cancel-shipment"),
    S.PAYMENT_REJECTED: (0.5, "cancel-order"),
    S.SHIPMENT_CANCELLED: (0.5, "refund-payment"),
}
"""Progress and the step running next, per status (what the live status shows)."""

STEP_OF: dict[EventType, str] = {
    E.INVENTORY_RESERVED: "reserve-inventory",
    E.PAYMENT_PROCESSED: "process-payment",
    E.SHIPMENT_CREATED: "create-shipment",
    E.PAYMENT_REFUNDED: "refund-payment",
    E.INVENTORY_RELEASED: "release-inventory",
    E.ORDER_COMPLETED: "complete-order",
    E.ORDER_CANCELLED: "cancel-order",
    E.SHIPMENT_CANCELLED: "cancel-shipment",
}
"""The saga step each event completes."""


class IllegalTransition(ValueError):
    """An event that the order's current state does not allow (the aggregate answers 409)."""


# -- what each event's data must hold -------------------------------------------------------------------


class PlacedData(Model):
    """``OrderPlaced``: the order as placed (the request is kept beside these fields)."""

    customer_id: str = Field(min_length=1)
    email: str
    total: float = Field(gt=0)
    lines: dict[str, int] = Field(min_length=1)
    """Units per SKU."""
    fingerprint: str


class PaidData(Model):
    """``PaymentProcessed``."""

    payment_id: str
    amount: float


class RefundedData(Model):
    """``PaymentRefunded``: what this refund gave back (refunds add up; a partial one is one of several)."""

    amount: float = Field(gt=0)


class ShippedData(Model):
    """``ShipmentCreated``."""

    shipment_id: str
    tracking_number: str
    carrier: str


class TrackedData(Model):
    """``TrackingUpdated``: one carrier scan."""

    status: str = Field(min_length=1)
    location: str = ""


class FailedData(Model):
    """``InventoryReservationFailed``, ``PaymentFailed``, ``ShippingFailed``: why."""

    reason: str | None = None


class CancelRequestedData(Model):
    """``CancellationRequested``: why the customer cancelled."""

    reason: str = ""


EVENT_DATA: dict[EventType, type[Model]] = {
    E.ORDER_PLACED: PlacedData,
    E.PAYMENT_PROCESSED: PaidData,
    E.PAYMENT_REFUNDED: RefundedData,
    E.SHIPMENT_CREATED: ShippedData,
    E.TRACKING_UPDATED: TrackedData,
    E.INVENTORY_RESERVATION_FAILED: FailedData,
    E.PAYMENT_FAILED: FailedData,
    E.SHIPPING_FAILED: FailedData,
    E.CANCELLATION_REQUESTED: CancelRequestedData,
}
"""The data the fold reads from each event type (other types carry data for people only)."""


def check_data(event_type: EventType, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` if it holds what the fold needs for ``event_type``.

    The one rule for event data, applied wherever an event enters: the aggregate's ``Record`` and every
    projection's ``Apply`` and ``Rebuild`` (through :class:`Event`), so an event that cannot be folded is
    refused at the door (400) instead of failing inside a projection, where the engine would retry it.

    Raises:
        ValueError: Naming the missing or wrong fields.
    """
    shape = EVENT_DATA.get(event_type)
    if shape is not None:
        try:
            shape.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ValueError(f"not a valid {event_type.value} event: {problems}") from None
    return data


class Event(Model):
    """One recorded domain event: the only thing the order aggregate stores."""

    order_id: str
    sequence: int = Field(ge=1)
    """1, 2, 3… per order, without gaps: the position in the order's stream."""
    type: EventType
    event_id: str
    """The idempotency key of the command that recorded it: recording it again returns this event."""
    at: str
    """When it was recorded (ISO 8601, UTC, from the engine's journaled clock)."""
    actor: str
    """Who caused it: the verified subject of the client who asked (``Place``, a carrier's scan), or
    ``ShopOrderSaga`` for the saga's steps; ``internal`` for a request through the trusted ingress."""
    correlation_id: str
    """Shared by every event of one order (and by the log lines and audit entries it causes)."""
    data: dict[str, Any] = {}

    @field_validator("data")
    @classmethod
    def _data_fits_the_type(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        event_type = info.data.get("type")  # absent when the type itself was invalid
        return data if event_type is None else check_data(event_type, data)


class TrackingUpdate(Model):
    """One carrier scan of the parcel."""

    status: str
    location: str = ""
    at: str


class OrderState(Model):
    """The order as of its last event: what :func:`fold` computes."""

    order_id: str = ""
    status: OrderStatus = OrderStatus.NEW
    version: int = 0
    """The sequence number of the last event applied."""
    customer_id: str = ""
    email: str = ""
    total: float = 0.0
    lines: dict[str, int] = {}
    """Units per SKU."""
    fingerprint: str = ""
    """Hash of the placing request (a different request for the same order id is refused)."""
    correlation_id: str = ""
    payment_id: str | None = None
    charged: float = 0.0
    refunded: float = 0.0
    shipment_id: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    tracking: list[TrackingUpdate] = []
    reason: str | None = None
    """Why it was cancelled."""
    completed_steps: list[str] = []
    placed_at: str | None = None
    updated_at: str | None = None
    history: list[EventType] = []
    """Event types in order."""
    event_ids: list[str] = []
    """The ``eventId`` of every event, in order (recording one of them again changes nothing)."""


class Published(Model):
    """What a subscriber of the order's events receives: new events of one order, and the order after them.

    The aggregate publishes once per command it handles, with every event that command appended (the
    checkout's whole run, a carrier's scan, a cancellation), in sequence order. ``order`` saves each
    subscriber a read of the aggregate (who to notify, the total, the tracking number).
    """

    events: list[Event] = Field(min_length=1)
    order: OrderState


def next_status(status: OrderStatus, event: EventType) -> OrderStatus:
    """The status after ``event``, or :class:`IllegalTransition` if ``status`` does not allow it."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(f"{event} is not allowed when the order is {status}") from None


def apply(state: OrderState, event: Event) -> OrderState:
    """Return ``state`` moved on by ``event`` (a new object; ``state`` is left as it was).

    Raises:
        IllegalTransition: The event is out of sequence or not allowed in this state.
    """
    if event.sequence != state.version + 1:
        raise IllegalTransition(f"event {event.sequence} does not follow event {state.version}")
    new = state.model_copy(deep=True)
    new.status = next_status(state.status, event.type)
    new.version = event.sequence
    new.updated_at = event.at
    new.history.append(event.type)
    new.event_ids.append(event.event_id)
    if event.type in STEP_OF:
        new.completed_steps.append(STEP_OF[event.type])
    _APPLY_DATA.get(event.type, _ignore)(new, event)
    return new


def fold(events: list[Event], state: OrderState | None = None) -> OrderState:
    """The current state: every event applied in order, from nothing (or from ``state``)."""
    current = state or OrderState()
    for event in events:
        current = apply(current, event)
    return current


def _placed(state: OrderState, event: Event) -> None:
    data = PlacedData.model_validate(event.data)
    state.order_id = event.order_id
    state.customer_id = data.customer_id
    state.email = data.email
    state.total = data.total
    state.lines = dict(data.lines)
    state.fingerprint = data.fingerprint
    state.correlation_id = event.correlation_id
    state.placed_at = event.at


def _paid(state: OrderState, event: Event) -> None:
    data = PaidData.model_validate(event.data)
    state.payment_id = data.payment_id
    state.charged = data.amount


def _refunded(state: OrderState, event: Event) -> None:
    state.refunded = round(state.refunded + RefundedData.model_validate(event.data).amount, 2)


def _shipped(state: OrderState, event: Event) -> None:
    data = ShippedData.model_validate(event.data)
    state.shipment_id = data.shipment_id
    state.tracking_number = data.tracking_number
    state.carrier = data.carrier


def _tracked(state: OrderState, event: Event) -> None:
    data = TrackedData.model_validate(event.data)
    state.tracking.append(TrackingUpdate(status=data.status, location=data.location, at=event.at))


def _failed(state: OrderState, event: Event) -> None:
    state.reason = FailedData.model_validate(event.data).reason or state.reason


def _cancel_requested(state: OrderState, event: Event) -> None:
    reason = CancelRequestedData.model_validate(event.data).reason
    state.reason = f"cancelled by {event.actor}" + (f": {reason}" if reason else "")


def _ignore(state: OrderState, event: Event) -> None:
    """Events whose data the state does not keep."""


_APPLY_DATA = {
    E.ORDER_PLACED: _placed,
    E.PAYMENT_PROCESSED: _paid,
    E.PAYMENT_REFUNDED: _refunded,
    E.SHIPMENT_CREATED: _shipped,
    E.TRACKING_UPDATED: _tracked,
    E.INVENTORY_RESERVATION_FAILED: _failed,
    E.PAYMENT_FAILED: _failed,
    E.SHIPPING_FAILED: _failed,
    E.CANCELLATION_REQUESTED: _cancel_requested,
}


def new_event(
    state: OrderState, event_type: EventType, *, event_id: str, at: float, actor: str, data: dict[str, Any]
) -> Event:
    """The next event of this order (checked against its state), ready to append.

    Raises:
        IllegalTransition: ``state`` does not allow ``event_type``.
    """
    next_status(state.status, event_type)
    return Event(
        order_id=state.order_id,
        sequence=state.version + 1,
        type=event_type,
        event_id=event_id,
        at=iso(at),
        actor=actor,
        correlation_id=state.correlation_id,
        data=data,
    )


def fingerprint(payload: str) -> str:
    """A short stable hash of a request's canonical JSON."""
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def iso(seconds: float) -> str:
    """Seconds since the epoch (from ``ctx.time()``) as ISO 8601 UTC with milliseconds."""
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- projections: deduplicate by (order id, sequence), apply in sequence order --------------------------


class Cursor(Model):
    """How far a projection has applied one order's stream, and what arrived early."""

    version: int = 0
    """The last sequence number applied."""
    pending: dict[int, Event] = {}
    """Events that arrived before their predecessors, by sequence number, waiting for the gap to fill."""
    duplicates: int = 0
    """Deliveries ignored because that sequence number was already applied or waiting."""


def offer(cursor: Cursor, event: Event) -> tuple[Cursor, list[Event]]:
    """Offer one delivered event to a projection's cursor.

    Returns:
        The new cursor, and the events now ready to apply, in sequence order: none for a duplicate or an
        event that arrived early (it waits in ``pending``), several when it fills a gap.
    """
    new = cursor.model_copy(deep=True)
    if event.sequence <= new.version or event.sequence in new.pending:
        new.duplicates += 1
        return new, []
    new.pending[event.sequence] = event
    ready: list[Event] = []
    while new.version + 1 in new.pending:
        ready.append(new.pending.pop(new.version + 1))
        new.version += 1
    return new, ready
