"""`podium up` as a test starts it: on free ports, with its own pyproject and data directory."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from podium.runtime import StackState, UnitState, UnitStatus, free_port, read_stack, stack_file
from podium.testing import assert_eventually


class Up:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.ingress = free_port()
        self.admin = free_port()
        self.node = free_port()
        self.gateway = free_port()
        self.metrics = free_port()
        self.dashboard = free_port()
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
    def running(self, *options: str) -> Iterator[subprocess.Popen[bytes]]:
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
            "--gateway-metrics-port",
            str(self.metrics),
            "--dashboard-port",
            str(self.dashboard),
            *options,
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

    def stack(self) -> StackState:
        return read_stack(stack_file(self.data))

    def unit(self, name: str) -> UnitStatus:
        (found,) = [unit for unit in self.stack().units if unit.name == name]
        return found

    def restarted(self, name: str, old: UnitStatus) -> UnitStatus:
        """The unit once it runs again in another process than ``old``'s."""
        unit: UnitStatus = assert_eventually(
            lambda: (u := self.unit(name)).state is UnitState.RUNNING and u.pid != old.pid and u,
            timeout=60,
            message=f"{name} to run again",
        )
        return unit

    def said(self) -> str:
        """What ``podium up`` has printed so far."""
        return self.output.read_text()

    def token(self, *scopes: str) -> str:
        made = self.podium("token", "--scope", " ".join(scopes))
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]

    def gateway_post(self, path: str, token: str | None, body: Any = None) -> httpx.Response:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return httpx.post(f"http://127.0.0.1:{self.gateway}{path}", json=body, headers=headers, timeout=30)


def children(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
