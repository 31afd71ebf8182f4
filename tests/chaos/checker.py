"""The invariants a chaos run ends with, judged on facts gathered from the real stack.

Every check is a pure function from facts (plain frozen dataclasses, below) to a list of violations: one
sentence per broken rule, naming the entity (``"payment trip-7-payment charged 2 times"``). An empty list
means the rule held. :func:`check_all` runs them all. Nothing here talks to the engine or a provider, so
the judging is unit-tested on made-up facts (``test_checker.py``); :mod:`tests.chaos.gather` reads the
facts from a running stack.

What is true, and where the truth comes from (each system's README and models):

- **0 lost** (:func:`check_lost`): every request the load generator saw accepted ended with a final
  status (transfers ``completed``/``blocked``/``failed``; trips ``confirmed``/``failed``; shop orders
  ``completed``/``cancelled``), and the invocation's own result agrees with what the system reports.
- **money** (:func:`check_money`, banking): the balances add up to the opening deposits; every ledger
  explains its balance (entries sum to it, each ``balanceAfter`` is the running sum, nothing booked twice,
  every movement belongs to a transfer of the run); a completed transfer moved its amount once from source
  to target, any other moved nothing net; no hold is left; no balance is negative.
- **trips** (:func:`check_trips`, travel): a confirmed trip has its flight and hotel confirmed and its
  payment charged; a failed one has nothing left reserved and nothing charged; every hold a trip of the run
  left on an inventory is a committed hold of a confirmed trip (reservation ids are ``{tripId}-flight`` and
  ``{tripId}-hotel``), and no slot holds more than its capacity.
- **stock** (:func:`check_stock`, shop): for every SKU, available + reserved = starting stock and the
  per-order holds add up to reserved; a completed order holds exactly its lines; a cancelled one holds
  nothing.
- **effects exactly once** (:func:`check_effects`, the simulated providers' records): at most one charge
  per payment id and one message per message id; refunds never exceed the charge; a confirmed trip or a
  completed order was charged its price once and not refunded; a failed trip or a cancelled order kept no
  money (charges minus refunds is 0).
- **read models** (:func:`check_read_models`, shop): every order of the run that ended is in its order
  view with the event store's version and status, has one audit entry per event, and is in its
  customer's order list.
- **nothing stuck** (:func:`check_stuck`): no invocation left backing off or paused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["transfer", "trip", "order"]

FINAL: dict[str, frozenset[str]] = {
    "transfer": frozenset({"completed", "blocked", "failed"}),
    "trip": frozenset({"confirmed", "failed"}),
    "order": frozenset({"completed", "cancelled", "delivered"}),
}
"""The statuses each kind of request ends in (anything else is still under way)."""


# -- facts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request the load generator sent, and how it ended."""

    kind: Kind
    key: str
    """The business id: transfer id, trip id or order id."""
    accepted: bool
    """The door took it (an invocation was started for it)."""
    answer: str | None = None
    """The status in the invocation's own result (what its caller got), None when there is none."""
    outcome: str | None = None
    """The status the system's read handler reports after the run, None when it knows nothing of it."""


@dataclass(frozen=True)
class Movement:
    """One ledger entry of a bank account, in cents."""

    kind: Literal["open", "debit", "credit"]
    tx_id: str
    cents: int
    balance_after: int


@dataclass(frozen=True)
class Account:
    """A bank account after the run (``AccountService/{id}/Get``) and what the run opened it with."""

    id: str
    opening: int
    """Cents deposited when the run opened it (the only money that enters the bank)."""
    balance: int
    holds: Mapping[str, int] = field(default_factory=dict)
    ledger: tuple[Movement, ...] = ()


@dataclass(frozen=True)
class Transfer:
    """A transfer of the run: what was asked and how it ended (None: it did not)."""

    id: str
    source: str
    target: str
    cents: int
    status: str | None


@dataclass(frozen=True)
class Trip:
    """A trip of the run (``TripOrchestrator/{id}/GetBooking``): its status and each part's."""

    id: str
    status: str | None
    flight: str | None = None
    """The flight reservation's status (``reserved``/``confirmed``/``cancelled``), None if never made."""
    hotel: str | None = None
    payment: str | None = None
    """The payment's status (``charged``, ``refunded``, ``declined``, ``voided``…), None if never made."""
    price: int | None = None
    """Flight plus hotel, in cents: what a confirmed trip is charged."""


@dataclass(frozen=True)
class Hold:
    """Units one holder (a reservation id) has on an inventory."""

    holder: str
    units: int
    slots: tuple[str, ...] = ("*",)
    status: str = "held"
    """``held`` or ``committed``."""


@dataclass(frozen=True)
class Inventory:
    """A flight's seats or a city's rooms: holds before and after the run."""

    resource: str
    """``FlightInventory/SFO-JFK-2024-12-15`` or ``HotelInventory/New York``."""
    capacity: int
    """Units per slot."""
    before: Mapping[str, Hold] = field(default_factory=dict)
    after: Mapping[str, Hold] = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """A shop order of the run, folded from its events (``ShopOrder/{id}/Events``)."""

    id: str
    status: str | None
    lines: Mapping[str, int] = field(default_factory=dict)
    """Units per SKU."""
    total: int = 0
    """Cents."""
    version: int = 0
    """Events in its stream (the event store)."""
    view: ReadModels | None = None
    """What the read models say of it; None when they know nothing of it."""


@dataclass(frozen=True)
class ReadModels:
    """One order as the read side shows it (``ShopOrderView``, ``ShopAudit``, ``ShopCustomerOrders``)."""

    version: int
    """The last event the order view applied."""
    status: str
    audited: int
    """Entries in the order's audit trail."""
    listed: bool
    """It is in its customer's order list, with the view's version."""


@dataclass(frozen=True)
class Stock:
    """One SKU's stock level after the run, and the units each order holds (``ShopInventory``'s store)."""

    sku: str
    initial: int
    """Starting stock plus restocks."""
    available: int
    reserved: int
    holds: Mapping[str, int] = field(default_factory=dict)
    """Units per order id after the run."""
    holds_before: Mapping[str, int] = field(default_factory=dict)
    """Units per order id before the run."""


@dataclass(frozen=True)
class Effect:
    """Something a simulated provider did (its ``effects`` table): money moved or a message sent."""

    kind: str
    """``charge``, ``refund``, ``payout``, ``email``, ``sms``, ``push``."""
    key: str
    """The idempotency key it was done under: payment id, refund key, message id."""
    subject: str
    """The charge id (charges and refunds) or the recipient (messages)."""
    cents: int = 0


@dataclass(frozen=True)
class Stuck:
    """An invocation the engine is retrying or has paused (``sys_invocation``)."""

    id: str
    target: str
    status: str
    failure: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything the checks judge; gather it with :func:`tests.chaos.gather.gather`."""

    sent: tuple[Sent, ...] = ()
    accounts: tuple[Account, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    trips: tuple[Trip, ...] = ()
    inventories: tuple[Inventory, ...] = ()
    orders: tuple[Order, ...] = ()
    stocks: tuple[Stock, ...] = ()
    effects: tuple[Effect, ...] = ()
    provider_requests: Mapping[str, int] = field(default_factory=dict)
    """Requests each payment id reached the card gateway with (retries included)."""
    stuck: tuple[Stuck, ...] = ()


# -- the checks --------------------------------------------------------------------------------------------


def check_lost(sent: Iterable[Sent]) -> list[str]:
    """Every accepted request ended with a final status, and its own result agrees with the system."""
    violations = []
    for request in sent:
        if not request.accepted:
            continue
        name = f"{request.kind} {request.key}"
        if request.outcome is None:
            violations.append(f"lost: {name} was accepted and the system knows nothing of it")
        elif request.outcome not in FINAL[request.kind]:
            violations.append(f"lost: {name} was accepted and is still {request.outcome!r}")
        elif request.answer is not None and request.answer != request.outcome:
            violations.append(f"{name} answered {request.answer!r} but the system says {request.outcome!r}")
    return violations


def _tx_transfer(tx_id: str) -> str:
    """The transfer a ledger movement belongs to (its reversal is ``{transferId}:reversal``)."""
    return tx_id.split(":", 1)[0]


def check_money(accounts: Iterable[Account], transfers: Iterable[Transfer]) -> list[str]:
    """Money is conserved, every ledger explains its balance, no hold is left."""
    accounts, transfers = list(accounts), list(transfers)
    violations = []
    deposited = sum(a.opening for a in accounts)
    held = sum(a.balance for a in accounts)
    if held != deposited:
        violations.append(
            f"money not conserved: the accounts hold {held} cents, {deposited} were deposited "
            f"({held - deposited:+d})"
        )
    known = {t.id for t in transfers}
    # Net cents each (transfer, account) moved, from the ledgers.
    moved: dict[tuple[str, str], int] = defaultdict(int)
    for account in accounts:
        running = 0
        booked: Counter[tuple[str, str]] = Counter()
        for number, entry in enumerate(account.ledger, start=1):
            running += -entry.cents if entry.kind == "debit" else entry.cents
            if entry.balance_after != running:
                violations.append(
                    f"account {account.id}: ledger entry {number} ({entry.kind} {entry.tx_id}) says "
                    f"{entry.balance_after} cents after it, the entries up to it add up to {running}"
                )
            booked[(entry.kind, entry.tx_id)] += 1
            if entry.kind == "open":
                continue
            transfer_id = _tx_transfer(entry.tx_id)
            if transfer_id not in known:
                violations.append(f"account {account.id}: {entry.kind} {entry.tx_id} belongs to no transfer")
            moved[(transfer_id, account.id)] += -entry.cents if entry.kind == "debit" else entry.cents
        violations += [
            f"account {account.id}: {kind} {tx} booked {n} times" for (kind, tx), n in booked.items() if n > 1
        ]
        if running != account.balance:
            violations.append(
                f"account {account.id}: its ledger adds up to {running} cents, "
                f"its balance is {account.balance}"
            )
        opened = sum(e.cents for e in account.ledger if e.kind == "open")
        if opened != account.opening:
            violations.append(
                f"account {account.id}: opened with {account.opening} cents, its ledger says {opened}"
            )
        violations += [f"account {account.id}: hold {h} of {c} cents left" for h, c in account.holds.items()]
        if account.balance < 0:
            violations.append(f"account {account.id}: balance {account.balance} cents is negative")
    parties = {t.id: (t.source, t.target) for t in transfers}
    violations += [
        f"transfer {transfer_id} moved {net:+d} cents on {account_id}, not one of its accounts"
        for (transfer_id, account_id), net in moved.items()
        if transfer_id in parties and account_id not in parties[transfer_id] and net
    ]
    for transfer in transfers:
        if transfer.status is None:
            continue  # not ended: check_lost says so
        expected = {transfer.source: 0, transfer.target: 0}
        if transfer.status == "completed":
            expected = {transfer.source: -transfer.cents, transfer.target: transfer.cents}
        for account_id, cents in expected.items():
            if moved.get((transfer.id, account_id), 0) != cents:
                violations.append(
                    f"transfer {transfer.id} ({transfer.status}) moved "
                    f"{moved.get((transfer.id, account_id), 0):+d} cents on {account_id}, expected {cents:+d}"
                )
    return violations


_CANCELLED_PART = (None, "cancelled")
_NOTHING_KEPT = (None, "declined", "refunded", "voided")


def check_trips(trips: Iterable[Trip], inventories: Iterable[Inventory]) -> list[str]:
    """Every trip confirmed or fully compensated; inventory holds only what confirmed trips bought."""
    trips = list(trips)
    violations = []
    for trip in trips:
        parts = {"flight": trip.flight, "hotel": trip.hotel, "payment": trip.payment}
        if trip.status == "confirmed":
            wanted = {"flight": "confirmed", "hotel": "confirmed", "payment": "charged"}
            violations += [
                f"trip {trip.id} is confirmed but its {part} is {parts[part]!r}"
                for part, status in wanted.items()
                if parts[part] != status
            ]
        elif trip.status == "failed":
            for part in ("flight", "hotel"):
                if parts[part] not in _CANCELLED_PART:
                    violations.append(f"trip {trip.id} failed but its {part} is still {parts[part]!r}")
            if trip.payment not in _NOTHING_KEPT:
                violations.append(f"trip {trip.id} failed but its payment is {trip.payment!r}")
    owner = {f"{t.id}-{part}": t for t in trips for part in ("flight", "hotel")}
    held_by: dict[str, set[str]] = defaultdict(set)
    for inventory in inventories:
        for holder, hold in inventory.after.items():
            if inventory.before.get(holder) == hold:
                continue  # there before the run, untouched
            held_by[holder].add(hold.status)
            holder_trip = owner.get(holder)
            if holder_trip is None:
                violations.append(f"{inventory.resource}: {holder} holds {hold.units} and is no trip's")
            elif holder_trip.status == "failed":
                violations.append(
                    f"{inventory.resource}: failed trip {holder_trip.id} still holds {hold.units} ({holder})"
                )
            elif holder_trip.status == "confirmed" and hold.status != "committed":
                violations.append(
                    f"{inventory.resource}: confirmed trip {holder_trip.id}'s hold {holder} "
                    f"is {hold.status!r}"
                )
        used: Counter[str] = Counter()
        for hold in inventory.after.values():
            for slot in hold.slots:
                used[slot] += hold.units
        violations += [
            f"{inventory.resource}: {n} units held on {slot}, capacity {inventory.capacity}"
            for slot, n in sorted(used.items())
            if n > inventory.capacity
        ]
    for trip in trips:
        if trip.status != "confirmed":
            continue
        for part in ("flight", "hotel"):
            if "committed" not in held_by.get(f"{trip.id}-{part}", set()):
                violations.append(f"trip {trip.id} is confirmed but no inventory holds its {part}")
    return violations


def check_stock(orders: Iterable[Order], stocks: Iterable[Stock]) -> list[str]:
    """Stock conserved: holds add up, completed orders hold their lines, cancelled ones hold nothing."""
    orders_by_id = {o.id: o for o in orders}
    violations = []
    stocked: dict[str, Stock] = {}
    for stock in stocks:
        stocked[stock.sku] = stock
        if stock.available + stock.reserved != stock.initial:
            violations.append(
                f"stock {stock.sku}: {stock.available} available + {stock.reserved} reserved, "
                f"started with {stock.initial}"
            )
        if (held := sum(stock.holds.values())) != stock.reserved:
            violations.append(f"stock {stock.sku}: orders hold {held} units, reserved says {stock.reserved}")
        for order_id, units in stock.holds.items():
            if stock.holds_before.get(order_id) == units:
                continue
            order = orders_by_id.get(order_id)
            if order is None:
                violations.append(f"stock {stock.sku}: {order_id} holds {units} and is no order of the run")
            elif order.status == "cancelled":
                violations.append(f"stock {stock.sku}: cancelled order {order_id} still holds {units}")
    for order in orders_by_id.values():
        if order.status not in ("completed", "delivered"):
            continue
        for sku, units in order.lines.items():
            level = stocked.get(sku)
            held = 0 if level is None else level.holds.get(order.id, 0)
            if held != units:
                violations.append(
                    f"order {order.id} is {order.status} with {units} of {sku}, stock holds {held}"
                )
    return violations


def check_read_models(orders: Iterable[Order]) -> list[str]:
    """The read side agrees with the event store on every order that ended."""
    violations = []
    for order in orders:
        if order.status not in FINAL["order"]:
            continue
        view = order.view
        if view is None:
            violations.append(f"order {order.id} is {order.status} and missing from the read models")
            continue
        if (view.version, view.status) != (order.version, order.status):
            violations.append(
                f"order {order.id}: the view shows version {view.version} {view.status}, "
                f"the event store {order.version} {order.status}"
            )
        if view.audited != order.version:
            violations.append(f"order {order.id}: {view.audited} audit entries for {order.version} events")
        if not view.listed:
            violations.append(f"order {order.id} is missing from its customer's order list")
    return violations


def check_effects(
    effects: Iterable[Effect], trips: Iterable[Trip] = (), orders: Iterable[Order] = ()
) -> list[str]:
    """Each external effect exactly once: one charge per payment, refunds within it, one message per id."""
    effects = list(effects)
    violations = []
    charges: dict[str, list[Effect]] = defaultdict(list)
    refunded: Counter[str] = Counter()
    for effect in effects:
        if effect.kind == "charge":
            charges[effect.key].append(effect)
        elif effect.kind == "refund":
            refunded[effect.subject] += effect.cents
    violations += [
        f"payment {key} charged {len(found)} times" for key, found in charges.items() if len(found) > 1
    ]
    charged_by_id = {e.subject: e for found in charges.values() for e in found}
    for charge_id, cents in refunded.items():
        charge = charged_by_id.get(charge_id)
        if charge is None:
            violations.append(f"{cents} cents refunded on {charge_id}, which was never charged")
        elif cents > charge.cents:
            violations.append(
                f"payment {charge.key}: charge {charge_id} of {charge.cents} cents refunded {cents} cents"
            )
    for (kind, key), n in Counter((e.kind, e.key) for e in effects).items():
        if kind in ("payout", "email", "sms", "push") and n > 1:
            violations.append(f"{kind} {key} sent {n} times")

    def kept(payment_id: str) -> tuple[int, int, int]:
        """Charges, cents refunded, and net cents kept for one payment id."""
        found = charges.get(payment_id, [])
        back = sum(refunded[c.subject] for c in found)
        return len(found), back, sum(c.cents for c in found) - back

    for trip in trips:
        payment = f"{trip.id}-payment"
        n, back, net = kept(payment)
        if trip.status == "confirmed":
            if n != 1 or back or (trip.price is not None and net != trip.price):
                violations.append(
                    f"trip {trip.id} is confirmed: expected one charge of {trip.price} cents on {payment}, "
                    f"found {n} charge(s), {back} cents refunded, {net} kept"
                )
        elif trip.status == "failed" and net:
            violations.append(f"trip {trip.id} failed but {net} cents stay charged on {payment}")
    for order in orders:
        payment = f"{order.id}-payment"
        n, back, net = kept(payment)
        if order.status in ("completed", "delivered"):
            if n != 1 or back or net != order.total:
                violations.append(
                    f"order {order.id} is {order.status}: expected one charge of {order.total} cents on "
                    f"{payment}, found {n} charge(s), {back} cents refunded, {net} kept"
                )
        elif order.status == "cancelled" and net:
            violations.append(f"order {order.id} was cancelled but {net} cents stay charged on {payment}")
    return violations


def check_stuck(stuck: Iterable[Stuck]) -> list[str]:
    """No invocation left backing off or paused."""
    return [
        f"invocation {s.id} ({s.target}) left {s.status}: {s.failure.splitlines()[0] if s.failure else ''}"
        for s in stuck
    ]


def check_all(facts: Facts) -> list[str]:
    """Every violation of every check, lost requests first."""
    return [
        *check_lost(facts.sent),
        *check_money(facts.accounts, facts.transfers),
        *check_trips(facts.trips, facts.inventories),
        *check_stock(facts.orders, facts.stocks),
        *check_read_models(facts.orders),
        *check_effects(facts.effects, facts.trips, facts.orders),
        *check_stuck(facts.stuck),
    ]


def figures(facts: Facts) -> dict[str, int]:
    """What the run did, for reports: requests by outcome, effects by kind, retries the providers absorbed."""
    counts: Counter[str] = Counter()
    for request in facts.sent:
        counts[f"{request.kind}s sent"] += 1
        if request.accepted:
            counts[f"{request.kind} {request.outcome or 'unknown'}"] += 1
    for effect in facts.effects:
        counts[f"{effect.kind}s"] += 1
    charged = {e.key for e in facts.effects if e.kind == "charge"}
    counts["repeated gateway requests answered from the record"] = sum(
        n - 1 for key, n in facts.provider_requests.items() if key in charged and n > 1
    )
    counts["invocations stuck"] = len(facts.stuck)
    return dict(counts)
