"""The managed engine and deployments: start, stop, register, and never leave a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest
import restate

import podium
from podium.runtime import (
    DeploymentProcess,
    Engine,
    EngineError,
    ThreadedServer,
    free_port,
    register_deployment,
)
from podium.testing import assert_eventually, running_engine, test_engine_config

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_leaves_no_process_and_keeps_the_data(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        pid = engine.pid
        assert pid is not None
        assert psutil.Process(pid).name() == "restate-server"  # the real binary, not a Node wrapper
        assert httpx.get(f"{engine.admin_url}/health").status_code == 200
    assert gone(pid)
    assert (tmp_path / "restate-data").is_dir()
    assert "restate" in (tmp_path / "logs" / "restate-server.log").read_text().lower()


def test_a_parent_killed_with_sigkill_takes_its_engine_down(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from podium.runtime import Engine
        from podium.testing import test_engine_config
        engine = Engine(test_engine_config(pathlib.Path({str(tmp_path)!r})))
        engine.start()
        pathlib.Path({str(tmp_path / "pid")!r}).write_text(str(engine.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        pid_file = tmp_path / "pid"
        assert_eventually(pid_file.exists, timeout=60, message="the engine to start")
        engine_pid = int(pid_file.read_text())
        assert not gone(engine_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert_eventually(lambda: gone(engine_pid), timeout=30, message="the orphaned engine to exit")
    finally:
        parent.kill()
        parent.wait()


def test_an_inner_pytest_session_leaves_nothing_and_reports_the_engine_log(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib

            def test_uses_engine(podium_engine):
                pathlib.Path({str(tmp_path / "pid")!r}).write_text(str(podium_engine.engine.pid))

            def test_fails(podium_engine):
                assert False, "deliberate"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "restate-server log" in result.stdout
    assert gone(int((tmp_path / "pid").read_text()))


def test_sigterm_stops_a_deployment_after_it_served_requests(tmp_path: Path) -> None:
    with running_engine(tmp_path / "engine") as engine:
        process = DeploymentProcess("tests.integration.lab:app", log_file=tmp_path / "lab.log", cwd=ROOT)
        process.start()
        try:
            engine.register(process.url)
            # One invocation makes restate-sdk install its own SIGTERM handler.
            response = httpx.post(f"{engine.ingress_url}/LabDoors/Whoami", timeout=30)
            assert response.json() == "internal"
        finally:
            process.stop(grace=5.0)
        status = process._process.returncode()
        assert status is not None
        assert status != -signal.SIGKILL, "SIGTERM did not stop the deployment; it had to be killed"


def test_registering_an_unreachable_deployment_says_why(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        url = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(EngineError, match=f"refused deployment {url}"):
            engine.register(url)


def test_an_unreachable_engine_is_a_clear_error() -> None:
    admin = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match=f"cannot reach the engine's admin API at {admin}"):
        register_deployment(admin, "http://127.0.0.1:9")


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with running_engine(tmp_path / "a") as first:
        second = Engine(test_engine_config(tmp_path / "b", ingress_port=first.config.ingress_port))
        with pytest.raises(EngineError, match="already in use"):
            second.start()


def _app_with(service_name: str) -> object:
    service = restate.Service(service_name)

    @service.handler()
    async def ping(ctx: restate.Context) -> str:
        return service_name

    return podium.app(services=[service])


def test_a_changed_deployment_is_registered_again_with_force(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        port = free_port()
        first = ThreadedServer(_app_with("PingOne"), port=port)
        first.start()
        try:
            answer = engine.register(first.url)
            assert [s["name"] for s in answer["services"]] == ["PingOne"]
        finally:
            first.stop()
        second = ThreadedServer(_app_with("PingTwo"), port=port)
        second.start()
        try:
            with pytest.raises(EngineError, match="keeps an old schema"):
                engine.register(second.url, force=False)
            answer = engine.register(second.url)
            assert [s["name"] for s in answer["services"]] == ["PingTwo"]
            assert httpx.post(f"{engine.ingress_url}/PingTwo/ping", timeout=30).json() == "PingTwo"
        finally:
            second.stop()


def test_binary_override_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_RESTATE_SERVER", "/nonexistent/restate-server")
    with pytest.raises(EngineError, match="is not a file"):
        Engine()
    assert os.environ["PODIUM_RESTATE_SERVER"] == "/nonexistent/restate-server"
