"""Logs: one JSON object per line, with the invocation's context, quiet during replay.

Every Podium process logs through the standard :mod:`logging` module. :func:`configure_logging` puts one
handler on the root logger that writes each record as one JSON object per line (python-json-logger) on
stderr, where ``podium up`` captures it into ``<data>/logs/<name>.log``. A deployment turns it on by
itself when the environment asks (:data:`LOG_FORMAT_ENV`, read by :func:`podium.app`), so every granian
worker that imports the app logs the same way; without that variable nothing is configured and a user's
own logging setup (or pytest's) is left alone.

Two filters do the rest, so no call site passes context by hand:

- :class:`ContextFilter` adds the invocation's fields (``invocation_id``, ``service``, ``handler``,
  ``key``, ``correlation_id``) to every record written inside a handler, read from restate-sdk's current
  context.
- :class:`ReplayFilter` drops records written while the SDK replays the journal, so a line is not
  written again each time a handler resumes (restate-sdk's own ``RestateLoggingFilter`` idea).

The framework's loggers (``podium.saga``, ``podium.gateway``...) are children of ``podium``, which has
only a ``NullHandler`` of its own: what they write goes wherever the application sends its logs.

The correlation id follows one client request across services: the gateway takes a well-formed
``x-correlation-id`` from the client (or makes one) and forwards it; :func:`podium.call` and
:func:`podium.send` pass it on to callees; an invocation without one (started at the ingress) uses its
own invocation id.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter
from restate.logging import RestateLoggingFilter
from restate.server_context import (
    ServerInvocationContext,
    current_context,
    get_extension_data,
    restate_context_is_replaying,
    set_extension_data,
)

CORRELATION_HEADER = "x-correlation-id"
"""The header that carries a request's correlation id: from the client to the gateway and back in its
answer, from the gateway to the engine, and from a handler to the handlers it calls."""

LOG_FORMAT_ENV = "PODIUM_LOG_FORMAT"
"""``json`` or ``text``: :func:`podium.app` configures logging for its process (unset: it does not)."""
LOG_LEVEL_ENV = "PODIUM_LOG_LEVEL"
"""The lowest level written (``DEBUG``, ``INFO``, ``WARNING``...; default ``INFO``)."""
SYSTEM_ENV = "PODIUM_SYSTEM"
"""The ``system`` field of every line: the deployment's name (default: the services' common system)."""

LOG_FORMATS = ("json", "text")
"""The values :data:`LOG_FORMAT_ENV` may take."""

CONTEXT_FIELDS = ("invocation_id", "correlation_id", "service", "handler", "key")
"""The fields :class:`ContextFilter` adds to a record written inside a handler."""
SAGA_FIELDS = ("event", "saga", "step", "attempt", "outcome", "error")
"""The fields of the framework's saga events."""

_HANDLER_NAME = "podium"
"""The name of the handler :func:`configure_logging` installs, so a second call replaces it."""
_CACHE_KEY = "podium.logging.fields"
"""Where an invocation's fields are kept (the SDK's per-attempt extension data) once computed."""
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

logger = logging.getLogger("podium")
"""The framework's package logger; its children are ``podium.saga``, ``podium.gateway``..."""
# A library does not decide where its logs go: without this, Python's last-resort handler would print
# the framework's warnings on a user's stderr in a process that never configured logging.
logger.addHandler(logging.NullHandler())


# -- the correlation id ---------------------------------------------------------------------------------


def well_formed_correlation_id(value: str | None) -> str | None:
    """``value`` if it is usable as a correlation id, else None.

    Usable: 1 to 128 letters, digits and ``.``, ``_``, ``:``, ``-``, starting with a letter or digit
    (uuids with or without dashes, ULIDs, W3C trace ids...). Anything else could smuggle text into a log
    line or a header, so it is replaced rather than cleaned.
    """
    if value is not None and _WELL_FORMED.fullmatch(value):
        return value
    return None


def new_correlation_id() -> str:
    """A fresh correlation id (32 hex digits of a random uuid)."""
    return uuid.uuid4().hex


def correlation_id(ctx: Any) -> str:
    """The correlation id of the request this invocation serves.

    The one the gateway (or the calling handler, through :func:`podium.call` and :func:`podium.send`)
    sent in ``x-correlation-id``; for an invocation that came with none, such as one started at the
    ingress, its own invocation id, which its callees then inherit.
    """
    request = ctx.request()
    for name, value in request.headers.items():
        if name.lower() == CORRELATION_HEADER:
            found = well_formed_correlation_id(value)
            if found is not None:
                return found
    invocation_id: str = request.id
    return invocation_id


def with_correlation(ctx: Any, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` for a call or send from ``ctx``, carrying its correlation id unless they name one."""
    sent = dict(headers or {})
    if not any(name.lower() == CORRELATION_HEADER for name in sent):
        sent[CORRELATION_HEADER] = correlation_id(ctx)
    return sent


# -- filters --------------------------------------------------------------------------------------------


def _current() -> ServerInvocationContext | None:
    """The invocation the running code serves, or None outside a handler."""
    try:
        ctx = current_context()
    except LookupError:  # the SDK's context variable has no default: unset outside a handler
        return None
    return ctx if isinstance(ctx, ServerInvocationContext) else None


def invocation_fields(ctx: ServerInvocationContext) -> dict[str, str]:
    """The log fields of an invocation: id, service, handler, key (objects, workflows), correlation id.

    Computed once per attempt and kept in the SDK's extension data for the attempt's other records.
    """
    cached: dict[str, str] | None = get_extension_data(ctx, _CACHE_KEY)
    if cached is not None:
        return cached
    handler = ctx.handler
    fields = {
        "invocation_id": ctx.invocation.invocation_id,
        "correlation_id": correlation_id(ctx),
        "service": handler.service_tag.name,
        "handler": handler.name,
    }
    if handler.service_tag.kind != "service":
        fields["key"] = ctx.invocation.key
    set_extension_data(ctx, _CACHE_KEY, fields)
    return fields


class ContextFilter(logging.Filter):
    """Adds the current invocation's fields to each record (and ``system``, when given).

    Fields the call site set itself (``extra={"key": ...}``) are kept. Outside a handler only
    ``system`` is added.

    Args:
        system: The ``system`` field of every record; None leaves it to the formatter.
    """

    def __init__(self, system: str | None = None) -> None:
        super().__init__()
        self.system = system

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; never drops a record."""
        if self.system is not None and not hasattr(record, "system"):
            record.system = self.system
        ctx = _current()
        if ctx is not None:
            for name, value in invocation_fields(ctx).items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class ReplayFilter(logging.Filter):
    """Drops records written while a handler replays its journal, below ``min_level``.

    A handler resumes by running its code again from the start, the SDK answering every step it already
    took from the journal; what that code logs on the way was logged by the attempt that took the step.
    restate-sdk tracks whether it is replaying (``restate_context_is_replaying``).

    Args:
        min_level: Records at this level or above pass even during replay. The handler
            :func:`configure_logging` installs lets errors through: an error on a replayed path is rare
            and worth a repeat, while a lost one is not. The framework's own loggers drop every record
            during replay (``logging.CRITICAL + 1``), since they log only what a step's outcome decided.
    """

    def __init__(self, min_level: int = logging.CRITICAL + 1) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record written during replay, below ``min_level``."""
        return record.levelno >= self.min_level or not restate_context_is_replaying.get()


def framework_logger(name: str) -> logging.Logger:
    """A logger of the framework (``podium.<something>``), quiet during replay, with context fields.

    The filters sit on the logger itself, so the records carry their fields and skip replays whatever
    handler receives them (a test's, pytest's, the one :func:`configure_logging` installs).
    """
    if name != "podium" and not name.startswith("podium."):
        raise ValueError(f"framework loggers are children of podium, not {name!r}")
    log = logging.getLogger(name)
    if not any(isinstance(f, RestateLoggingFilter) for f in log.filters):
        # RestateLoggingFilter drops every record written while the SDK replays.
        log.addFilter(RestateLoggingFilter())
        log.addFilter(ContextFilter())
    return log


# -- formatters -----------------------------------------------------------------------------------------


def _iso_time(created: float) -> str:
    """ISO 8601 in UTC with milliseconds, ``2025-01-31T12:00:00.123Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(_JsonFormatter):
    """One JSON object per record, its fields in a fixed order.

    ``time``, ``level``, ``name``, ``message``, ``system``, then the context and event fields the record
    carries, then ``exception`` (the formatted traceback) if any.

    Args:
        system: The ``system`` field when the record has none (the deployment's name, or ``gateway``).
    """

    def __init__(self, system: str) -> None:
        super().__init__(rename_fields={"exc_info": "exception", "stack_info": "stack"})
        self.system = system

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The fixed fields first, then what the record carries, the traceback last."""
        log_data["time"] = _iso_time(record.created)
        log_data["level"] = record.levelname
        log_data["name"] = record.name
        log_data["message"] = record.message
        log_data["system"] = self.system
        super().add_fields(log_data, record, message_dict)
        for name in ("exception", "stack"):
            if name in log_data:
                log_data[name] = log_data.pop(name)


class TextFormatter(logging.Formatter):
    """One line per record, for a person at a terminal.

    Time, level, system, logger, message, then the context and event fields as ``name=value`` (a
    traceback on the following lines).

    Args:
        system: The system shown when the record has none.
    """

    def __init__(self, system: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(system)s %(name)s: %(message)s")
        self.system = system

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC, as in the JSON lines."""
        return _iso_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        """The line, with the fields the record carries appended."""
        if not hasattr(record, "system"):
            record.system = self.system
        line = super().format(record)
        extras = " ".join(
            f"{name}={getattr(record, name)}"
            for name in (*SAGA_FIELDS, *CONTEXT_FIELDS)
            if getattr(record, name, None) is not None
        )
        if not extras:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head}  {extras}{newline}{rest}"


# -- configuration --------------------------------------------------------------------------------------


def configure_logging(
    *,
    system: str,
    level: int | str = "INFO",
    json: bool = True,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send this process's logs to stderr, one JSON object per line (or text), with context fields.

    Installs one handler on the root logger, so the framework's, the SDK's and the application's own
    loggers all write the same way, and sets the root level. Calling it again replaces that handler
    (an application built twice in one process does not log twice); other handlers are left alone.

    Args:
        system: The ``system`` field of every line: the deployment's name, or ``gateway``.
        level: The lowest level written (``"INFO"``, ``logging.DEBUG``...).
        json: One JSON object per line; False writes readable text lines instead.
        stream: Where to write (stderr when None).

    Returns:
        The installed handler.

    Raises:
        ValueError: ``level`` is not a logging level.
    """
    if isinstance(level, str):
        name = level.strip().upper()
        numeric = logging.getLevelNamesMapping().get(name)
        if numeric is None:
            raise ValueError(f"{level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
        level = numeric
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(JsonFormatter(system) if json else TextFormatter(system))
    handler.addFilter(ContextFilter(system))
    handler.addFilter(ReplayFilter(min_level=logging.ERROR))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def configure_from_env(systems: Iterable[str | None] = ()) -> logging.Handler | None:
    """:func:`configure_logging` as the environment asks, or nothing when :data:`LOG_FORMAT_ENV` is unset.

    Args:
        systems: The ``system`` of each service served, for the ``system`` field when
            :data:`SYSTEM_ENV` is unset: their common system, or ``podium`` when they differ.

    Raises:
        ValueError: :data:`LOG_FORMAT_ENV` or :data:`LOG_LEVEL_ENV` has a value that means nothing.
    """
    wanted = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if not wanted:
        return None
    if wanted not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={wanted!r}: expected one of {', '.join(LOG_FORMATS)}")
    system = os.environ.get(SYSTEM_ENV, "").strip()
    if not system:
        named = {s for s in systems if s}
        system = named.pop() if len(named) == 1 else "podium"
    return configure_logging(
        system=system,
        level=os.environ.get(LOG_LEVEL_ENV, "").strip() or "INFO",
        json=wanted == "json",
    )
