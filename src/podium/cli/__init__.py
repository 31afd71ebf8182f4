"""The ``podium`` command.

``up`` runs and supervises everything, ``status`` and ``logs`` show it, ``invoke`` calls a handler,
``serve`` runs a deployment.
"""

from __future__ import annotations

import getpass
import heapq
import json
import logging
import re
import signal
import sys
import textwrap
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from podium._app import IDENTITY_KEYS_ENV
from podium._logging import LOG_FORMAT_ENV, SYSTEM_ENV, JsonFormatter
from podium._telemetry import ENDPOINT_ENV as OTLP_ENDPOINT_ENV
from podium._telemetry import METRICS_DIR_ENV
from podium.dashboard import HEALTH_PATH as DASHBOARD_HEALTH_PATH
from podium.dashboard import SCOPE as DASHBOARD_SCOPE
from podium.gateway import CLIENTS_FILE, HEALTH_PATH, ClientStore, ServiceLimit, TokenIssuer, parse_scopes
from podium.runtime import (
    REQUEST_IDENTITY_FILE,
    RETIRED_DIR,
    TOKEN_ISSUER_FILE,
    ChildProcess,
    DeploymentProcess,
    DeploymentUnit,
    Engine,
    EngineConfig,
    EngineUnit,
    KeyFileError,
    KeyPair,
    ProcessUnit,
    RestartPolicy,
    Supervisor,
    Unit,
    UnitState,
    check_health,
    keys_dir,
    load_app,
    load_public_keys,
    read_stack,
    restate_public_key,
    serve_forever,
    stack_file,
)
from podium.runtime._granian import exec_granian
from podium.runtime._serve import DEFAULT_SERVER, SERVERS

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


GATEWAY_MAX_IN_FLIGHT = 96
"""Default in-flight limit of ``podium up``'s gateway. Measured on a 2-core machine
(docs/performance.md): with 96 in flight and 32 queued, offered twice its capacity (400/s), the order
flow completed 206 orders/s with p99 0.80 s and refused the rest in milliseconds."""
GATEWAY_MAX_QUEUE = 32
"""Default queue of ``podium up``'s gateway (a queued request waits at most a second)."""
GATEWAY_METRICS_PORT = 9464
"""Where ``podium up``'s gateway serves its Prometheus metrics (loopback), OpenMetrics' customary port."""
DASHBOARD_PORT = 8070
"""Where ``podium up`` serves the dashboard (loopback)."""


def auth_dir(data_dir: Path) -> Path:
    """Where ``podium up`` keeps the Auth Service's client store."""
    return data_dir / "auth"


@dataclass(frozen=True)
class Deployment:
    """One deployment that ``podium up`` serves: a name, an ASGI app spec and a stable port."""

    name: str
    app: str
    port: int
    workers: int = 1
    """Worker processes serving it (granian)."""


def _podium_table(pyproject: Path) -> dict[str, Any]:
    if not pyproject.is_file():
        raise typer.BadParameter(f"{pyproject} not found; run from the project root or pass --config")
    table: dict[str, Any] = tomllib.loads(pyproject.read_text()).get("tool", {}).get("podium", {})
    return table


def read_edge_routes(pyproject: Path) -> list[str]:
    """The ``[tool.podium] edge`` list of ``pyproject``: edge routes the gateway serves itself."""
    return [str(spec) for spec in _podium_table(pyproject).get("edge", [])]


def read_gateway_limits(pyproject: Path) -> dict[str, ServiceLimit]:
    """The ``[tool.podium.gateway_limits]`` table: services with gateway slots of their own.

    Each entry is ``Service = { max_in_flight = N, max_queue = M }`` (``max_queue`` optional, 0).
    """
    table = _podium_table(pyproject).get("gateway_limits", {})
    limits = {}
    for service, entry in table.items():
        where = f"[tool.podium.gateway_limits] {service}"
        if not isinstance(entry, dict) or "max_in_flight" not in entry:
            raise typer.BadParameter(f"{where}: expected {{ max_in_flight = N, max_queue = M }}")
        if unknown := set(entry) - {"max_in_flight", "max_queue"}:
            raise typer.BadParameter(f"{where}: unknown key {', '.join(sorted(unknown))}")
        in_flight, queue = entry["max_in_flight"], entry.get("max_queue", 0)
        if not isinstance(in_flight, int) or not isinstance(queue, int) or in_flight < 1 or queue < 0:
            raise typer.BadParameter(f"{where}: max_in_flight must be an integer ≥ 1, max_queue ≥ 0")
        limits[service] = ServiceLimit(in_flight, queue)
    return limits


def read_deployments(pyproject: Path) -> list[Deployment]:
    """The ``[tool.podium] deployments`` table of ``pyproject``."""
    entries = _podium_table(pyproject).get("deployments", [])
    if not entries:
        raise typer.BadParameter(f"{pyproject} has no [tool.podium] deployments")
    return [
        Deployment(name=e["name"], app=e["app"], port=int(e["port"]), workers=int(e.get("workers", 1)))
        for e in entries
    ]


RESERVED_NAMES = frozenset({"engine", "gateway", "dashboard", "supervisor", "restate-server"})
"""Names of ``podium up``'s other units and log files, which no deployment may take."""
RESTART = RestartPolicy()
"""``podium up``'s restart policy unless its options say otherwise (docs/operations.md)."""


@app.command()
def up(
    data_dir: Annotated[
        Path, typer.Option(help="Engine data and logs; reuse it to resume workflows.")
    ] = Path(".podium"),
    ingress_port: Annotated[int, typer.Option(help="Ingress port (clients call handlers here).")] = 8080,
    admin_port: Annotated[int, typer.Option(help="Admin API and web UI port.")] = 9070,
    node_port: Annotated[int, typer.Option(help="Node port.")] = 5122,
    config: Annotated[Path, typer.Option(help="pyproject.toml listing the deployments.")] = Path(
        "pyproject.toml"
    ),
    gateway_port: Annotated[
        int, typer.Option(help="Port of the admission-control gateway in front of the ingress (0: none).")
    ] = 8000,
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="Requests the gateway lets through at once (see docs/gateway.md).")
    ] = GATEWAY_MAX_IN_FLIGHT,
    max_queue: Annotated[
        int, typer.Option(min=0, help="Requests the gateway holds while every slot is busy.")
    ] = GATEWAY_MAX_QUEUE,
    restart_delay: Annotated[
        float, typer.Option(min=0.01, help="Seconds before restarting a process that exited; doubles.")
    ] = RESTART.delay.total_seconds(),
    restart_max_delay: Annotated[
        float, typer.Option(min=0.01, help="The longest wait between two restarts, in seconds.")
    ] = RESTART.max_delay.total_seconds(),
    restart_limit: Annotated[
        int, typer.Option(min=0, help="Exits allowed within the window; one more leaves the process failed.")
    ] = RESTART.limit,
    restart_window: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds over which exits are counted; a process that ran this long starts over."
        ),
    ] = RESTART.window.total_seconds(),
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="OTLP gRPC collector (http://host:4317): every process exports its traces there."),
    ] = None,
    gateway_metrics_port: Annotated[
        int, typer.Option(help="Loopback port of the gateway's Prometheus metrics (0: none).")
    ] = GATEWAY_METRICS_PORT,
    dashboard_port: Annotated[
        int, typer.Option(help="Loopback port of the dashboard (sagas, dead letters, approvals; 0: none).")
    ] = DASHBOARD_PORT,
) -> None:
    """Start the engine, every deployment and the gateway, and keep them up until Ctrl-C.

    A process that exits is started again after a backoff; one that exits too often is left failed
    while the rest keeps serving (docs/operations.md). `podium status` shows the stack.
    """
    deployments = read_deployments(config)
    names = [d.name for d in deployments]
    taken = sorted({n for n in names if names.count(n) > 1} | (set(names) & RESERVED_NAMES))
    if taken:
        # Each name is a unit of the supervisor and a log file: they must not meet.
        raise typer.BadParameter(
            f"deployment names must be unique and none of {', '.join(sorted(RESERVED_NAMES))}: {taken}",
            param_hint="--config",
        )
    if restart_max_delay < restart_delay:
        raise typer.BadParameter("must be at least --restart-delay", param_hint="--restart-max-delay")
    try:
        identity = KeyPair.load_or_create(keys_dir(data_dir) / REQUEST_IDENTITY_FILE)
    except KeyFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    engine_config = EngineConfig(
        data_dir=data_dir,
        ingress_port=ingress_port,
        admin_port=admin_port,
        node_port=node_port,
        request_identity_key=identity.path,
        tracing_endpoint=otlp_endpoint,
    )
    # Traces: the engine exports its own spans (above); every Python process exports its spans to the
    # same collector through the standard OpenTelemetry variable.
    tracing = {OTLP_ENDPOINT_ENV: otlp_endpoint} if otlp_endpoint else {}
    window = timedelta(seconds=restart_window)
    policy = RestartPolicy(
        delay=timedelta(seconds=restart_delay),
        max_delay=timedelta(seconds=restart_max_delay),
        limit=restart_limit,
        window=window,
        reset_after=window,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logs = data_dir / "logs"
    supervisor = Supervisor(policy=policy, state_file=stack_file(data_dir))
    engine = EngineUnit(Engine(engine_config))
    supervisor.add(engine)
    for deployment in deployments:
        process = DeploymentProcess(
            deployment.app,
            port=deployment.port,
            log_file=logs / f"{deployment.name}.log",
            env={
                "PODIUM_DATA_DIR": str(data_dir.resolve()),
                IDENTITY_KEYS_ENV: identity_keys(identity, data_dir),
                LOG_FORMAT_ENV: "json",
                SYSTEM_ENV: deployment.name,
                # Every granian worker counts into this folder; GET /metrics on any worker sums them.
                METRICS_DIR_ENV: str((data_dir / "run" / "metrics" / deployment.name).resolve()),
                **tracing,
            },
            workers=deployment.workers,
        )
        supervisor.add(DeploymentUnit(deployment.name, process, engine=engine))
    if gateway_port:
        gateway = gateway_process(
            engine.engine.ingress_url,
            admin_url=engine.engine.admin_url,
            data_dir=data_dir,
            edge=read_edge_routes(config),
            port=gateway_port,
            max_in_flight=max_in_flight,
            max_queue=max_queue,
            service_limits=read_gateway_limits(config),
            log_file=logs / "gateway.log",
            metrics_port=gateway_metrics_port,
            env=tracing,
        )
        supervisor.add(gateway_unit(gateway, port=gateway_port))
    if dashboard_port:
        dashboard = dashboard_process(
            engine.engine, data_dir=data_dir, port=dashboard_port, log_file=logs / "dashboard.log"
        )
        supervisor.add(dashboard_unit(dashboard, port=dashboard_port))

    def started(unit: Unit) -> None:
        if isinstance(unit, DeploymentUnit):
            typer.echo(f"  {unit.name:<12} {unit.url}  {', '.join(unit.services)}")

    handlers = supervisor_logging(logs / "supervisor.log")
    try:
        with supervisor:
            typer.echo(f"starting restate-server (data in {data_dir}/restate-data) ...")
            supervisor.start(stop, on_start=started)
            if not stop.is_set():
                dashboard_line = dashboard_link(data_dir, dashboard_port) if dashboard_port else ""
                banner = up_banner(
                    engine.engine, data_dir, gateway_port, max_in_flight, max_queue, policy, dashboard_line
                )
                typer.echo(banner + observability_banner(engine.engine, gateway_metrics_port, otlp_endpoint))
                supervisor.run(stop)
            typer.echo("stopping ...")
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        for handler in handlers:
            logging.getLogger("podium.supervisor").removeHandler(handler)
            handler.close()


def up_banner(
    engine: Engine,
    data_dir: Path,
    gateway_port: int,
    max_in_flight: int,
    max_queue: int,
    policy: RestartPolicy,
    dashboard: str = "",
) -> str:
    """What ``podium up`` prints once everything answers (``dashboard``: its line, when it runs)."""
    front = ""
    if gateway_port:
        front = (
            f"  gateway  http://127.0.0.1:{gateway_port}   (the public door: public handlers only, "
            f"with a token (podium token); {max_in_flight} in flight, {max_queue} queued, "
            "then 503 + Retry-After)\n"
        )
    window = policy.window.total_seconds()
    return (
        "\nPodium is up.\n"
        f"  ingress  {engine.ingress_url}   (trusted, loopback only: every handler; podium invoke)\n"
        + front
        + f"  admin    {engine.admin_url}\n"
        f"  web UI   {engine.admin_url}/ui/\n"
        + dashboard
        + f"  logs     {data_dir / 'logs'}/   (podium logs [NAME] [--follow])\n"
        f"Supervised: a process that exits is restarted (after {policy.delay.total_seconds():g} s, doubling "
        f"to {policy.max_delay.total_seconds():g} s); more than {policy.limit} exits in {window:g} s leave "
        "it failed. podium status shows the stack.\n"
        "Ctrl-C stops everything; `podium up` again resumes in-flight workflows."
    )


def dashboard_link(data_dir: Path, port: int) -> str:
    """The dashboard's address with a sign-in token (good for a day), the way Jupyter prints its own."""
    try:
        signed = TokenIssuer(issuer_key(data_dir)).issue(
            f"cli:{getpass.getuser()}", [DASHBOARD_SCOPE], timedelta(days=1)
        )
    except (KeyFileError, ValueError) as exc:
        return f"  dashboard http://127.0.0.1:{port}/   (no sign-in link: {exc})\n"
    return (
        f"  dashboard http://127.0.0.1:{port}/?token={signed}\n"
        f"           (sagas, dead letters, approvals; the link signs you in for a day, then: podium token "
        f"--scope {DASHBOARD_SCOPE})\n"
    )


def dashboard_process(engine: Engine, *, data_dir: Path, port: int, log_file: Path) -> ChildProcess:
    """The ``python -m podium.dashboard`` process reading ``engine`` (not started).

    It lets in tokens of the same issuer as the gateway (with the scope ``dashboard:operator``).
    """
    argv = [
        sys.executable,
        "-m",
        "podium.dashboard",
        "--admin-url",
        engine.admin_url,
        "--ingress-url",
        engine.ingress_url,
        *issuer_args(data_dir),
        "--port",
        str(port),
    ]
    return ChildProcess(argv, log_file=log_file, env={LOG_FORMAT_ENV: "json"}, name="dashboard")


def dashboard_unit(dashboard: ChildProcess, *, port: int) -> ProcessUnit:
    """``dashboard`` as a supervised unit: healthy when its health path answers on ``port``."""
    return loopback_unit("dashboard", dashboard, port=port, health_path=DASHBOARD_HEALTH_PATH)


def loopback_unit(
    name: str, process: ChildProcess, *, port: int, health_path: str, stop_grace: float = 8.0
) -> ProcessUnit:
    """A process serving HTTP on a loopback ``port``, supervised as unit ``name`` (also its kind)."""
    url = f"http://127.0.0.1:{port}"
    return ProcessUnit(
        name,
        process,
        kind=name,
        ports=[port],
        url=url,
        health_urls=[f"{url}{health_path}"],
        stop_grace=stop_grace,
    )


def issuer_args(data_dir: Path) -> list[str]:
    """The command-line options naming the token issuer's key and the retired keys still trusted."""
    return [
        "--issuer-key",
        str(issuer_key(data_dir).path.resolve()),
        "--retired-keys",
        str((keys_dir(data_dir) / RETIRED_DIR / "issuer").resolve()),
    ]


def observability_banner(engine: Engine, gateway_metrics_port: int, otlp_endpoint: str | None) -> str:
    """Where ``podium up``'s metrics are served and where its traces go."""
    gateway = f"gateway http://127.0.0.1:{gateway_metrics_port}/metrics, " if gateway_metrics_port else ""
    node = f"http://{engine.config.host}:{engine.config.node_port}/metrics"
    traces = f"to {otlp_endpoint} (OTLP gRPC)" if otlp_endpoint else "off (podium up --otlp-endpoint URL)"
    return (
        f"\nMetrics: {gateway}each deployment's <url>/metrics, engine {node}.\n"
        f"Traces: {traces}. docs/operations.md tells more."
    )


class _HumanFormatter(logging.Formatter):
    """The supervisor's lines on ``podium up``'s terminal: local time and the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def supervisor_logging(log_file: Path) -> list[logging.Handler]:
    """Print the supervisor's events (restarts and above) and log all of them as JSON lines to ``log_file``.

    Returns:
        The handlers added to the ``podium.supervisor`` logger, for the caller to remove.
    """
    logger = logging.getLogger("podium.supervisor")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # printed here; a root handler would print every line twice
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(JsonFormatter("supervisor"))
    to_file.setLevel(logging.DEBUG)
    to_terminal = logging.StreamHandler(sys.stdout)
    to_terminal.setFormatter(_HumanFormatter())
    to_terminal.setLevel(logging.INFO)
    for handler in (to_file, to_terminal):
        logger.addHandler(handler)
    return [to_file, to_terminal]


def identity_keys(identity: KeyPair, data_dir: Path) -> str:
    """What deployments verify requests with: the engine's key, then retired ones (comma-separated)."""
    retired = load_public_keys(keys_dir(data_dir) / RETIRED_DIR / "identity").values()
    return ",".join([identity.restate_public_key, *(restate_public_key(k) for k in retired)])


def issuer_key(data_dir: Path) -> KeyPair:
    """The token issuer's key pair under ``data_dir`` (made on first use, owner-only)."""
    return KeyPair.load_or_create(keys_dir(data_dir) / TOKEN_ISSUER_FILE)


def gateway_process(
    upstream: str,
    *,
    admin_url: str,
    data_dir: Path,
    edge: list[str],
    port: int,
    max_in_flight: int,
    max_queue: int,
    log_file: Path,
    service_limits: dict[str, ServiceLimit] | None = None,
    metrics_port: int = 0,
    env: dict[str, str] | None = None,
) -> ChildProcess:
    """The ``python -m podium.gateway`` process in front of ``upstream`` (not started).

    It verifies tokens signed with the issuer key under ``data_dir`` (made now if missing) and the
    retired keys beside it, and serves the Auth Service's token endpoint from the client store there.
    """
    argv = [
        sys.executable,
        "-m",
        "podium.gateway",
        "--upstream",
        upstream,
        "--admin-url",
        admin_url,
        *issuer_args(data_dir),
        "--clients",
        str((auth_dir(data_dir) / CLIENTS_FILE).resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-in-flight",
        str(max_in_flight),
        "--max-queue",
        str(max_queue),
    ]
    for spec in edge:
        argv += ["--edge", spec]
    for service, limit in (service_limits or {}).items():
        argv += ["--service-limit", f"{service}={limit.max_in_flight}/{limit.max_queue}"]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port)]
    # Edge routes keep their data where the deployments keep theirs (the card vault: providers/).
    environment = {"PODIUM_DATA_DIR": str(data_dir.resolve()), LOG_FORMAT_ENV: "json", SYSTEM_ENV: "gateway"}
    return ChildProcess(argv, log_file=log_file, env={**environment, **(env or {})}, name="gateway")


def gateway_unit(gateway: ChildProcess, *, port: int) -> ProcessUnit:
    """``gateway`` as a supervised unit: healthy when its health path answers on ``port``."""
    # The gateway lets forwarded requests finish for up to 10 s before it stops.
    return loopback_unit("gateway", gateway, port=port, health_path=HEALTH_PATH, stop_grace=12.0)


def start_gateway(gateway: ChildProcess, *, port: int) -> None:
    """Start ``gateway`` and wait until it answers on ``port``.

    Raises:
        StartError: It exited, or did not answer within 30 s.
    """
    gateway_unit(gateway, port=port).start()


@app.command()
def serve(
    app_spec: Annotated[str, typer.Argument(help="The ASGI app, as package.module:attribute.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9080,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    server: Annotated[
        str, typer.Option(help="HTTP server: granian (Rust, faster) or hypercorn (pure Python, in-process).")
    ] = DEFAULT_SERVER,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (granian only).")] = 1,
) -> None:
    """Serve one deployment from this process (``podium up`` runs one of these per deployment)."""
    if server not in SERVERS:
        raise typer.BadParameter(f"choose one of {', '.join(SERVERS)}", param_hint="--server")
    if server == "hypercorn":
        if workers != 1:
            raise typer.BadParameter("hypercorn serves from one process here", param_hint="--workers")
        serve_forever(load_app(app_spec), host=host, port=port)
    else:
        exec_granian(app_spec, host=host, port=port, workers=workers)


def _target_path(target: str) -> str:
    parts = target.strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise typer.BadParameter("target must be SERVICE/HANDLER or SERVICE/KEY/HANDLER", param_hint="TARGET")
    return "/".join(quote(p, safe="") for p in parts)


@app.command()
def invoke(
    target: Annotated[str, typer.Argument(help="SERVICE/HANDLER or SERVICE/KEY/HANDLER.")],
    body: Annotated[str | None, typer.Argument(help="The JSON request body.")] = None,
    send: Annotated[bool, typer.Option("--send", help="Fire and forget; prints the invocation id.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Idempotency key (generated for --send when omitted).")
    ] = None,
    ingress: Annotated[str, typer.Option(help="Ingress URL.")] = "http://127.0.0.1:8080",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the response.")] = 600.0,
) -> None:
    """Call a handler through the ingress and print its response, or its error."""
    payload: Any = None
    if body is not None:
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="BODY") from None
    url = f"{ingress.rstrip('/')}/{_target_path(target)}" + ("/send" if send else "")
    # Handlers without input refuse a content type, so one is sent only with a body.
    headers = {} if body is None else {"content-type": "application/json"}
    if send and idempotency_key is None:
        idempotency_key = str(uuid.uuid4())
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    content = b"" if body is None else json.dumps(payload).encode()
    try:
        response = httpx.post(url, content=content, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the ingress at {ingress}: {exc}", err=True)
        raise typer.Exit(2) from None
    text = response.text
    try:
        shown = json.dumps(response.json(), indent=2)
    except ValueError:
        shown = text
    if response.is_success:
        if send and idempotency_key:
            typer.echo(f"# idempotency-key: {idempotency_key}", err=True)
        typer.echo(shown)
        return
    typer.echo(f"error {response.status_code}: {shown}", err=True)
    raise typer.Exit(1)


DataDir = Annotated[Path, typer.Option(help="The data directory of `podium up` (its keys and clients).")]
_DURATION = re.compile(r"([0-9]+)\s*(s|m|h|d)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h`` or ``1d`` as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter("a duration is a whole number and s, m, h or d, such as 15m or 1h")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def _scopes(values: list[str]) -> tuple[str, ...]:
    try:
        return parse_scopes(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from None


@app.command()
def token(
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="What the token may do: <system>:<kind>, space-separated or repeated (*:read *:write)."
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Who the token speaks for (cli:<your user name>).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="How long it is good for: 90s, 15m, 1h, 1d (at most 1d).")] = "1h",
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Print an access token for the gateway, signed by this data directory's issuer key.

    The last line of the output is the token alone: TOKEN=$(podium token --scope 'travel:write' | tail -1).
    """
    scopes = _scopes(scope or ["*:read *:write"])
    who = subject or f"cli:{getpass.getuser()}"
    lifetime = parse_duration(ttl)
    try:
        signed = TokenIssuer(issuer_key(data_dir)).issue(who, scopes, lifetime)
    except (KeyFileError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"# subject {who}, scope {' '.join(scopes)}, good for {lifetime}", err=True)
    typer.echo(signed)


clients_app = typer.Typer(no_args_is_help=True, help="API clients of the Auth Service (operator actions).")
app.add_typer(clients_app, name="clients")


def _store(data_dir: Path) -> ClientStore:
    return ClientStore(auth_dir(data_dir) / CLIENTS_FILE)


def _show_secret(client_id: str, secret: str) -> None:
    """The secret on stdout's last line, the warning on stderr: SECRET=$(podium clients add ... | tail -1)."""
    typer.echo(f"# client {client_id}: its secret follows, shown this once; store it now", err=True)
    typer.echo(secret)


@clients_app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Argument(help="The client's id (letters, digits, - _ .).")],
    scope: Annotated[list[str], typer.Option(help="What its tokens may carry: <system>:<kind>, repeated.")],
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Register a client and print its secret (the last line, shown this once; only its hash is kept)."""
    try:
        secret = _store(data_dir).add(client_id, _scopes(scope))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _show_secret(client_id, secret)


@clients_app.command("rotate")
def clients_rotate(
    client_id: Annotated[str, typer.Argument(help="The client's id.")],
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Give a client a new secret (the old one stops working at once) and print it."""
    try:
        secret = _store(data_dir).rotate(client_id)
    except KeyError:
        typer.echo(f"error: no client {client_id}", err=True)
        raise typer.Exit(1) from None
    _show_secret(client_id, secret)


@clients_app.command("remove")
def clients_remove(
    client_id: Annotated[str, typer.Argument(help="The client's id.")],
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Forget a client (tokens it holds last until they expire, at most 15 minutes)."""
    if not _store(data_dir).remove(client_id):
        typer.echo(f"error: no client {client_id}", err=True)
        raise typer.Exit(1)


@clients_app.command("list")
def clients_list(data_dir: DataDir = Path(".podium")) -> None:
    """List the clients and their scopes."""
    for client in _store(data_dir).clients():
        typer.echo(f"{client.client_id}\t{' '.join(client.scopes)}")


keys_app = typer.Typer(no_args_is_help=True, help="The data directory's signing keys.")
app.add_typer(keys_app, name="keys")
KEY_FILES = {"issuer": TOKEN_ISSUER_FILE, "identity": REQUEST_IDENTITY_FILE}


@keys_app.command("rotate")
def keys_rotate(
    which: Annotated[str, typer.Argument(help="issuer (access tokens) or identity (engine to deployments).")],
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Replace a signing key; its public half stays trusted, so what it signed keeps verifying.

    Restart `podium up` to use the new key. Tokens signed by a retired issuer key verify until they
    expire (a day at most): delete keys/retired/issuer/<id>.pub.pem after that. Deployments trust retired
    identity keys too, for deployments restarted later than the engine.
    """
    if which not in KEY_FILES:
        raise typer.BadParameter("choose issuer or identity", param_hint="WHICH")
    path = keys_dir(data_dir) / KEY_FILES[which]
    try:
        old = KeyPair.load(path)
    except KeyFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    kept = old.retire(keys_dir(data_dir) / RETIRED_DIR / which)
    path.unlink()
    new = KeyPair.create(path)
    typer.echo(f"{which} key {old.key_id} retired ({kept}); new key {new.key_id}. Restart podium up.")


# -- podium status ---------------------------------------------------------------------------------------

STATUS_DOWN = 1
"""``podium status``'s exit status when a unit is not running and healthy."""
STATUS_NOT_RUNNING = 3
"""``podium status``'s exit status when no supervisor runs the stack (as LSB's "program is not running")."""


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """``42s``, ``3m 12s``, ``2h 05m``, ``3d 04h``: how long, for a person."""
    seconds = int(max(seconds, 0))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@app.command()
def status(data_dir: DataDir = Path(".podium")) -> None:
    """Show every process of the stack `podium up` runs on DATA_DIR: pid, port, up since, restarts, health.

    Exit status: 0 when every process runs and answers its health check, 1 when one does not (down,
    restarting, failed or not answering), 3 when the stack is not running at all.
    """
    path = stack_file(data_dir)
    try:
        stack = read_stack(path)
    except FileNotFoundError:
        typer.echo(f"not running: no stack has run on {data_dir} (no {path})")
        raise typer.Exit(STATUS_NOT_RUNNING) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(STATUS_NOT_RUNNING) from None
    if stack.state == "stopped":
        typer.echo(f"not running: the stack on {data_dir} was stopped at {_local(stack.updated_at)}")
        raise typer.Exit(STATUS_NOT_RUNNING)
    if not stack.supervisor_alive():
        typer.echo(
            f"not running: its supervisor (podium up, pid {stack.pid}) is gone; {path} is stale "
            f"(last written {_local(stack.updated_at)})"
        )
        raise typer.Exit(STATUS_NOT_RUNNING)
    now = datetime.now(UTC)
    checked = [u for u in stack.units if u.state in (UnitState.RUNNING, UnitState.STARTING)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = dict(
            zip(
                (u.name for u in checked),
                pool.map(lambda u: check_health(u.health_urls), checked),
                strict=True,
            )
        )
    typer.echo(
        f"podium up (pid {stack.pid}) on {data_dir}: {stack.state} since {_local(stack.started_at)} "
        f"({_duration((now - stack.started_at).total_seconds())})"
    )
    rows = [("NAME", "KIND", "PID", "WORKERS", "PORT", "UP SINCE", "RESTARTS", "STATE", "HEALTH")]
    healthy = True
    for unit in stack.units:
        if unit.name in answers:
            problem = answers[unit.name]
            health = "healthy" if problem is None else f"unhealthy ({problem})"
        else:
            problem, health = "down", "-"
        healthy = healthy and unit.state is UnitState.RUNNING and problem is None
        since = "-"
        if unit.started_at is not None:
            since = f"{_local(unit.started_at)} ({_duration((now - unit.started_at).total_seconds())})"
        restarts = str(unit.restarts)
        if unit.worker_restarts:
            restarts += f" (+{unit.worker_restarts} workers)"
        rows.append(
            (
                unit.name,
                unit.kind,
                str(unit.pid or "-"),
                ",".join(map(str, unit.workers)) or "-",
                ",".join(map(str, unit.ports)) or "-",
                since,
                restarts,
                unit.state.value,
                health,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    exits = [u for u in stack.units if u.last_exit is not None]
    if exits:
        typer.echo("\nlast exits:")
        for unit in exits:
            assert unit.last_exit is not None
            typer.echo(f"  {unit.name}: {unit.last_exit.reason} at {_local(unit.last_exit.at)}")
    if not healthy:
        raise typer.Exit(STATUS_DOWN)


# -- podium logs -----------------------------------------------------------------------------------------

LOG_ALIASES = {"engine": "restate-server"}
"""Names ``podium logs`` accepts for a log file of another name."""
_TIME_FIELDS = ("time", "asctime", "timestamp", "ts")
_LEVEL_FIELDS = ("level", "levelname")
_NAME_FIELDS = ("name", "logger")
_MESSAGE_FIELDS = ("message", "msg")
_TRACE_FIELDS = ("exception", "exc_info", "stack", "stack_info")


@dataclass
class LogLine:
    """One line of a log file."""

    source: str
    """The file's name without ``.log``: ``restate-server``, a deployment's name, ``gateway``..."""
    text: str
    """The line as written, without its newline."""
    record: dict[str, Any] | None
    """The line as a JSON object, when it is one."""
    when: float | None
    """Its time (seconds since the epoch), when one can be read from it."""


def parse_time(value: object) -> float | None:
    """A timestamp (ISO 8601, or seconds since the epoch) as seconds since the epoch; None if it is not one.

    A time without a zone is local time, as Python's logging writes ``asctime``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or len(value) < 16 or ":" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip("[]"))
    except ValueError:
        return None
    return moment.timestamp()  # a naive datetime is taken as local time


def parse_log_line(source: str, text: str) -> LogLine:
    """Read ``text``: a JSON object (its time field), or a plain line that may start with a timestamp."""
    record: dict[str, Any] | None = None
    when: float | None = None
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            record = loaded
            when = next((t for k in _TIME_FIELDS if (t := parse_time(loaded.get(k))) is not None), None)
    if record is None:
        words = text.split(maxsplit=2)
        for candidate in (" ".join(words[:2]), words[0] if words else ""):
            when = parse_time(candidate.strip("[]"))
            if when is not None:
                break
    return LogLine(source, text, record, when)


def _shown_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in "\"'=" for c in value) else json.dumps(value)
    return json.dumps(value)


def render_log_line(line: LogLine, *, raw: bool = False) -> str:
    """``line`` for a person; with ``raw``, as it was written.

    A JSON object becomes ``time level name message key=value…`` (a traceback on the lines below);
    anything else is shown as it is.
    """
    if raw or line.record is None:
        return line.text
    fields = dict(line.record)

    def take(names: tuple[str, ...]) -> Any:
        for name in names:
            if name in fields:
                return fields.pop(name)
        return None

    stamp = take(_TIME_FIELDS)
    when = parse_time(stamp)
    shown_time = (
        datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if when is not None else stamp
    )
    level, name, message = take(_LEVEL_FIELDS), take(_NAME_FIELDS), take(_MESSAGE_FIELDS)
    trace = take(_TRACE_FIELDS)
    head = [str(p) for p in (shown_time, f"{level or '':<7}" if level else None, name, message) if p]
    head += [f"{key}={_shown_value(value)}" for key, value in fields.items() if value is not None]
    text = " ".join(head)
    if trace:
        text += "\n" + textwrap.indent(str(trace).rstrip("\n"), "    ")
    return text


def _log_files(folder: Path, name: str | None) -> list[Path]:
    available = sorted(folder.glob("*.log"))
    if name is None:
        return available
    path = folder / f"{LOG_ALIASES.get(name, name)}.log"
    if not path.is_file():
        names = ", ".join(p.stem for p in available) or "none yet"
        raise typer.BadParameter(f"no log {path} (logs in {folder}: {names})", param_hint="NAME")
    return [path]


def _timed(lines: list[LogLine]) -> bool:
    """Give every line of one file a time: a line without one (a traceback's) takes the one before it.

    Returns whether the file has any time at all.
    """
    first = next((line.when for line in lines if line.when is not None), None)
    if first is None:
        return False
    last = first
    for line in lines:
        if line.when is None:
            line.when = last
        last = line.when
    return True


class _LogReader:
    """Reads the complete lines appended to one log file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self, *, final: bool = False) -> list[LogLine]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # truncated or replaced: read it again from the start
                self.offset, self.partial = 0, b""
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        if final and self.partial:
            complete, self.partial = data, b""
        if not complete:
            return []
        return [
            parse_log_line(self.path.stem, text) for text in complete.decode("utf-8", "replace").splitlines()
        ]


@app.command()
def logs(
    name: Annotated[
        str | None,
        typer.Argument(help="One log: engine (restate-server), a deployment's name, gateway, supervisor."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    raw: Annotated[bool, typer.Option("--json", help="Print lines as written (JSON), not rendered.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines (all by default).")
    ] = None,
    data_dir: DataDir = Path(".podium"),
) -> None:
    """Show the stack's logs (DATA_DIR/logs/*.log): all of them interleaved by time, or NAME's.

    JSON lines are shown as time, level, logger, message and key=value fields; other lines as they are.
    """
    folder = data_dir / "logs"
    paths = _log_files(folder, name)
    if not paths and not follow:
        typer.echo(f"no logs in {folder} yet", err=True)
        raise typer.Exit(1)
    readers = {path: _LogReader(path) for path in paths}
    per_file = {path: reader.read(final=not follow) for path, reader in readers.items()}
    timed = [lines for lines in per_file.values() if _timed(lines)]
    untimed = [path for path, lines in per_file.items() if lines and lines[0].when is None]
    if len(paths) > 1 and untimed:
        typer.echo(
            f"# no time could be read in {', '.join(p.name for p in untimed)}: "
            + ("shown one after the other" if not timed else "shown after the others, one after the other"),
            err=True,
        )
    ordered: Iterator[LogLine] = heapq.merge(*timed, key=lambda line: line.when or 0.0)
    shown = [*ordered, *(line for path in untimed for line in per_file[path])]
    if tail is not None:
        shown = shown[len(shown) - tail :] if tail else []
    width = max((len(p.stem) for p in paths), default=0)
    prefixed = len(paths) > 1 or (follow and name is None)

    def show(line: LogLine) -> None:
        text = render_log_line(line, raw=raw)
        if prefixed:  # every line of it, a traceback's too, says where it comes from
            text = "\n".join(f"{line.source:<{width}} | {part}" for part in text.split("\n"))
        typer.echo(text)

    for line in shown:
        show(line)
    if not follow:
        return
    try:
        while True:
            if name is None:
                for path in sorted(folder.glob("*.log")):
                    if path not in readers:  # a log that appeared since (a deployment added)
                        readers[path] = _LogReader(path)
                        width = max(width, len(path.stem))
            for reader in readers.values():
                for line in reader.read():
                    show(line)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return


def main() -> None:
    """Entry point of the ``podium`` script."""
    app(prog_name="podium")


if __name__ == "__main__":  # pragma: no cover
    main()
