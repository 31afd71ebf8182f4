"""The gateway: an HTTP/1.1 server that lets in only authorised requests, and at most N at once.

Each client connection is an :class:`asyncio.Protocol` whose bytes are parsed by llhttp (httptools);
requests are served one at a time, in order (pipelined ones wait, parsed, in a short queue). A complete
request goes to the :class:`~podium.gateway._door.Door`, which answers it, serves it at the edge, or
lets it through for a verified subject; then admission control, forwarding and relaying. The task
serving a request is cancelled if the client goes away: a queued request leaves the queue; a forwarded
one keeps its slot until the upstream answers (its invocation goes on in the engine).

Every request gets a correlation id: the client's ``x-correlation-id`` when it is well formed, else a new
one. It is forwarded to the engine (handlers read it with :func:`podium.correlation_id` and pass it on to
the services they call) and returned in the answer, refusals included. The gateway logs on
``podium.gateway``: its start and stop, and at most one line per kind of refusal or upstream error every
``_WARN_EVERY`` seconds, so an outage or a flood of bad tokens cannot flood the log.

Given a tracer provider, the gateway starts or continues each request's trace: it honours a client's W3C
``traceparent`` (else starts a new trace), makes one server span per request (method, route, status, a
hash of the subject; never the token), and forwards its own ``traceparent`` so the engine's spans are its
children. Given a metrics port, it serves its counters there in Prometheus's format (loopback, never the
public port). Without either, neither costs anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import signal
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer

import httptools
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import start_http_server

from podium._caller import SUBJECT_HEADER
from podium._logging import (
    CORRELATION_HEADER,
    framework_logger,
    new_correlation_id,
    well_formed_correlation_id,
)
from podium._telemetry import GatewayMetrics, subject_hash
from podium.gateway._admission import Admission
from podium.gateway._door import HEALTH_PATH, TOKEN_PATH, Answer, Door, Forward, ServeEdge, ServeStats
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
from podium.gateway._routes import Route
from podium.gateway._upstream import UpstreamError, UpstreamPool, UpstreamTimeout

log = framework_logger("podium.gateway")

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
"""Seconds between two log lines of the same kind of refusal or upstream error."""
_TRACE_CONTEXT = TraceContextTextMapPropagator()
"""Reads and writes W3C ``traceparent`` and ``tracestate``."""
_TRACE_HEADERS = frozenset(_TRACE_CONTEXT.fields)
"""The trace context headers; when tracing, the gateway sends its own instead of the client's."""
_FIXED_SEGMENTS = frozenset({"", "restate", "call", "send", "invocation", "workflow", "attach", "output"})
"""Path segments that are the ingress's own words, never a key (for a span's route)."""


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
    services: dict[str, dict[str, int]] = field(default_factory=dict)
    """The services with slots of their own: their ``inFlight``, ``queued``, ``maxInFlight`` and
    ``maxQueue`` (``in_flight`` and ``queued`` above count them too; the limits above are the shared
    ones)."""

    def to_json(self) -> dict[str, Any]:
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
            "services": self.services,
        }


@dataclass(frozen=True)
class ServiceLimit:
    """Slots and a queue of one service's own, apart from the gateway's shared ones.

    A service whose handlers take longer than the rest (a checkout that runs a whole saga) would fill
    the shared slots under load and hold up every other service; with a limit of its own it queues and
    is refused on its own, at the rate it can take (capacity × accepted latency, Little's law).
    """

    max_in_flight: int
    max_queue: int = 0

    @classmethod
    def parse(cls, spec: str) -> tuple[str, ServiceLimit]:
        """``Service=IN_FLIGHT`` or ``Service=IN_FLIGHT/QUEUE`` (the ``--service-limit`` option)."""
        service, _, limits = spec.partition("=")
        in_flight, _, queue = limits.partition("/")
        try:
            limit = cls(int(in_flight), int(queue or 0))
        except ValueError:
            raise ValueError(f"service limit {spec!r}: expected Service=IN_FLIGHT[/QUEUE]") from None
        if not service or limit.max_in_flight < 1 or limit.max_queue < 0:
            raise ValueError(f"service limit {spec!r}: expected Service=IN_FLIGHT[/QUEUE], IN_FLIGHT ≥ 1")
        return service, limit


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
        service_limits: Services with slots and a queue of their own (:class:`ServiceLimit`); their
            requests never take the shared ones.
        queue_timeout: Longest wait in the queue (seconds or a timedelta).
        retry_after: What ``Retry-After`` tells a refused client (rounded up to whole seconds, at least 1).
        upstream_timeout: Longest wait for the upstream's whole answer before answering 504.
        max_body: Largest request body accepted, in bytes; larger ones are answered 413.
        max_response: Largest answer relayed, in bytes; a larger one is answered 502.
        max_connections: Client connections at once; more are answered 503 and closed.
        metrics_port: Serve the gateway's Prometheus metrics on this port of ``metrics_host`` (0 picks a
            free one, read :attr:`metrics_port` after :meth:`start`); None (default): no metrics.
        metrics_host: Address of the metrics port (loopback by default: it is for a scraper, not clients).
        tracer_provider: Make a server span per request with this OpenTelemetry provider, and forward
            the trace to the upstream; None (default): no tracing, at no cost.

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
        service_limits: Mapping[str, ServiceLimit] | None = None,
        queue_timeout: float | timedelta = 1.0,
        retry_after: float | timedelta = 1.0,
        upstream_timeout: float | timedelta = 600.0,
        max_body: int = 2**20,
        max_response: int = 4 * 2**20,
        max_connections: int = 256,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        tracer_provider: TracerProvider | None = None,
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
        self._by_service = {
            service: Admission(limit.max_in_flight, limit.max_queue)
            for service, limit in (service_limits or {}).items()
        }
        self._admissions = [self._admission, *self._by_service.values()]
        self._pool = UpstreamPool(self._upstream_host, self._upstream_port, max_response=max_response)
        self._server: asyncio.Server | None = None
        self._connections: set[_ClientConnection] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._forwards: set[asyncio.Future[tuple[int, bytes]]] = set()
        self._warned_at: dict[str, float] = {}
        self.admitted = 0
        self.rejected = 0
        self.completed = 0
        self.upstream_errors = 0
        self.abandoned = 0
        self.refused = 0
        self._metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics_server: WSGIServer | None = None
        self.metrics = (
            None
            if metrics_port is None
            else GatewayMetrics(
                in_flight=lambda: sum(a.in_flight for a in self._admissions),
                queued=lambda: sum(a.queued for a in self._admissions),
                max_in_flight=self._admission.limit,
                max_queue=self._admission.max_queue,
            )
        )
        """The gateway's Prometheus metrics, when it has a metrics port."""
        self._tracer = None if tracer_provider is None else tracer_provider.get_tracer("podium.gateway")

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
    def metrics_port(self) -> int | None:
        """The port the metrics are served on (known after :meth:`start` when 0 was asked for)."""
        return self._metrics_port

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes the gateway, ``http://host:port/metrics``; None without metrics."""
        if self._metrics_port is None:
            return None
        host = f"[{self.metrics_host}]" if ":" in self.metrics_host else self.metrics_host
        return f"http://{host}:{self._metrics_port}/metrics"

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
            in_flight=sum(a.in_flight for a in self._admissions),
            queued=sum(a.queued for a in self._admissions),
            max_in_flight=self._admission.limit,
            max_queue=self._admission.max_queue,
            admitted=self.admitted,
            rejected=self.rejected,
            completed=self.completed,
            upstream_errors=self.upstream_errors,
            abandoned=self.abandoned,
            refused=self.refused,
            services={
                service: {
                    "inFlight": a.in_flight,
                    "queued": a.queued,
                    "maxInFlight": a.limit,
                    "maxQueue": a.max_queue,
                }
                for service, a in self._by_service.items()
            },
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
        if self.metrics is not None and self._metrics_port is not None:
            try:
                # prometheus-client's own server, on a thread: a scrape now and then, off the hot path.
                self._metrics_server, _ = start_http_server(
                    self._metrics_port, addr=self.metrics_host, registry=self.metrics.registry
                )
            except OSError:
                server, self._server = self._server, None
                server.close()
                await server.wait_closed()
                raise
            self._metrics_port = self._metrics_server.server_port
        log.info(
            "gateway on %s → %s (max in flight %d, queue %d)",
            self.url,
            self.upstream,
            self.max_in_flight,
            self.max_queue,
            extra={"event": "gateway.started", "url": self.url, "upstream": self.upstream},
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
        for admission in self._admissions:
            admission.close()
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
        metrics, self._metrics_server = self._metrics_server, None
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)  # waits for its loop's next poll (0.5 s at most)
            metrics.server_close()

    def _forwarded(self, admission: Admission, forward: asyncio.Future[tuple[int, bytes]]) -> None:
        """A forward ended (answered, failed or cut off at stop): its slot goes back."""
        self._forwards.discard(forward)
        admission.release()
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
            log.info(
                "stopping: %d requests in flight",
                self._admission.in_flight,
                extra={"event": "gateway.stopping", "in_flight": self._admission.in_flight},
            )
            await self.stop()
            log.info("stopped", extra={"event": "gateway.stopped"})

        run_loop(main(), use_uvloop=use_uvloop)

    # -- serving one request ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun (every new request is refused)."""
        return self._admission.closed

    def _rejection(
        self,
        request: Request,
        message: str,
        correlation: str,
        reason: str,
        admission: Admission | None = None,
    ) -> bytes:
        admission = admission or self._admission
        self.rejected += 1
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        if self._admission.closed:
            request.keep_alive = False
        self._log_throttled(
            "overloaded",
            logging.WARNING,
            f"{request.method} {request.path} refused 503: {message} ({self.rejected} refused since start)",
            request,
            correlation,
            status=503,
        )
        payload: dict[str, Any] = {
            "message": f"{message}; try again after {self.retry_after} s",
            "inFlight": admission.in_flight,
            "limit": admission.limit,
        }
        extra = [("retry-after", str(self.retry_after)), (CORRELATION_HEADER, correlation)]
        return json_response(503, payload, keep_alive=request.keep_alive, extra=extra)

    def _overloaded(self, admission: Admission | None = None, service: str | None = None) -> str:
        admission = admission or self._admission
        if admission.closed:
            return "overloaded: the gateway is shutting down"
        slots = f"all {admission.limit} slots{f' of {service}' if service else ''} are in use"
        if admission.max_queue == 0:
            return f"overloaded: {slots}"
        return (
            f"overloaded: {slots} and {admission.queued} of {admission.max_queue} places in the queue "
            "are taken"
        )

    def _refuse_early(self, request: Request) -> bytes | None:
        """For ``Expect: 100-continue``: the 503 to send instead of ``100 Continue``, if any."""
        if self._admission.queue_full():
            return self._rejection(request, self._overloaded(), _correlation(request), "queue_full")
        return None

    async def _serve_request(self, request: Request, client: _ClientConnection) -> None:
        """Answer one complete request on ``client``, in a server span of its trace when tracing."""
        arrived = time.monotonic()
        correlation = _correlation(request)
        if self._tracer is None:
            await self._answer(request, client, correlation, arrived, None)
            return
        carrier = {name: value for name, value in request.headers if name in _TRACE_HEADERS}
        span = self._tracer.start_span(
            request.method,  # renamed "METHOD /route" once the route is known
            context=_TRACE_CONTEXT.extract(carrier),  # the client's trace, or a new one
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "client.address": client.peer,
                "podium.correlation_id": correlation,
            },
        )
        try:
            status = await self._answer(request, client, correlation, arrived, span)
        except asyncio.CancelledError:
            span.set_attribute("podium.gateway.abandoned", True)  # the client left; the request runs on
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_attributes({"http.response.status_code": 500, "error.type": type(exc).__qualname__})
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        else:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:  # a server span's 4xx is the client's error, not the gateway's
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        finally:
            span.end()

    async def _answer(
        self, request: Request, client: _ClientConnection, correlation: str, arrived: float, span: Span | None
    ) -> int:
        """Decide, admit, forward and answer ``request``; return the status answered."""
        tagged = ((CORRELATION_HEADER, correlation),)
        decision = await self.door.decide(request)
        if isinstance(decision, Answer):
            if decision.status in (400, 401, 403, 404):
                self.refused += 1
                if self.metrics is not None:
                    self.metrics.refused.labels(str(decision.status)).inc()
                self._log_throttled(
                    f"refused-{decision.status}",
                    logging.INFO,
                    f"{request.method} {request.path} refused {decision.status}: "
                    f"{decision.body.get('message', '')} ({self.refused} refused since start)",
                    request,
                    correlation,
                    status=decision.status,
                )
            elif span is not None and request.path in (HEALTH_PATH, TOKEN_PATH):
                _name_route(span, request, request.path, None)
            client.respond(
                json_response(
                    decision.status,
                    decision.body,
                    keep_alive=request.keep_alive,
                    extra=decision.headers + tagged,
                )
            )
            return decision.status
        if isinstance(decision, ServeStats):
            if span is not None:
                _name_route(span, request, request.path, None)
            client.respond(
                json_response(200, self.stats().to_json(), keep_alive=request.keep_alive, extra=tagged)
            )
            return 200
        if isinstance(decision, ServeEdge):
            if span is not None:
                _name_route(span, request, decision.route.path, decision.claims.subject)
            status, body = await decision.route.handler(request.body, decision.claims)
            client.respond(json_response(status, body, keep_alive=request.keep_alive, extra=tagged))
            return status
        trace_headers: list[tuple[str, str]] | None = None
        if span is not None:
            route = None if decision.route is None else _http_route(request.path, decision.route)
            _name_route(span, request, route, decision.subject)
            trace_headers = _trace_context_for_engine(span)
        service = None if decision.route is None else decision.route.service
        admission = self._by_service.get(service, self._admission) if service else self._admission
        own = None if admission is self._admission else service
        if not admission.try_acquire():
            full = admission.queue_full()
            if full or not await admission.acquire(self.queue_timeout):
                message = self._overloaded(admission, own)
                reason = "stopping" if admission.closed else "queue_full" if full else "queue_timeout"
                if not full and not admission.closed:
                    message = (
                        f"overloaded: no slot freed up within {self.queue_timeout:g} s "
                        f"(all {admission.limit}{f' of {own}' if own else ''} in use)"
                    )
                client.respond(self._rejection(request, message, correlation, reason, admission))
                return 503
        self.admitted += 1
        if self.metrics is not None:
            self.metrics.admitted.inc()
        # The slot is held until the upstream answers, even if the client leaves first: its invocation
        # goes on in the engine, and freeing the slot early would let clients that give up push more
        # work into the engine than the limit allows (the collapse the gateway exists to prevent).
        forward = asyncio.ensure_future(
            self._forward(request, decision, client.peer, correlation, arrived, trace_headers)
        )
        self._forwards.add(forward)
        forward.add_done_callback(functools.partial(self._forwarded, admission))
        try:
            status, answer = await asyncio.shield(forward)
        except asyncio.CancelledError:
            self.abandoned += 1
            if self.metrics is not None:
                self.metrics.abandoned.inc()
            raise
        client.respond(answer)
        return status

    async def _forward(
        self,
        request: Request,
        decision: Forward,
        peer: str,
        correlation: str,
        arrived: float,
        trace_headers: list[tuple[str, str]] | None,
    ) -> tuple[int, bytes]:
        """Send ``request`` upstream and return the status and bytes to answer: the upstream's, or 502/504."""
        try:
            response = await self._pool.exchange(
                self._encode_request(request, decision.subject, peer, correlation, trace_headers),
                timeout=self.upstream_timeout,
            )
        except UpstreamError as exc:
            self.upstream_errors += 1
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            if self.metrics is not None:
                self.metrics.upstream_errors.labels(str(status)).inc()
                self.metrics.duration.observe(time.monotonic() - arrived)
            self._log_throttled(
                "upstream",
                logging.WARNING,
                f"{request.method} {request.path}: {exc} "
                f"({self.upstream_errors} upstream errors since start)",
                request,
                correlation,
                status=status,
            )
            request.keep_alive = request.keep_alive and not self.stopping
            return status, json_response(
                status,
                {"message": str(exc)},
                keep_alive=request.keep_alive,
                extra=((CORRELATION_HEADER, correlation),),
            )
        self.completed += 1
        if self.metrics is not None:
            self.metrics.completed.inc()
            self.metrics.duration.observe(time.monotonic() - arrived)
        request.keep_alive = request.keep_alive and not self.stopping
        return response.status, _encode_response(response, request, correlation)

    def _log_throttled(
        self, kind: str, level: int, message: str, request: Request, correlation: str, *, status: int
    ) -> None:
        """Log a refusal or an upstream error, at most one line of each ``kind`` per ``_WARN_EVERY`` s.

        So an outage or a flood of bad requests cannot flood the log; the stats keep the totals.
        """
        now = time.monotonic()
        if now - self._warned_at.get(kind, -math.inf) < _WARN_EVERY:
            return
        self._warned_at[kind] = now
        fields = {
            "event": f"gateway.{kind}",
            "status": status,
            "method": request.method,
            "path": request.path,
            "correlation_id": correlation,
        }
        log.log(level, message, extra=fields)

    def _encode_request(
        self,
        request: Request,
        subject: str,
        peer: str,
        correlation: str,
        trace_headers: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """The request as the upstream gets it.

        The client's token, its cookies and any header claiming to be the gateway's or the engine's are
        dropped (the engine would keep them in its journal); the verified subject and the request's
        correlation id are added. With ``trace_headers`` (tracing on) the client's trace context is
        replaced by them, so the engine's spans are children of the gateway's.
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
                or name == CORRELATION_HEADER
                or (trace_headers is not None and name in _TRACE_HEADERS)
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
        headers.append((CORRELATION_HEADER, correlation))
        if trace_headers:
            headers.extend(trace_headers)
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


def _correlation(request: Request) -> str:
    """The request's correlation id: the client's, if well formed, else a new one."""
    return well_formed_correlation_id(request.header(CORRELATION_HEADER)) or new_correlation_id()


def _http_route(path: str, route: Route) -> str:
    """The route template of a forwarded path: ``/TripOrchestrator/{key}/BookTrip``.

    Keys and idempotency keys become ``{key}`` and ``{id}``, so spans of one handler share a name.
    """
    fixed = _FIXED_SEGMENTS | {route.service, route.handler}
    keyed = route.keyed
    parts = []
    for part in path.split("/"):
        if part in fixed:
            parts.append(part)
        else:
            parts.append("{key}" if keyed else "{id}")
            keyed = False  # the object's key comes first; what follows is an idempotency key
    return "/".join(parts)


def _trace_context_for_engine(span: Span) -> list[tuple[str, str]]:
    """The ``traceparent`` (and ``tracestate``) that makes the engine's spans children of ``span``.

    OpenTelemetry's SDK sets the W3C level-2 "random trace id" flag (``-03``), and restate-server 1.7
    discards a ``traceparent`` whose flags are anything but sampled or not (it then starts a trace of its
    own, measured): so only the sampled flag is sent on.
    """
    context = span.get_span_context()
    sent = SpanContext(
        context.trace_id,
        context.span_id,
        is_remote=False,
        trace_flags=TraceFlags(context.trace_flags & TraceFlags.SAMPLED),
        trace_state=context.trace_state,
    )
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier, context=set_span_in_context(NonRecordingSpan(sent)))
    return list(carrier.items())


def _name_route(span: Span, request: Request, route: str | None, subject: str | None) -> None:
    """Name a server span after its route (``POST /Service/{key}/handler``), and say who called."""
    if route is not None:
        span.update_name(f"{request.method} {route}")
        span.set_attribute("http.route", route)
    if subject is not None:
        span.set_attribute("podium.subject.hash", subject_hash(subject))


def _encode_response(response: Response, request: Request, correlation: str) -> bytes:
    """The upstream's answer as sent to the client: hop-by-hop headers dropped, framed by length.

    The request's correlation id is added (one the upstream sent is dropped: the gateway's is the one).
    """
    skip = connection_tokens(response.headers)
    headers: list[tuple[str, str]] = []
    for name, value in response.headers:
        if is_hop_by_hop(name) or name in skip or name in ("content-length", CORRELATION_HEADER):
            continue  # the length is recomputed below, the correlation id is the gateway's
        headers.append((name, value))
    headers.append((CORRELATION_HEADER, correlation))
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
            if self._gateway.metrics is not None:
                self._gateway.metrics.rejected.labels("connections").inc()
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
