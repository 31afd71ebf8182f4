"""The travel-booking system (seed 001) against a real engine: success, every failure, idempotency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import MailProvider, PaymentGateway
from tests.systems.travel.conftest import holds, trip_request

pytestmark = pytest.mark.engine


def book(env: PodiumEnv, trip_id: str, body: dict[str, Any]) -> dict[str, Any]:
    booking: dict[str, Any] = env.call(f"/TripOrchestrator/{trip_id}/BookTrip", body)
    return booking


def money_effects(payment_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Charges and refunds the gateway made for one payment id."""
    gateway = PaymentGateway()
    charged = [e for e in gateway.effects(kind="charge") if e["key"] == payment_id]
    charge_ids = {e["subject"] for e in charged}
    refunded = [e for e in gateway.effects(kind="refund") if e["subject"] in charge_ids]
    return charged, refunded


def assert_nothing_held(env: PodiumEnv, trip_id: str, body: dict[str, Any]) -> None:
    flight, hotel = body["flight"], body["hotel"]
    assert (
        holds(
            env, "FlightInventory", f"{flight['from']}-{flight['to']}-{flight['date']}", f"{trip_id}-flight"
        )
        == []
    )
    assert holds(env, "HotelInventory", hotel["city"], f"{trip_id}-hotel") == []


def test_success_confirms_everything_once(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request()
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "confirmed"
    assert booking["tripId"] == trip_id
    assert booking["flight"] == {
        "id": f"{trip_id}-flight",
        "from": "SFO",
        "to": "JFK",
        "price": 498.0,
        "status": "confirmed",
    }
    assert booking["hotel"]["status"] == "confirmed"
    assert booking["hotel"]["city"] == "New York"
    assert booking["payment"] == {"id": f"{trip_id}-payment", "amount": 498.0 + 567.0, "status": "charged"}
    assert booking["confirmationEmail"] is True
    assert booking["createdAt"].endswith("Z")

    flight_holds = holds(podium_env, "FlightInventory", "SFO-JFK-2024-12-15", f"{trip_id}-flight")
    hotel_holds = holds(podium_env, "HotelInventory", "New York", f"{trip_id}-hotel")
    assert [(h["units"], h["status"]) for h in flight_holds] == [(2, "committed")]
    assert [(h["units"], h["status"], len(h["slots"])) for h in hotel_holds] == [(1, "committed", 3)]
    charged, refunded = money_effects(f"{trip_id}-payment")
    assert [c["amountCents"] for c in charged] == [106500]
    assert refunded == []
    outbox = MailProvider().outbox(body["customerEmail"])
    assert len(outbox) == 1
    assert trip_id in outbox[0]["subject"]


def test_get_booking_returns_the_booking_and_its_saga_log(podium_env: PodiumEnv) -> None:
    trip_id = new_key("trip")
    booked = book(podium_env, trip_id, trip_request())
    got = podium_env.call(f"/TripOrchestrator/{trip_id}/GetBooking")
    assert {k: v for k, v in got.items() if k != "saga"} == {k: v for k, v in booked.items() if k != "saga"}
    saga = got["saga"]
    assert saga["status"] == "completed"
    assert [s["name"] for s in saga["steps"]] == [
        "reserve-flight",
        "reserve-hotel",
        "charge-payment",
        "confirm-flight",
        "confirm-hotel",
    ]
    assert {s["status"] for s in saga["steps"]} == {"completed"}


def test_get_booking_of_unknown_trip_is_404(podium_env: PodiumEnv) -> None:
    response = podium_env.post(f"/TripOrchestrator/{new_key('trip')}/GetBooking")
    assert response.status_code == 404
    assert "no booking for trip" in response.json()["message"]


def test_flight_sold_out_cancels_the_hotel_and_charges_nothing(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request(flight={"to": "XSO"})
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "failed"
    assert "sold out" in booking["reason"]
    assert "compensated" in booking["reason"]
    assert booking["flight"] is None  # never reserved
    assert booking["hotel"]["status"] == "cancelled"
    assert booking["payment"] is None
    assert_nothing_held(podium_env, trip_id, body)
    assert money_effects(f"{trip_id}-payment") == ([], [])
    assert MailProvider().outbox(body["customerEmail"]) == []


def test_hotel_sold_out_cancels_the_flight_and_charges_nothing(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request(hotel={"city": "Sold Out City"})
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "failed"
    assert "sold out" in booking["reason"]
    assert booking["flight"]["status"] == "cancelled"
    assert booking["hotel"] is None
    assert booking["payment"] is None
    assert_nothing_held(podium_env, trip_id, body)
    assert money_effects(f"{trip_id}-payment") == ([], [])


def test_payment_declined_releases_both_reservations(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request(customer_id=new_key("declined"))
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "failed"
    assert "card declined" in booking["reason"]
    assert booking["flight"]["status"] == "cancelled"
    assert booking["hotel"]["status"] == "cancelled"
    assert booking["payment"]["status"] == "declined"
    assert_nothing_held(podium_env, trip_id, body)
    assert money_effects(f"{trip_id}-payment") == ([], [])
    assert MailProvider().outbox(body["customerEmail"]) == []


def test_refused_confirmation_cancels_both_and_refunds_exactly_once(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request(hotel={"city": "Atlantis"})
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "failed"
    assert "did not honour the hold" in booking["reason"]
    assert booking["flight"]["status"] == "cancelled"  # it had been confirmed: cancelling releases the seats
    assert booking["hotel"]["status"] == "cancelled"
    assert booking["payment"]["status"] == "refunded"
    assert_nothing_held(podium_env, trip_id, body)
    charged, refunded = money_effects(f"{trip_id}-payment")
    assert len(charged) == 1
    assert [r["amountCents"] for r in refunded] == [charged[0]["amountCents"]]
    assert PaymentGateway().balance_cents(charged[0]["subject"]) == 0

    saga = podium_env.call(f"/TripOrchestrator/{trip_id}/GetBooking")["saga"]
    assert saga["status"] == "compensated"
    statuses = {s["name"]: s["status"] for s in saga["steps"]}
    assert statuses["confirm-hotel"] == "failed"
    assert (
        statuses["charge-payment"] == statuses["reserve-hotel"] == statuses["reserve-flight"] == "compensated"
    )


def test_bounced_email_keeps_the_trip_confirmed(podium_env: PodiumEnv) -> None:
    trip_id = new_key("trip")
    body = trip_request(email=f"{new_key('alice')}@bounce.example.com")
    booking = book(podium_env, trip_id, body)

    assert booking["status"] == "confirmed"
    assert booking["confirmationEmail"] is False
    assert booking["payment"]["status"] == "charged"
    assert MailProvider().outbox(body["customerEmail"]) == []


def test_same_trip_twice_returns_the_same_booking_and_books_once(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request()
    first = podium_env.post(f"/TripOrchestrator/{trip_id}/BookTrip", body)
    second = podium_env.post(f"/TripOrchestrator/{trip_id}/BookTrip", body)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(holds(podium_env, "FlightInventory", "SFO-JFK-2024-12-15", f"{trip_id}-flight")) == 1
    assert len(holds(podium_env, "HotelInventory", "New York", f"{trip_id}-hotel")) == 1
    charged, _ = money_effects(f"{trip_id}-payment")
    assert len(charged) == 1
    assert PaymentGateway().requests(f"{trip_id}-payment") == 1  # the second call never reached the gateway
    assert len(MailProvider().outbox(body["customerEmail"])) == 1


def test_same_trip_with_a_different_request_is_refused(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request()
    book(podium_env, trip_id, body)
    body["flight"]["passengers"] = 3
    response = podium_env.post(f"/TripOrchestrator/{trip_id}/BookTrip", body)
    assert response.status_code == 409
    assert "different request" in response.json()["message"]


def test_get_booking_answers_while_the_booking_runs(podium_env: PodiumEnv) -> None:
    # The slow gateway keeps the saga inside the charge step for three seconds.
    trip_id = new_key("trip")
    podium_env.send(f"/TripOrchestrator/{trip_id}/BookTrip", trip_request(customer_id=new_key("slow")))

    def pending_with_reservations() -> dict[str, Any] | None:
        response = podium_env.post(f"/TripOrchestrator/{trip_id}/GetBooking")
        if response.status_code != 200:
            return None
        booking: dict[str, Any] = response.json()
        return booking if booking["flight"] is not None else None

    running = assert_eventually(pending_with_reservations, timeout=10, message="reservations in the booking")
    assert running["status"] == "pending"
    assert running["flight"]["status"] == "reserved"
    done = assert_eventually(
        lambda: (
            (b := podium_env.call(f"/TripOrchestrator/{trip_id}/GetBooking"))["status"] == "confirmed" and b
        ),
        timeout=30,
    )
    assert done["payment"]["status"] == "charged"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()

BAD_REQUESTS = [
    pytest.param(b"{not json", "request body is not valid JSON", id="malformed-json"),
    pytest.param(b"[1, 2]", "body: Input should be", id="not-an-object"),
    pytest.param(_set("customerId", _DELETE), "customerId: field required", id="missing-field"),
    pytest.param(_set("flight.date", _DELETE), "flight.date: field required", id="missing-nested-field"),
    pytest.param(_set("customerId", 42), "customerId: Input should be a valid string", id="wrong-type"),
    pytest.param(
        _set("hotel.checkOut", "2024-12-14"),
        "hotel: checkOut (2024-12-14) must be after checkIn (2024-12-15)",
        id="dates-out-of-order",
    ),
    pytest.param(
        _set("flight.passengers", 0), "flight.passengers: Input should be greater than 0", id="no-passengers"
    ),
    pytest.param(
        _set("hotel.guests", -1), "hotel.guests: Input should be greater than 0", id="negative-guests"
    ),
    pytest.param(
        _set("flight.date", "15/12/2024"), "flight.date: Input should be a valid date", id="bad-date"
    ),
    pytest.param(_set("customerEmail", "nope"), "customerEmail: String should match pattern", id="bad-email"),
    pytest.param(_set("flight.to", "QQQ"), "flight.to: unknown airport 'QQQ'", id="unknown-airport"),
    pytest.param(_set("hotel.city", "Gotham"), "hotel.city: no hotel in 'Gotham'", id="unknown-city"),
]


@pytest.mark.parametrize(("change", "message"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_field(podium_env: PodiumEnv, change: Any, message: str) -> None:
    trip_id = new_key("trip")
    if isinstance(change, bytes):
        response = podium_env.client.post(
            f"/TripOrchestrator/{trip_id}/BookTrip",
            content=change,
            headers={"content-type": "application/json"},
        )
    else:
        body = trip_request()
        change(body)
        response = podium_env.post(f"/TripOrchestrator/{trip_id}/BookTrip", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    # Nothing was started for this trip: a corrected request can still use the id.
    assert podium_env.post(f"/TripOrchestrator/{trip_id}/GetBooking").status_code == 404


def test_empty_body_is_a_400(podium_env: PodiumEnv) -> None:
    response = podium_env.client.post(
        f"/TripOrchestrator/{new_key('trip')}/BookTrip",
        content=b"",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "empty" in response.json()["message"].lower()


def test_the_ingress_refuses_reservations_and_inventory_and_nothing_changes(podium_env: PodiumEnv) -> None:
    trip_id, body = new_key("trip"), trip_request()
    booking = book(podium_env, trip_id, body)
    flight_id, hotel_id = f"{trip_id}-flight", f"{trip_id}-hotel"
    seats = podium_env.call_private("/FlightInventory/SFO-JFK-2024-12-15/Get")
    rooms_before = holds(podium_env, "HotelInventory", "New York", hotel_id)

    # What a client could try: undo someone's booking, or take seats outside any booking.
    attempts: list[tuple[str, Any]] = [
        (f"/FlightService/{flight_id}/Cancel", None),
        (f"/HotelService/{hotel_id}/Cancel", None),
        (f"/FlightService/{new_key('trip')}-flight/Reserve", body["flight"]),
        ("/FlightInventory/SFO-JFK-2024-12-15/Release", {"holder": flight_id}),
        ("/FlightInventory/SFO-JFK-2024-12-15/Hold", {"holder": new_key("intruder"), "units": 100}),
        ("/HotelInventory/New York/Release", {"holder": hotel_id}),
        (f"/PaymentService/{trip_id}-payment/Refund", {}),
        ("/FlightInventory/SFO-JFK-2024-12-15/Get", None),
    ]
    for path, request in attempts:
        podium_env.assert_private(path, request)

    assert podium_env.call_private(f"/FlightService/{flight_id}/Get")["status"] == "confirmed"
    assert podium_env.call_private(f"/HotelService/{hotel_id}/Get")["status"] == "confirmed"
    after = podium_env.call_private("/FlightInventory/SFO-JFK-2024-12-15/Get")
    mine = [h for h in after["holds"] if h["holder"] == flight_id]
    assert mine == [h for h in seats["holds"] if h["holder"] == flight_id]
    assert not any(h["holder"].startswith("intruder-") for h in after["holds"])
    assert holds(podium_env, "HotelInventory", "New York", hotel_id) == rooms_before
    charged, refunded = money_effects(f"{trip_id}-payment")
    assert [c["amountCents"] for c in charged] == [106500]
    assert refunded == []
    assert podium_env.call(f"/TripOrchestrator/{trip_id}/GetBooking")["status"] == booking["status"]
