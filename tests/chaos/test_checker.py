"""The chaos checker bites: made-up runs with one thing wrong each are reported, a clean run is not.

No engine: the checks are pure functions over facts, so every rule is tried on the smallest run that
breaks it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.chaos.checker import (
    Account,
    Effect,
    Facts,
    Hold,
    Inventory,
    Movement,
    Order,
    ReadModels,
    Sent,
    Stock,
    Stuck,
    Transfer,
    Trip,
    check_all,
    figures,
)


def clean_run() -> Facts:
    """Two transfers (one completed, one failed and reversed), two trips, two orders: all well."""
    alice = Account(
        "alice",
        opening=10_000,
        balance=7_500,
        ledger=(
            Movement("open", "open", 10_000, 10_000),
            Movement("debit", "tr-1", 2_500, 7_500),
            Movement("debit", "tr-2", 1_000, 6_500),
            Movement("credit", "tr-2:reversal", 1_000, 7_500),
        ),
    )
    bob = Account("bob", opening=0, balance=2_500, ledger=(Movement("credit", "tr-1", 2_500, 2_500),))
    frozen = Account("frozen-1", opening=0, balance=0)
    flight = Inventory(
        "FlightInventory/SFO-JFK-2024-12-15",
        capacity=100,
        after={"trip-1-flight": Hold("trip-1-flight", 2, ("*",), "committed")},
    )
    hotel = Inventory(
        "HotelInventory/New York",
        capacity=20,
        before={"old-hotel": Hold("old-hotel", 1, ("2024-12-15",), "committed")},
        after={
            "old-hotel": Hold("old-hotel", 1, ("2024-12-15",), "committed"),
            "trip-1-hotel": Hold("trip-1-hotel", 1, ("2024-12-15", "2024-12-16"), "committed"),
        },
    )
    return Facts(
        sent=(
            Sent("transfer", "tr-1", accepted=True, answer="completed", outcome="completed"),
            Sent("transfer", "tr-2", accepted=True, answer="failed", outcome="failed"),
            Sent("trip", "trip-1", accepted=True, answer="confirmed", outcome="confirmed"),
            Sent("trip", "trip-2", accepted=True, outcome="failed"),
            Sent("order", "order-1", accepted=True, answer="completed", outcome="completed"),
            Sent("order", "order-2", accepted=True, answer="cancelled", outcome="cancelled"),
            Sent("transfer", "tr-refused", accepted=False),
        ),
        accounts=(alice, bob, frozen),
        transfers=(
            Transfer("tr-1", "alice", "bob", 2_500, "completed"),
            Transfer("tr-2", "alice", "frozen-1", 1_000, "failed"),
        ),
        trips=(
            Trip("trip-1", "confirmed", "confirmed", "confirmed", "charged", price=106_500),
            Trip("trip-2", "failed", "cancelled", "cancelled", "refunded", price=50_000),
        ),
        inventories=(flight, hotel),
        orders=(
            Order(
                "order-1", "completed", {"WIDGET": 2}, 2_000, 5, ReadModels(5, "completed", 5, listed=True)
            ),
            Order(
                "order-2", "cancelled", {"WIDGET": 1}, 1_000, 6, ReadModels(6, "cancelled", 6, listed=True)
            ),
        ),
        stocks=(Stock("WIDGET", initial=10, available=8, reserved=2, holds={"order-1": 2}),),
        effects=(
            Effect("charge", "trip-1-payment", "ch_1", 106_500),
            Effect("charge", "trip-2-payment", "ch_2", 50_000),
            Effect("refund", "trip-2-payment:refund:0:50000", "ch_2", 50_000),
            Effect("email", "trip-1-confirmation", "c1@example.com"),
            Effect("charge", "order-1-payment", "ch_3", 2_000),
            Effect("charge", "order-2-payment", "ch_4", 1_000),
            Effect("refund", "order-2-payment:refund:0:1000", "ch_4", 1_000),
            Effect("email", "tr-1-sent", "alice@example.com"),
        ),
        provider_requests={"trip-1-payment": 2, "trip-2-payment": 1, "order-1-payment": 1},
    )


def test_a_clean_run_has_no_violation() -> None:
    facts = clean_run()
    assert check_all(facts) == []
    numbers = figures(facts)
    assert numbers["transfer completed"] == 1
    assert numbers["charges"] == 4
    assert numbers["repeated gateway requests answered from the record"] == 1


def test_a_lost_request_a_doubled_charge_a_broken_balance_and_a_leftover_hold_are_all_reported() -> None:
    run = clean_run()
    alice, bob, frozen = run.accounts
    broken = replace(
        run,
        # trip-3 was accepted and nothing ever came of it
        sent=(*run.sent, Sent("trip", "trip-3", accepted=True)),
        # order-1's charge went through twice
        effects=(*run.effects, Effect("charge", "order-1-payment", "ch_5", 2_000)),
        # bob got 1.00 that no ledger entry explains, and alice still holds 5.00 for a transfer
        accounts=(replace(alice, holds={"tr-9": 500}), replace(bob, balance=2_600), frozen),
    )
    violations = check_all(broken)
    assert "lost: trip trip-3 was accepted and the system knows nothing of it" in violations
    assert "payment order-1-payment charged 2 times" in violations
    assert "money not conserved: the accounts hold 10100 cents, 10000 were deposited (+100)" in violations
    assert "account bob: its ledger adds up to 2500 cents, its balance is 2600" in violations
    assert "account alice: hold tr-9 of 500 cents left" in violations
    assert any(v.startswith("order order-1 is completed: expected one charge") for v in violations)
    assert len(violations) == 6, violations


def mutate(name: str) -> Facts:
    """A clean run with one thing broken (``name``)."""
    run = clean_run()
    alice, bob, frozen = run.accounts
    trip_1, trip_2 = run.trips
    flight, hotel = run.inventories
    order_1, order_2 = run.orders
    (stock,) = run.stocks
    match name:
        case "still running":
            return replace(run, sent=(*run.sent[:3], replace(run.sent[3], outcome="pending"), *run.sent[4:]))
        case "answer disagrees":
            return replace(run, sent=(replace(run.sent[0], answer="failed"), *run.sent[1:]))
        case "debit booked twice":
            ledger = (*alice.ledger[:2], Movement("debit", "tr-1", 2_500, 5_000), *alice.ledger[2:])
            return replace(run, accounts=(replace(alice, ledger=ledger), bob, frozen))
        case "minted credit":
            gift = Movement("credit", "gift", 100, 2_600)
            return replace(
                run, accounts=(alice, replace(bob, balance=2_600, ledger=(*bob.ledger, gift)), frozen)
            )
        case "failed transfer kept the money":
            ledger = alice.ledger[:3]
            moved = replace(alice, balance=6_500, ledger=ledger)
            gain = Account(
                "frozen-1", opening=0, balance=1_000, ledger=(Movement("credit", "tr-2", 1_000, 1_000),)
            )
            return replace(run, accounts=(moved, bob, gain))
        case "credit to a bystander":
            carol = Account("carol", opening=0, balance=2_500, ledger=bob.ledger)
            return replace(run, accounts=(alice, replace(bob, balance=0, ledger=()), frozen, carol))
        case "confirmed trip with a cancelled hotel":
            return replace(run, trips=(replace(trip_1, hotel="cancelled"), trip_2))
        case "failed trip still holds seats":
            after = {**flight.after, "trip-2-flight": Hold("trip-2-flight", 1)}
            return replace(run, inventories=(replace(flight, after=after), hotel))
        case "overbooked":
            earlier = {"someone-flight": Hold("someone-flight", 99, ("*",), "committed")}
            return replace(
                run, inventories=(replace(flight, before=earlier, after={**flight.after, **earlier}), hotel)
            )
        case "failed trip kept the money":
            return replace(
                run, effects=tuple(e for e in run.effects if e.key != "trip-2-payment:refund:0:50000")
            )
        case "refund above the charge":
            extra = Effect("refund", "trip-2-payment:refund:50000:1", "ch_2", 1)
            return replace(run, effects=(*run.effects, extra))
        case "email sent twice":
            return replace(run, effects=(*run.effects, Effect("email", "tr-1-sent", "alice@example.com")))
        case "stock leaks":
            return replace(run, stocks=(replace(stock, available=7),))
        case "cancelled order holds stock":
            holds = {**stock.holds, "order-2": 1}
            return replace(run, stocks=(replace(stock, available=7, reserved=3, holds=holds),))
        case "completed order holds nothing":
            return replace(run, stocks=(replace(stock, available=10, reserved=0, holds={}),))
        case "cancelled order kept the money":
            return replace(run, orders=(order_1, replace(order_2, status="completed")))
        case "order missing from the read models":
            return replace(run, orders=(replace(order_1, view=None), order_2))
        case "view behind the event store":
            behind = ReadModels(4, "shipped", 4, listed=True)
            return replace(run, orders=(replace(order_1, view=behind), order_2))
        case "audit trail short":
            short = ReadModels(6, "cancelled", 5, listed=True)
            return replace(run, orders=(order_1, replace(order_2, view=short)))
        case "not in the customer's list":
            unlisted = ReadModels(5, "completed", 5, listed=False)
            return replace(run, orders=(replace(order_1, view=unlisted), order_2))
        case "stuck invocation":
            stuck = Stuck("inv_1", "PaymentService/p-1/Charge", "paused", "[503] provider down\nat ...")
            return replace(run, stuck=(stuck,))
    raise AssertionError(name)


BROKEN = {
    "still running": "lost: trip trip-2 was accepted and is still 'pending'",
    "answer disagrees": "transfer tr-1 answered 'failed' but the system says 'completed'",
    "debit booked twice": "account alice: debit tr-1 booked 2 times",
    "minted credit": "account bob: credit gift belongs to no transfer",
    "failed transfer kept the money": "transfer tr-2 (failed) moved +1000 cents on frozen-1, expected +0",
    "credit to a bystander": "transfer tr-1 moved +2500 cents on carol, not one of its accounts",
    "confirmed trip with a cancelled hotel": "trip trip-1 is confirmed but its hotel is 'cancelled'",
    "failed trip still holds seats": "FlightInventory/SFO-JFK-2024-12-15: failed trip trip-2 still holds 1 "
    "(trip-2-flight)",
    "overbooked": "FlightInventory/SFO-JFK-2024-12-15: 101 units held on *, capacity 100",
    "failed trip kept the money": "trip trip-2 failed but 50000 cents stay charged on trip-2-payment",
    "refund above the charge": "payment trip-2-payment: charge ch_2 of 50000 cents refunded 50001 cents",
    "email sent twice": "email tr-1-sent sent 2 times",
    "stock leaks": "stock WIDGET: 7 available + 2 reserved, started with 10",
    "cancelled order holds stock": "stock WIDGET: cancelled order order-2 still holds 1",
    "completed order holds nothing": "order order-1 is completed with 2 of WIDGET, stock holds 0",
    "cancelled order kept the money": "order order-2 is completed: expected one charge of 1000 cents on "
    "order-2-payment, found 1 charge(s), 1000 cents refunded, 0 kept",
    "order missing from the read models": "order order-1 is completed and missing from the read models",
    "view behind the event store": "order order-1: the view shows version 4 shipped, the event store 5 "
    "completed",
    "audit trail short": "order order-2: 5 audit entries for 6 events",
    "not in the customer's list": "order order-1 is missing from its customer's order list",
    "stuck invocation": "invocation inv_1 (PaymentService/p-1/Charge) left paused: [503] provider down",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_rule_bites(name: str) -> None:
    assert BROKEN[name] in check_all(mutate(name))
