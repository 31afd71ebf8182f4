"""No card number at rest: the card goes to the vault at the edge, and only its token goes anywhere else.

The whole stack runs as it does under ``podium up``, each part a process with its log file: an engine of
the module's own, the shop (with payments) in a deployment process, and the gateway with the vault's
edge route. A client tokenises a card and orders with the token; then the engine's state and journal
(admin SQL), every log file, and every byte of the engine's and the providers' data on disk are searched
for the card number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.cli import gateway_process, issuer_key, start_gateway
from podium.gateway import TokenIssuer
from podium.runtime import Engine, free_port
from podium.testing import PodiumEnv, engine_holds, new_key, process_env, stuck_invocations
from tests.systems.shop.conftest import order_body

pytestmark = pytest.mark.engine

CARD = "4000056655665556"
"""A Visa debit test number no other test uses, so finding it anywhere means this test leaked it."""
DECLINED = "4000000000000002"


class Stack:
    def __init__(self, env: PodiumEnv, gateway_url: str, token: str, files: list[Path]) -> None:
        self.env = env
        self.url = gateway_url
        self.headers = {"authorization": f"Bearer {token}"}
        self.files = files

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers, timeout=60)

    def tokenize(self, number: str) -> dict[str, Any]:
        answer = self.post(
            "/PaymentService/Tokenize", {"cardNumber": number, "expMonth": 12, "expYear": 2099, "cvc": "123"}
        )
        assert answer.status_code == 201, answer.text
        token: dict[str, Any] = answer.json()
        return token


@pytest.fixture(scope="module")
def stack(podium_private_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("card-logs")
    data = Path(os.environ["PODIUM_DATA_DIR"])  # the providers' (and the vault's) folder of this session
    with process_env(
        podium_private_engine, "tests.systems.shop.conftest:shop", log_file=logs / "shop.log"
    ) as (env, _):
        port = free_port()
        gateway = gateway_process(
            podium_private_engine.ingress_url,
            admin_url=podium_private_engine.admin_url,
            data_dir=data,
            edge=["services.common.vault:EDGE_ROUTES"],
            port=port,
            max_in_flight=16,
            max_queue=16,
            log_file=logs / "gateway.log",
        )
        start_gateway(gateway, port=port)
        try:
            token = TokenIssuer(issuer_key(data)).issue(
                "shopper", ["shop:write", "shop:read", "common:write"], timedelta(minutes=30)
            )
            files = [logs, podium_private_engine.config.data_dir, data / "providers"]
            yield Stack(env, f"http://127.0.0.1:{port}", token, files)
        finally:
            gateway.stop()


def test_an_order_paid_with_a_tokenised_card_leaves_no_card_number_anywhere(stack: Stack) -> None:
    card = stack.tokenize(CARD)
    assert card["last4"] == "5556"
    assert card["brand"] == "visa"
    assert card["token"].startswith("tok_")
    assert CARD not in str(card)

    order_id = new_key("order")
    placed = stack.post(f"/ShopOrder/{order_id}/Place", order_body(method=card["token"]))
    assert placed.status_code == 200, placed.text
    assert placed.json()["status"] == "completed"

    # The card number itself is stopped at the door, wherever it is put.
    for body in (
        order_body(method=CARD),
        {**order_body(), "note": f"card {CARD[:4]} {CARD[4:8]} {CARD[8:]}"},
    ):
        refused = stack.post(f"/ShopOrder/{new_key('order')}/Place", body)
        assert refused.status_code == 400, refused.text
        assert "Tokenize" in refused.json()["message"]

    # Declined and unknown cards end the order cleanly: cancelled, nothing retrying.
    declined = stack.post(
        f"/ShopOrder/{new_key('order')}/Place", order_body(method=stack.tokenize(DECLINED)["token"])
    )
    assert declined.json()["status"] == "cancelled"
    unknown = stack.post(f"/ShopOrder/{new_key('order')}/Place", order_body(method="tok_" + "0" * 24))
    assert unknown.json()["status"] == "cancelled"
    assert stuck_invocations(stack.env.admin_url) == []

    assert engine_holds(stack.env.admin_url, CARD) == []
    # What the engine holds instead is the token (so the search above could have found something).
    assert engine_holds(stack.env.admin_url, card["token"]) != []

    leaked = [path for path in _files(stack.files) if CARD.encode() in path.read_bytes()]
    assert leaked == [], f"the card number is stored in {leaked}"


def test_a_bad_card_is_a_400_naming_the_field_without_echoing_it(stack: Stack) -> None:
    cases = {
        "4242424242424241": "cardNumber",  # fails the Luhn check
        "42424242": "cardNumber",
        "4242-4242-4242-42x2": "cardNumber",
    }
    for number, field in cases.items():
        answer = stack.post(
            "/PaymentService/Tokenize", {"cardNumber": number, "expMonth": 1, "expYear": 2099, "cvc": "123"}
        )
        assert answer.status_code == 400, number
        assert field in answer.json()["message"]
        assert number not in answer.text
    expired = stack.post(
        "/PaymentService/Tokenize", {"cardNumber": CARD, "expMonth": 1, "expYear": 2020, "cvc": "123"}
    )
    assert expired.status_code == 400
    assert "expired" in expired.json()["message"]
    no_scope = httpx.post(
        f"{stack.url}/PaymentService/Tokenize",
        json={"cardNumber": CARD, "expMonth": 1, "expYear": 2099, "cvc": "123"},
        headers={
            "authorization": "Bearer "
            + TokenIssuer(issuer_key(Path(os.environ["PODIUM_DATA_DIR"]))).issue(
                "shopper", ["shop:write"], timedelta(minutes=5)
            )
        },
    )
    assert no_scope.status_code == 403


def _files(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                yield path
