"""Services, virtual objects and workflows whose handlers validate their input and retry finitely.

restate-sdk answers 500 when a request body fails to parse, and a handler that raises on bad input is
retried by the engine (about 70 times, then paused). Podium's service classes are drop-in replacements
for ``restate.Service``, ``restate.VirtualObject`` and ``restate.Workflow`` that fix both:

- the handler's input is validated with pydantic before the handler runs; malformed JSON, an empty body,
  a missing field or a wrong type answer **400** with a message naming each field and its problem;
- outputs are serialised with their JSON aliases (camelCase for :class:`podium.Model`);
- every handler gets a finite retry policy (:data:`DEFAULT_RETRY`), so a programming error stops
  retrying after a bounded time instead of forever.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, cast

import restate
from pydantic import TypeAdapter, ValidationError
from restate.serde import Serde

from podium._errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class RetryPolicy:
    """How the engine retries a handler invocation that fails with a non-terminal error."""

    max_attempts: int = 30
    """Attempts before giving up (the first call counts)."""
    initial_interval: timedelta = timedelta(milliseconds=100)
    """Delay before the first retry."""
    factor: float = 2.0
    """Each delay is the previous one times this."""
    max_interval: timedelta = timedelta(seconds=10)
    """Upper bound of a delay."""
    on_max_attempts: Literal["pause", "kill"] | None = None
    """``pause`` keeps the invocation for an operator to resume; ``kill`` fails it so the caller sees an
    error. ``None`` picks per kind: pause for workflows and virtual objects (their state and held
    resources must not be dropped), kill for stateless services (the calling saga then compensates)."""

    def to_restate(self, default_action: Literal["pause", "kill"]) -> restate.InvocationRetryPolicy:
        """The SDK's representation, with ``default_action`` when :attr:`on_max_attempts` is None."""
        return restate.InvocationRetryPolicy(
            initial_interval=self.initial_interval,
            exponentiation_factor=self.factor,
            max_interval=self.max_interval,
            max_attempts=self.max_attempts,
            on_max_attempts=self.on_max_attempts or default_action,
        )


DEFAULT_RETRY = RetryPolicy()
"""30 attempts with exponential backoff from 100 ms to 10 s: about four minutes, then pause or kill."""


class _Invalid:
    """What the input serde hands the handler wrapper when the body does not validate."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each failing field (by its JSON name) and its problem."""
    problems = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        if kind in ("json_invalid", "json_type"):
            return f"request body is not valid JSON: {item['msg'].removeprefix('Invalid JSON: ')}"
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        if kind == "missing":
            message = "field required"
        elif "input" in item and kind not in ("missing",):
            shown = json.dumps(item["input"], default=str)
            if len(shown) <= 60:
                message = f"{message} (got {shown})"
        problems.append(f"{where}: {message}")
    return "invalid request: " + "; ".join(problems)


class ValidatingSerde(Serde[Any]):
    """Parses and validates a handler's JSON input against its annotation, never raising.

    The SDK turns any exception raised while parsing into a 500, so failures are handed to the handler
    wrapper as a marker that it raises as :class:`~podium.InvalidInput` (400).
    """

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def deserialize(self, buf: bytes) -> Any:
        """Validate ``buf``; return the value, or a marker describing why it is invalid."""
        if not buf or not buf.strip():
            return _Invalid("request body is empty: expected a JSON value")
        try:
            return self.adapter.validate_json(buf)
        except ValidationError as exc:
            return _Invalid(describe_validation_error(exc))

    def serialize(self, obj: Any) -> bytes:
        """Serialise with JSON aliases (used when another handler calls this one)."""
        if obj is None:
            return b""
        return self.adapter.dump_json(obj, by_alias=True)


class AliasJsonSerde(Serde[Any]):
    """Serialises a handler's output with JSON aliases and parses it back strictly (for callers)."""

    def __init__(self, annotation: Any) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def deserialize(self, buf: bytes) -> Any:
        """Parse a response body; an empty body is None."""
        if not buf:
            return None
        return self.adapter.validate_json(buf)

    def serialize(self, obj: Any) -> bytes:
        """Serialise with JSON aliases."""
        if obj is None:
            return b""
        return self.adapter.dump_json(obj, by_alias=True)


def _wrap(fn: F) -> tuple[Callable[..., Awaitable[Any]], dict[str, Any]]:
    """Wrap ``fn`` so invalid input raises 400, and pick serdes from its annotations."""
    signature = inspect.signature(fn, eval_str=True)
    params = list(signature.parameters.values())
    serdes: dict[str, Any] = {}
    if len(params) == 2 and params[1].annotation is not inspect.Parameter.empty:
        serdes["input_serde"] = ValidatingSerde(params[1].annotation)
    returns = signature.return_annotation
    if returns not in (inspect.Signature.empty, None, type(None)):
        serdes["output_serde"] = AliasJsonSerde(returns)

    @functools.wraps(fn)
    async def handler(ctx: Any, *args: Any) -> Any:
        if args and isinstance(args[0], _Invalid):
            raise InvalidInput(args[0].message)
        return await fn(ctx, *args)

    return handler, serdes


def _decorate(
    register: Callable[..., Callable[[Any], Any]],
    name: str | None,
    retry: RetryPolicy,
    default_action: Literal["pause", "kill"],
    options: dict[str, Any],
) -> Callable[[F], F]:
    def decorator(fn: F) -> F:
        handler, serdes = _wrap(fn)
        registered = register(
            name,
            invocation_retry_policy=retry.to_restate(default_action),
            **serdes,
            **options,
        )(handler)
        # The SDK attaches its handler record to what it returns; calls by reference need that object.
        return cast(F, registered)

    return decorator


class Service(restate.Service):
    """A stateless service (``restate.Service``) with validated input and finite retries.

    Args:
        name: The service name on the wire.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; kills when exhausted).
        **options: Passed to ``restate.Service``.
    """

    def __init__(self, name: str, *, retry: RetryPolicy = DEFAULT_RETRY, **options: Any) -> None:
        super().__init__(name, **options)
        self.retry = retry

    def handler(  # type: ignore[override]
        self, name: str | None = None, *, retry: RetryPolicy | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Register a handler; ``name`` is its name on the wire (defaults to the function name)."""
        return _decorate(super().handler, name, retry or self.retry, "kill", options)


class VirtualObject(restate.VirtualObject):
    """A keyed, stateful object (``restate.VirtualObject``) with validated input and finite retries.

    Args:
        name: The object name on the wire.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; pauses when exhausted).
        **options: Passed to ``restate.VirtualObject``.
    """

    def __init__(self, name: str, *, retry: RetryPolicy = DEFAULT_RETRY, **options: Any) -> None:
        super().__init__(name, **options)
        self.retry = retry

    def handler(  # type: ignore[override]
        self,
        name: str | None = None,
        kind: Literal["exclusive", "shared"] | None = "exclusive",
        *,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a handler; ``kind="shared"`` handlers run concurrently and only read state."""
        register = functools.partial(super().handler, kind=kind)
        return _decorate(register, name, retry or self.retry, "pause", options)


class Workflow(restate.Workflow):
    """A workflow (``restate.Workflow``) with validated input and finite retries.

    Args:
        name: The workflow name on the wire.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; pauses when exhausted).
        **options: Passed to ``restate.Workflow``.
    """

    def __init__(self, name: str, *, retry: RetryPolicy = DEFAULT_RETRY, **options: Any) -> None:
        super().__init__(name, **options)
        self.retry = retry

    def main(  # type: ignore[override]
        self, name: str | None = None, *, retry: RetryPolicy | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Register the run handler (runs once per workflow key)."""
        return _decorate(super().main, name, retry or self.retry, "pause", options)

    def handler(  # type: ignore[override]
        self, name: str | None = None, *, retry: RetryPolicy | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Register a shared handler (queries, signals) that runs concurrently with the run handler."""
        return _decorate(super().handler, name, retry or self.retry, "pause", options)
