"""What can be booked: shows, venues with named seats, prices, and the test data that makes things fail.

An event id is ``{show}-{performance}``: the show must be in :data:`SHOWS`; the performance is any label
of letters, digits and dashes (a date such as ``2025-07-12``, or ``matinee``). Every performance has a
seat map of its own, with every seat of its venue free until someone holds it.

| show | title | venue (seats) | price per seat |
|---|---|---|---|
| ``rock`` | Podium Rocks | Podium Arena: rows A–J × seats 1–20 (200) | 75.00 |
| ``opera`` | La Traviata | Podium Arena: rows A–J × seats 1–20 (200) | 120.00 |
| ``jazz`` | Late Night Jazz | Podium Club: rows A–B × seats 1–5 (10) | 45.00 |
| ``soldout`` | The Farewell Tour | Podium Arena (200, every one sold before the sale opens) | 95.00 |

Seat ids are the row letter then the seat number: ``A1`` … ``J20``.

| test data | what happens |
|---|---|
| a ``soldout-…`` event | every seat is already sold: ``sold_out`` |
| ``customerId`` starting ``declined-`` | the card is declined: ``payment_failed``, the seats are released |
| ``method: card-expired`` in ``Pay`` | the card is declined the same way |
| ``customerId`` starting ``slow-`` | the gateway answers each charge 3 s late (for crash tests) |
| an email at ``bounce.example.com`` | the tickets email bounces; the booking stays confirmed |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

from podium import InvalidInput
from services.common.money import cents

MAX_SEATS = 10
"""Seats per booking."""


@dataclass(frozen=True)
class Venue:
    name: str
    rows: str
    """Row letters, front to back."""
    seats_per_row: int

    @cached_property
    def seats(self) -> tuple[str, ...]:
        """Every seat id, row by row (``A1``, ``A2``, …)."""
        return tuple(f"{row}{n}" for row in self.rows for n in range(1, self.seats_per_row + 1))

    @cached_property
    def seat_set(self) -> frozenset[str]:
        return frozenset(self.seats)

    @property
    def layout(self) -> str:
        """The layout in words, for error messages."""
        return f"rows {self.rows[0]}–{self.rows[-1]}, seats 1–{self.seats_per_row}"

    def order(self, seat: str) -> int:
        """Position of ``seat`` in the venue, to sort seats as people read them (A2 before A10)."""
        return self.seats.index(seat)


ARENA = Venue("Podium Arena", "ABCDEFGHIJ", 20)
CLUB = Venue("Podium Club", "AB", 5)


@dataclass(frozen=True)
class Show:
    code: str
    title: str
    venue: Venue
    price: float
    """Price of one seat."""
    presold: bool = False
    """Every seat is sold before the sale opens (test data for ``sold_out``)."""


SHOWS: dict[str, Show] = {
    show.code: show
    for show in (
        Show("rock", "Podium Rocks", ARENA, 75.0),
        Show("opera", "La Traviata", ARENA, 120.0),
        Show("jazz", "Late Night Jazz", CLUB, 45.0),
        Show("soldout", "The Farewell Tour", ARENA, 95.0, presold=True),
    )
}

_PERFORMANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


@dataclass(frozen=True)
class Event:
    id: str
    show: Show
    performance: str

    @property
    def venue(self) -> Venue:
        return self.show.venue

    def presold_seats(self) -> frozenset[str]:
        """Seats sold before the sale opened."""
        return self.venue.seat_set if self.show.presold else frozenset()


def event(event_id: str, field: str = "eventId") -> Event:
    """The event ``{show}-{performance}``; 400 naming ``field`` if it is not in the catalogue."""
    show_code, _, performance = event_id.partition("-")
    shows = ", ".join(sorted(SHOWS))
    if show_code not in SHOWS:
        raise InvalidInput(
            f"{field}: unknown event {event_id!r}: an event id is {{show}}-{{performance}} "
            f"with a show among {shows} (e.g. rock-2025-07-12)"
        )
    if not _PERFORMANCE.match(performance):
        raise InvalidInput(
            f"{field}: unknown event {event_id!r}: the performance after {show_code}- must be letters, "
            "digits and dashes (e.g. rock-2025-07-12)"
        )
    return Event(event_id, SHOWS[show_code], performance)


def seats(ev: Event, seat_ids: list[str], field: str = "seatIds") -> list[str]:
    """Check seat ids against the event's venue; 400 naming ``field`` and the unknown seats."""
    unknown = [s for s in seat_ids if s not in ev.venue.seat_set]
    if unknown:
        listed = ", ".join(repr(s) for s in unknown)
        raise InvalidInput(
            f"{field}: no seat {listed} at {ev.venue.name} for {ev.id} ({ev.venue.layout}; e.g. A1)"
        )
    return seat_ids


def price(ev: Event, seat_count: int) -> float:
    """What ``seat_count`` seats of ``ev`` cost."""
    return round(ev.show.price * seat_count, 2)


def check_amount(
    ev: Event, seat_count: int, total_amount: Decimal | float, field: str = "totalAmount"
) -> float:
    """The price of the seats; 400 if the caller's ``total_amount`` is not that price."""
    expected = price(ev, seat_count)
    if cents(total_amount) != cents(expected):
        raise InvalidInput(
            f"{field}: {total_amount:.2f} is not the price of {seat_count} seat(s) of {ev.show.title} "
            f"({seat_count} × {ev.show.price:.2f} = {expected:.2f})"
        )
    return expected
