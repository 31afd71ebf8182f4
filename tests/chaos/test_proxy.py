"""The faulty proxy on its own, in front of an echo server (no engine): each fault does what it says."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from podium.testing import assert_eventually
from tests.chaos.proxy import Fault, FaultyProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultyProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultyProxy(f"127.0.0.1:{server.server_address[1]}") as running:
            yield running
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: FaultyProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
    return sock


def echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def closed(sock: socket.socket) -> bool:
    """The proxy closed (reset) this connection."""
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def test_pass_and_delay_carry_every_byte_in_order(proxy: FaultyProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, many chunks
    with connect(proxy) as sock:
        assert echo(sock, payload) == payload
        proxy.delay(timedelta(milliseconds=30))
        assert proxy.fault is Fault.DELAY
        assert echo(sock, payload[::-1]) == payload[::-1]
        proxy.heal()
        assert echo(sock, b"after") == b"after"
    assert proxy.stats().forwarded_bytes == 2 * (2 * len(payload) + 5)


def test_cut_resets_open_connections_and_lets_new_ones_through(proxy: FaultyProxy) -> None:
    with connect(proxy) as first:
        assert echo(first, b"hello") == b"hello"
        proxy.cut()
        assert closed(first)
    assert proxy.stats().closed_by_fault == 1
    with connect(proxy) as second:
        assert echo(second, b"again") == b"again"


def test_drop_resets_every_connection_until_healed(proxy: FaultyProxy) -> None:
    with connect(proxy) as open_one:
        assert echo(open_one, b"x") == b"x"
        proxy.drop()
        assert closed(open_one)
    for _ in range(3):
        with connect(proxy) as refused:
            assert closed(refused)
    assert proxy.stats().dropped == 3
    proxy.heal()
    with connect(proxy) as healed:
        assert echo(healed, b"back") == b"back"


def test_blackhole_reads_everything_answers_nothing_and_heal_resets_what_lost_bytes(
    proxy: FaultyProxy,
) -> None:
    with connect(proxy) as before, connect(proxy) as untouched:
        assert echo(before, b"a") == b"a"
        assert echo(untouched, b"b") == b"b"
        proxy.blackhole()
        forwarded = proxy.stats().forwarded_bytes
        before.sendall(b"into the void")
        with connect(proxy) as during:
            during.sendall(b"nobody answers")
            assert_eventually(lambda: proxy.stats().discarded_bytes == 27, message="the bytes to vanish")
            assert proxy.stats().forwarded_bytes == forwarded
            proxy.heal()
            assert closed(during)
        assert closed(before)
        # A connection that lost nothing in the blackhole carries on.
        assert echo(untouched, b"still here") == b"still here"
    with connect(proxy) as after:
        assert echo(after, b"healed") == b"healed"
