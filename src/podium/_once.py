"""Run a keyed request once and answer every repeat with the first result.

A Restate workflow's run handler runs once per key, and the engine answers a second call with 409
("the workflow method was already invoked"). Clients that retry a request (a timeout, a double click)
expect the first answer back instead. :class:`RunOnce` gives that to an exclusive virtual-object
handler keyed by the business id: a repeat waits for the first run (the handler is exclusive per key),
then gets its stored result; a *different* request for the same key is refused with 409.

Example::

    @orders.handler("CompleteOrder")
    async def complete_order(ctx: ObjectContext, order: Order) -> OrderResult:
        once = RunOnce(ctx, order, OrderResult)
        if (previous := await once.previous()) is not None:
            return previous
        ...
        return once.done(result)
"""

from __future__ import annotations

import hashlib
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter
from restate import TerminalError

R = TypeVar("R")


class RunOnce(Generic[R]):
    """Stores the first request's fingerprint and result in the handler's state.

    Args:
        ctx: An exclusive object handler's context (or a workflow's run handler's).
        request: The request, as validated.
        result_type: The result's type (to read the stored result back).
        name: Distinguishes several once-handlers on one object.
    """

    def __init__(self, ctx: Any, request: BaseModel, result_type: type[R], *, name: str = "run") -> None:
        self.ctx = ctx
        self.fingerprint = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        self._adapter: TypeAdapter[R] = TypeAdapter(result_type)
        self._key = f"podium.once.{name}"

    async def previous(self) -> R | None:
        """The first result for this key, or None if there is none yet.

        Raises:
            TerminalError: 409 if this key already ran with a different request.
        """
        stored = await self.ctx.get(self._key, type_hint=dict)
        if stored is None:
            return None
        if stored["fingerprint"] != self.fingerprint:
            raise TerminalError(f"{self.ctx.key()} was already used for a different request", 409)
        return self._adapter.validate_python(stored["result"])

    @staticmethod
    async def result_of(ctx: Any, result_type: type[R], *, name: str = "run") -> R | None:
        """The stored result for this key, from any handler (shared ones included); None before it."""
        stored = await ctx.get(f"podium.once.{name}", type_hint=dict)
        if stored is None:
            return None
        adapter: TypeAdapter[R] = TypeAdapter(result_type)
        return adapter.validate_python(stored["result"])

    def done(self, result: R) -> R:
        """Store ``result`` as the answer to every repeat of this request, and return it."""
        dumped = self._adapter.dump_python(result, mode="json", by_alias=True)
        self.ctx.set(self._key, {"fingerprint": self.fingerprint, "result": dumped})
        return result
