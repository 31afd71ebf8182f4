"""Traces and metrics against the real engine, a deployment in its own process, and the gateway.

A small OTLP gRPC receiver (opentelemetry-proto's ``TraceService``) collects what every process exports:
the engine (``tracing_endpoint``), the lab deployment (configured from its environment, two granian
workers) and the gateway (its provider made here). One request through the gateway must be one trace,
rooted at the gateway's server span; under forced replay each saga span must be exported once. The
deployment's ``/metrics`` and the gateway's metrics port must count what happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from podium._telemetry import subject_hash
from podium.runtime import DeploymentProcess, Engine
from podium.testing import (
    ALWAYS_REPLAY,
    GatewayEnv,
    PodiumEnv,
    assert_eventually,
    new_key,
    process_env,
    running_engine,
    running_gateway,
)
from tests.integration.otlp import Received, Receiver, receiving
from tests.integration.test_saga import step

pytestmark = pytest.mark.engine

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
"""Batches every 100 ms instead of 5 s (the engine's exporter reads the same variable)."""
SERVER, INTERNAL = 2, 1
"""OTLP span kinds."""
STATUS_ERROR = 2
"""OTLP status code of a span that failed."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    """The receiver, listening on a free loopback port; yields it and its endpoint URL."""
    with receiving() as found:
        yield found


# -- the traced stack: engine, lab in a process (two workers), gateway ----------------------------------


@dataclass
class Stack:
    engine: Engine
    deployment: DeploymentProcess
    gateway: GatewayEnv
    spans: Receiver
    ingress: httpx.Client = field(repr=False)


@pytest.fixture(scope="module")
def stack(receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    spans, endpoint = receiver
    folder = tmp_path_factory.mktemp("telemetry")
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=100)
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "PODIUM_SYSTEM": "lab",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        **FAST_EXPORT,
    }
    deployment = DeploymentProcess(
        "tests.integration.lab:app", log_file=folder / "lab.log", env=env, workers=2
    )
    with running_engine(folder / "engine", tracing_endpoint=endpoint, env=FAST_EXPORT) as engine:
        deployment.start()
        try:
            engine.register(deployment.url)
            with (
                running_gateway(
                    engine.ingress_url, engine.admin_url, tracer_provider=provider, metrics_port=0
                ) as gateway,
                httpx.Client(base_url=engine.ingress_url, timeout=60) as ingress,
            ):
                yield Stack(engine, deployment, gateway, spans, ingress)
        finally:
            deployment.stop()
            provider.shutdown()


def trace_of(spans: list[Received], trace_id: str) -> dict[str, Received]:
    return {span.span_id: span for span in spans if span.trace_id == trace_id}


def ancestors(span: Received, by_id: dict[str, Received]) -> list[Received]:
    """``span``'s parents up to the root of what was received (the root last)."""
    chain = []
    while span.parent_id is not None and span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def invocation_saga_spans(spans: Receiver, invocation: str) -> list[Received]:
    """The saga spans under the engine's spans of ``invocation`` (an id the ingress answered)."""
    attempts = {
        s.span_id
        for s in spans.spans(lambda s: s.attributes.get("restate.invocation.id") == invocation)
        if s.name.startswith("invocation-attempt ")
    }
    assert attempts, f"no span of the engine's for {invocation} yet"
    return spans.spans(lambda s: s.parent_id in attempts and "podium.saga.step" in s.attributes)


# -- traces ---------------------------------------------------------------------------------------------


def test_one_request_through_the_gateway_is_one_trace(stack: Stack) -> None:
    key = new_key("trace")
    token = stack.gateway.token("lab:write", subject="alice")
    answer = stack.gateway.post(f"/LabSaga/{key}/Run", {"steps": [step("a"), step("b")]}, token=token)
    assert answer.status_code == 200, answer.text

    def gateway_span() -> Received:
        found = stack.spans.spans(lambda s: s.attributes.get("url.path") == f"/LabSaga/{key}/Run")
        assert len(found) == 1, found
        return found[0]

    root = assert_eventually(gateway_span, message="the gateway's span")
    assert (root.service, root.kind, root.parent_id) == ("gateway", SERVER, None)  # a new trace
    assert root.name == "POST /LabSaga/{key}/Run"
    assert root.attributes["http.route"] == "/LabSaga/{key}/Run"
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["podium.subject.hash"] == subject_hash("alice")
    assert root.attributes["podium.correlation_id"] == answer.headers["x-correlation-id"]
    assert not any(token in str(value) for value in root.attributes.values())

    def whole_trace() -> dict[str, Received]:
        spans = trace_of(stack.spans.spans(), root.trace_id)
        names = {span.name for span in spans.values()}
        assert {"lab: a", "lab: b", "invocation-end LabSaga/{key}/Run"} <= names, sorted(names)
        ended = [span for span in spans.values() if span.name == "invocation-end LabEffects/{key}/Do"]
        assert len(ended) == 2, sorted(names)
        return spans

    spans = assert_eventually(whole_trace, timeout=30, message="the engine's and the deployment's spans")
    assert {span.service for span in spans.values()} == {"gateway", "Restate", "lab"}
    for span in spans.values():  # every span descends from the gateway's
        assert span is root or root in ancestors(span, spans), span
    ingress = next(s for s in spans.values() if s.name == "ingress LabSaga/{key}/Run")
    assert ingress.parent_id == root.span_id  # the engine continued the gateway's trace
    for name in ("lab: a", "lab: b"):
        saga_step = next(s for s in spans.values() if s.name == name)
        assert saga_step.kind == INTERNAL
        assert spans[saga_step.parent_id or ""].name == "invocation-attempt LabSaga/{key}/Run"
        assert saga_step.attributes == {
            "podium.saga.name": "lab",
            "podium.saga.step": name[-1],
            "podium.saga.kind": "step",
            "podium.saga.attempt": 1,
            "podium.saga.outcome": "completed",
        }
    # The participants' invocations are children of the orchestrator's attempt, so of the gateway's span.
    participants = [s for s in spans.values() if s.name == "invocation-attempt LabEffects/{key}/Do"]
    assert len(participants) == 2
    assert all(root in ancestors(s, spans) for s in participants)


def test_the_gateway_continues_a_clients_trace(stack: Stack) -> None:
    trace_id, parent = uuid.uuid4().hex, "00f067aa0ba902b7"
    key = new_key("trace")
    answer = stack.gateway.post(
        f"/LabSaga/{key}/Run",
        {"steps": [step("a")]},
        token=stack.gateway.token("lab:write"),
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert answer.status_code == 200, answer.text

    def continued() -> list[Received]:
        found = stack.spans.spans(lambda s: s.trace_id == trace_id)
        assert {"POST /LabSaga/{key}/Run", "ingress LabSaga/{key}/Run", "lab: a"} <= {s.name for s in found}
        return found

    spans = {s.span_id: s for s in assert_eventually(continued, timeout=30, message="the client's trace")}
    root = next(s for s in spans.values() if s.service == "gateway")
    assert root.parent_id == parent
    saga_step = next(s for s in spans.values() if s.name == "lab: a")
    assert root in ancestors(saga_step, spans)


def test_a_failing_saga_has_error_spans_for_the_failed_step_and_its_compensations(stack: Stack) -> None:
    key = new_key("trace")
    body = {"steps": [step("a"), step("b", undo_fail=1), step("c", fail=-1)], "retryAttempts": 3}
    answer = stack.ingress.post(f"/LabSaga/{key}/Run", json=body)
    assert answer.status_code == 200, answer.text
    invocation = answer.headers["x-restate-id"]

    def exported() -> dict[tuple[str, str, int], Received]:
        spans = invocation_saga_spans(stack.spans, invocation)
        found = {
            (
                s.attributes["podium.saga.kind"],
                s.attributes["podium.saga.step"],
                s.attributes["podium.saga.attempt"],
            ): s
            for s in spans
        }
        assert len(found) == len(spans) == 7, sorted(found)
        return found

    spans = assert_eventually(exported, timeout=30, message="the saga's spans")
    outcomes = {k: (s.attributes["podium.saga.outcome"], s.status) for k, s in spans.items()}
    assert outcomes == {
        ("step", "a", 1): ("completed", 0),
        ("step", "b", 1): ("completed", 0),
        ("step", "c", 1): ("failed", STATUS_ERROR),
        ("compensation", "c", 1): ("compensated", 0),
        ("compensation", "b", 1): ("retrying", STATUS_ERROR),
        ("compensation", "b", 2): ("compensated", 0),
        ("compensation", "a", 1): ("compensated", 0),
    }
    assert spans[("compensation", "b", 1)].name == "lab: compensate b"


# -- forced replay --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replaying(
    receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodiumEnv]:
    """The lab in a process, traced, on an engine that suspends at every await (so every step replays)."""
    _, endpoint = receiver
    folder = tmp_path_factory.mktemp("telemetry-replay")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "lab-replay", **FAST_EXPORT}
    with (
        running_engine(
            folder / "engine", tracing_endpoint=endpoint, env={**ALWAYS_REPLAY, **FAST_EXPORT}
        ) as engine,
        process_env(engine, "tests.integration.lab:app", log_file=folder / "lab.log", env=env) as (lab, _),
    ):
        yield lab


def test_under_forced_replay_each_saga_span_is_exported_once(
    replaying: PodiumEnv, receiver: tuple[Receiver, str]
) -> None:
    spans, _ = receiver
    key = new_key("replay")
    answer = replaying.post(f"/LabSaga/{key}/Run", {"steps": [step("a"), step("b"), step("c", fail=-1)]})
    assert answer.status_code == 200, answer.text
    invocation = answer.headers["x-restate-id"]

    def exported() -> list[Received]:
        found = invocation_saga_spans(spans, invocation)
        assert len(found) >= 6, [s.name for s in found]
        return found

    found = assert_eventually(exported, timeout=30, message="the saga's spans")
    # The handler ran again from the top at every await, yet each step and compensation is one span.
    assert sorted(s.name for s in found) == [
        "lab: a",
        "lab: b",
        "lab: c",
        "lab: compensate a",
        "lab: compensate b",
        "lab: compensate c",
    ]
    attempts = {s.span_id for s in spans.spans(lambda s: s.name == "invocation-attempt LabSaga/{key}/Run")}
    assert {s.parent_id for s in found} <= attempts
    assert len({s.parent_id for s in found}) > 1  # spread over several attempts, as the engine replayed

    # Counted once too: this deployment ran this one saga.
    text = httpx.get(f"{replaying.deployment_url}/metrics", timeout=10).text
    assert sample(text, "podium_saga_started_total", saga="lab") == 1
    assert sample(text, "podium_saga_ended_total", saga="lab", outcome="compensated") == 1
    assert sample(text, "podium_saga_duration_seconds_count", saga="lab", outcome="compensated") == 1


# -- metrics --------------------------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels`` in a Prometheus text exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def test_the_deployment_and_the_gateway_count_what_happened(stack: Stack) -> None:
    deployment_metrics = f"{stack.deployment.url}/metrics"
    gateway_metrics = stack.gateway.gateway.metrics_url
    assert gateway_metrics is not None

    def scrape(url: str) -> str:
        with httpx.Client(timeout=10) as fresh:  # a connection of its own: any worker may answer
            answer = fresh.get(url)
        assert answer.status_code == 200, answer.text
        return answer.text

    before, gateway_before = scrape(deployment_metrics), scrape(gateway_metrics)
    token = stack.gateway.token("lab:write")
    completed = stack.gateway.post(f"/LabSaga/{new_key('m')}/Run", {"steps": [step("a")]}, token=token)
    compensated = stack.gateway.post(
        f"/LabSaga/{new_key('m')}/Run", {"steps": [step("a"), step("b", fail=-1)]}, token=token
    )
    assert completed.status_code == compensated.status_code == 200
    assert stack.gateway.post(f"/LabSaga/{new_key('m')}/Run", {"steps": []}, token=None).status_code == 401

    def delta(text: str, name: str, **labels: str) -> float:
        return sample(text, name, saga="lab", **labels) - sample(before, name, saga="lab", **labels)

    # Two workers write to one folder: every scrape, whichever worker answers it, sees the same totals.
    for _ in range(4):
        after = scrape(deployment_metrics)
        assert delta(after, "podium_saga_started_total") == 2
        assert delta(after, "podium_saga_ended_total", outcome="completed") == 1
        assert delta(after, "podium_saga_ended_total", outcome="compensated") == 1
        assert delta(after, "podium_saga_duration_seconds_count", outcome="compensated") == 1
    gateway_after = scrape(gateway_metrics)

    def moved(name: str, **labels: str) -> float:
        return sample(gateway_after, name, **labels) - sample(gateway_before, name, **labels)

    assert moved("podium_gateway_admitted_total") == 2
    assert moved("podium_gateway_completed_total") == 2
    assert moved("podium_gateway_refused_total", status="401") == 1
    assert moved("podium_gateway_request_duration_seconds_count") == 2
    assert sample(gateway_after, "podium_gateway_in_flight") == 0
    assert sample(gateway_after, "podium_gateway_max_in_flight") == 64
    # The public port does not serve them.
    assert httpx.get(f"{stack.gateway.url}/metrics", timeout=10).status_code == 401
