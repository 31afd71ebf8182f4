"""A small OTLP gRPC receiver for tests: collects the spans every process exports to it.

The engine exports its spans only over OTLP gRPC, so the receiver speaks gRPC (opentelemetry-proto's
``TraceService``); Python processes export to it the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class Received:
    """One exported span, as the receiver got it."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: int
    attributes: dict[str, Any]
    status: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return None if which is None else getattr(value, which)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it over OTLP gRPC."""

    def __init__(self) -> None:
        self._spans: list[Received] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Received(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.code,
                        )
                    )
        with self._lock:
            self._spans += found
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, match: Callable[[Received], bool] = lambda span: True) -> list[Received]:
        with self._lock:
            return [span for span in self._spans if match(span)]


@contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    """A receiver listening on a free loopback port: yields it and its endpoint URL, stops it after."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collected = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collected, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collected, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
