"""Requests outside the catalogue or malformed: 400 naming the field, and nothing starts."""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from tests.systems.ticketing.conftest import (
    money_effects,
    new_event,
    outcome,
    pay,
    start,
    ticket_request,
)

pytestmark = pytest.mark.engine

_DELETE = object()

BAD_REQUESTS = [
    pytest.param({"bookingId": _DELETE}, "bookingId: field required", id="missing-booking-id"),
    pytest.param({"eventId": _DELETE}, "eventId: field required", id="missing-event-id"),
    pytest.param({"seatIds": _DELETE}, "seatIds: field required", id="missing-seats"),
    pytest.param({"customerId": _DELETE}, "customerId: field required", id="missing-customer"),
    pytest.param({"totalAmount": _DELETE}, "totalAmount: field required", id="missing-amount"),
    pytest.param({"seatIds": []}, "seatIds: List should have at least 1 item", id="no-seats"),
    pytest.param(
        {"seatIds": [f"A{n}" for n in range(1, 12)]},
        "seatIds: List should have at most 10 items",
        id="too-many-seats",
    ),
    pytest.param({"seatIds": ["A1", "A1"]}, "seatIds: seat A1 is listed more than once", id="repeated-seat"),
    pytest.param({"seatIds": "A1"}, "seatIds: Input should be a valid array", id="seats-not-a-list"),
    pytest.param({"seatIds": ["K1"]}, "seatIds: no seat 'K1' at Podium Arena", id="unknown-row"),
    pytest.param({"seatIds": ["A21"]}, "seatIds: no seat 'A21' at Podium Arena", id="unknown-seat"),
    pytest.param(
        {"eventId": "circus-2025-07-12"}, "eventId: unknown event 'circus-2025-07-12'", id="unknown-show"
    ),
    pytest.param({"eventId": "rock"}, "eventId: unknown event 'rock'", id="no-performance"),
    pytest.param({"eventId": "rock-a b"}, "eventId: unknown event 'rock-a b'", id="bad-performance"),
    pytest.param({"totalAmount": 10}, "totalAmount: 10.00 is not the price of 1 seat(s)", id="wrong-amount"),
    pytest.param({"totalAmount": 0}, "totalAmount: Input should be greater than 0", id="zero-amount"),
    pytest.param({"totalAmount": 75.001}, "totalAmount: at most two decimals", id="fraction-of-a-cent"),
    pytest.param({"totalAmount": 5e-324}, "totalAmount: at most two decimals", id="tiny-amount"),
    pytest.param(
        {"totalAmount": "lots"}, "totalAmount: Input should be a valid decimal", id="amount-not-a-number"
    ),
    pytest.param(
        {"bookingId": "someone-else"}, "bookingId: 'someone-else' does not match", id="other-booking-id"
    ),
    pytest.param({"customerId": "a b"}, "customerId: String should match pattern", id="bad-customer-id"),
    pytest.param({"customerEmail": "nope"}, "customerEmail: String should match pattern", id="bad-email"),
]


@pytest.mark.parametrize(("change", "message"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_field(
    podium_env: PodiumEnv, change: dict[str, Any], message: str
) -> None:
    booking_id = new_key("booking")
    body = ticket_request(booking_id, new_event("rock"), ["A1"])
    for field, value in change.items():
        if value is _DELETE:
            del body[field]
        else:
            body[field] = value
    response = podium_env.post(f"/TicketingSaga/{booking_id}/Run", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    # Nothing was started for this booking: a corrected request can still use the id.
    assert podium_env.post(f"/TicketingSaga/{booking_id}/Get").status_code == 404


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "request body is not valid JSON"), (b"", "empty"), (b"[1, 2]", "body: Input should be")],
    ids=["malformed-json", "empty-body", "not-an-object"],
)
def test_malformed_body_is_a_400(podium_env: PodiumEnv, content: bytes, message: str) -> None:
    response = podium_env.client.post(
        f"/TicketingSaga/{new_key('booking')}/Run",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert message.lower() in response.json()["message"].lower()


def test_the_seat_map_refuses_unknown_events_and_seats(podium_env: PodiumEnv) -> None:
    unknown = podium_env.post("/SeatMap/circus-1/Availability")
    assert unknown.status_code == 400
    assert "eventId: unknown event 'circus-1'" in unknown.json()["message"]
    club = new_event("jazz")
    seat = podium_env.post_private(
        f"/SeatMap/{club}/Hold", {"holder": new_key("holder"), "seatIds": ["C1"], "holdMs": 60_000}
    )
    assert seat.status_code == 400
    assert "seatIds: no seat 'C1' at Podium Club" in seat.json()["message"]
    assert podium_env.call(f"/SeatMap/{club}/Availability")["available"] == 10


@pytest.mark.parametrize(
    "method",
    ["4242424242424242", "card-4242", "tok_short", ""],
    ids=["card-number", "unknown", "bad-token", "empty"],
)
def test_a_payment_method_that_is_not_a_card_token_is_a_400_and_the_booking_still_waits(
    podium_env: PodiumEnv, method: str
) -> None:
    booking_id = new_key("booking")
    invocation, held = start(podium_env, ticket_request(booking_id, new_event("rock"), ["A1"]))
    assert held["status"] == "held"
    response = podium_env.post(f"/TicketingSaga/{booking_id}/Pay", {"method": method})
    assert response.status_code == 400, response.text
    assert "method: " in response.json()["message"]
    assert "card token" in response.json()["message"]
    assert podium_env.call(f"/TicketingSaga/{booking_id}/Get")["status"] == "held"
    assert money_effects(f"{booking_id}-payment") == ([], [])
    pay(podium_env, booking_id)  # the customer tries again with a card token
    assert outcome(podium_env, invocation)["status"] == "confirmed"
