"""Podium: durable orchestration for Python microservices on Restate.

Import everything from here; modules with a leading underscore are private.

- Services: :class:`Service`, :class:`VirtualObject`, :class:`Workflow` (validated input, finite retries),
  :class:`Model` (camelCase JSON).
- Sagas: :class:`Saga` with strategies, pivot, deadline and dead letters (held for a person with
  ``Strategy(hold=...)``, acted on with :class:`DeadLetterAction`).
- Concurrency: :func:`fan_out`, :func:`fan_out_fail`, :func:`map_concurrent`, :func:`process_batch`,
  :func:`race`, :func:`with_timeout`.
- People: :func:`race_promise_with_timeout`, :func:`wait_for_approval`, :func:`add_approval_handlers`.
- Status: :class:`StatusTracker`, :func:`read_status`.
- Clients: :func:`call`, :func:`send` inside handlers; :class:`IngressClient` outside.
- Idempotent keyed runs: :class:`RunOnce` (a repeat returns the first result).
- Doors: :func:`app` (a deployment that serves only its engine's signed requests), ``public=`` on a
  handler (:data:`Access`; private otherwise), :func:`caller` (the subject the gateway verified).
- Logs: :func:`configure_logging` (JSON lines; :func:`app` does it when ``PODIUM_LOG_FORMAT`` is set),
  :func:`correlation_id` (the id that follows a client's request across services).
- Traces and metrics: :func:`configure_tracing` (OTLP gRPC; :func:`app` does it when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set); sagas are counted and traced by the framework, and :func:`app`
  serves ``GET /metrics``.
"""

from podium._app import IDENTITY_KEYS_ENV, app
from podium._caller import INTERNAL_CALLER, SUBJECT_HEADER, caller
from podium._clients import IngressClient, IngressError, Invocation, call, send
from podium._concurrency import (
    BatchError,
    BatchResult,
    CompletionPolicy,
    FanOutError,
    FanOutResult,
    Outcome,
    OutcomeStatus,
    RaceError,
    RaceResult,
    Timed,
    fan_out,
    fan_out_fail,
    map_concurrent,
    process_batch,
    race,
    with_timeout,
)
from podium._errors import InvalidInput, TerminalError
from podium._human import (
    ApprovalOutcome,
    ApprovalResult,
    Decision,
    add_approval_handlers,
    race_promise_with_timeout,
    wait_for_approval,
)
from podium._logging import (
    CORRELATION_HEADER,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    SYSTEM_ENV,
    configure_logging,
    correlation_id,
)
from podium._model import Model
from podium._once import RunOnce
from podium._saga import (
    BEST_EFFORT,
    COMPENSATE_ALL,
    COMPENSATE_COMPLETED,
    PARALLEL,
    Backoff,
    CompensationFailed,
    DeadLetter,
    DeadLetterAction,
    DeadLetterResolution,
    ManualInterventionNeeded,
    Saga,
    SagaCompensated,
    SagaError,
    SagaLog,
    SagaStatus,
    SagaTimeout,
    Scope,
    StepBuilder,
    StepRecord,
    StepStatus,
    Strategy,
    read_saga_log,
)
from podium._services import (
    DEFAULT_RETRY,
    Access,
    RetryPolicy,
    Service,
    VirtualObject,
    Workflow,
    describe_validation_error,
)
from podium._settings import Deadline
from podium._status import PhaseChange, Status, StatusTracker, read_status
from podium._telemetry import configure_tracing

__all__ = [
    "BEST_EFFORT",
    "COMPENSATE_ALL",
    "COMPENSATE_COMPLETED",
    "CORRELATION_HEADER",
    "DEFAULT_RETRY",
    "IDENTITY_KEYS_ENV",
    "INTERNAL_CALLER",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "PARALLEL",
    "SUBJECT_HEADER",
    "SYSTEM_ENV",
    "Access",
    "ApprovalOutcome",
    "ApprovalResult",
    "Backoff",
    "BatchError",
    "BatchResult",
    "CompensationFailed",
    "CompletionPolicy",
    "DeadLetter",
    "DeadLetterAction",
    "DeadLetterResolution",
    "Deadline",
    "Decision",
    "FanOutError",
    "FanOutResult",
    "IngressClient",
    "IngressError",
    "InvalidInput",
    "Invocation",
    "ManualInterventionNeeded",
    "Model",
    "Outcome",
    "OutcomeStatus",
    "PhaseChange",
    "RaceError",
    "RaceResult",
    "RetryPolicy",
    "RunOnce",
    "Saga",
    "SagaCompensated",
    "SagaError",
    "SagaLog",
    "SagaStatus",
    "SagaTimeout",
    "Scope",
    "Service",
    "Status",
    "StatusTracker",
    "StepBuilder",
    "StepRecord",
    "StepStatus",
    "Strategy",
    "TerminalError",
    "Timed",
    "VirtualObject",
    "Workflow",
    "add_approval_handlers",
    "app",
    "call",
    "caller",
    "configure_logging",
    "configure_tracing",
    "correlation_id",
    "describe_validation_error",
    "fan_out",
    "fan_out_fail",
    "map_concurrent",
    "process_batch",
    "race",
    "race_promise_with_timeout",
    "read_saga_log",
    "read_status",
    "send",
    "wait_for_approval",
    "with_timeout",
]
