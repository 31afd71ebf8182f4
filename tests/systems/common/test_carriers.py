"""The simulated carriers on their own (no engine): labels once per key, refusals by test data, voids,
pick-ups, and the switches that take a carrier down or make it hang, in a folder of the test's own."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from podium.testing import assert_eventually
from services.common.providers import (
    CARRIERS,
    INVALID_ZIP,
    REMOTE_ZIP_PREFIX,
    UNSERVED_COUNTRIES,
    CarrierProvider,
    ProviderError,
    ProviderTimeout,
)

HOME = {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"}


@pytest.fixture
def carriers(tmp_path: Path) -> CarrierProvider:
    return CarrierProvider(tmp_path, timeout=timedelta(milliseconds=200))


def labels(carriers: CarrierProvider, key: str, kind: str = "label") -> int:
    return len([e for e in carriers.effects(kind=kind) if e["key"] == key])


def test_a_label_is_made_once_per_key_by_the_carrier(carriers: CarrierProvider) -> None:
    first = carriers.create_label("k-1", carrier="podium-post", address=HOME, parcels=2)
    assert first["carrier"] == "podium-post"
    assert re.fullmatch(r"PP[0-9A-F]{12}", first["trackingNumber"])
    assert first["labelUrl"].endswith(f"/{first['labelId']}.pdf")
    assert first["status"] == "created"
    assert carriers.create_label("k-1", carrier="podium-post", address=HOME, parcels=2) == first
    assert (carriers.requests("k-1"), labels(carriers, "k-1")) == (2, 1)
    stored = carriers.label("k-1")
    assert stored is not None
    assert (stored["trackingNumber"], stored["parcels"]) == (first["trackingNumber"], 2)

    other = carriers.create_label("k-2", carrier="podium-global", address=HOME, parcels=1)
    assert re.fullmatch(r"PG[0-9A-F]{12}", other["trackingNumber"])
    with pytest.raises(ProviderError, match="was used with podium-post") as reused:
        carriers.create_label("k-1", carrier="podium-global", address=HOME, parcels=2)
    assert reused.value.code == 409


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize(
    ("address", "why"),
    [
        *[({"country": c, "zip": "1"}, f"does not deliver to {c}") for c in sorted(UNSERVED_COUNTRIES)],
        ({"country": "US", "zip": INVALID_ZIP}, "zip 00000 does not exist"),
    ],
)
def test_no_carrier_takes_the_documented_unshippable_addresses(
    carriers: CarrierProvider, carrier: str, address: dict[str, Any], why: str
) -> None:
    key = f"bad-{carrier}-{address['country']}-{address['zip']}"
    for _ in range(2):  # the refusal is remembered by key, as a label would be
        with pytest.raises(ProviderError, match=why) as refused:
            carriers.create_label(key, carrier=carrier, address=address, parcels=1)
        assert refused.value.code == 422
    assert (carriers.requests(key), labels(carriers, key), carriers.label(key)) == (2, 0, None)


def test_podium_post_refuses_remote_zips_and_other_continents_which_podium_global_takes(
    carriers: CarrierProvider,
) -> None:
    remote = {**HOME, "zip": REMOTE_ZIP_PREFIX + "501"}
    with pytest.raises(ProviderError, match="remote area") as refused:
        carriers.create_label("r-post", carrier="podium-post", address=remote, parcels=1)
    assert refused.value.code == 422
    assert (
        carriers.create_label("r-global", carrier="podium-global", address=remote, parcels=1)["status"]
        == "created"
    )

    berlin = {"zip": "10115", "country": "DE"}
    with pytest.raises(ProviderError, match="ships within CA, MX, US only, not to DE"):
        carriers.create_label("de-post", carrier="podium-post", address=berlin, parcels=1)
    assert carriers.create_label("de-global", carrier="podium-global", address=berlin, parcels=1)
    toronto = {"zip": "M5H 2N2", "country": "CA"}
    assert carriers.create_label("ca-post", carrier="podium-post", address=toronto, parcels=1)


def test_a_request_the_carrier_cannot_read_is_a_400(carriers: CarrierProvider) -> None:
    for address, parcels in [({"country": "US"}, 1), (HOME, 0)]:
        with pytest.raises(ProviderError) as bad:
            carriers.create_label("unreadable", carrier="podium-post", address=address, parcels=parcels)
        assert bad.value.code == 400
    with pytest.raises(ProviderError, match="no carrier ups") as unknown:
        carriers.create_label("unknown", carrier="ups", address=HOME, parcels=1)
    assert unknown.value.code == 400


def test_a_label_is_voided_once_until_the_carrier_picks_the_parcel_up(carriers: CarrierProvider) -> None:
    made = carriers.create_label("v-1", carrier="podium-post", address=HOME, parcels=1)
    voided = carriers.void_label("v-1", carrier="podium-post")
    assert (voided["status"], voided["trackingNumber"]) == ("voided", made["trackingNumber"])
    assert carriers.void_label("v-1", carrier="podium-post") == voided
    assert (carriers.requests("void:v-1"), labels(carriers, "v-1", "void")) == (2, 1)
    stored = carriers.label("v-1")
    assert stored is not None
    assert stored["status"] == "voided"
    # The key is spent: asking for its label again is refused, and nothing is picked up.
    with pytest.raises(ProviderError, match="was voided") as again:
        carriers.create_label("v-1", carrier="podium-post", address=HOME, parcels=1)
    assert again.value.code == 409
    with pytest.raises(ProviderError, match="nothing to pick up"):
        carriers.pick_up("v-1")

    carriers.create_label("v-2", carrier="podium-global", address=HOME, parcels=1)
    assert carriers.pick_up("v-2")["status"] == "picked_up"
    assert carriers.pick_up("v-2")["status"] == "picked_up"
    assert labels(carriers, "v-2", "pickup") == 1
    with pytest.raises(ProviderError, match="picked up the parcel") as late:
        carriers.void_label("v-2", carrier="podium-global")
    assert late.value.code == 409
    with pytest.raises(ProviderError, match="has no label v-2") as elsewhere:
        carriers.void_label("v-2", carrier="podium-post")
    assert elsewhere.value.code == 404
    assert labels(carriers, "v-2", "void") == 0


def test_voiding_a_key_before_its_label_refuses_the_label_that_arrives_late(
    carriers: CarrierProvider,
) -> None:
    voided = carriers.void_label("late-1", carrier="podium-post")
    assert (voided["status"], voided["labelId"]) == ("voided", None)
    with pytest.raises(ProviderError, match="voided before any label was made") as late:
        carriers.create_label("late-1", carrier="podium-post", address=HOME, parcels=1)
    assert late.value.code == 409
    assert labels(carriers, "late-1") == 0
    with pytest.raises(ProviderError, match="no label late-1") as nothing:
        carriers.pick_up("late-1")
    assert nothing.value.code == 404


def test_a_carrier_taken_down_answers_503_and_does_nothing(carriers: CarrierProvider) -> None:
    carriers.take_down("podium-post")
    with pytest.raises(ProviderError, match="podium-post is unavailable") as down:
        carriers.create_label("d-1", carrier="podium-post", address=HOME, parcels=1)
    assert down.value.code == 503
    assert (carriers.requests("d-1"), carriers.label("d-1")) == (0, None)
    assert carriers.create_label("d-2", carrier="podium-global", address=HOME, parcels=1)  # the other one
    carriers.restore("podium-post")
    assert carriers.outage("podium-post") is None
    assert carriers.create_label("d-1", carrier="podium-post", address=HOME, parcels=1)["status"] == "created"

    carriers.take_down("podium-global", lasting=timedelta(milliseconds=100))
    assert carriers.outage("podium-global") is not None
    assert_eventually(lambda: carriers.outage("podium-global") is None, timeout=5, message="the outage's end")
    with pytest.raises(ValueError, match="carrier must be one of podium-post, podium-global"):
        carriers.take_down("ups")


def test_a_hung_carrier_makes_the_label_and_never_answers(carriers: CarrierProvider) -> None:
    carriers.hang("podium-global")
    with pytest.raises(ProviderTimeout, match=r"carrier podium-global did not answer within 0\.2 s") as hung:
        carriers.create_label("h-1", carrier="podium-global", address=HOME, parcels=1)
    assert hung.value.code == 504
    made = carriers.label("h-1")
    assert made is not None
    assert made["status"] == "created"
    carriers.restore("podium-global")
    assert (
        carriers.create_label("h-1", carrier="podium-global", address=HOME, parcels=1)["labelId"]
        == made["labelId"]
    )
    assert labels(carriers, "h-1") == 1
