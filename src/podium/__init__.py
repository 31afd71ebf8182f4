"""Podium: durable orchestration for Python microservices on Restate.

Import everything from here; modules with a leading underscore are private.
"""

from podium._errors import InvalidInput, TerminalError
from podium._model import Model
from podium._saga import (
    BEST_EFFORT,
    COMPENSATE_ALL,
    COMPENSATE_COMPLETED,
    PARALLEL,
    Backoff,
    CompensationFailed,
    DeadLetter,
    Saga,
    SagaCompensated,
    SagaError,
    SagaLog,
    SagaStatus,
    Scope,
    StepRecord,
    StepStatus,
    Strategy,
    read_saga_log,
)
from podium._services import DEFAULT_RETRY, RetryPolicy, Service, VirtualObject, Workflow

__all__ = [
    "BEST_EFFORT",
    "COMPENSATE_ALL",
    "COMPENSATE_COMPLETED",
    "DEFAULT_RETRY",
    "PARALLEL",
    "Backoff",
    "CompensationFailed",
    "DeadLetter",
    "InvalidInput",
    "Model",
    "RetryPolicy",
    "Saga",
    "SagaCompensated",
    "SagaError",
    "SagaLog",
    "SagaStatus",
    "Scope",
    "Service",
    "StepRecord",
    "StepStatus",
    "Strategy",
    "TerminalError",
    "VirtualObject",
    "Workflow",
    "read_saga_log",
]
