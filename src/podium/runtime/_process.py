"""Child processes that never outlive their parent.

Every process Podium starts (the engine, service deployments) is started here, so that the three ways a
parent can go away are covered in one place:

- an orderly stop: SIGTERM, then SIGKILL after a grace period (:meth:`ChildProcess.stop`);
- Ctrl-C or an exception in the parent: the caller's ``with`` block or ``atexit`` stops the child;
- the parent killed with SIGKILL: the kernel sends the child SIGTERM (Linux ``PR_SET_PDEATHSIG``).

Children run in their own process group, so a Ctrl-C in the terminal reaches only the parent, which then
stops them in order (services first, the engine last).

``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends, not the whole parent: start a
child from a thread that lives as long as the child should (the main thread, or a long-lived worker such
as the supervisor's starter thread), never from a short-lived one.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_live: set[ChildProcess] = set()
_live_lock = threading.Lock()


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to send SIGTERM to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ChildProcess:
    """A child process with its output captured to a log file.

    Args:
        argv: The command line.
        log_file: Where stdout and stderr go (appended, so restarts keep history).
        env: Extra environment variables for the child.
        cwd: Working directory of the child.
        name: A short name used in error messages.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_file = log_file
        self.env = dict(env or {})
        self.cwd = cwd
        self.name = name or Path(argv[0]).name
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while running, else None."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process; its output is appended to :attr:`log_file`."""
        if self.running():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl runs between fork and exec
        )
        with _live_lock:
            _live.add(self)

    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        """The exit status once the process has exited."""
        return None if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """SIGKILL the process and everything it forked (for crash tests), and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._kill_group()
            self._proc.wait()
        self._kill_group()  # workers left behind by a process that died on its own
        self._forget()

    def _kill_group(self) -> None:
        """SIGKILL the child's process group (its own, see :meth:`start`): workers it forked die too."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if self._proc.poll() is None:
                self._proc.kill()

    def stop(self, grace: float = 8.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL (its whole group) if alive after ``grace`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait()
        self._kill_group()  # anything of its group still alive (orphaned workers)
        self._forget()

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log file, for error messages."""
        try:
            data = self.log_file.read_bytes()[-64_000:]
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _forget(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        with _live_lock:
            _live.discard(self)


def child_pids(pid: int) -> list[int]:
    """The live (not zombie) children of process ``pid``, from ``/proc`` (Linux); [] elsewhere or if gone.

    A granian master's children are its workers, so comparing this list over time shows a worker that
    died and the one granian started in its place.
    """
    found: set[int] = set()
    # The kernel lists children per thread (the one that forked them), so every thread is read.
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in listing.read_text().split())
        except (OSError, ValueError):
            continue  # the thread or the process ended while being read
    return sorted(child for child in found if not _dead(child))


def _dead(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (dead, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    # The state follows the command name, which is in parentheses and may itself hold spaces.
    return stat[stat.rindex(")") + 2 :].startswith(("Z", "X"))


def wait_until(predicate: object, *, timeout: float, interval: float = 0.05, what: str) -> None:
    """Poll ``predicate`` until it returns true, or raise TimeoutError naming ``what``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@atexit.register
def _stop_all() -> None:
    """Last line of defence: an interpreter that exits normally stops what it started."""
    with _live_lock:
        children = list(_live)
    for child in children:
        child.stop(grace=2.0)
