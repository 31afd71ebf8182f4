"""The two systems a migration moves between: a legacy database and a new one, both real SQLite files.

Each migrated service has a folder ``$PODIUM_DATA_DIR/migration/<serviceId>/`` with ``legacy.db`` and
``new.db`` (table ``records(id integer primary key, payload text)``) and ``routing.json``, which says
where reads and writes go (``primary``: legacy or new; ``dualWrite``; ``legacyEnabled``). Every
operation is idempotent: copying a batch twice writes the same rows, switching twice is a no-op.

Test data in the service id (documented in the README):

| service id contains | effect |
|---|---|
| ``-badbatch`` | copying batch 3 fails |
| ``-inconsistent`` | the consistency check finds a difference |
| ``-noswitch`` | switching traffic fails |
| ``-oldstuck`` | turning the old system off fails twice, then works |
| ``-oldbroken`` | turning the old system off always fails |
| ``-slow`` | each batch copy blocks 2 s (a crash window) |
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

SCHEMA = "create table if not exists records (id integer primary key, payload text not null)"
SQLITE_MAX_INT = 2**63 - 1
"""The largest integer SQLite holds (a bigger one raises OverflowError before any SQL runs)."""


class StoreError(Exception):
    """A storage operation failed for a reason a retry will not fix (test data)."""


def folder(service_id: str) -> Path:
    """Where a service's databases and routing live."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")) / "migration" / service_id


def _db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("pragma journal_mode=wal")
    db.execute(SCHEMA)
    return db


def _routing_path(service_id: str) -> Path:
    return folder(service_id) / "routing.json"


def routing(service_id: str) -> dict[str, Any]:
    """The current routing of a service."""
    path = _routing_path(service_id)
    if not path.exists():
        return {"primary": "legacy", "dualWrite": False, "legacyEnabled": True}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _set_routing(service_id: str, **changes: Any) -> dict[str, Any]:
    current = {**routing(service_id), **changes}
    path = _routing_path(service_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current))
    tmp.replace(path)  # atomic: a crash leaves the old routing or the new one
    return current


def seed(service_id: str, rows: int) -> int:
    """Create the legacy database with ``rows`` records (idempotent); return the count."""
    with closing(_db(folder(service_id) / "legacy.db")) as db, db:
        db.executemany(
            "insert or ignore into records (id, payload) values (?, ?)",
            ((n, f"record {n} of {service_id}") for n in range(1, rows + 1)),
        )
        return int(db.execute("select count(*) from records").fetchone()[0])


def write(service_id: str, record_id: int, payload: str) -> dict[str, Any]:
    """Application traffic: write to the primary, and to the other side too while dual-write is on."""
    route = routing(service_id)
    targets = [route["primary"]]
    if route["dualWrite"]:
        targets.append("new" if route["primary"] == "legacy" else "legacy")
    for target in targets:
        with closing(_db(folder(service_id) / f"{target}.db")) as db, db:
            db.execute("insert or replace into records (id, payload) values (?, ?)", (record_id, payload))
    return {"wroteTo": targets}


def set_dual_write(service_id: str, enabled: bool) -> dict[str, Any]:
    """Turn dual-write on or off."""
    return _set_routing(service_id, dualWrite=enabled)


def count(service_id: str, side: str) -> int:
    """Rows on one side."""
    with closing(_db(folder(service_id) / f"{side}.db")) as db:
        return int(db.execute("select count(*) from records").fetchone()[0])


def copy_batch(service_id: str, batch: int, size: int) -> int:
    """Copy legacy rows ``[batch*size, (batch+1)*size)`` (by position) to the new database; rows copied."""
    if "-badbatch" in service_id and batch == 3:
        raise StoreError(f"batch {batch} of {service_id}: the legacy export failed")
    if "-slow" in service_id:
        time.sleep(2)
    with closing(_db(folder(service_id) / "legacy.db")) as legacy:
        rows = legacy.execute(
            "select id, payload from records order by id limit ? offset ?", (size, batch * size)
        ).fetchall()
    with closing(_db(folder(service_id) / "new.db")) as new, new:
        new.executemany("insert or replace into records (id, payload) values (?, ?)", rows)
    return len(rows)


def checksum(service_id: str, side: str) -> str:
    """A digest of every row on one side."""
    digest = hashlib.sha256()
    with closing(_db(folder(service_id) / f"{side}.db")) as db:
        for record_id, payload in db.execute("select id, payload from records order by id"):
            digest.update(f"{record_id}:{payload}\n".encode())
    return digest.hexdigest()


def verify(service_id: str) -> dict[str, Any]:
    """Compare both sides: counts and checksums."""
    result = {
        "legacyRows": count(service_id, "legacy"),
        "newRows": count(service_id, "new"),
        "consistent": checksum(service_id, "legacy") == checksum(service_id, "new"),
    }
    if "-inconsistent" in service_id:
        result["consistent"] = False
    return result


def switch_traffic(service_id: str) -> dict[str, Any]:
    """Make the new database the primary (the point of no return)."""
    if "-noswitch" in service_id:
        raise StoreError(f"the router refused to switch {service_id}")
    return _set_routing(service_id, primary="new")


def disable_legacy(service_id: str) -> dict[str, Any]:
    """Turn the old system off (and dual-write with it)."""
    attempt = int(routing(service_id).get("shutdownAttempts", 0)) + 1
    _set_routing(service_id, shutdownAttempts=attempt)
    if "-oldbroken" in service_id or ("-oldstuck" in service_id and attempt <= 2):
        raise StoreError(f"the legacy system of {service_id} did not shut down (attempt {attempt})")
    return _set_routing(service_id, legacyEnabled=False, dualWrite=False)
