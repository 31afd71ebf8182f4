"""Customers racing for the same seats with concurrent HTTP requests: exactly one wins each seat."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from podium.testing import PodiumEnv, new_key
from services.common.providers import PaymentGateway
from tests.systems.ticketing.conftest import (
    FINAL,
    active_seats,
    book,
    money_effects,
    new_event,
    outcome,
    pay,
    seat_map,
    start,
    ticket_request,
    wait_for,
)

pytestmark = pytest.mark.engine


def race(env: PodiumEnv, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST every ``Run`` at the same moment from its own thread and client; pay whoever holds seats.

    Returns each booking's answer, in the order of ``bodies``.
    """
    barrier = threading.Barrier(len(bodies))

    def run(body: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=env.ingress_url, timeout=60) as client:
            barrier.wait()
            response = client.post(f"/TicketingSaga/{body['bookingId']}/Run", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        futures = [pool.submit(run, body) for body in bodies]
        # The winners' Run waits for payment; the losers have their answer already.
        for body in bodies:
            if wait_for(env, body["bookingId"], {"held", *FINAL})["status"] == "held":
                pay(env, body["bookingId"])
        return [f.result(timeout=60) for f in futures]


def test_two_customers_racing_for_the_last_two_seats(podium_env: PodiumEnv) -> None:
    event_id = new_event("jazz")  # the club: 10 seats
    early = ["A1", "A2", "A3", "A4", "A5", "B1", "B2", "B3"]
    assert book(podium_env, ticket_request(new_key("booking"), event_id, early))["status"] == "confirmed"

    bodies = [ticket_request(new_key("booking"), event_id, ["B4", "B5"]) for _ in range(2)]
    results = race(podium_env, bodies)

    statuses = sorted(r["status"] for r in results)
    assert statuses == ["confirmed", "sold_out"], results
    winner, loser = sorted(results, key=lambda r: r["status"] != "confirmed")
    assert len(winner["ticketIds"]) == 2
    assert "no seats left" in loser["reason"]
    assert active_seats(podium_env, event_id, loser["bookingId"]) == []
    assert active_seats(podium_env, event_id, winner["bookingId"]) == ["B4", "B5"]
    seats = seat_map(podium_env, event_id)
    assert (seats["available"], seats["held"], len(seats["sold"])) == (0, [], 10)
    assert len(money_effects(f"{winner['bookingId']}-payment")[0]) == 1
    assert money_effects(f"{loser['bookingId']}-payment") == ([], [])


def test_many_customers_racing_for_the_same_seats(podium_env: PodiumEnv) -> None:
    event_id = new_event("rock")
    bodies = [ticket_request(new_key("booking"), event_id, ["A1", "A2", "A3"]) for _ in range(6)]
    results = race(podium_env, bodies)

    assert sorted(r["status"] for r in results) == ["confirmed"] + ["seats_unavailable"] * 5
    assert seat_map(podium_env, event_id)["sold"] == ["A1", "A2", "A3"]
    charged = [len(money_effects(f"{r['bookingId']}-payment")[0]) for r in results]
    assert sorted(charged) == [0] * 5 + [1]


def test_overlapping_requests_each_seat_has_exactly_one_winner(podium_env: PodiumEnv) -> None:
    # Customer i wants seats Ci and Ci+1: neighbours overlap, so no two neighbours can both win.
    event_id = new_event("opera")
    bodies = [ticket_request(new_key("booking"), event_id, [f"C{i}", f"C{i + 1}"]) for i in range(1, 9)]
    results = race(podium_env, bodies)

    winners = [r for r in results if r["status"] == "confirmed"]
    losers = [r for r in results if r["status"] != "confirmed"]
    assert winners
    assert {r["status"] for r in losers} <= {"seats_unavailable"}
    won = [seat for r in winners for seat in r["seatIds"]]
    assert len(won) == len(set(won))  # no seat sold twice
    for loser in losers:  # all or none: a loser holds nothing, not even its free seat
        assert active_seats(podium_env, event_id, loser["bookingId"]) == []
        assert money_effects(f"{loser['bookingId']}-payment") == ([], [])
    seats = seat_map(podium_env, event_id)
    assert sorted(seats["sold"]) == sorted(won)
    assert seats["held"] == []
    tickets = [t for r in winners for t in r["ticketIds"]]
    assert len(tickets) == len(set(tickets)) == len(won)


def test_paying_twice_at_once_charges_once(podium_env: PodiumEnv) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["B1"])
    invocation, _ = start(podium_env, body)
    barrier = threading.Barrier(3)

    def pay_now(method: str) -> int:
        with httpx.Client(base_url=podium_env.ingress_url, timeout=60) as client:
            barrier.wait()
            return client.post(f"/TicketingSaga/{booking_id}/Pay", json={"method": method}).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(pay_now, ["card-visa", "card-mastercard", "card-visa"]))
    assert set(codes) <= {200, 409}
    assert 200 in codes
    result = outcome(podium_env, invocation)
    assert result["status"] == "confirmed"
    assert len(money_effects(f"{booking_id}-payment")[0]) == 1
    assert PaymentGateway().requests(f"{booking_id}-payment") == 1
