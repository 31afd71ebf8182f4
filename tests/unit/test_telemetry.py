"""Traces and metrics without an engine: counts once per outcome, the registries, the app's /metrics route.

Checks that need a fresh interpreter (what ``podium.app`` sets up from the environment, prometheus-client's
multiprocess mode, which it reads when first imported) run a short Python program of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import restate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY, generate_latest
from restate.ext.tracing import RestateTracer
from restate.server_context import ServerInvocationContext, _restate_context_var, restate_context_is_replaying
from restate.vm import Invocation

import podium
from podium import _telemetry
from podium._telemetry import (
    GatewayMetrics,
    SagaTelemetry,
    prepare_metrics_dir,
    subject_hash,
    tracer_provider,
    tracing_endpoint,
    tracing_on,
)
from podium.gateway.__main__ import build, parse_args
from podium.gateway._proxy import _http_route
from podium.gateway._routes import Route
from podium.runtime import EngineConfig
from podium.testing import harness_issuer

ROOT = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def replaying() -> Iterator[None]:
    """Code below runs as it does while a handler replays its journal."""
    token = restate_context_is_replaying.set(True)
    try:
        yield
    finally:
        restate_context_is_replaying.reset(token)


def run_python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` added; return what it printed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**environment, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- saga metrics ---------------------------------------------------------------------------------------


def test_a_saga_is_counted_once_per_outcome_and_not_while_replaying(replaying: None) -> None:
    saga = "unit-counted"
    outcomes = ("completed", "compensated", "failed", "needs_attention")
    telemetry = SagaTelemetry(saga)
    # A handler that resumes replays the saga's start and end: nothing is counted again.
    telemetry.started()
    telemetry.dead_letter()
    for outcome in outcomes:
        telemetry.ended(outcome)
    assert value("podium_saga_started_total", saga=saga) == 0
    assert value("podium_saga_dead_letters_total", saga=saga) == 0
    assert all(value("podium_saga_ended_total", saga=saga, outcome=o) == 0 for o in outcomes)

    restate_context_is_replaying.set(False)  # the attempt that takes the steps
    for outcome in outcomes:
        run = SagaTelemetry(saga)
        run.started()
        if outcome == "failed":
            run.dead_letter()
        run.ended(outcome)
    assert value("podium_saga_started_total", saga=saga) == 4
    assert value("podium_saga_dead_letters_total", saga=saga) == 1
    for outcome in outcomes:
        assert value("podium_saga_ended_total", saga=saga, outcome=outcome) == 1
        assert value("podium_saga_duration_seconds_count", saga=saga, outcome=outcome) == 1
        assert value("podium_saga_duration_seconds_sum", saga=saga, outcome=outcome) >= 0


# -- saga spans -----------------------------------------------------------------------------------------

PARENT_TRACE, PARENT_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
ENGINE_TRACEPARENT = {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The framework's saga spans, made with a provider of this test's (never the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_telemetry._tracing, "tracer", RestateTracer(provider.get_tracer("podium")))
    yield exporter
    provider.shutdown()


@contextmanager
def attempt(headers: dict[str, str]) -> Iterator[None]:
    """Run as inside a handler whose attempt the engine sent with ``headers``."""
    invocation = Invocation(invocation_id="inv_1", random_seed=0, headers=[], input_buffer=b"", key="k")
    ctx = ServerInvocationContext(
        vm=None, handler=None, invocation=invocation, attempt_headers=headers, send=None, receive=None
    )
    token = _restate_context_var.set(ctx)
    try:
        yield
    finally:
        _restate_context_var.reset(token)


def test_each_ended_step_and_compensation_is_one_span_under_the_engines_attempt(
    exported: InMemorySpanExporter,
) -> None:
    with attempt(ENGINE_TRACEPARENT):
        telemetry = SagaTelemetry("book-trip")
        telemetry.step_begins("reserve")
        telemetry.step_ended("reserve", 1, "completed", pivot=True)
        telemetry.step_begins("pay")
        telemetry.step_ended("pay", 1, "failed", "card declined")
        telemetry.compensation_begins("reserve")
        telemetry.compensation_ended("reserve", 2, "compensated")
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert list(spans) == ["book-trip: reserve", "book-trip: pay", "book-trip: compensate reserve"]
    for span in spans.values():
        assert span.parent is not None
        assert (format(span.parent.trace_id, "032x"), format(span.parent.span_id, "016x")) == (
            PARENT_TRACE,
            PARENT_SPAN,
        )
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time
    assert dict(spans["book-trip: reserve"].attributes or {}) == {
        "podium.saga.pivot": True,
        "podium.saga.name": "book-trip",
        "podium.saga.step": "reserve",
        "podium.saga.kind": "step",
        "podium.saga.attempt": 1,
        "podium.saga.outcome": "completed",
    }
    failed = spans["book-trip: pay"]
    assert (failed.status.status_code, failed.status.description) == (StatusCode.ERROR, "card declined")
    compensated = spans["book-trip: compensate reserve"]
    assert (compensated.attributes or {})["podium.saga.kind"] == "compensation"
    assert (compensated.attributes or {})["podium.saga.attempt"] == 2
    assert compensated.status.status_code == StatusCode.UNSET


def test_no_span_while_replaying_or_outside_the_engines_trace(
    exported: InMemorySpanExporter, replaying: None
) -> None:
    with attempt(ENGINE_TRACEPARENT):
        telemetry = SagaTelemetry("book-trip")
        telemetry.step_begins("reserve")  # replayed: the step began in an earlier attempt
        restate_context_is_replaying.set(True)
        telemetry.step_ended("reserve", 1, "completed")  # its outcome too: made by that attempt
        assert exported.get_finished_spans() == ()
        restate_context_is_replaying.set(False)
        telemetry.step_begins("pay")  # replayed start, outcome new in this attempt: one span
        restate_context_is_replaying.set(True)
        telemetry.step_begins("pay")
        restate_context_is_replaying.set(False)
        telemetry.step_ended("pay", 1, "completed")
    (span,) = exported.get_finished_spans()
    assert (span.attributes or {})["podium.saga.resumed"] is True
    # An attempt the engine sent without a trace (its tracing off, or the request not sampled).
    with attempt({}):
        SagaTelemetry("book-trip").step_ended("confirm", 1, "completed")
    SagaTelemetry("book-trip").step_ended("confirm", 1, "completed")  # outside any handler
    assert len(exported.get_finished_spans()) == 1


def test_without_tracing_a_saga_makes_no_span_and_keeps_nothing() -> None:
    assert tracing_endpoint() is None
    assert not tracing_on()
    telemetry = SagaTelemetry("unit-untraced")
    telemetry.step_begins("a")
    telemetry.compensation_begins("a")
    telemetry.step_ended("a", 1, "completed")
    telemetry.compensation_ended("a", 1, "compensated")
    assert telemetry._begun == {}


# -- the gateway's registry -----------------------------------------------------------------------------


def test_the_gateways_registry_holds_its_counters_gauges_and_histogram() -> None:
    state = {"in_flight": 3, "queued": 1}
    metrics = GatewayMetrics(
        in_flight=lambda: state["in_flight"], queued=lambda: state["queued"], max_in_flight=8, max_queue=4
    )
    metrics.admitted.inc()
    metrics.completed.inc()
    metrics.refused.labels("401").inc()
    metrics.refused.labels("401").inc()
    metrics.rejected.labels("queue_full").inc()
    metrics.upstream_errors.labels("504").inc()
    metrics.abandoned.inc()
    metrics.duration.observe(0.2)
    state["in_flight"] = 5  # gauges read the gateway's state at scrape time
    read = metrics.registry.get_sample_value
    assert read("podium_gateway_admitted_total") == 1
    assert read("podium_gateway_completed_total") == 1
    assert read("podium_gateway_refused_total", {"status": "401"}) == 2
    assert read("podium_gateway_rejected_total", {"reason": "queue_full"}) == 1
    assert read("podium_gateway_upstream_errors_total", {"status": "504"}) == 1
    assert read("podium_gateway_abandoned_total") == 1
    assert read("podium_gateway_request_duration_seconds_count") == 1
    assert read("podium_gateway_request_duration_seconds_bucket", {"le": "0.25"}) == 1
    assert read("podium_gateway_in_flight") == 5
    assert read("podium_gateway_queued") == 1
    assert (read("podium_gateway_max_in_flight"), read("podium_gateway_max_queue")) == (8, 4)
    # Its own registry: the process's default one (a deployment's /metrics) never shows them.
    assert b"podium_gateway" not in generate_latest(REGISTRY)
    assert b"podium_saga" not in generate_latest(metrics.registry)


def test_a_gateway_has_metrics_and_tracing_only_when_asked() -> None:
    command = [
        *("--upstream", "http://127.0.0.1:9", "--admin-url", "http://127.0.0.1:9"),
        *("--issuer-key", str(harness_issuer().path), "--port", "0", "--max-in-flight", "2"),
    ]
    plain = build(parse_args(command))
    assert (plain.metrics, plain.metrics_port, plain.metrics_url, plain._tracer) == (None, None, None, None)
    served = build(parse_args([*command, "--metrics-port", "9464"]), tracing=TracerProvider())
    assert served.metrics is not None
    assert served.metrics_url == "http://127.0.0.1:9464/metrics"
    assert served._tracer is not None


@pytest.mark.parametrize(
    ("path", "route", "template"),
    [
        ("/Trip/trip-001/BookTrip", Route("Trip", "BookTrip", True, "t:write"), "/Trip/{key}/BookTrip"),
        (
            "/Trip/trip-001/BookTrip/send",
            Route("Trip", "BookTrip", True, "t:write"),
            "/Trip/{key}/BookTrip/send",
        ),
        ("/Pay/Charge", Route("Pay", "Charge", False, "p:write"), "/Pay/Charge"),
        ("/restate/call/Pay/Charge", Route("Pay", "Charge", False, "p:write"), "/restate/call/Pay/Charge"),
        (
            "/restate/invocation/Trip/trip-1/BookTrip/abc/attach",
            Route("Trip", "BookTrip", True, "t:write"),
            "/restate/invocation/Trip/{key}/BookTrip/{id}/attach",
        ),
        (
            "/restate/invocation/Pay/Charge/abc/output",
            Route("Pay", "Charge", False, "p:write"),
            "/restate/invocation/Pay/Charge/{id}/output",
        ),
    ],
)
def test_a_span_names_the_route_not_the_key(path: str, route: Route, template: str) -> None:
    assert _http_route(path, route) == template


def test_a_subject_is_hashed_never_sent_as_is() -> None:
    hashed = subject_hash("alice@example.com")
    assert len(hashed) == 16
    assert "alice" not in hashed
    assert hashed == subject_hash("alice@example.com") != subject_hash("bob@example.com")


# -- a deployment's /metrics ----------------------------------------------------------------------------

lab = podium.Service("TelemetryUnit", system="unit")


@lab.handler("Ping", public="read")
async def ping(ctx: restate.Context, text: str) -> str:
    return text


async def get(app: object, method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://deployment") as client:
        return await client.request(method, path)


@pytest.mark.parametrize("keys", ["from the environment", "none"])
def test_the_apps_metrics_answer_without_a_signature_and_nothing_else_does(keys: str) -> None:
    app = podium.app([lab], identity_keys=[] if keys == "none" else None)
    SagaTelemetry("unit-served").ended("completed")

    async def requests() -> list[httpx.Response]:
        return [
            await get(app, "GET", "/metrics"),
            await get(app, "GET", "/health"),
            await get(app, "GET", "/discover"),
            await get(app, "POST", "/metrics"),
            await get(app, "POST", "/invoke/TelemetryUnit/Ping"),
        ]

    metrics, health, discover, post_metrics, invoke = asyncio.run(requests())
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'podium_saga_ended_total{outcome="completed",saga="unit-served"}' in metrics.text
    assert health.status_code == 200
    assert (discover.status_code, post_metrics.status_code, invoke.status_code) == (401, 401, 401)


def test_every_workers_counts_are_seen_from_any_worker(tmp_path: Path) -> None:
    folder = prepare_metrics_dir(tmp_path / "metrics")
    assert folder.stat().st_mode & 0o777 == 0o700
    count = """
        from podium._telemetry import SagaTelemetry
        SagaTelemetry("unit-workers").started()
    """
    run_python(count, PROMETHEUS_MULTIPROC_DIR=str(folder))  # one worker counts a saga, in its own file
    count_and_scrape = (
        count
        + """
        import asyncio, httpx, podium
        async def main():
            transport = httpx.ASGITransport(app=podium.app([]))
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                print((await client.get("/metrics")).text)
        asyncio.run(main())
    """
    )
    text = run_python(count_and_scrape, PROMETHEUS_MULTIPROC_DIR=str(folder))  # another, then a scrape
    assert 'podium_saga_started_total{saga="unit-workers"} 2.0' in text
    prepare_metrics_dir(folder)  # the deployment starts again: counts start again
    assert list(folder.iterdir()) == []


# -- what podium.app sets up ----------------------------------------------------------------------------

SET_UP = """
    import json, sys, threading
    from opentelemetry import trace
    import podium
    from podium._telemetry import tracing_on
    podium.app([])
    provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    print(json.dumps({
        "tracing": tracing_on(),
        "provider": type(provider).__name__,
        "service": None if resource is None else resource.attributes.get("service.name"),
        "sdk": "opentelemetry.sdk" in sys.modules,
        "grpc": "grpc" in sys.modules,
        "threads": sorted(t.name for t in threading.enumerate() if "Otel" in t.name),
    }))
"""


def test_without_an_endpoint_podium_app_sets_up_no_tracing_at_all() -> None:
    found = json.loads(run_python(SET_UP))
    assert found == {
        "tracing": False,
        "provider": "ProxyTracerProvider",
        "service": None,
        "sdk": False,
        "grpc": False,
        "threads": [],
    }


def test_with_an_endpoint_each_process_exports_in_batches_as_its_deployment() -> None:
    found = json.loads(
        run_python(SET_UP, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317", PODIUM_SYSTEM="travel")
    )
    assert found["tracing"] is True
    assert (found["provider"], found["service"], found["grpc"]) == ("TracerProvider", "travel", True)
    assert found["threads"] == ["OtelBatchSpanRecordProcessor"]


def test_the_standard_environment_names_the_endpoint_and_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert tracing_endpoint() == "http://127.0.0.1:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:14317")
    assert tracing_endpoint() == "http://127.0.0.1:14317"  # the traces' own wins
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing_endpoint() is None
    provider = tracer_provider("travel")
    try:
        assert provider.resource.attributes["service.name"] == "travel"
        assert provider.resource.attributes["service.namespace"] == "podium"
    finally:
        provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "travel-eu")
    provider = tracer_provider("travel")
    try:
        assert provider.resource.attributes["service.name"] == "travel-eu"
    finally:
        provider.shutdown()


# -- the engine's tracing endpoint ----------------------------------------------------------------------


def test_the_engine_exports_to_its_tracing_endpoint_set_at_the_top_of_its_configuration(
    tmp_path: Path,
) -> None:
    traced = tomllib.loads(EngineConfig(data_dir=tmp_path, tracing_endpoint="http://127.0.0.1:4317").toml())
    assert traced["tracing-endpoint"] == "http://127.0.0.1:4317"
    assert "tracing-endpoint" not in tomllib.loads(EngineConfig(data_dir=tmp_path).toml())
