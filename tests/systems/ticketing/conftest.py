from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podium import IngressClient
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import PaymentGateway
from services.ticketing import catalogue, settings
from services.ticketing.settings import TicketingSettings

FINAL = {"confirmed", "sold_out", "seats_unavailable", "payment_failed", "expired", "cancelled", "failed"}


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the podium plugin has put the
    # engine's request-identity key in the environment, and the app reads it when it is built.
    from tests.systems.ticketing.apps import app

    return app


def short_hold(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Configure the in-process deployment with a hold of ``seconds`` (bookings started from now on)."""
    monkeypatch.setattr(settings, "SETTINGS", TicketingSettings(hold=timedelta(seconds=seconds)))


def new_event(show: str = "rock") -> str:
    """A performance of ``show`` nobody else uses: its seat map is all free."""
    return f"{show}-{new_key('perf')}"


def ticket_request(
    booking_id: str, event_id: str, seats: list[str], customer_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The seed's TicketRequest, priced from the catalogue, for a fresh customer unless given."""
    ev = catalogue.event(event_id)
    body: dict[str, Any] = {
        "bookingId": booking_id,
        "eventId": event_id,
        "seatIds": seats,
        "customerId": customer_id or new_key("customer"),
        "totalAmount": catalogue.price(ev, len(seats)),
    }
    body.update(extra)
    return body


def booking(env: PodiumEnv, booking_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/TicketingSaga/{booking_id}/Get")
    return answer


def wait_for(env: PodiumEnv, booking_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    """Poll ``Get`` until the booking is in one of ``statuses``."""

    def reached() -> dict[str, Any]:
        response = env.post(f"/TicketingSaga/{booking_id}/Get")
        if response.status_code == 404:
            return {}
        answer: dict[str, Any] = response.json()
        return answer if answer["status"] in statuses else {}

    return assert_eventually(reached, timeout=timeout, message=f"booking {booking_id} in {sorted(statuses)}")


def start(env: PodiumEnv, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Submit ``Run`` and wait until the seats are held (or the booking ended); the invocation id too."""
    invocation = env.send(f"/TicketingSaga/{body['bookingId']}/Run", body)
    return invocation, wait_for(env, body["bookingId"], {"held", *FINAL})


def pay(env: PodiumEnv, booking_id: str, method: str = "card-visa") -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/TicketingSaga/{booking_id}/Pay", {"method": method})
    return answer


def outcome(env: PodiumEnv, invocation: str) -> dict[str, Any]:
    """What ``Run`` answered (waits for it)."""
    with IngressClient(env.ingress_url, timeout=60) as client:
        answer: dict[str, Any] = client.attach(invocation)
    return answer


def book(env: PodiumEnv, body: dict[str, Any], method: str = "card-visa") -> dict[str, Any]:
    """Run, pay once the seats are held, and return Run's answer."""
    invocation, held = start(env, body)
    assert held["status"] == "held", held
    pay(env, body["bookingId"], method)
    return outcome(env, invocation)


def seat_map(env: PodiumEnv, event_id: str) -> dict[str, Any]:
    """The whole seat map, holders included (``Get`` is private: clients see ``Availability``)."""
    answer: dict[str, Any] = env.call_private(f"/SeatMap/{event_id}/Get")
    return answer


def active_seats(env: PodiumEnv, event_id: str, holder: str) -> list[str]:
    """Seats ``holder`` holds or bought on ``event_id``."""
    holds = [h for h in seat_map(env, event_id)["holds"] if h["holder"] == holder]
    return [s for h in holds if h["status"] in ("held", "sold") for s in h["seatIds"]]


def money_effects(payment_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Charges and refunds the gateway made for one payment id."""
    gateway = PaymentGateway()
    charged = [e for e in gateway.effects(kind="charge") if e["key"] == payment_id]
    charge_ids = {e["subject"] for e in charged}
    refunded = [e for e in gateway.effects(kind="refund") if e["subject"] in charge_ids]
    return charged, refunded
