"""The shop's SQL stores: one SQLite file per deployment that keeps SQL, the one way the shop opens them.

Each service that keeps data the engine's state is not made for (queries over many orders, a catalogue's
stock levels) owns one database file, ``$PODIUM_DATA_DIR/shop/<name>.db`` (default ``.podium/shop``):
``inventory`` (stock, holds and inventory events) and ``orders`` (the read models). No service opens
another's file; they talk through handlers.

Each store is opened through :mod:`services.common.sqlite` (a connection per thread, short transactions
inside ``ctx.run``, idempotent by their caller's key, so a ``ctx.run`` that runs again after a crash
changes nothing twice).

Durability is per store, a deliberate choice: a store that is a source of truth (``inventory``) commits
with ``synchronous=full`` (an fsync per commit, as the engine does); a read model (``orders``) commits
with ``synchronous=normal``, which survives a crash of any process but may lose its last commits on a
power cut: it is rebuilt from the event store, which the engine keeps (``Replay``, ``Rebuild``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common import sqlite


def store_path(name: str) -> Path:
    """Where the store ``name`` lives."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")) / "shop" / f"{name}.db"


def ensure_schema(name: str, schema: str) -> Path:
    """Create the store and its tables if they are missing; return its path."""
    path = store_path(name)
    sqlite.ensure_schema(path, schema)
    return path


@contextmanager
def transaction(name: str, schema: str, *, durable: bool) -> Iterator[sqlite3.Connection]:
    """One write transaction on the store ``name``: committed when the block ends, rolled back on error."""
    with sqlite.transaction(store_path(name), schema, durable=durable) as db:
        yield db


@contextmanager
def reading(name: str, schema: str) -> Iterator[sqlite3.Connection]:
    """A read-only view of the store ``name`` (a consistent snapshot for the block)."""
    with sqlite.reading(store_path(name), schema) as db:
        yield db
