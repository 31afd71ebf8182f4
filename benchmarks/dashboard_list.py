"""How the dashboard's saga list holds up as the engine fills with sagas.

    python -m benchmarks.dashboard_list                       # 1,000 to 10,000 sagas
    python -m benchmarks.dashboard_list --sizes 500,1000 --repeats 3

One engine and the benchmark flow's deployment (``PodiumOrder``, a three-step saga that keeps its log in
state). The engine is filled with sagas in steps; at each size the dashboard (in this process, on
hypercorn) is asked, ``--repeats`` times each, for: the list page (``GET /``, the newest 200 rendered),
the same list as JSON (``GET /api/sagas``), a list filtered by key (``?key=``), one saga with its timeline,
and the fingerprint the live updates poll every half second. Reported: the median and the slowest time
of each, and the time per 1,000 sagas, to show how each grows. Results go to
``benchmarks/results/dashboard-list-*.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import RESULTS
from benchmarks.targets import flows_engine
from podium.dashboard import DashboardConfig, create_app
from podium.dashboard._data import EngineData
from podium.gateway import TokenIssuer, TokenVerifier
from podium.runtime import KeyPair, ThreadedServer


async def fill(ingress: str, admin: str, start: int, stop: int, *, concurrency: int = 64) -> None:
    """Run sagas ``start`` to ``stop`` (sends, ``concurrency`` at once), and wait until every one ended."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=ingress, timeout=60) as client:

        async def one(index: int) -> None:
            key = f"order-{index:06d}"
            async with limit:
                answer = await client.post(f"/PodiumOrder/{key}/Run/send", json={"id": key})
                answer.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(start, stop)))
    async with httpx.AsyncClient(timeout=60) as client:
        while True:
            answer = await client.post(
                f"{admin}/query",
                json={"query": "SELECT count(*) AS n FROM sys_invocation WHERE status <> 'completed'"},
                headers={"accept": "application/json"},
            )
            if answer.json()["rows"][0]["n"] == 0:
                return
            await asyncio.sleep(0.5)


def timed(call: Any, repeats: int) -> dict[str, float]:
    """Median and slowest seconds of ``call()`` over ``repeats`` runs."""
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return {"median": statistics.median(seconds), "max": max(seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,2500,5000,10000", help="saga counts to measure at")
    parser.add_argument("--repeats", type=int, default=5, help="requests of each kind at each size (5)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    RESULTS.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="podium-dash-bench-") as tmp:
        home = Path(tmp)
        engine = flows_engine(stack, home)
        issuer = TokenIssuer(KeyPair.load_or_create(home / "issuer.pem"))
        config = DashboardConfig(
            admin_url=engine.admin_url,
            ingress_url=engine.ingress_url,
            verifier=TokenVerifier({issuer.key.key_id: issuer.key.public_key}),
        )
        server = ThreadedServer(create_app(config))
        server.start()
        stack.callback(server.stop)
        token = issuer.issue("bench", ["dashboard:operator"], timedelta(hours=1))
        client = stack.enter_context(
            httpx.Client(base_url=server.url, timeout=120, cookies={"podium_dashboard": token})
        )

        def get(path: str) -> None:
            client.get(path).raise_for_status()

        async def fingerprint() -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                await EngineData(engine.admin_url, http).fingerprint()

        filled = 0
        for size in sizes:
            began = time.perf_counter()
            asyncio.run(fill(engine.ingress_url, engine.admin_url, filled, size))
            print(f"{size} sagas ({size - filled} more in {time.perf_counter() - began:.0f} s)", flush=True)
            filled = size
            row: dict[str, Any] = {"sagas": size}
            row["list page"] = timed(lambda: get("/"), args.repeats)
            row["list JSON"] = timed(lambda: get("/api/sagas"), args.repeats)
            row["search by key"] = timed(lambda: get("/?key=order-000042"), args.repeats)
            row["one saga"] = timed(lambda: get("/sagas/PodiumOrder/order-000042/order"), args.repeats)
            row["live fingerprint"] = timed(lambda: asyncio.run(fingerprint()), args.repeats)
            rows.append(row)
            print(
                "  " + ", ".join(f"{k} {v['median'] * 1000:.0f} ms" for k, v in row.items() if k != "sagas"),
                flush=True,
            )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"dashboard-list-{stamp}.json"
    out.write_text(json.dumps({"sizes": sizes, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print(f"results: {out}")
    _plot(rows, RESULTS / f"dashboard-list-{stamp}.png")


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    sizes = [r["sagas"] for r in rows]
    for name in ("list page", "list JSON", "search by key", "one saga", "live fingerprint"):
        axis.plot(sizes, [r[name]["median"] * 1000 for r in rows], marker="o", label=name)
    axis.set_xlabel("sagas in the engine")
    axis.set_ylabel("median response time (ms)")
    axis.set_title("Dashboard: response time as the engine fills with sagas")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
