"""The ``podium`` command: ``up`` runs and resumes the whole system, ``invoke`` calls handlers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest

from podium.runtime import KeyPair, UnitState
from podium.testing import assert_eventually, new_key
from services.common.providers import PaymentGateway
from tests.integration.otlp import receiving
from tests.integration.stack import Up, alive, children
from tests.systems.travel.conftest import trip_request

pytestmark = pytest.mark.engine


def test_up_serves_the_seed_request_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    up = Up(tmp_path)
    trip_id = new_key("trip")
    with up.running() as process:
        spawned = children(process)
        direct = psutil.Process(process.pid).children()
        assert sorted(p.name() for p in direct if p.name() == "restate-server") == ["restate-server"]
        commands = [" ".join(p.cmdline()) for p in direct]
        assert sum("podium.gateway" in c for c in commands) == 1
        assert sum("podium.dashboard" in c for c in commands) == 1
        # common: granian + 1 worker; travel: granian + 2 workers (workers = 2 in the config)
        deployments = [p for p in direct if "granian" in " ".join(p.cmdline())]
        assert sorted(len(p.children()) for p in deployments) == [1, 2]
        assert len(spawned) == 1 + 1 + 1 + 2 + 3
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

        # the dashboard: the printed link signs a browser in, and then it shows the booking's saga
        link = re.search(rf"dashboard (http://127\.0\.0\.1:{up.dashboard}/\?token=\S+)", text)
        assert link is not None, text
        with httpx.Client(timeout=10) as browser:
            signed_in = browser.get(link.group(1))
            assert signed_in.status_code == 303
            assert signed_in.headers["location"] == "/"
            cookie = signed_in.cookies["podium_dashboard"]
        with httpx.Client(timeout=10, cookies={"podium_dashboard": cookie}) as browser:
            sagas = browser.get(f"http://127.0.0.1:{up.dashboard}/api/sagas", params={"key": trip_id}).json()
        assert [(s["service"], s["status"]) for s in sagas] == [("TripOrchestrator", "completed")]

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


def status_rows(output: str) -> dict[str, list[str]]:
    """``podium status``'s table: each unit's cells, by name."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    rows: dict[str, list[str]] = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def slow_booking_in_flight(up: Up, gateway: PaymentGateway) -> str:
    """Start a booking whose charge takes 3 s and return its trip id once the charge has begun."""
    trip_id = new_key("trip")
    body = trip_request(customer_id=new_key("slow"))
    httpx.post(f"{up.ingress_url}/TripOrchestrator/{trip_id}/BookTrip/send", json=body).raise_for_status()
    assert_eventually(lambda: gateway.requests(f"{trip_id}-payment") == 1, timeout=30, message="the charge")
    return trip_id


def finished_booking(up: Up, trip_id: str) -> dict[str, Any]:
    def booking() -> dict[str, Any]:
        try:
            answer = httpx.post(f"{up.ingress_url}/TripOrchestrator/{trip_id}/GetBooking", timeout=10)
        except httpx.HTTPError:
            return {"status": "unreachable"}
        body: dict[str, Any] = (
            answer.json() if answer.is_success else {"status": f"http {answer.status_code}"}
        )
        return body

    done: dict[str, Any] = assert_eventually(
        lambda: (b := booking())["status"] not in ("pending", "unreachable") and b,
        timeout=90,
        message="the booking to finish",
    )
    return done


def charges(gateway: PaymentGateway, trip_id: str) -> int:
    return len([e for e in gateway.effects(kind="charge") if e["key"] == f"{trip_id}-payment"])


def test_up_replaces_a_killed_worker_and_restarts_a_killed_deployment(tmp_path: Path) -> None:
    up = Up(tmp_path)
    payments = PaymentGateway(directory=up.data / "providers")
    with up.running() as process:
        travel = assert_eventually(lambda: len((u := up.unit("travel")).workers) == 2 and u, timeout=30)

        # one worker: granian starts another, the deployment stays up in the same master
        victim = travel.workers[0]
        os.kill(victim, signal.SIGKILL)
        after = assert_eventually(
            lambda: (
                (u := up.unit("travel")).worker_restarts == 1
                and len(u.workers) == 2
                and victim not in u.workers
                and u
            ),
            timeout=30,
            message="a new worker",
        )
        assert (after.pid, after.restarts, after.state) == (travel.pid, 0, UnitState.RUNNING)
        booked = up.invoke(f"TripOrchestrator/{new_key('trip')}/BookTrip", json.dumps(trip_request()))
        assert booked.returncode == 0, booked.stderr
        assert json.loads(booked.stdout)["status"] == "confirmed"

        # the whole deployment (master and workers) with a booking in flight: back on the same port,
        # and the booking finishes with one charge
        trip_id = slow_booking_in_flight(up, payments)
        assert travel.pid is not None
        os.killpg(travel.pid, signal.SIGKILL)
        again = up.restarted("travel", travel)
        assert (again.ports, again.restarts) == ([up.travel], 1)
        assert finished_booking(up, trip_id)["status"] == "confirmed"
        assert charges(payments, trip_id) == 1
        booked = up.invoke(f"TripOrchestrator/{new_key('trip')}/BookTrip", json.dumps(trip_request()))
        assert json.loads(booked.stdout)["status"] == "confirmed"

        assert process.poll() is None
        said = up.said()
        assert f"deployment travel: worker pid {victim} exited" in said
        assert f"replaced pid {victim}" in said
        assert "deployment travel exited (killed by SIGKILL); restarting in 0.5 s (restart 1)" in said
        assert f"deployment travel restarted (pid {again.pid}, restart 1)" in said
        spawned = children(process)
    assert process.returncode == 0
    assert not [child.pid for child in spawned if alive(child.pid)]


def test_up_restarts_the_gateway_and_the_engine_and_status_shows_the_stack(tmp_path: Path) -> None:
    up = Up(tmp_path)
    payments = PaymentGateway(directory=up.data / "providers")
    with up.running() as process:
        shown = up.podium("status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        rows = status_rows(shown.stdout)
        assert set(rows) == {"engine", "common", "travel", "gateway", "dashboard"}
        for name, cells in rows.items():
            assert cells[-2:] == ["running", "healthy"], (name, cells)
        assert str(up.stack().pid) in shown.stdout
        second = subprocess.run(
            [sys.executable, "-m", "podium", "up", "--data-dir", str(up.data), "--config", str(up.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"another supervisor (pid {process.pid}) runs this stack" in second.stderr
        assert up.stack().state == "running"
        assert str(up.gateway) in rows["gateway"]
        assert f"{up.ingress},{up.admin}" in rows["engine"]

        # the gateway
        gateway = up.unit("gateway")
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGKILL)
        up.restarted("gateway", gateway)
        missing = f"/TripOrchestrator/{new_key('trip')}/GetBooking"
        assert up.gateway_post(missing, up.token("travel:read")).status_code == 404  # through, no booking

        # the dashboard
        dashboard = up.unit("dashboard")
        assert dashboard.pid is not None
        os.kill(dashboard.pid, signal.SIGKILL)
        up.restarted("dashboard", dashboard)
        assert httpx.get(f"http://127.0.0.1:{up.dashboard}/health").status_code == 200

        # the engine, with a booking in flight: same data directory, deployments registered, it finishes
        trip_id = slow_booking_in_flight(up, payments)
        engine = up.unit("engine")
        assert engine.pid is not None
        os.kill(engine.pid, signal.SIGKILL)
        up.restarted("engine", engine)
        assert finished_booking(up, trip_id)["status"] == "confirmed"
        assert charges(payments, trip_id) == 1
        registered = httpx.get(f"http://127.0.0.1:{up.admin}/deployments").json()["deployments"]
        uris = {str(d.get("uri")).rstrip("/") for d in registered}
        assert {up.unit("travel").url, up.unit("common").url} <= uris

        said = up.said()
        assert "gateway exited (killed by SIGKILL); restarting in 0.5 s (restart 1)" in said
        assert "dashboard exited (killed by SIGKILL); restarting in 0.5 s (restart 1)" in said
        assert "engine exited (killed by SIGKILL); restarting in 0.5 s (restart 1)" in said
        assert "engine: deployments registered again: common, travel" in said
        assert process.poll() is None

        shown = up.podium("status")
        assert shown.returncode == 0, shown.stdout
        rows = status_rows(shown.stdout)
        assert rows["engine"][-3:] == ["1", "running", "healthy"]
        assert rows["gateway"][-3:] == ["1", "running", "healthy"]
        assert "engine: killed by SIGKILL" in shown.stdout
        spawned = children(process)
    assert process.returncode == 0
    assert "stopping ..." in up.said()
    assert not [child.pid for child in spawned if alive(child.pid)]

    stopped = up.podium("status")
    assert stopped.returncode == 3
    assert "not running" in stopped.stdout
    assert "stopped at" in stopped.stdout
    logged = up.podium("logs", "supervisor")
    assert logged.returncode == 0, logged.stderr
    assert "WARNING podium.supervisor engine exited (killed by SIGKILL)" in logged.stdout
    assert "signal=SIGKILL" in logged.stdout


def test_status_shows_a_process_left_failed_and_a_supervisor_that_is_gone(tmp_path: Path) -> None:
    up = Up(tmp_path)
    with up.running("--restart-limit", "1", "--restart-delay", "0.1") as process:
        first = up.unit("gateway")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        second = up.restarted("gateway", first)
        assert second.pid is not None
        os.kill(second.pid, signal.SIGKILL)
        assert_eventually(lambda: up.unit("gateway").state is UnitState.FAILED, timeout=30)
        assert (
            "gateway exited (killed by SIGKILL): 2 exits within 60 s, more than the limit of 1; left failed"
        ) in up.said()

        shown = up.podium("status")
        assert shown.returncode == 1, shown.stdout
        rows = status_rows(shown.stdout)
        assert rows["gateway"][-2:] == ["failed", "-"]
        for name in ("engine", "common", "travel"):
            assert rows[name][-2:] == ["running", "healthy"]
        # the rest keeps serving
        booked = up.invoke(f"TripOrchestrator/{new_key('trip')}/BookTrip", json.dumps(trip_request()))
        assert json.loads(booked.stdout)["status"] == "confirmed"

        # podium up itself killed: its processes follow it (parent-death signal), its state file is stale
        spawned = children(process)
        process.kill()
        process.wait()
        gone = up.podium("status")
        assert gone.returncode == 3
        assert f"supervisor (podium up, pid {process.pid}) is gone" in gone.stdout
        assert_eventually(
            lambda: not [c.pid for c in spawned if alive(c.pid)], timeout=30, message="no orphan"
        )

    (tmp_path / "other").mkdir()
    never = Up(tmp_path / "other").podium("status")
    assert never.returncode == 3
    assert "no stack has run" in never.stdout


def write_logs(folder: Path) -> dict[str, list[str]]:
    folder.mkdir(parents=True)
    written = {
        "restate-server": [
            "2025-03-01T10:00:00.000000Z INFO restate_server",
            "  Starting Restate Server 1.7.12",
            "2025-03-01T10:00:02.000000Z WARN restate_invoker",
            "  retrying invocation",
        ],
        "travel": [
            json.dumps(
                {
                    "time": "2025-03-01T10:00:01.500Z",
                    "level": "INFO",
                    "name": "podium.saga",
                    "message": "saga started",
                    "system": "travel",
                    "invocation_id": "inv_1",
                    "saga": "book-trip",
                    "step": "reserve flight",
                    "correlation_id": "c-1",
                }
            ),
            "[ERROR] Unexpected exit from worker-1",
            json.dumps(
                {
                    "time": "2025-03-01T10:00:03Z",
                    "level": "ERROR",
                    "name": "podium.saga",
                    "message": "step failed",
                    "exception": "Traceback (most recent call last):\nValueError: no seats",
                }
            ),
        ],
        "gateway": ["gateway says hello", "and has no clock"],
    }
    for name, lines in written.items():
        (folder / f"{name}.log").write_text("".join(f"{line}\n" for line in lines))
    return written


def local(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def test_logs_shows_every_file_by_time_rendered_or_raw(tmp_path: Path) -> None:
    up = Up(tmp_path)
    written = write_logs(up.data / "logs")

    one = up.podium("logs", "travel")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == [
        f"{local('2025-03-01T10:00:01.500Z')} INFO    podium.saga saga started system=travel "
        'invocation_id=inv_1 saga=book-trip step="reserve flight" correlation_id=c-1',
        "[ERROR] Unexpected exit from worker-1",
        f"{local('2025-03-01T10:00:03Z')} ERROR   podium.saga step failed",
        "    Traceback (most recent call last):",
        "    ValueError: no seats",
    ]
    raw = up.podium("logs", "travel", "--json")
    assert raw.stdout.splitlines() == written["travel"]
    engine = up.podium("logs", "engine", "--tail", "2")
    assert engine.stdout.splitlines() == written["restate-server"][-2:]

    everything = up.podium("logs")
    assert everything.returncode == 0
    lines = everything.stdout.splitlines()
    sources = [line.split(" | ", 1)[0].strip() for line in lines]
    # by time: engine 10:00:00 (two lines), travel 10:00:01.5 (and the line after it), engine 10:00:02,
    # travel 10:00:03 (with its traceback); the gateway's lines have no time: after the others
    assert sources == [
        *["restate-server"] * 2,
        *["travel"] * 2,
        *["restate-server"] * 2,
        *["travel"] * 3,
        *["gateway"] * 2,
    ]
    assert lines[-1] == "gateway        | and has no clock"
    assert "no time could be read in gateway.log" in everything.stderr

    unknown = up.podium("logs", "billing")
    assert unknown.returncode == 2
    assert "gateway, restate-server, travel" in unknown.stderr


def test_logs_follow_prints_lines_appended_later(tmp_path: Path) -> None:
    up = Up(tmp_path)
    write_logs(up.data / "logs")
    output = tmp_path / "follow.out"
    argv = [sys.executable, "-m", "podium", "logs", "travel", "--follow", "--data-dir", str(up.data)]
    with output.open("wb") as out:
        follower = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert_eventually(lambda: "ValueError: no seats" in output.read_text(), timeout=30)
        line = {
            "time": "2025-03-01T10:05:00Z",
            "level": "WARNING",
            "name": "podium.saga",
            "message": "retried",
        }
        with (up.data / "logs" / "travel.log").open("a") as log:
            log.write(json.dumps(line) + "\n")
        expected = f"{local('2025-03-01T10:05:00Z')} WARNING podium.saga retried"
        assert_eventually(lambda: expected in output.read_text(), timeout=30, message="the new line")
        assert follower.poll() is None
    finally:
        follower.terminate()
        follower.wait(timeout=30)


def test_up_exports_one_trace_per_request_and_serves_metrics(tmp_path: Path) -> None:
    """`podium up --otlp-endpoint`: the gateway, the engine and the deployments export to one collector."""
    up = Up(tmp_path)
    with receiving() as (collector, endpoint), up.running("--otlp-endpoint", endpoint):
        assert f"Traces: to {endpoint}" in up.output.read_text()
        trip = new_key("trip")
        booked = up.gateway_post(
            f"/TripOrchestrator/{trip}/BookTrip", up.token("travel:write"), trip_request()
        )
        assert booked.status_code == 200, booked.text
        assert booked.json()["status"] == "confirmed"

        def one_trace() -> set[str]:
            roots = collector.spans(lambda s: s.service == "gateway" and "BookTrip" in s.name)
            assert roots, "no gateway span yet"
            trace = roots[-1].trace_id
            services = {s.service for s in collector.spans(lambda s: s.trace_id == trace)}
            assert {"gateway", "travel"} <= services, services
            assert len(services) >= 3, services  # and the engine's
            return services

        assert_eventually(
            one_trace, timeout=30, message="the booking's trace from gateway, engine and travel"
        )

        gateway_metrics = httpx.get(f"http://127.0.0.1:{up.metrics}/metrics", timeout=10).text
        assert "podium_gateway_admitted_total" in gateway_metrics
        travel_metrics = httpx.get(f"http://127.0.0.1:{up.travel}/metrics", timeout=10).text
        assert 'podium_saga_ended_total{outcome="completed",saga="book-trip"}' in travel_metrics
        assert httpx.get(f"http://127.0.0.1:{up.gateway}/metrics", timeout=10).status_code == 401
