"""The upstream side: a pool of keep-alive HTTP/1.1 connections, one request at a time on each.

Admission bounds how many requests are forwarded at once, so the pool never holds more connections than
``max_in_flight``: a request takes an idle connection or opens one, and gives it back once the answer
is read whole. A connection the upstream closes while idle is noticed at once (its protocol sees the
EOF) and dropped from the pool, so a request is never sent on a connection already known to be dead.

A request is sent once and never retried: if the upstream closes the connection or times out before the
answer is complete, the request may have started work, and sending it again could do that work twice.
The caller answers 502 or 504 instead.
"""

from __future__ import annotations

import asyncio
from typing import cast

from podium.gateway._http import MAX_HEAD, ChunkedDecoder, HttpError, Response, parse_response_head

_CONNECT_TIMEOUT = 10.0
_MAX_RESPONSE = 1 << 30
"""Largest response body relayed (the whole answer is held in memory before it is relayed)."""


class UpstreamError(Exception):
    """The upstream could not be reached, closed the connection, or sent a malformed answer (502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the timeout (504)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.alive = True
        self._buf = bytearray()
        self._answer: asyncio.Future[Response] | None = None
        self._head_only = False
        self._response: Response | None = None
        self._chunks: ChunkedDecoder | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, data: bytes, head_only: bool, answer: asyncio.Future[Response]) -> None:
        """Write one request; ``answer`` is resolved with the whole response or an UpstreamError."""
        assert self.transport is not None
        self._answer = answer
        self._head_only = head_only
        self._response = None
        self._chunks = None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._answer is None or self._answer.done():
            self._fail(UpstreamError("the upstream sent data that answers no request"))
            return
        try:
            response = self._parse()
        except HttpError as exc:
            self._fail(UpstreamError(f"the upstream sent a malformed answer: {exc.message}"))
            return
        if response is not None:
            answer, self._answer = self._answer, None
            if not response.keep_alive or self._buf:
                self.close()  # data past the answer means the framing cannot be trusted
            answer.set_result(response)

    def _parse(self) -> Response | None:
        while self._response is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise HttpError(502, "response head too large")
                return None
            response = parse_response_head(bytes(self._buf[:end]), self._head_only)
            del self._buf[: end + 4]
            if response.status >= 200:
                self._response = response  # interim (1xx) answers are skipped
        response = self._response
        if response.framing == -1:
            if self._chunks is None:
                self._chunks = ChunkedDecoder(_MAX_RESPONSE)
            if not self._chunks.feed(self._buf):
                return None
            response.body = self._chunks.body()
        elif response.framing is None:
            if len(self._buf) > _MAX_RESPONSE:
                raise HttpError(502, "response body too large")
            return None  # read until the upstream closes
        elif response.framing:
            if len(self._buf) < response.framing:
                return None
            response.body = bytes(self._buf[: response.framing])
            del self._buf[: response.framing]
        return response

    def eof_received(self) -> bool | None:
        response = self._response
        if self._answer is not None and response is not None and response.framing is None:
            response.body = bytes(self._buf)
            self._buf.clear()
            answer, self._answer = self._answer, None
            if not answer.done():
                answer.set_result(response)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._pool.forget(self)
        if self._answer is not None and not self._answer.done():
            started = "in the middle of its answer" if self._response or self._buf else "before answering"
            self._answer.set_exception(UpstreamError(f"the upstream closed the connection {started}"))
        self._answer = None

    def _fail(self, error: UpstreamError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self._answer = None
        self.close()

    def close(self) -> None:
        """Close the connection; it is never reused."""
        self.alive = False
        self._pool.forget(self)
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one upstream ``host:port``.

    Args:
        host: The upstream's host.
        port: The upstream's port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def exchange(self, data: bytes, *, head_only: bool, timeout: float) -> Response:
        """Send one request (its encoded bytes) and return the whole answer.

        Raises:
            UpstreamError: The upstream could not be reached, closed the connection before the answer was
                complete, or answered with something that is not HTTP/1.1.
            UpstreamTimeout: No complete answer within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        connection = await self._connection(loop, timeout)
        answer: asyncio.Future[Response] = loop.create_future()
        timer = loop.call_later(timeout, _time_out, answer, timeout)
        connection.send(data, head_only, answer)
        try:
            response = await answer
        except BaseException:
            connection.close()  # timed out, failed or cancelled mid-exchange: the connection is spent
            raise
        finally:
            timer.cancel()
        if connection.alive:
            self._idle.append(connection)
        return response

    async def _connection(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _Connection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used is the least likely to have timed out
            if (
                connection.alive
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                return connection
        try:
            async with asyncio.timeout(min(timeout, _CONNECT_TIMEOUT)):
                _, protocol = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except TimeoutError:
            raise UpstreamError(
                f"could not connect to the upstream {self.host}:{self.port}: timed out"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"could not connect to the upstream {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self._all.add(protocol)
        return protocol

    def forget(self, connection: _Connection) -> None:
        """Drop a connection that closed or must not be reused."""
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        """Close every connection (in-flight exchanges fail with UpstreamError)."""
        for connection in list(self._all):
            connection.close()
        self._idle.clear()


def _time_out(answer: asyncio.Future[Response], timeout: float) -> None:
    if not answer.done():
        answer.set_exception(UpstreamTimeout(f"the upstream did not answer within {timeout:g} s"))
