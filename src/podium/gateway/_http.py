"""HTTP/1.1 messages as the gateway holds them, and how it writes them.

Parsing is llhttp's (the parser of Node.js), through httptools: strict by default, it refuses what a
proxy must never guess about (a line ending that is not CRLF, control characters in a header value,
``content-length`` with ``transfer-encoding``, two ``content-length`` headers, whitespace before a colon,
folded lines), because a proxy and its upstream that frame a message differently can be made to smuggle
one request inside another. The gateway refuses a few more things on top (a transfer coding other than
``chunked``, a target that is not a path, heads over :data:`MAX_HEAD`).

Writing is only joining lines: every header the gateway writes is either its own or one llhttp parsed
and accepted. Bodies are read whole and forwarded with a ``content-length``: the gateway never streams,
so a message is either relayed complete or answered with an error of the gateway's own.
"""

from __future__ import annotations

import json
from typing import Any

MAX_HEAD = 64 * 1024
"""Largest request line plus headers, or status line plus headers, in bytes."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus ``proxy-*``."""

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A message that cannot be accepted; the gateway answers ``status`` with ``message`` and closes.

    Args:
        status: The status code to answer with.
        message: Why, for the JSON body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_hop_by_hop(name: str) -> bool:
    """Whether a (lowercased) header name belongs to one connection only."""
    return name in HOP_BY_HOP or name.startswith("proxy-")


def connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    """The lowercased options named by ``connection`` headers (each names another hop-by-hop header)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(part.strip().lower() for part in value.split(",") if part.strip())
    return tokens


class Request:
    """A request as received from a client, its body read whole."""

    __slots__ = ("body", "expect_continue", "headers", "keep_alive", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        """The method, as sent."""
        self.target = target
        """The request target (origin form: path and query)."""
        self.version = version
        """``HTTP/1.1`` or ``HTTP/1.0``."""
        self.headers = headers
        """Every header, names lowercased, in order."""
        self.body = b""
        """The body, once read."""
        self.keep_alive = True
        """Whether the client wants the connection kept after the answer."""
        self.expect_continue = False
        """Whether the client waits for ``100 Continue`` before sending the body."""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase), if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response:
    """A response as received from the upstream, its body read whole."""

    __slots__ = ("body", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], keep_alive: bool) -> None:
        self.status = status
        """The status code."""
        self.reason = reason
        """The reason phrase, as sent."""
        self.headers = headers
        """Every header, names lowercased, in order."""
        self.keep_alive = keep_alive
        """Whether the upstream connection can carry another request."""
        self.body = b""
        """The body, once read."""


def encode_head(first_line: str, headers: list[tuple[str, str]]) -> bytes:
    """A message head: the first line, the headers, and the blank line."""
    lines = [first_line]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def json_response(
    status: int,
    payload: dict[str, Any],
    *,
    keep_alive: bool,
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...] | None = None,
) -> bytes:
    """A complete response of the gateway's own, with a JSON body."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    headers.extend(extra or ())
    if not keep_alive:
        headers.append(("connection", "close"))
    return encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", headers) + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim answer to ``Expect: 100-continue``."""
