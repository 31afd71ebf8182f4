"""Rebuild every read model of the shop from the stores it is derived from: an operator's command.

    python -m services.shop.rebuild                      # the stack `podium up` started, on loopback
    python -m services.shop.rebuild --ingress http://127.0.0.1:8080 --admin http://127.0.0.1:9070

The read models (order views, customers' order lists, audit trails in ``orders.db``; stock levels in
``inventory.db``) are derived data. When one is lost or suspected wrong (a restored backup, a disk that
lost its last commits, a bug in a projection now fixed), this rebuilds all of them:

1. every order in the event store, which is the engine's state of ``ShopOrder`` (listed with the admin
   API's SQL), is replayed by its own ``ShopOrder/{orderId}/Replay``: exclusive on the order, so no event
   is appended while its rows are replaced, and each order's rows are replaced in one transaction, so a
   reader sees an order's old rows or its new ones, never a mix;
2. then ``ShopInventory/RebuildLevels`` recomputes every SKU's level from the inventory's events.

The shop keeps serving while it runs: orders placed meanwhile reach the read models by their own
messages. It talks to the trusted ingress and the admin API (loopback, the operator's doors), never to
the gateway. An order that cannot be replayed (its stream refused by the fold) is reported, and the
others go on; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

ORDERS_SQL = (
    "select distinct service_key from state where service_name = 'ShopOrder' and key like 'event:%' "
    "order by service_key"
)
"""Every order with at least one event in the event store."""


@dataclass
class Report:
    """What a rebuild did."""

    orders: int = 0
    """Orders found in the event store."""
    rebuilt: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """Order id → why its replay failed."""
    levels: dict[str, object] = field(default_factory=dict)
    """``RebuildLevels``'s report (SKUs recomputed, what it repaired)."""


def order_ids(admin_url: str, client: httpx.Client) -> list[str]:
    """The id of every order in the event store."""
    response = client.post(
        f"{admin_url}/query", json={"query": ORDERS_SQL}, headers={"accept": "application/json"}
    )
    response.raise_for_status()
    return [str(row["service_key"]) for row in response.json()["rows"]]


def rebuild(ingress_url: str, admin_url: str, *, concurrency: int = 8, timeout: float = 60.0) -> Report:
    """Replay every order into the read models, then recompute the stock levels."""
    report = Report()
    with httpx.Client(timeout=timeout) as client:
        ids = order_ids(admin_url, client)
        report.orders = len(ids)

        def replay(order_id: str) -> str | None:
            response = client.post(f"{ingress_url}/ShopOrder/{quote(order_id, safe='')}/Replay")
            return None if response.is_success else f"{response.status_code}: {response.text[:300]}"

        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            for order_id, failure in zip(ids, pool.map(replay, ids), strict=True):
                if failure is None:
                    report.rebuilt += 1
                else:
                    report.failed[order_id] = failure
        levels = client.post(f"{ingress_url}/ShopInventory/RebuildLevels")
        levels.raise_for_status()
        report.levels = levels.json()
    return report


def main(argv: list[str] | None = None) -> int:
    """The command line: rebuild, print the report as JSON, exit 1 if any order failed."""
    parser = argparse.ArgumentParser(
        prog="python -m services.shop.rebuild", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--ingress", default="http://127.0.0.1:8080", help="the engine's ingress URL")
    parser.add_argument("--admin", default="http://127.0.0.1:9070", help="the engine's admin API URL")
    parser.add_argument("--concurrency", type=int, default=8, help="orders replayed at once")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency: must be 1 or more")
    report = rebuild(args.ingress.rstrip("/"), args.admin.rstrip("/"), concurrency=args.concurrency)
    print(json.dumps(report.__dict__, indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
