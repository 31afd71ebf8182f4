"""Measure the order flow on this machine, in one run: Podium, hand-written restate-sdk, DBOS, and tunings.

    python -m benchmarks.run --quick                     # the `make bench` plan, about 11 minutes
    python -m benchmarks.run --targets podium,raw --rates 100,150,200 --duration 60
    python -m benchmarks.run --targets "raw:server=granian,raw:server=hypercorn" --rates 120
    python -m benchmarks.run --targets podium --search --duration 60     # highest rate with p99 < 1 s / 5 s

A target is ``flow[:option=value,...]`` (flows: podium, raw, shop, dbos-sqlite, dbos-postgres; options:
see :class:`benchmarks.targets.StackOptions`); several targets are separated by ``;`` or, when no target
has options, by ``,``. Each target gets its own engine (or database) and service process. Rates are
interleaved between targets (rate 1 for every target, then rate 2, ...) so that drift in a shared, noisy
machine hits all alike; between runs the harness waits until the system is idle again. Reported per run:
offered and achieved rate, latency percentiles, the share over 1 s and 5 s, errors by kind, and CPU time
per completed order of every process (engine, service, gateway, database, load generator) from the OS
accounting. Results go to ``benchmarks/results/`` as JSON and PNG plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from benchmarks.loadgen import Run, closed_loop, open_loop, run_load
from benchmarks.targets import Target, parse_target, start_target

RESULTS = Path(__file__).parent / "results"


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
    refused = [s.latency for s in run.samples if s.outcome in ("http-503", "http-429")]
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
        "refusedLatencyP99": percentile(refused, 0.99),
        "cpuMsPerOrder": {name: 1000 * seconds / orders for name, seconds in cpu.items()},
    }


def wait_idle(target: Target, *, limit: float = 0.15, timeout: float = 120.0) -> float:
    """Wait until the target's processes use less than ``limit`` cores (a backlog has drained)."""
    started = time.monotonic()
    previous = sum(target.cpu().values())
    while time.monotonic() - started < timeout:
        time.sleep(1.0)
        now = sum(target.cpu().values())
        if now - previous < limit:
            break
        previous = now
    return time.monotonic() - started


def measure(target: Target, *, mode: str, level: float, duration: float) -> dict[str, Any]:
    """One run against one target at one offered rate (open) or concurrency (closed)."""
    wait_idle(target)
    before, self_before = target.cpu(), _self_cpu()
    if mode == "open":
        run = run_load(
            open_loop(
                target.base_url,
                target.path,
                rate=level,
                duration=duration,
                body=target.body,
                headers=target.headers,
            )
        )
    else:
        run = run_load(
            closed_loop(
                target.base_url,
                target.path,
                concurrency=int(level),
                duration=duration,
                body=target.body,
                headers=target.headers,
            )
        )
    after, self_after = target.cpu(), _self_cpu()
    cpu = {k: after[k] - before[k] for k in before if after[k] - before[k] > 0} | {
        "loadgen": self_after - self_before
    }
    result = summarise(run, offered=level if mode == "open" else None, cpu=cpu)
    result["flow"] = target.name
    result["target"] = target.label
    result["mode"] = mode
    result["level"] = level
    result["duration"] = duration
    result["cpuCores"] = sum(cpu.values()) / max(run.elapsed, 1e-9)
    return result


def show(result: dict[str, Any]) -> None:
    """One line per run."""
    lat = result["latency"]
    cpu = {k: round(v, 2) for k, v in result["cpuMsPerOrder"].items()}
    print(
        f"{result['target']:>44} {result['mode']} {result['level']:>6.0f}: "
        f"achieved {result['achievedRate']:6.1f}/s p50 {lat['p50'] or 0:.3f}s p99 {lat['p99'] or 0:.3f}s "
        f"max {lat['max'] or 0:.2f}s errors {result['errors']} cores {result['cpuCores']:.2f} "
        f"cpu ms/order {json.dumps(cpu)}",
        flush=True,
    )


def passes(result: dict[str, Any], bar: float) -> bool:
    """Whether a run held its offered rate with p99 under ``bar`` seconds and no errors."""
    p99 = result["latency"]["p99"]
    return (
        not result["errors"]
        and p99 is not None
        and p99 < bar
        and result["achievedRate"] >= 0.97 * result["offeredRate"]
    )


def search(
    run: Callable[[float], dict[str, Any]], *, bar: float, low: float, high: float, step: float
) -> tuple[float | None, list[dict[str, Any]]]:
    """The highest rate (within ``step``) that :func:`passes` ``bar``, by bisection in [low, high].

    ``low`` is tried first; if it fails, the answer is None (below the search range).
    """
    results = []
    first = run(low)
    results.append(first)
    if not passes(first, bar):
        return None, results
    good, bad = low, high
    top = run(high)
    results.append(top)
    if passes(top, bar):
        return high, results
    while bad - good > step:
        middle = round((good + bad) / 2 / step) * step
        if middle in (good, bad):
            break
        result = run(middle)
        results.append(result)
        if passes(result, bar):
            good = middle
        else:
            bad = middle
    return good, results


def plot(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Latency percentiles and goodput against offered rate, and CPU per order, one series per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    open_rows = [r for r in results if r["mode"] == "open"]
    labels = sorted({r["target"] for r in results})
    files = []

    def rows_of(label: str) -> list[dict[str, Any]]:
        # several runs at one rate (a search may repeat one): keep the last
        by_level = {r["level"]: r for r in open_rows if r["target"] == label}
        return [by_level[level] for level in sorted(by_level)]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for label in labels:
        rows = rows_of(label)
        levels = [r["level"] for r in rows]
        line = ax.plot(
            levels, [r["latency"]["p99"] or float("nan") for r in rows], "-", marker="o", label=f"{label} p99"
        )
        ax.plot(
            levels,
            [r["latency"]["p50"] or float("nan") for r in rows],
            "--",
            color=line[0].get_color(),
            label=f"{label} p50",
        )
        ax2.plot(levels, [r["achievedRate"] for r in rows], "-", marker="o", label=label)
    ax.set_xlabel("offered rate (orders/s)")
    ax.set_ylabel("latency of completed orders (s)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(5.0, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=7)
    ax.set_title("Latency against offered load")
    top = max([r["level"] for r in open_rows], default=1.0)
    ax2.plot([0, top], [0, top], color="grey", linewidth=0.8, label="offered")
    ax2.set_xlabel("offered rate (orders/s)")
    ax2.set_ylabel("completed orders/s (goodput)")
    ax2.legend(fontsize=7)
    ax2.set_title("Goodput against offered load")
    files.append(out.with_name(out.stem + "-latency.png"))
    fig.savefig(files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    # One bar per run (target at a level), stacked by process, a colour per process.
    runs = sorted(results, key=lambda r: (r["level"], r["target"]))
    parts = sorted({part for r in runs for part in r["cpuMsPerOrder"]})
    colours = dict(zip(parts, plt.get_cmap("tab10").colors, strict=False))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(runs) + 2), 5.5))
    bottom = [0.0] * len(runs)
    for part in parts:
        values = [r["cpuMsPerOrder"].get(part, 0.0) for r in runs]
        ax.bar(range(len(runs)), values, 0.7, bottom=bottom, label=part, color=colours[part])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(
        range(len(runs)),
        [f"{r['target']} @{r['level']:g}" for r in runs],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("CPU ms per completed order")
    ax.legend(fontsize=8)
    ax.set_title("CPU per completed order, by process")
    files.append(out.with_name(out.stem + "-cpu.png"))
    fig.savefig(files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return files


QUICK_PLAN = [
    # (what it shows, targets, offered rates)
    ("podium vs hand-written vs DBOS", "podium;raw;dbos-sqlite;dbos-postgres", "60,120,167"),
    ("overload behind the gateway (1.5x and 2x capacity)", "podium:gateway=96,gateway_queue=32", "280,370"),
    ("overload without admission control (2x capacity)", "podium", "370"),
]
"""What ``make bench`` (``--quick``) runs, 20 s per run after a 5 s warm-up: about 11 minutes."""


def run_plan(
    title: str, targets: str, levels: list[float], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start every target, run every level against each (interleaved), or search; stop them."""
    separator = ";" if ";" in targets or ":" in targets else ","
    specs = [parse_target(t.strip()) for t in targets.split(separator) if t.strip()]
    results: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}
    print(f"== {title}", flush=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        running = [
            start_target(flow, stack, Path(tmp) / f"t{n}", options) for n, (flow, options) in enumerate(specs)
        ]
        for target in running:
            print(f"warming up {target.label} ...", flush=True)
            measure(target, mode=args.mode, level=min(levels[0], 100.0), duration=args.warmup)
        if args.search:
            for target in running:
                low, high = (float(x) for x in args.search_range.split(","))

                def run_at(rate: float, target: Target = target) -> dict[str, Any]:
                    result = measure(target, mode="open", level=rate, duration=args.duration)
                    show(result)
                    results.append(result)
                    return result

                found = {}
                for bar in (1.0, 5.0):
                    best, _ = search(run_at, bar=bar, low=low, high=high, step=args.search_step)
                    found[f"p99<{bar:g}s"] = best
                    if best is not None:
                        low = best  # the 5 s search starts where the 1 s search ended
                searches[target.label] = found
                print(f"{target.label}: highest sustained rate {found}", flush=True)
        else:
            for level in levels:
                for target in running:
                    result = measure(target, mode=args.mode, level=level, duration=args.duration)
                    result["plan"] = title
                    results.append(result)
                    show(result)
    return results, searches


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="podium;raw", help="flow[:option=value,...], see above")
    parser.add_argument("--mode", choices=["open", "closed"], default="open")
    parser.add_argument(
        "--rates", default="60,120,167", help="offered rates (open) or concurrencies (closed)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    parser.add_argument(
        "--search", action="store_true", help="find the highest rate with p99 < 1 s and < 5 s"
    )
    parser.add_argument("--search-range", default="100,300", help="low,high offered rate for --search")
    parser.add_argument("--search-step", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="the make-bench plan (about 11 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.search = 20.0, 5.0, False
        plan = [
            (title, targets, [float(x) for x in rates.split(",")]) for title, targets, rates in QUICK_PLAN
        ]
    else:
        plan = [("runs", args.targets, [float(x) for x in args.rates.split(",")])]

    results: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}
    for title, targets, levels in plan:
        more, found = run_plan(title, targets, levels, args)
        results += more
        searches |= found
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
            "loadAverageAtEnd": os.getloadavg(),
        },
        "settings": {
            "plan": [{"title": t, "targets": g, "levels": lv} for t, g, lv in plan],
            "mode": args.mode,
            "duration": args.duration,
            "warmup": args.warmup,
            "search": args.search,
        },
        "searches": searches,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2))
    for path in [out, *plot(results, out)]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
