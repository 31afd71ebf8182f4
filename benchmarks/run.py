"""Measure the order flow: Podium against hand-written restate-sdk, on this machine, in one run.

    python -m benchmarks.run --quick             # ~3 minutes: 3 rates, 20 s each
    python -m benchmarks.run --rates 50,100,150,200 --duration 60

Each flow gets its own engine (tuned as ``podium up`` tunes it) and its own service process. Rates are
interleaved between the flows (rate 1 for every flow, then rate 2, ...) so that drift in a shared,
noisy machine hits both alike. Reported per run: offered and achieved rate, latency percentiles, the
share over 1 s and 5 s, errors by kind, and CPU time per order of the engine, the service process and
the load generator, from the OS accounting (psutil). Results go to ``benchmarks/results/`` as JSON and
PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.flows import FLOWS
from benchmarks.loadgen import Run, closed_loop, open_loop
from podium.runtime import DeploymentProcess, Engine
from podium.testing import test_engine_config

RESULTS = Path(__file__).parent / "results"


@dataclass
class Target:
    """One flow under test: its engine, its service process, its request path."""

    name: str
    engine: Engine
    service: DeploymentProcess
    path: str

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the engine and the service process."""
        return {
            "engine": _cpu(self.engine.pid),
            "service": _cpu(self.service.pid),
        }


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _self_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarise(run: Run, *, offered: float | None, cpu: dict[str, float]) -> dict[str, Any]:
    """Stats of one run (every sample counts; failures count as slower than any success)."""
    ok = [s.latency for s in run.samples if s.outcome == "ok"]
    total = len(run.samples)
    errors = Counter(s.outcome for s in run.samples if s.outcome != "ok")
    over = lambda limit: sum(1 for s in run.samples if s.outcome != "ok" or s.latency > limit) / max(1, total)  # noqa: E731
    orders = max(1, len(ok))
    return {
        "offeredRate": offered,
        "sent": total,
        "ok": len(ok),
        "achievedRate": len(ok) / run.elapsed if run.elapsed else 0.0,
        "latency": {
            "p50": percentile(ok, 0.50),
            "p90": percentile(ok, 0.90),
            "p99": percentile(ok, 0.99),
            "p999": percentile(ok, 0.999),
            "max": max(ok) if ok else None,
            "mean": statistics.fmean(ok) if ok else None,
        },
        "shareOver1s": over(1.0),
        "shareOver5s": over(5.0),
        "errors": dict(errors),
        "cpuMsPerOrder": {name: 1000 * seconds / orders for name, seconds in cpu.items()},
    }


def start_target(name: str, stack: ExitStack, workdir: Path) -> Target:
    """A fresh engine and service process for flow ``name``."""
    spec, path = FLOWS[name]
    engine = Engine(
        test_engine_config(workdir / name, rocksdb_memory="512 MiB", query_engine_memory="128 MiB")
    )
    engine.start()
    stack.callback(engine.stop)
    service = DeploymentProcess(spec, log_file=workdir / name / "service.log")
    service.start()
    stack.callback(service.stop)
    engine.register(service.url)
    return Target(name, engine, service, path)


async def measure(target: Target, *, mode: str, level: float, duration: float) -> dict[str, Any]:
    """One run against one flow at one offered rate (open) or concurrency (closed)."""
    before, self_before = target.cpu(), _self_cpu()
    if mode == "open":
        run = await open_loop(target.engine.ingress_url, target.path, rate=level, duration=duration)
    else:
        run = await closed_loop(
            target.engine.ingress_url, target.path, concurrency=int(level), duration=duration
        )
    after, self_after = target.cpu(), _self_cpu()
    cpu = {k: after[k] - before[k] for k in before} | {"loadgen": self_after - self_before}
    result = summarise(run, offered=level if mode == "open" else None, cpu=cpu)
    result["flow"] = target.name
    result["mode"] = mode
    result["level"] = level
    return result


def plot(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Latency percentiles against offered rate, and CPU per order, one line or bar group per flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    flows = sorted({r["flow"] for r in results})
    fig, ax = plt.subplots(figsize=(8, 5))
    for flow in flows:
        rows = sorted((r for r in results if r["flow"] == flow), key=lambda r: r["level"])
        levels = [r["level"] for r in rows]
        for q, style in (("p50", "--"), ("p99", "-")):
            ax.plot(
                levels,
                [r["latency"][q] or float("nan") for r in rows],
                style,
                marker="o",
                label=f"{flow} {q}",
            )
    ax.set_xlabel("offered rate (orders/s)")
    ax.set_ylabel("latency (s)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.legend()
    ax.set_title("Order flow latency against offered load")
    files.append(out.with_name(out.stem + "-latency.png"))
    fig.savefig(files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    parts = ["engine", "service", "loadgen"]
    levels = sorted({r["level"] for r in results})
    width = 0.8 / len(flows)
    for i, flow in enumerate(flows):
        rows = {r["level"]: r for r in results if r["flow"] == flow}
        bottom = [0.0] * len(levels)
        for part in parts:
            values = [rows[lv]["cpuMsPerOrder"][part] if lv in rows else 0.0 for lv in levels]
            xs = [n + i * width for n in range(len(levels))]
            ax.bar(xs, values, width, bottom=bottom, label=f"{flow} {part}")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks([n + width * (len(flows) - 1) / 2 for n in range(len(levels))], [str(lv) for lv in levels])
    ax.set_xlabel("offered rate (orders/s)")
    ax.set_ylabel("CPU ms per completed order")
    ax.legend(fontsize=8)
    ax.set_title("CPU per order, by process")
    files.append(out.with_name(out.stem + "-cpu.png"))
    fig.savefig(files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return files


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", default="podium,raw", help="comma-separated: " + ", ".join(FLOWS))
    parser.add_argument("--mode", choices=["open", "closed"], default="open")
    parser.add_argument("--rates", default="40,80,120", help="offered rates (open) or concurrencies (closed)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--quick", action="store_true", help="3 rates, 20 s each (about 3 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    levels = [float(x) for x in args.rates.split(",")]
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    if args.quick:
        levels, args.duration, args.warmup = [40.0, 80.0, 120.0], 20.0, 5.0

    results: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        targets = [start_target(name, stack, Path(tmp)) for name in flows]
        for target in targets:
            asyncio.run(measure(target, mode=args.mode, level=levels[0], duration=args.warmup))
        for level in levels:
            for target in targets:
                result = asyncio.run(measure(target, mode=args.mode, level=level, duration=args.duration))
                results.append(result)
                lat = result["latency"]
                print(
                    f"{target.name:>7} {args.mode} {level:>6.0f}: achieved {result['achievedRate']:6.1f}/s "
                    f"p50 {lat['p50'] or 0:.3f}s p99 {lat['p99'] or 0:.3f}s errors {result['errors']} "
                    f"cpu/order {json.dumps({k: round(v, 2) for k, v in result['cpuMsPerOrder'].items()})}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"bench-{stamp}.json"
    report = {
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "memoryGiB": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {"mode": args.mode, "levels": levels, "duration": args.duration, "warmup": args.warmup},
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2))
    for path in [out, *plot(results, out)]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
