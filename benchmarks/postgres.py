"""A throwaway PostgreSQL server for the benchmarks (the DBOS baseline keeps its state in one).

    with PostgresServer(Path("/tmp/bench/pg")) as pg:   # initdb, start, create the database
        print(pg.url)                                   # postgresql://postgres@127.0.0.1:PORT/dbos
        print(pg.settings())                            # fsync, synchronous_commit, ...
        print(pg.pids())                                # postmaster and its backends

The server binaries come from the Debian packages (``/usr/lib/postgresql/<version>/bin``). If they are
missing, :func:`postgres_bin_dir` installs them with ``apt-get install -y postgresql`` (as root,
``DEBIAN_FRONTEND=noninteractive``, after an ``apt-get update`` if the first try fails). Debian's
package also creates a ``main`` cluster on port 5432; in a container whose ``policy-rc.d`` forbids
starting services it stays down, and this module never touches it.

Layout of the given directory: ``data/`` is the cluster (made by ``initdb``), the directory itself holds
the unix socket, and ``postgres.log`` the server's output. PostgreSQL refuses to run as root, so when
this process is root the directory is handed to the ``postgres`` system user (made by the Debian
package) and ``initdb``, ``postgres`` and ``pg_ctl`` run as that user through ``setpriv``; directories
above it that the user could not enter get the search bit for others (``o+x``, no read). Otherwise
everything runs as the current user.

The server listens on 127.0.0.1 only, on a free port, with ``trust`` authentication (it is throwaway and
local). Durability is PostgreSQL's default and is pinned on the command line so that no configuration
file can weaken it: ``fsync=on``, ``synchronous_commit=on``, ``full_page_writes=on``. Nothing else is
tuned. :meth:`PostgresServer.stop` asks for a fast shutdown (``pg_ctl stop -m fast``), then kills the
postmaster if it has not exited.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psutil
import psycopg
from psycopg import sql

DURABILITY: dict[str, str] = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""Settings pinned on the server's command line: PostgreSQL's defaults, made explicit."""

_SHOWN = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "listen_addresses",
)


def _find_bin_dir() -> Path | None:
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        if (bin_dir / "postgres").exists():
            version = bin_dir.parent.name
            found.append((int(version) if version.isdigit() else 0, bin_dir))
    return max(found)[1] if found else None


def postgres_bin_dir(*, install: bool = True) -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl`` (the newest installed version).

    Installs Debian's ``postgresql`` package when no server binaries are found and ``install`` is true.
    """
    bin_dir = _find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    if not install:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL server binaries are missing and cannot be installed here "
            "(needs root and apt-get): install the Debian package 'postgresql'"
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    if subprocess.run(install_cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install_cmd, env=env, check=True)
    bin_dir = _find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("installed 'postgresql' but found no server binaries under /usr/lib/postgresql")
    return bin_dir


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int | None) -> float:
    """Cumulative CPU seconds (user + system) of a process, its live descendants and the children it
    has reaped (the OS adds those to its ``children_user``/``children_system``); 0.0 once it is gone."""
    if pid is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        times = process.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                ctimes = child.cpu_times()
                total += ctimes.user + ctimes.system
    return float(total)


class PostgresServer:
    """One throwaway PostgreSQL cluster in ``directory``, served on 127.0.0.1.

    ``start()`` runs ``initdb`` (unless the cluster exists), starts the server, waits until it takes
    connections and creates ``dbname``. Use it as a context manager, or call ``stop()``.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        dbname: str = "dbos",
        port: int | None = None,
        system_user: str = "postgres",
    ) -> None:
        self.directory = Path(directory).resolve()
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "postgres.log"
        self.dbname = dbname
        self.port = port
        self.user = "postgres"
        """The database superuser (initdb ``-U``)."""
        self._system_user = system_user if os.geteuid() == 0 else None
        self._bin: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> PostgresServer:
        """Initialise (if needed) and start the server; returns self."""
        if self._process is not None:
            return self
        self._bin = postgres_bin_dir()
        self._prepare_directory()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(self._bin / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    self.user,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                ]
            )
        if self.port is None:
            self.port = free_port()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            **DURABILITY,
        }
        command = [str(self._bin / "postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                self._as_system_user(command),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (``pg_ctl stop -m fast``); kill the postmaster if it is still there after."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None and self._bin is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    self._as_system_user(
                        [
                            str(self._bin / "pg_ctl"),
                            "stop",
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            str(int(timeout)),
                        ]
                    ),
                    cwd=self.directory,
                    env=self._env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout + 5,
                    check=False,
                )
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DBNAME`` (for SQLAlchemy, psycopg and DBOS)."""
        if self.port is None:
            raise RuntimeError("PostgreSQL is not started")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def pids(self) -> list[int]:
        """The postmaster and all its current children (backends, checkpointer, WAL writer, ...)."""
        if self.pid is None:
            return []
        try:
            postmaster = psutil.Process(self.pid)
            return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """Cumulative CPU seconds of the whole server: the postmaster, its live children, and the
        children that have already exited (the postmaster reaps them, so the OS adds their time to its
        ``children_user``/``children_system``)."""
        return process_cpu_seconds(self.pid)

    def settings(self) -> dict[str, str]:
        """What the running server reports (``SHOW``) for its version and durability settings."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in _SHOWN}  # type: ignore[index]

    # -- helpers --------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._system_user is not None:
            env["HOME"] = str(self.directory)
            env["USER"] = env["LOGNAME"] = self._system_user
        return env

    def _as_system_user(self, command: list[str]) -> list[str]:
        if self._system_user is None:
            return command
        # setpriv execs (no extra process in between), so the postmaster is our direct child.
        return [
            "setpriv",
            f"--reuid={self._system_user}",
            f"--regid={self._system_user}",
            "--init-groups",
            "--",
            *command,
        ]

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            self._as_system_user(command),
            cwd=self.directory,
            env=self._env(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({result.returncode}):\n"
                + result.stdout.decode(errors="replace")
                + result.stderr.decode(errors="replace")
            )

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._system_user is None:
            return
        account = pwd.getpwnam(self._system_user)
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        os.chmod(self.directory, 0o700)
        # The system user must be able to walk down to the directory.
        for parent in self.directory.parents:
            info = parent.stat()
            if info.st_mode & stat.S_IXOTH or info.st_uid == account.pw_uid:
                continue
            if info.st_uid != os.geteuid():
                raise RuntimeError(f"{self._system_user} cannot enter {parent} (not ours to change)")
            os.chmod(parent, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start; see {self.log_file}:\n{self._log_tail()}")
            try:
                with psycopg.connect(
                    f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", connect_timeout=2
                ) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections in {timeout}s: {last}")

    def _create_database(self) -> None:
        admin = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
