"""What a run left behind: what its orders cost the engine, and how far behind the read side was.

Both are read after a run has drained, from what the system keeps anyway, so measuring them costs the
run nothing:

- **The engine's costs** (:func:`engine_costs`), from its SQL introspection (``POST {admin}/query``):
  invocations, journal entries and state writes created since the run began. The engine keeps every
  completed invocation and its journal for the journal retention period (a day by default), so nothing
  of the run is gone when it is counted. ``sys_invocation`` has one row per invocation (its service, its
  journal size, when it was created, started running and completed); ``sys_journal`` one row per
  journal entry (``entry_type`` such as ``Command: SetState``, ``appended_at``). The scan covers the
  whole of both tables, so after a long run it takes a while (tens of seconds for millions of entries).
- **The read side's lag** (:func:`read_lag`), from the shop's read-model store
  ``$PODIUM_DATA_DIR/shop/orders.db``: its ``events`` table has, per event, the event's time (``at``,
  ISO 8601 UTC) and when the read models committed it (``projected_at``, epoch seconds). The order view,
  the customer's order list and the audit trail are written in the same transaction as the ``events``
  row, and stock levels in the same transaction as the inventory event, so this one lag is the lag of
  every view. A shop without that store (or that table) has no lag to report: None.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

STATE_WRITES = ("Command: SetState", "Command: ClearState", "Command: ClearAllState")
"""Journal entry types that change an object's or a workflow's state."""


class QueryError(RuntimeError):
    """The engine did not answer a SQL query."""


def query(admin_url: str, sql: str, *, timeout: float = 600.0) -> list[dict[str, Any]]:
    """Rows of a SQL query on the engine's introspection tables."""
    try:
        response = httpx.post(
            f"{admin_url.rstrip('/')}/query",
            json={"query": sql},
            headers={"accept": "application/json"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise QueryError(f"{sql!r}: {exc}") from exc
    if not response.is_success:
        raise QueryError(f"{sql!r}: {response.status_code} {response.text[:300]}")
    rows: list[dict[str, Any]] = response.json().get("rows", [])
    return rows


def engine_costs(admin_url: str, *, since: float, orders: int) -> dict[str, Any]:
    """Invocations, journal entries and state writes per order, of everything created since ``since``.

    Args:
        admin_url: The engine's admin API.
        since: Epoch seconds: the start of the run (after the previous one drained).
        orders: Orders completed in the run (each cost is divided by it).

    Returns:
        Per order: ``invocations`` (and ``byService``), ``journalEntries``, ``stateWrites``, ``journal``
        (entries by type); per service: invocations, and how long its invocations waited before running
        (``queuedP99``: behind another invocation of the same key, or for a deployment) and ran
        (``runningP99``), in seconds; and ``querySeconds``, what counting took.
    """
    started = time.monotonic()
    after = f"to_timestamp_millis({int(since * 1000)})"
    per = 1 / max(1, orders)
    services = query(
        admin_url,
        "SELECT target_service_name AS service, count(*) AS n, sum(journal_size) AS journal,"
        " approx_percentile_cont(CAST(running_at AS BIGINT) - CAST(created_at AS BIGINT), 0.99) AS queued,"
        " approx_percentile_cont(CAST(completed_at AS BIGINT) - CAST(running_at AS BIGINT), 0.99) AS running"
        f" FROM sys_invocation WHERE created_at >= {after} GROUP BY target_service_name",
    )
    journal = query(
        admin_url,
        "SELECT entry_type AS type, count(*) AS n FROM sys_journal"
        f" WHERE appended_at >= {after} GROUP BY entry_type",
    )
    by_type = {str(row["type"]): int(row["n"]) for row in journal}
    invocations = sum(int(row["n"]) for row in services)
    return {
        "invocationsPerOrder": invocations * per,
        "journalEntriesPerOrder": sum(int(row["journal"] or 0) for row in services) * per,
        "stateWritesPerOrder": sum(by_type.get(kind, 0) for kind in STATE_WRITES) * per,
        "journalPerOrder": {kind: n * per for kind, n in sorted(by_type.items())},
        "services": {
            str(row["service"]): {
                "invocationsPerOrder": int(row["n"]) * per,
                "queuedP99": _seconds(row["queued"]),
                "runningP99": _seconds(row["running"]),
            }
            for row in sorted(services, key=lambda r: -int(r["n"]))
        },
        "invocations": invocations,
        "querySeconds": round(time.monotonic() - started, 2),
    }


def _seconds(milliseconds: Any) -> float | None:
    if milliseconds is None or (isinstance(milliseconds, float) and math.isnan(milliseconds)):
        return None
    return float(milliseconds) / 1000


def read_lag(database: Path, *, since: float, window: float) -> dict[str, Any] | None:
    """How long after its time each event of the run reached the read models (seconds), or None.

    Args:
        database: The read-model store (``orders.db``), absent for a shop that keeps none.
        since: Epoch seconds, the start of the run: events from before it are left out.
        window: Seconds per window of :func:`windows`: the lag of the events of each window.

    Returns:
        ``events`` counted, ``p50``, ``p99``, ``max`` of the lag, and ``windows`` (the lag's p99 per
        window of event time), or None without the store or its ``events`` table.
    """
    if not database.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        # julianday() reads ISO 8601 with a "Z" or "+00:00" suffix; 2440587.5 is the Unix epoch's.
        rows = db.execute(
            "SELECT t, projected_at - t FROM"
            " (SELECT (julianday(at) - 2440587.5) * 86400.0 AS t, projected_at FROM events"
            "  WHERE projected_at >= ?)"
            " WHERE t >= ?",
            (since, since - 0.001),  # an event's time is cut to the millisecond
        ).fetchall()
    except sqlite3.Error:
        return None  # no events table (yet)
    finally:
        db.close()
    lags = sorted(float(lag) for _, lag in rows)
    by_window: dict[int, list[float]] = defaultdict(list)
    for at, lag in rows:
        by_window[int((at - since) // window)].append(float(lag))
    return {
        "events": len(lags),
        "p50": percentile(lags, 0.50),
        "p99": percentile(lags, 0.99),
        "max": lags[-1] if lags else None,
        "windows": [
            {"start": n * window, "events": len(values), "p99": percentile(values, 0.99)}
            for n, values in sorted(by_window.items())
        ],
    }


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
