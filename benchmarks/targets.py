"""What a benchmark run measures: a flow on its own stack, and how to start each variant of that stack.

A target is a running system that takes orders over HTTP at ``base_url + path`` with a JSON ``body``
(``{key}`` replaced by a fresh order id), and reports the CPU time of each of its processes. Restate
targets are an engine plus a service process (hypercorn or granian, one or more workers), optionally
behind Podium's admission-control gateway; DBOS targets are a DBOS service with SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks.loadgen import DEFAULT_BODY
from benchmarks.postgres import process_cpu_seconds
from podium.cli import gateway_process, issuer_key, start_gateway
from podium.gateway import TokenIssuer
from podium.runtime import DeploymentProcess, Engine
from podium.runtime._serve import free_port
from podium.testing import test_engine_config

ROOT = Path(__file__).resolve().parent.parent

RESTATE_FLOWS: dict[str, tuple[str, str, str]] = {
    # name: (app spec, path template, body template); {key} is the order id
    "podium": ("benchmarks.flows:podium_app", "/PodiumOrder/{key}/Run", DEFAULT_BODY),
    "raw": ("benchmarks.flows:raw_app", "/RawOrder/{key}/run", DEFAULT_BODY),
    "podium-nolog": ("benchmarks.flows:podium_app", "/PodiumOrderNoLog/{key}/Run", DEFAULT_BODY),
}


def _shop_flow() -> tuple[str, str, str]:
    from services.shop.app import BENCH_FLOW

    return BENCH_FLOW


FLOW_NAMES = [*RESTATE_FLOWS, "shop", "dbos-sqlite", "dbos-postgres"]


@dataclass(frozen=True)
class StackOptions:
    """How to run a Restate target's engine and service (each one a tuning choice the docs compare)."""

    server: str = "granian"
    """``granian`` (Rust HTTP/2, ASGI; Podium's default) or ``hypercorn`` (pure Python HTTP/2)."""
    workers: int = 2
    """Service worker processes (granian)."""
    partitions: int = 4
    loglet: str = "replicated"
    """Bifrost provider: ``replicated`` (restate's default) or ``local``; both fsync every write."""
    rocksdb_memory: str = "512 MiB"
    gateway: int = 0
    """Put Podium's gateway in front of the ingress with this many requests in flight (0: none)."""
    gateway_queue: int = 0
    """Requests the gateway may queue when every slot is busy."""
    label: str = ""

    def describe(self) -> str:
        """A short tag for reports."""
        text = f"{self.server}x{self.workers} p{self.partitions} {self.loglet}"
        if self.gateway:
            text += f" gw{self.gateway}/{self.gateway_queue}"
        return self.label or text


@dataclass
class Target:
    """A running system under test."""

    name: str
    base_url: str
    path: str
    body: str
    cpu: Callable[[], dict[str, float]]
    """Cumulative CPU seconds by process (engine, service, database, gateway)."""
    options: StackOptions | None = None
    stats_url: str | None = None
    headers: dict[str, str] | None = None
    """Sent with every request (the bearer token, behind the gateway)."""

    @property
    def label(self) -> str:
        """The flow and its stack options, for reports."""
        return self.name if self.options is None else f"{self.name} {self.options.describe()}"


def start_restate(flow: str, stack: ExitStack, workdir: Path, options: StackOptions) -> Target:
    """An engine and a service process for ``flow`` (a RESTATE_FLOWS name or ``shop``)."""
    spec, path, body = _shop_flow() if flow == "shop" else RESTATE_FLOWS[flow]
    home = workdir
    extra = '\n[bifrost]\ndefault-provider = "local"\n' if options.loglet == "local" else ""
    engine = Engine(
        test_engine_config(
            home,
            partitions=options.partitions,
            rocksdb_memory=options.rocksdb_memory,
            query_engine_memory="128 MiB",
            extra_toml=extra,
        )
    )
    engine.start()
    stack.callback(engine.stop)
    service = DeploymentProcess(
        spec,
        log_file=home / "service.log",
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        server=options.server,
        workers=options.workers,
    )
    service.start(timeout=60)
    stack.callback(service.stop)
    url = service.url
    engine.register(url)
    base_url = engine.ingress_url
    gateway_pid: Callable[[], int | None] = lambda: None  # noqa: E731
    stats_url = None
    headers = None
    if options.gateway:
        gw_port = free_port()
        gateway = gateway_process(
            engine.ingress_url,
            admin_url=engine.admin_url,
            data_dir=home,
            edge=[],
            port=gw_port,
            max_in_flight=options.gateway,
            max_queue=options.gateway_queue,
            log_file=home / "gateway.log",
        )
        stack.callback(gateway.stop)
        start_gateway(gateway, port=gw_port)
        base_url = f"http://127.0.0.1:{gw_port}"
        stats_url = f"{base_url}/podium/gateway/stats"
        gateway_pid = lambda: gateway.pid  # noqa: E731
        # One client's token for the whole run, as a real client reuses it until it expires.
        token = TokenIssuer(issuer_key(home)).issue("bench", ["*:*"], timedelta(hours=6))
        headers = {"authorization": f"Bearer {token}"}

    def cpu() -> dict[str, float]:
        return {
            "engine": process_cpu_seconds(engine.pid),
            "service": process_cpu_seconds(service.pid),
            "gateway": process_cpu_seconds(gateway_pid()),
        }

    return Target(flow, base_url, path, body, cpu, options, stats_url, headers)


def start_target(flow: str, stack: ExitStack, workdir: Path, options: StackOptions) -> Target:
    """Start ``flow`` (see FLOW_NAMES) with ``options`` (Restate flows only)."""
    if flow.startswith("dbos-"):
        from benchmarks.dbos_flow import start_dbos

        dbos = start_dbos(flow.removeprefix("dbos-"), stack, workdir)
        return Target(flow, dbos.base_url, dbos.path, DEFAULT_BODY, dbos.cpu)
    return start_restate(flow, stack, workdir, options)


def parse_target(text: str) -> tuple[str, StackOptions]:
    """``flow[:key=value,...]``, e.g. ``podium:server=granian,workers=2,loglet=local,gateway=120``."""
    flow, _, rest = text.partition(":")
    if flow not in FLOW_NAMES:
        raise ValueError(f"unknown flow {flow!r}; choose from {', '.join(FLOW_NAMES)}")
    fields: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in StackOptions.__dataclass_fields__:
            raise ValueError(f"unknown option {key!r} in {text!r}")
        default = getattr(StackOptions(), key)
        fields[key] = type(default)(value)
    return flow, StackOptions(**fields)  # type: ignore[arg-type]
