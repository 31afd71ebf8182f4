"""Measure the order flow on this machine, in one run: Podium, hand-written restate-sdk, DBOS, the shop.

    python -m benchmarks.run --quick                     # the `make bench` plan, about 11 minutes
    python -m benchmarks.run --targets podium,raw --rates 100,150,200 --duration 60
    python -m benchmarks.run --targets "raw:server=granian,raw:server=hypercorn" --rates 120
    python -m benchmarks.run --targets podium --search --duration 60     # highest rate with p99 < 1 s / 5 s

The shop (issue 12), one command per question:

    python -m benchmarks.run --targets shop --rates 167 --duration 60           # catalogue orders at 167/s
    python -m benchmarks.run --targets podium,shop --rates 167 --duration 60    # CPU per order side by side
    python -m benchmarks.run --targets shop --rates 120 --duration 1800         # growth: p99 per minute
    python -m benchmarks.run --targets "shop:gateway=96,gateway_queue=32" --rates 334 --capacity 167
                                                                  # overload: 2x capacity through the gateway
    python -m benchmarks.run --targets "shop;shop:catalogue=fresh" --rates 167  # contended vs fresh SKUs
    python -m benchmarks.run --targets "shop;shop:scale=shop=3+common=1" --rates 167   # another split

A target is ``flow[:option=value,...]`` (flows: podium, raw, podium-nolog, shop, dbos-sqlite, dbos-postgres;
options: see :class:`benchmarks.targets.StackOptions`: ``server``, ``workers``, ``partitions``, ``loglet``,
``rocksdb_memory``, ``gateway``, ``gateway_queue``, and for the shop ``catalogue`` (zipf, fresh),
``deployments`` (separate, single) and ``scale``); several targets are separated by ``;`` or, when no
target has options, by ``,``. Each target gets its own engine (or database) and service processes; the
shop runs one process per deployment of ``[tool.podium]`` (``shop``, ``shop-…``, ``common``). Rates are
interleaved between targets (rate 1 for every target, then rate 2, ...) so that drift in a shared, noisy
machine hits all alike; between runs the harness waits until the system is idle again.

Reported per run: offered and achieved rate, goodput (completed per second, its share of the offered
rate and, with ``--capacity``, of the capacity), latency percentiles, the share over 1 s and 5 s,
refusals (429 and 503 from the gateway: how many, and how fast) apart from errors by kind, the p99 per
``--window`` seconds of the run (and of its first against its last 5 minutes, for a run of 10 minutes or
more), CPU time per completed order of every process (engine, service or each deployment, gateway,
database, load generator) from the OS accounting, counting the work the run left queued until the system
is idle again. Restate targets add what an order costs the engine (invocations, journal entries, state
writes: ``--no-costs`` skips counting them), the shop adds each deployment's load and the bottleneck
among them, and the read side's lag (event to read models, when the shop keeps ``orders.db``). A run
with the benchmark flow (podium) and the shop at one rate compares their CPU per order. Results go to
``benchmarks/results/`` as JSON and PNG plots; a summary table ends the output.
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

from benchmarks.loadgen import Run, Sample, closed_loop, open_loop, run_load
from benchmarks.observe import QueryError, engine_costs, percentile, read_lag
from benchmarks.targets import Target, parse_target, start_target

RESULTS = Path(__file__).parent / "results"


def _self_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


REFUSALS = ("http-429", "http-503")
"""What the gateway answers a request it does not admit: refused, not failed."""

GROWTH_SPAN = 300.0
"""Seconds at each end of a long run whose p99 are compared (the first and the last 5 minutes)."""


def _latencies(samples: list[Sample]) -> dict[str, float | None]:
    ok = [s.latency for s in samples if s.outcome == "ok"]
    return {
        "p50": percentile(ok, 0.50),
        "p90": percentile(ok, 0.90),
        "p99": percentile(ok, 0.99),
        "p999": percentile(ok, 0.999),
        "max": max(ok) if ok else None,
        "mean": statistics.fmean(ok) if ok else None,
    }


def windows(samples: list[Sample], width: float) -> list[dict[str, Any]]:
    """Requests by ``width`` seconds of their sending time: how many, how many ok, refused and failed,
    and the p50 and p99 of the completed ones."""
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        buckets.setdefault(int(sample.sent // width), []).append(sample)
    rows = []
    for n, bucket in sorted(buckets.items()):
        ok = [s.latency for s in bucket if s.outcome == "ok"]
        refused = sum(1 for s in bucket if s.outcome in REFUSALS)
        rows.append(
            {
                "start": n * width,
                "sent": len(bucket),
                "ok": len(ok),
                "refused": refused,
                "errors": len(bucket) - len(ok) - refused,
                "p50": percentile(ok, 0.50),
                "p99": percentile(ok, 0.99),
            }
        )
    return rows


def growth(samples: list[Sample], duration: float, span: float = GROWTH_SPAN) -> dict[str, Any] | None:
    """The p99 of the first ``span`` seconds against the last ``span`` (runs of at least 2 spans)."""
    if duration < 2 * span:
        return None
    first = [s.latency for s in samples if s.outcome == "ok" and s.sent < span]
    last = [s.latency for s in samples if s.outcome == "ok" and s.sent >= duration - span]
    p99_first, p99_last = percentile(first, 0.99), percentile(last, 0.99)
    return {
        "spanSeconds": span,
        "firstP99": p99_first,
        "lastP99": p99_last,
        "ratio": p99_last / p99_first if p99_first and p99_last is not None else None,
    }


def summarise(
    run: Run,
    *,
    offered: float | None,
    cpu: dict[str, float],
    duration: float | None = None,
    window: float = 60.0,
    capacity: float | None = None,
) -> dict[str, Any]:
    """Stats of one run (every sample counts; failures count as slower than any success).

    Refusals (429 and 503: the gateway's answer to a request it does not admit) are counted apart from
    errors (timeouts, failures, other statuses), with their own latency: a refusal should be fast.
    Goodput is what completed per second, also as a share of ``offered`` and of ``capacity`` (the rate
    the target sustains, when known: overload runs are judged against it).
    """
    ok = sum(1 for s in run.samples if s.outcome == "ok")
    total = len(run.samples)
    refused = Counter(s.outcome for s in run.samples if s.outcome in REFUSALS)
    errors = Counter(s.outcome for s in run.samples if s.outcome != "ok" and s.outcome not in REFUSALS)

    def over(limit: float) -> float:
        return sum(1 for s in run.samples if s.outcome != "ok" or s.latency > limit) / max(1, total)

    refusals = [s.latency for s in run.samples if s.outcome in REFUSALS]
    orders = max(1, ok)
    achieved = ok / run.elapsed if run.elapsed else 0.0
    system = sum(seconds for name, seconds in cpu.items() if name != "loadgen")
    return {
        "offeredRate": offered,
        "sent": total,
        "ok": ok,
        "achievedRate": achieved,
        "goodput": {
            "rate": achieved,
            "ofOffered": achieved / offered if offered else None,
            "ofCapacity": achieved / capacity if capacity else None,
            "okShare": ok / max(1, total),
        },
        "latency": _latencies(run.samples),
        "shareOver1s": over(1.0),
        "shareOver5s": over(5.0),
        "errors": dict(errors),
        "refused": dict(refused),
        "refusedLatency": {
            "p50": percentile(refusals, 0.50),
            "p99": percentile(refusals, 0.99),
            "max": max(refusals) if refusals else None,
        },
        "refusedLatencyP99": percentile(refusals, 0.99),
        "windowSeconds": window,
        "windows": windows(run.samples, window),
        "growth": growth(run.samples, duration if duration is not None else run.elapsed),
        "cpuMsPerOrder": {name: 1000 * seconds / orders for name, seconds in cpu.items()},
        "cpuMsPerOrderSystem": 1000 * system / orders,
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


BUSY = 0.75
"""A deployment whose workers are this busy (CPU per second per worker) is out of CPU: the bottleneck."""
QUEUED = 0.25
"""Seconds (p99) an invocation may wait before running before its service is the bottleneck."""


def deployment_load(
    target: Target,
    load: dict[str, float],
    cpu_ms: dict[str, float],
    elapsed: float,
    costs: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Each deployment's load during the run, and which of them is the bottleneck, and why.

    A deployment's ``busy`` is the CPU it used per second of run over its workers: a Python worker runs
    one thread of code at a time, so a deployment can use at most one core per worker. ``queuedP99`` is
    the longest p99, among its services, of the time an invocation waited before running (from the
    engine): behind another invocation of the same key (a hot SKU's stock) or for the deployment.

    The bottleneck, in this order: the busiest deployment if it is at least :data:`BUSY` (``cpu``: it
    needs more workers, or less CPU per order); else the deployment of the service whose invocations
    waited longest, if that p99 is at least :data:`QUEUED` seconds (``queue``: a key everyone wants,
    which more workers do not fix); else the busiest deployment (``load``: none is limiting yet, this one
    will be first). On a machine whose cores are all busy (``machineBusy`` near 1) every process slows
    down together, whatever the deployment.
    """
    rows: dict[str, Any] = {}
    longest: tuple[float, str, str] | None = None  # (queued p99, service, deployment)
    services = costs["services"] if costs else {}
    for name, info in target.deployments.items():
        cores = load.get(f"deployment:{name}", 0.0) / max(elapsed, 1e-9)
        queued = [
            (services[s]["queuedP99"], s)
            for s in info.services
            if s in services and services[s]["queuedP99"] is not None
        ]
        worst = max(queued, default=None)
        if worst is not None and (longest is None or worst[0] > longest[0]):
            longest = (worst[0], worst[1], name)
        rows[name] = {
            "workers": info.workers,
            "cores": cores,
            "busy": cores / info.workers,
            "cpuMsPerOrder": cpu_ms.get(f"deployment:{name}", 0.0),
            "queuedP99": worst[0] if worst else None,
            "mostQueuedService": worst[1] if worst else None,
            "services": info.services,
        }
    if not rows:
        return rows, None
    busiest = max(rows, key=lambda n: rows[n]["busy"])
    if rows[busiest]["busy"] >= BUSY:
        name, reason = busiest, "cpu"
    elif longest is not None and longest[0] >= QUEUED:
        name, reason = longest[2], "queue"
    else:
        name, reason = busiest, "load"
    return rows, {
        "deployment": name,
        "reason": reason,
        "busy": rows[name]["busy"],
        "queuedP99": rows[name]["queuedP99"],
        "service": rows[name]["mostQueuedService"] if reason == "queue" else None,
    }


def measure(
    target: Target,
    *,
    mode: str,
    level: float,
    duration: float,
    window: float = 60.0,
    capacity: float | None = None,
    costs: bool = True,
) -> dict[str, Any]:
    """One run against one target at one offered rate (open) or concurrency (closed).

    CPU per order counts from the start of the run until the target is idle again, so work an order
    leaves queued (events a read side projects later) is part of its cost; the cores in use, each
    deployment's load and the bottleneck are of the run itself.
    """
    wait_idle(target)
    before, self_before = target.cpu(), _self_cpu()
    since = time.time()
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
    during, self_after = target.cpu(), _self_cpu()
    drain = wait_idle(target)
    after = target.cpu()
    loadgen = self_after - self_before
    load = {k: during[k] - before[k] for k in before} | {"loadgen": loadgen}
    cpu = {k: after[k] - before[k] for k in before if after[k] - before[k] > 0} | {"loadgen": loadgen}
    result = summarise(
        run,
        offered=level if mode == "open" else None,
        cpu=cpu,
        duration=duration if mode == "open" else None,
        window=window,
        capacity=capacity,
    )
    result["flow"] = target.name
    result["target"] = target.label
    result["mode"] = mode
    result["level"] = level
    result["duration"] = duration
    result["drainSeconds"] = drain
    result["cpuCores"] = sum(load.values()) / max(run.elapsed, 1e-9)
    result["machineBusy"] = result["cpuCores"] / (os.cpu_count() or 1)
    result["costs"] = None
    if costs and target.admin_url:
        try:
            result["costs"] = engine_costs(target.admin_url, since=since, orders=result["ok"])
        except QueryError as exc:
            result["costs"] = {"error": str(exc)}
    if target.deployments:
        usable = result["costs"] if result["costs"] and "error" not in result["costs"] else None
        result["deployments"], result["bottleneck"] = deployment_load(
            target, load, result["cpuMsPerOrder"], run.elapsed, usable
        )
    if target.read_store is not None:
        result["readLag"] = read_lag(target.read_store, since=since, window=window)
    return result


def _s(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}s"


def describe_bottleneck(bottleneck: dict[str, Any]) -> str:
    """The bottleneck and why, in a few words."""
    name, busy = bottleneck["deployment"], f"{bottleneck['busy']:.0%}"
    if bottleneck["reason"] == "cpu":
        return f"{name} (out of CPU: its workers {busy} busy)"
    if bottleneck["reason"] == "queue":
        return f"{name} ({bottleneck['service']} waits p99 {_s(bottleneck['queuedP99'])} before running)"
    return f"{name} (the most loaded, {busy} busy; none limiting yet)"


def show(result: dict[str, Any]) -> None:
    """One line per run, and a line for each of what a Restate run and a shop run add."""
    lat = result["latency"]
    cpu = {k: round(v, 2) for k, v in result["cpuMsPerOrder"].items()}
    print(
        f"{result['target']:>44} {result['mode']} {result['level']:>6.0f}: "
        f"achieved {result['achievedRate']:6.1f}/s p50 {lat['p50'] or 0:.3f}s p99 {lat['p99'] or 0:.3f}s "
        f"max {lat['max'] or 0:.2f}s errors {result['errors']} cores {result['cpuCores']:.2f} "
        f"cpu ms/order {json.dumps(cpu)} (system {result['cpuMsPerOrderSystem']:.2f})",
        flush=True,
    )
    pad = " " * 8
    if result["refused"]:
        goodput = result["goodput"]
        share = f"{goodput['ofOffered']:.0%} of offered" if goodput["ofOffered"] is not None else ""
        if goodput["ofCapacity"] is not None:
            share += f", {goodput['ofCapacity']:.0%} of capacity"
        print(
            f"{pad}refused {sum(result['refused'].values())} {result['refused']} in "
            f"p50 {_s(result['refusedLatency']['p50'])} p99 {_s(result['refusedLatency']['p99'])}; "
            f"goodput {goodput['rate']:.1f}/s ({share})",
            flush=True,
        )
    costs = result.get("costs")
    if costs and "error" in costs:
        print(f"{pad}costs: the engine did not answer ({costs['error'][:120]})", flush=True)
    elif costs:
        services = ", ".join(f"{n} {v['invocationsPerOrder']:.1f}" for n, v in costs["services"].items())
        print(
            f"{pad}per order: {costs['invocationsPerOrder']:.1f} invocations ({services}), "
            f"{costs['stateWritesPerOrder']:.1f} state writes, {costs['journalEntriesPerOrder']:.1f} "
            f"journal entries (counted in {costs['querySeconds']:.1f}s)",
            flush=True,
        )
    if result.get("deployments"):
        parts = ", ".join(
            f"{n} {d['cores']:.2f} cores/{d['workers']} ({d['busy']:.0%}, {d['cpuMsPerOrder']:.2f} ms/order,"
            f" queued p99 {_s(d['queuedP99'])})"
            for n, d in result["deployments"].items()
        )
        print(f"{pad}deployments: {parts}", flush=True)
        print(f"{pad}bottleneck: {describe_bottleneck(result['bottleneck'])}", flush=True)
    if "readLag" in result:
        lag = result["readLag"]
        text = (
            "n/a (no read-model store with an events table)"
            if lag is None
            else f"p50 {_s(lag['p50'])} p99 {_s(lag['p99'])} max {_s(lag['max'])} over {lag['events']} events"
        )
        print(f"{pad}read-side lag: {text}", flush=True)
    if len(result["windows"]) > 1:
        p99s = " ".join(_s(w["p99"], 2) for w in result["windows"])
        print(f"{pad}p99 per {result['windowSeconds']:g}s: {p99s}", flush=True)
    if result["growth"]:
        g = result["growth"]
        ratio = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}x"
        print(f"{pad}p99 first 5 min {_s(g['firstP99'])}, last 5 min {_s(g['lastP99'])}: {ratio}", flush=True)


def passes(result: dict[str, Any], bar: float) -> bool:
    """Whether a run held its offered rate with p99 under ``bar`` seconds, no errors and no refusals."""
    p99 = result["latency"]["p99"]
    return (
        not result["errors"]
        and not result["refused"]
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
    # engine, service or each deployment, gateway, database, load generator: tab20 if ten colours are few
    palette = plt.get_cmap("tab10" if len(parts) <= 10 else "tab20")
    colours = {part: palette(n % palette.N) for n, part in enumerate(parts)}
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

    # Long runs (growth): the p99 of each window of the run, and the read side's lag where there is one.
    long_runs = [r for r in results if len(r["windows"]) >= 3]
    if long_runs:
        fig, ax = plt.subplots(figsize=(11, 5))
        for r in long_runs:
            minutes = [w["start"] / 60 for w in r["windows"]]
            line = ax.plot(
                minutes,
                [w["p99"] or float("nan") for w in r["windows"]],
                "-",
                marker=".",
                label=f"{r['target']} @{r['level']:g} p99",
            )
            lag = r.get("readLag")
            if lag and lag["windows"]:
                ax.plot(
                    [w["start"] / 60 for w in lag["windows"]],
                    [w["p99"] or float("nan") for w in lag["windows"]],
                    ":",
                    color=line[0].get_color(),
                    label=f"{r['target']} @{r['level']:g} read-side lag p99",
                )
        ax.set_xlabel("minutes into the run")
        ax.set_ylabel(f"p99 per {long_runs[0]['windowSeconds']:g} s window (s)")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
        ax.set_title("Latency over the run")
        files.append(out.with_name(out.stem + "-windows.png"))
        fig.savefig(files[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return files


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shop's CPU per order against the benchmark flow's (podium), for each rate at which both ran.

    System CPU (every process but the load generator, which costs about the same per request for both)
    per completed order, from runs of one plan, so on the same machine at the same time.
    """
    rows = []
    for r in results:
        if r["flow"] != "shop":
            continue
        for base in results:
            if base["flow"] == "podium" and base["level"] == r["level"] and base.get("plan") == r.get("plan"):
                rows.append(
                    {
                        "level": r["level"],
                        "shop": r["target"],
                        "podium": base["target"],
                        "shopCpuMsPerOrder": r["cpuMsPerOrderSystem"],
                        "podiumCpuMsPerOrder": base["cpuMsPerOrderSystem"],
                        "ratio": r["cpuMsPerOrderSystem"] / base["cpuMsPerOrderSystem"]
                        if base["cpuMsPerOrderSystem"]
                        else None,
                    }
                )
    return rows


def table(results: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    """Every run in one table, then the comparisons and the growth of long runs."""

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    head = (
        "| target | rate | achieved | goodput | p50 | p99 | refused (p99) | errors | cpu ms/order | "
        "invocations | state writes | journal | read lag p99 | bottleneck |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        costs = r.get("costs") or {}
        lag = r.get("readLag")
        refused = sum(r["refused"].values())
        bottleneck = r.get("bottleneck")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["target"],
                    f"{r['level']:g}",
                    f"{r['achievedRate']:.1f}",
                    cell(r["goodput"]["ofOffered"], ".0%"),
                    cell(r["latency"]["p50"], ".3f"),
                    cell(r["latency"]["p99"], ".3f"),
                    f"{refused} ({cell(r['refusedLatency']['p99'], '.3f')})" if refused else "0",
                    str(sum(r["errors"].values())),
                    f"{r['cpuMsPerOrderSystem']:.2f}",
                    cell(costs.get("invocationsPerOrder"), ".1f"),
                    cell(costs.get("stateWritesPerOrder"), ".1f"),
                    cell(costs.get("journalEntriesPerOrder"), ".0f"),
                    ("n/a" if lag is None else cell(lag["p99"], ".3f")) if "readLag" in r else "-",
                    f"{bottleneck['deployment']} ({bottleneck['reason']})" if bottleneck else "-",
                ]
            )
            + " |"
        )
    for c in comparisons:
        ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.2f}x"
        lines.append(
            f"CPU per order at {c['level']:g}/s: {c['shop']} {c['shopCpuMsPerOrder']:.2f} ms, "
            f"{c['podium']} {c['podiumCpuMsPerOrder']:.2f} ms: {ratio} (goal: within 1.5x)"
        )
    for r in results:
        g = r["growth"]
        if g:
            ratio = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}x"
            lines.append(
                f"growth of {r['target']} @{r['level']:g}: p99 first 5 min {cell(g['firstP99'], '.3f')} s, "
                f"last 5 min {cell(g['lastP99'], '.3f')} s: {ratio} (goal: within 1.5x)"
            )
    return "\n".join(lines)


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
    settings: dict[str, Any] = {"window": args.window, "capacity": args.capacity, "costs": args.costs}
    print(f"== {title}", flush=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        running = [
            start_target(flow, stack, Path(tmp) / f"t{n}", options) for n, (flow, options) in enumerate(specs)
        ]
        for target in running:
            print(f"warming up {target.label} ...", flush=True)
            measure(target, mode=args.mode, level=min(levels[0], 100.0), duration=args.warmup, costs=False)
        if args.search:
            for target in running:
                low, high = (float(x) for x in args.search_range.split(","))

                def run_at(rate: float, target: Target = target) -> dict[str, Any]:
                    result = measure(target, mode="open", level=rate, duration=args.duration, **settings)
                    result["plan"] = title
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
                    result = measure(target, mode=args.mode, level=level, duration=args.duration, **settings)
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
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds per window of the p99 over time (growth)"
    )
    parser.add_argument(
        "--capacity",
        type=float,
        default=None,
        help="orders/s the target sustains: goodput is also reported as a share of it (overload)",
    )
    parser.add_argument(
        "--no-costs",
        dest="costs",
        action="store_false",
        help="do not count invocations, journal entries and state writes per order in the engine",
    )
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
    comparisons = compare(results)
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
            "window": args.window,
            "capacity": args.capacity,
            "costs": args.costs,
        },
        "searches": searches,
        "comparisons": comparisons,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2))
    print(table(results, comparisons), flush=True)
    for path in [out, *plot(results, out)]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
