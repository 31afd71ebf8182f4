"""The ``podium`` command: ``up`` runs everything, ``invoke`` calls a handler, ``serve`` runs a deployment."""

from __future__ import annotations

import json
import signal
import sys
import threading
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from podium.gateway import STATS_PATH
from podium.runtime import (
    ChildProcess,
    DeploymentProcess,
    Engine,
    EngineConfig,
    EngineError,
    load_app,
    serve_forever,
    wait_until,
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


@dataclass(frozen=True)
class Deployment:
    """One deployment that ``podium up`` serves: a name, an ASGI app spec and a stable port."""

    name: str
    app: str
    port: int
    workers: int = 1
    """Worker processes serving it (granian)."""


def read_deployments(pyproject: Path) -> list[Deployment]:
    """The ``[tool.podium] deployments`` table of ``pyproject``."""
    if not pyproject.is_file():
        raise typer.BadParameter(f"{pyproject} not found; run from the project root or pass --config")
    data = tomllib.loads(pyproject.read_text())
    entries = data.get("tool", {}).get("podium", {}).get("deployments", [])
    if not entries:
        raise typer.BadParameter(f"{pyproject} has no [tool.podium] deployments")
    return [
        Deployment(name=e["name"], app=e["app"], port=int(e["port"]), workers=int(e.get("workers", 1)))
        for e in entries
    ]


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
) -> None:
    """Start the engine and every deployment, register them, and stay in the foreground until Ctrl-C."""
    deployments = read_deployments(config)
    engine_config = EngineConfig(
        data_dir=data_dir, ingress_port=ingress_port, admin_port=admin_port, node_port=node_port
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = Engine(engine_config)
    processes: list[DeploymentProcess] = []
    gateway: ChildProcess | None = None
    try:
        typer.echo(f"starting restate-server (data in {data_dir}/restate-data) ...")
        engine.start()
        for deployment in deployments:
            process = DeploymentProcess(
                deployment.app,
                port=deployment.port,
                log_file=data_dir / "logs" / f"{deployment.name}.log",
                env={"PODIUM_DATA_DIR": str(data_dir.resolve())},
                workers=deployment.workers,
            )
            processes.append(process)
            process.start()
            answer = engine.register(process.url)
            names = ", ".join(sorted(s["name"] for s in answer.get("services", [])))
            typer.echo(f"  {deployment.name:<12} {process.url}  {names}")
        front = ""
        if gateway_port:
            gateway = gateway_process(
                engine.ingress_url,
                port=gateway_port,
                max_in_flight=max_in_flight,
                max_queue=max_queue,
                log_file=data_dir / "logs" / "gateway.log",
            )
            start_gateway(gateway, port=gateway_port)
            front = (
                f"  gateway  http://127.0.0.1:{gateway_port}   (the ingress behind admission control: "
                f"{max_in_flight} in flight, {max_queue} queued, then 503 + Retry-After)\n"
            )
        typer.echo(
            "\nPodium is up.\n"
            f"  ingress  {engine.ingress_url}   (try: podium invoke ...)\n"
            + front
            + f"  admin    {engine.admin_url}\n"
            f"  web UI   {engine.admin_url}/ui/\n"
            f"  logs     {data_dir / 'logs'}/\n"
            "Ctrl-C stops everything; `podium up` again resumes in-flight workflows.",
        )
        while not stop.is_set():
            if not engine.running():
                raise EngineError(f"restate-server exited; see {engine.log_file}")
            for process in processes:
                if not process.running():
                    raise EngineError(f"deployment {process.app_spec} exited; see {process.log_file}")
            if gateway is not None and not gateway.running():
                raise EngineError(f"the gateway exited; see {gateway.log_file}")
            stop.wait(0.5)
        typer.echo("stopping ...")
    except (EngineError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if gateway is not None:
            gateway.stop(grace=12.0)  # the gateway lets forwarded requests finish for up to 10 s
        for process in processes:
            process.stop()
        engine.stop()


def gateway_process(
    upstream: str, *, port: int, max_in_flight: int, max_queue: int, log_file: Path
) -> ChildProcess:
    """The ``python -m podium.gateway`` process in front of ``upstream`` (not started)."""
    return ChildProcess(
        [
            sys.executable,
            "-m",
            "podium.gateway",
            "--upstream",
            upstream,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-in-flight",
            str(max_in_flight),
            "--max-queue",
            str(max_queue),
        ],
        log_file=log_file,
        name="gateway",
    )


def start_gateway(gateway: ChildProcess, *, port: int) -> None:
    """Start ``gateway`` and wait until it answers on ``port``."""
    gateway.start()
    url = f"http://127.0.0.1:{port}{STATS_PATH}"

    def ready() -> bool:
        if not gateway.running():
            raise EngineError(f"the gateway exited at start; see {gateway.log_file}:\n{gateway.tail()}")
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what="the gateway")


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


def main() -> None:
    """Entry point of the ``podium`` script."""
    app(prog_name="podium")


if __name__ == "__main__":  # pragma: no cover
    main()
