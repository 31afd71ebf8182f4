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

import httptools

from podium.gateway._http import MAX_HEAD, Response

_CONNECT_TIMEOUT = 10.0


class UpstreamError(Exception):
    """The upstream could not be reached, closed the connection, or sent a malformed answer (502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the timeout (504)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one exchange at a time.

    Answers are parsed by llhttp (httptools' response parser); the parser's callbacks build the
    :class:`Response` a piece at a time.
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.alive = True
        self._answer: asyncio.Future[Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._reason = ""
        self._response: Response | None = None
        self._until_close = False
        self._complete = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, data: bytes, answer: asyncio.Future[Response]) -> None:
        """Write one request; ``answer`` is resolved with the whole response or an UpstreamError."""
        assert self.transport is not None
        self._answer = answer
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._body, self._size, self._head_size, self._reason = [], [], 0, 0, ""
        self._response, self._until_close, self._complete = None, False, False
        self.transport.write(data)

    # -- llhttp callbacks ------------------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise UpstreamError("the upstream's answer has a head over the size limit")
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers = []
            return
        keep_alive = self._parser.should_keep_alive()
        framed = any(name in ("content-length", "transfer-encoding") for name, _ in self._headers)
        self._until_close = not framed and status not in (204, 304)
        self._response = Response(status, self._reason, self._headers, keep_alive and not self._until_close)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._pool.max_response:
            raise UpstreamError(f"the upstream's answer is over the limit of {self._pool.max_response} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._response is not None:
            self._complete = True

    # -- asyncio callbacks -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self._fail(UpstreamError("the upstream sent data that answers no request"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, UpstreamError) else UpstreamError(str(exc)))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamError(f"the upstream sent a malformed answer: {exc!r}"))
            return
        if self._complete:
            self._finish()

    def _finish(self) -> None:
        response, answer = self._response, self._answer
        assert response is not None
        assert answer is not None
        response.body = b"".join(self._body)
        self._answer = None
        if not response.keep_alive:
            self.close()
        if not answer.done():
            answer.set_result(response)

    def eof_received(self) -> bool | None:
        if self._answer is not None and self._response is not None and self._until_close:
            self._finish()  # the body of an answer without a length ends when the upstream closes
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._pool.forget(self)
        if self._answer is not None and not self._answer.done():
            started = "in the middle of its answer" if self._response or self._headers else "before answering"
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
        max_response: Largest answer body relayed, in bytes (answers are held whole in memory).
    """

    def __init__(self, host: str, port: int, *, max_response: int) -> None:
        self.host = host
        self.port = port
        self.max_response = max_response
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def exchange(self, data: bytes, *, timeout: float) -> Response:
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
        connection.send(data, answer)
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
