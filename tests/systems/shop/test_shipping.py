"""``ShopShipping`` on its own: carriers chosen by rules, the fallback, breakers, cancellation.

The handlers are called directly (``post_private``), not through an order, except where a carrier scan
needs an order to record on. Labels, tracking numbers and voids are checked against the simulated
carriers' records (:class:`~services.common.providers.CarrierProvider`), and counted there: one label
and at most one void per key, whatever is repeated. Tests that take a carrier down or hang it run with
a breaker and short timeouts of their own (the deployment serves in this process), so the shared
breakers of the session never see their failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.circuits import BreakerSettings, ProviderCircuits
from services.common.providers import CARRIERS, CarrierProvider
from services.shop import shipping
from services.shop.models import Address
from services.shop.shipping import CarrierOutcome, ShippingSettings, ask_carrier, label_key
from tests.systems.shop.conftest import order_body, place

HOME = {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"}


@pytest.fixture
def carriers() -> Iterator[CarrierProvider]:
    """The deployment's simulated carriers: their switches and records; every carrier is back after."""
    provider = CarrierProvider()
    yield provider
    for carrier in CARRIERS:
        provider.restore(carrier)


@pytest.fixture
def breakers(monkeypatch: pytest.MonkeyPatch) -> ProviderCircuits:
    """Short timeouts and breakers of this test's own: two failures open a circuit for 0.5 s."""
    settings = ShippingSettings(
        call_timeout=timedelta(milliseconds=300),
        breaker_failures=2,
        breaker_reset=timedelta(milliseconds=500),
    )
    circuits = ProviderCircuits(BreakerSettings(settings.breaker_failures, settings.breaker_reset))
    monkeypatch.setattr(shipping, "SETTINGS", settings)
    monkeypatch.setattr(shipping, "CIRCUITS", circuits)
    return circuits


def create(
    env: PodiumEnv, order_id: str, address: dict[str, str] | None = None, lines: dict[str, int] | None = None
) -> httpx.Response:
    body = {"customerId": "c-1", "address": {**HOME, **(address or {})}, "lines": lines or {"WIDGET-1": 2}}
    return env.post_private(f"/ShopShipping/{order_id}/CreateShipment", body)


def created(env: PodiumEnv, order_id: str, **address: str) -> dict[str, Any]:
    response = create(env, order_id, address)
    assert response.status_code == 200, response.text
    shipment: dict[str, Any] = response.json()
    return shipment


def outcomes(shipment: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["carrier"], a["outcome"]) for a in shipment["attempts"]]


def effects(carriers: CarrierProvider, key: str, kind: str) -> int:
    return len([e for e in carriers.effects(kind=kind) if e["key"] == key])


# -- labels and rules ------------------------------------------------------------------------------------


@pytest.mark.engine
def test_the_label_and_tracking_number_come_from_the_carrier_once_per_order(
    podium_env: PodiumEnv, carriers: CarrierProvider
) -> None:
    order_id = new_key("order")
    shipment = created(podium_env, order_id)
    key = label_key(order_id, "podium-post")
    record = carriers.label(key)
    assert record is not None
    assert (shipment["carrier"], shipment["trackingNumber"], shipment["labelUrl"], shipment["labelId"]) == (
        "podium-post",
        record["trackingNumber"],
        record["labelUrl"],
        record["labelId"],
    )
    assert shipment["trackingNumber"].startswith("PP")
    assert (shipment["status"], shipment["labelKey"], shipment["shipmentId"]) == (
        "label_created",
        key,
        f"{order_id}-shipment",
    )
    assert outcomes(shipment) == [("podium-post", "accepted")]

    assert created(podium_env, order_id) == shipment  # a repeat returns the first shipment...
    assert podium_env.call_private(f"/ShopShipping/{order_id}/Get") == shipment
    assert (carriers.requests(key), effects(carriers, key, "label")) == (1, 1)  # ...without asking again


@pytest.mark.engine
@pytest.mark.parametrize(
    ("address", "asked", "prefix"),
    [
        (HOME, ["podium-post"], "PP"),
        ({"country": "DE", "zip": "10115", "city": "Berlin"}, ["podium-global"], "PG"),
        ({"country": "CA", "zip": "M5H 2N2", "city": "Toronto"}, ["podium-global"], "PG"),
    ],
    ids=["domestic", "abroad", "neighbour"],
)
def test_the_carrier_is_chosen_by_destination(
    podium_env: PodiumEnv, carriers: CarrierProvider, address: dict[str, str], asked: list[str], prefix: str
) -> None:
    order_id = new_key("order")
    response = create(podium_env, order_id, address, {"A": 25, "B": 1})
    assert response.status_code == 200, response.text
    shipment = response.json()
    assert outcomes(shipment) == [(carrier, "accepted") for carrier in asked]
    assert shipment["trackingNumber"].startswith(prefix)
    record = carriers.label(label_key(order_id, asked[-1]))
    assert record is not None
    assert record["parcels"] == shipment["parcels"] == 3  # 26 units, ten to a parcel


def test_the_rules_in_order() -> None:
    def carriers_for(country: str) -> tuple[str, ...]:
        return shipping.carriers_for(Address(street="s", city="c", zip="1", country=country))

    assert carriers_for("US") == ("podium-post", "podium-global")
    assert carriers_for("MX") == ("podium-global", "podium-post")
    assert carriers_for("JP") == ("podium-global",)
    assert [shipping.parcels_for({"A": n}) for n in (1, 10, 11, 1000)] == [1, 1, 2, 100]


# -- the fallback ----------------------------------------------------------------------------------------


@pytest.mark.engine
def test_a_remote_zip_that_podium_post_refuses_goes_with_podium_global(
    podium_env: PodiumEnv, carriers: CarrierProvider
) -> None:
    order_id = new_key("order")
    shipment = created(podium_env, order_id, zip="99501", city="Anchorage")
    assert outcomes(shipment) == [("podium-post", "refused"), ("podium-global", "accepted")]
    assert (
        "refused (422: podium-post does not serve zip 99501: remote area)"
        in shipment["attempts"][0]["detail"]
    )
    assert (shipment["carrier"], shipment["trackingNumber"][:2]) == ("podium-global", "PG")
    assert carriers.label(label_key(order_id, "podium-post")) is None


@pytest.mark.engine
def test_a_carrier_that_is_down_is_passed_over_for_the_next(
    podium_env: PodiumEnv, carriers: CarrierProvider, breakers: ProviderCircuits
) -> None:
    carriers.take_down("podium-post")
    order_id = new_key("order")
    shipment = created(podium_env, order_id)
    assert outcomes(shipment) == [("podium-post", "down"), ("podium-global", "accepted")]
    assert shipment["attempts"][0]["detail"] == "is down (503: podium-post is unavailable)"
    assert shipment["carrier"] == "podium-global"
    assert carriers.requests(label_key(order_id, "podium-post")) == 0

    # Abroad, the fallback runs the other way round.
    carriers.restore("podium-post")
    carriers.take_down("podium-global")
    toronto = created(podium_env, new_key("order"), country="CA", zip="M5H 2N2", city="Toronto")
    assert outcomes(toronto) == [("podium-global", "down"), ("podium-post", "accepted")]


@pytest.mark.engine
@pytest.mark.parametrize(
    ("address", "answers"),
    [
        ({"country": "AQ"}, ["podium-global refused (422: podium-global does not deliver to AQ)"]),
        ({"country": "KP"}, ["podium-global refused (422: podium-global does not deliver to KP)"]),
        (
            {"zip": "00000"},
            [
                "podium-post refused (422: zip 00000 does not exist)",
                "podium-global refused (422: zip 00000 does not exist)",
            ],
        ),
    ],
    ids=["AQ", "KP", "zip-00000"],
)
def test_a_shipment_every_carrier_refuses_is_a_409_naming_each_answer(
    podium_env: PodiumEnv, carriers: CarrierProvider, address: dict[str, str], answers: list[str]
) -> None:
    order_id = new_key("order")
    refused = create(podium_env, order_id, address)
    assert refused.status_code == 409, refused.text
    where = f"{address.get('country', 'US')} {address.get('zip', '12345')}"
    assert refused.json()["message"] == f"no carrier takes the shipment to {where}: " + "; ".join(answers)
    assert podium_env.post_private(f"/ShopShipping/{order_id}/Get").status_code == 404
    assert all(carriers.label(label_key(order_id, c)) is None for c in CARRIERS)


@pytest.mark.engine
def test_no_carrier_up_is_a_503_and_a_later_request_asks_again(
    podium_env: PodiumEnv, carriers: CarrierProvider, breakers: ProviderCircuits
) -> None:
    carriers.take_down("podium-post")
    carriers.take_down("podium-global")
    order_id = new_key("order")
    down = create(podium_env, order_id)
    assert down.status_code == 503, down.text
    assert down.json()["message"] == (
        "no carrier can take the shipment to US 12345 now:"
        " podium-post is down (503: podium-post is unavailable);"
        " podium-global is down (503: podium-global is unavailable)"
    )
    carriers.restore("podium-global")
    assert outcomes(created(podium_env, order_id)) == [("podium-post", "down"), ("podium-global", "accepted")]


@pytest.mark.engine
def test_a_hung_carrier_counts_as_down_and_the_label_it_made_is_voided(
    podium_env: PodiumEnv, carriers: CarrierProvider, breakers: ProviderCircuits
) -> None:
    carriers.hang("podium-post")
    order_id = new_key("order")
    shipment = created(podium_env, order_id)
    assert outcomes(shipment) == [("podium-post", "no_answer"), ("podium-global", "accepted")]
    assert shipment["attempts"][0]["detail"] == "did not answer within 0.3 s"
    stray = label_key(order_id, "podium-post")
    made = carriers.label(stray)
    assert made is not None  # the hung carrier made a label all the same
    # VoidStray voids it after breaker_reset; the carrier still hangs, so it acts and does not answer,
    # and the void is asked again later (answered from the carrier's record), while the carrier hangs.
    assert_eventually(lambda: (carriers.label(stray) or {}).get("status") == "voided", message="the void")
    assert_eventually(lambda: carriers.requests(f"void:{stray}") >= 2, message="the void asked again")
    carriers.restore("podium-post")
    assert effects(carriers, stray, "void") == 1
    final = podium_env.call_private(f"/ShopShipping/{order_id}/Get")
    assert (final["carrier"], final["status"]) == ("podium-global", "label_created")
    assert carriers.label(label_key(order_id, "podium-global"))["status"] == "created"  # type: ignore[index]


# -- the breaker -----------------------------------------------------------------------------------------


def test_the_breaker_opens_after_repeated_downs_skips_the_carrier_and_closes_after_reset(
    tmp_path: Any,
) -> None:
    carriers = CarrierProvider(tmp_path, timeout=timedelta(milliseconds=200))
    circuits = ProviderCircuits(BreakerSettings(failures=2, reset=timedelta(milliseconds=300)))

    def ask(key: str) -> tuple[CarrierOutcome, str]:
        asked = ask_carrier(carriers, circuits, "podium-post", key, HOME, 1)
        return asked.attempt.outcome, asked.attempt.detail

    carriers.take_down("podium-post")
    assert ask("b-1") == (CarrierOutcome.DOWN, "is down (503: podium-post is unavailable)")
    assert ask("b-2")[0] == CarrierOutcome.DOWN
    assert circuits.state("podium-post") == "open"
    # Open: the carrier is back, but it is not asked until the reset time has passed.
    carriers.restore("podium-post")
    outcome, detail = ask("b-3")
    assert outcome == CarrierOutcome.DOWN
    assert detail.startswith("is down (circuit open: not called, next try in")
    assert carriers.requests("b-3") == 0
    # A refusal is an answer: it neither counts as a failure nor is hidden behind the circuit.
    assert_eventually(lambda: ask("b-4")[0] == CarrierOutcome.ACCEPTED, timeout=10, message="half-open trial")
    assert circuits.state("podium-post") == "closed"
    remote = ask_carrier(carriers, circuits, "podium-post", "b-5", {**HOME, "zip": "99501"}, 1)
    assert remote.attempt.outcome == CarrierOutcome.REFUSED
    assert circuits.state("podium-post") == "closed"

    carriers.hang("podium-post")
    for key in ("b-6", "b-7"):
        assert ask(key) == (CarrierOutcome.NO_ANSWER, "did not answer within 0.2 s")
    assert circuits.state("podium-post") == "open"


@pytest.mark.engine
def test_the_shipping_breaker_skips_a_failing_carrier_until_it_half_opens(
    podium_env: PodiumEnv, carriers: CarrierProvider, breakers: ProviderCircuits
) -> None:
    carriers.take_down("podium-post")
    for _ in range(2):
        assert outcomes(created(podium_env, new_key("order")))[0] == ("podium-post", "down")
    assert breakers.state("podium-post") == "open"
    carriers.restore("podium-post")
    order_id = new_key("order")
    skipped = created(podium_env, order_id)
    assert skipped["attempts"][0]["detail"].startswith("is down (circuit open")
    assert carriers.requests(label_key(order_id, "podium-post")) == 0

    # After breaker_reset the carrier is asked again, and answers.
    def asked_again() -> dict[str, Any]:
        shipment = created(podium_env, new_key("order"))
        assert shipment["carrier"] == "podium-post", shipment["attempts"]
        return shipment

    later = assert_eventually(asked_again, timeout=10, message="podium-post asked again")
    assert outcomes(later) == [("podium-post", "accepted")]
    assert breakers.state("podium-post") == "closed"


# -- cancellation ----------------------------------------------------------------------------------------


@pytest.mark.engine
def test_a_cancel_before_pick_up_voids_the_label_once(
    podium_env: PodiumEnv, carriers: CarrierProvider
) -> None:
    order_id = new_key("order")
    path = f"/ShopShipping/{order_id}"
    shipment = created(podium_env, order_id)
    key = shipment["labelKey"]

    cancelled = podium_env.call_private(f"{path}/Cancel", {"reason": "changed my mind"})
    assert (cancelled["status"], cancelled["cancelled"], cancelled["cancelReason"]) == (
        "cancelled",
        True,
        "changed my mind",
    )
    assert carriers.label(key)["status"] == "voided"  # type: ignore[index]
    assert podium_env.call_private(f"{path}/Cancel", {}) == cancelled  # a repeat answers the same
    assert created(podium_env, order_id) == cancelled
    assert (carriers.requests(f"void:{key}"), effects(carriers, key, "void")) == (1, 1)

    scan = podium_env.post(f"{path}/UpdateTracking", {"updateId": "scan-1", "status": "in_transit"})
    assert scan.status_code == 409, scan.text
    assert "was cancelled" in scan.json()["message"]
    delivered = podium_env.post(f"{path}/ConfirmDelivery", {"signedBy": "A. Customer"})
    assert delivered.status_code == 409, delivered.text


@pytest.mark.engine
def test_a_cancel_after_the_carrier_picked_the_parcel_up_is_refused(
    podium_env: PodiumEnv, carriers: CarrierProvider
) -> None:
    order_id = new_key("order")
    shipment = created(podium_env, order_id)
    carriers.pick_up(shipment["labelKey"])
    refused = podium_env.post_private(f"/ShopShipping/{order_id}/Cancel", {})
    assert refused.status_code == 409, refused.text
    assert "has picked up the parcel" in refused.json()["message"]
    assert podium_env.call_private(f"/ShopShipping/{order_id}/Get")["status"] == "label_created"
    assert effects(carriers, shipment["labelKey"], "void") == 0


@pytest.mark.engine
def test_a_cancel_while_the_carrier_is_down_is_a_503_and_can_be_asked_again(
    podium_env: PodiumEnv, carriers: CarrierProvider, breakers: ProviderCircuits
) -> None:
    order_id = new_key("order")
    shipment = created(podium_env, order_id)
    carriers.take_down("podium-post")
    down = podium_env.post_private(f"/ShopShipping/{order_id}/Cancel", {})
    assert down.status_code == 503, down.text
    assert podium_env.call_private(f"/ShopShipping/{order_id}/Get")["cancelled"] is False
    carriers.restore("podium-post")
    assert podium_env.call_private(f"/ShopShipping/{order_id}/Cancel", {})["status"] == "cancelled"
    assert effects(carriers, shipment["labelKey"], "void") == 1


@pytest.mark.engine
def test_a_cancel_after_a_scan_is_refused_and_without_a_shipment_is_a_404(
    podium_env: PodiumEnv, carriers: CarrierProvider
) -> None:
    # A scan is recorded on the order, so this one needs an order.
    order_id = new_key("order")
    assert place(podium_env, order_id, order_body())["status"] == "completed"
    path = f"/ShopShipping/{order_id}"
    podium_env.call(f"{path}/UpdateTracking", {"updateId": "scan-1", "status": "in_transit"})
    refused = podium_env.post_private(f"{path}/Cancel", {})
    assert refused.status_code == 409, refused.text
    assert "the carrier has scanned the parcel (in_transit)" in refused.json()["message"]
    label = podium_env.call_private(f"{path}/Get")["labelKey"]
    assert effects(carriers, label, "void") == 0

    missing = podium_env.post_private(f"/ShopShipping/{new_key('order')}/Cancel", {})
    assert missing.status_code == 404, missing.text


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize(
    ("handler", "body", "field"),
    [
        (
            "CreateShipment",
            {"customerId": "c", "address": {**HOME, "country": "usa"}, "lines": {"A": 1}},
            "address.country",
        ),
        ("CreateShipment", {"customerId": "c", "address": HOME, "lines": {"A": 0}}, "lines.A"),
        ("CreateShipment", {"customerId": "c", "address": HOME, "lines": {}}, "lines"),
        ("CreateShipment", {"customerId": "c", "lines": {"A": 1}}, "address"),
        ("Cancel", {"reason": "x" * 501}, "reason"),
        ("UpdateTracking", {"updateId": "", "status": "in_transit"}, "updateId"),
    ],
    ids=["country", "quantity", "no-lines", "no-address", "reason", "update-id"],
)
def test_bad_input_is_a_400_naming_the_field(
    podium_env: PodiumEnv, handler: str, body: dict[str, Any], field: str
) -> None:
    order_id = new_key("order")
    response = podium_env.post_private(f"/ShopShipping/{order_id}/{handler}", body)
    assert response.status_code == 400, response.text
    assert f"{field}:" in response.json()["message"]
    assert podium_env.post_private(f"/ShopShipping/{order_id}/Get").status_code == 404
