"""``ShopShipping``: one shipment per order (virtual object keyed by order id), labels from the carriers.

**Carriers and rules.** Labels and tracking numbers come from the (simulated) carriers of
:class:`services.common.providers.CarrierProvider`, never from this module: ``podium-post`` ships within
North America (US, CA, MX), ``podium-global`` everywhere, the US included. :func:`carriers_for` orders
them for an address:

- ``US``: ``podium-post``, then ``podium-global`` (domestic: the domestic carrier first);
- ``CA``, ``MX``: ``podium-global``, then ``podium-post`` (abroad: the international carrier first,
  which clears customs);
- anywhere else: ``podium-global`` alone (``podium-post`` does not ship there).

A shipment is :func:`parcels_for` its units (one parcel per :data:`UNITS_PER_PARCEL` units).

**Fallback.** ``CreateShipment`` asks each carrier in order, each in a ``ctx.run`` of its own whose
journaled outcome (:class:`CarrierAttempt`) decides what comes next: ``accepted`` (the carrier made the
label: done), ``refused`` (the carrier answered no, below 500), ``down`` (503, or its circuit is open and
it was not asked) or ``no_answer`` (no answer within ``call_timeout``; it may have made the label). Any
but ``accepted`` moves on to the next carrier at once. When none accepts, the shipment fails and nothing
is stored: every carrier refused → 409 (:class:`ShipmentRefused`); any was down or silent → 503
(:class:`CarriersUnavailable`: the next order asks again). Either message names each carrier's answer,
which the checkout records as the reason of ``ShippingFailed``. The shipment keeps every attempt
(``attempts``).

Each carrier call carries the idempotency key :func:`label_key` (``shop:{orderId}:label:{carrier}``): a
run cut off by a crash asks again with the same key, and the carrier answers the same label. A carrier
that did not answer may have made a label all the same: ``VoidStray`` (one-way, after ``breaker_reset``)
voids that key at the carrier, retrying while the carrier stays away (:data:`STRAY_ATTEMPTS` times), so
no label is left behind at a carrier the order did not use; a voided key is refused for good, so a late
label with it cannot appear either.

**Circuit breakers.** Every carrier call goes through the shared breakers of
:mod:`services.common.circuits` (:data:`CIRCUITS`, one per carrier and process, numbers from
:class:`ShippingSettings`, ``PODIUM_SHIPPING_<NAME>``): ``breaker_failures`` failures (503 or no answer)
in a row open a carrier's circuit, and while it is open the carrier is skipped, counted as ``down``,
without being called, until ``breaker_reset`` has passed. A refusal is the carrier's answer, not a
failure.

**After the label.** ``Cancel`` (private, the order's cancellation) voids the label at the carrier once
and marks the shipment ``cancelled``; a repeat answers the same. It is refused (409) once the carrier
has scanned the parcel (an ``UpdateTracking`` recorded, or the carrier refusing the void because it has
picked the parcel up) or delivered it; a carrier that is down answers 503, and the cancellation can be
asked again. After a cancel, ``UpdateTracking`` and ``ConfirmDelivery`` answer 409.

The carrier's side reports through ``UpdateTracking`` (a scan: status and location) and
``ConfirmDelivery``; each appends an event to the order (``TrackingUpdated``, ``OrderDelivered``)
through ``ShopOrder/Record``, idempotent by the update id, so a carrier that retries a webhook records it
once. The shipment is the gate (a scan after a cancel is 409, a cancel after a scan is 409) and the order
is told with a one-way message, never a call: ``ShopOrder/Cancel`` calls this object, so a call back from
here to the order would let a scan and a cancel arriving together wait for each other for ever.
Those two are the carrier's webhooks, so they are public (``write``) and record the carrier's
verified subject (:func:`podium.caller`) as the event's actor. ``CreateShipment`` (a saga step),
``Cancel``, ``Withdraw`` (the checkout's undo of ``CreateShipment``: voids a label made after its
deadline cut the step off), ``VoidStray`` and ``Get`` (the label, the attempts and the scans; a client
sees the tracking on the order's read model) are private.

**Test data** (:mod:`services.common.providers`, also in ``services/common/README.md``):

- ``country`` ``AQ`` or ``KP`` (``UNSERVED_COUNTRIES``), or ``zip`` ``00000`` (``INVALID_ZIP``): every
  carrier refuses, 409;
- a US ``zip`` starting ``99`` (``REMOTE_ZIP_PREFIX``, a remote area): ``podium-post`` refuses,
  ``podium-global`` makes the label;
- any address while a carrier is taken down or hangs (``CarrierProvider().take_down("podium-post")``,
  ``.hang(…)``, ``.restore(…)``): the next carrier makes the label.
"""

from __future__ import annotations

import enum
import logging
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import Deadline, Model, TerminalError, VirtualObject, caller, send
from services.common.circuits import BreakerSettings, CircuitOpen, ProviderCircuits, guarded
from services.common.providers import CARRIERS, CarrierProvider, ProviderError, ProviderTimeout
from services.shop import settings
from services.shop.events import EventType
from services.shop.models import Address, RecordEvent
from services.shop.order import record

_log = logging.getLogger(__name__)


class ShippingSettings(BaseSettings):
    """How the shop calls the carriers; ``PODIUM_SHIPPING_<NAME>`` overrides each."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_SHIPPING_", frozen=True)

    call_timeout: Deadline = timedelta(seconds=5)
    """How long one call waits for a carrier's answer; past it the carrier counts as down."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures (503 or no answer) of one carrier in a row that open its circuit."""
    breaker_reset: Deadline = timedelta(seconds=10)
    """How long an open circuit skips its carrier before it lets one call through (half-open); also
    how long a label a carrier may have made without answering waits before it is voided."""


SETTINGS = ShippingSettings()
"""What the deployment runs with, read from the environment when it starts."""

CIRCUITS = ProviderCircuits(BreakerSettings(SETTINGS.breaker_failures, SETTINGS.breaker_reset))
"""The process's breakers, one per carrier, shared by every shipment this process handles."""

DOMESTIC = "US"
NEIGHBOURS = frozenset({"CA", "MX"})
"""Abroad, but within reach of ``podium-post``: the global carrier first, then the domestic one."""
UNITS_PER_PARCEL = 10
STRAY_ATTEMPTS = 10
"""How many times ``VoidStray`` tries to void a label a carrier may have made without answering."""

shipping = VirtualObject(
    "ShopShipping", system="shop", journal_retention=settings.SETTINGS.participant_retention
)


def _carriers() -> CarrierProvider:
    return CarrierProvider(timeout=SETTINGS.call_timeout)


def carriers_for(address: Address) -> tuple[str, ...]:
    """The carriers to ask for ``address``, in order (the module's table)."""
    if address.country == DOMESTIC:
        return ("podium-post", "podium-global")
    if address.country in NEIGHBOURS:
        return ("podium-global", "podium-post")
    return ("podium-global",)


def parcels_for(lines: dict[str, int]) -> int:
    """How many parcels the units of ``lines`` fill (at least one)."""
    return max(1, -(-sum(lines.values()) // UNITS_PER_PARCEL))


def label_key(order_id: str, carrier: str) -> str:
    """The idempotency key of the order's label at ``carrier``."""
    return f"shop:{order_id}:label:{carrier}"


# -- the wire -------------------------------------------------------------------------------------------


class ShipmentRequest(Model):
    """``ShopShipping/{orderId}/CreateShipment``."""

    customer_id: str = Field(min_length=1)
    address: Address
    lines: dict[str, Annotated[int, Field(gt=0)]] = Field(min_length=1)
    """Units per SKU."""


class CancelShipment(Model):
    """``ShopShipping/{orderId}/Cancel``."""

    reason: str = Field(default="", max_length=500)


class TrackingRequest(Model):
    """``ShopShipping/{orderId}/UpdateTracking``: one carrier scan."""

    update_id: str = Field(min_length=1, max_length=100)
    """The carrier's id for the scan: the same id again is recorded once."""
    status: str = Field(min_length=1, max_length=50)
    location: str = ""


class DeliveryRequest(Model):
    """``ShopShipping/{orderId}/ConfirmDelivery``."""

    signed_by: str = ""


class StrayLabel(Model):
    """``ShopShipping/{orderId}/VoidStray``: a label a carrier may have made without answering."""

    carrier: str
    label_key: str
    attempt: int = Field(default=1, ge=1)


class CarrierOutcome(enum.StrEnum):
    """What one carrier said to a label request."""

    ACCEPTED = "accepted"
    """It made the label."""
    REFUSED = "refused"
    """It answered no (below 500): it does not deliver there."""
    DOWN = "down"
    """It answered 503, or its circuit is open and it was not asked."""
    NO_ANSWER = "no_answer"
    """No answer within ``call_timeout``: it may have made the label (``VoidStray`` voids it)."""


class CarrierAttempt(Model):
    """One carrier asked for the label, and its answer."""

    carrier: str
    outcome: CarrierOutcome
    detail: str
    """The carrier's answer in words: ``refused (422: zip 00000 does not exist)``, ``made label lbl_…``."""
    label_key: str
    """The idempotency key the carrier was asked with."""


class Label(Model):
    """A label as the carrier made it."""

    carrier: str
    label_id: str
    tracking_number: str
    label_url: str
    status: str


class LabelAttempt(Model):
    """The journaled result of asking one carrier: the attempt, and the label if it made one."""

    attempt: CarrierAttempt
    label: Label | None = None


class Shipment(Model):
    """A shipment and what the carrier said about it."""

    shipment_id: str
    order_id: str
    carrier: str
    """The carrier that made the label."""
    tracking_number: str
    """The carrier's tracking number (``PP…`` for podium-post, ``PG…`` for podium-global)."""
    label_url: str
    status: str
    """``label_created``, then the carrier's scans (``in_transit``…), then ``delivered``; or
    ``cancelled``."""
    scans: list[str] = []
    """Update ids of the carrier scans recorded, in order."""
    delivered: bool = False
    """Whether ``ConfirmDelivery`` recorded the delivery (a carrier scan saying "delivered" does not)."""
    label_id: str = ""
    """The carrier's id of the label."""
    label_key: str = ""
    """The idempotency key the label was made with (and is voided with)."""
    parcels: int = 1
    attempts: list[CarrierAttempt] = []
    """Every carrier asked, in order, and its answer; the last one made the label."""
    cancelled: bool = False
    """Whether ``Cancel`` voided the label."""
    cancel_reason: str = ""


# -- errors ----------------------------------------------------------------------------------------------


class NoShipment(TerminalError):
    """404: the order has no shipment."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no shipment for order {order_id}", status_code=404)


class ShipmentConflict(TerminalError):
    """409: the shipment's state does not allow it (cancelled, scanned, delivered)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=409)


def _answers(attempts: list[CarrierAttempt]) -> str:
    return "; ".join(f"{a.carrier} {a.detail}" for a in attempts)


class ShipmentRefused(TerminalError):
    """409: every carrier for the address refused it; the message names each one's answer."""

    def __init__(self, address: Address, attempts: list[CarrierAttempt]) -> None:
        where = f"{address.country} {address.zip}"
        super().__init__(f"no carrier takes the shipment to {where}: {_answers(attempts)}", status_code=409)
        self.attempts = attempts


class CarriersUnavailable(TerminalError):
    """503: no carrier made the label, and at least one of them was down or did not answer."""

    def __init__(self, address: Address, attempts: list[CarrierAttempt]) -> None:
        where = f"{address.country} {address.zip}"
        super().__init__(f"no carrier can take the shipment to {where} now: {_answers(attempts)}", 503)
        self.attempts = attempts


# -- the carrier calls (``ctx.run`` actions: synchronous, on a worker thread) ----------------------------


def ask_carrier(
    carriers: CarrierProvider,
    circuits: ProviderCircuits,
    carrier: str,
    key: str,
    address: dict[str, Any],
    parcels: int,
) -> LabelAttempt:
    """Ask ``carrier`` for the label through its breaker; every answer is an outcome, none an error.

    Only an unexpected failure (the simulation's own database) raises, and the run retries it.
    """

    def attempt(outcome: CarrierOutcome, detail: str) -> LabelAttempt:
        return LabelAttempt(
            attempt=CarrierAttempt(carrier=carrier, outcome=outcome, detail=detail, label_key=key)
        )

    try:
        answer = circuits.call(
            carrier, lambda: carriers.create_label(key, carrier=carrier, address=address, parcels=parcels)
        )
    except CircuitOpen as exc:
        wait = exc.retry_after.total_seconds()
        return attempt(CarrierOutcome.DOWN, f"is down (circuit open: not called, next try in {wait:.1f} s)")
    except ProviderTimeout as exc:
        return attempt(CarrierOutcome.NO_ANSWER, f"did not answer within {exc.timeout:g} s")
    except ProviderError as exc:
        if exc.code < 500:
            return attempt(CarrierOutcome.REFUSED, f"refused ({exc.code}: {exc.message})")
        return attempt(CarrierOutcome.DOWN, f"is down ({exc.code}: {exc.message})")
    label = Label.model_validate(answer)
    done = attempt(CarrierOutcome.ACCEPTED, f"made label {label.label_id}")
    return done.model_copy(update={"label": label})


def void_label(
    carriers: CarrierProvider, circuits: ProviderCircuits, carrier: str, key: str
) -> dict[str, Any]:
    """Void the label made with ``key`` at ``carrier`` through its breaker (:func:`guarded`'s errors)."""
    return guarded(carrier, lambda: carriers.void_label(key, carrier=carrier), circuits)


_ASK = RunOptions[LabelAttempt](
    type_hint=LabelAttempt, max_attempts=5, initial_retry_interval=timedelta(milliseconds=100)
)
_VOID = RunOptions[dict[str, Any]](max_attempts=5, initial_retry_interval=timedelta(milliseconds=200))
_VOID_ONCE = RunOptions[dict[str, Any]](max_attempts=1)


# -- handlers --------------------------------------------------------------------------------------------


async def _load(ctx: ObjectContext | ObjectSharedContext) -> Shipment | None:
    return await ctx.get("shipment", type_hint=Shipment)


async def _require(ctx: ObjectContext | ObjectSharedContext) -> Shipment:
    shipment = await _load(ctx)
    if shipment is None:
        raise NoShipment(ctx.key())
    return shipment


@shipping.handler("CreateShipment")
async def create_shipment(ctx: ObjectContext, req: ShipmentRequest) -> Shipment:
    """Get the label from the first carrier that makes it, once per order; a repeat returns the first.

    Raises:
        ShipmentRefused: Every carrier refused the address (409).
        CarriersUnavailable: None made the label and one at least was down or silent (503).
    """
    existing = await _load(ctx)
    if existing is not None:
        return existing
    order_id = ctx.key()
    address = req.address.model_dump(mode="json")
    parcels = parcels_for(req.lines)
    attempts: list[CarrierAttempt] = []
    label: Label | None = None
    for carrier in carriers_for(req.address):
        key = label_key(order_id, carrier)
        asked = await ctx.run_typed(
            f"label from {carrier}", ask_carrier, _ASK, _carriers(), CIRCUITS, carrier, key, address, parcels
        )
        attempts.append(asked.attempt)
        if asked.label is not None:
            label = asked.label
            break
    for silent in (a for a in attempts if a.outcome == CarrierOutcome.NO_ANSWER):
        stray = StrayLabel(carrier=silent.carrier, label_key=silent.label_key)
        send(ctx, void_stray, stray, key=order_id, delay=SETTINGS.breaker_reset)
    if label is None:
        if all(a.outcome == CarrierOutcome.REFUSED for a in attempts):
            raise ShipmentRefused(req.address, attempts)
        raise CarriersUnavailable(req.address, attempts)
    shipment = Shipment(
        shipment_id=f"{order_id}-shipment",
        order_id=order_id,
        carrier=label.carrier,
        tracking_number=label.tracking_number,
        label_url=label.label_url,
        status="label_created",
        label_id=label.label_id,
        label_key=attempts[-1].label_key,
        parcels=parcels,
        attempts=attempts,
    )
    ctx.set("shipment", shipment)
    return shipment


@shipping.handler("Cancel")
async def cancel_shipment(ctx: ObjectContext, req: CancelShipment) -> Shipment:
    """Void the label at the carrier (once) and mark the shipment ``cancelled``; a repeat answers the same.

    Raises:
        NoShipment: The order has no shipment (404).
        ShipmentConflict: The carrier has scanned or delivered the parcel (409); the carrier's own 409
            when it has picked the parcel up.
    """
    return await _cancel(ctx, await _require(ctx), req.reason)


async def _cancel(ctx: ObjectContext, shipment: Shipment, reason: str) -> Shipment:
    if shipment.cancelled:
        return shipment
    if shipment.delivered:
        raise ShipmentConflict(f"the shipment of order {ctx.key()} was delivered: it cannot be cancelled")
    if shipment.scans:
        raise ShipmentConflict(
            f"the shipment of order {ctx.key()} cannot be cancelled: the carrier has scanned the parcel"
            f" ({shipment.status})"
        )
    await ctx.run_typed(
        f"void label at {shipment.carrier}",
        void_label,
        _VOID,
        _carriers(),
        CIRCUITS,
        shipment.carrier,
        shipment.label_key,
    )
    shipment.status = "cancelled"
    shipment.cancelled = True
    shipment.cancel_reason = reason
    ctx.set("shipment", shipment)
    return shipment


class Withdrawn(Model):
    """What ``Withdraw`` did."""

    voided: list[str] = []
    """The label keys whose labels it voided (a key without a label is voided too, so that no label can
    appear with it later, but is not listed)."""


@shipping.handler("Withdraw")
async def withdraw(ctx: ObjectContext, req: CancelShipment) -> Withdrawn:
    """The checkout gave up on its shipment: void any label made for the order, even after it stopped waiting.

    The checkout's undo of ``CreateShipment``, when its deadline cut the step off (the engine cancels a
    call still running at the deadline) or the step failed. A cancelled ``CreateShipment`` may have got
    a label from a carrier without recording it, and a carrier call it had under way still runs. So the
    order's label key is voided at every carrier, whether a label exists or not: a label made is voided
    (once), and a key voided before its label is refused for good by the carrier, so no label can appear
    later either. A shipment that was recorded is cancelled as ``Cancel`` does.
    """
    shipment = await _load(ctx)
    if shipment is not None:
        await _cancel(ctx, shipment, req.reason)
        return Withdrawn(voided=[shipment.label_key])
    voided = []
    for carrier in CARRIERS:
        key = label_key(ctx.key(), carrier)
        answer = await ctx.run_typed(
            f"void label at {carrier}", void_label, _VOID, _carriers(), CIRCUITS, carrier, key
        )
        if answer.get("labelId"):
            voided.append(key)
    return Withdrawn(voided=voided)


@shipping.handler("VoidStray")
async def void_stray(ctx: ObjectContext, req: StrayLabel) -> None:
    """Void a label a carrier may have made without answering; again later while the carrier stays away."""
    shipment = await _load(ctx)
    if shipment is not None and shipment.label_key == req.label_key:
        return  # a later CreateShipment got this very label: it is the shipment's now
    try:
        await ctx.run_typed(
            f"void stray label at {req.carrier}",
            void_label,
            _VOID_ONCE,
            _carriers(),
            CIRCUITS,
            req.carrier,
            req.label_key,
        )
    except TerminalError as exc:
        if exc.status_code < 500:
            raise  # the carrier's final word (it never refuses to void a label nobody scanned)
        if req.attempt >= STRAY_ATTEMPTS:
            _log.error("label %s at %s may be left unvoided: %s", req.label_key, req.carrier, exc.message)
            raise
        # Again later, from a new invocation: this one ends, and the object is free meanwhile.
        later = req.model_copy(update={"attempt": req.attempt + 1})
        send(ctx, void_stray, later, key=ctx.key(), delay=SETTINGS.breaker_reset)


@shipping.handler("UpdateTracking", public="write")
async def update_tracking(ctx: ObjectContext, req: TrackingRequest) -> Shipment:
    """Record a carrier scan on the shipment and as ``TrackingUpdated`` on the order."""
    shipment = await _require(ctx)
    if req.update_id in shipment.scans:
        return shipment
    if shipment.cancelled:
        raise ShipmentConflict(f"the shipment of order {ctx.key()} was cancelled")
    if shipment.delivered:
        raise ShipmentConflict(f"the shipment of order {ctx.key()} was already delivered")
    send(
        ctx,
        record,
        RecordEvent(
            type=EventType.TRACKING_UPDATED,
            event_id=f"tracking-{req.update_id}",
            actor=caller(ctx),
            data={"status": req.status, "location": req.location, "trackingNumber": shipment.tracking_number},
        ),
        key=ctx.key(),
    )
    shipment.status = req.status
    shipment.scans.append(req.update_id)
    ctx.set("shipment", shipment)
    return shipment


@shipping.handler("ConfirmDelivery", public="write")
async def confirm_delivery(ctx: ObjectContext, req: DeliveryRequest) -> Shipment:
    """Record the delivery on the shipment and as ``OrderDelivered`` on the order (once)."""
    shipment = await _require(ctx)
    if shipment.delivered:
        return shipment
    if shipment.cancelled:
        raise ShipmentConflict(f"the shipment of order {ctx.key()} was cancelled")
    send(
        ctx,
        record,
        RecordEvent(
            type=EventType.ORDER_DELIVERED,
            event_id="delivered",
            actor=caller(ctx),
            data={"signedBy": req.signed_by, "trackingNumber": shipment.tracking_number},
        ),
        key=ctx.key(),
    )
    shipment.status = "delivered"
    shipment.delivered = True
    ctx.set("shipment", shipment)
    return shipment


@shipping.handler("Get", kind="shared")
async def get_shipment(ctx: ObjectSharedContext) -> Shipment:
    """The order's shipment."""
    return await _require(ctx)
