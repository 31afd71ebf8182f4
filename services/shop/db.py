"""The shop's SQL stores: one SQLite file per deployment that keeps SQL, the one way the shop opens them.

Each service that keeps data the engine's state is not made for (queries over many orders, a catalogue's
stock levels) owns one database file, ``$PODIUM_DATA_DIR/shop/<name>.db`` (default ``.podium/shop``):
``inventory`` (stock, holds and inventory events) and ``orders`` (the read models). No service opens
another's file; they talk through handlers.

Each thread keeps one connection per store open (closing the last connection of a WAL database
checkpoints and deletes the WAL, which would cost every transaction a checkpoint). Every write is one
short transaction (:func:`transaction`), run inside ``ctx.run`` and idempotent by its caller's key,
so a ``ctx.run`` that runs again after a crash changes nothing twice. SQLite in WAL mode lets
readers run beside the one writer; ``begin immediate`` takes the write lock at once, so two processes of
a deployment (its workers) never deadlock upgrading a read lock, and ``timeout`` makes a writer wait for
the lock instead of failing.

Durability is per store, a deliberate choice: a store that is a source of truth (``inventory``) commits
with ``synchronous=full`` (an fsync per commit, as the engine does); a read model (``orders``) commits
with ``synchronous=normal``, which survives a crash of any process but may lose its last commits on a
power cut: it is rebuilt from the event store, which the engine keeps (``Replay``, ``Rebuild``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_created: set[Path] = set()
_lock = threading.Lock()
_local = threading.local()


def store_path(name: str) -> Path:
    """Where the store ``name`` lives."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")) / "shop" / f"{name}.db"


def _connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("pragma journal_mode=wal")
    db.execute(f"pragma synchronous={'full' if durable else 'normal'}")
    db.execute("pragma foreign_keys=on")
    return db


def ensure_schema(name: str, schema: str) -> Path:
    """Create the store and its tables if they are missing (once per process); return its path."""
    path = store_path(name)
    with _lock:
        if path in _created and path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(path, durable=True)
        try:
            db.executescript(schema)
        finally:
            db.close()
        _created.add(path)
    return path


def _connection(name: str, schema: str, *, durable: bool) -> sqlite3.Connection:
    """This thread's connection to the store (kept open: closing the last one checkpoints the WAL)."""
    path = ensure_schema(name, schema)
    connections: dict[tuple[Path, bool], sqlite3.Connection] = _local.__dict__.setdefault("connections", {})
    db = connections.get((path, durable))
    if db is None:
        db = connections[(path, durable)] = _connect(path, durable=durable)
    return db


@contextmanager
def transaction(name: str, schema: str, *, durable: bool) -> Iterator[sqlite3.Connection]:
    """One write transaction on the store ``name``: committed when the block ends, rolled back on error."""
    db = _connection(name, schema, durable=durable)
    db.execute("begin immediate")
    try:
        yield db
    except BaseException:
        db.execute("rollback")
        raise
    db.execute("commit")


@contextmanager
def reading(name: str, schema: str) -> Iterator[sqlite3.Connection]:
    """A read-only view of the store ``name`` (a consistent snapshot for the block)."""
    db = _connection(name, schema, durable=False)
    db.execute("begin")
    try:
        yield db
    finally:
        db.execute("rollback")
