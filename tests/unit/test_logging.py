"""Logs: the JSON lines, the context and replay filters, the configuration paths, the correlation id."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from restate import ObjectContext
from restate.handler import handler_from_callable
from restate.server_context import (
    ServerInvocationContext,
    _restate_context_var,
    restate_context_is_replaying,
)
from restate.vm import Invocation

import podium
from podium._logging import (
    CONTEXT_FIELDS,
    ContextFilter,
    JsonFormatter,
    ReplayFilter,
    TextFormatter,
    framework_logger,
    well_formed_correlation_id,
    with_correlation,
)
from podium.gateway.__main__ import parse_args

# -- helpers --------------------------------------------------------------------------------------------

ledger = podium.VirtualObject("LogLedger", system="banking")


@ledger.handler("Post")
async def post(ctx: ObjectContext, amount: int) -> int:
    return amount


def record(message: str = "hello", *, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("podium.saga", level, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


@contextmanager
def inside_handler(headers: list[tuple[str, str]], *, replaying: bool = False) -> Iterator[None]:
    """Run the block as restate-sdk runs a handler: its context and replay flag set, as ``enter`` does."""
    invocation = Invocation(
        invocation_id="inv_1test", random_seed=0, headers=headers, input_buffer=b"", key="acct-7"
    )
    ctx = ServerInvocationContext(
        vm=None,  # type: ignore[arg-type]  # a handler's context; nothing here talks to the engine
        handler=handler_from_callable(post),
        invocation=invocation,
        attempt_headers={},
        send=None,  # type: ignore[arg-type]
        receive=None,  # type: ignore[arg-type]
    )
    context_token = _restate_context_var.set(ctx)
    replay_token = restate_context_is_replaying.set(replaying)
    try:
        yield
    finally:
        restate_context_is_replaying.reset(replay_token)
        _restate_context_var.reset(context_token)


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, put back as it was after the test."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    try:
        yield logger
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)


@pytest.fixture
def no_log_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (podium.LOG_FORMAT_ENV, podium.LOG_LEVEL_ENV, podium.SYSTEM_ENV):
        monkeypatch.delenv(name, raising=False)


def podium_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if h.name == "podium"]


# -- the JSON lines -------------------------------------------------------------------------------------


def test_a_line_is_one_json_object_with_the_fixed_fields_first() -> None:
    line = JsonFormatter("banking").format(record("step %s done", saga="transfer", step="debit"))
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[:5] == ["time", "level", "name", "message", "system"]
    assert data["level"] == "INFO"
    assert data["name"] == "podium.saga"
    assert data["message"] == "step %s done"
    assert data["system"] == "banking"
    assert (data["saga"], data["step"]) == ("transfer", "debit")
    assert datetime.fromisoformat(data["time"]).utcoffset() == timedelta(0)  # ISO 8601, in UTC


def test_the_time_is_the_records_in_utc() -> None:
    made = record()
    made.created = 0.25
    assert json.loads(JsonFormatter("x").format(made))["time"] == "1970-01-01T00:00:00.250Z"


def test_an_exception_is_a_field_of_its_own_with_the_traceback() -> None:
    try:
        raise ValueError("the ledger does not balance")
    except ValueError:
        made = logging.LogRecord("podium", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    data = json.loads(JsonFormatter("banking").format(made))
    assert list(data)[-1] == "exception"
    assert "Traceback" in data["exception"]
    assert "ValueError: the ledger does not balance" in data["exception"]
    assert data["message"] == "failed"


def test_the_records_own_system_wins_and_odd_values_still_serialise() -> None:
    data = json.loads(JsonFormatter("default").format(record(system="gateway", amount=object())))
    assert data["system"] == "gateway"
    assert isinstance(data["amount"], str)


def test_text_lines_carry_the_same_fields() -> None:
    line = TextFormatter("banking").format(
        record("done", saga="transfer", step="debit", invocation_id="inv_1")
    )
    assert " INFO    banking podium.saga: done" in line
    assert line.endswith("saga=transfer step=debit invocation_id=inv_1")


# -- the filters ----------------------------------------------------------------------------------------


def test_outside_a_handler_the_context_filter_adds_only_the_system() -> None:
    made = record()
    assert ContextFilter("banking").filter(made) is True
    assert made.system == "banking"  # type: ignore[attr-defined]
    assert not hasattr(made, "invocation_id")


def test_inside_a_handler_every_record_gets_the_invocations_fields() -> None:
    with inside_handler([("x-correlation-id", "order-42")]):
        made = record()
        ContextFilter().filter(made)
    assert {name: getattr(made, name, None) for name in CONTEXT_FIELDS} == {
        "invocation_id": "inv_1test",
        "correlation_id": "order-42",
        "service": "LogLedger",
        "handler": "Post",
        "key": "acct-7",
    }
    data = json.loads(JsonFormatter("banking").format(made))
    assert data["invocation_id"] == "inv_1test"
    assert data["correlation_id"] == "order-42"


def test_fields_the_call_site_set_are_kept() -> None:
    with inside_handler([]):
        made = record(key="other")
        ContextFilter().filter(made)
    assert made.key == "other"  # type: ignore[attr-defined]
    assert made.correlation_id == "inv_1test"  # type: ignore[attr-defined]  # no header: its own id


def test_during_replay_records_are_dropped_below_the_threshold() -> None:
    quiet, errors_pass = ReplayFilter(), ReplayFilter(min_level=logging.ERROR)
    with inside_handler([], replaying=True):
        assert quiet.filter(record()) is False
        assert quiet.filter(record(level=logging.ERROR)) is False
        assert errors_pass.filter(record(level=logging.WARNING)) is False
        assert errors_pass.filter(record(level=logging.ERROR)) is True
    with inside_handler([], replaying=False):
        assert quiet.filter(record()) is True


def test_a_framework_logger_is_quiet_during_replay_whatever_handler_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = framework_logger("podium.saga")
    caplog.set_level(logging.INFO, logger="podium")
    with inside_handler([], replaying=True):
        logger.error("replayed")
    with inside_handler([("x-correlation-id", "c-1")], replaying=False):
        logger.info("new")
    assert [r.getMessage() for r in caplog.records] == ["new"]
    assert caplog.records[0].correlation_id == "c-1"  # type: ignore[attr-defined]
    framework_logger("podium.saga")  # asked for again: no second set of filters
    assert sum(isinstance(f, ContextFilter) for f in logger.filters) == 1


def test_framework_loggers_are_children_of_podium() -> None:
    with pytest.raises(ValueError, match="children of podium"):
        framework_logger("banking")


# -- configuration --------------------------------------------------------------------------------------


def test_configure_logging_writes_json_lines_through_one_root_handler(root: logging.Logger) -> None:
    stream = io.StringIO()
    podium.configure_logging(system="travel", level="debug", stream=stream)
    podium.configure_logging(system="travel", level="DEBUG", stream=stream)  # again: replaced, not added
    assert len(podium_handlers(root)) == 1
    assert root.level == logging.DEBUG
    logging.getLogger("travel.booking").debug("seat held", extra={"seat": "12A"})
    data = json.loads(stream.getvalue().splitlines()[-1])
    assert (data["system"], data["name"], data["message"], data["seat"]) == (
        "travel",
        "travel.booking",
        "seat held",
        "12A",
    )


def test_configure_logging_refuses_an_unknown_level(root: logging.Logger) -> None:
    with pytest.raises(ValueError, match="'LOUD' is not a logging level"):
        podium.configure_logging(system="travel", level="LOUD")
    assert podium_handlers(root) == []


@pytest.mark.usefixtures("no_log_env")
def test_an_app_configures_nothing_without_the_environment(root: logging.Logger) -> None:
    handlers, level = list(root.handlers), root.level
    podium.app([ledger])
    assert root.handlers == handlers
    assert root.level == level


@pytest.mark.usefixtures("no_log_env")
def test_an_app_configures_logging_when_the_environment_asks(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(podium.LOG_FORMAT_ENV, "json")
    monkeypatch.setenv(podium.LOG_LEVEL_ENV, "WARNING")
    podium.app([ledger])
    podium.app([ledger])  # a worker that builds its app twice still writes each line once
    assert len(podium_handlers(root)) == 1
    assert root.level == logging.WARNING
    logging.getLogger("banking").warning("overdrawn")
    data = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert data["system"] == "banking"  # no PODIUM_SYSTEM: the services' own system
    assert data["message"] == "overdrawn"
    monkeypatch.setenv(podium.SYSTEM_ENV, "banking-eu")
    podium.app([ledger])
    logging.getLogger("banking").warning("overdrawn")
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["system"] == "banking-eu"


@pytest.mark.usefixtures("no_log_env")
def test_an_app_refuses_a_log_format_that_means_nothing(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(podium.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="PODIUM_LOG_FORMAT='xml': expected one of json, text"):
        podium.app([ledger])
    assert podium_handlers(root) == []


@pytest.mark.usefixtures("no_log_env")
def test_the_gateway_command_logs_json_when_the_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    required = ["--upstream", "http://u", "--admin-url", "http://a", "--issuer-key", "k", "--port", "0"]
    required += ["--max-in-flight", "1"]
    assert parse_args(required).log_format == "text"
    monkeypatch.setenv(podium.LOG_FORMAT_ENV, "json")
    monkeypatch.setenv(podium.LOG_LEVEL_ENV, "DEBUG")
    args = parse_args(required)
    assert (args.log_format, args.log_level) == ("json", "DEBUG")
    assert parse_args([*required, "--log-format", "text"]).log_format == "text"


# -- the correlation id ---------------------------------------------------------------------------------


def fake_ctx(headers: dict[str, str]) -> Any:
    request = SimpleNamespace(id="inv_1fake", headers=headers)
    return SimpleNamespace(request=lambda: request)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("order:42.retry_1", "order:42.retry_1"),
        ("x" * 128, "x" * 128),
        ("x" * 129, None),
        ("", None),
        ("-leading-dash", None),
        ("two words", None),
        ('quote"injection', None),
        ("line\nbreak", None),
        (None, None),
    ],
)
def test_a_correlation_id_is_well_formed_or_refused(value: str | None, expected: str | None) -> None:
    assert well_formed_correlation_id(value) == expected


def test_correlation_id_reads_the_header_or_falls_back_to_the_invocation_id() -> None:
    assert podium.correlation_id(fake_ctx({"X-Correlation-Id": "req-1"})) == "req-1"
    assert podium.correlation_id(fake_ctx({})) == "inv_1fake"
    assert podium.correlation_id(fake_ctx({"x-correlation-id": "not ok"})) == "inv_1fake"


def test_calls_carry_the_correlation_id_unless_the_caller_names_one() -> None:
    ctx = fake_ctx({"x-correlation-id": "req-1"})
    assert with_correlation(ctx, None) == {"x-correlation-id": "req-1"}
    assert with_correlation(ctx, {"a": "b"}) == {"a": "b", "x-correlation-id": "req-1"}
    assert with_correlation(ctx, {"X-Correlation-ID": "mine"}) == {"X-Correlation-ID": "mine"}
