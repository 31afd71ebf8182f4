"""The benchmark's order flow on DBOS: the baseline a durable-execution library gives without an engine.

The same work as :mod:`benchmarks.flows`: a workflow keyed by order id runs four steps in order
(reserve, charge, ship, notify), each doing the same deterministic side effect
(:func:`benchmarks.flows._effect`), with compensations for the first three. It is written as a DBOS user
writes it: ``@DBOS.workflow()`` around ``@DBOS.step()`` functions, the workflow id set to the order's
key (``SetWorkflowID``) so that a repeated request attaches to the recorded workflow (and its result)
instead of running it again, and the compensations kept in a local list (an ``undo`` step for each
completed step, run in reverse order if a later one fails; ``notify`` is not compensated, as in
flows.py). Steps retry like flows.py's ``max_attempts=5`` (``retries_allowed=True, max_attempts=5``,
DBOS's default interval and backoff).

DBOS keeps its state in a *system database*, SQLite or PostgreSQL, and this module leaves every DBOS
setting at its default: durability is what DBOS gives out of the box. With DBOS 3.4.0:

* SQLite: DBOS sets ``busy_timeout=30000`` and ``foreign_keys=ON`` and opens IMMEDIATE transactions; it
  sets neither ``journal_mode`` nor ``synchronous``, so SQLite's defaults hold: a rollback journal
  (``journal_mode=delete``) and ``synchronous=FULL`` (2), i.e. every commit is fsynced. The service
  prints the values it sees at start (``dbos system database: ...``) and ``GET /stats`` returns them.
* PostgreSQL (see :mod:`benchmarks.postgres`): ``fsync=on``, ``synchronous_commit=on``,
  ``full_page_writes=on``; DBOS connects through a pool of 20 (its default) with ``pool_pre_ping``.

What limits it: one order is six write transactions (workflow start, four step outputs, the outcome)
and a read before each step, made from threads (async workflows hand every database call to
``asyncio.to_thread`` on DBOS's executor, which by default has no thread limit), in one Python process.
SQLite takes one writer at a time, and waiting writers sleep in SQLite's busy handler. Past its capacity
the service starts a thread per waiting database call (about a thousand were seen), CPU per order climbs
and throughput falls instead of levelling off, so an overloaded run shows a collapse, not a plateau.

HTTP, as a minimal ASGI app under uvicorn (uvloop, httptools, no access log, idle keep-alive connections
kept for :data:`KEEP_ALIVE_SECONDS`), on 127.0.0.1:

* ``POST /DbosOrder/{key}/Run`` with ``{"id": key}``: 200 with ``{"orderId", "reservation", "payment",
  "shipment"}``; 400 on a body that is not a JSON object with a string ``id``; 500 if the workflow fails.
* ``GET /health``: 200 once DBOS is launched (uvicorn only listens after the app's startup).
* ``GET /stats``: how many times this process ran the workflow body and each step, and the system
  database's settings (to check idempotency and durability; not used by the load).

Run it alone with ``python -m benchmarks.dbos_flow --database-url URL --port N``, or from the benchmark
harness with :func:`start_dbos`, which starts PostgreSQL if needed and the service as a subprocess, and
measures CPU by process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from dbos import DBOS, DBOSConfig, SetWorkflowID

from benchmarks.flows import _effect
from benchmarks.postgres import PostgresServer, free_port, process_cpu_seconds

PATH = "/DbosOrder/{key}/Run"
"""Request path template of the flow; ``{key}`` is the order id (and the workflow id)."""

RUNS: Counter[str] = Counter()
"""Executions in this process: ``workflow`` (workflow bodies) and one entry per step kind."""

KEEP_ALIVE_SECONDS = 600
"""How long uvicorn keeps an idle keep-alive connection open (its default is 5 s).

A client that reuses an idle connection just as the server closes it gets a reset instead of an answer;
the benchmarks' load generator keeps a pool of idle connections and does not retry, so with uvicorn's
default it counted such resets as errors (about 1 in 50 requests at 50 orders/s). Ten minutes outlasts
any run. An HTTP setting only: it has nothing to do with durability."""

_ROOT = Path(__file__).resolve().parent.parent


# -- the flow ------------------------------------------------------------------------------------------


@DBOS.step(retries_allowed=True, max_attempts=5)
async def reserve(order_id: str) -> str:
    RUNS["reserve"] += 1
    return _effect("reserve", order_id)


@DBOS.step(retries_allowed=True, max_attempts=5)
async def charge(order_id: str) -> str:
    RUNS["charge"] += 1
    return _effect("charge", order_id)


@DBOS.step(retries_allowed=True, max_attempts=5)
async def ship(order_id: str) -> str:
    RUNS["ship"] += 1
    return _effect("ship", order_id)


@DBOS.step(retries_allowed=True, max_attempts=5)
async def notify(order_id: str) -> str:
    RUNS["notify"] += 1
    return _effect("notify", order_id)


@DBOS.step(retries_allowed=True, max_attempts=5)
async def undo(order_id: str) -> str:
    RUNS["undo"] += 1
    return _effect("undo", order_id)


@DBOS.workflow()
async def order_workflow(order: dict[str, Any]) -> dict[str, str]:
    RUNS["workflow"] += 1
    order_id = order["id"]
    compensations: list[Callable[[], Awaitable[str]]] = []
    try:
        reservation = await reserve(order_id)
        compensations.append(lambda: undo(order_id))
        payment = await charge(order_id)
        compensations.append(lambda: undo(order_id))
        shipment = await ship(order_id)
        compensations.append(lambda: undo(order_id))
    except Exception:
        for compensate in reversed(compensations):
            await compensate()
        raise
    await notify(order_id)
    return {"orderId": order_id, "reservation": reservation, "payment": payment, "shipment": shipment}


# -- HTTP ----------------------------------------------------------------------------------------------

_Scope = dict[str, Any]
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


class App:
    """A plain ASGI app: launches DBOS at startup, serves the flow, shuts DBOS down at shutdown."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.database_settings: dict[str, str] = {}

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: _Receive, send: _Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Launched inside the server's loop, so DBOS adopts it as its main loop.
                    dbos = DBOS(config=dbos_config(self.database_url))
                    DBOS.launch()
                    self.database_settings = system_database_settings(dbos)
                    print(f"dbos system database: {json.dumps(self.database_settings)}", flush=True)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                DBOS.destroy(workflow_completion_timeout_sec=5)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        method, parts = scope["method"], scope["path"].split("/")
        if (
            method == "POST"
            and len(parts) == 4
            and parts[1] == "DbosOrder"
            and parts[3] == "Run"
            and parts[2]
        ):
            body = await _read_body(receive)
            try:
                order = json.loads(body)
            except ValueError:
                await _respond(send, 400, {"error": "body is not JSON"})
                return
            if not isinstance(order, dict) or not isinstance(order.get("id"), str):
                await _respond(send, 400, {"error": 'body must be {"id": "<order id>"}'})
                return
            try:
                with SetWorkflowID(parts[2]):
                    result = await order_workflow(order)
            except Exception as exc:
                await _respond(send, 500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            await _respond(send, 200, result)
        elif method == "GET" and scope["path"] == "/health":
            await _respond(send, 200, {"ok": True})
        elif method == "GET" and scope["path"] == "/stats":
            await _respond(send, 200, {"runs": dict(RUNS), "database": self.database_settings})
        else:
            await _respond(send, 404, {"error": "not found"})


async def _read_body(receive: _Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: _Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def dbos_config(database_url: str) -> DBOSConfig:
    """DBOS's configuration for the benchmark: a name and the system database, nothing else."""
    return {"name": "podium-bench-dbos", "system_database_url": database_url}


def system_database_settings(dbos: DBOS) -> dict[str, str]:
    """The durability settings of DBOS's own connections to its system database (as DBOS opened them)."""
    import sqlalchemy as sa

    engine: sa.Engine = dbos._sys_db.engine  # private, but the only way to see DBOS's own connections
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = ("journal_mode", "synchronous", "locking_mode", "busy_timeout", "foreign_keys")
            return {"database": "sqlite"} | {
                name: str(conn.execute(sa.text(f"PRAGMA {name}")).scalar()) for name in names
            }
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
        return {"database": engine.dialect.name} | {
            name: str(conn.execute(sa.text(f"SHOW {name}")).scalar()) for name in names
        }


def serve(database_url: str, port: int, host: str = "127.0.0.1") -> None:
    """Launch DBOS on ``database_url`` and serve the flow on ``host:port`` until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(
        App(database_url),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_level="warning",
    )


def main() -> None:
    """Command line entry point: ``python -m benchmarks.dbos_flow --database-url URL --port N``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        required=True,
        help="DBOS system database: sqlite:///path/file.sqlite or postgresql://user@host:port/db",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    serve(args.database_url, args.port, args.host)


# -- harness integration -------------------------------------------------------------------------------


@dataclass
class DbosTarget:
    """The DBOS flow under test: where to send requests, and its CPU use so far by process."""

    name: str
    base_url: str
    path: str
    cpu: Callable[[], dict[str, float]]
    """Cumulative CPU seconds (user + system): ``{"service": ..., "database": ...}``."""


def _stop_service(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, and DBOS with it
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=10)


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"DBOS service exited ({process.returncode}) at start; {log}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"DBOS service did not answer in {timeout}s; see {log}")


def start_dbos(database: str, stack: contextlib.ExitStack, workdir: Path) -> DbosTarget:
    """Start the DBOS flow on ``database`` ("sqlite" or "postgres") and return it as a target.

    Starts a throwaway PostgreSQL first for "postgres" (in ``workdir/dbos-postgres/pg``); for "sqlite"
    the database file is ``workdir/dbos-sqlite/dbos.sqlite``. The service runs as a subprocess on a free
    port of 127.0.0.1 (its output in ``service.log`` next to the database) and is ready when this
    returns. Cleanups (service, then database) are registered on ``stack``.
    """
    if database not in ("sqlite", "postgres"):
        raise ValueError(f"database must be 'sqlite' or 'postgres', not {database!r}")
    home = Path(workdir) / f"dbos-{database}"
    home.mkdir(parents=True, exist_ok=True)
    server: PostgresServer | None = None
    if database == "postgres":
        server = PostgresServer(home / "pg").start()
        stack.callback(server.stop)
        url = server.url
    else:
        url = f"sqlite:///{(home / 'dbos.sqlite').resolve()}"

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = home / "service.log"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.dbos_flow", "--database-url", url, "--port", str(port)],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stack.callback(_stop_service, process)
    _wait_ready(process, base_url, log, timeout=120.0)

    def cpu() -> dict[str, float]:
        return {
            "service": process_cpu_seconds(process.pid),
            "database": server.cpu_seconds() if server is not None else 0.0,
        }

    return DbosTarget(name=f"dbos-{database}", base_url=base_url, path=PATH, cpu=cpu)


if __name__ == "__main__":
    main()
