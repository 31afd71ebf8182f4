"""The order's fold, state machine and projection cursor: pure functions, no engine."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from services.shop.events import (
    PROGRESS,
    TRANSITIONS,
    Cursor,
    Event,
    EventType,
    IllegalTransition,
    OrderState,
    OrderStatus,
    apply,
    fold,
    new_event,
    offer,
)
from services.shop.inventory import low_stock_threshold, starting_stock
from services.shop.models import PlaceOrder
from services.shop.projections import describe, without_gaps

E = EventType
PLACED_DATA = {
    "customerId": "c-1",
    "email": "c1@example.com",
    "total": 49.97,
    "lines": {"GADGET-2": 1, "WIDGET-1": 2},
    "fingerprint": "f" * 32,
}
DATA: dict[EventType, dict[str, Any]] = {
    E.ORDER_PLACED: PLACED_DATA,
    E.PAYMENT_PROCESSED: {"paymentId": "o-1-payment", "amount": 49.97},
    E.PAYMENT_REFUNDED: {"paymentId": "o-1-payment", "amount": 49.97},
    E.SHIPMENT_CREATED: {"shipmentId": "o-1-shipment", "trackingNumber": "SHP1", "carrier": "podium-post"},
    E.PAYMENT_FAILED: {"reason": "card declined"},
    E.SHIPPING_FAILED: {"reason": "cannot ship to AQ"},
    E.INVENTORY_RESERVATION_FAILED: {"reason": "out of stock"},
    E.TRACKING_UPDATED: {"status": "in_transit", "location": "Memphis"},
}


def stream(*types: EventType, order_id: str = "o-1") -> list[Event]:
    return [
        Event(
            order_id=order_id,
            sequence=n,
            type=t,
            event_id=t.value,
            at=f"2025-01-01T00:00:{n:02d}.000Z",
            actor="test",
            correlation_id="corr-1",
            data=DATA.get(t, {}),
        )
        for n, t in enumerate(types, start=1)
    ]


HAPPY = (E.ORDER_PLACED, E.INVENTORY_RESERVED, E.PAYMENT_PROCESSED, E.SHIPMENT_CREATED, E.ORDER_COMPLETED)
PAYMENT_FAILED = (
    E.ORDER_PLACED,
    E.INVENTORY_RESERVED,
    E.PAYMENT_FAILED,
    E.INVENTORY_RELEASED,
    E.ORDER_CANCELLED,
)
SHIPPING_FAILED = (
    E.ORDER_PLACED,
    E.INVENTORY_RESERVED,
    E.PAYMENT_PROCESSED,
    E.SHIPPING_FAILED,
    E.PAYMENT_REFUNDED,
    E.INVENTORY_RELEASED,
    E.ORDER_CANCELLED,
)
OUT_OF_STOCK = (E.ORDER_PLACED, E.INVENTORY_RESERVATION_FAILED, E.ORDER_CANCELLED)


def test_the_happy_path_folds_to_a_completed_order() -> None:
    state = fold(stream(*HAPPY))
    assert state.status == OrderStatus.COMPLETED
    assert state.version == 5
    assert (state.customer_id, state.total, state.lines) == ("c-1", 49.97, PLACED_DATA["lines"])
    assert (state.payment_id, state.charged, state.tracking_number) == ("o-1-payment", 49.97, "SHP1")
    assert state.correlation_id == "corr-1"
    assert state.completed_steps == [
        "reserve-inventory",
        "process-payment",
        "create-shipment",
        "complete-order",
    ]
    assert state.history == list(HAPPY)
    assert (state.placed_at, state.updated_at) == ("2025-01-01T00:00:01.000Z", "2025-01-01T00:00:05.000Z")


@pytest.mark.parametrize(
    ("types", "reason"),
    [
        (PAYMENT_FAILED, "card declined"),
        (SHIPPING_FAILED, "cannot ship to AQ"),
        (OUT_OF_STOCK, "out of stock"),
    ],
    ids=["payment-failed", "shipping-failed", "out-of-stock"],
)
def test_every_compensation_path_of_the_diagram_ends_cancelled(
    types: tuple[EventType, ...], reason: str
) -> None:
    state = fold(stream(*types))
    assert state.status == OrderStatus.CANCELLED
    assert state.reason == reason


CANCELLED_BY_CUSTOMER = (
    *HAPPY,
    E.CANCELLATION_REQUESTED,
    E.SHIPMENT_CANCELLED,
    E.PAYMENT_REFUNDED,
    E.INVENTORY_RELEASED,
    E.ORDER_CANCELLED,
)
PAYMENT_REJECTED = (E.ORDER_PLACED, E.PAYMENT_FAILED, E.ORDER_CANCELLED)


def test_the_customers_cancellation_and_a_refused_method_end_cancelled() -> None:
    cancelled = fold(stream(*CANCELLED_BY_CUSTOMER))
    assert (cancelled.status, cancelled.refunded, cancelled.reason) == (
        OrderStatus.CANCELLED,
        49.97,
        "cancelled by test",
    )
    assert cancelled.completed_steps[-4:] == [
        "cancel-shipment",
        "refund-payment",
        "release-inventory",
        "cancel-order",
    ]
    rejected = fold(stream(*PAYMENT_REJECTED))
    assert (rejected.status, rejected.reason) == (OrderStatus.CANCELLED, "card declined")


def test_partial_refunds_add_up_and_keep_the_order_where_it_was() -> None:
    events = stream(*HAPPY)
    state = fold(events)
    for n, amount in enumerate((10.0, 0.01), start=6):
        refund = new_event(
            state,
            E.PAYMENT_REFUNDED,
            event_id=f"refund-{n}",
            at=float(n),
            actor="ops",
            data={"paymentId": "p", "amount": amount},
        )
        state = apply(state, refund)
    assert (state.status, state.refunded, state.version) == (OrderStatus.COMPLETED, 10.01, 7)
    assert state.event_ids[-2:] == ["refund-6", "refund-7"]


def test_the_fold_is_pure_and_resumable() -> None:
    events = stream(*SHIPPING_FAILED)
    first = fold(events[:3])
    snapshot = first.model_dump()
    assert fold(events[3:], first) == fold(events)
    assert first.model_dump() == snapshot  # applying more never changed the earlier state


@pytest.mark.parametrize(
    ("types", "illegal"),
    [
        ((), E.INVENTORY_RESERVED),  # nothing before the order is placed
        ((E.ORDER_PLACED,), E.PAYMENT_PROCESSED),  # no payment before the reservation
        ((E.ORDER_PLACED,), E.ORDER_PLACED),  # placed once
        ((E.ORDER_PLACED, E.INVENTORY_RESERVED, E.PAYMENT_FAILED), E.ORDER_CANCELLED),  # release first
        (HAPPY, E.INVENTORY_RELEASED),  # a completed order gives its stock back only when cancelled
        (OUT_OF_STOCK, E.INVENTORY_RESERVED),  # a cancelled order stays cancelled
        ((*HAPPY, E.ORDER_DELIVERED), E.TRACKING_UPDATED),  # nothing after delivery
    ],
)
def test_illegal_transitions_are_refused(types: tuple[EventType, ...], illegal: EventType) -> None:
    state = fold(stream(*types))
    with pytest.raises(IllegalTransition, match=f"{illegal} is not allowed when the order is {state.status}"):
        new_event(state, illegal, event_id="x", at=0.0, actor="test", data=DATA.get(illegal, {}))


def test_an_event_out_of_sequence_is_refused() -> None:
    events = stream(*HAPPY)
    with pytest.raises(IllegalTransition, match="event 3 does not follow event 1"):
        apply(fold(events[:1]), events[2])


@pytest.mark.parametrize(
    ("event_type", "data", "problem"),
    [
        (
            E.ORDER_PLACED,
            {k: v for k, v in PLACED_DATA.items() if k != "customerId"},
            "customerId: Field required",
        ),
        (E.ORDER_PLACED, {**PLACED_DATA, "lines": "WIDGET-1"}, "lines: Input should be a valid dictionary"),
        (E.PAYMENT_PROCESSED, {"paymentId": "p"}, "amount: Field required"),
        (E.TRACKING_UPDATED, {"location": "Memphis"}, "status: Field required"),
    ],
    ids=["placed-without-customer", "placed-with-bad-lines", "paid-without-amount", "scan-without-status"],
)
def test_an_event_whose_data_cannot_be_folded_is_refused_when_it_is_built(
    event_type: EventType, data: dict[str, Any], problem: str
) -> None:
    # The rule every door applies (Record, each projection's Apply and Rebuild), so the fold never meets it.
    valid = stream(event_type)[0].model_dump()
    with pytest.raises(ValidationError, match=f"not a valid {event_type.value} event: {problem}"):
        Event.model_validate({**valid, "data": data})


def test_new_event_numbers_stamps_and_correlates() -> None:
    state = fold(stream(E.ORDER_PLACED))
    event = new_event(state, E.INVENTORY_RESERVED, event_id="InventoryReserved", at=1.5, actor="a", data={})
    assert (event.sequence, event.at, event.correlation_id, event.order_id) == (
        2,
        "1970-01-01T00:00:01.500Z",
        "corr-1",
        "o-1",
    )


def test_every_status_has_a_progress_and_every_transition_target_is_known() -> None:
    assert set(PROGRESS) == set(OrderStatus)
    assert {target for target in TRANSITIONS.values()} <= set(OrderStatus)
    terminal = {s for s in OrderStatus if not any(src == s for src, _ in TRANSITIONS)}
    assert terminal == {OrderStatus.CANCELLED}  # a delivered order can still be refunded


def test_the_cursor_applies_once_and_in_order_whatever_the_delivery() -> None:
    events = stream(*SHIPPING_FAILED)
    expected = fold(events)
    for delivery in itertools.islice(itertools.permutations(events[1:]), 0, None, 97):
        cursor, state = Cursor(), OrderState()
        for event in [events[0], *delivery, events[3], events[0]]:  # two redeliveries as well
            cursor, ready = offer(cursor, event)
            state = fold(ready, state)
        assert state == expected
        assert (cursor.version, cursor.pending, cursor.duplicates) == (7, {}, 2)


def test_the_cursor_holds_early_events() -> None:
    events = stream(*HAPPY)
    cursor, ready = offer(Cursor(), events[2])
    assert (ready, sorted(cursor.pending), cursor.version) == ([], [3], 0)
    cursor, ready = offer(cursor, events[2])
    assert (ready, cursor.duplicates) == ([], 1)
    cursor, ready = offer(cursor, events[0])
    assert [e.sequence for e in ready] == [1]
    cursor, ready = offer(cursor, events[1])
    assert [e.sequence for e in ready] == [2, 3]


def test_the_read_models_fold_the_stream_up_to_its_first_gap() -> None:
    events = stream(*PAYMENT_FAILED)
    assert fold(without_gaps(events)) == fold(events)
    with_gap = [events[0], events[1], events[3], events[4]]
    assert without_gaps(with_gap) == events[:2]
    assert without_gaps(events[1:]) == []
    assert describe(events[2]) == "card declined"


def test_every_event_of_a_delivered_order_is_described_in_the_audit() -> None:
    details = [describe(e) for e in stream(*HAPPY, E.TRACKING_UPDATED, E.ORDER_DELIVERED)]
    assert details == [
        "customer c-1 ordered {'GADGET-2': 1, 'WIDGET-1': 2} for 49.97",
        "",
        "payment o-1-payment: 49.97",
        "podium-post label, tracking SHP1",
        "",
        "in_transit Memphis",
        "",
    ]


def test_the_fingerprint_ignores_ids_but_not_content() -> None:
    body: dict[str, Any] = {
        "customerId": "c-1",
        "email": "c1@example.com",
        "items": [{"sku": "W", "quantity": 1, "unitPrice": 2.5}],
        "shippingAddress": {"street": "s", "city": "c", "zip": "1", "country": "US"},
    }
    base = PlaceOrder.model_validate(body)
    assert (
        base.fingerprint()
        == PlaceOrder.model_validate({**body, "correlationId": "x", "orderId": "o"}).fingerprint()
    )
    other = PlaceOrder.model_validate({**body, "items": [{"sku": "W", "quantity": 2, "unitPrice": 2.5}]})
    assert other.fingerprint() != base.fingerprint()
    assert other.total == 5.0


@pytest.mark.parametrize(
    ("sku", "units", "threshold"),
    [
        ("SOLDOUT-1", 0, 1),
        ("LIMITED-10-x", 10, 2),
        ("UNLIMITED-x", 1_000_000_000, 200_000_000),
        ("W", 1000, 200),
    ],
)
def test_stock_test_data(sku: str, units: int, threshold: int) -> None:
    assert starting_stock(sku) == units
    assert low_stock_threshold(units) == threshold
