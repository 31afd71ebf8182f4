"""A TCP proxy whose faults a test switches while traffic flows: the network between engine and deployment.

A test starts it on loopback in front of a deployment and registers the deployment with the engine
through the proxy's address (``proxy.url``) instead of the deployment's own, so every request the engine
sends to that deployment crosses it. It is a byte pipe: it never parses what it carries, so HTTP/2 (the
engine's service protocol, one long-lived connection with many streams) goes through untouched, frames,
pings and all.

Faults, switched from the test's thread at any moment:

- :meth:`FaultyProxy.heal` (pass): bytes go through as they come;
- :meth:`FaultyProxy.delay`: every chunk is held for the given time before it is passed on, in both
  directions, order kept (a slow link);
- :meth:`FaultyProxy.drop`: every open connection is closed now, and every new one is accepted and
  closed at once (a peer that keeps resetting: messages in flight are lost);
- :meth:`FaultyProxy.cut`: close every open connection now, once; new connections go through (a link
  that flapped);
- :meth:`FaultyProxy.blackhole`: connections are accepted and read, and nothing is ever passed on or
  answered (a partition: packets vanish, nobody is told). The peers only find out by their own timeouts.
  A connection that lost bytes in a blackhole (or was opened in one) cannot carry its HTTP/2 session on,
  so :meth:`heal` closes it, as the peers' TCP stacks would have reset it; new connections go through.

Connections are closed abruptly (a TCP reset), as a failing network closes them, not with a polite FIN.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from podium.runtime import free_port

T = TypeVar("T")
_CHUNK = 64 * 1024


class Fault(enum.StrEnum):
    """What the proxy does to the traffic it carries."""

    PASS = "pass"
    DELAY = "delay"
    DROP = "drop"
    BLACKHOLE = "blackhole"


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy has done so far (counters only grow)."""

    accepted: int
    """Connections accepted (dropped ones included)."""
    dropped: int
    """Connections accepted and closed at once (``drop``)."""
    closed_by_fault: int
    """Open connections closed by ``drop``, ``cut``, or a heal after a blackhole."""
    forwarded_bytes: int
    """Bytes passed on, both directions."""
    discarded_bytes: int
    """Bytes read and thrown away in a blackhole."""


class _Link:
    """One client connection and, unless it was born in a blackhole, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, *, in_blackhole: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.in_blackhole = in_blackhole
        """Accepted during a blackhole: it has no upstream and never will."""
        self.lost_bytes = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        """Reset both sides now (RST, not FIN) and stop pumping."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultyProxy:
    """A loopback TCP proxy to ``upstream`` (``http://host:port`` or ``host:port``) with switchable faults.

    Runs its own event loop on a background thread, so a synchronous test drives it::

        with FaultyProxy(deployment.url) as proxy:
            engine.register(proxy.url)
            proxy.blackhole()
            ...
            proxy.heal()
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream {upstream!r} must name a host and a port")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.host = host
        self.port = port or free_port(host)
        self._fault = Fault.PASS
        self._delay = 0.0
        self._links: set[_Link] = set()
        self._counts = {"accepted": 0, "dropped": 0, "closed": 0, "forwarded": 0, "discarded": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to register instead of the upstream's."""
        return f"http://{self.host}:{self.port}"

    @property
    def fault(self) -> Fault:
        """The fault in force."""
        return self._fault

    # -- life ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on :attr:`port` (returns once it accepts connections)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            try:
                self._server = await asyncio.start_server(
                    self._accept, self.host, self.port, reuse_address=True
                )
            except BaseException as exc:  # reported by start()
                failure.append(exc)
                return
            finally:
                ready.set()
            await self._stopping.wait()
            self._server.close()
            for link in self._links:
                link.abort()
            self._links.clear()
            await self._server.wait_closed()

        # asyncio.run cancels and awaits whatever is still pumping when main returns.
        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"faulty-proxy-{self.port}")
        self._thread.daemon = True
        self._thread.start()
        ready.wait(10)
        if failure:
            raise RuntimeError(f"the proxy could not listen on {self.url}: {failure[0]!r}") from failure[0]

    def stop(self) -> None:
        """Close the listener and every connection, and stop the thread."""
        if self._loop is None or self._loop.is_closed() or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------------------

    def heal(self) -> None:
        """Pass bytes through again; connections that lost bytes in a blackhole are closed."""

        async def heal() -> None:
            self._fault, self._delay = Fault.PASS, 0.0
            # Born in the blackhole (no upstream) or robbed by it: neither can carry its session on.
            self._abort(lambda link: link.lost_bytes or link.in_blackhole)

        self._call(heal())

    def delay(self, by: timedelta) -> None:
        """Hold every chunk for ``by`` before passing it on (both directions; order is kept)."""
        if by <= timedelta(0):
            raise ValueError("a delay must be positive")

        async def delay() -> None:
            self._fault, self._delay = Fault.DELAY, by.total_seconds()

        self._call(delay())

    def drop(self) -> None:
        """Close every open connection now, and every new one as soon as it is accepted."""

        async def drop() -> None:
            self._fault, self._delay = Fault.DROP, 0.0
            self._abort(lambda link: True)

        self._call(drop())

    def cut(self) -> None:
        """Close every open connection now (once); new connections go through."""

        async def cut() -> None:
            self._abort(lambda link: True)

        self._call(cut())

    def blackhole(self) -> None:
        """Accept and read everything, pass on and answer nothing, close nothing."""

        async def blackhole() -> None:
            self._fault, self._delay = Fault.BLACKHOLE, 0.0

        self._call(blackhole())

    def stats(self) -> ProxyStats:
        """The counters so far."""
        counts = dict(self._counts)
        return ProxyStats(
            accepted=counts["accepted"],
            dropped=counts["dropped"],
            closed_by_fault=counts["closed"],
            forwarded_bytes=counts["forwarded"],
            discarded_bytes=counts["discarded"],
        )

    def open_connections(self) -> int:
        """Connections open through the proxy right now."""
        return len(self._links)

    # -- inside the loop -----------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _abort(self, which: Callable[[_Link], bool]) -> None:
        for link in [link for link in self._links if which(link)]:
            link.abort()
            self._links.discard(link)
            self._counts["closed"] += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counts["accepted"] += 1
        if self._fault is Fault.DROP:
            self._counts["dropped"] += 1
            writer.transport.abort()
            return
        link = _Link(writer, in_blackhole=self._fault is Fault.BLACKHOLE)
        self._links.add(link)
        upstream_reader: asyncio.StreamReader | None = None
        if not link.in_blackhole:
            try:
                upstream_reader, link.upstream = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                # The deployment is not there (a crash test stopped it): the client sees the reset.
                self._links.discard(link)
                link.abort()
                return
        up = asyncio.Queue[tuple[float, bytes | None]]()
        down = asyncio.Queue[tuple[float, bytes | None]]()
        link.tasks = [asyncio.create_task(self._read(link, reader, up))]
        if upstream_reader is not None and link.upstream is not None:
            link.tasks += [
                asyncio.create_task(self._read(link, upstream_reader, down)),
                asyncio.create_task(self._write(link, up, link.upstream)),
                asyncio.create_task(self._write(link, down, writer)),
            ]
        try:
            await asyncio.gather(*link.tasks)
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                link.abort()

    async def _read(
        self, link: _Link, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                await queue.put((loop.time(), None))
                return
            if self._fault is Fault.BLACKHOLE or link.upstream is None:
                link.lost_bytes = True
                self._counts["discarded"] += len(data)
                continue
            await queue.put((loop.time() + self._delay, data))

    async def _write(
        self, link: _Link, queue: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if data is None:
                # Half-close: the other direction may still be talking (HTTP/2 ends with GOAWAY both ways).
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if self._fault is Fault.BLACKHOLE:
                # Read before the blackhole began, due after it: lost with the rest.
                link.lost_bytes = True
                self._counts["discarded"] += len(data)
                continue
            self._counts["forwarded"] += len(data)  # counted first: the peer may read it before we go on
            writer.write(data)
            await writer.drain()
