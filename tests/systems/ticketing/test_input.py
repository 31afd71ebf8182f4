"""Requests outside the catalogue or malformed: 400 naming the field, and nothing starts."""

from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from tests.systems.ticketing.conftest import new_event, ticket_request

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
    pytest.param(
        {"totalAmount": "lots"}, "totalAmount: Input should be a valid number", id="amount-not-a-number"
    ),
    pytest.param(
        {"bookingId": "someone-else"}, "bookingId: 'someone-else' does not match", id="other-booking-id"
    ),
    pytest.param({"customerId": "a b"}, "customerId: String should match pattern", id="bad-customer-id"),
    pytest.param({"customerEmail": "nope"}, "customerEmail: String should match pattern", id="bad-email"),
    pytest.param({"holdSeconds": 0}, "holdSeconds: Input should be greater than or equal to 1", id="no-hold"),
    pytest.param(
        {"holdSeconds": 901}, "holdSeconds: Input should be less than or equal to 900", id="long-hold"
    ),
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
    unknown = podium_env.post("/SeatMap/circus-1/Get")
    assert unknown.status_code == 400
    assert "eventId: unknown event 'circus-1'" in unknown.json()["message"]
    club = new_event("jazz")
    seat = podium_env.post(f"/SeatMap/{club}/Hold", {"holder": new_key("holder"), "seatIds": ["C1"]})
    assert seat.status_code == 400
    assert "seatIds: no seat 'C1' at Podium Club" in seat.json()["message"]
    assert podium_env.call(f"/SeatMap/{club}/Get")["available"] == 10
