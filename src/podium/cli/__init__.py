"""The ``podium`` command: ``up`` runs everything, ``invoke`` calls a handler, ``serve`` runs a deployment."""

from __future__ import annotations

import getpass
import json
import re
import signal
import sys
import threading
import tomllib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from podium._app import IDENTITY_KEYS_ENV
from podium.gateway import CLIENTS_FILE, HEALTH_PATH, ClientStore, TokenIssuer, parse_scopes
from podium.runtime import (
    REQUEST_IDENTITY_FILE,
    RETIRED_DIR,
    TOKEN_ISSUER_FILE,
    ChildProcess,
    DeploymentProcess,
    Engine,
    EngineConfig,
    EngineError,
    KeyFileError,
    KeyPair,
    keys_dir,
    load_app,
    load_public_keys,
    restate_public_key,
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


def read_deployments(pyproject: Path) -> list[Deployment]:
    """The ``[tool.podium] deployments`` table of ``pyproject``."""
    entries = _podium_table(pyproject).get("deployments", [])
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
                env={
                    "PODIUM_DATA_DIR": str(data_dir.resolve()),
                    IDENTITY_KEYS_ENV: identity_keys(identity, data_dir),
                },
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
                admin_url=engine.admin_url,
                data_dir=data_dir,
                edge=read_edge_routes(config),
                port=gateway_port,
                max_in_flight=max_in_flight,
                max_queue=max_queue,
                log_file=data_dir / "logs" / "gateway.log",
            )
            start_gateway(gateway, port=gateway_port)
            front = (
                f"  gateway  http://127.0.0.1:{gateway_port}   (the public door: public handlers only, "
                f"with a token (podium token); {max_in_flight} in flight, {max_queue} queued, "
                "then 503 + Retry-After)\n"
            )
        typer.echo(
            "\nPodium is up.\n"
            f"  ingress  {engine.ingress_url}   (trusted, loopback only: every handler; podium invoke)\n"
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
) -> ChildProcess:
    """The ``python -m podium.gateway`` process in front of ``upstream`` (not started).

    It verifies tokens signed with the issuer key under ``data_dir`` (made now if missing) and the
    retired keys beside it, and serves the Auth Service's token endpoint from the client store there.
    """
    key = issuer_key(data_dir)
    argv = [
        sys.executable,
        "-m",
        "podium.gateway",
        "--upstream",
        upstream,
        "--admin-url",
        admin_url,
        "--issuer-key",
        str(key.path.resolve()),
        "--retired-keys",
        str((keys_dir(data_dir) / RETIRED_DIR / "issuer").resolve()),
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
    # Edge routes keep their data where the deployments keep theirs (the card vault: providers/).
    env = {"PODIUM_DATA_DIR": str(data_dir.resolve())}
    return ChildProcess(argv, log_file=log_file, env=env, name="gateway")


def start_gateway(gateway: ChildProcess, *, port: int) -> None:
    """Start ``gateway`` and wait until it answers on ``port``."""
    gateway.start()
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"

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


def main() -> None:
    """Entry point of the ``podium`` script."""
    app(prog_name="podium")


if __name__ == "__main__":  # pragma: no cover
    main()
