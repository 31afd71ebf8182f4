"""Facts for the chaos checker, read from a running stack (the harness's, or one ``podium up`` started).

It needs three things from the stack, all on loopback (:class:`Stack`):

- the **ingress** (trusted): the systems' public read handlers, which are the truth a client sees:
  ``AccountService/{id}/Get``, ``TransferOrchestrator/{id}/Get``, ``TripOrchestrator/{id}/GetBooking``,
  ``ShopOrder/{id}/Events`` (folded with the shop's own :func:`services.shop.events.fold`), and each
  invocation's own result (``/restate/invocation/…/{key}/output``);
- the **admin API**: the state of private objects no client may read (``FlightInventory``,
  ``HotelInventory``) read with SQL on the engine's ``state`` table, and the shop's stock from its own
  SQL store (``<data>/shop/inventory.db``), and the invocations
  left backing off or paused (:func:`podium.testing.stuck_invocations`). SQL reaches any engine, where
  the harness's door for private handlers (``call_private``) exists only on the harness's own engines;
- the **providers' folder** (``<data dir>/providers``): the simulated card gateway's and mail provider's
  SQLite records of every request and effect (:mod:`services.common.providers`).

Snapshot what existed before the run (:func:`snapshot`), run the load, wait until every accepted request
has ended (:func:`wait_until_ended`), then :func:`gather` and judge with
:func:`tests.chaos.checker.check_all`::

    with Stack(ingress_url, admin_url, data_dir / "providers") as stack:
        before = snapshot(stack)
        load = Load(client, tag="kill-1")  # client: httpx.Client on the gateway (with a token) or ingress
        load.open_accounts(8)
        load.send_all(load.mix(200))
        wait_until_ended(stack, load.requests, timeout=120)
        assert check_all(gather(stack, load, before)) == []
"""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from podium.testing import assert_eventually, query, stuck_invocations
from services.common.money import cents
from services.common.providers import MailProvider, PaymentGateway
from services.shop.events import Event, fold
from services.travel import catalogue
from tests.chaos.checker import (
    FINAL,
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
)
from tests.chaos.load import Load, Request

T = TypeVar("T")
R = TypeVar("R")
INVENTORIES = ("FlightInventory", "HotelInventory")


@dataclass(frozen=True)
class Stack:
    """Where a running stack answers; close it (or use it in a ``with``) when done reading."""

    ingress_url: str
    admin_url: str
    providers_dir: Path
    """The simulated providers' folder: ``$PODIUM_DATA_DIR/providers`` of the deployments."""
    _client: httpx.Client = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One pooled client for every read: a client made per call costs about 30 ms of CPU (its TLS
        # context), which held a long run's thousands of reads to some 25 a second.
        limits = httpx.Limits(max_connections=2 * _READERS, max_keepalive_connections=2 * _READERS)
        client = httpx.Client(base_url=self.ingress_url, timeout=30, limits=limits)
        object.__setattr__(self, "_client", client)

    def post(self, path: str) -> httpx.Response:
        """POST to a read handler on the (trusted) ingress."""
        return self._client.post(path)

    def close(self) -> None:
        """Close the connections to the ingress."""
        self._client.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Snapshot:
    """Holds on private objects before the run: what the run's changes are measured against."""

    inventories: dict[str, dict[str, Hold]]
    stocks: dict[str, dict[str, int]]


def _state(stack: Stack, service: str, key_filter: str) -> list[dict[str, Any]]:
    """Rows ``service_key, key, value_utf8`` of ``service``'s state whose key matches ``key_filter``."""
    return query(
        stack.admin_url,
        f"SELECT service_key, key, value_utf8 FROM state WHERE service_name = '{service}' AND {key_filter}",
    )


def _inventories(stack: Stack) -> dict[str, dict[str, Hold]]:
    found: dict[str, dict[str, Hold]] = {}
    for service in INVENTORIES:
        for row in _state(stack, service, "key = 'state'"):
            holds = json.loads(row["value_utf8"]).get("holds", {})
            found[f"{service}/{row['service_key']}"] = {
                holder: Hold(holder, h["units"], tuple(h["slots"]), h["status"])
                for holder, h in holds.items()
            }
    return found


def _inventory_db(stack: Stack) -> Path:
    """The shop inventory's SQL store of the stack (``services.shop.db``: ``<data>/shop/inventory.db``)."""
    return stack.providers_dir.parent / "shop" / "inventory.db"


def _inventory_rows(stack: Stack, query: str) -> list[tuple[Any, ...]]:
    path = _inventory_db(stack)
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _stock_holds(stack: Stack) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for order_id, sku, quantity in _inventory_rows(stack, "SELECT order_id, sku, quantity FROM holds"):
        found.setdefault(sku, {})[order_id] = int(quantity)
    return found


def snapshot(stack: Stack) -> Snapshot:
    """The inventories' and the shop stock's holds right now (take it before the run)."""
    return Snapshot(_inventories(stack), _stock_holds(stack))


def _outcome(stack: Stack, request: Request) -> str | None:
    """The request's status as the system's read handler tells it, None if it knows nothing of it."""
    if request.kind == "transfer":
        response = stack.post(f"/TransferOrchestrator/{request.key}/Get")
    elif request.kind == "trip":
        response = stack.post(f"/TripOrchestrator/{request.key}/GetBooking")
    else:
        events = _events(stack, request.key)
        return None if not events else str(fold(events).status)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    status: str = response.json()["status"]
    return status


def _events(stack: Stack, order_id: str) -> list[Event]:
    response = stack.post(f"/ShopOrder/{order_id}/Events")
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return [Event.model_validate(e) for e in response.json()]


def pending(stack: Stack, requests: Iterable[Request]) -> list[str]:
    """The accepted requests that have not ended yet (``kind key: status``); poll until it is empty."""
    waiting = []
    for request in requests:
        if request.accepted and (status := _outcome(stack, request)) not in FINAL[request.kind]:
            waiting.append(f"{request.kind} {request.key}: {status}")
    return waiting


def _account(stack: Stack, account_id: str, opening: int) -> Account:
    response = stack.post(f"/AccountService/{account_id}/Get")
    response.raise_for_status()
    body = response.json()
    return Account(
        id=account_id,
        opening=opening,
        balance=cents(body["balance"]),
        holds={hold: cents(amount) for hold, amount in body["holds"].items()},
        ledger=tuple(
            Movement(e["kind"], e["txId"], cents(e["amount"]), cents(e["balanceAfter"]))
            for e in body["ledger"]
        ),
    )


def _trip(stack: Stack, trip_id: str) -> Trip:
    response = stack.post(f"/TripOrchestrator/{trip_id}/GetBooking")
    if response.status_code == 404:
        return Trip(trip_id, None)
    response.raise_for_status()
    booking = response.json()
    parts = {part: (booking.get(part) or {}) for part in ("flight", "hotel", "payment")}
    price = None
    if parts["flight"] and parts["hotel"]:
        price = cents(parts["flight"]["price"]) + cents(parts["hotel"]["price"])
    return Trip(
        trip_id,
        booking["status"],
        flight=parts["flight"].get("status"),
        hotel=parts["hotel"].get("status"),
        payment=parts["payment"].get("status"),
        price=price,
    )


def _order(stack: Stack, order_id: str) -> Order:
    events = _events(stack, order_id)
    if not events:
        return Order(order_id, None)
    state = fold(events)
    view = _read_models(stack, order_id, state.customer_id, state.version)
    return Order(order_id, str(state.status), dict(state.lines), cents(state.total), state.version, view)


READ_SIDE_WAIT = 30.0
"""Seconds the read side gets to catch up with an order's last event (its messages follow the order)."""


def _read_models(stack: Stack, order_id: str, customer_id: str, version: int) -> ReadModels | None:
    """The order as the read models show it, once they reached ``version`` or the wait ran out."""
    deadline = time.monotonic() + READ_SIDE_WAIT
    while True:
        response = stack.post(f"/ShopOrderView/{order_id}/Get")
        view = response.json() if response.status_code == 200 else None
        if response.status_code not in (200, 404):
            response.raise_for_status()
        if (view is not None and view["version"] >= version) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if view is None:
        return None
    trail = stack.post(f"/ShopAudit/{order_id}/Entries")
    trail.raise_for_status()
    listed = stack.post(f"/ShopCustomerOrders/{customer_id}/List")
    listed.raise_for_status()
    return ReadModels(
        version=view["version"],
        status=view["status"],
        audited=len(trail.json()["entries"]),
        listed=any(o["orderId"] == order_id and o["version"] == view["version"] for o in listed.json()),
    )


def _capacity(resource: str) -> int:
    service, _, key = resource.partition("/")
    return catalogue.flight_capacity(key) if service == "FlightInventory" else catalogue.hotel_capacity(key)


def _stocks(stack: Stack, before: dict[str, dict[str, int]]) -> list[Stock]:
    holds = _stock_holds(stack)
    query = "SELECT sku, initial + restocked, available, reserved FROM levels"
    return [
        Stock(
            sku=sku,
            initial=initial,
            available=available,
            reserved=reserved,
            holds=holds.get(sku, {}),
            holds_before=before.get(sku, {}),
        )
        for sku, initial, available, reserved in _inventory_rows(stack, query)
    ]


def effects(providers_dir: Path) -> list[Effect]:
    """What the simulated card gateway and mail provider did, from their records."""
    found = []
    for store in (PaymentGateway(providers_dir), MailProvider(providers_dir)):
        if store.path.exists():
            found += [Effect(e["kind"], e["key"], e["subject"], e["amountCents"]) for e in store.effects()]
    return found


def wait_until_ended(stack: Stack, requests: Iterable[Request], *, timeout: float) -> None:
    """Poll until every accepted request has ended, reading again only those still under way.

    Raises:
        AssertionError: Some had not ended after ``timeout`` seconds (they are named).
    """
    left = [r for r in requests if r.accepted]

    def ended() -> bool:
        nonlocal left
        try:
            statuses = _read_all(lambda r: _outcome(stack, r), left)
        except httpx.HTTPError as exc:  # a door restarting (the supervisor brings it back): ask again
            raise AssertionError(f"the stack did not answer: {exc!r}") from exc
        left = [r for r, status in zip(left, statuses, strict=True) if status not in FINAL[r.kind]]
        assert not left, f"{len(left)} requests still under way: {', '.join(r.key for r in left[:10])}"
        return True

    assert_eventually(ended, timeout=timeout, interval=0.5)


_READERS = 8
"""Reads made at once: a long run has thousands of requests, each read on its own."""


def _read_all(read: Callable[[T], R], items: Iterable[T]) -> list[R]:
    def patient(item: T) -> R:
        # Reads are idempotent: one that met a kept-alive connection the server had just closed
        # ("Server disconnected without sending a response") is asked again on a fresh one.
        for attempt in range(1, 4):
            try:
                return read(item)
            except httpx.TransportError:
                if attempt == 3:
                    raise
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    with concurrent.futures.ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(patient, items))


def gather(stack: Stack, load: Load, before: Snapshot) -> Facts:
    """Every fact the checker judges, for the requests and accounts of ``load``."""
    accepted = [r for r in load.requests if r.accepted]
    outcomes = dict(
        zip((r.key for r in accepted), _read_all(lambda r: _outcome(stack, r), accepted), strict=True)
    )
    answers = dict(zip((r.key for r in accepted), _read_all(load.answer, accepted), strict=True))
    sent = tuple(
        Sent(r.kind, r.key, r.accepted, answers.get(r.key), outcomes.get(r.key)) for r in load.requests
    )
    transfers = tuple(
        Transfer(
            r.key,
            r.body["fromAccount"],
            r.body["toAccount"],
            cents(r.body["amount"]),
            outcomes[r.key],
        )
        for r in accepted
        if r.kind == "transfer"
    )
    trips = _read_all(lambda key: _trip(stack, key), [r.key for r in accepted if r.kind == "trip"])
    orders = _read_all(lambda key: _order(stack, key), [r.key for r in accepted if r.kind == "order"])
    accounts = _read_all(lambda item: _account(stack, *item), sorted(load.accounts.items()))
    inventories = tuple(
        Inventory(resource, _capacity(resource), before.inventories.get(resource, {}), holds)
        for resource, holds in sorted(_inventories(stack).items())
    )
    gateway = PaymentGateway(stack.providers_dir)
    payment_ids = [f"{r.key}-payment" for r in accepted if r.kind in ("trip", "order")]
    requests = {p: gateway.requests(p) for p in payment_ids} if gateway.path.exists() else {}
    return Facts(
        sent=sent,
        accounts=tuple(accounts),
        transfers=transfers,
        trips=tuple(trips),
        inventories=inventories,
        orders=tuple(orders),
        stocks=tuple(_stocks(stack, before.stocks)),
        effects=tuple(effects(stack.providers_dir)),
        provider_requests=requests,
        stuck=tuple(
            Stuck(row["id"], row["target"], row["status"], row.get("last_failure") or "")
            for row in stuck_invocations(stack.admin_url)
        ),
    )
