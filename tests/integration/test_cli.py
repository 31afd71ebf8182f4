"""The ``podium`` command: ``up`` runs and resumes the whole system, ``invoke`` calls handlers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest

from podium.runtime import KeyPair, free_port
from podium.testing import assert_eventually, new_key
from services.common.providers import PaymentGateway
from tests.systems.travel.conftest import trip_request

pytestmark = pytest.mark.engine


class Up:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.ingress = free_port()
        self.admin = free_port()
        self.node = free_port()
        self.gateway = free_port()
        self.travel = free_port()
        self.config = tmp / "pyproject.toml"
        self.config.write_text(
            "[tool.podium]\ndeployments = [\n"
            f'  {{ name = "common", app = "services.common.app:app", port = {free_port()} }},\n'
            f'  {{ name = "travel", app = "services.travel.app:app", port = {self.travel}, workers = 2 }},\n'
            "]\n"
        )
        self.tmp = tmp
        self.runs = 0

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress}"

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        argv = [
            sys.executable,
            "-m",
            "podium",
            "up",
            "--data-dir",
            str(self.data),
            "--config",
            str(self.config),
        ]
        argv += [
            "--ingress-port",
            str(self.ingress),
            "--admin-port",
            str(self.admin),
            "--node-port",
            str(self.node),
            "--gateway-port",
            str(self.gateway),
        ]
        self.runs += 1
        self.output = self.tmp / f"up-{self.runs}.out"
        with self.output.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert_eventually(
                lambda: process.poll() is None and "Podium is up" in self.output.read_text(),
                timeout=90,
                message=f"podium up (output: {self.output})",
            )
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=60)

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podium", "invoke", "--ingress", self.ingress_url, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def podium(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``podium ARGS --data-dir <this stack's data>``."""
        argv = [sys.executable, "-m", "podium", *args, "--data-dir", str(self.data)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def token(self, *scopes: str) -> str:
        made = self.podium("token", "--scope", " ".join(scopes))
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]

    def gateway_post(self, path: str, token: str | None, body: Any = None) -> httpx.Response:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return httpx.post(f"http://127.0.0.1:{self.gateway}{path}", json=body, headers=headers, timeout=30)


def children(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def test_up_serves_the_seed_request_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    up = Up(tmp_path)
    trip_id = new_key("trip")
    with up.running() as process:
        spawned = children(process)
        direct = psutil.Process(process.pid).children()
        assert sorted(p.name() for p in direct if p.name() == "restate-server") == ["restate-server"]
        commands = [" ".join(p.cmdline()) for p in direct]
        assert sum("podium.gateway" in c for c in commands) == 1
        # common: granian + 1 worker; travel: granian + 2 workers (workers = 2 in the config)
        deployments = [p for p in direct if "granian" in " ".join(p.cmdline())]
        assert sorted(len(p.children()) for p in deployments) == [1, 2]
        assert len(spawned) == 1 + 1 + 2 + 3
        text = up.output.read_text()
        assert f"http://127.0.0.1:{up.gateway}" in text
        assert f"http://127.0.0.1:{up.admin}/ui/" in text
        assert "TripOrchestrator" in text

        booked = up.invoke(f"TripOrchestrator/{trip_id}/BookTrip", json.dumps(trip_request()))
        assert booked.returncode == 0, booked.stderr
        assert json.loads(booked.stdout)["status"] == "confirmed"

        # the same booking through the gateway, with a token from `podium token`
        path = f"/TripOrchestrator/{trip_id}/GetBooking"
        assert up.gateway_post(path, None).status_code == 401
        assert up.gateway_post(path, up.token("travel:write")).status_code == 403
        via_gateway = up.gateway_post(path, up.token("travel:read"))
        assert via_gateway.status_code == 200, via_gateway.text
        assert via_gateway.json()["status"] == "confirmed"
        # a private handler: not through the gateway, whatever the token
        closed = up.gateway_post(f"/FlightService/{trip_id}/Cancel", up.token("*:*"), {})
        assert closed.status_code == 404

        # the engine signs its requests; a deployment's port refuses anyone else
        direct = httpx.post(f"http://127.0.0.1:{up.travel}/invoke/TripOrchestrator/GetBooking", content=b"")
        assert direct.status_code == 401
    assert process.returncode == 0
    for child in spawned:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_up_keeps_its_keys_owner_only_and_reuses_them(tmp_path: Path) -> None:
    up = Up(tmp_path)
    with up.running():
        keys = up.data / "keys"
        first = {name: (keys / name).read_bytes() for name in ("request-identity.pem", "token-issuer.pem")}
        assert keys.stat().st_mode & 0o777 == 0o700
        for name in first:
            assert (keys / name).stat().st_mode & 0o777 == 0o600
        old_token = up.token("travel:read")
        secret = up.podium("clients", "add", "travel-web", "--scope", "travel:read")
        assert secret.returncode == 0, secret.stderr
        client_secret = secret.stdout.strip().splitlines()[-1]
        assert (up.data / "auth" / "clients.db").stat().st_mode & 0o777 == 0o600
        issued = httpx.post(
            f"http://127.0.0.1:{up.gateway}/auth/token",
            data={"grant_type": "client_credentials"},
            auth=("travel-web", client_secret),
        )
        assert issued.status_code == 200, issued.text
        client_token = issued.json()["access_token"]
        missing = f"/TripOrchestrator/{new_key('trip')}/GetBooking"
        assert up.gateway_post(missing, client_token).status_code == 404  # through, and no booking
    rotated = up.podium("keys", "rotate", "issuer")
    assert rotated.returncode == 0, rotated.stderr
    with up.running():
        assert (keys / "request-identity.pem").read_bytes() == first["request-identity.pem"]
        assert (keys / "token-issuer.pem").read_bytes() != first["token-issuer.pem"]
        # tokens of the retired key still verify until they expire; new ones use the new key
        assert up.gateway_post(missing, old_token).status_code == 404
        assert up.gateway_post(missing, up.token("travel:read")).status_code == 404
        listed = up.podium("clients", "list")
        assert listed.stdout.split() == ["travel-web", "travel:read"]


def test_token_prints_a_signed_token_on_its_last_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "podium", "token", "--data-dir", str(data)]
    made = subprocess.run(
        [*argv, "--scope", "shop:read shop:write", "--subject", "alice", "--ttl", "15m"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    key = KeyPair.load(data / "keys" / "token-issuer.pem")
    claims = jwt.decode(
        token, key.public_key, algorithms=["EdDSA"], audience="podium-gateway", issuer="podium"
    )
    assert (claims["sub"], claims["scope"]) == ("alice", "shop:read shop:write")
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(token)["kid"] == key.key_id
    bad = subprocess.run([*argv, "--scope", "shop:everything"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "<system>:<kind>" in bad.stderr
    long = subprocess.run([*argv, "--ttl", "2d"], capture_output=True, text=True, timeout=60)
    assert long.returncode == 1
    assert "at most" in long.stderr


def test_invoke_prints_errors_and_exits_nonzero(tmp_path: Path) -> None:
    up = Up(tmp_path)
    with up.running():
        missing = up.invoke(f"TripOrchestrator/{new_key('trip')}/GetBooking")
        assert missing.returncode == 1
        assert "error 404" in missing.stderr
        assert "no booking for trip" in missing.stderr

        bad = up.invoke(f"TripOrchestrator/{new_key('trip')}/BookTrip", '{"customerId": 1}')
        assert bad.returncode == 1
        assert "error 400" in bad.stderr

        sent = up.invoke(f"TripOrchestrator/{new_key('trip')}/BookTrip", json.dumps(trip_request()), "--send")
        assert sent.returncode == 0, sent.stderr
        assert "idempotency-key" in sent.stderr
        assert json.loads(sent.stdout)["status"] == "Accepted"

    unreachable = up.invoke("Svc/Handler", "{}")
    assert unreachable.returncode == 2
    assert "cannot reach the ingress" in unreachable.stderr


def test_up_again_resumes_an_in_flight_booking(tmp_path: Path) -> None:
    up = Up(tmp_path)
    trip_id = new_key("trip")
    payment_id = f"{trip_id}-payment"
    gateway = PaymentGateway(directory=up.data / "providers")

    def booking() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.post(f"{up.ingress_url}/TripOrchestrator/{trip_id}/GetBooking").json()
        return answer

    with up.running():
        body = trip_request(customer_id=new_key("slow"))
        httpx.post(f"{up.ingress_url}/TripOrchestrator/{trip_id}/BookTrip/send", json=body).raise_for_status()
        assert_eventually(lambda: gateway.requests(payment_id) == 1, timeout=30, message="the charge")
        assert booking()["status"] == "pending"
    # Stopped mid-charge. Start again on the same data directory:
    with up.running():
        done = assert_eventually(lambda: (b := booking())["status"] != "pending" and b, timeout=90)
    assert done["status"] == "confirmed"
    assert len([e for e in gateway.effects(kind="charge") if e["key"] == payment_id]) == 1
