"""The gateway: an HTTP/1.1 server that admits at most N requests to the upstream at once.

Each client connection is an :class:`asyncio.Protocol` that parses requests from its buffer and serves
them one at a time, in order (pipelined requests wait in the buffer). A complete request is served by
one task: answered by the gateway itself (its stats, or an error), or admitted, forwarded and relayed.
The task is cancelled if the client goes away: a queued request leaves the queue; a forwarded one keeps
its slot until the upstream answers (its invocation goes on in the engine).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from podium.gateway._admission import Admission
from podium.gateway._http import (
    CONTINUE,
    MAX_HEAD,
    ChunkedDecoder,
    HttpError,
    Request,
    Response,
    connection_tokens,
    encode_head,
    is_hop_by_hop,
    json_response,
    parse_request_head,
)
from podium.gateway._upstream import UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger("podium.gateway")

STATS_PATH = "/podium/gateway/stats"
"""Answered by the gateway itself, never forwarded."""
_IDLE_TIMEOUT = 120.0
"""Seconds a client connection may stay idle between requests before the gateway closes it."""
_LINGER = 2.0
"""Seconds to keep reading (and discarding) after an error answer before closing."""
_NO_BODY = (204, 304)
_WARN_EVERY = 10.0


@dataclass(frozen=True)
class GatewayStats:
    """A snapshot of the gateway's counters; ``GET /podium/gateway/stats`` answers it as JSON.

    Every admitted request ends in exactly one of completed or upstream_errors, so
    ``admitted == completed + upstream_errors + in_flight``; ``abandoned`` counts the admitted requests
    whose client left before the answer (their slot stays taken until the upstream answers).
    """

    in_flight: int
    """Requests forwarded to the upstream and not yet answered (slots taken)."""
    queued: int
    """Requests waiting for a slot."""
    max_in_flight: int
    """The slot limit."""
    max_queue: int
    """The queue limit."""
    admitted: int
    """Requests that got a slot and were forwarded, since start."""
    rejected: int
    """Requests answered 503 without being forwarded (queue full, queue timeout, or stopping)."""
    completed: int
    """Admitted requests whose upstream answer was received whole and relayed, whatever its status."""
    upstream_errors: int
    """Admitted requests answered 502 or 504 (upstream unreachable, closed mid-answer, or timed out)."""
    abandoned: int
    """Admitted requests whose client went away before the answer came (their slot was held until the
    upstream answered)."""

    def to_json(self) -> dict[str, int]:
        """The stats with the JSON names the stats endpoint uses (camelCase)."""
        return {
            "inFlight": self.in_flight,
            "queued": self.queued,
            "maxInFlight": self.max_in_flight,
            "maxQueue": self.max_queue,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "completed": self.completed,
            "upstreamErrors": self.upstream_errors,
            "abandoned": self.abandoned,
        }


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Gateway:
    """An admission-control reverse proxy in front of one HTTP/1.1 upstream (the Restate ingress).

    At most ``max_in_flight`` requests are forwarded at once. A request that finds every slot taken
    waits in a FIFO queue of at most ``max_queue`` for up to ``queue_timeout``; when the queue is full or
    the wait ends it is answered ``503`` with ``Retry-After`` at once and never forwarded. Once
    forwarded, a request is never retried and its answer is relayed whatever it is; the gateway's own
    errors are ``502`` (upstream unreachable or closed mid-answer) and ``504`` (``upstream_timeout``).

    Args:
        upstream: Base URL of the upstream, ``http://host:port`` (a path is prepended to every target).
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (read :attr:`port` after :meth:`start`).
        max_in_flight: Requests forwarded at once. Capacity × target latency (Little's law) is a start.
        max_queue: Requests that may wait for a slot; 0 refuses at once when every slot is taken.
        queue_timeout: Longest wait in the queue (seconds or a timedelta).
        retry_after: What ``Retry-After`` tells a refused client (rounded up to whole seconds, at least 1).
        upstream_timeout: Longest wait for the upstream's whole answer before answering 504.
        max_body: Largest request body accepted, in bytes; larger ones are answered 413.

    Use it as ``async with Gateway(...) as gateway:``, or :meth:`start` and :meth:`stop`, inside an
    event loop; :meth:`serve_forever` runs it in the main thread until SIGTERM or SIGINT.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int,
        max_queue: int = 0,
        queue_timeout: float | timedelta = 1.0,
        retry_after: float | timedelta = 1.0,
        upstream_timeout: float | timedelta = 600.0,
        max_body: int = 32 * 2**20,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream {upstream!r} must be an http:// URL (TLS is not supported)")
        self.upstream = upstream
        self.host = host
        self._port = port
        self.queue_timeout = _seconds(queue_timeout)
        self.retry_after = max(1, math.ceil(_seconds(retry_after)))
        """Whole seconds announced in ``Retry-After``."""
        self.upstream_timeout = _seconds(upstream_timeout)
        if self.upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be positive")
        self.max_body = max_body
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_authority = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._admission = Admission(max_in_flight, max_queue)
        self._pool = UpstreamPool(self._upstream_host, self._upstream_port)
        self._server: asyncio.Server | None = None
        self._connections: set[_ClientConnection] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._forwards: set[asyncio.Future[bytes]] = set()
        self._warned_at = -math.inf
        self.admitted = 0
        self.rejected = 0
        self.completed = 0
        self.upstream_errors = 0
        self.abandoned = 0

    @property
    def port(self) -> int:
        """The port listened on (known after :meth:`start` when 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the gateway, ``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def max_in_flight(self) -> int:
        """The slot limit."""
        return self._admission.limit

    @property
    def max_queue(self) -> int:
        """The queue limit."""
        return self._admission.max_queue

    def stats(self) -> GatewayStats:
        """A snapshot of the counters."""
        return GatewayStats(
            in_flight=self._admission.in_flight,
            queued=self._admission.queued,
            max_in_flight=self._admission.limit,
            max_queue=self._admission.max_queue,
            admitted=self.admitted,
            rejected=self.rejected,
            completed=self.completed,
            upstream_errors=self.upstream_errors,
            abandoned=self.abandoned,
        )

    async def start(self) -> None:
        """Listen for clients. The upstream is not contacted until the first request."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), self.host, self._port, backlog=1024
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info(
            "gateway on %s → %s (max in flight %d, queue %d)",
            self.url,
            self.upstream,
            self.max_in_flight,
            self.max_queue,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop: refuse new and queued requests (503), let forwarded ones finish, then close everything.

        Requests still forwarded after ``grace`` seconds are cut off (their clients see the connection
        close; for a Restate ingress, the invocation carries on in the engine).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._admission.close()
        for connection in list(self._connections):
            connection.close_if_idle()
        pending = set(self._serving) | set(self._forwards)
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for forward in list(self._forwards):
            forward.cancel()  # forwards of clients that left, still running after the grace period
        for connection in list(self._connections):
            connection.abort()
        self._pool.close()
        await server.wait_closed()

    def _forwarded(self, forward: asyncio.Future[bytes]) -> None:
        """A forward ended (answered, failed or cut off at stop): its slot goes back."""
        self._forwards.discard(forward)
        self._admission.release()
        if not forward.cancelled():
            forward.exception()  # retrieved, so an abandoned forward's failure is not reported as lost

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def serve_forever(self, *, use_uvloop: bool = True) -> None:
        """Run the gateway in this (main) thread until SIGTERM or SIGINT, then stop it gracefully.

        Uses uvloop when it is installed and ``use_uvloop`` is true, else asyncio's own loop.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stopping = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stopping.set)
            await self.start()
            await stopping.wait()
            log.info("stopping: %d requests in flight", self._admission.in_flight)
            await self.stop()

        run_loop(main(), use_uvloop=use_uvloop)

    # -- serving one request ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun (every new request is refused)."""
        return self._admission.closed

    def _rejection(self, request: Request, message: str) -> bytes:
        self.rejected += 1
        if self._admission.closed:
            request.keep_alive = False
        payload: dict[str, Any] = {
            "message": f"{message}; try again after {self.retry_after} s",
            "inFlight": self._admission.in_flight,
            "limit": self._admission.limit,
        }
        return json_response(
            503, payload, keep_alive=request.keep_alive, extra=[("retry-after", str(self.retry_after))]
        )

    def _overloaded(self) -> str:
        if self._admission.closed:
            return "overloaded: the gateway is shutting down"
        if self._admission.max_queue == 0:
            return f"overloaded: all {self._admission.limit} slots are in use"
        return (
            f"overloaded: all {self._admission.limit} slots are in use and "
            f"{self._admission.queued} of {self._admission.max_queue} places in the queue are taken"
        )

    def _refuse_early(self, request: Request) -> bytes | None:
        """For ``Expect: 100-continue``: the 503 to send instead of ``100 Continue``, if any."""
        if self._admission.queue_full():
            return self._rejection(request, self._overloaded())
        return None

    async def _serve_request(self, request: Request, client: _ClientConnection) -> None:
        """Answer one complete request on ``client``."""
        if request.path == STATS_PATH:
            if request.method == "GET":
                client.respond(json_response(200, self.stats().to_json(), keep_alive=request.keep_alive))
            else:
                client.respond(
                    json_response(
                        405,
                        {"message": f"{STATS_PATH} answers GET only"},
                        keep_alive=request.keep_alive,
                        extra=[("allow", "GET")],
                    )
                )
            return
        admission = self._admission
        if not admission.try_acquire():
            full = admission.queue_full()
            if full or not await admission.acquire(self.queue_timeout):
                message = self._overloaded()
                if not full and not admission.closed:
                    message = (
                        f"overloaded: no slot freed up within {self.queue_timeout:g} s "
                        f"(all {admission.limit} in use)"
                    )
                client.respond(self._rejection(request, message))
                return
        self.admitted += 1
        # The slot is held until the upstream answers, even if the client leaves first: its invocation
        # goes on in the engine, and freeing the slot early would let clients that give up push more
        # work into the engine than the limit allows (the collapse the gateway exists to prevent).
        forward = asyncio.ensure_future(self._forward(request, client.peer))
        self._forwards.add(forward)
        forward.add_done_callback(self._forwarded)
        try:
            answer = await asyncio.shield(forward)
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        client.respond(answer)

    async def _forward(self, request: Request, peer: str) -> bytes:
        """Send ``request`` upstream and return what to answer: the upstream's answer, or 502/504."""
        head_only = request.method == "HEAD"
        try:
            response = await self._pool.exchange(
                self._encode_request(request, peer), head_only=head_only, timeout=self.upstream_timeout
            )
        except UpstreamError as exc:
            self.upstream_errors += 1
            self._warn(request, exc)
            request.keep_alive = request.keep_alive and not self.stopping
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            return json_response(status, {"message": str(exc)}, keep_alive=request.keep_alive)
        self.completed += 1
        request.keep_alive = request.keep_alive and not self.stopping
        return _encode_response(response, request, head_only)

    def _warn(self, request: Request, error: UpstreamError) -> None:
        """Log an upstream error; at most one line per ``_WARN_EVERY`` seconds, so an outage cannot flood."""
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%s %s: %s (%d upstream errors since start)",
                request.method,
                request.target,
                error,
                self.upstream_errors,
            )

    def _encode_request(self, request: Request, peer: str) -> bytes:
        skip = connection_tokens(request.headers)
        headers: list[tuple[str, str]] = []
        forwarded_for: list[str] = []
        has_host = False
        for name, value in request.headers:
            if is_hop_by_hop(name) or name in skip or name in ("content-length", "expect"):
                continue
            if name == "x-forwarded-for":
                forwarded_for.append(value)
                continue
            has_host = has_host or name == "host"
            headers.append((name, value))
        if not has_host:
            headers.append(("host", self._upstream_authority))
        forwarded_for.append(peer)
        headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
        if request.framing is not None:
            headers.append(("content-length", str(len(request.body))))
        head = encode_head(f"{request.method} {self._prefix}{request.target} HTTP/1.1", headers)
        return head + request.body if request.body else head

    # -- bookkeeping for connections -------------------------------------------------------------------

    def _track(self, task: asyncio.Task[None]) -> None:
        """Remember a request's task until it ends (stop waits for them)."""
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    def _connected(self, connection: _ClientConnection) -> None:
        """Remember an open client connection."""
        self._connections.add(connection)

    def _disconnected(self, connection: _ClientConnection) -> None:
        """Forget a closed client connection."""
        self._connections.discard(connection)


def _encode_response(response: Response, request: Request, head_only: bool) -> bytes:
    """The upstream's answer as sent to the client: hop-by-hop headers dropped, framed by length."""
    skip = connection_tokens(response.headers)
    headers: list[tuple[str, str]] = []
    for name, value in response.headers:
        if is_hop_by_hop(name) or name in skip:
            continue
        if name == "content-length" and not head_only:
            continue  # recomputed below; for HEAD the upstream's length describes the absent body
        headers.append((name, value))
    status = response.status
    if not head_only and status not in _NO_BODY:
        headers.append(("content-length", str(len(response.body))))
    if not request.keep_alive:
        headers.append(("connection", "close"))
    elif request.version == "HTTP/1.0":
        headers.append(("connection", "keep-alive"))
    head = encode_head(f"HTTP/1.1 {status} {response.reason}", headers)
    if head_only or status in _NO_BODY:
        return head
    return head + response.body


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests and serves them one at a time, in order."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._request: Request | None = None  # whose head is parsed and body is being read
        self._chunks: ChunkedDecoder | None = None
        self._task: asyncio.Task[None] | None = None  # serving the current request
        self._closing = False
        self._discarding = False  # after an error: reading only to let the client see the answer
        self._write_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self.peer = ""

    # -- asyncio callbacks ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self._gateway._connected(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._discarding:
            return
        self._buf += data
        if self._task is None and not self._closing:
            self._next()
        elif len(self._buf) > self._gateway.max_body + MAX_HEAD and self._transport is not None:
            self._transport.pause_reading()  # pipelined far ahead: wait until the buffer is consumed

    def eof_received(self) -> bool | None:
        return False  # a client that stops sending has gone: close, which cancels its request

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._gateway._disconnected(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()  # leaves the queue, or frees the slot

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None and not self._closing:
            self._next()

    # -- requests -------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Parse the next request from the buffer and start serving it, if it is all there."""
        if self._write_paused:
            return
        try:
            request = self._read()
        except HttpError as exc:
            self._closing = True
            self._write(json_response(exc.status, {"message": exc.message}, keep_alive=False))
            self._close_lingering()
            return
        if request is None:
            if not self._closing:
                self._arm_idle()  # a client must keep sending, or go
            return
        task = asyncio.get_running_loop().create_task(self._serve(request))
        self._task = task
        self._gateway._track(task)

    def _read(self) -> Request | None:
        """A complete request from the buffer, or None until more arrives."""
        gateway = self._gateway
        request = self._request
        if request is None:
            buf = self._buf
            while buf.startswith(b"\r\n"):
                del buf[:2]  # RFC 9112 §2.2: ignore blank lines before a request line
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpError(431, f"request head over {MAX_HEAD} bytes")
                return None
            request = parse_request_head(bytes(buf[:end]), gateway.max_body)
            del buf[: end + 4]
            self._request = request
            if request.expect_continue and request.framing:
                early = gateway._refuse_early(request)
                if early is not None:  # the body was never sent: refuse it and drop the connection
                    request.keep_alive = False
                    self._request = None
                    self._closing = True
                    self._write(early)
                    self._close_lingering()
                    return None
                self._write(CONTINUE)
        if request.framing == -1:
            if self._chunks is None:
                self._chunks = ChunkedDecoder(gateway.max_body)
            if not self._chunks.feed(self._buf):
                return None
            request.body = self._chunks.body()
            self._chunks = None
        elif request.framing:
            if len(self._buf) < request.framing:
                return None
            request.body = bytes(self._buf[: request.framing])
            del self._buf[: request.framing]
        self._request = None
        return request

    async def _serve(self, request: Request) -> None:
        try:
            await self._gateway._serve_request(request, self)
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:
            log.exception("serving %s %s failed", request.method, request.target)
            self._write(json_response(500, {"message": "gateway error"}, keep_alive=False))
            request.keep_alive = False
        self._task = None
        if self._closing:
            return
        if not request.keep_alive or self._gateway.stopping:
            self._closing = True
            self._close()
        elif self._buf:
            if self._transport is not None:
                self._transport.resume_reading()
            self._next()
        else:
            self._arm_idle()

    def respond(self, data: bytes) -> None:
        """Send a complete answer to the current request."""
        self._write(data)

    # -- transport ------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _close_lingering(self) -> None:
        """Close after an error answer, without losing it.

        Closing a socket with unread data makes the kernel reset the connection, and a client still
        sending a body it was told not to send (413) might then see the reset instead of the answer. So
        the gateway ends its side, discards what still arrives, and closes when the client does or after
        ``_LINGER`` seconds.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._discarding = True
        self._buf.clear()
        transport.write_eof()
        transport.resume_reading()
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(_LINGER, self._close)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(_IDLE_TIMEOUT, self._close)

    def close_if_idle(self) -> None:
        """Close the connection unless a request is being served (the gateway is stopping)."""
        if self._task is None:
            self._closing = True
            self._close()

    def abort(self) -> None:
        """Close the connection now, cutting off any request being served."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


def run_loop(main: Coroutine[Any, Any, None], *, use_uvloop: bool = True) -> None:
    """Run the coroutine ``main`` to completion, on uvloop when it is installed and wanted."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
