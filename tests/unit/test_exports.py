"""The public API is what ``__all__`` says; a change to it is deliberate and shows up here."""

import podium
import podium.runtime
import podium.testing


def test_podium_exports() -> None:
    assert set(podium.__all__) == {
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
    }
    for name in podium.__all__:
        assert getattr(podium, name) is not None


def test_runtime_and_testing_exports_exist() -> None:
    for module in (podium.runtime, podium.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
