"""Typed calls by handler reference, inside handlers and from outside.

Inside handlers use :func:`call` and :func:`send`; outside, :class:`IngressClient`. Handlers are named
by the function, never by strings: the service, the handler name on the wire, and the JSON codecs all
come from the handler's registration, so a renamed handler or a wrong argument type is caught by the
type checker. Idempotency keys are honoured everywhere (the engine deduplicates a
repeated call or send with the same key), and sends can be delayed. Calls and sends from a handler carry
its correlation id (``x-correlation-id``) to the callee, so one client request is one id in every log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httpx
from restate import Context, RestateDurableCallFuture, SendHandle, TerminalError
from restate.context import HandlerType
from restate.handler import Handler, handler_from_callable

from podium._logging import with_correlation
from podium._saga import DeadLetterAction

I = TypeVar("I")  # noqa: E741 - the SDK's name for a handler's input type
O = TypeVar("O")  # noqa: E741 - and for its output type


def _target(handler: HandlerType[I, O], key: str | None) -> Handler[I, O]:
    target = handler_from_callable(handler)
    kind = target.service_tag.kind
    if kind == "service" and key is not None:
        raise ValueError(f"{target.service_tag.name} is a service: it takes no key")
    if kind != "service" and key is None:
        raise ValueError(f"{target.service_tag.name} is a {kind}: a key is required")
    return target


def call(
    ctx: Context,
    handler: HandlerType[I, O],
    arg: I,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> RestateDurableCallFuture[O]:
    """Call ``handler`` (of a service, an object or a workflow) and return its durable future.

    Args:
        key: The object or workflow key; must be None for a service.
        idempotency_key: The engine runs the callee once per key, even if this call is repeated.
        headers: Headers for the callee (``ctx.request().headers``); this invocation's correlation id is
            added as ``x-correlation-id`` unless they carry one.
    """
    target = _target(handler, key)
    headers = with_correlation(ctx, headers)
    kind = target.service_tag.kind
    if kind == "service":
        return ctx.service_call(handler, arg, idempotency_key=idempotency_key, headers=headers)
    assert key is not None
    if kind == "object":
        return ctx.object_call(handler, key, arg, idempotency_key=idempotency_key, headers=headers)
    return ctx.workflow_call(handler, key, arg, idempotency_key=idempotency_key, headers=headers)


def send(
    ctx: Context,
    handler: HandlerType[I, O],
    arg: I,
    *,
    key: str | None = None,
    delay: timedelta | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> SendHandle:
    """Send to ``handler`` without waiting for it (after ``delay``, a durable timer).

    The callee gets this invocation's correlation id, as with :func:`call`.
    """
    target = _target(handler, key)
    headers = with_correlation(ctx, headers)
    kind = target.service_tag.kind
    if kind == "service":
        return ctx.service_send(
            handler, arg, send_delay=delay, idempotency_key=idempotency_key, headers=headers
        )
    assert key is not None
    if kind == "object":
        return ctx.object_send(
            handler, key, arg, send_delay=delay, idempotency_key=idempotency_key, headers=headers
        )
    return ctx.workflow_send(
        handler, key, arg, send_delay=delay, idempotency_key=idempotency_key, headers=headers
    )


class IngressError(TerminalError):
    """The engine or the handler answered an ingress request with an error status."""


@dataclass(frozen=True)
class Invocation:
    """A submitted invocation."""

    id: str
    """The engine's invocation id (use it to attach, read the output, or cancel)."""
    status: str
    """``Accepted``, or ``PreviouslyAccepted`` when the idempotency key was seen before."""


class IngressClient:
    """Calls handlers from code outside the engine: on the trusted ingress, or through the gateway.

    Args:
        ingress_url: The ingress (``http://127.0.0.1:8080``, every handler), or the gateway
            (``http://127.0.0.1:8000``, public handlers only, with ``token``).
        admin_url: The admin API, needed only to cancel or kill invocations (an operator's door).
        timeout: Seconds to wait for an answer.
        token: An access token, sent as ``Authorization: Bearer`` (the gateway needs one). Through the
            gateway, attaching by invocation id and awakeables are not reachable: attach with the same
            idempotency key instead.
    """

    def __init__(
        self,
        ingress_url: str,
        *,
        admin_url: str | None = None,
        timeout: float = 300.0,
        token: str | None = None,
    ) -> None:
        self.ingress_url = ingress_url.rstrip("/")
        self.admin_url = admin_url.rstrip("/") if admin_url else None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout, headers=headers)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> IngressClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _path(self, target: Handler[Any, Any], key: str | None) -> str:
        parts = [target.service_tag.name] + ([key] if key is not None else []) + [target.name]
        return "/".join(quote(p, safe="") for p in parts)

    def _post(self, path: str, body: bytes | None, headers: dict[str, str]) -> httpx.Response:
        if body:
            headers = {"content-type": "application/json", **headers}
        return self._check(
            self._http.post(f"{self.ingress_url}/{path}", content=body or b"", headers=headers)
        )

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            message = str(response.json().get("message", response.text))
        except (ValueError, AttributeError):
            message = response.text
        raise IngressError(message, status_code=response.status_code)

    def call(
        self,
        handler: HandlerType[I, O],
        arg: I | None = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
    ) -> O:
        """Call ``handler`` and return its typed answer.

        Raises:
            IngressError: With the handler's or the engine's status code and message.
        """
        target = _target(handler, key)
        body = None if arg is None else target.handler_io.input_serde.serialize(arg)
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        response = self._post(self._path(target, key), body, headers)
        return cast(O, target.handler_io.output_serde.deserialize(response.content))

    def send(
        self,
        handler: HandlerType[I, O],
        arg: I | None = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        delay: timedelta | None = None,
    ) -> Invocation:
        """Submit ``handler`` without waiting; with ``delay``, the engine starts it later."""
        target = _target(handler, key)
        body = None if arg is None else target.handler_io.input_serde.serialize(arg)
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        path = self._path(target, key) + "/send"
        if delay is not None:
            path += f"?delay={int(delay.total_seconds() * 1000)}ms"
        answer = self._post(path, body, headers).json()
        return Invocation(id=answer["invocationId"], status=answer.get("status", "Accepted"))

    def attach(self, invocation_id: str) -> Any:
        """Wait for a submitted invocation to finish and return its JSON answer."""
        return self._json(self._get(f"restate/invocation/{invocation_id}/attach"))

    def output(self, invocation_id: str) -> Any:
        """The answer of a finished invocation (the engine answers 470 while it still runs)."""
        return self._json(self._get(f"restate/invocation/{invocation_id}/output"))

    def workflow_attach(self, workflow: str, key: str) -> Any:
        """Wait for workflow ``workflow``/``key`` to finish and return its run handler's answer."""
        return self._json(
            self._get(f"restate/workflow/{quote(workflow, safe='')}/{quote(key, safe='')}/attach")
        )

    def workflow_output(self, workflow: str, key: str) -> Any:
        """The run handler's answer of a finished workflow."""
        return self._json(
            self._get(f"restate/workflow/{quote(workflow, safe='')}/{quote(key, safe='')}/output")
        )

    def resolve_awakeable(self, awakeable_id: str, value: Any) -> None:
        """Complete an awakeable with ``value`` (the waiting handler resumes with it)."""
        self._post(f"restate/awakeables/{awakeable_id}/resolve", json.dumps(value).encode(), {})

    def act_on_dead_letter(self, awakeable_id: str, action: DeadLetterAction) -> None:
        """Retry or resolve a dead letter its saga holds for a person (``DeadLetter.awakeable_id``).

        The saga resumes with the action: a retry runs the compensation again (with the strategy's
        attempts), a resolution closes the dead letter with its note; either way the rollback goes on.
        """
        self.resolve_awakeable(awakeable_id, action.model_dump(mode="json"))

    def reject_awakeable(self, awakeable_id: str, reason: str) -> None:
        """Fail an awakeable (the waiting handler gets a TerminalError with ``reason``)."""
        response = self._http.post(
            f"{self.ingress_url}/restate/awakeables/{awakeable_id}/reject",
            content=reason.encode(),
            headers={"content-type": "text/plain"},
        )
        self._check(response)

    def cancel(self, invocation_id: str) -> None:
        """Cancel an invocation: it gets a TerminalError at its next await and can compensate."""
        self._admin("cancel", invocation_id)

    def kill(self, invocation_id: str) -> None:
        """Stop an invocation at once, without compensation (last resort)."""
        self._admin("kill", invocation_id)

    def _admin(self, action: str, invocation_id: str) -> None:
        if self.admin_url is None:
            raise ValueError(f"{action} needs the admin URL (IngressClient(..., admin_url=...))")
        self._check(self._http.patch(f"{self.admin_url}/invocations/{invocation_id}/{action}"))

    def _get(self, path: str) -> httpx.Response:
        return self._check(self._http.get(f"{self.ingress_url}/{path}"))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return response.json() if response.content else None
