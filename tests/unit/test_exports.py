"""The public API is what ``__all__`` says; a change to it is deliberate and shows up here."""

import podium
import podium.runtime
import podium.testing


def test_podium_exports() -> None:
    assert set(podium.__all__) == {
        "Access",
        "ApprovalOutcome",
        "ApprovalResult",
        "BEST_EFFORT",
        "Backoff",
        "BatchError",
        "BatchResult",
        "COMPENSATE_ALL",
        "COMPENSATE_COMPLETED",
        "CORRELATION_HEADER",
        "CompensationFailed",
        "CompletionPolicy",
        "DEFAULT_RETRY",
        "IDENTITY_KEYS_ENV",
        "INTERNAL_CALLER",
        "LOG_FORMAT_ENV",
        "LOG_LEVEL_ENV",
        "SYSTEM_ENV",
        "DeadLetter",
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
        "PARALLEL",
        "SUBJECT_HEADER",
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
    }
    for name in podium.__all__:
        assert getattr(podium, name) is not None


def test_runtime_and_testing_exports_exist() -> None:
    for module in (podium.runtime, podium.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
