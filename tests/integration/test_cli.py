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
import psutil
import pytest

from podium.runtime import free_port
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
        self.config = tmp / "pyproject.toml"
        self.config.write_text(
            "[tool.podium]\ndeployments = [\n"
            f'  {{ name = "common", app = "services.common.app:app", port = {free_port()} }},\n'
            f'  {{ name = "travel", app = "services.travel.app:app", port = {free_port()}, workers = 2 }},\n'
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

        # the same booking through the gateway: forwarded to the ingress, answered from the object
        via_gateway = httpx.post(
            f"http://127.0.0.1:{up.gateway}/TripOrchestrator/{trip_id}/GetBooking", timeout=30
        )
        assert via_gateway.status_code == 200, via_gateway.text
        assert via_gateway.json()["status"] == "confirmed"
    assert process.returncode == 0
    for child in spawned:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


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
