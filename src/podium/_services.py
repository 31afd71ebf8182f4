"""Services, virtual objects and workflows whose handlers validate their input and retry finitely.

restate-sdk answers 500 when a request body fails to parse, and a handler that raises on bad input is
retried by the engine (about 70 times, then paused). Podium's service classes are drop-in replacements
for ``restate.Service``, ``restate.VirtualObject`` and ``restate.Workflow`` that fix both:

- the handler's input is validated with pydantic before the handler runs; malformed JSON, an empty body,
  a missing field or a wrong type answer **400** with a message naming each field and its problem;
- outputs are serialised with their JSON aliases (camelCase for :class:`podium.Model`);
- every handler gets a finite retry policy (:data:`DEFAULT_RETRY`), so a programming error stops
  retrying after a bounded time instead of forever;
- every handler is **private** unless it says otherwise: only other handlers can call it, never a client
  through the ingress or the gateway. ``public="read"``, ``"write"`` or ``"operator"`` opens it, and names
  the kind of call a token needs a scope for (``<system>:<kind>``, where the service's ``system`` is
  the other half). See docs/security.md.
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

Access = Literal["read", "write", "operator"]
"""The kind of call a public handler is: ``read`` (answers questions, changes nothing), ``write`` (a
client's request that changes something) or ``operator`` (a person's decision: approvals, cancellations,
repairs). A token needs the scope ``<system>:<kind>`` to call it through the gateway."""
ACCESS_KINDS: tuple[Access, ...] = ("read", "write", "operator")
ACCESS_METADATA = "podium.access"
"""Handler metadata (seen in the engine's admin API) naming a public handler's kind of call."""
SYSTEM_METADATA = "podium.system"
"""Service metadata (seen in the engine's admin API) naming the system a service belongs to."""


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


def describe_validation_error(error: ValidationError, *, show_input: bool = True) -> str:
    """One line naming each failing field (by its JSON name) and its problem.

    Short inputs are quoted back (``(got "soon")``) unless ``show_input`` is false: a card number or a
    secret must not come back in an error, which the engine would journal and a client might log.
    """
    problems = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        if kind in ("json_invalid", "json_type"):
            return f"request body is not valid JSON: {item['msg'].removeprefix('Invalid JSON: ')}"
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        if kind == "missing":
            message = "field required"
        elif show_input and "input" in item:
            shown = json.dumps(item["input"], default=str)
            if len(shown) <= 60:
                message = f"{message} (got {shown})"
        problems.append(f"{where}: {message}")
    return "invalid request: " + "; ".join(problems)


def invalid_value(error: ValidationError) -> InvalidInput:
    """The 400 for a value built inside a handler that does not validate (it never will on a retry)."""
    return InvalidInput(describe_validation_error(error).replace("invalid request: ", "invalid value: ", 1))


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
        try:
            return await fn(ctx, *args)
        except ValidationError as exc:
            # A value the handler built from its input (a request for another service, say) does not
            # validate: no retry can change that, so end the invocation instead of retrying forever.
            raise invalid_value(exc) from exc

    return handler, serdes


class _Podium:
    """What the three service classes share: a system name for scopes, and a default retry policy."""

    name: str
    system: str | None
    retry: RetryPolicy


def _service_options(system: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """``restate`` service options with the system recorded in the service's metadata."""
    if "ingress_private" in options:
        raise TypeError("mark handlers public=... instead: a service's handlers are private unless public")
    if system is None:
        return options
    if not system or not system.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"system must be a short name of letters, digits, - and _, not {system!r}")
    return {**options, "metadata": {**(options.get("metadata") or {}), SYSTEM_METADATA: system}}


def _handler_options(service: _Podium, public: Access | None, options: dict[str, Any]) -> dict[str, Any]:
    """The SDK options that make a handler private, or public with its kind of call in its metadata."""
    if "ingress_private" in options:
        raise TypeError("say public=... instead of ingress_private: handlers are private unless public")
    if public is None:
        return {**options, "ingress_private": True}
    if public not in ACCESS_KINDS:
        raise ValueError(f"public must be one of {', '.join(ACCESS_KINDS)} or None, not {public!r}")
    if service.system is None:
        raise ValueError(
            f"{service.name} has a public handler, so it must name its system: "
            f"{type(service).__name__}({service.name!r}, system=...) (tokens are scoped per system)"
        )
    metadata = {**(options.get("metadata") or {}), ACCESS_METADATA: public}
    return {**options, "ingress_private": False, "metadata": metadata}


def _decorate(
    service: _Podium,
    register: Callable[..., Callable[[Any], Any]],
    name: str | None,
    retry: RetryPolicy | None,
    default_action: Literal["pause", "kill"],
    public: Access | None,
    options: dict[str, Any],
) -> Callable[[F], F]:
    sdk_options = _handler_options(service, public, options)

    def decorator(fn: F) -> F:
        handler, serdes = _wrap(fn)
        registered = register(
            name,
            invocation_retry_policy=(retry or service.retry).to_restate(default_action),
            **serdes,
            **sdk_options,
        )(handler)
        # The SDK attaches its handler record to what it returns; calls by reference need that object.
        return cast(F, registered)

    return decorator


class Service(_Podium, restate.Service):
    """A stateless service (``restate.Service``) with validated input and finite retries.

    Args:
        name: The service name on the wire.
        system: The system it belongs to (``travel``, ``banking``…); required once a handler is public,
            since a token's scopes name systems.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; kills when exhausted).
        **options: Passed to ``restate.Service``.
    """

    def __init__(
        self, name: str, *, system: str | None = None, retry: RetryPolicy = DEFAULT_RETRY, **options: Any
    ) -> None:
        restate.Service.__init__(self, name, **_service_options(system, options))
        self.system = system
        self.retry = retry

    def handler(  # type: ignore[override]
        self,
        name: str | None = None,
        *,
        public: Access | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a handler; ``name`` is its name on the wire (defaults to the function name).

        ``public`` opens it to clients (through the gateway, with a ``<system>:<public>`` scope);
        without it, only other handlers can call it.
        """
        return _decorate(self, super().handler, name, retry, "kill", public, options)


class VirtualObject(_Podium, restate.VirtualObject):
    """A keyed, stateful object (``restate.VirtualObject``) with validated input and finite retries.

    Args:
        name: The object name on the wire.
        system: The system it belongs to; required once a handler is public.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; pauses when exhausted).
        **options: Passed to ``restate.VirtualObject``.
    """

    def __init__(
        self, name: str, *, system: str | None = None, retry: RetryPolicy = DEFAULT_RETRY, **options: Any
    ) -> None:
        restate.VirtualObject.__init__(self, name, **_service_options(system, options))
        self.system = system
        self.retry = retry

    def handler(  # type: ignore[override]
        self,
        name: str | None = None,
        kind: Literal["exclusive", "shared"] | None = "exclusive",
        *,
        public: Access | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a handler; ``kind="shared"`` handlers run concurrently and only read state.

        ``public`` opens it to clients; without it, only other handlers can call it.
        """
        register = functools.partial(super().handler, kind=kind)
        return _decorate(self, register, name, retry, "pause", public, options)


class Workflow(_Podium, restate.Workflow):
    """A workflow (``restate.Workflow``) with validated input and finite retries.

    Args:
        name: The workflow name on the wire.
        system: The system it belongs to; required once a handler is public.
        retry: Retry policy for every handler (``DEFAULT_RETRY``; pauses when exhausted).
        **options: Passed to ``restate.Workflow``.
    """

    def __init__(
        self, name: str, *, system: str | None = None, retry: RetryPolicy = DEFAULT_RETRY, **options: Any
    ) -> None:
        restate.Workflow.__init__(self, name, **_service_options(system, options))
        self.system = system
        self.retry = retry

    def main(  # type: ignore[override]
        self,
        name: str | None = None,
        *,
        public: Access | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register the run handler (runs once per workflow key); ``public`` opens it to clients."""
        return _decorate(self, super().main, name, retry, "pause", public, options)

    def handler(  # type: ignore[override]
        self,
        name: str | None = None,
        *,
        public: Access | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a shared handler (queries, signals) that runs concurrently with the run handler."""
        return _decorate(self, super().handler, name, retry, "pause", public, options)
