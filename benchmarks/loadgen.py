"""Load generators: open loop (requests sent on schedule) and closed loop (fixed concurrency).

Open loop is the honest one: a request is sent at its scheduled time whether or not earlier ones have
finished, as real users do, so an overloaded system shows its queueing delay instead of slowing the
generator down (closed loop hides that: see docs/performance.md).

The client is a minimal HTTP/1.1 client on asyncio streams with a pool of keep-alive connections (one
request at a time per connection, a new connection when every open one is busy). It exists because the
load generator shares the machine with what it measures: httpx cost 2.5-5 ms of CPU per request here,
this client about a tenth of that, so more of the two cores go to the system under test. Run it under
uvloop (``run_load``) for the same reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit

DEFAULT_BODY = '{"id": "{key}"}'
"""Request body template; ``{key}`` is replaced by the request's fresh key (the order id)."""

Body: TypeAlias = str | Callable[[str], str]
"""A request's body: a template in which ``{key}`` is replaced by the request's fresh key, or a function
that makes the body from the key (a catalogue's order, say: see :mod:`benchmarks.catalogue`)."""


def render(body: Body, key: str) -> bytes:
    """The body of the request with key ``key``."""
    return (body(key) if callable(body) else body.replace("{key}", key)).encode()


@dataclass
class Sample:
    """One request: when it was sent (seconds from the start), how long it took, how it ended."""

    sent: float
    latency: float
    outcome: str
    """``ok``, ``http-<status>``, or the exception's class name."""


@dataclass
class Run:
    """Everything one load run observed."""

    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    elapsed: float = 0.0


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, head: bytes, body: bytes) -> int:
        """Send one request, read the whole answer, return its status (the body is discarded)."""
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed before an answer")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP status line: {status_line[:60]!r}")
        status = int(parts[1])
        length = 0
        chunked = False
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            raise _Closed(status)
        return status

    def close(self) -> None:
        self.writer.close()


class _Closed(Exception):
    """The server answered and closed the connection."""

    def __init__(self, status: int) -> None:
        self.status = status


class Client:
    """POSTs to one host over a pool of keep-alive HTTP/1.1 connections."""

    def __init__(self, base_url: str, *, max_connections: int = 8000) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs are supported, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._all: set[_Connection] = set()

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        """POST ``body`` (JSON) to ``path`` and return the status code."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                status = await conn.post(head, body)
            except _Closed as closed:
                self._drop(conn)
                return closed.status
            except BaseException:
                self._drop(conn)
                raise
            self._idle.append(conn)
            return status

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        conn = _Connection(reader, writer)
        self._all.add(conn)
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._all.discard(conn)
        conn.close()

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            self._drop(conn)
        self._idle.clear()


def _request(
    client: Client, path: str, body: Body, run: Run, timeout: float, headers: dict[str, str] | None
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def one() -> None:
        key = uuid.uuid4().hex
        payload = render(body, key)
        sent = time.monotonic()
        try:
            status = await asyncio.wait_for(
                client.post(path.replace("{key}", key), payload, headers), timeout
            )
            outcome = "ok" if status == 200 else f"http-{status}"
        except TimeoutError:
            outcome = "timeout"
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = type(exc).__name__
        run.samples.append(Sample(sent=sent - run.started, latency=time.monotonic() - sent, outcome=outcome))

    return one


async def open_loop(
    ingress: str,
    path: str,
    *,
    rate: float,
    duration: float,
    body: Body = DEFAULT_BODY,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Run:
    """Send ``rate`` requests per second for ``duration`` seconds, on schedule."""
    run = Run()
    client = Client(ingress)
    try:
        run.started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        total = int(rate * duration)
        for n in range(total):
            delay = run.started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_request(client, path, body, run, timeout, headers)()))
        await asyncio.gather(*tasks)
        run.elapsed = time.monotonic() - run.started
    finally:
        await client.close()
    return run


async def closed_loop(
    ingress: str,
    path: str,
    *,
    concurrency: int,
    duration: float,
    body: Body = DEFAULT_BODY,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Run:
    """Keep ``concurrency`` requests in flight for ``duration`` seconds."""
    run = Run()
    client = Client(ingress, max_connections=concurrency)
    try:
        run.started = time.monotonic()
        deadline = run.started + duration

        async def worker() -> None:
            while time.monotonic() < deadline:
                await _request(client, path, body, run, timeout, headers)()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.elapsed = time.monotonic() - run.started
    finally:
        await client.close()
    return run


def run_load(coro: Coroutine[Any, Any, Run]) -> Run:
    """Run a load coroutine on uvloop (cheaper per request than the default loop)."""
    import uvloop

    async def main() -> Run:
        return await coro

    return uvloop.run(main())
