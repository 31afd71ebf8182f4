"""``ShopInventory``: stock per SKU in SQL, held and given back per order, one invocation per order.

The stock lives in the store ``inventory`` (``$PODIUM_DATA_DIR/shop/inventory.db``, see :mod:`.db`),
which no other service opens:

- ``inventory_events``: append-only, one row per change of a SKU's stock (``reserved`` and ``released``
  by an order, ``restocked`` by an operator), with the ``actor`` who caused it and when: the audit of
  stock (``History``);
- ``levels``: one row per SKU that was ever used, the projection of its events onto its starting stock,
  written in the same transaction as each event; ``RebuildLevels`` recomputes it from the events;
- ``holds``: the units each order holds now, per SKU (the sum per SKU is ``levels.reserved``);
- ``reservations``: one row per order id that was reserved or released, so a released order stays over
  (a reservation that arrives after its release, such as a late one the saga already gave up on, is 409);
- ``rebuilds``: who ran ``RebuildLevels``, when, and what it repaired.

``ShopInventory`` is a stateless service, not an object per SKU: an order's lines are reserved in one
invocation and one SQL transaction, all or none, and orders for the same SKU do not queue behind each
other in the engine. ``begin immediate`` serialises the writers of every process of the deployment
(two workers share the file), and every check and change of a reservation happens inside one
transaction, so stock is never oversold; ``levels`` also refuses a negative count.

Every write is one transaction inside one ``ctx.run``, idempotent by its business key (the order id,
the restock id), so a ``ctx.run`` that runs again after a crash (it committed, but the engine never
heard) changes nothing twice and answers what the first run would have answered. The journaled result
of that run, not a later read, decides what the handler does next (the low-stock emails). The writes
waiting in one process share a transaction and its fsync (:class:`_GroupCommit`), each in a savepoint
of its own, so a hot SKU costs the store one commit per batch rather than one per order.

``Reserve`` and ``Release`` are private (the checkout saga's business, which passes its actor on);
``Levels`` is a public read; ``Restock``, ``History`` and ``RebuildLevels`` are public operator calls:
the history names every order that touched a SKU and every operator who restocked it, which is the
back office's business, not a client's.

Starting stock comes from the SKU's name (test data, see the README): ``SOLDOUT-…`` has none,
``LIMITED-<n>-…`` has ``n`` units, ``UNLIMITED-…`` has a billion, anything else 1,000.

Low stock: when a reservation takes the available units below the SKU's threshold (a fifth of its
starting stock), one email goes to :data:`STOCK_ALERTS_EMAIL` through the shared ``NotificationService``;
it is sent once per crossing (the SKU stays ``low`` until a release or a restock lifts it back to the
threshold). The message id names the SKU and the crossing number (``low-stock-{sku}-{n}``), so a
retried or repeated send is one email.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, cast

from pydantic import Field
from restate import Context, RunOptions

from podium import Model, Service, TerminalError, caller, send
from services.common.notifications import EmailRequest, send_email
from services.shop import settings
from services.shop.db import reading, transaction
from services.shop.events import iso

inventory = Service("ShopInventory", system="shop", journal_retention=settings.SETTINGS.participant_retention)

STORE = "inventory"
"""The store's name (:func:`services.shop.db.store_path` gives its file)."""
STOCK_ALERTS_EMAIL = "stock-alerts@shop.example.com"
"""Where low-stock alerts go."""
DEFAULT_STOCK = 1_000
UNLIMITED_STOCK = 1_000_000_000
MAX_QUANTITY = UNLIMITED_STOCK
"""The most units one line or one restock moves (keeps every count far inside SQLite's integers)."""
_LIMITED = re.compile(r"^LIMITED-(\d{1,9})-")
_T = TypeVar("_T")

SCHEMA = """
create table if not exists inventory_events (
    id integer primary key,
    sku text not null,
    order_id text,
    kind text not null check (kind in ('reserved', 'released', 'restocked')),
    quantity integer not null check (quantity > 0),
    actor text not null,
    at text not null,
    restock_id text unique,
    note text not null default '',
    alert integer
);
create index if not exists inventory_events_by_sku on inventory_events (sku, id);
create index if not exists inventory_events_by_order on inventory_events (order_id)
    where order_id is not null;
create table if not exists levels (
    sku text primary key,
    initial integer not null,
    available integer not null check (available >= 0),
    reserved integer not null check (reserved >= 0),
    restocked integer not null check (restocked >= 0),
    threshold integer not null,
    low integer not null,
    low_stock_alerts integer not null
) without rowid;
create table if not exists holds (
    order_id text not null,
    sku text not null,
    quantity integer not null check (quantity > 0),
    primary key (order_id, sku)
) without rowid;
create table if not exists reservations (
    order_id text primary key,
    status text not null check (status in ('reserved', 'released')),
    released_by text
) without rowid;
create table if not exists rebuilds (
    invocation_id text primary key,
    actor text not null,
    at text not null,
    report text not null
) without rowid;
"""
"""The store's tables (created on first use by :func:`services.shop.db.ensure_schema`)."""

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
OrderId = Annotated[str, Field(min_length=1, max_length=200)]
Actor = Annotated[str, Field(min_length=1, max_length=200)]


def starting_stock(sku: str) -> int:
    """Units a SKU starts with (see the module docs for the test data)."""
    if sku.startswith("SOLDOUT-"):
        return 0
    if sku.startswith("UNLIMITED-"):
        return UNLIMITED_STOCK
    if match := _LIMITED.match(sku):
        return int(match.group(1))
    return DEFAULT_STOCK


def low_stock_threshold(initial: int) -> int:
    """Available units below this are low (a fifth of the starting stock, at least one)."""
    return max(1, initial // 5)


class StockConflict(TerminalError):
    """409: not enough stock, or an order id already used for other lines or already released."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=409)


# -- the wire -------------------------------------------------------------------------------------------


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    """The order holds ``lines``."""
    RELEASED = "released"
    """The order's holds were given back (``lines`` is what this release gave back); the order is over."""


class EventKind(enum.StrEnum):
    RESERVED = "reserved"
    """An order took units."""
    RELEASED = "released"
    """An order gave units back."""
    RESTOCKED = "restocked"
    """An operator added units."""


class ReserveOrder(Model):
    """``ShopInventory/Reserve``: every line of one order, all or none."""

    order_id: OrderId
    lines: dict[Sku, Quantity] = Field(min_length=1, max_length=100)
    """Units per SKU."""
    actor: Actor
    """Who reserves (the saga passes it on: a private handler's caller is always ``internal``)."""


class ReleaseOrder(Model):
    """``ShopInventory/Release``: give back everything the order holds."""

    order_id: OrderId
    actor: Actor


class Reservation(Model):
    """What an order holds, or what its release gave back."""

    order_id: str
    lines: dict[str, int]
    """Units per SKU, sorted by SKU."""
    status: ReservationStatus


class StockLevel(Model):
    """One SKU's stock: the projection of its events onto its starting stock (a row of ``levels``)."""

    sku: str
    initial: int
    """Starting stock (from the SKU's name)."""
    available: int
    reserved: int = 0
    """Units orders hold; ``available + reserved == initial + restocked``."""
    restocked: int = 0
    """Units operators added."""
    threshold: int
    low: bool = False
    """Below the threshold since the last crossing."""
    low_stock_alerts: int = 0
    """Crossings so far (one email each)."""


class StockQuery(Model):
    """``ShopInventory/Levels``."""

    skus: list[Sku] = Field(min_length=1, max_length=100)


class Restock(Model):
    """``ShopInventory/Restock``: an operator adds units to a SKU."""

    restock_id: str = Field(min_length=1, max_length=200)
    """Idempotency key: the same restock id adds its units once (another SKU or quantity is 409)."""
    sku: Sku
    quantity: Quantity
    note: str = Field(default="", max_length=500)
    """Why (a delivery note, a stock count); kept in the audit."""


class HistoryQuery(Model):
    """``ShopInventory/History``: a SKU's events, oldest first, a page at a time."""

    sku: Sku
    after: int = Field(default=0, ge=0, le=2**63 - 1)  # SQLite's largest integer
    """Only events with a larger id (the last ``id`` of the previous page)."""
    limit: int = Field(default=100, ge=1, le=1_000)


class InventoryEvent(Model):
    """One change of a SKU's stock (a row of ``inventory_events``)."""

    id: int
    """Increasing in commit order: the order in which the projection applies the events."""
    sku: str
    order_id: str | None
    """The order that reserved or released (none for a restock)."""
    kind: EventKind
    quantity: int
    actor: str
    """Who caused it: the saga's actor for an order, the operator's verified subject for a restock."""
    at: str
    """When it was committed (ISO 8601 UTC)."""
    restock_id: str | None = None
    note: str = ""
    alert: int | None = None
    """The low-stock crossing this reservation caused (its email is ``low-stock-{sku}-{alert}``)."""


class InventoryHistory(Model):
    sku: str
    events: list[InventoryEvent]


class RebuildReport(Model):
    """What ``RebuildLevels`` found: nothing changed when the projection matched the events."""

    events: int
    """Events folded."""
    skus: int
    """SKUs with a level after the rebuild."""
    changed: list[str]
    """SKUs whose level differed from the fold of their events, and was replaced by it."""
    changed_holds: list[str]
    """Orders whose holds differed from their events' reserved minus released, and were replaced."""
    actor: str
    at: str


# -- the rules (pure: the handlers and the rebuild share them) -------------------------------------------


def fresh_level(sku: str) -> StockLevel:
    """A SKU's level before any event: its starting stock."""
    initial = starting_stock(sku)
    return StockLevel(sku=sku, initial=initial, available=initial, threshold=low_stock_threshold(initial))


def take(level: StockLevel, quantity: int) -> bool:
    """Move ``quantity`` units from available to reserved; True when this crosses into low stock.

    A crossing counts once: the level stays low, and further reservations do not alert, until
    :func:`give_back` or :func:`add` lift it back to the threshold.
    """
    if quantity > level.available:
        raise ValueError(f"{level.sku} has {level.available} available, {quantity} wanted")
    level.available -= quantity
    level.reserved += quantity
    if level.available < level.threshold and not level.low:
        level.low = True
        level.low_stock_alerts += 1
        return True
    return False


def _rearm(level: StockLevel) -> None:
    if level.available >= level.threshold:
        level.low = False  # the next crossing alerts again


def give_back(level: StockLevel, quantity: int) -> None:
    """Move ``quantity`` units from reserved back to available (a release)."""
    level.available += quantity
    level.reserved -= quantity
    _rearm(level)


def add(level: StockLevel, quantity: int) -> None:
    """Add ``quantity`` new units (a restock)."""
    level.available += quantity
    level.restocked += quantity
    _rearm(level)


def apply(level: StockLevel, kind: EventKind, quantity: int) -> None:
    """Apply one event to a level (the projection's step)."""
    if kind is EventKind.RESERVED:
        take(level, quantity)
    elif kind is EventKind.RELEASED:
        give_back(level, quantity)
    else:
        add(level, quantity)


def fold(
    events: Iterable[tuple[str, str | None, EventKind, int]],
) -> tuple[dict[str, StockLevel], dict[tuple[str, str], int]]:
    """Levels per SKU and holds per (order, SKU) from events ``(sku, order_id, kind, quantity)`` in order."""
    levels: dict[str, StockLevel] = {}
    holds: dict[tuple[str, str], int] = {}
    for sku, order_id, kind, quantity in events:
        level = levels.get(sku)
        if level is None:
            level = levels[sku] = fresh_level(sku)
        apply(level, kind, quantity)
        if order_id is not None and kind is not EventKind.RESTOCKED:
            held = holds.get((order_id, sku), 0) + (quantity if kind is EventKind.RESERVED else -quantity)
            if held:
                holds[(order_id, sku)] = held
            else:
                holds.pop((order_id, sku), None)
    return levels, holds


# -- SQL ---------------------------------------------------------------------------------------------------

_LEVEL_COLUMNS = "sku, initial, available, reserved, restocked, threshold, low, low_stock_alerts"
_EVENT_COLUMNS = "id, sku, order_id, kind, quantity, actor, at, restock_id, note, alert"


class _GroupCommit:
    """Runs this process's write transactions together: one commit, and one fsync, for all that wait.

    ``begin immediate`` already serialises the writers of every process, and a commit costs an fsync of
    a few milliseconds while the lock is held, so at a few hundred reservations a second the writers
    queue for the lock. Whoever gets this process's turn takes every transaction waiting in the process
    and runs each inside a savepoint of one SQLite transaction: a transaction that raises (out of stock)
    rolls back to its savepoint alone, the rest commit together. Each caller still returns only once
    its own work is committed, so a ``ctx.run`` never answers for uncommitted work; if the commit fails,
    every caller in the batch fails and its ``ctx.run`` runs again, finding nothing or everything done.

    Queueing on a lock of our own also keeps this process's writers out of SQLite's busy handler, which
    sleeps (1, 2, 5… up to 100 ms) instead of waking a writer when the lock frees: only the other
    worker process waits there.
    """

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Job[Any]] = []

    def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a write transaction of the store and return its result once committed."""
        job = _Job(work)
        with self._queue_lock:
            self._queue.append(job)
        with self._turn:
            if not job.done:  # nobody took it along: run what waits now, this job among it
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if job.error is not None:
            raise job.error
        return cast(_T, job.result)

    @staticmethod
    def _commit(batch: list[_Job[Any]]) -> None:
        try:
            with transaction(STORE, SCHEMA, durable=True) as db:
                for job in batch:
                    db.execute("savepoint job")
                    try:
                        job.result = job.work(db)
                    except Exception as exc:
                        db.execute("rollback to job")
                        job.error = exc
                    db.execute("release job")
        except BaseException as exc:  # nothing of the batch is committed
            for job in batch:
                job.result, job.error = None, exc
        finally:
            for job in batch:
                job.done = True


@dataclass
class _Job(Generic[_T]):
    work: Callable[[sqlite3.Connection], _T]
    result: _T | None = None
    error: BaseException | None = None
    done: bool = False


_writes = _GroupCommit()


def _now() -> str:
    # The commit's own time, read inside the ``ctx.run`` that commits, so a replay never reads it again.
    return iso(time.time())


def _level(db: sqlite3.Connection, sku: str) -> StockLevel:
    row = db.execute(f"select {_LEVEL_COLUMNS} from levels where sku = ?", (sku,)).fetchone()
    return fresh_level(sku) if row is None else _level_of(row)


def _level_of(row: tuple[object, ...]) -> StockLevel:
    return StockLevel.model_validate(dict(zip(_LEVEL_COLUMNS.split(", "), row, strict=True)))


def _save(db: sqlite3.Connection, level: StockLevel) -> None:
    """Write the level (its row is created on the SKU's first event)."""
    db.execute(
        f"insert or replace into levels ({_LEVEL_COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            level.sku,
            level.initial,
            level.available,
            level.reserved,
            level.restocked,
            level.threshold,
            int(level.low),
            level.low_stock_alerts,
        ),
    )


def _append(
    db: sqlite3.Connection,
    level: StockLevel,
    kind: EventKind,
    quantity: int,
    *,
    actor: str,
    at: str,
    order_id: str | None = None,
    restock_id: str | None = None,
    note: str = "",
    alert: int | None = None,
) -> None:
    """Append one event and write the level it leads to, in the caller's transaction."""
    db.execute(
        "insert into inventory_events (sku, order_id, kind, quantity, actor, at, restock_id, note, alert)"
        " values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (level.sku, order_id, kind.value, quantity, actor, at, restock_id, note, alert),
    )
    _save(db, level)


def _holds(db: sqlite3.Connection, order_id: str) -> dict[str, int]:
    rows = db.execute("select sku, quantity from holds where order_id = ? order by sku", (order_id,))
    return dict(rows.fetchall())


class LowStockAlert(Model):
    """One crossing into low stock, as the reservation's transaction saw it."""

    sku: str
    number: int
    """The SKU's crossing count: the email is ``low-stock-{sku}-{number}``."""
    available: int
    initial: int
    threshold: int


class _Reserved(Model):
    """The journaled result of a reservation's transaction."""

    lines: dict[str, int]
    alerts: list[LowStockAlert] = []


class _Released(Model):
    lines: dict[str, int]


def _reserve(req: ReserveOrder) -> _Reserved:
    """:func:`_reserve_in`, committed (what ``Reserve`` runs inside ``ctx.run``)."""
    return _writes.run(lambda db: _reserve_in(db, req))


def _reserve_in(db: sqlite3.Connection, req: ReserveOrder) -> _Reserved:
    """Hold every line of the order, or nothing (409 naming every short SKU)."""
    lines = dict(sorted(req.lines.items()))
    found = db.execute("select status from reservations where order_id = ?", (req.order_id,)).fetchone()
    if found is not None:
        return _reserved_before(db, req.order_id, lines, ReservationStatus(found[0]))
    levels = {sku: _level(db, sku) for sku in lines}
    short = [
        f"{sku} has {levels[sku].available} available, {wanted} wanted"
        for sku, wanted in lines.items()
        if levels[sku].available < wanted
    ]
    if short:
        raise StockConflict("out of stock: " + "; ".join(short))
    at = _now()
    alerts: list[LowStockAlert] = []
    for sku, wanted in lines.items():
        level = levels[sku]
        alert = level.low_stock_alerts if take(level, wanted) else None
        if alert is not None:
            alerts.append(_alert_of(level, alert))
        _append(
            db,
            level,
            EventKind.RESERVED,
            wanted,
            actor=req.actor,
            at=at,
            order_id=req.order_id,
            alert=alert,
        )
        db.execute(
            "insert into holds (order_id, sku, quantity) values (?, ?, ?)", (req.order_id, sku, wanted)
        )
    db.execute("insert into reservations (order_id, status) values (?, 'reserved')", (req.order_id,))
    return _Reserved(lines=lines, alerts=alerts)


def _reserved_before(
    db: sqlite3.Connection, order_id: str, lines: dict[str, int], status: ReservationStatus
) -> _Reserved:
    """The answer to a reservation of an order id seen before: the first answer, or 409."""
    if status is ReservationStatus.RELEASED:
        raise StockConflict(f"order {order_id} was released: a released order cannot reserve again")
    held = _holds(db, order_id)
    if held != lines:
        raise StockConflict(f"order {order_id} already holds {json.dumps(held)}, not {json.dumps(lines)}")
    # The alerts of the first reservation, again: if its run committed but was never journaled, this is
    # the run that gets them sent (the message ids make a second send of the same alert a no-op).
    rows = db.execute(
        "select sku, alert from inventory_events where order_id = ? and kind = 'reserved'"
        " and alert is not null order by id",
        (order_id,),
    ).fetchall()
    return _Reserved(lines=held, alerts=[_alert_of(_level(db, sku), number) for sku, number in rows])


def _alert_of(level: StockLevel, number: int) -> LowStockAlert:
    return LowStockAlert(
        sku=level.sku,
        number=number,
        available=level.available,
        initial=level.initial,
        threshold=level.threshold,
    )


def _release(req: ReleaseOrder, invocation_id: str) -> _Released:
    """:func:`_release_in`, committed."""
    return _writes.run(lambda db: _release_in(db, req, invocation_id))


def _release_in(db: sqlite3.Connection, req: ReleaseOrder, invocation_id: str) -> _Released:
    """Give back what the order holds; the order is over afterwards (see the module docs)."""
    found = db.execute(
        "select status, released_by from reservations where order_id = ?", (req.order_id,)
    ).fetchone()
    if found is None:  # nothing held: remember the release, so a late reservation is refused
        db.execute(
            "insert into reservations (order_id, status, released_by) values (?, 'released', ?)",
            (req.order_id, invocation_id),
        )
        return _Released(lines={})
    status, released_by = ReservationStatus(found[0]), found[1]
    if status is ReservationStatus.RELEASED:
        if released_by != invocation_id:
            return _Released(lines={})  # a second release gives back nothing
        # This invocation's release committed before a crash: answer what it gave back.
        rows = db.execute(
            "select sku, quantity from inventory_events where order_id = ? and kind = 'released'"
            " order by sku",
            (req.order_id,),
        )
        return _Released(lines=dict(rows.fetchall()))
    held = _holds(db, req.order_id)
    at = _now()
    for sku, quantity in held.items():
        level = _level(db, sku)
        give_back(level, quantity)
        _append(db, level, EventKind.RELEASED, quantity, actor=req.actor, at=at, order_id=req.order_id)
    db.execute("delete from holds where order_id = ?", (req.order_id,))
    db.execute(
        "update reservations set status = 'released', released_by = ? where order_id = ?",
        (invocation_id, req.order_id),
    )
    return _Released(lines=held)


def _restock(req: Restock, actor: str) -> StockLevel:
    """:func:`_restock_in`, committed."""
    return _writes.run(lambda db: _restock_in(db, req, actor))


def _restock_in(db: sqlite3.Connection, req: Restock, actor: str) -> StockLevel:
    """Add units once per restock id; answer the SKU's level."""
    found = db.execute(
        "select sku, quantity, note from inventory_events where restock_id = ?", (req.restock_id,)
    ).fetchone()
    if found is not None:
        if tuple(found) != (req.sku, req.quantity, req.note):
            raise StockConflict(
                f"restock {req.restock_id} already added {found[1]} units to {found[0]} (note {found[2]!r})"
            )
        return _level(db, req.sku)
    level = _level(db, req.sku)
    add(level, req.quantity)
    _append(
        db,
        level,
        EventKind.RESTOCKED,
        req.quantity,
        actor=actor,
        at=_now(),
        restock_id=req.restock_id,
        note=req.note,
    )
    return level


def _rebuild(actor: str, invocation_id: str) -> RebuildReport:
    """:func:`_rebuild_in`, committed."""
    return _writes.run(lambda db: _rebuild_in(db, actor, invocation_id))


def _rebuild_in(db: sqlite3.Connection, actor: str, invocation_id: str) -> RebuildReport:
    """Replace ``levels`` and ``holds`` by the fold of ``inventory_events`` where they differ.

    One transaction: reservations wait for it (a fold reads every event; about a second per million).
    """
    done = db.execute("select report from rebuilds where invocation_id = ?", (invocation_id,)).fetchone()
    if done is not None:  # this invocation's rebuild committed before a crash: the same answer
        return RebuildReport.model_validate_json(done[0])
    rows = db.execute("select sku, order_id, kind, quantity from inventory_events order by id")
    count = 0

    def events() -> Iterator[tuple[str, str | None, EventKind, int]]:
        nonlocal count
        for sku, order_id, kind, quantity in rows:
            count += 1
            yield sku, order_id, EventKind(kind), quantity

    try:
        levels, holds = fold(events())
    except ValueError as exc:  # only a hand-edited event table gets here: a person must look
        raise TerminalError(f"the inventory events do not fold: {exc}", status_code=500) from exc
    stored = {row[0]: _level_of(row) for row in db.execute(f"select {_LEVEL_COLUMNS} from levels")}
    for sku in stored.keys() - levels.keys():  # a row no event explains: back to its starting stock
        levels[sku] = fresh_level(sku)
    changed = sorted(sku for sku, level in levels.items() if stored.get(sku) != level)
    for sku in changed:
        _save(db, levels[sku])

    stored_holds = {
        (order_id, sku): quantity
        for order_id, sku, quantity in db.execute("select order_id, sku, quantity from holds")
    }
    wrong = {key for key in stored_holds.keys() | holds.keys() if stored_holds.get(key) != holds.get(key)}
    for order_id, sku in wrong:
        db.execute("delete from holds where order_id = ? and sku = ?", (order_id, sku))
        if (quantity := holds.get((order_id, sku))) is not None:
            db.execute(
                "insert into holds (order_id, sku, quantity) values (?, ?, ?)", (order_id, sku, quantity)
            )

    report = RebuildReport(
        events=count,
        skus=len(levels),
        changed=changed,
        changed_holds=sorted({order_id for order_id, _ in wrong}),
        actor=actor,
        at=_now(),
    )
    db.execute(
        "insert into rebuilds (invocation_id, actor, at, report) values (?, ?, ?, ?)",
        (invocation_id, actor, report.at, report.model_dump_json()),
    )
    return report


def _read_levels(skus: list[str]) -> list[StockLevel]:
    with reading(STORE, SCHEMA) as db:
        marks = ", ".join("?" * len(skus))
        rows = db.execute(f"select {_LEVEL_COLUMNS} from levels where sku in ({marks})", skus)
        stored = {row[0]: _level_of(row) for row in rows}
    return [stored.get(sku) or fresh_level(sku) for sku in skus]


def _read_history(query: HistoryQuery) -> InventoryHistory:
    with reading(STORE, SCHEMA) as db:
        rows = db.execute(
            f"select {_EVENT_COLUMNS} from inventory_events where sku = ? and id > ? order by id limit ?",
            (query.sku, query.after, query.limit),
        ).fetchall()
    columns = _EVENT_COLUMNS.split(", ")
    events = [InventoryEvent.model_validate(dict(zip(columns, row, strict=True))) for row in rows]
    return InventoryHistory(sku=query.sku, events=events)


# -- the handlers ------------------------------------------------------------------------------------------


@inventory.handler("Reserve")
async def reserve(ctx: Context, req: ReserveOrder) -> Reservation:
    """Hold every line of the order, or nothing: 409 naming each short SKU.

    A repeat with the same lines answers the first reservation; other lines, or an order already
    released, are 409.
    """
    done = await ctx.run_typed("reserve stock", _reserve, RunOptions[_Reserved](), req)
    for alert in done.alerts:
        _announce(ctx, alert)
    return Reservation(order_id=req.order_id, lines=done.lines, status=ReservationStatus.RESERVED)


@inventory.handler("Release")
async def release(ctx: Context, req: ReleaseOrder) -> Reservation:
    """Give back everything the order holds (``lines``: what this call gave back; ``{}`` on a repeat)."""
    # The invocation id tells a rerun of this release after a crash (same answer) from a second release.
    done = await ctx.run_typed("release stock", _release, RunOptions[_Released](), req, ctx.request().id)
    return Reservation(order_id=req.order_id, lines=done.lines, status=ReservationStatus.RELEASED)


@inventory.handler("Levels", public="read")
async def get_levels(ctx: Context, query: StockQuery) -> list[StockLevel]:
    """Stock of each SKU asked for, in the order asked (a SKU never used shows its starting stock)."""
    # A read outside ``ctx.run``: it is not journaled, so a replay could read other numbers, but this
    # handler does nothing else with them than answer. The thread keeps SQLite off the event loop.
    return await asyncio.to_thread(_read_levels, list(dict.fromkeys(query.skus)))


@inventory.handler("Restock", public="operator")
async def restock(ctx: Context, req: Restock) -> StockLevel:
    """Add units to a SKU, once per ``restockId``; the caller's verified subject is the event's actor."""
    return await ctx.run_typed("restock", _restock, RunOptions[StockLevel](), req, caller(ctx))


@inventory.handler("History", public="operator")
async def history(ctx: Context, query: HistoryQuery) -> InventoryHistory:
    """The audit of a SKU's stock: every reservation, release and restock, who and when, oldest first."""
    # Operator, not read: it names every order that touched the SKU and every operator who restocked it,
    # which is back-office business; ``Levels`` answers what a client may ask. Not journaled (see Levels).
    return await asyncio.to_thread(_read_history, query)


@inventory.handler("RebuildLevels", public="operator")
async def rebuild_levels(ctx: Context) -> RebuildReport:
    """Recompute every SKU's level (and every hold) from the inventory events; report what differed."""
    return await ctx.run_typed(
        "rebuild levels", _rebuild, RunOptions[RebuildReport](), caller(ctx), ctx.request().id
    )


def _announce(ctx: Context, alert: LowStockAlert) -> None:
    """Email the low-stock alert (a one-way send: the reservation never waits for the mail)."""
    send(
        ctx,
        send_email,
        EmailRequest(
            message_id=f"low-stock-{alert.sku}-{alert.number}",
            to=STOCK_ALERTS_EMAIL,
            subject=f"Low stock: {alert.sku}",
            body=f"{alert.sku}: {alert.available} of {alert.initial} units left "
            f"(threshold {alert.threshold}).",
        ),
    )
