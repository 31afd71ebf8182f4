"""Chaos: ``kill -9`` of the shop's process mid-saga; the order still ends once, and the read side agrees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.runtime import DeploymentProcess, Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from tests.systems.money import money
from tests.systems.shop.conftest import events, order_body, place, stock

pytestmark = pytest.mark.engine


@pytest.fixture
def crash_pair(
    podium_private_engine: Engine, tmp_path: Path
) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    with process_env(
        podium_private_engine, "tests.systems.shop.conftest:shop", log_file=tmp_path / "shop.log"
    ) as pair:
        yield pair


@pytest.mark.parametrize(
    ("address", "outcome"),
    [({}, "completed"), ({"country": "AQ"}, "cancelled")],
    ids=["completes", "compensates"],
)
def test_kill_9_mid_charge_ends_once_with_one_charge_and_a_consistent_read_model(
    crash_pair: tuple[PodiumEnv, DeploymentProcess], address: dict[str, str], outcome: str
) -> None:
    env, deployment = crash_pair
    sku = new_key("LIMITED-4")
    order_id = new_key("order")
    body = order_body(
        customer_id=new_key("slow"),  # the gateway answers 3 s after moving the money
        items=[{"sku": sku, "quantity": 2, "unitPrice": 10.0}],
        address=address,
    )
    payment_id = f"{order_id}-payment"
    env.send(f"/ShopOrder/{order_id}/Place", body, idempotency_key=order_id)
    assert_eventually(lambda: money(payment_id)["charges"], timeout=20, message="the charge")
    deployment.kill()  # SIGKILL while the charge's answer is on its way
    deployment.start()

    def finished() -> dict[str, Any]:
        response = env.post(f"/ShopOrder/{order_id}/GetStatus")
        status: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return status if status.get("isComplete") else {}

    status = assert_eventually(finished, timeout=60, message="the order to finish")
    assert status["phase"] == outcome
    result = place(env, order_id, body)  # the stored answer, not a second run
    assert result["status"] == outcome
    stream = events(env, order_id)
    assert [e["sequence"] for e in stream] == list(range(1, len(stream) + 1))
    assert len({e["type"] for e in stream}) == len(stream)  # no step recorded twice
    # The cut-off gateway call ran again after the restart and was answered from its record.
    assert money(payment_id)["requests"] == 2
    if outcome == "completed":
        assert money(payment_id) == {"charges": 1, "refunds": 0, "net": 2000, "requests": 2}
        assert stock(env, sku)["available"] == 2
    else:
        assert money(payment_id) == {"charges": 1, "refunds": 1, "net": 0, "requests": 2}
        assert stock(env, sku)["available"] == 4
        assert [e["type"] for e in stream][-3:] == ["PaymentRefunded", "InventoryReleased", "OrderCancelled"]

    def consistent() -> dict[str, Any]:
        response = env.post(f"/ShopOrderView/{order_id}/Get")
        found: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return found if found.get("version") == len(stream) else {}

    summary = assert_eventually(consistent, timeout=20, message="the read model to catch up")
    assert {k: summary[k] for k in result} == result
    assert summary["pending"] == []

    def audited() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = env.call(f"/ShopAudit/{order_id}/Entries")["entries"]
        return found if len(found) == len(stream) else []

    trail = assert_eventually(audited, timeout=20, message="the audit trail to catch up")
    assert [(e["sequence"], e["operation"]) for e in trail] == [(e["sequence"], e["type"]) for e in stream]
