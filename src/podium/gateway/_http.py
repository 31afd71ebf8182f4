"""Just enough HTTP/1.1 for a reverse proxy: incremental parsing of requests and responses, and encoding.

Messages are parsed from the front of a ``bytearray`` that the connection's protocol appends to, so the
same code serves a request that arrives in one segment (the common case, parsed in one pass) and one
that trickles in. Bodies are read whole, framed by ``content-length`` or chunked, and forwarded with a
``content-length``: the gateway never streams, so a message is either relayed complete or answered with
an error of the gateway's own.

Header names are lowercased on parsing and sent lowercased (HTTP field names are case-insensitive).
Anything ambiguous about framing is refused rather than guessed (both ``content-length`` and
``transfer-encoding``, differing lengths, whitespace before a colon, folded lines), because a proxy and
its upstream that frame a message differently can be made to smuggle one request inside another.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_HEAD = 64 * 1024
"""Largest request line plus headers, or status line plus headers, in bytes."""
_MAX_LINE = 4096
"""Largest chunk-size or trailer line."""

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

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_TARGET = re.compile(rb"[\x21-\x7e]+")

REASONS = {
    100: "Continue",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    417: "Expectation Failed",
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


def _parse_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    """Parse header lines into ``(lowercased name, value)`` pairs, refusing anything ambiguous."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "folded header lines are not accepted")
            raise HttpError(400, f"malformed header line {line[:60]!r}")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return headers


def _body_framing(headers: list[tuple[str, str]], limit: int | None) -> int | None:
    """The body's length from ``content-length``/``transfer-encoding``: bytes, or -1 for chunked.

    None means the headers say nothing about a body. ``limit`` (requests only) refuses a declared length
    above it with 413 before any of the body is read.
    """
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == "content-length":
            for part in value.split(","):  # "5, 5" is tolerated by RFC 9110; "5, 6" is not
                part = part.strip()
                if _DIGITS.fullmatch(part) is None:
                    raise HttpError(400, f"content-length {value!r} is not a number")
                if length is not None and int(part) != length:
                    raise HttpError(400, "conflicting content-length headers")
                length = int(part)
        elif name == "transfer-encoding":
            codings = [c.strip().lower() for c in value.split(",") if c.strip()]
            if codings != ["chunked"] or chunked:
                raise HttpError(501, f"transfer-encoding {value!r} is not supported (only chunked)")
            chunked = True
    if chunked:
        if length is not None:
            raise HttpError(400, "both content-length and transfer-encoding: refusing an ambiguous body")
        return -1
    if length is not None and limit is not None and length > limit:
        raise HttpError(413, f"request body of {length} bytes is over the limit of {limit} bytes")
    return length


class Request:
    """A request as received from a client, its body read whole."""

    __slots__ = ("body", "expect_continue", "framing", "headers", "keep_alive", "method", "target", "version")

    def __init__(
        self, method: str, target: str, version: str, headers: list[tuple[str, str]], framing: int | None
    ) -> None:
        self.method = method
        """The method, as sent."""
        self.target = target
        """The request target (origin form: path and query)."""
        self.version = version
        """``HTTP/1.1`` or ``HTTP/1.0``."""
        self.headers = headers
        """Every header, names lowercased, in order."""
        self.framing = framing
        """Body length, -1 for chunked, None for no body."""
        self.body = b""
        """The body, once read."""
        tokens = connection_tokens(headers)
        self.keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        """Whether the client wants the connection kept after the answer."""
        self.expect_continue = False
        """Whether the client waits for ``100 Continue`` before sending the body."""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


def parse_request_head(head: bytes, max_body: int) -> Request:
    """Parse a request line and headers (``head`` excludes the blank line that ends them)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or _TOKEN.fullmatch(parts[0]) is None or _TARGET.fullmatch(parts[1]) is None:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if not version.startswith(b"HTTP/"):
            raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
        raise HttpError(505, f"{version.decode('latin-1')} is not supported; use HTTP/1.1")
    if not target.startswith(b"/"):
        raise HttpError(400, "the request target must be a path (origin form), such as /Service/handler")
    headers = _parse_fields(lines[1:])
    request = Request(
        method.decode("ascii"),
        target.decode("ascii"),
        version.decode("ascii"),
        headers,
        _body_framing(headers, max_body),
    )
    for name, value in headers:
        if name == "expect":
            if value.lower() != "100-continue":
                raise HttpError(417, f"expectation {value!r} is not supported (only 100-continue)")
            request.expect_continue = request.version == "HTTP/1.1"
    return request


class Response:
    """A response as received from the upstream, its body read whole."""

    __slots__ = ("body", "framing", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], keep_alive: bool) -> None:
        self.status = status
        """The status code."""
        self.reason = reason
        """The reason phrase, as sent."""
        self.headers = headers
        """Every header, names lowercased, in order."""
        self.keep_alive = keep_alive
        """Whether the upstream connection can carry another request."""
        self.framing: int | None = None
        """Body length, -1 for chunked, None for read-until-close; 0 when there is no body."""
        self.body = b""
        """The body, once read."""


def parse_response_head(head: bytes, head_only: bool) -> Response:
    """Parse a status line and headers; ``head_only`` when answering a HEAD request (no body follows)."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise HttpError(502, f"malformed status line {lines[0][:80]!r}")
    headers = _parse_fields(lines[1:])
    tokens = connection_tokens(headers)
    keep_alive = "keep-alive" in tokens if version == b"HTTP/1.0" else "close" not in tokens
    response = Response(int(code), reason.decode("latin-1"), headers, keep_alive)
    if head_only or response.status < 200 or response.status in (204, 304):
        response.framing = 0
    else:
        response.framing = _body_framing(headers, None)
        if response.framing is None:
            response.keep_alive = False  # the body ends when the upstream closes
    return response


class ChunkedDecoder:
    """Decodes a chunked body from the front of a buffer, across as many calls as it takes to arrive.

    Args:
        limit: Refuse (413) a body larger than this many bytes.
    """

    __slots__ = ("_parts", "_remaining", "_state", "limit", "size")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._parts: list[bytes] = []
        self._state = self._SIZE
        self._remaining = 0

    def body(self) -> bytes:
        """The decoded body (after :meth:`feed` returned True)."""
        return b"".join(self._parts)

    def feed(self, buf: bytearray) -> bool:
        """Consume what can be consumed from ``buf``; True once the last chunk and trailers are read."""
        while True:
            if self._state == self._DATA:
                if not buf:
                    return False
                take = min(len(buf), self._remaining)
                self._parts.append(bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
                if self._remaining:
                    return False
                self._state = self._DATA_END
                continue
            if self._state == self._DATA_END:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise HttpError(400, "malformed chunked body: chunk data not followed by CRLF")
                del buf[:2]
                self._state = self._SIZE
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_LINE:
                    raise HttpError(400, "malformed chunked body: line too long")
                return False
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._state == self._TRAILER:
                if not line:
                    return True  # trailers are dropped: they describe this hop's framing only
                continue
            size_text = line.partition(b";")[0].strip(b" \t")  # chunk extensions are ignored
            if _HEX.fullmatch(size_text) is None:
                raise HttpError(400, f"malformed chunked body: chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                self._state = self._TRAILER
                continue
            if self.size + size > self.limit:
                raise HttpError(413, f"request body is over the limit of {self.limit} bytes")
            self.size += size
            self._remaining = size
            self._state = self._DATA


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
    extra: list[tuple[str, str]] | None = None,
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
