"""SQLite for the shop's stores: a connection kept per thread, short transactions.

Each thread keeps one connection per database file open. Closing the last connection of a WAL database
checkpoints the WAL into the file and deletes it, so a connection opened and closed per transaction pays
a checkpoint (and the connection's set-up) every time: about 1 ms of CPU per call, measured on the
simulated providers. (The providers still open one per call: kept open, their files, which every
process of the test suite shares, were found corrupted in a full run; docs/performance.md.)

SQLite in WAL mode lets readers run beside the one writer; ``begin immediate`` takes the write lock at
once, so two processes sharing a file (a deployment's workers) never deadlock upgrading a read lock, and
``timeout`` makes a writer wait for the lock instead of failing.

``durable`` picks the commit: ``synchronous=full`` (an fsync per commit, as the engine does) for a source
of truth, ``synchronous=normal`` (survives a crash of any process, may lose its last commits on a power
cut) for data rebuilt from elsewhere.

A file deleted while a connection is open (a test's fresh start) is noticed: the next use opens the new
file and creates its tables again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_created: dict[Path, int] = {}
"""Each file this process created its tables in, and how many times (a new file, a new generation)."""
_lock = threading.Lock()
_local = threading.local()


def _connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("pragma journal_mode=wal")
    db.execute(f"pragma synchronous={'full' if durable else 'normal'}")
    db.execute("pragma foreign_keys=on")
    return db


def ensure_schema(path: Path, schema: str) -> int:
    """Create the file and its tables if they are missing; return the file's generation."""
    with _lock:
        if path in _created and path.exists():
            return _created[path]
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(path, durable=True)
        try:
            db.executescript(schema)
        finally:
            db.close()
        _created[path] = _created.get(path, 0) + 1
        return _created[path]


def connection(path: Path, schema: str, *, durable: bool) -> sqlite3.Connection:
    """This thread's connection to ``path`` (kept open: closing the last one checkpoints the WAL)."""
    generation = ensure_schema(path, schema)
    connections: dict[tuple[Path, bool], tuple[int, sqlite3.Connection]] = _local.__dict__.setdefault(
        "connections", {}
    )
    kept = connections.get((path, durable))
    if kept is not None and kept[0] == generation:
        return kept[1]
    if kept is not None:
        kept[1].close()  # its file was deleted and made anew: this connection still holds the old one
    db = _connect(path, durable=durable)
    connections[(path, durable)] = (generation, db)
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db`` (autocommit mode): committed when the block ends, rolled back on error.

    ``begin immediate`` takes the write lock at once, so writers in several processes queue for it
    (``timeout``) instead of deadlocking on a read lock each wants to upgrade.
    """
    db.execute("begin immediate")
    try:
        yield db
    except BaseException:
        db.execute("rollback")
        raise
    db.execute("commit")


@contextmanager
def transaction(path: Path, schema: str, *, durable: bool) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``path``: committed when the block ends, rolled back on error."""
    with immediate(connection(path, schema, durable=durable)) as db:
        yield db


@contextmanager
def reading(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A read-only view of ``path`` (a consistent snapshot for the block)."""
    db = connection(path, schema, durable=False)
    db.execute("begin")
    try:
        yield db
    finally:
        db.execute("rollback")
