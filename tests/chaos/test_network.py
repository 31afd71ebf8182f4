"""Network faults between the sagas and their shared participants, under load, on a real engine.

The shared deployment (payments, mail, fraud) is registered through a faulty proxy (``conftest.py``), so
every call a transfer, a trip or an order makes to it crosses a network the test breaks at will: slowed,
flapping, dropping every connection (message loss), and partitioned (a blackhole: nothing gets through
and nobody is told). Each fault is held until it has visibly hit traffic (the proxy's counters), never
for a slept-out time.

What a person expects, and what the tests hold the system to:

- **A partition or message loss that heals**: nothing is lost and nothing is done twice. The engine
  retries every call the network swallowed, with backoff, on a fresh connection; a step whose answer was
  lost runs again and the providers answer it from their records. Every accepted request ends, every
  invariant of :mod:`tests.chaos.checker` holds, nothing is left backing off or paused.
- **A partition that outlasts a saga's deadline**: the saga gives up at its deadline (the customer is
  not kept waiting for a payment that may never come): it cancels the call in flight and compensates.
  Its compensation (the refund) needs the participant on the other side of the partition, so it waits,
  durably, until the partition heals; then the checkout answers ``failed`` (timed out), and whatever was
  charged is refunded exactly once. The reference sagas have no deadline: there, the engine's retry
  policy decides (30 attempts over about four minutes, after which a virtual object's invocation such as
  a payment pauses for an operator to resume, so that what it holds is never dropped); a partition that
  long does not fit the suite, so the deadline case is the one tested.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pytest

from podium.testing import assert_eventually, new_key, stuck_invocations
from services.common.providers import PaymentGateway
from tests.chaos.checker import check_all, check_effects, figures
from tests.chaos.conftest import ChaosStack
from tests.chaos.gather import effects, gather, pending, snapshot, wait_until_ended
from tests.chaos.load import Load

pytestmark = pytest.mark.engine

BATCH = 20
"""Requests sent at a time while a fault holds (transfers, trips and orders, 3:2:1): 120 in all."""


def test_delay_cut_drop_and_blackhole_under_load_lose_nothing_and_double_nothing(
    chaos_stack: ChaosStack,
) -> None:
    stack, proxy = chaos_stack.facts, chaos_stack.proxy
    gateway = PaymentGateway(stack.providers_dir)
    before = snapshot(stack)
    load = Load(chaos_stack.client, tag=new_key("net"))
    load.open_accounts(8)

    # A slow link: every chunk to and from the shared services waits 150 ms.
    proxy.delay(timedelta(milliseconds=150))
    slow = load.send_all(load.mix(BATCH))
    assert_eventually(
        lambda: len(pending(stack, slow)) <= BATCH // 2, timeout=30, message="progress on the slow link"
    )

    # The link flaps: the open connections are reset with calls on them, one of them a charge the
    # gateway has made and not yet answered (slow-): its answer is lost, and the step runs again.
    proxy.heal()
    flapping = load.send_all(load.mix(BATCH))
    slow_payments = [f"{r.key}-payment" for r in flapping if r.body.get("customerId", "").startswith("slow-")]
    assert slow_payments
    assert_eventually(
        lambda: any(gateway.charge_for_key(p) for p in slow_payments), timeout=20, message="a slow charge"
    )
    cut_before = proxy.stats()
    proxy.cut()
    assert proxy.stats().closed_by_fault > cut_before.closed_by_fault
    assert_eventually(
        lambda: proxy.stats().accepted > cut_before.accepted, timeout=20, message="the engine to reconnect"
    )

    # Message loss: every connection is reset, and every new one as soon as it opens, while the engine
    # retries again and again.
    dropping = load.send_all(load.mix(BATCH))
    proxy.drop()
    assert_eventually(lambda: proxy.stats().dropped >= 10, timeout=30, message="retries to be dropped")

    # A partition: everything is read and nothing is passed on or answered, while two batches arrive.
    proxy.blackhole()

    def swallowed(more_than: int) -> bool:
        return proxy.stats().discarded_bytes > more_than

    partitioned = []
    for _ in range(2):
        floor = proxy.stats().discarded_bytes + 5_000
        partitioned += load.send_all(load.mix(BATCH))
        assert_eventually(
            functools.partial(swallowed, floor), timeout=20, message="calls lost in the partition"
        )
    proxy.heal()
    healed = load.send_all(load.mix(BATCH))

    sent = [*slow, *flapping, *dropping, *partitioned, *healed]
    assert [r.refused for r in sent if not r.accepted] == []
    wait_until_ended(stack, sent, timeout=60)
    facts = gather(stack, load, before)
    assert check_all(facts) == []
    # The cut charge was made once although the gateway heard it twice.
    assert figures(facts)["repeated gateway requests answered from the record"] >= 1
    # Every path ran through the faults: completions, refusals and compensations alike.
    outcomes = {(s.kind, s.outcome) for s in facts.sent}
    assert {("transfer", "completed"), ("transfer", "failed"), ("transfer", "blocked")} <= outcomes
    assert {
        ("trip", "confirmed"),
        ("trip", "failed"),
        ("order", "completed"),
        ("order", "cancelled"),
    } <= outcomes


def test_a_partition_past_the_deadline_fails_the_checkout_and_refunds_once_it_heals(
    chaos_stack: ChaosStack,
) -> None:
    client, proxy, providers = chaos_stack.client, chaos_stack.proxy, chaos_stack.facts.providers_dir

    def checkout(key: str, customer: str) -> None:
        body = {"customerId": customer, "amount": 42.5, "email": f"{key}@example.com"}
        response = client.post(f"/ChaosCheckout/{key}/Run/send", json=body, headers={"idempotency-key": key})
        assert response.is_success, response.text

    def answer(key: str) -> dict[str, Any] | None:
        response = client.get(f"/restate/invocation/ChaosCheckout/{key}/Run/{key}/output")
        found: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return found

    def result(key: str) -> dict[str, Any]:
        found = answer(key)
        assert found is not None, f"checkout {key} has not answered"
        return found

    def saga_status(key: str) -> str | None:
        log = client.post(f"/ChaosCheckout/{key}/Log").json()
        return None if log is None else str(log["status"])

    def money(key: str) -> tuple[int, int]:
        """Charges made for the checkout, and cents kept (charged minus refunded)."""
        done = [e for e in effects(providers) if e.key.startswith(f"{key}-payment")]
        charged = [e for e in done if e.kind == "charge"]
        return len(charged), sum(e.cents for e in charged) - sum(e.cents for e in done if e.kind == "refund")

    healthy = new_key("checkout")
    checkout(healthy, f"cust-{healthy}")
    assert assert_eventually(lambda: result(healthy), timeout=20)["status"] == "paid"
    assert money(healthy) == (1, 4_250)

    # Charged just before the partition: the provider took the money and answers 3 s late (slow-), so
    # the answer is lost in the partition.
    charged = [new_key("checkout") for _ in range(3)]
    for key in charged:
        checkout(key, f"slow-{key}")
    assert_eventually(lambda: all(money(k)[0] == 1 for k in charged), timeout=20, message="the charges")
    proxy.blackhole()
    # Started during the partition: the charge never reaches the provider.
    unreached = [new_key("checkout") for _ in range(3)]
    for key in unreached:
        checkout(key, f"cust-{key}")

    # Each deadline passes inside the partition: the saga has given up and waits to compensate.
    everyone = [*charged, *unreached]
    assert_eventually(
        lambda: all(saga_status(k) == "compensating" for k in everyone), timeout=30, message="the deadlines"
    )
    assert all(answer(k) is None for k in everyone)  # no answer while the refund cannot be made
    proxy.heal()

    for key in everyone:
        ended = assert_eventually(functools.partial(result, key), timeout=60)
        assert ended["status"] == "failed"
        assert "checkout timed out after 0:00:03 during charge; compensated: charge" in ended["reason"]
    assert [money(k) for k in charged] == [(1, 0)] * 3  # charged once, refunded once
    assert [money(k) for k in unreached] == [(0, 0)] * 3
    receipts = [e for e in effects(providers) if e.kind == "email" and e.key.endswith("-receipt")]
    assert [e.key for e in receipts] == [f"{healthy}-receipt"]
    assert check_effects(effects(providers)) == []
    assert stuck_invocations(chaos_stack.engine.admin_url) == []
