"""What a benchmark run measures: a flow on its own stack, and how to start each variant of that stack.

A target is a running system that takes orders over HTTP at ``base_url + path`` with a JSON ``body``
(a template whose ``{key}`` is replaced by a fresh order id, or a function that makes the body from the
id), and reports the CPU time of each of its processes. Restate targets are an engine plus service
processes (hypercorn or granian, one or more workers each), optionally behind Podium's admission-control
gateway; DBOS targets are a DBOS service with SQLite or PostgreSQL.

The ``shop`` target runs the shop as ``podium up`` does: one process per deployment that
``[tool.podium]`` of ``pyproject.toml`` lists for it (``shop``, every ``shop-…``, and ``common`` for
payments and notifications), each with its worker count there and ``PODIUM_DATA_DIR`` in the run's
work directory, so each deployment's CPU is measured apart. Its orders come from a catalogue
(:mod:`benchmarks.catalogue`) unless ``catalogue=fresh``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from benchmarks.catalogue import FRESH_BODY, SHOP_PATH, Catalogue
from benchmarks.loadgen import DEFAULT_BODY, Body
from benchmarks.postgres import process_cpu_seconds
from podium.cli import Deployment, gateway_process, issuer_key, read_deployments, start_gateway
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

SHOP_STANDALONE = "services.shop.app:standalone_app"
"""The shop and the common services in one app (``deployments=single``)."""


def _shop_flow() -> tuple[str, str, str]:
    """The shop's own benchmark flow (``BENCH_FLOW``): its one-process app, its path, its fresh body."""
    try:
        from services.shop.app import BENCH_FLOW
    except ImportError:  # a shop that declares none: the same order, as the benchmark knows it
        return SHOP_STANDALONE, SHOP_PATH, FRESH_BODY
    return BENCH_FLOW


def shop_deployments(pyproject: Path = ROOT / "pyproject.toml") -> list[Deployment]:
    """The deployments of ``[tool.podium]`` that serve the shop: ``shop``, ``shop-…`` and ``common``."""
    return [
        d for d in read_deployments(pyproject) if d.name in ("shop", "common") or d.name.startswith("shop-")
    ]


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
    catalogue: str = "zipf"
    """The shop's orders: ``zipf`` (1-3 lines over 1,000 SKUs of Zipf popularity, 5,000 customers:
    :class:`benchmarks.catalogue.Catalogue`) or ``fresh`` (one line of a fresh SKU and a fresh customer
    per order: the shop's ``BENCH_FLOW``). Shop only."""
    deployments: str = "separate"
    """The shop's processes: ``separate`` (one per shop deployment of ``[tool.podium]``, with its worker
    count there: :func:`shop_deployments`) or ``single`` (one process serving the shop and the common
    services, with ``workers`` workers). Shop only."""
    scale: str = ""
    """Worker counts of some shop deployments instead of ``[tool.podium]``'s, ``name=n`` joined by ``+``:
    ``shop-inventory=2+common=1``. Shop only, with ``deployments=separate``."""
    label: str = ""

    def describe(self, flow: str = "") -> str:
        """A short tag for reports."""
        if self.label:
            return self.label
        separate = flow == "shop" and self.deployments == "separate"
        text = f"{self.server}{'' if separate else f'x{self.workers}'} p{self.partitions} {self.loglet}"
        if self.gateway:
            text += f" gw{self.gateway}/{self.gateway_queue}"
        if flow == "shop":
            text += f" {self.catalogue}"
            if self.deployments == "single":
                text += " single"
        return text

    def workers_of(self, deployments: list[Deployment]) -> dict[str, int]:
        """Worker processes per deployment: ``[tool.podium]``'s, or :attr:`scale`'s where it names one."""
        workers = {d.name: d.workers for d in deployments}
        for item in filter(None, self.scale.split("+")):
            name, _, count = item.partition("=")
            if name not in workers or not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"scale: {item!r} is not <deployment>=<workers> for one of {', '.join(workers)}"
                )
            workers[name] = int(count)
        return workers


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment of a running target, as the reports name it."""

    workers: int
    """Its worker processes (at most one core each: a Python worker runs one thread of code)."""
    services: list[str]
    """The services it registered with the engine."""
    url: str


@dataclass
class Target:
    """A running system under test."""

    name: str
    base_url: str
    path: str
    body: Body
    cpu: Callable[[], dict[str, float]]
    """Cumulative CPU seconds by process (engine, service or ``deployment:<name>``, database, gateway)."""
    options: StackOptions | None = None
    stats_url: str | None = None
    headers: dict[str, str] | None = None
    """Sent with every request (the bearer token, behind the gateway)."""
    admin_url: str | None = None
    """The engine's admin API (Restate targets), where a run's invocations are counted."""
    deployments: dict[str, DeploymentInfo] = field(default_factory=dict)
    """Deployments run apart (the shop), by name; ``cpu()`` has a ``deployment:<name>`` entry for each."""
    read_store: Path | None = None
    """The read-model store whose ``events`` table gives the read side's lag (the shop)."""

    @property
    def label(self) -> str:
        """The flow and its stack options, for reports."""
        if self.options is None:
            return self.name
        text = f"{self.name} {self.options.describe(self.name)}"
        if self.deployments and not self.options.label:
            text += " [" + " ".join(f"{n}×{d.workers}" for n, d in self.deployments.items()) + "]"
        return text


def start_restate(flow: str, stack: ExitStack, workdir: Path, options: StackOptions) -> Target:
    """An engine and the service processes of ``flow`` (a RESTATE_FLOWS name or ``shop``)."""
    if flow != "shop" and (options.catalogue, options.deployments, options.scale) != ("zipf", "separate", ""):
        raise ValueError(f"catalogue, deployments and scale are options of the shop, not of {flow}")
    if options.catalogue not in ("zipf", "fresh"):
        raise ValueError(f"catalogue={options.catalogue!r}: choose zipf or fresh")
    if options.deployments not in ("separate", "single"):
        raise ValueError(f"deployments={options.deployments!r}: choose separate or single")
    spec, path, template = _shop_flow() if flow == "shop" else RESTATE_FLOWS[flow]
    body: Body = template
    if flow == "shop" and options.catalogue == "zipf":
        body = Catalogue(template).body
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
    # Each shop deployment keeps its SQL stores under the run's work directory (never in the project's).
    env = {"PYTHONPATH": str(ROOT), "PODIUM_DATA_DIR": str(home.resolve())}
    separate = flow == "shop" and options.deployments == "separate"
    if separate:
        listed = shop_deployments()
        workers_of = options.workers_of(listed)
        units = [(d.name, d.app, workers_of[d.name]) for d in listed]
    else:
        units = [("service", spec, options.workers)]
    processes: dict[str, DeploymentProcess] = {}
    deployments: dict[str, DeploymentInfo] = {}
    for name, app, workers in units:
        process = DeploymentProcess(
            app,
            log_file=home / f"{name}.log",
            cwd=ROOT,
            env=env,
            server=options.server,
            workers=workers,
        )
        process.start(timeout=60)
        stack.callback(process.stop)
        answer = engine.register(process.url)
        processes[name] = process
        deployments[name] = DeploymentInfo(
            workers=workers, services=[str(s["name"]) for s in answer.get("services", [])], url=process.url
        )
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
    # One process serving everything is "service", as for the other flows; deployments run apart are
    # "deployment:<name>", one entry each.

    def cpu() -> dict[str, float]:
        seconds = {
            ("deployment:" + name if separate else name): process_cpu_seconds(process.pid)
            for name, process in processes.items()
        }
        return {
            "engine": process_cpu_seconds(engine.pid),
            **seconds,
            "gateway": process_cpu_seconds(gateway_pid()),
        }

    return Target(
        flow,
        base_url,
        path,
        body,
        cpu,
        options,
        stats_url,
        headers,
        admin_url=engine.admin_url,
        deployments=deployments if separate else {},
        read_store=home / "shop" / "orders.db" if flow == "shop" else None,
    )


def start_target(flow: str, stack: ExitStack, workdir: Path, options: StackOptions) -> Target:
    """Start ``flow`` (see FLOW_NAMES) with ``options`` (Restate flows only)."""
    if flow.startswith("dbos-"):
        from benchmarks.dbos_flow import start_dbos

        dbos = start_dbos(flow.removeprefix("dbos-"), stack, workdir)
        return Target(flow, dbos.base_url, dbos.path, DEFAULT_BODY, dbos.cpu)
    return start_restate(flow, stack, workdir, options)


def parse_target(text: str) -> tuple[str, StackOptions]:
    """``flow[:key=value,...]``, e.g. ``podium:server=granian,workers=2,loglet=local,gateway=120``,
    ``shop:catalogue=fresh``, ``shop:scale=shop=3+common=1``, ``shop:deployments=single,workers=2``."""
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


def flows_engine(stack: ExitStack, home: Path) -> Engine:
    """A fresh engine under ``home`` with the benchmark flows registered; ``stack`` stops both."""
    engine = Engine(test_engine_config(home / "engine"))
    engine.start()
    stack.callback(engine.stop)
    service = DeploymentProcess(
        "benchmarks.flows:podium_app", log_file=home / "service.log", cwd=ROOT, workers=2
    )
    service.start(timeout=60)
    stack.callback(service.stop)
    engine.register(service.url)
    return engine
