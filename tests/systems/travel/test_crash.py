"""Crashes mid-booking: kill -9 of the service process, and a restart of the engine.

The slow gateway (customers named ``slow-…``) has taken the money but not yet answered for three seconds;
the crash lands in that window, so the ``ctx.run`` that called it runs a second time after the restart.
The gateway answers the repeat from its record (same idempotency key): one charge, two requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.providers import MailProvider, PaymentGateway
from tests.systems.travel.conftest import holds, trip_request
from tests.systems.travel.test_booking import money_effects

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(podium_private_engine: Engine) -> Engine:
    return podium_private_engine


@pytest.fixture
def deployment_pair(engine: Engine, tmp_path: Path) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(engine, "tests.systems.apps:travel", log_file=tmp_path / "travel.log") as pair:
        yield pair


@pytest.fixture
def deployment(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> DeploymentProcess:
    return deployment_pair[1]


@pytest.fixture
def env(deployment_pair: tuple[PodiumEnv, DeploymentProcess]) -> PodiumEnv:
    return deployment_pair[0]


def start_slow_booking(env: PodiumEnv) -> tuple[str, dict[str, Any]]:
    trip_id, body = new_key("trip"), trip_request(customer_id=new_key("slow"))
    env.send(f"/TripOrchestrator/{trip_id}/BookTrip", body, idempotency_key=trip_id)
    # Wait until the gateway has moved the money: the saga is now inside the slow answer.
    assert_eventually(lambda: money_effects(f"{trip_id}-payment")[0], timeout=20, message="the charge")
    return trip_id, body


def assert_booked_exactly_once(env: PodiumEnv, trip_id: str, body: dict[str, Any]) -> None:
    booking = assert_eventually(
        lambda: (b := env.call(f"/TripOrchestrator/{trip_id}/GetBooking"))["status"] != "pending" and b,
        timeout=90,
        message="the booking to finish",
    )
    assert booking["status"] == "confirmed", booking
    charged, refunded = money_effects(f"{trip_id}-payment")
    assert len(charged) == 1
    assert refunded == []
    assert PaymentGateway().requests(f"{trip_id}-payment") == 2  # the cut-off call ran again, deduplicated
    assert [
        h["status"] for h in holds(env, "FlightInventory", "SFO-JFK-2024-12-15", f"{trip_id}-flight")
    ] == ["committed"]
    assert [h["status"] for h in holds(env, "HotelInventory", "New York", f"{trip_id}-hotel")] == [
        "committed"
    ]
    assert len(MailProvider().outbox(body["customerEmail"])) == 1
    steps = booking["saga"]["steps"]
    assert [s["name"] for s in steps] == [
        "reserve-flight",
        "reserve-hotel",
        "charge-payment",
        "confirm-flight",
        "confirm-hotel",
    ]


def test_kill_9_of_the_service_mid_booking_completes_it_once(
    env: PodiumEnv, deployment: DeploymentProcess
) -> None:
    trip_id, body = start_slow_booking(env)
    deployment.kill()
    deployment.start()
    assert_booked_exactly_once(env, trip_id, body)


def test_engine_restart_mid_booking_resumes_it(env: PodiumEnv, engine: Engine) -> None:
    trip_id, body = start_slow_booking(env)
    engine.kill()
    engine.start()
    assert_booked_exactly_once(env, trip_id, body)
