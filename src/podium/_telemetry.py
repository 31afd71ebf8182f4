"""Traces and metrics: OpenTelemetry spans and Prometheus counters for sagas, deployments and the gateway.

**Traces.** A process exports its spans over OTLP gRPC when the standard OpenTelemetry environment asks
for it (:data:`ENDPOINT_ENV`, or :data:`TRACES_ENDPOINT_ENV` for traces alone): :func:`podium.app` sets
up a tracer provider with a batch span processor in every granian worker that imports the app, and
``python -m podium.gateway`` does the same for the gateway. Without the variable nothing is set up: no
provider, no exporter, no thread, and the framework's span hooks return at their first line.

The saga's spans are parented under the engine's span of the invocation attempt through restate-sdk's
:class:`~restate.ext.tracing.RestateTracer` (it reads the ``traceparent`` the engine sends with each
attempt, and returns no-op spans while the handler replays its journal). A span is made when a step's
outcome is known, the moment the saga logs it, so a step is one span however many times its handler
replayed; its start is when this attempt reached the step (exact unless the step began in an earlier
attempt, which ``podium.saga.resumed`` says). An attempt the engine sent without a trace (its own tracing
off, or the request not sampled) gets no saga span: it would be a trace of its own, tied to nothing.

**Metrics.** Counters are always on (a few microseconds per saga; nothing is exported until something
scrapes). The saga's live in prometheus-client's default registry, which a deployment serves
at ``GET /metrics`` (:func:`with_metrics`); granian runs several worker processes, so with
:data:`METRICS_DIR_ENV` set every worker writes its counts to files in that folder and a scrape of any
worker reads them all (prometheus-client's multiprocess mode). The gateway keeps its own registry
(:class:`GatewayMetrics`), served on a loopback port of its own, never on the public one.

Counts and spans are made at the points the saga logs its events, quiet during replay as the logs are:
a saga is counted once, by the attempt that saw it start or end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from restate.ext.tracing import RestateTracer
from restate.server_context import current_context, restate_context_is_replaying

from podium._logging import SYSTEM_ENV

if TYPE_CHECKING:
    # The SDK is imported when tracing is set up, never by a process that does not trace.
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""The OTLP **gRPC** endpoint (``http://127.0.0.1:4317``) spans are exported to; set: tracing is on."""
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""The same for traces alone; it wins over :data:`ENDPOINT_ENV` (the OpenTelemetry convention)."""
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
"""The ``service.name`` of a process's spans; default :data:`~podium._logging.SYSTEM_ENV`'s value."""
SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"
"""``true`` turns tracing off even with an endpoint set (the OpenTelemetry convention)."""
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""A folder, one per deployment, where each worker process writes its counts (multiprocess mode).

prometheus-client reads it when it is first imported, so it must be in the process's environment from
the start; and the folder must be emptied each time the deployment starts (not when a worker is
replaced), by whoever starts it: see :func:`prepare_metrics_dir`."""
METRICS_PATH = "/metrics"
"""Where a deployment serves its metrics (``GET``), with no signature, as ``/health``."""

TRACEPARENT = "traceparent"
"""The W3C header that carries a span's context, from the engine to each attempt."""
TRACER_NAME = "podium"
"""The instrumentation scope of the framework's spans."""
NAMESPACE = "podium"
"""The ``service.namespace`` of every Podium process's spans."""

SAGA_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)
"""Seconds: sagas range from a few calls (tens of ms) to a person's approval (hours, a day)."""
REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
"""Seconds: the gateway forwards calls that answer in milliseconds and sagas that take minutes."""


# -- tracing --------------------------------------------------------------------------------------------


class _Tracing:
    """This process's tracing, once configured: the provider and the framework's tracer."""

    provider: TracerProvider | None = None
    tracer: RestateTracer | None = None


_tracing = _Tracing()


def tracing_endpoint() -> str | None:
    """The OTLP endpoint the environment asks spans to be exported to, or None (tracing off)."""
    if os.environ.get(SDK_DISABLED_ENV, "").strip().lower() == "true":
        return None
    for name in (TRACES_ENDPOINT_ENV, ENDPOINT_ENV):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def tracer_provider(service_name: str, *, endpoint: str | None = None) -> TracerProvider:
    """A tracer provider that exports in batches over OTLP gRPC.

    The exporter reads the rest of the standard environment itself (``OTEL_EXPORTER_OTLP_HEADERS``,
    ``..._INSECURE``, ``..._TIMEOUT``; ``http://`` endpoints are plain text), and the batch processor its
    ``OTEL_BSP_*`` settings (by default a batch every 5 s or every 512 spans).

    Args:
        service_name: The ``service.name`` of the spans, unless ``OTEL_SERVICE_NAME`` names one.
        endpoint: The OTLP gRPC endpoint; the environment's when None.
    """
    # Imported here: the SDK and grpc are heavy, and a process that does not trace never needs them.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {SERVICE_NAMESPACE: NAMESPACE, "process.pid": os.getpid()}
    if not os.environ.get(SERVICE_NAME_ENV, "").strip():
        attributes[SERVICE_NAME] = service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(
    *,
    service_name: str,
    endpoint: str | None = None,
    provider: TracerProvider | None = None,
) -> TracerProvider:
    """Export this process's spans, the framework's and your own, over OTLP gRPC.

    Installs a tracer provider as OpenTelemetry's global one (so ``opentelemetry.trace.get_tracer``
    in your code uses it too) and makes the framework's saga spans with it. :func:`podium.app` calls
    this when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; call it yourself in a program of your own.
    Calling it again (an app built twice in one process) keeps the first provider.

    Args:
        service_name: The ``service.name`` of the spans (``OTEL_SERVICE_NAME`` wins): the deployment's
            name, as in its logs.
        endpoint: The OTLP gRPC endpoint (``http://127.0.0.1:4317``); the environment's when None.
        provider: A provider of your own to use instead of making one.

    Returns:
        The provider in use.
    """
    from opentelemetry.sdk.trace import TracerProvider

    if _tracing.provider is not None:
        return _tracing.provider
    installed = trace.get_tracer_provider()
    if provider is None and isinstance(installed, TracerProvider):
        provider = installed  # the application set one up itself: add to it, not beside it
    if provider is None:
        provider = tracer_provider(service_name, endpoint=endpoint)
    if installed is not provider:
        trace.set_tracer_provider(provider)
    _tracing.provider = provider
    # restate-sdk's wrapper parents every span under the engine's span of the current attempt, and
    # answers no-op spans while the handler replays its journal (its constructor is unannotated).
    _tracing.tracer = RestateTracer(provider.get_tracer(TRACER_NAME))  # type: ignore[no-untyped-call]
    return provider


def configure_tracing_from_env(systems: Iterable[str | None] = ()) -> TracerProvider | None:
    """:func:`configure_tracing` when the environment names an endpoint, else nothing at all.

    Args:
        systems: The ``system`` of each service served, for the service name when neither
            ``OTEL_SERVICE_NAME`` nor ``PODIUM_SYSTEM`` is set: their common system, or ``podium``.
    """
    if tracing_endpoint() is None:
        return None
    name = os.environ.get(SYSTEM_ENV, "").strip()
    if not name:
        named = {s for s in systems if s}
        name = named.pop() if len(named) == 1 else "podium"
    return configure_tracing(service_name=name)


def tracing_on() -> bool:
    """Whether this process makes the framework's spans."""
    return _tracing.tracer is not None


def subject_hash(subject: str) -> str:
    """A stable, short stand-in for a subject in span attributes (16 hex digits of its SHA-256).

    Spans leave the machine for a tracing backend; a subject may name a person, so spans carry this
    instead, which still groups one caller's requests.
    """
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


# -- saga metrics ---------------------------------------------------------------------------------------

SAGA_STARTED = Counter("podium_saga_started", "Sagas started.", ["saga"])
SAGA_ENDED = Counter(
    "podium_saga_ended",
    "Sagas ended, by outcome: completed, compensated, failed (a compensation is a dead letter), "
    "needs_attention (failed after its pivot).",
    ["saga", "outcome"],
)
SAGA_DEAD_LETTERS = Counter(
    "podium_saga_dead_letters", "Compensations that kept failing and became dead letters.", ["saga"]
)
SAGA_DURATION = Histogram(
    "podium_saga_duration_seconds",
    "Time from entering a saga to its end, by outcome (measured by the attempt that ended it).",
    ["saga", "outcome"],
    buckets=SAGA_DURATION_BUCKETS,
)


def _replaying() -> bool:
    return restate_context_is_replaying.get()


def _engine_traces() -> bool:
    """Whether the engine sent this attempt a trace to add spans to.

    It sends none when its own tracing is off, or when the request's trace is not sampled; a span made
    then would be a trace of its own, one span long, tied to nothing.
    """
    try:
        ctx = current_context()
    except LookupError:  # outside a handler the SDK's context variable is unset
        return False
    return ctx is not None and TRACEPARENT in ctx.request().attempt_headers


class SagaTelemetry:
    """One saga's counts and spans, made where the saga logs the same events and skipped on replay.

    Args:
        saga: The saga's name (the ``saga`` label and attribute).
    """

    __slots__ = ("_begun", "_entered", "saga")

    def __init__(self, saga: str) -> None:
        self.saga = saga
        self._entered = time.monotonic()
        # When this attempt reached each step or compensation, and whether it was replaying then.
        self._begun: dict[tuple[str, str], tuple[int, bool]] = {}

    def started(self) -> None:
        """The saga is entered (counted unless the handler replays its start)."""
        self._entered = time.monotonic()
        if not _replaying():
            SAGA_STARTED.labels(self.saga).inc()

    def ended(self, outcome: str) -> None:
        """The saga ended with ``outcome``: counted, and its duration observed."""
        if _replaying():
            return
        outcome = str(outcome)  # a StrEnum's value, for the label
        SAGA_ENDED.labels(self.saga, outcome).inc()
        SAGA_DURATION.labels(self.saga, outcome).observe(time.monotonic() - self._entered)

    def dead_letter(self) -> None:
        """A compensation became a dead letter."""
        if not _replaying():
            SAGA_DEAD_LETTERS.labels(self.saga).inc()

    def step_begins(self, step: str) -> None:
        """A step's action is about to start (or to be replayed) in this attempt."""
        if _tracing.tracer is not None:
            self._begun[("step", step)] = (time.time_ns(), _replaying())

    def step_ended(
        self, step: str, attempt: int, outcome: str, error: str | None = None, *, pivot: bool = False
    ) -> None:
        """A step's action ended: one span, from :meth:`step_begins` to now."""
        if _tracing.tracer is None:
            return
        attributes: dict[str, Any] = {"podium.saga.pivot": True} if pivot else {}
        self._span(f"{self.saga}: {step}", "step", step, attempt, outcome, error, attributes)

    def compensation_begins(self, step: str) -> None:
        """A step's compensation is about to start in this attempt."""
        if _tracing.tracer is not None:
            self._begun[("compensation", step)] = (time.time_ns(), _replaying())

    def compensation_ended(self, step: str, attempt: int, outcome: str, error: str | None = None) -> None:
        """A compensation attempt ended: one span, from :meth:`compensation_begins` to now."""
        if _tracing.tracer is None:
            return
        self._span(f"{self.saga}: compensate {step}", "compensation", step, attempt, outcome, error, {})

    def _span(
        self,
        name: str,
        kind: str,
        step: str,
        attempt: int,
        outcome: str,
        error: str | None,
        attributes: dict[str, Any],
    ) -> None:
        tracer = _tracing.tracer
        if tracer is None or _replaying() or not _engine_traces():
            return
        begun, resumed = self._begun.pop((kind, step), (None, False))
        attributes.update(
            {
                "podium.saga.name": self.saga,
                "podium.saga.step": step,
                "podium.saga.kind": kind,
                "podium.saga.attempt": attempt,
                "podium.saga.outcome": str(outcome),
            }
        )
        if resumed:
            attributes["podium.saga.resumed"] = True
        span = tracer.start_span(name, start_time=begun, attributes=attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


# -- a deployment's /metrics ----------------------------------------------------------------------------


def prepare_metrics_dir(path: str | Path) -> Path:
    """Empty (or make) a deployment's metrics folder, before the deployment's process starts.

    Call it each time the deployment starts as a whole (``podium up``'s first start and every restart
    of the deployment), never when granian replaces one worker: a replaced worker's files keep its
    counts, so the deployment's totals do not go back. The folder is owner-only.
    """
    folder = Path(path)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, mode=0o700)
    return folder


def metrics_app() -> Callable[..., Any]:
    """An ASGI app answering this process's metrics in Prometheus's text format.

    With :data:`METRICS_DIR_ENV` set, the counts of every worker process of the deployment (read from
    that folder); otherwise this process's default registry (your own metrics included).
    """
    folder = os.environ.get(METRICS_DIR_ENV, "").strip()
    if not folder:
        return make_asgi_app(REGISTRY)
    os.makedirs(folder, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]  # unannotated upstream
    return make_asgi_app(registry)


def with_metrics(app: Callable[..., Any]) -> Callable[..., Any]:
    """``app``, with ``GET /metrics`` answered in front of it (no signature needed, as for ``/health``).

    Every other request goes to ``app`` unchanged, where the engine's signature is checked.
    """
    metrics = metrics_app()

    async def served(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == METRICS_PATH and scope.get("method") == "GET":
            await metrics(scope, receive, send)
            return
        await app(scope, receive, send)

    return served


# -- the gateway's metrics ------------------------------------------------------------------------------


class GatewayMetrics:
    """The gateway's counters, gauges and latency histogram, in a registry of its own.

    The same facts as :class:`~podium.gateway.GatewayStats`, for Prometheus, plus a latency histogram
    and the connections refused for being one too many.

    Args:
        in_flight: Reads the requests forwarded and not yet answered (now).
        queued: Reads the requests waiting for a slot (now).
        max_in_flight: The slot limit.
        max_queue: The queue limit.
    """

    def __init__(
        self, *, in_flight: Callable[[], int], queued: Callable[[], int], max_in_flight: int, max_queue: int
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        """What the gateway's metrics port serves."""
        registry = self.registry
        self.admitted = Counter(
            "podium_gateway_admitted", "Requests that got a slot and were forwarded.", registry=registry
        )
        self.completed = Counter(
            "podium_gateway_completed",
            "Admitted requests whose upstream answer was relayed whole, whatever its status.",
            registry=registry,
        )
        self.refused = Counter(
            "podium_gateway_refused",
            "Requests the door answered itself and never forwarded, by status (400, 401, 403, 404).",
            ["status"],
            registry=registry,
        )
        self.rejected = Counter(
            "podium_gateway_rejected",
            "Requests answered 503 by admission control, never forwarded, by reason: queue_full, "
            "queue_timeout, stopping, connections (over the connection limit).",
            ["reason"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "podium_gateway_upstream_errors",
            "Admitted requests answered 502 (upstream unreachable or cut off) or 504 (timed out).",
            ["status"],
            registry=registry,
        )
        self.abandoned = Counter(
            "podium_gateway_abandoned",
            "Admitted requests whose client left before the answer (they still ran to their end).",
            registry=registry,
        )
        self.duration = Histogram(
            "podium_gateway_request_duration_seconds",
            "Admitted requests: from the gateway reading the request (queue wait included) to the "
            "upstream's answer, or the gateway's 502/504.",
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        Gauge(
            "podium_gateway_in_flight", "Requests forwarded and not yet answered.", registry=registry
        ).set_function(in_flight)
        Gauge("podium_gateway_queued", "Requests waiting for a slot.", registry=registry).set_function(queued)
        Gauge("podium_gateway_max_in_flight", "The slot limit.", registry=registry).set(max_in_flight)
        Gauge("podium_gateway_max_queue", "The queue limit.", registry=registry).set(max_queue)
