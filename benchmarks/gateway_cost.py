"""What the gateway costs per request: this tree's gateway against an earlier commit's, side by side.

    python -m benchmarks.gateway_cost                      # against 6321b12 (before the door was added)
    python -m benchmarks.gateway_cost --baseline <commit> --rate 250 --duration 20 --runs 3

One engine and one deployment serve a no-op public handler (``Ping/Ping``). Three ways in take turns,
``--runs`` times each, open loop at ``--rate`` requests per second: straight to the ingress; through this
tree's gateway (a token checked on every request, the route table, the card screen, llhttp parsing);
and through the baseline commit's gateway (checked out with ``git worktree``, run from its own ``src``).
Reported: the gateway's CPU time per request, from the OS accounting of its process, and latency. The
results go to ``benchmarks/results/gateway-cost-*.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.loadgen import open_loop, run_load
from benchmarks.postgres import process_cpu_seconds
from benchmarks.run import RESULTS, percentile
from benchmarks.targets import flows_engine
from podium.cli import gateway_process, issuer_key, start_gateway
from podium.gateway import TokenIssuer
from podium.runtime import ChildProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
PATH = "/Ping/Ping"


def _baseline_gateway(source: Path, upstream: str, port: int, log: Path) -> ChildProcess:
    """The baseline commit's gateway, run from its own source tree (its command line had no auth)."""
    return ChildProcess(
        [
            *(sys.executable, "-m", "podium.gateway", "--upstream", upstream),
            *("--port", str(port), "--max-in-flight", "96", "--max-queue", "32"),
        ],
        log_file=log,
        env={"PYTHONPATH": str(source / "src")},
        name="baseline gateway",
    )


def measure(
    url: str, headers: dict[str, str] | None, pid: int | None, rate: float, duration: float
) -> dict[str, Any]:
    """One open-loop run: requests, latency, and the gateway process's CPU per request."""
    before = process_cpu_seconds(pid) if pid else 0.0
    run = run_load(open_loop(url, PATH, rate=rate, duration=duration, body="{}", headers=headers))
    cpu = (process_cpu_seconds(pid) - before) if pid else 0.0
    ok = [s.latency for s in run.samples if s.outcome == "ok"]
    return {
        "requests": len(run.samples),
        "ok": len(ok),
        "gatewayCpuMsPerRequest": 1000 * cpu / max(1, len(ok)),
        "p50": percentile(ok, 0.5),
        "p99": percentile(ok, 0.99),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="6321b12", help="commit whose gateway to compare with")
    parser.add_argument("--rate", type=float, default=250.0, help="requests per second (250)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (20)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant, interleaved (3)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="podium-gw-cost-") as tmp:
        home = Path(tmp)
        worktree = home / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        stack.callback(
            subprocess.run, ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
        )
        engine = flows_engine(stack, home)
        current_port, baseline_port = free_port(), free_port()
        current = gateway_process(
            engine.ingress_url,
            admin_url=engine.admin_url,
            data_dir=home,
            edge=[],
            port=current_port,
            max_in_flight=96,
            max_queue=32,
            log_file=home / "gateway.log",
        )
        stack.callback(current.stop)
        start_gateway(current, port=current_port)
        baseline = _baseline_gateway(worktree, engine.ingress_url, baseline_port, home / "baseline.log")
        stack.callback(baseline.stop)
        baseline.start()
        time.sleep(2.0)  # the baseline's own health check differs by version; it is up well within this
        token = TokenIssuer(issuer_key(home)).issue("bench", ["bench:read"], timedelta(hours=2))
        variants: dict[str, tuple[str, dict[str, str] | None, Callable[[], int | None]]] = {
            "ingress (no gateway)": (engine.ingress_url, None, lambda: None),
            f"gateway at {args.baseline}": (f"http://127.0.0.1:{baseline_port}", None, lambda: baseline.pid),
            "gateway now (auth + routes + llhttp)": (
                f"http://127.0.0.1:{current_port}",
                {"authorization": f"Bearer {token}"},
                lambda: current.pid,
            ),
        }
        for url, headers, pid in variants.values():  # warm up: connections and caches
            measure(url, headers, pid(), args.rate, 3.0)
        for run in range(args.runs):
            for name, (url, headers, pid) in variants.items():
                time.sleep(2.0)
                result = measure(url, headers, pid(), args.rate, args.duration)
                result.update(variant=name, run=run, rate=args.rate, duration=args.duration)
                results.append(result)
                print(
                    f"{name:<40} run {run}: {result['ok']}/{result['requests']} ok, "
                    f"gateway {result['gatewayCpuMsPerRequest']:.3f} ms/request, p99 {result['p99']} s",
                    flush=True,
                )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    summary = {
        name: statistics.mean(r["gatewayCpuMsPerRequest"] for r in results if r["variant"] == name)
        for name in variants
    }
    out = RESULTS / f"gateway-cost-{stamp}.json"
    out.write_text(json.dumps({"baseline": args.baseline, "summary": summary, "runs": results}, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"results: {out}")
    _plot(results, RESULTS / f"gateway-cost-{stamp}.png")


def _plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in dict.fromkeys(r["variant"] for r in results) if not n.startswith("ingress")]
    values = [[r["gatewayCpuMsPerRequest"] for r in results if r["variant"] == n] for n in names]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar(range(len(names)), [statistics.mean(v) for v in values], color=["#999999", "#2a6fb0"])
    for index, runs in enumerate(values):
        axis.scatter([index] * len(runs), runs, color="black", zorder=3, s=12)
    axis.set_xticks(range(len(names)), names, fontsize=8)
    axis.set_ylabel("gateway CPU per request (ms)")
    axis.set_title(f"Gateway cost at {results[0]['rate']:.0f} requests/s (mean of runs, dots: each run)")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
