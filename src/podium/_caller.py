"""Who asked: the subject the gateway verified, as a handler sees it.

The gateway verifies a client's access token and forwards its subject to the engine in the
``x-podium-subject`` header, after dropping any copy the client sent, so a handler can trust it the way
it trusts its input. Requests through the ingress, the trusted internal door on loopback, carry no
subject unless an operator's tool sets one.
"""

from __future__ import annotations

from typing import Any

SUBJECT_HEADER = "x-podium-subject"
"""The header the gateway sets to the verified subject (``sub``) of the caller's token."""
INTERNAL_CALLER = "internal"
"""The caller of a request with no subject: it came through a trusted door (the ingress on loopback, or
another handler), never through the gateway, which always sets one."""


def caller(ctx: Any) -> str:
    """The verified subject of the request that started this invocation, or ``"internal"``.

    Only the invocation a client started through the gateway carries the subject; a handler that
    another handler called sees ``"internal"``, so pass the actor on in the request of an internal
    handler (it is private, so only your own code can set it).
    """
    headers: dict[str, str] = ctx.request().headers
    for name, value in headers.items():
        if name.lower() == SUBJECT_HEADER and value:
            return value
    return INTERNAL_CALLER
