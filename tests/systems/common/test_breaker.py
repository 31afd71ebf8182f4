"""A slow or hung card provider never hangs a payment: client timeout, circuit breaker, exactly-once money.

First the breaker on its own, against the simulated gateway in a folder of the test's own (no engine):
it opens after the failures, fails fast while open (the provider's request counter does not move), lets
one call through when its reset time has passed, and closes after that call succeeds. Then the payment
service in a process of its own on a real engine, configured as an operator would (``PODIUM_PAYMENTS_*``),
with its provider hung through the gateway's switch: the payment retries and succeeds once the provider
is back, or fails cleanly when it stays away, and either way the money moved at most once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from restate.exceptions import RetryableError

from podium import TerminalError
from podium.runtime import Engine
from podium.testing import PodiumEnv, assert_eventually, new_key, process_env
from services.common.circuits import BreakerSettings, ProviderCircuits, guarded
from services.common.providers import PaymentGateway

TIMEOUT = timedelta(milliseconds=200)


@pytest.fixture
def gateway(tmp_path: Path) -> PaymentGateway:
    """The simulated card gateway in the test's own folder, called with a short client timeout."""
    return PaymentGateway(tmp_path, timeout=TIMEOUT)


@pytest.fixture
def circuits() -> ProviderCircuits:
    return ProviderCircuits(BreakerSettings(failures=3, reset=timedelta(milliseconds=300)))


def charge(
    gateway: PaymentGateway, payment_id: str, provider: str = "primary", customer: str = "c-1"
) -> Callable[[], Any]:
    return lambda: gateway.charge(
        payment_id, customer_id=customer, amount_cents=1_000, description="test", provider=provider
    )


def charges(gateway: PaymentGateway, payment_id: str) -> int:
    return len([e for e in gateway.effects(kind="charge") if e["key"] == payment_id])


def test_the_breaker_opens_fails_fast_half_opens_and_closes(
    gateway: PaymentGateway, circuits: ProviderCircuits
) -> None:
    gateway.hang("primary")
    # Three calls in a row reach the hung provider, which charges and never answers: each times out.
    for n in range(3):
        with pytest.raises(RetryableError, match=r"did not answer within 0\.2 s"):
            guarded("primary", charge(gateway, f"p-{n}"), circuits)
        assert (gateway.requests(f"p-{n}"), charges(gateway, f"p-{n}")) == (1, 1)
    assert circuits.state("primary") == "open"

    # Open: calls fail at once and never reach the provider; the other provider is not affected.
    for _ in range(5):
        with pytest.raises(RetryableError, match="circuit open, not called") as refused:
            guarded("primary", charge(gateway, "p-fast"), circuits)
        assert refused.value.retry_after is not None
        assert refused.value.retry_after <= timedelta(milliseconds=300)
    assert gateway.requests("p-fast") == 0
    assert guarded("backup", charge(gateway, "p-backup", "backup"), circuits)["status"] == "succeeded"

    # After the reset time one call goes through (half-open); the provider still hangs, so it opens again.
    def let_through() -> bool:
        with contextlib.suppress(RetryableError):
            guarded("primary", charge(gateway, "p-trial"), circuits)
        return gateway.requests("p-trial") == 1

    assert_eventually(let_through, timeout=10, interval=0.05, message="the half-open trial")
    with pytest.raises(RetryableError, match="circuit open"):
        guarded("primary", charge(gateway, "p-after-trial"), circuits)
    assert gateway.requests("p-after-trial") == 0

    # The provider answers again: the next trial succeeds and closes the circuit. The retried payment is
    # answered from the provider's record: two requests, one charge.
    gateway.recover("primary")

    def retried() -> dict[str, Any]:
        try:
            answer: dict[str, Any] = guarded("primary", charge(gateway, "p-0"), circuits)
        except RetryableError as exc:
            raise AssertionError(str(exc)) from exc
        return answer

    assert assert_eventually(retried, timeout=10, interval=0.05)["status"] == "succeeded"
    assert circuits.state("primary") == "closed"
    assert (gateway.requests("p-0"), charges(gateway, "p-0")) == (2, 1)
    assert guarded("primary", charge(gateway, "p-closed"), circuits)["status"] == "succeeded"


def test_declines_are_answers_not_failures(gateway: PaymentGateway, circuits: ProviderCircuits) -> None:
    for n in range(5):
        with pytest.raises(TerminalError, match="card declined") as declined:
            guarded("primary", charge(gateway, f"d-{n}", customer="declined-1"), circuits)
        assert declined.value.status_code == 402
    assert circuits.state("primary") == "closed"


def test_a_slow_provider_within_the_timeout_is_waited_for(
    gateway: PaymentGateway, circuits: ProviderCircuits
) -> None:
    gateway.slow_down("primary", by=timedelta(milliseconds=50))
    assert guarded("primary", charge(gateway, "s-1"), circuits)["status"] == "succeeded"
    gateway.slow_down("primary", by=timedelta(seconds=5))
    with pytest.raises(RetryableError, match="did not answer"):
        guarded("primary", charge(gateway, "s-2"), circuits)
    assert charges(gateway, "s-2") == 1  # the money moved although the answer never came
    gateway.recover("primary")
    assert gateway.outage("primary") is None


# -- the payment service on a real engine ----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(
    podium_private_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PodiumEnv, PaymentGateway]]:
    """The common deployment in a process, with providers of its own and short timeouts (environment)."""
    data = tmp_path_factory.mktemp("breaker")
    settings = {
        "PODIUM_DATA_DIR": str(data),
        "PODIUM_PAYMENTS_CALL_TIMEOUT": "0.3",
        "PODIUM_PAYMENTS_BREAKER_FAILURES": "2",
        "PODIUM_PAYMENTS_BREAKER_RESET": "0.5",
    }
    log = data / "common.log"
    with process_env(podium_private_engine, "services.common.app:app", log_file=log, env=settings) as pair:
        yield pair[0], PaymentGateway(data / "providers")


@pytest.fixture
def env(deployment: tuple[PodiumEnv, PaymentGateway]) -> Iterator[PodiumEnv]:
    yield deployment[0]
    deployment[1].recover("primary")  # whatever the test did, the provider answers again after it


@pytest.fixture
def provider(deployment: tuple[PodiumEnv, PaymentGateway]) -> PaymentGateway:
    """The deployment's simulated gateway: its switch and its counters."""
    return deployment[1]


@pytest.mark.engine
def test_a_payment_waits_out_a_hung_provider_and_charges_once(
    env: PodiumEnv, provider: PaymentGateway
) -> None:
    payment_id = new_key("pay")
    provider.hang("primary")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        paying = pool.submit(
            env.post_private, f"/PaymentService/{payment_id}/Charge", {"customerId": "c-1", "amount": 25}
        )
        # Two attempts reached the provider, which took the money and never answered, and opened the
        # circuit; a third reached it only when the circuit let a trial through after its reset time.
        assert_eventually(lambda: provider.requests(payment_id) >= 3, timeout=20, message="a half-open trial")
        assert charges(provider, payment_id) == 1
        provider.recover("primary")
        answer = paying.result(timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "charged"
    assert charges(provider, payment_id) == 1
    assert provider.requests(payment_id) >= 3  # every attempt after the first was answered from the record


@pytest.mark.engine
def test_a_provider_that_stays_hung_fails_the_payment_cleanly_and_the_refund_finds_the_charge(
    env: PodiumEnv, provider: PaymentGateway
) -> None:
    payment_id = new_key("pay")
    provider.hang("primary")
    # The charge's run retries through timeouts and an open circuit, then gives up: the call ends.
    failed = env.post_private(f"/PaymentService/{payment_id}/Charge", {"customerId": "c-1", "amount": 25})
    assert failed.status_code in (503, 504), failed.text
    assert "payment provider primary" in failed.json()["message"]
    assert charges(provider, payment_id) == 1  # the first attempt charged before the provider went quiet
    # The caller compensates with a refund by the payment id: the gateway's record finds the charge.
    provider.recover("primary")
    refunded = env.call_private(f"/PaymentService/{payment_id}/Refund", {})
    assert (refunded["status"], refunded["refunded"]) == ("refunded", 25)
    assert provider.balance_cents(refunded["chargeId"]) == 0
    assert charges(provider, payment_id) == 1
