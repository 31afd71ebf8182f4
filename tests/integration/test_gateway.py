"""The admission-control gateway in front of a real engine's ingress.

Slow requests are ``GatewayLab/Sleep`` (a durable ``ctx.sleep``); every Sleep first ticks the counter
``GatewayCounter/{key}``, so a count of 0 proves a request never reached the engine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest
import restate
from pydantic import Field
from restate import Context, ObjectContext, ObjectSharedContext

import podium.gateway
from podium import Model, Service, VirtualObject, call
from podium.gateway import Gateway
from podium.runtime import free_port
from podium.testing import PodiumEnv, assert_eventually, new_key

pytestmark = pytest.mark.engine

# -- the app -----------------------------------------------------------------------------------------------

counter = VirtualObject("GatewayCounter")


@counter.handler("Hit")
async def hit(ctx: ObjectContext) -> int:
    count = (await ctx.get("count", type_hint=int) or 0) + 1
    ctx.set("count", count)
    return count


@counter.handler("Count", kind="shared")
async def count(ctx: ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


class Nap(Model):
    key: str
    ms: int = Field(ge=0)
    pad: str = ""


class Woke(Model):
    key: str
    slept_ms: int
    pad_length: int
    headers: dict[str, str]


lab = Service("GatewayLab")


@lab.handler("Sleep")
async def sleep(ctx: Context, nap: Nap) -> Woke:
    await call(ctx, hit, None, key=nap.key)
    if nap.ms:
        await ctx.sleep(timedelta(milliseconds=nap.ms))
    seen = {k.lower(): v for k, v in ctx.request().headers.items() if k.lower().startswith("x-")}
    return Woke(key=nap.key, slept_ms=nap.ms, pad_length=len(nap.pad), headers=seen)


app = restate.app(services=[counter, lab])


@pytest.fixture
def podium_app() -> Any:
    return app


# -- helpers -----------------------------------------------------------------------------------------------


class ThreadedGateway:
    """A gateway on an event loop of its own, in a background thread."""

    def __init__(self, upstream: str, **options: Any) -> None:
        self.gateway = Gateway(upstream, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(grace=1.0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self.gateway.url

    def stats(self) -> dict[str, int]:
        response = httpx.get(f"{self.url}/podium/gateway/stats", timeout=5)
        assert response.status_code == 200
        stats: dict[str, int] = response.json()
        return stats


@pytest.fixture
def gateways(podium_env: PodiumEnv) -> Iterator[Callable[..., ThreadedGateway]]:
    """Opens gateways (in front of the session's ingress unless told otherwise), closed after the test."""
    with ExitStack() as stack:

        def open_gateway(upstream: str | None = None, **options: Any) -> ThreadedGateway:
            options.setdefault("max_in_flight", 8)
            return stack.enter_context(ThreadedGateway(upstream or podium_env.ingress_url, **options))

        yield open_gateway


def nap(key: str, ms: int = 0, **extra: Any) -> dict[str, Any]:
    return {"key": key, "ms": ms, **extra}


def hits(env: PodiumEnv, key: str) -> int:
    result: int = env.call(f"/GatewayCounter/{key}/Count")
    return result


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/GatewayLab/Sleep", json=body, timeout=30, **kwargs)


def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while read_until_close and (chunk := sock.recv(65536)):
            chunks.append(chunk)
        return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def split_responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each response on a connection (framed by content-length)."""
    answers = []
    while raw:
        status, headers, rest = split_response(raw)
        length = int(headers["content-length"])
        answers.append((status, rest[:length]))
        raw = rest[length:]
    return answers


# -- passing through ---------------------------------------------------------------------------------------


def test_the_public_api_is_pinned() -> None:
    assert sorted(podium.gateway.__all__) == ["Gateway", "GatewayStats", "STATS_PATH"]


def test_requests_pass_through_with_body_status_and_headers(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways()
    key = new_key()
    response = post(gateway.url, nap(key, pad="é" * 10), headers={"x-podium-test": "abc"})
    assert response.status_code == 200, response.text
    woke = response.json()
    assert (woke["key"], woke["padLength"]) == (key, 10)
    assert woke["headers"]["x-podium-test"] == "abc"
    assert woke["headers"]["x-forwarded-for"] == "127.0.0.1"

    bad = {"key": key, "ms": "soon"}
    direct, proxied = post(podium_env.ingress_url, bad), post(gateway.url, bad)
    assert proxied.status_code == direct.status_code == 400
    assert proxied.json()["message"] == direct.json()["message"]
    assert "ms" in proxied.json()["message"]
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert set(proxied.headers) - {"connection"} == set(direct.headers) - {"connection"}
    assert hits(podium_env, key) == 1


def test_an_idempotency_key_through_the_gateway_runs_the_handler_once(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway, key = gateways(), new_key()
    headers = {"idempotency-key": new_key("idem")}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:  # one keep-alive connection
        answers = [client.post(f"/GatewayCounter/{key}/Hit", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json() for a in answers] == [1, 1, 1]
    assert hits(podium_env, key) == 1


def test_a_chunked_request_body_is_forwarded_whole(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway, key = gateways(), new_key()
    payload = json.dumps(nap(key, pad="x" * 50_000)).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 7_000):
            yield payload[start : start + 7_000]

    response = httpx.post(
        f"{gateway.url}/GatewayLab/Sleep",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert response.json()["padLength"] == 50_000


def test_pipelined_requests_are_answered_in_order(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway, key = gateways(), new_key()
    one = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode()
    last = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
    raw = raw_exchange(gateway.gateway.port, one + one + last)
    assert split_responses(raw) == [(200, b"1"), (200, b"2"), (200, b"3")]


# -- admission ---------------------------------------------------------------------------------------------


def test_the_excess_is_refused_at_once_and_never_reaches_the_engine(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(max_in_flight=2, max_queue=0, retry_after=1.5)
    slow_ms = 2_000
    keys = [new_key() for _ in range(3)]
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(post, gateway.url, nap(k, slow_ms)) for k in keys[:2]]
        assert_eventually(lambda: gateway.stats()["inFlight"] == 2, message="two requests in flight")
        started = time.monotonic()
        refused = post(gateway.url, nap(keys[2], 0))
        elapsed = time.monotonic() - started
        assert [f.result().status_code for f in slow] == [200, 200]
    assert refused.status_code == 503
    assert elapsed < slow_ms / 1000 / 2  # well under the slow handler's duration
    assert refused.headers["retry-after"] == "2"  # whole seconds, rounded up
    body = refused.json()
    assert body["message"].startswith("overloaded:")
    assert "try again after 2 s" in body["message"]
    assert (body["inFlight"], body["limit"]) == (2, 2)
    assert [hits(podium_env, k) for k in keys] == [1, 1, 0]
    stats = gateway.stats()
    assert {k: stats[k] for k in ("admitted", "rejected", "completed", "upstreamErrors", "inFlight")} == {
        "admitted": 2,
        "rejected": 1,
        "completed": 2,
        "upstreamErrors": 0,
        "inFlight": 0,
    }
    assert (stats["maxInFlight"], stats["maxQueue"], stats["queued"]) == (2, 0, 0)


def test_a_queued_request_proceeds_when_a_slot_frees(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=1, queue_timeout=15)
    first, second = new_key(), new_key()
    finished: dict[str, float] = {}

    def timed(key: str, ms: int) -> httpx.Response:
        response = post(gateway.url, nap(key, ms))
        finished[key] = time.monotonic()
        return response

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(timed, first, 800)
        assert_eventually(lambda: gateway.stats()["inFlight"] == 1, message="the first in flight")
        queued = pool.submit(timed, second, 0)
        assert_eventually(lambda: gateway.stats()["queued"] == 1, message="the second queued")
        assert hits(podium_env, second) == 0  # waiting at the gateway, not in the engine
        assert (slow.result().status_code, queued.result().status_code) == (200, 200)
    assert finished[second] >= finished[first]
    assert hits(podium_env, second) == 1
    assert gateway.stats()["rejected"] == 0


def test_a_request_that_waits_too_long_in_the_queue_is_refused(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=4, queue_timeout=0.3)
    late = new_key()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, gateway.url, nap(new_key(), 1_500))
        assert_eventually(lambda: gateway.stats()["inFlight"] == 1, message="one request in flight")
        started = time.monotonic()
        refused = post(gateway.url, nap(late, 0))
        elapsed = time.monotonic() - started
        assert slow.result().status_code == 200
    assert refused.status_code == 503
    assert 0.2 < elapsed < 1.2
    assert "no slot freed up within 0.3 s" in refused.json()["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert hits(podium_env, late) == 0


def test_a_client_that_goes_away_frees_its_queue_place_but_its_slot_only_when_the_engine_answers(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=1, queue_timeout=30)
    slow = nap(new_key(), 2_000)
    idempotency_key = new_key("idem")
    body = json.dumps(slow).encode()
    request = (
        f"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"idempotency-key: {idempotency_key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    port = gateway.gateway.port
    with socket.create_connection(("127.0.0.1", port)) as in_flight:
        in_flight.sendall(request)
        assert_eventually(lambda: gateway.stats()["inFlight"] == 1, message="one request in flight")
        with socket.create_connection(("127.0.0.1", port)) as waiting:
            waiting.sendall(request)
            assert_eventually(lambda: gateway.stats()["queued"] == 1, message="one request queued")
        assert_eventually(lambda: gateway.stats()["queued"] == 0, message="the queue place freed")
    left = time.monotonic()
    assert_eventually(lambda: gateway.stats()["abandoned"] == 1, message="the client counted as gone")
    # Its invocation still runs in the engine, so its slot stays taken until the engine answers.
    assert gateway.stats()["inFlight"] == 1
    assert_eventually(lambda: gateway.stats()["inFlight"] == 0, timeout=10, message="the slot freed")
    assert time.monotonic() - left > 0.5
    assert post(gateway.url, nap(new_key(), 0)).status_code == 200
    stats = gateway.stats()
    assert (stats["admitted"], stats["abandoned"], stats["completed"], stats["rejected"]) == (2, 1, 2, 0)
    assert hits(podium_env, slow["key"]) == 1  # the abandoned request ran once, the queued one never


# -- refusals and errors of the gateway's own -------------------------------------------------------------


def test_an_oversized_body_is_refused_with_413(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(max_body=1024)
    big = json.dumps(nap(new_key(), pad="x" * 2048)).encode()
    response = httpx.post(f"{gateway.url}/GatewayLab/Sleep", content=big, timeout=10)
    assert response.status_code == 413
    assert "over the limit of 1024 bytes" in response.json()["message"]
    chunked = httpx.post(f"{gateway.url}/GatewayLab/Sleep", content=iter([big[:1000], big[1000:]]))
    assert chunked.status_code == 413
    # With Expect: 100-continue the refusal comes before the body is sent.
    raw = raw_exchange(
        gateway.gateway.port,
        b"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert gateway.stats()["admitted"] == 0


def test_expect_100_continue_is_answered_then_the_body_forwarded(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway, key = gateways(), new_key()
    body = json.dumps(nap(key)).encode()
    with socket.create_connection(("127.0.0.1", gateway.gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\nconnection: close\r\n"
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    status, _, answer = split_response(raw)
    assert status == 200
    assert json.loads(answer)["key"] == key


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\ncontent-length: ten\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 505),
    ],
)
def test_a_malformed_request_is_answered_with_a_json_message(
    gateways: Callable[..., ThreadedGateway], request_bytes: bytes, status: int
) -> None:
    gateway = gateways(upstream=f"http://127.0.0.1:{free_port()}")
    answered, headers, body = split_response(raw_exchange(gateway.gateway.port, request_bytes))
    assert answered == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["message"]
    assert gateway.stats()["admitted"] == 0


def test_an_upstream_that_is_down_answers_502(gateways: Callable[..., ThreadedGateway]) -> None:
    gateway = gateways(upstream=f"http://127.0.0.1:{free_port()}")
    response = post(gateway.url, nap("k"))
    assert response.status_code == 502
    assert "could not connect to the upstream" in response.json()["message"]
    stats = gateway.stats()
    assert (stats["admitted"], stats["upstreamErrors"], stats["inFlight"]) == (1, 1, 0)


def test_an_upstream_that_closes_mid_answer_answers_502(gateways: Callable[..., ThreadedGateway]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def half_an_answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")

        threading.Thread(target=half_an_answer, daemon=True).start()
        gateway = gateways(upstream=f"http://127.0.0.1:{listener.getsockname()[1]}")
        response = post(gateway.url, nap("k"))
    assert response.status_code == 502
    assert "closed the connection in the middle of its answer" in response.json()["message"]
    assert gateway.stats()["upstreamErrors"] == 1


def test_an_upstream_that_does_not_answer_in_time_answers_504(
    podium_env: PodiumEnv, gateways: Callable[..., ThreadedGateway]
) -> None:
    gateway = gateways(upstream_timeout=0.3)
    slow, headers = nap(new_key(), 800), {"idempotency-key": new_key("idem")}
    response = post(gateway.url, slow, headers=headers)
    assert response.status_code == 504
    assert "did not answer within 0.3 s" in response.json()["message"]
    assert gateway.stats()["inFlight"] == 0
    assert post(podium_env.ingress_url, slow, headers=headers).is_success  # the invocation carried on


def test_the_stats_endpoint_is_answered_by_the_gateway(gateways: Callable[..., ThreadedGateway]) -> None:
    gateway = gateways(upstream=f"http://127.0.0.1:{free_port()}", max_in_flight=3, max_queue=5)
    stats = gateway.stats()
    assert stats == {
        "inFlight": 0,
        "queued": 0,
        "maxInFlight": 3,
        "maxQueue": 5,
        "admitted": 0,
        "rejected": 0,
        "completed": 0,
        "upstreamErrors": 0,
        "abandoned": 0,
    }
    assert httpx.post(f"{gateway.url}/podium/gateway/stats").status_code == 405


# -- the command -------------------------------------------------------------------------------------------


def test_the_command_serves_until_sigterm(podium_env: PodiumEnv) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "podium.gateway", "--upstream", podium_env.ingress_url),
            *("--port", str(port), "--max-in-flight", "4", "--max-queue", "2", "--queue-timeout", "0.5"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/podium/gateway/stats").json()["maxQueue"] == 2
            except httpx.HTTPError:
                return False

        assert_eventually(up, timeout=15, message="the gateway command to listen")
        assert post(url, nap(new_key())).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        output = process.communicate()[0].decode()
    assert "gateway on" in output
