"""``ShopInventory``: one invocation per order, stock in SQL, levels as the projection of inventory events.

The first tests need no engine: the rules, the fold, and the SQL transactions called directly (two
processes at once among them). The rest run the service on a real engine.
"""

from __future__ import annotations

import functools
import sqlite3
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest

import podium
from podium import SUBJECT_HEADER
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.app import SERVICES as COMMON_SERVICES
from services.common.providers import MailProvider
from services.shop import inventory as inv
from services.shop.db import store_path
from services.shop.inventory import (
    DEFAULT_STOCK,
    STOCK_ALERTS_EMAIL,
    UNLIMITED_STOCK,
    EventKind,
    ReleaseOrder,
    ReserveOrder,
    Restock,
    StockConflict,
    fold,
    fresh_level,
    give_back,
    inventory,
    low_stock_threshold,
    starting_stock,
    take,
)

inventory_app = podium.app(services=[inventory, *COMMON_SERVICES])
"""ShopInventory with the shared services it calls (the alert emails), as its own deployment."""

ACTOR = "ShopOrderSaga"


@pytest.fixture
def podium_app() -> Any:
    return inventory_app


# -- no engine ------------------------------------------------------------------------------------------


def test_starting_stock_comes_from_the_name() -> None:
    assert starting_stock("SOLDOUT-1") == 0
    assert starting_stock("LIMITED-7-abc") == 7
    assert starting_stock("UNLIMITED-x") == UNLIMITED_STOCK
    assert starting_stock("WIDGET-1") == DEFAULT_STOCK
    assert starting_stock("LIMITED-x") == DEFAULT_STOCK  # not a count: an ordinary SKU
    assert (low_stock_threshold(0), low_stock_threshold(10), low_stock_threshold(1_000)) == (1, 2, 200)


def test_a_crossing_counts_once_until_the_level_is_lifted_back() -> None:
    level = fresh_level("LIMITED-10-rule")  # threshold 2
    assert take(level, 5) is False
    assert take(level, 4) is True  # 1 left: below the threshold
    assert take(level, 1) is False  # still low: no second alert
    assert (level.available, level.reserved, level.low, level.low_stock_alerts) == (0, 10, True, 1)
    give_back(level, 1)  # 1: still below
    assert level.low is True
    give_back(level, 1)  # 2: back to the threshold, re-armed
    assert level.low is False
    assert take(level, 1) is True
    assert level.low_stock_alerts == 2
    with pytest.raises(ValueError, match="has 1 available, 2 wanted"):
        take(level, 2)


def test_the_fold_gives_levels_and_holds() -> None:
    sku = "LIMITED-10-fold"
    levels, holds = fold(
        [
            (sku, "o1", EventKind.RESERVED, 5),
            (sku, "o2", EventKind.RESERVED, 4),
            ("WIDGET-1", "o2", EventKind.RESERVED, 1),
            (sku, "o1", EventKind.RELEASED, 5),
            (sku, None, EventKind.RESTOCKED, 3),
        ]
    )
    assert levels[sku].model_dump() == {
        "sku": sku,
        "initial": 10,
        "available": 9,
        "reserved": 4,
        "restocked": 3,
        "threshold": 2,
        "low": False,  # crossed at 1 left, lifted back by the release
        "lowStockAlerts": 1,
    }
    assert levels["WIDGET-1"].reserved == 1
    assert holds == {("o2", sku): 4, ("o2", "WIDGET-1"): 1}


def held(sku: str) -> dict[str, int]:
    """The holds on ``sku`` in the store, per order (the session's store: fresh SKUs keep tests apart)."""
    db = sqlite3.connect(store_path("inventory"))
    try:
        return dict(db.execute("select order_id, quantity from holds where sku = ?", (sku,)).fetchall())
    finally:
        db.close()


def _reserve_one(order_id: str, sku: str) -> bool:
    """Reserve one unit in this process (a worker's transaction); False when refused as out of stock."""
    try:
        inv._reserve(ReserveOrder(order_id=order_id, lines={sku: 1}, actor=ACTOR))
    except StockConflict:
        return False
    return True


def test_two_processes_sharing_the_file_never_oversell() -> None:
    sku = new_key("LIMITED-10")
    orders = [new_key("order") for _ in range(30)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        outcomes = list(pool.map(_reserve_one, orders, [sku] * 30))
    assert outcomes.count(True) == 10
    level = inv._read_levels([sku])[0]
    assert (level.available, level.reserved) == (0, 10)
    assert held(sku) == {order_id: 1 for order_id, won in zip(orders, outcomes, strict=True) if won}


def test_a_refused_order_in_a_batch_rolls_back_alone() -> None:
    sku = new_key("LIMITED-2")
    orders = [new_key("order") for _ in range(3)]
    jobs = [
        inv._Job(
            functools.partial(inv._reserve_in, req=ReserveOrder(order_id=o, lines={sku: q}, actor=ACTOR))
        )
        for o, q in zip(orders, [1, 5, 1], strict=True)
    ]
    inv._GroupCommit._commit(jobs)  # one transaction, as when three reservations wait together
    assert [job.done for job in jobs] == [True, True, True]
    assert (jobs[0].error, jobs[2].error) == (None, None)
    assert isinstance(jobs[1].error, StockConflict)
    assert "has 1 available, 5 wanted" in str(jobs[1].error)
    assert held(sku) == {orders[0]: 1, orders[2]: 1}
    assert inv._read_levels([sku])[0].reserved == 2


def test_a_release_run_again_after_a_crash_answers_the_same_and_a_second_release_nothing() -> None:
    a, b, order_id = new_key("WIDGET"), new_key("GADGET"), new_key("order")
    inv._reserve(ReserveOrder(order_id=order_id, lines={a: 2, b: 1}, actor=ACTOR))
    request = ReleaseOrder(order_id=order_id, actor=ACTOR)
    first = inv._release(request, "inv-1")
    assert first.lines == dict(sorted({a: 2, b: 1}.items()))
    assert inv._release(request, "inv-1") == first  # the same run again, after a crash
    assert inv._release(request, "inv-2").lines == {}  # another release
    assert inv._read_levels([a])[0].available == DEFAULT_STOCK


def test_a_restock_run_again_adds_once() -> None:
    sku, restock_id = new_key("LIMITED-3"), new_key("restock")
    request = Restock(restock_id=restock_id, sku=sku, quantity=4, note="pallet")
    assert inv._restock(request, "ops").available == 7
    assert inv._restock(request, "ops").available == 7
    with pytest.raises(StockConflict, match=f"restock {restock_id} already added 4 units to {sku}"):
        inv._restock(request.model_copy(update={"quantity": 5}), "ops")


# -- on the engine --------------------------------------------------------------------------------------


def reserve(env: PodiumEnv, order_id: str, lines: dict[str, int]) -> Any:
    return env.post_private("/ShopInventory/Reserve", {"orderId": order_id, "lines": lines, "actor": ACTOR})


def release(env: PodiumEnv, order_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call_private("/ShopInventory/Release", {"orderId": order_id, "actor": ACTOR})
    return answer


def levels(env: PodiumEnv, *skus: str) -> dict[str, dict[str, Any]]:
    found: list[dict[str, Any]] = env.call("/ShopInventory/Levels", {"skus": list(skus)})
    assert [level["sku"] for level in found] == list(dict.fromkeys(skus))
    return {level["sku"]: level for level in found}


def history(env: PodiumEnv, sku: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = env.call("/ShopInventory/History", {"sku": sku})["events"]
    return events


@pytest.mark.engine
def test_a_sku_never_used_shows_its_starting_stock(podium_env: PodiumEnv) -> None:
    soldout, limited, plain = new_key("SOLDOUT"), new_key("LIMITED-25"), new_key("WIDGET")
    found = levels(podium_env, soldout, limited, plain, limited)
    assert (found[soldout]["available"], found[limited]["available"], found[plain]["available"]) == (
        0,
        25,
        DEFAULT_STOCK,
    )
    assert found[limited] == {
        "sku": limited,
        "initial": 25,
        "available": 25,
        "reserved": 0,
        "restocked": 0,
        "threshold": 5,
        "low": False,
        "lowStockAlerts": 0,
    }


@pytest.mark.engine
def test_an_order_is_held_whole_or_not_at_all(podium_env: PodiumEnv) -> None:
    plain, soldout, limited = new_key("WIDGET"), new_key("SOLDOUT"), new_key("LIMITED-2")
    order_id = new_key("order")

    refused = reserve(podium_env, order_id, {plain: 1, soldout: 1, limited: 3})
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    assert f"{soldout} has 0 available, 1 wanted" in message
    assert f"{limited} has 2 available, 3 wanted" in message
    assert message.startswith("out of stock: ")
    assert plain not in message
    after = levels(podium_env, plain, limited)
    assert (after[plain]["available"], after[plain]["reserved"]) == (DEFAULT_STOCK, 0)  # nothing held
    assert (after[limited]["available"], after[limited]["reserved"]) == (2, 0)
    assert held(plain) == {}
    assert history(podium_env, plain) == []

    answer = reserve(podium_env, order_id, {plain: 3, limited: 2})  # enough now: all of it
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"orderId": order_id, "lines": {limited: 2, plain: 3}, "status": "reserved"}
    after = levels(podium_env, plain, limited)
    assert (after[plain]["available"], after[plain]["reserved"]) == (DEFAULT_STOCK - 3, 3)
    assert (after[limited]["available"], after[limited]["reserved"]) == (0, 2)
    assert held(plain) == {order_id: 3}


@pytest.mark.engine
def test_a_repeat_answers_the_first_reservation_and_other_lines_are_409(podium_env: PodiumEnv) -> None:
    sku, order_id = new_key("WIDGET"), new_key("order")
    first = reserve(podium_env, order_id, {sku: 2})
    again = reserve(podium_env, order_id, {sku: 2})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert levels(podium_env, sku)[sku]["reserved"] == 2  # held once
    assert [e["kind"] for e in history(podium_env, sku)] == ["reserved"]

    other = reserve(podium_env, order_id, {sku: 3})
    assert other.status_code == 409, other.text
    assert f"order {order_id} already holds" in other.json()["message"]
    assert levels(podium_env, sku)[sku]["reserved"] == 2


@pytest.mark.engine
def test_a_release_gives_back_once_and_the_order_is_over(podium_env: PodiumEnv) -> None:
    a, b, order_id = new_key("WIDGET"), new_key("LIMITED-5"), new_key("order")
    assert reserve(podium_env, order_id, {a: 2, b: 5}).status_code == 200

    given = release(podium_env, order_id)
    assert given == {"orderId": order_id, "lines": {a: 2, b: 5}, "status": "released"}
    after = levels(podium_env, a, b)
    assert (after[a]["available"], after[a]["reserved"], after[b]["available"]) == (DEFAULT_STOCK, 0, 5)
    assert held(a) == {}
    assert held(b) == {}
    assert release(podium_env, order_id)["lines"] == {}  # twice: nothing more to give
    assert levels(podium_env, b)[b]["available"] == 5
    assert [(e["kind"], e["orderId"], e["quantity"], e["actor"]) for e in history(podium_env, b)] == [
        ("reserved", order_id, 5, ACTOR),
        ("released", order_id, 5, ACTOR),
    ]

    late = reserve(podium_env, order_id, {a: 2, b: 5})  # a released order is over
    assert late.status_code == 409, late.text
    assert "was released" in late.json()["message"]

    never = new_key("order")  # released before it reserved (a checkout that gave up on it)
    assert release(podium_env, never)["lines"] == {}
    assert reserve(podium_env, never, {a: 1}).status_code == 409
    assert levels(podium_env, a)[a]["reserved"] == 0


@pytest.mark.engine
def test_forty_concurrent_orders_for_ten_units_never_oversell(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-10")
    orders = [new_key("order") for _ in range(40)]
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda order_id: reserve(podium_env, order_id, {sku: 1}), orders))

    statuses = [a.status_code for a in answers]
    assert (statuses.count(200), statuses.count(409)) == (10, 30), [
        a.text for a in answers if a.status_code >= 500
    ]
    assert all("out of stock" in a.json()["message"] for a in answers if a.status_code == 409)
    level = levels(podium_env, sku)[sku]
    assert (level["available"], level["reserved"]) == (0, 10)
    assert level["available"] + level["reserved"] == level["initial"]
    winners = {order_id for order_id, a in zip(orders, answers, strict=True) if a.status_code == 200}
    assert held(sku) == dict.fromkeys(winners, 1)
    assert len(history(podium_env, sku)) == 10


@pytest.mark.engine
def test_low_stock_is_announced_once_per_crossing(podium_env: PodiumEnv) -> None:
    sku = new_key("LIMITED-10")  # threshold 2: alert when fewer than 2 are left

    def order(quantity: int) -> str:
        order_id = new_key("order")
        answer = reserve(podium_env, order_id, {sku: quantity})
        assert answer.status_code == 200, answer.text
        return order_id

    def alerts() -> list[dict[str, Any]]:
        return [m for m in MailProvider().outbox(STOCK_ALERTS_EMAIL) if sku in m["subject"]]

    order(5)
    assert levels(podium_env, sku)[sku]["lowStockAlerts"] == 0
    second = order(4)  # 1 left: below the threshold
    order(1)  # 0 left: still low, no second alert
    level = levels(podium_env, sku)[sku]
    assert (level["available"], level["low"], level["lowStockAlerts"]) == (0, True, 1)
    assert len(assert_eventually(alerts, message="the low-stock alert")) == 1
    assert reserve(podium_env, second, {sku: 4}).status_code == 200  # a repeat: the same alert, no new mail

    release(podium_env, second)  # back to 4: re-armed
    assert levels(podium_env, sku)[sku]["low"] is False
    order(3)  # 1 left: a second crossing
    assert levels(podium_env, sku)[sku]["lowStockAlerts"] == 2
    second_alerts = assert_eventually(
        lambda: a if len(a := alerts()) >= 2 else [], message="the second alert"
    )
    assert [m["subject"] for m in second_alerts] == [f"Low stock: {sku}"] * 2
    assert [e["alert"] for e in history(podium_env, sku) if e["alert"] is not None] == [1, 2]
    assert len(alerts()) == 2


@pytest.mark.engine
def test_a_restock_is_audited_with_the_operator_and_added_once(podium_env: PodiumEnv) -> None:
    sku, order_id = new_key("LIMITED-3"), new_key("order")
    assert reserve(podium_env, order_id, {sku: 3}).status_code == 200
    assert levels(podium_env, sku)[sku]["low"] is True
    body = {"restockId": new_key("restock"), "sku": sku, "quantity": 5, "note": "pallet 7"}
    operator = {SUBJECT_HEADER: "ops-alice"}

    first = podium_env.post("/ShopInventory/Restock", body, headers=operator)
    again = podium_env.post("/ShopInventory/Restock", body, headers=operator)
    assert (first.status_code, again.status_code) == (200, 200), first.text
    assert first.json() == again.json()
    assert (first.json()["available"], first.json()["restocked"], first.json()["low"]) == (5, 5, False)
    other = podium_env.post("/ShopInventory/Restock", {**body, "quantity": 6}, headers=operator)
    assert other.status_code == 409, other.text

    events = history(podium_env, sku)
    assert [(e["kind"], e["quantity"], e["actor"], e["orderId"]) for e in events] == [
        ("reserved", 3, ACTOR, order_id),
        ("restocked", 5, "ops-alice", None),
    ]
    assert (events[1]["restockId"], events[1]["note"]) == (body["restockId"], "pallet 7")
    assert events[0]["at"] <= events[1]["at"]
    assert events[0]["id"] < events[1]["id"]
    page = podium_env.call("/ShopInventory/History", {"sku": sku, "after": events[0]["id"], "limit": 1})
    assert page["events"] == events[1:]


@pytest.mark.engine
def test_rebuild_levels_repairs_a_tampered_projection(podium_env: PodiumEnv) -> None:
    sku, order_id = new_key("LIMITED-10"), new_key("order")
    assert reserve(podium_env, order_id, {sku: 9}).status_code == 200  # crosses: 1 alert
    before = levels(podium_env, sku)[sku]
    assert podium_env.call("/ShopInventory/RebuildLevels")["changed"] == []  # all is well

    db = sqlite3.connect(store_path("inventory"))
    with db:
        db.execute("update levels set available = 999, low = 0, low_stock_alerts = 0 where sku = ?", (sku,))
        db.execute("update holds set quantity = 1 where order_id = ?", (order_id,))
    db.close()
    assert levels(podium_env, sku)[sku]["available"] == 999

    report = podium_env.post("/ShopInventory/RebuildLevels", headers={SUBJECT_HEADER: "ops-bob"}).json()
    assert (report["changed"], report["changedHolds"], report["actor"]) == ([sku], [order_id], "ops-bob")
    assert levels(podium_env, sku)[sku] == before
    assert held(sku) == {order_id: 9}
    assert podium_env.call("/ShopInventory/RebuildLevels")["changed"] == []


@pytest.mark.engine
@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/ShopInventory/Levels", {"skus": []}, "skus: List should have at least 1 item"),
        ("/ShopInventory/Levels", {"skus": ["x"] * 101}, "skus: List should have at most 100 items"),
        ("/ShopInventory/Levels", {"skus": ["no spaces"]}, "skus.0: String should match pattern"),
        ("/ShopInventory/Restock", {"sku": "WIDGET-1", "quantity": 1}, "restockId: field required"),
        ("/ShopInventory/Restock", {"restockId": "r", "sku": "WIDGET-1", "quantity": 0}, "quantity:"),
        ("/ShopInventory/History", {"sku": "WIDGET-1", "limit": 0}, "limit: Input should be greater"),
        ("/ShopInventory/Reserve", {"orderId": "o", "lines": {}, "actor": ACTOR}, "lines: Dictionary should"),
        ("/ShopInventory/Reserve", {"orderId": "o", "lines": {"W-1": 0}, "actor": ACTOR}, "lines.W-1: Input"),
        ("/ShopInventory/Reserve", {"orderId": "o", "lines": {"W-1": 1}}, "actor: field required"),
        ("/ShopInventory/Release", {"actor": ACTOR}, "orderId: field required"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    podium_env: PodiumEnv, path: str, body: dict[str, Any], problem: str
) -> None:
    private = path.endswith(("Reserve", "Release"))
    response = podium_env.post_private(path, body) if private else podium_env.post(path, body)
    assert response.status_code == 400, response.text
    assert problem in response.json()["message"]


@pytest.mark.engine
def test_reserve_and_release_are_private(podium_env: PodiumEnv) -> None:
    sku, order_id = new_key("LIMITED-5"), new_key("order")
    podium_env.assert_private(
        "/ShopInventory/Reserve", {"orderId": order_id, "lines": {sku: 1}, "actor": "me"}
    )
    podium_env.assert_private("/ShopInventory/Release", {"orderId": order_id, "actor": "me"})
    assert levels(podium_env, sku)[sku]["available"] == 5
    assert held(sku) == {}
