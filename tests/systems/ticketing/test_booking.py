"""The ticketing system (seed 003, exercise 3) against a real engine: success, every ending, idempotency."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import MailProvider, PaymentGateway
from tests.systems.ticketing.conftest import (
    active_seats,
    book,
    booking,
    money_effects,
    new_event,
    outcome,
    pay,
    seat_map,
    short_hold,
    start,
    ticket_request,
    wait_for,
)

pytestmark = pytest.mark.engine


def test_success_holds_pays_issues_and_emails_once(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["A1", "A2"])
    invocation, held = start(podium_env, body)

    assert held["status"] == "held"
    assert held["holdExpiresAt"].endswith("Z")
    assert held["ticketIds"] == []
    assert active_seats(podium_env, event_id, booking_id) == ["A1", "A2"]
    assert seat_map(podium_env, event_id)["held"] == ["A1", "A2"]
    assert money_effects(f"{booking_id}-payment") == ([], [])  # nothing is charged before Pay

    answer = pay(podium_env, booking_id, "card-mastercard")
    assert answer == {
        "bookingId": booking_id,
        "status": "payment_received",
        "holdExpiresAt": held["holdExpiresAt"],
    }
    result = outcome(podium_env, invocation)

    assert result["status"] == "confirmed", result
    assert result["bookingId"] == booking_id
    assert result["eventId"] == event_id
    assert result["seatIds"] == ["A1", "A2"]
    assert result["totalAmount"] == 150.0
    assert result["paymentId"] == f"{booking_id}-payment"
    assert result["paymentStatus"] == "charged"
    assert result["ticketsEmailed"] is True
    assert result["reason"] is None
    tickets = result["ticketIds"]
    assert len(tickets) == len(set(tickets)) == 2
    assert all(t.startswith("TKT-") and len(t) == 20 for t in tickets)
    for ticket_id, seat in zip(tickets, ["A1", "A2"], strict=True):
        ticket = podium_env.call(f"/TicketService/{ticket_id}/Get")
        assert ticket["status"] == "valid"
        assert (ticket["bookingId"], ticket["eventId"], ticket["seatId"]) == (booking_id, event_id, seat)

    seats = seat_map(podium_env, event_id)
    assert seats["sold"] == ["A1", "A2"]
    assert seats["held"] == []
    assert seats["available"] == 198
    charged, refunded = money_effects(f"{booking_id}-payment")
    assert [c["amountCents"] for c in charged] == [15000]
    assert refunded == []
    assert PaymentGateway().requests(f"{booking_id}-payment") == 1
    outbox = MailProvider().outbox(f"{body['customerId']}@example.com")
    assert len(outbox) == 1
    assert booking_id in outbox[0]["subject"]
    assert all(t in outbox[0]["body"] for t in tickets)

    got = booking(podium_env, booking_id)
    assert {k: v for k, v in got.items() if k != "saga"} == {k: v for k, v in result.items() if k != "saga"}
    assert [(s["name"], s["status"]) for s in got["saga"]["steps"]] == [
        ("hold-seats", "completed"),
        ("confirm-seats", "completed"),
        ("charge-payment", "completed"),
        ("issue-tickets", "completed"),
    ]


def test_tickets_are_unique_across_bookings(podium_env: PodiumEnv) -> None:
    event_id = new_event("opera")
    first = book(podium_env, ticket_request(new_key("booking"), event_id, ["C1", "C2", "C3"]))
    second = book(podium_env, ticket_request(new_key("booking"), event_id, ["C4", "C5", "C6"]))
    ids = first["ticketIds"] + second["ticketIds"]
    assert len(set(ids)) == 6


def test_the_email_goes_to_the_given_address_and_a_bounce_keeps_the_booking(podium_env: PodiumEnv) -> None:
    event_id = new_event("rock")
    address = f"{new_key('fan')}@example.com"
    result = book(podium_env, ticket_request(new_key("booking"), event_id, ["B7"], customerEmail=address))
    assert result["ticketsEmailed"] is True
    assert len(MailProvider().outbox(address)) == 1

    bounced = f"{new_key('fan')}@bounce.example.com"
    result = book(podium_env, ticket_request(new_key("booking"), event_id, ["B8"], customerEmail=bounced))
    assert result["status"] == "confirmed"
    assert result["ticketsEmailed"] is False
    assert MailProvider().outbox(bounced) == []


@pytest.mark.parametrize(
    ("customer", "method"),
    [("declined", "card-visa"), ("customer", "card-expired")],
    ids=["declined", "expired-card"],
)
def test_payment_failure_releases_the_seats_and_charges_nothing(
    podium_env: PodiumEnv, customer: str, method: str
) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["D5", "D6", "D7"], customer_id=new_key(customer))
    result = book(podium_env, body, method)

    assert result["status"] == "payment_failed", result
    assert "card declined" in result["reason"]
    assert "compensated" in result["reason"]
    assert result["paymentStatus"] == "declined"
    assert result["ticketIds"] == []
    assert result["ticketsEmailed"] is False
    assert active_seats(podium_env, event_id, booking_id) == []
    seats = seat_map(podium_env, event_id)
    assert seats["available"] == seats["capacity"] == 200
    assert money_effects(f"{booking_id}-payment") == ([], [])
    assert MailProvider().outbox(f"{body['customerId']}@example.com") == []
    steps = {s["name"]: s["status"] for s in booking(podium_env, booking_id)["saga"]["steps"]}
    assert steps == {
        "hold-seats": "compensated",
        "confirm-seats": "completed",
        "charge-payment": "compensated",
    }
    # The seats can be sold to someone else right away.
    assert book(podium_env, ticket_request(new_key("booking"), event_id, ["D6"]))["status"] == "confirmed"


def test_a_sold_out_event_is_a_clean_answer(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("soldout"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["A1"])
    response = podium_env.post(f"/TicketingSaga/{booking_id}/Run", body)

    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "sold_out"
    assert result["reason"] == f"sold out: no seats left for {event_id}, 1 requested"
    assert result["ticketIds"] == []
    assert result["paymentId"] is None
    assert active_seats(podium_env, event_id, booking_id) == []
    assert seat_map(podium_env, event_id)["available"] == 0
    assert money_effects(f"{booking_id}-payment") == ([], [])


def test_the_last_seats_gone_is_sold_out(podium_env: PodiumEnv) -> None:
    event_id = new_event("jazz")  # the club: 10 seats
    everything = [f"{row}{n}" for row in "AB" for n in range(1, 6)]
    first = book(podium_env, ticket_request(new_key("booking"), event_id, everything))
    assert first["status"] == "confirmed"

    late = new_key("booking")
    result = podium_env.call(f"/TicketingSaga/{late}/Run", ticket_request(late, event_id, ["B5"]))
    assert result["status"] == "sold_out"
    assert "no seats left" in result["reason"]
    assert active_seats(podium_env, event_id, late) == []


def test_seats_someone_holds_are_unavailable_and_the_loser_holds_nothing(podium_env: PodiumEnv) -> None:
    event_id = new_event("rock")
    holder = new_key("booking")
    _, held = start(podium_env, ticket_request(holder, event_id, ["F1", "F2"]))
    assert held["status"] == "held"

    loser = new_key("booking")
    result = podium_env.call(f"/TicketingSaga/{loser}/Run", ticket_request(loser, event_id, ["F2", "F3"]))
    assert result["status"] == "seats_unavailable"
    assert result["reason"] == f"seats F2 of {event_id} are already taken; 198 other seats are free"
    assert active_seats(podium_env, event_id, loser) == []  # not even F3: all or none
    assert active_seats(podium_env, event_id, holder) == ["F1", "F2"]
    assert "F3" not in seat_map(podium_env, event_id)["held"]
    assert money_effects(f"{loser}-payment") == ([], [])
    assert booking(podium_env, loser)["saga"]["steps"][0]["status"] == "compensated"  # release: no-op

    pay(podium_env, holder)
    assert wait_for(podium_env, holder, {"confirmed"})["status"] == "confirmed"


def test_a_hold_that_is_never_paid_expires_and_frees_the_seats(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_hold(monkeypatch, 2)
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["G1", "G2"])
    invocation, held = start(podium_env, body)
    assert held["status"] == "held"

    result = outcome(podium_env, invocation)
    assert result["status"] == "expired"
    assert "no payment within the 2-second hold" in result["reason"]
    assert result["paymentId"] is None
    assert active_seats(podium_env, event_id, booking_id) == []
    assert seat_map(podium_env, event_id)["available"] == 200
    late = podium_env.post(f"/TicketingSaga/{booking_id}/Pay", {})
    assert late.status_code == 409
    assert "not waiting for payment (status: expired)" in late.json()["message"]
    assert money_effects(f"{booking_id}-payment") == ([], [])
    # Freed seats go to the next customer.
    other = new_key("booking")
    assert book(podium_env, ticket_request(other, event_id, ["G2", "G3"]))["status"] == "confirmed"


def test_a_payment_after_the_seat_map_expired_the_hold_charges_nothing(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    invocation, _ = start(podium_env, ticket_request(booking_id, event_id, ["H5", "H6"]))
    hold = next(h for h in seat_map(podium_env, event_id)["holds"] if h["holder"] == booking_id)
    # The seat map's own timer fires just before the saga's (forced here), then the customer pays.
    expire = {"holder": booking_id, "holdId": hold["holdId"]}
    assert podium_env.call_private(f"/SeatMap/{event_id}/Expire", expire)["status"] == "expired"
    pay(podium_env, booking_id)

    result = outcome(podium_env, invocation)
    assert result["status"] == "expired", result
    assert "the hold on H5, H6 expired before payment" in result["reason"]
    assert result["paymentId"] is None
    assert money_effects(f"{booking_id}-payment") == ([], [])
    assert active_seats(podium_env, event_id, booking_id) == []


def test_cancelling_a_booking_releases_its_seats(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    invocation, _ = start(podium_env, ticket_request(booking_id, event_id, ["H7"]))
    podium_env.cancel(invocation)

    result = outcome(podium_env, invocation)
    assert result["status"] == "cancelled", result
    assert active_seats(podium_env, event_id, booking_id) == []
    assert seat_map(podium_env, event_id)["available"] == 200
    assert podium_env.post(f"/TicketingSaga/{booking_id}/Pay", {}).status_code == 409


def test_same_booking_twice_returns_the_same_result_and_charges_once(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["H1", "H2"])
    invocation, _ = start(podium_env, body)
    # A repeat while the first waits for payment queues behind it and gets the same answer.
    repeat = podium_env.send(f"/TicketingSaga/{booking_id}/Run", body)
    pay(podium_env, booking_id)
    first = outcome(podium_env, invocation)
    assert outcome(podium_env, repeat) == first
    again = podium_env.post(f"/TicketingSaga/{booking_id}/Run", body)
    assert again.status_code == 200
    assert again.json() == first

    assert first["status"] == "confirmed"
    charged, _ = money_effects(f"{booking_id}-payment")
    assert len(charged) == 1
    assert PaymentGateway().requests(f"{booking_id}-payment") == 1
    assert len(MailProvider().outbox(f"{body['customerId']}@example.com")) == 1
    assert [h["status"] for h in seat_map(podium_env, event_id)["holds"] if h["holder"] == booking_id] == [
        "sold"
    ]


def test_same_booking_with_a_different_request_is_refused(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    first = ticket_request(booking_id, new_event("soldout"), ["J1"])
    assert podium_env.call(f"/TicketingSaga/{booking_id}/Run", first)["status"] == "sold_out"
    response = podium_env.post(
        f"/TicketingSaga/{booking_id}/Run", ticket_request(booking_id, event_id, ["J1"])
    )
    assert response.status_code == 409
    assert "different request" in response.json()["message"]


def test_a_second_payment_is_refused_once_the_booking_is_done(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    book(podium_env, ticket_request(booking_id, event_id, ["J5"]))
    response = podium_env.post(f"/TicketingSaga/{booking_id}/Pay", {"method": "card-visa"})
    assert response.status_code == 409
    assert "status: confirmed" in response.json()["message"]
    assert len(money_effects(f"{booking_id}-payment")[0]) == 1


def test_pay_or_get_for_an_unknown_booking_is_404(podium_env: PodiumEnv) -> None:
    booking_id = new_key("booking")
    assert podium_env.post(f"/TicketingSaga/{booking_id}/Pay", {}).status_code == 404
    assert podium_env.post(f"/TicketingSaga/{booking_id}/Get").status_code == 404


# -- the hold is the deployment's, not the client's --------------------------------------------------------


def hold_length(env: PodiumEnv, event_id: str, holder: str) -> timedelta:
    hold = next(h for h in seat_map(env, event_id)["holds"] if h["holder"] == holder)
    return datetime.fromisoformat(hold["expiresAt"]) - datetime.fromisoformat(hold["heldAt"])


def test_a_client_cannot_choose_the_hold(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    # A body that asks for a one-second hold (the old holdSeconds field) gets the deployment's 15 minutes.
    invocation, held = start(podium_env, ticket_request(booking_id, event_id, ["I1"], holdSeconds=1))
    assert held["status"] == "held"
    assert hold_length(podium_env, event_id, booking_id) == timedelta(minutes=15)
    pay(podium_env, booking_id)
    assert outcome(podium_env, invocation)["status"] == "confirmed"


def test_the_hold_is_the_deployment_setting(podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    short_hold(monkeypatch, 90)
    event_id, booking_id = new_event("rock"), new_key("booking")
    invocation, held = start(podium_env, ticket_request(booking_id, event_id, ["I2"]))
    assert held["status"] == "held"
    assert hold_length(podium_env, event_id, booking_id) == timedelta(seconds=90)
    pay(podium_env, booking_id)
    assert outcome(podium_env, invocation)["status"] == "confirmed"


# -- what a client sees, and what it cannot touch ---------------------------------------------------------


def test_availability_shows_taken_seats_but_not_who_has_them(podium_env: PodiumEnv) -> None:
    event_id, holder = new_event("jazz"), new_key("booking")
    _, held = start(podium_env, ticket_request(holder, event_id, ["A2", "A1"], customer_id=new_key("vip")))
    assert held["status"] == "held"
    seen = podium_env.call(f"/SeatMap/{event_id}/Availability")
    assert seen == {
        "eventId": event_id,
        "title": "Late Night Jazz",
        "venue": "Podium Club",
        "layout": "rows A–B, seats 1–5",
        "price": 45.0,
        "capacity": 10,
        "available": 8,
        "taken": ["A1", "A2"],
    }
    assert holder not in str(seen)
    pay(podium_env, holder)
    wait_for(podium_env, holder, {"confirmed"})


PRIVATE = [
    pytest.param("SeatMap", "Hold", id="hold-seats"),
    pytest.param("SeatMap", "Confirm", id="sell-seats"),
    pytest.param("SeatMap", "Release", id="release-seats"),
    pytest.param("SeatMap", "Expire", id="expire-seats"),
    pytest.param("TicketService", "Issue", id="issue-ticket"),
    pytest.param("TicketService", "Void", id="void-ticket"),
]


@pytest.mark.parametrize(("service", "handler"), PRIVATE)
def test_seat_and_ticket_changes_are_refused_at_the_ingress_and_change_nothing(
    podium_env: PodiumEnv, service: str, handler: str
) -> None:
    event_id, sold, waiting = new_event("rock"), new_key("booking"), new_key("booking")
    ticket_id = book(podium_env, ticket_request(sold, event_id, ["J1"]))["ticketIds"][0]
    invocation, _ = start(podium_env, ticket_request(waiting, event_id, ["J2"]))
    hold_id = next(h["holdId"] for h in seat_map(podium_env, event_id)["holds"] if h["holder"] == waiting)
    minted = f"TKT-{new_key('fake')}"
    # Each request would change something if it got through: hold J9, sell or free J2, void a ticket...
    requests = {
        "Hold": (event_id, {"holder": new_key("squatter"), "seatIds": ["J9"], "holdMs": 60_000}),
        "Confirm": (event_id, {"holder": waiting}),
        "Release": (event_id, {"holder": waiting}),
        "Expire": (event_id, {"holder": waiting, "holdId": hold_id}),
        "Issue": (minted, {"bookingId": waiting, "eventId": event_id, "seatId": "J2", "customerId": "c"}),
        "Void": (ticket_id, None),
    }
    seats_before = seat_map(podium_env, event_id)
    ticket_before = podium_env.call(f"/TicketService/{ticket_id}/Get")

    key, body = requests[handler]
    podium_env.assert_private(f"/{service}/{key}/{handler}", body)
    assert seat_map(podium_env, event_id) == seats_before
    assert podium_env.call(f"/TicketService/{ticket_id}/Get") == ticket_before
    assert ticket_before["status"] == "valid"
    assert podium_env.post(f"/TicketService/{minted}/Get").status_code == 404
    podium_env.assert_private(f"/SeatMap/{event_id}/Get")  # who holds what is private too

    pay(podium_env, waiting)
    assert outcome(podium_env, invocation)["status"] == "confirmed"


# -- the seat map on its own ------------------------------------------------------------------------------


FIFTEEN_MINUTES = 15 * 60 * 1000


def hold_seats(
    env: PodiumEnv, event_id: str, holder: str, seats: list[str], hold_ms: int = FIFTEEN_MINUTES
) -> dict[str, Any]:
    """``SeatMap/Hold`` as the booking saga calls it (it is private)."""
    answer: dict[str, Any] = env.call_private(
        f"/SeatMap/{event_id}/Hold", {"holder": holder, "seatIds": seats, "holdMs": hold_ms}
    )
    return answer


def release(env: PodiumEnv, event_id: str, holder: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call_private(f"/SeatMap/{event_id}/Release", {"holder": holder})
    return answer


def test_releasing_twice_is_harmless(podium_env: PodiumEnv) -> None:
    event_id = new_event("rock")
    mine, theirs = new_key("holder"), new_key("holder")
    assert hold_seats(podium_env, event_id, mine, ["E2", "E1"])["hold"]["seatIds"] == ["E1", "E2"]
    hold_seats(podium_env, event_id, theirs, ["E3"])

    first = release(podium_env, event_id, mine)
    assert first == {"holder": mine, "released": ["E1", "E2"], "status": "released"}
    assert release(podium_env, event_id, mine) == {"holder": mine, "released": [], "status": "released"}
    assert seat_map(podium_env, event_id)["held"] == ["E3"]  # the other hold is untouched
    assert seat_map(podium_env, event_id)["available"] == 199
    # A released hold is not revived, by a late Hold or by Confirm.
    late = podium_env.post_private(
        f"/SeatMap/{event_id}/Hold", {"holder": mine, "seatIds": ["E1", "E2"], "holdMs": FIFTEEN_MINUTES}
    )
    assert late.status_code == 409
    assert podium_env.call_private(f"/SeatMap/{event_id}/Confirm", {"holder": mine})["status"] == "released"
    assert seat_map(podium_env, event_id)["sold"] == []


def test_releasing_what_was_never_held_blocks_a_late_hold(podium_env: PodiumEnv) -> None:
    event_id, holder = new_event("rock"), new_key("holder")
    assert release(podium_env, event_id, holder) == {"holder": holder, "released": [], "status": "released"}
    late = podium_env.post_private(
        f"/SeatMap/{event_id}/Hold", {"holder": holder, "seatIds": ["A1"], "holdMs": FIFTEEN_MINUTES}
    )
    assert late.status_code == 409
    assert "no longer holds" in late.json()["message"]
    assert seat_map(podium_env, event_id)["available"] == 200


def test_holding_again_returns_the_same_hold(podium_env: PodiumEnv) -> None:
    event_id, holder = new_event("rock"), new_key("holder")
    first = hold_seats(podium_env, event_id, holder, ["C9", "C10"])
    assert hold_seats(podium_env, event_id, holder, ["C10", "C9"])["hold"] == first["hold"]
    other = podium_env.post_private(
        f"/SeatMap/{event_id}/Hold", {"holder": holder, "seatIds": ["C11"], "holdMs": FIFTEEN_MINUTES}
    )
    assert other.status_code == 409
    assert seat_map(podium_env, event_id)["held"] == ["C9", "C10"]


def test_the_seat_map_expires_a_hold_by_itself(podium_env: PodiumEnv) -> None:
    # Without any booking saga: the hold's own delayed Expire frees the seats.
    event_id, holder = new_event("jazz"), new_key("holder")
    hold_seats(podium_env, event_id, holder, ["A1", "A2"], hold_ms=1000)
    expired = assert_eventually(
        lambda: [h for h in seat_map(podium_env, event_id)["holds"] if h["status"] == "expired"],
        message="the hold to expire",
    )
    assert expired[0]["holder"] == holder
    assert expired[0]["endedAt"] >= expired[0]["expiresAt"]
    assert seat_map(podium_env, event_id)["available"] == 10
    assert podium_env.call_private(f"/SeatMap/{event_id}/Confirm", {"holder": holder})["status"] == "expired"
    assert release(podium_env, event_id, holder)["released"] == []
