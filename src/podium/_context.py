"""What a handler's context allows."""

from __future__ import annotations

from typing import Any


def can_write_state(ctx: Any) -> bool:
    """Whether this handler may write state: exclusive object handlers and workflow run handlers.

    The SDK hands every handler the same context class, so the handler's registration is what tells.
    A stateless service or a shared handler that writes state fails its invocation in the engine.
    """
    handler = getattr(ctx, "handler", None)
    if handler is None:
        return hasattr(ctx, "set")
    return bool(handler.service_tag.kind != "service" and handler.kind != "shared")
