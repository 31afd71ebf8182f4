"""``TicketingSaga``: hold seats, wait (durably) for the customer to pay, charge, issue and email tickets.

``POST /TicketingSaga/{bookingId}/Run`` with the seed's ``TicketRequest``. Steps (each compensation is
registered before its action):

1. hold the seats, all or none                       undo: release them
   (taken seats end the booking at once: ``sold_out`` or ``seats_unavailable``)
2. wait for ``Pay`` at most the hold time (15 minutes, the deployment's ``hold`` setting): an
   awakeable raced against a durable timer; no payment in time ends the booking ``expired``
3. confirm the seats (hold → sale); a hold the seat map already expired ends it ``expired``, unpaid
4. charge the customer through ``PaymentService``    undo: refund
   (a decline ends it ``payment_failed``)
5. issue one ticket per seat                          undo: void them
6. email the tickets (outside the saga: a bounce leaves the booking confirmed, ``ticketsEmailed: false``)

``TicketingSaga`` is a virtual object keyed by booking id, not a Restate workflow, so that a repeated
``Run`` gets the first result back (:class:`podium.RunOnce`) instead of the engine's 409 for a second
run of a workflow. ``Run`` is exclusive; ``Pay`` and ``Get`` are shared and answer while it waits. All
three are public (a customer books, pays and looks); the seat map's and the tickets' changes are private
steps of the saga.

The hold is read from :mod:`services.ticketing.settings` once per booking and journaled, so a booking
keeps the hold it was made under when the deployment restarts with another setting.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import (
    FanOutError,
    RunOnce,
    Saga,
    SagaError,
    TerminalError,
    VirtualObject,
    call,
    fan_out,
    fan_out_fail,
    read_saga_log,
    with_timeout,
)
from services.common.notifications import EmailRequest, send_email
from services.common.payments import ChargeRequest, RefundRequest, charge, get_payment, refund
from services.ticketing import catalogue, settings
from services.ticketing.models import (
    HoldAnswer,
    HolderRequest,
    HoldSeatsRequest,
    IssueRequest,
    PayAnswer,
    PayRequest,
    SeatHold,
    TicketRequest,
    TicketResult,
)
from services.ticketing.seats import confirm, hold, iso, release
from services.ticketing.tickets import issue, void

bookings = VirtualObject("TicketingSaga", system="ticketing")
SAGA = "book-tickets"
AWAKEABLE = "payment-awakeable"


class SeatsRefused(TerminalError):
    """The seat map answered ``sold_out`` or ``seats_unavailable``: nothing was held."""

    def __init__(self, answer: HoldAnswer) -> None:
        super().__init__(answer.reason or answer.outcome, 409)
        self.outcome = answer.outcome


class HoldExpired(TerminalError):
    """The hold ran out before the customer paid (or before the payment reached the seats)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 408)


class PaymentFailed(TerminalError):
    """The charge was declined, or failed for good."""


def _save(ctx: ObjectContext, result: TicketResult) -> None:
    ctx.set("booking", result.model_dump(mode="json", exclude={"saga"}))


def _check(ctx: ObjectContext, req: TicketRequest) -> catalogue.Event:
    """Everything that is the caller's mistake, as a 400 naming the field, before anything is held."""
    if req.booking_id != ctx.key():
        raise TerminalError(
            f"bookingId: {req.booking_id!r} does not match the booking id in the URL ({ctx.key()!r})", 400
        )
    event = catalogue.event(req.event_id)
    catalogue.seats(event, req.seat_ids)
    catalogue.check_amount(event, len(req.seat_ids), req.total_amount)
    return event


@bookings.handler("Run", public="write")
async def run(ctx: ObjectContext, req: TicketRequest) -> TicketResult:
    event = _check(ctx, req)
    once = RunOnce(ctx, req, TicketResult)
    if (previous := await once.previous()) is not None:
        return previous

    booking_id = ctx.key()
    payment_id = f"{booking_id}-payment"
    # Read once and journaled: a replay after the deployment was reconfigured keeps this booking's hold.
    hold_ms = await ctx.run_typed("hold time", _current_hold_ms, RunOptions[int]())
    result = TicketResult(
        booking_id=booking_id,
        event_id=event.id,
        customer_id=req.customer_id,
        seat_ids=req.seat_ids,
        total_amount=float(req.total_amount),
        status="pending",
        payment_id=payment_id,
        created_at=iso(await ctx.time()),
    )
    _save(ctx, result)
    holder = HolderRequest(holder=booking_id)
    seats_request = HoldSeatsRequest(
        holder=booking_id,
        seat_ids=req.seat_ids,
        hold_ms=hold_ms,
        customer_id=req.customer_id,
    )

    async def hold_seats() -> SeatHold:
        answer = await call(ctx, hold, seats_request, key=event.id)
        if answer.hold is None:
            raise SeatsRefused(answer)
        return answer.hold

    async def confirm_seats() -> SeatHold:
        sale = await call(ctx, confirm, holder, key=event.id)
        if sale.status != "sold":
            raise HoldExpired(f"the hold on {', '.join(sale.seat_ids)} {sale.status} before payment")
        return sale

    async def charge_customer(method: str) -> Any:
        description = f"{len(req.seat_ids)} ticket(s) for {event.id}, booking {booking_id}"
        charge_request = ChargeRequest(
            customer_id=req.customer_id, amount=req.total_amount, description=description, method=method
        )
        try:
            return await call(ctx, charge, charge_request, key=payment_id)
        except TerminalError as exc:
            raise PaymentFailed(exc.message, exc.status_code) from exc

    try:
        async with Saga(ctx, SAGA) as saga:
            held = await saga.step(
                "hold-seats",
                hold_seats,
                compensate=lambda: call(ctx, release, holder, key=event.id),
                payload={"eventId": event.id, "holder": booking_id, "seatIds": req.seat_ids},
            )
            result.status, result.hold_expires_at = "held", held.expires_at
            method = await _wait_for_payment(ctx, hold_ms, result)

            result.status = "paying"
            _save(ctx, result)
            await saga.step("confirm-seats", confirm_seats)  # undone by the release above

            payment = await saga.step(
                "charge-payment",
                lambda: charge_customer(method),
                compensate=lambda: call(
                    ctx, refund, RefundRequest(reason=f"booking {booking_id} failed"), key=payment_id
                ),
                payload={"paymentId": payment_id, "amount": float(req.total_amount)},
            )
            result.payment_status = payment.status
            _save(ctx, result)

            ticket_ids = [f"TKT-{ctx.uuid().hex[:16].upper()}" for _ in req.seat_ids]
            await saga.step(
                "issue-tickets",
                lambda: _issue(ctx, req, ticket_ids),
                compensate=lambda: _void(ctx, ticket_ids),
                payload={"ticketIds": ticket_ids},
            )
            result.ticket_ids = ticket_ids
            result.status = "confirmed"
            _save(ctx, result)
    except SagaError as failure:
        await _record_failure(ctx, result, failure)
        _save(ctx, result)
        return once.done(result)

    result.tickets_emailed = await _send_tickets(ctx, req, event, result)
    _save(ctx, result)
    return once.done(result)


def _current_hold_ms() -> int:
    return round(settings.SETTINGS.hold.total_seconds() * 1000)


async def _wait_for_payment(ctx: ObjectContext, hold_ms: int, result: TicketResult) -> str:
    """Wait for ``Pay`` until the hold runs out (a durable timer); the card token it brought."""
    awakeable_id, paid = ctx.awakeable(type_hint=dict)
    ctx.set(AWAKEABLE, awakeable_id)
    _save(ctx, result)
    timed = await with_timeout(ctx, paid, timedelta(milliseconds=hold_ms), cancel=False)
    ctx.clear(AWAKEABLE)
    if timed.timed_out or timed.value is None:
        raise HoldExpired(f"no payment within the {_duration(hold_ms)} hold")
    return PayRequest.model_validate(timed.value).method


def _duration(ms: int) -> str:
    """A hold in words: ``15-minute``, ``2-second``, ``1500 ms``."""
    if ms % 60_000 == 0:
        return f"{ms // 60_000}-minute"
    return f"{ms // 1000}-second" if ms % 1000 == 0 else f"{ms} ms"


async def _issue(ctx: ObjectContext, req: TicketRequest, ticket_ids: list[str]) -> list[Any]:
    return await fan_out_fail(
        [
            call(
                ctx,
                issue,
                IssueRequest(
                    booking_id=req.booking_id,
                    event_id=req.event_id,
                    seat_id=seat,
                    customer_id=req.customer_id,
                ),
                key=ticket_id,
            )
            for ticket_id, seat in zip(ticket_ids, req.seat_ids, strict=True)
        ]
    )


async def _void(ctx: ObjectContext, ticket_ids: list[str]) -> None:
    voided = await fan_out([call(ctx, void, None, key=ticket_id) for ticket_id in ticket_ids])
    if voided.failed:
        raise FanOutError.from_outcomes("voiding tickets failed", voided.outcomes)


async def _record_failure(ctx: ObjectContext, result: TicketResult, failure: SagaError) -> None:
    """Name the ending and the reason; show what the payment now is (declined, refunded)."""
    cause = failure.cause
    result.hold_expires_at = None
    result.ticket_ids = []
    if isinstance(cause, SeatsRefused):
        result.status = cause.outcome
        result.reason = cause.message  # nothing was held: nothing to say about undoing
        result.payment_id = None
        return
    if isinstance(cause, HoldExpired):
        result.status = "expired"
    elif isinstance(cause, PaymentFailed):
        result.status = "payment_failed"
    elif cause.status_code == 409 and "cancel" in cause.message.lower():
        result.status = "cancelled"
    else:
        result.status = "failed"
    result.reason = failure.message
    assert result.payment_id is not None
    try:
        payment = await call(ctx, get_payment, None, key=result.payment_id)
    except TerminalError:  # never charged: nothing to show
        result.payment_id = None
        result.payment_status = None
        return
    result.payment_status = payment.status


async def _send_tickets(
    ctx: ObjectContext, req: TicketRequest, event: catalogue.Event, result: TicketResult
) -> bool:
    lines = "\n".join(
        f"  {ticket_id}  seat {seat}" for ticket_id, seat in zip(result.ticket_ids, req.seat_ids, strict=True)
    )
    body = (
        f"Booking {result.booking_id}: {event.show.title} at {event.venue.name} ({event.id}).\n"
        f"Your tickets:\n{lines}\n"
        f"Charged {req.total_amount:.2f}."
    )
    try:
        sent = await call(
            ctx,
            send_email,
            EmailRequest(
                message_id=f"{result.booking_id}-tickets",
                to=req.email,
                subject=f"Your tickets for {event.show.title} ({result.booking_id})",
                body=body,
            ),
        )
    except TerminalError:
        return False
    return sent.status == "delivered"


@bookings.handler("Pay", kind="shared", public="write")
async def pay(ctx: ObjectSharedContext, req: PayRequest) -> PayAnswer:
    """The customer pays: hand the card token to the waiting ``Run``."""
    stored = await ctx.get("booking", type_hint=dict)
    if stored is None:
        raise TerminalError(f"no booking {ctx.key()}", 404)
    booking = TicketResult.model_validate(stored)
    awakeable_id = await ctx.get(AWAKEABLE, type_hint=str)
    if booking.status != "held" or awakeable_id is None:
        raise TerminalError(f"booking {ctx.key()} is not waiting for payment (status: {booking.status})", 409)
    ctx.resolve_awakeable(awakeable_id, req.model_dump(mode="json"))
    return PayAnswer(booking_id=ctx.key(), status="payment_received", hold_expires_at=booking.hold_expires_at)


@bookings.handler("Get", kind="shared", public="read")
async def get_booking(ctx: ObjectSharedContext) -> TicketResult:
    stored = await ctx.get("booking", type_hint=dict)
    if stored is None:
        raise TerminalError(f"no booking {ctx.key()}", 404)
    result = TicketResult.model_validate(stored)
    result.saga = await read_saga_log(ctx, SAGA)
    return result
