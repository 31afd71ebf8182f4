"""Crashes: kill -9 of the service mid-saga and while a hold runs, and an engine restart during a hold.

The service runs in its own process (``tests.systems.ticketing.apps:app``) so it can be killed. The slow
gateway (customers named ``slow-…``) has taken the money but not answered for three seconds; a kill in
that window makes the ``ctx.run`` that called it run again after the restart, and the gateway answers
the repeat from its record (same idempotency key): one charge, two requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.providers import MailProvider, PaymentGateway
from tests.systems.ticketing.conftest import (
    active_seats,
    money_effects,
    new_event,
    pay,
    seat_map,
    start,
    ticket_request,
    wait_for,
)

pytestmark = pytest.mark.engine

ENDED = {"confirmed", "payment_failed", "expired", "failed", "cancelled"}


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def hold() -> str | None:
    """The deployment's ``PODIUM_TICKETING_HOLD``; a test that needs a short hold parametrizes this."""
    return None


@pytest.fixture
def deployment_pair(
    engine: Engine, tmp_path: Path, hold: str | None
) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    env = {"PODIUM_TICKETING_HOLD": hold} if hold is not None else {}
    with process_env(
        engine, "tests.systems.ticketing.apps:app", log_file=tmp_path / "ticketing.log", env=env
    ) as pair:
        yield pair


@pytest.fixture
def deployment(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return deployment_pair[1]


@pytest.fixture
def env(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return deployment_pair[0]


def test_kill_9_mid_charge_completes_the_booking_exactly_once(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["A1", "A2"], customer_id=new_key("slow"))
    _, held = start(env, body)
    assert held["status"] == "held"
    pay(env, booking_id)
    # The gateway has moved the money and is still answering: kill the service now.
    assert_eventually(lambda: money_effects(f"{booking_id}-payment")[0], timeout=20, message="the charge")
    deployment.kill()
    deployment.start()

    result = wait_for(env, booking_id, ENDED, timeout=90)
    assert result["status"] == "confirmed", result
    charged, refunded = money_effects(f"{booking_id}-payment")
    assert [c["amountCents"] for c in charged] == [15000]
    assert refunded == []
    assert PaymentGateway().requests(f"{booking_id}-payment") == 2  # the cut-off call ran again, deduplicated
    assert len(result["ticketIds"]) == len(set(result["ticketIds"])) == 2
    for ticket_id in result["ticketIds"]:
        assert env.call(f"/TicketService/{ticket_id}/Get")["status"] == "valid"
    assert seat_map(env, event_id)["sold"] == ["A1", "A2"]
    assert len(MailProvider().outbox(f"{body['customerId']}@example.com")) == 1
    assert [s["name"] for s in result["saga"]["steps"]] == [
        "hold-seats",
        "confirm-seats",
        "charge-payment",
        "issue-tickets",
    ]


def test_kill_9_right_after_a_declined_payment_compensates_fully(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    body = ticket_request(booking_id, event_id, ["B1", "B2"], customer_id=new_key("declined"))
    start(env, body)
    pay(env, booking_id)
    deployment.kill()  # wherever the saga was (charging, compensating), it resumes from its journal
    deployment.start()

    result = wait_for(env, booking_id, ENDED, timeout=90)
    assert result["status"] == "payment_failed", result
    assert active_seats(env, event_id, booking_id) == []
    assert seat_map(env, event_id)["available"] == 200
    assert money_effects(f"{booking_id}-payment") == ([], [])
    assert MailProvider().outbox(f"{body['customerId']}@example.com") == []


def test_a_booking_waiting_for_payment_survives_kill_9(env: PodiumEnv, deployment: DeploymentProcess) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    _, held = start(env, ticket_request(booking_id, event_id, ["C1"]))
    deployment.kill()
    deployment.start()

    assert env.call(f"/TicketingSaga/{booking_id}/Get")["status"] == "held"
    pay(env, booking_id)
    result = wait_for(env, booking_id, ENDED, timeout=60)
    assert result["status"] == "confirmed", result["reason"]
    assert result["holdExpiresAt"] == held["holdExpiresAt"]
    assert len(money_effects(f"{booking_id}-payment")[0]) == 1


@pytest.mark.parametrize("hold", ["3"])
def test_a_hold_expires_across_kill_9_of_the_service(env: PodiumEnv, deployment: DeploymentProcess) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    start(env, ticket_request(booking_id, event_id, ["D1", "D2"]))
    deployment.kill()
    deployment.start()

    result = wait_for(env, booking_id, ENDED, timeout=60)
    assert result["status"] == "expired", result
    assert active_seats(env, event_id, booking_id) == []
    assert seat_map(env, event_id)["available"] == 200
    assert money_effects(f"{booking_id}-payment") == ([], [])


@pytest.mark.parametrize("hold", ["PT4S"])
def test_a_hold_expires_across_an_engine_restart(env: PodiumEnv, engine: Engine) -> None:
    event_id, booking_id = new_event("rock"), new_key("booking")
    _, held = start(env, ticket_request(booking_id, event_id, ["E1", "E2"]))
    assert held["status"] == "held"
    engine.kill()
    engine.start()

    result = wait_for(env, booking_id, ENDED, timeout=60)
    assert result["status"] == "expired", result
    assert "no payment within the 4-second hold" in result["reason"]
    assert active_seats(env, event_id, booking_id) == []
    seats = seat_map(env, event_id)
    assert seats["available"] == 200
    assert [h["status"] for h in seats["holds"] if h["holder"] == booking_id] in (["expired"], ["released"])
    assert money_effects(f"{booking_id}-payment") == ([], [])
