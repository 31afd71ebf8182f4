"""The gateway: an HTTP/1.1 server that lets in only authorised requests, and at most N at once.

Each client connection is an :class:`asyncio.Protocol` whose bytes are parsed by llhttp (httptools);
requests are served one at a time, in order (pipelined ones wait, parsed, in a short queue). A complete
request goes to the :class:`~podium.gateway._door.Door`, which answers it, serves it at the edge, or
lets it through for a verified subject; then admission control, forwarding and relaying. The task
serving a request is cancelled if the client goes away: a queued request leaves the queue; a forwarded
one keeps its slot until the upstream answers (its invocation goes on in the engine).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from podium._caller import SUBJECT_HEADER
from podium.gateway._admission import Admission
from podium.gateway._door import Answer, Door, Forward, ServeEdge, ServeStats
from podium.gateway._http import (
    CONTINUE,
    MAX_HEAD,
    REASONS,
    HttpError,
    Request,
    Response,
    connection_tokens,
    encode_head,
    is_hop_by_hop,
    json_response,
)
from podium.gateway._upstream import UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger("podium.gateway")

_IDLE_TIMEOUT = 120.0
"""Seconds a client connection may stay idle between requests before the gateway closes it."""
_LINGER = 2.0
"""Seconds to keep reading (and discarding) after an error answer before closing."""
_NO_BODY = (204, 304)
_PIPELINED = 8
"""Parsed requests a connection may hold before the gateway stops reading from it."""
_STRIPPED_PREFIXES = ("x-podium-", "x-restate-")
"""Request headers a client may not send on: the gateway's own (the subject), and the engine's."""
_STRIPPED = frozenset({"authorization", "content-length", "expect", "cookie"})
"""Request headers never forwarded: the token stays at the door (the engine would journal it)."""
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
    refused: int
    """Requests the door answered itself and never forwarded: no or bad token (401), a scope missing
    (403), no such public handler (404), a card number in the body (400); edge routes and the token
    endpoint are not counted."""

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
            "refused": self.refused,
        }


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Gateway:
    """The public door in front of one HTTP/1.1 upstream (the Restate ingress): auth, then admission.

    Every request passes the :class:`Door` first: it needs a valid access token whose scopes grant the
    handler it calls, and only public handlers (and the edge routes) can be called. Then at most
    ``max_in_flight`` requests are forwarded at once. A request that finds every slot taken waits in a
    FIFO queue of at most ``max_queue`` for up to ``queue_timeout``; when the queue is full or the wait
    ends it is answered ``503`` with ``Retry-After`` at once and never forwarded. Once forwarded, a
    request is never retried and its answer is relayed whatever it is; the gateway's own errors are
    ``502`` (upstream unreachable or closed mid-answer) and ``504`` (``upstream_timeout``).

    Memory is bounded by the limits: at worst ``max_connections`` requests are held whole
    (``MAX_HEAD + max_body`` each, pipelined ones included since a connection's queue stops reading)
    and ``max_in_flight`` answers (``max_response`` each). With the defaults that is about 272 MiB of
    requests and 384 MiB of answers.

    Args:
        upstream: Base URL of the upstream, ``http://host:port`` (a path is prepended to every target).
        door: Who may call what (tokens, public handlers, scopes, edge routes).
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (read :attr:`port` after :meth:`start`).
        max_in_flight: Requests forwarded at once. Capacity × target latency (Little's law) is a start.
        max_queue: Requests that may wait for a slot; 0 refuses at once when every slot is taken.
        queue_timeout: Longest wait in the queue (seconds or a timedelta).
        retry_after: What ``Retry-After`` tells a refused client (rounded up to whole seconds, at least 1).
        upstream_timeout: Longest wait for the upstream's whole answer before answering 504.
        max_body: Largest request body accepted, in bytes; larger ones are answered 413.
        max_response: Largest answer relayed, in bytes; a larger one is answered 502.
        max_connections: Client connections at once; more are answered 503 and closed.

    Use it as ``async with Gateway(...) as gateway:``, or :meth:`start` and :meth:`stop`, inside an
    event loop; :meth:`serve_forever` runs it in the main thread until SIGTERM or SIGINT.
    """

    def __init__(
        self,
        upstream: str,
        *,
        door: Door,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int,
        max_queue: int = 0,
        queue_timeout: float | timedelta = 1.0,
        retry_after: float | timedelta = 1.0,
        upstream_timeout: float | timedelta = 600.0,
        max_body: int = 2**20,
        max_response: int = 4 * 2**20,
        max_connections: int = 256,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream {upstream!r} must be an http:// URL (TLS is not supported)")
        if max_connections < 1 or max_body < 0 or max_response < 0:
            raise ValueError("max_connections must be at least 1; max_body and max_response not negative")
        self.upstream = upstream
        self.door = door
        self.host = host
        self._port = port
        self.queue_timeout = _seconds(queue_timeout)
        self.retry_after = max(1, math.ceil(_seconds(retry_after)))
        """Whole seconds announced in ``Retry-After``."""
        self.upstream_timeout = _seconds(upstream_timeout)
        if self.upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be positive")
        self.max_body = max_body
        self.max_connections = max_connections
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_authority = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._admission = Admission(max_in_flight, max_queue)
        self._pool = UpstreamPool(self._upstream_host, self._upstream_port, max_response=max_response)
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
        self.refused = 0

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
            refused=self.refused,
        )

    async def start(self) -> None:
        """Listen for clients. The upstream is not contacted until the first request."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        await self.door.routes.refresh()
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
        await self.door.routes.close()
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
        decision = await self.door.decide(request)
        if isinstance(decision, Answer):
            if decision.status in (400, 401, 403, 404):
                self.refused += 1
            client.respond(
                json_response(
                    decision.status, decision.body, keep_alive=request.keep_alive, extra=decision.headers
                )
            )
            return
        if isinstance(decision, ServeStats):
            client.respond(json_response(200, self.stats().to_json(), keep_alive=request.keep_alive))
            return
        if isinstance(decision, ServeEdge):
            status, body = await decision.route.handler(request.body, decision.claims)
            client.respond(json_response(status, body, keep_alive=request.keep_alive))
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
        forward = asyncio.ensure_future(self._forward(request, decision, client.peer))
        self._forwards.add(forward)
        forward.add_done_callback(self._forwarded)
        try:
            answer = await asyncio.shield(forward)
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        client.respond(answer)

    async def _forward(self, request: Request, decision: Forward, peer: str) -> bytes:
        """Send ``request`` upstream and return what to answer: the upstream's answer, or 502/504."""
        try:
            response = await self._pool.exchange(
                self._encode_request(request, decision.subject, peer), timeout=self.upstream_timeout
            )
        except UpstreamError as exc:
            self.upstream_errors += 1
            self._warn(request, exc)
            request.keep_alive = request.keep_alive and not self.stopping
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            return json_response(status, {"message": str(exc)}, keep_alive=request.keep_alive)
        self.completed += 1
        request.keep_alive = request.keep_alive and not self.stopping
        return _encode_response(response, request)

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

    def _encode_request(self, request: Request, subject: str, peer: str) -> bytes:
        """The request as the upstream gets it.

        The client's token, its cookies and any header claiming to be the gateway's or the engine's are
        dropped (the engine would keep them in its journal); the verified subject is added.
        """
        skip = connection_tokens(request.headers)
        headers: list[tuple[str, str]] = []
        forwarded_for: list[str] = []
        has_host = False
        for name, value in request.headers:
            if (
                is_hop_by_hop(name)
                or name in skip
                or name in _STRIPPED
                or name.startswith(_STRIPPED_PREFIXES)
            ):
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
        headers.append((SUBJECT_HEADER, subject))
        if request.body or request.method == "POST":
            headers.append(("content-length", str(len(request.body))))
        head = encode_head(f"{request.method} {self._prefix}{request.target} HTTP/1.1", headers)
        return head + request.body if request.body else head

    # -- bookkeeping for connections -------------------------------------------------------------------

    def _track(self, task: asyncio.Task[None]) -> None:
        """Remember a request's task until it ends (stop waits for them)."""
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    def _connected(self, connection: _ClientConnection) -> bool:
        """Remember an open client connection; False when there are already ``max_connections``."""
        if len(self._connections) >= self.max_connections:
            return False
        self._connections.add(connection)
        return True

    def _disconnected(self, connection: _ClientConnection) -> None:
        """Forget a closed client connection."""
        self._connections.discard(connection)


def _encode_response(response: Response, request: Request) -> bytes:
    """The upstream's answer as sent to the client: hop-by-hop headers dropped, framed by length."""
    skip = connection_tokens(response.headers)
    headers: list[tuple[str, str]] = []
    for name, value in response.headers:
        if is_hop_by_hop(name) or name in skip or name == "content-length":
            continue  # the length is recomputed below
        headers.append((name, value))
    status = response.status
    if status not in _NO_BODY:
        headers.append(("content-length", str(len(response.body))))
    if not request.keep_alive:
        headers.append(("connection", "close"))
    elif request.version == "HTTP/1.0":
        headers.append(("connection", "keep-alive"))
    head = encode_head(f"HTTP/1.1 {status} {response.reason or REASONS.get(status, '')}", headers)
    if status in _NO_BODY:
        return head
    return head + response.body


class _ClientConnection(asyncio.Protocol):
    """One client connection: llhttp parses its bytes; requests are served one at a time, in order.

    The parser's callbacks assemble each request; a complete one joins the connection's queue. A parse
    error (or a request the gateway refuses before its body, such as one too large) is answered after
    the requests before it, and closes the connection.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._request: Request | None = None  # being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._ready: deque[Request] = deque()  # parsed, waiting for their turn
        self._error: HttpError | None = None  # answered once the requests before it are
        self._task: asyncio.Task[None] | None = None  # serving the head of the queue
        self._closing = False
        self._discarding = False  # after an error: reading only to let the client see the answer
        self._write_paused = False
        self._reading_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self.peer = ""

    # -- asyncio callbacks ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        if not self._gateway._connected(self):
            self._closing = True
            self._write(
                json_response(503, {"message": "too many connections; try again later"}, keep_alive=False)
            )
            self._close_lingering()
            return
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._discarding or self._error is not None or self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._error = (
                cause if isinstance(cause, HttpError) else HttpError(400, f"malformed request: {exc}")
            )
        except httptools.HttpParserUpgrade:
            self._error = HttpError(501, "upgrades and CONNECT are not supported")
        except httptools.HttpParserError as exc:
            self._error = HttpError(400, f"malformed request: {exc}")
        if self._error is not None or len(self._ready) >= _PIPELINED:
            self._pause_reading()
        self._next()

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
        self._next()

    # -- llhttp callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_size, self._body, self._body_size = b"", [], 0, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        if parser.get_method() == b"CONNECT" or parser.should_upgrade():
            raise HttpError(501, "upgrades and CONNECT are not supported")
        target = self._url.decode("latin-1")
        if not target.startswith("/"):
            raise HttpError(400, "the request target must be a path (origin form), such as /Service/handler")
        request = Request(parser.get_method().decode("ascii"), target, f"HTTP/{version}", self._headers)
        request.keep_alive = parser.should_keep_alive()
        gateway = self._gateway
        for name, value in self._headers:
            if name == "transfer-encoding" and value.strip().lower() != "chunked":
                raise HttpError(501, f"transfer-encoding {value!r} is not supported (only chunked)")
            if name == "content-length" and int(value) > gateway.max_body:
                raise HttpError(
                    413, f"request body of {int(value)} bytes is over the limit of {gateway.max_body} bytes"
                )
            if name == "expect":
                if value.lower() != "100-continue":
                    raise HttpError(417, f"expectation {value!r} is not supported (only 100-continue)")
                request.expect_continue = request.version == "HTTP/1.1"
        self._request = request
        if request.expect_continue and not self._ready and self._task is None:
            early = gateway._refuse_early(request)
            if early is not None:  # the body was never sent: refuse it and drop the connection
                raise _Refused(early)
            self._write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._gateway.max_body:
            raise HttpError(413, f"request body is over the limit of {self._gateway.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        request, self._request = self._request, None
        assert request is not None
        request.body = b"".join(self._body)
        self._body = []
        self._ready.append(request)

    # -- requests -------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start serving the next parsed request, or answer the error that ended parsing."""
        if self._task is not None or self._closing or self._write_paused:
            return
        if self._ready:
            request = self._ready.popleft()
            task = asyncio.get_running_loop().create_task(self._serve(request))
            self._task = task
            self._gateway._track(task)
            return
        error = self._error
        if error is not None:
            self._closing = True
            if isinstance(error, _Refused):
                self._write(error.answer)
            else:
                self._write(json_response(error.status, {"message": error.message}, keep_alive=False))
            self._close_lingering()
            return
        self._resume_reading()
        self._arm_idle()  # a client must keep sending, or go

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
            return
        self._next()

    def respond(self, data: bytes) -> None:
        """Send a complete answer to the current request."""
        self._write(data)

    # -- transport ------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

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
        transport.write_eof()
        self._resume_reading()
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


class _Refused(HttpError):
    """A request refused before its body was sent (``Expect: 100-continue``): ``answer`` says why."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(503, "refused before the body")
        self.answer = answer


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
