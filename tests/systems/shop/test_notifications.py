"""Notifications: templates per kind and channel, preferences, once per message, outcomes per order."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, get_args

import jinja2
import pytest
from restate import RunOptions

import podium
from podium import INTERNAL_CALLER, SUBJECT_HEADER
from podium.testing import PodiumEnv, new_key
from services.common import notifications as common_notifications
from services.common.app import SERVICES as COMMON_SERVICES
from services.common.circuits import BreakerSettings, ProviderCircuits
from services.common.providers import BOUNCE_DOMAIN, UNDELIVERABLE_PHONE_PREFIX, MailProvider
from services.shop import customers as customers_module
from services.shop.customers import KINDS, NOTIFIED, SMS_LIMIT, Channel, customers, render
from services.shop.events import Event, EventType, OrderState, Published, fold
from tests.systems.shop.test_events import HAPPY, SHIPPING_FAILED, stream

E = EventType
CHANNELS: tuple[Channel, ...] = get_args(Channel)
DELIVERED = (*HAPPY, E.ORDER_DELIVERED)


def order_after(types: tuple[EventType, ...], **fields: Any) -> OrderState:
    """The folded order of a stream of ``types``, with realistic ids (and ``fields`` changed)."""
    state = fold(stream(*types))
    updates = {"order_id": new_key("order"), "tracking_number": "SHP8F3A2C91D0", **fields}
    return state.model_copy(update=updates)


# -- templates (no engine) ---------------------------------------------------------------------------------


def test_the_notified_types_and_their_kinds() -> None:
    assert set(NOTIFIED) == set(KINDS)
    assert KINDS == {
        E.ORDER_COMPLETED: "confirmed",
        E.ORDER_CANCELLED: "cancelled",
        E.ORDER_DELIVERED: "delivered",
    }


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_confirmation_names_the_order_its_total_and_its_tracking(channel: Channel) -> None:
    order = order_after(HAPPY)
    rendered = render("confirmed", channel, order)
    text = f"{rendered.subject}\n{rendered.body}"
    assert order.order_id in text
    assert "SHP8F3A2C91D0" in rendered.body
    assert "podium-post" in rendered.body
    if channel != "push":
        assert "49.97" in rendered.body
    if channel == "email":
        assert rendered.subject == f"Order {order.order_id} confirmed"
        assert "2 x WIDGET-1" in rendered.body
        assert "1 x GADGET-2" in rendered.body
    if channel == "push":
        assert rendered.subject == f"Order {order.order_id} confirmed"


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_cancellation_says_why_and_what_was_refunded(channel: Channel) -> None:
    order = order_after(SHIPPING_FAILED)
    rendered = render("cancelled", channel, order)
    assert "cannot ship to AQ" in rendered.body
    assert "Refunded 49.97" in rendered.body or "refunded 49.97" in rendered.body
    assert order.order_id in f"{rendered.subject} {rendered.body}"
    if channel != "sms":
        assert rendered.subject == f"Order {order.order_id} cancelled"


def test_a_cancellation_with_nothing_charged_says_so_and_needs_no_reason() -> None:
    order = order_after((E.ORDER_PLACED, E.INVENTORY_RESERVATION_FAILED, E.ORDER_CANCELLED), reason=None)
    for channel in CHANNELS:
        rendered = render("cancelled", channel, order)
        assert "Nothing was charged." in rendered.body
        assert "None" not in rendered.body
        assert "Reason" not in rendered.body


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_delivery_names_the_carrier_and_the_parcel(channel: Channel) -> None:
    order = order_after(DELIVERED)
    rendered = render("delivered", channel, order)
    assert "podium-post" in rendered.body
    assert "SHP8F3A2C91D0" in rendered.body
    assert order.order_id in f"{rendered.subject} {rendered.body}"


@pytest.mark.parametrize("kind", sorted(set(KINDS.values())))
def test_an_sms_is_one_line_within_one_message(kind: Any) -> None:
    # The longest realistic values: a generated order id, a cancellation reason a customer typed.
    order = order_after(
        DELIVERED if kind == "delivered" else HAPPY if kind == "confirmed" else SHIPPING_FAILED,
        order_id=f"order-{uuid.uuid4().hex}",
        reason="cancelled by customer-4711@example.com: found it cheaper elsewhere",
    )
    body = render(kind, "sms", order).body
    assert len(body) <= SMS_LIMIT
    assert "\n" not in body
    assert not body.endswith("…"), "the template itself must fit, not be cut"
    assert render(kind, "sms", order).subject == ""


def test_an_sms_too_long_for_one_message_is_cut_to_it() -> None:
    order = order_after(SHIPPING_FAILED, reason="x" * 400)
    body = render("cancelled", "sms", order).body
    assert len(body) == SMS_LIMIT
    assert body.endswith("…")


def test_a_template_naming_a_field_the_order_lacks_fails_instead_of_rendering_blank() -> None:
    unshipped = order_after(HAPPY[:3], carrier="podium-post", tracking_number=None)  # no parcel yet
    for channel in CHANNELS:
        with pytest.raises(jinja2.UndefinedError, match="tracking_number"):
            render("confirmed", channel, unshipped)


def test_text_is_not_html_escaped() -> None:
    order = order_after(SHIPPING_FAILED, reason="Tom & Jerry <3")
    assert "Reason: Tom & Jerry <3." in render("cancelled", "email", order).body


# -- the subscriber on the engine --------------------------------------------------------------------------


NOTIFY_APP = podium.app(services=[customers, *COMMON_SERVICES])
"""The notifier with the shared services: one app, so the harness registers it once."""


@pytest.fixture
def podium_app() -> Any:
    return NOTIFY_APP


def fresh_phone(prefix: str = "+1555") -> str:
    return prefix + str(uuid.uuid4().int % 10**7).zfill(7)


def new_stream(types: tuple[EventType, ...]) -> list[Event]:
    """The events of a new order, as the aggregate records them."""
    return stream(*types, order_id=new_key("order"))


def batch(customer: str, events: list[Event], *, first: int = 1, last: int | None = None) -> dict[str, Any]:
    """A ``Published`` batch of events ``first``..``last`` of a stream, and the order after them."""
    last = last or len(events)
    order = fold(events[:last]).model_copy(
        update={"customer_id": customer, "email": f"{customer}@example.com"}
    )
    return Published(events=events[first - 1 : last], order=order).model_dump(mode="json")


def notify(env: PodiumEnv, customer: str, body: dict[str, Any]) -> dict[str, Any]:
    response = env.post_private(f"/ShopCustomer/{customer}/Notify", body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def outcomes(env: PodiumEnv, customer: str, order_id: str) -> dict[str, Any]:
    found: dict[str, Any] = env.call(f"/ShopCustomer/{customer}/Notifications", {"orderId": order_id})
    return found


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {o["channel"]: o["status"] for o in report["sent"]}


@pytest.mark.engine
def test_email_only_by_default_then_every_chosen_channel(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    events = new_stream(HAPPY)
    order_id = events[0].order_id
    assert outcomes(podium_env, customer, order_id) == {
        "orderId": order_id,
        "version": 0,
        "pending": [],
        "notifications": [],
    }

    report = notify(podium_env, customer, batch(customer, events))
    assert statuses(report) == {"email": "delivered"}
    assert [(s["sequence"], s["why"]) for s in report["skipped"]] == [
        (n, "not notified") for n in range(1, 5)
    ]
    mails = MailProvider().outbox(f"{customer}@example.com")
    assert [(m["key"], m["subject"]) for m in mails] == [
        (f"{order_id}-confirmed-email", f"Order {order_id} confirmed")
    ]
    assert "SHP1" in mails[0]["body"]
    assert MailProvider().outbox(customer, "push") == []

    # Every channel, and an email of their own instead of the order's.
    phone, own = fresh_phone(), f"{customer}@own.example.com"
    prefs = {"channels": ["email", "sms", "push"], "email": own, "phone": phone}
    podium_env.call(f"/ShopCustomer/{customer}/SetPreferences", prefs)
    assert podium_env.call(f"/ShopCustomer/{customer}/GetPreferences") == prefs
    second = new_stream(HAPPY)
    report = notify(podium_env, customer, batch(customer, second))
    assert statuses(report) == {"email": "delivered", "sms": "delivered", "push": "delivered"}
    keys = {
        channel: [m["key"] for m in MailProvider().outbox(to, channel)]
        for channel, to in (("email", own), ("sms", phone), ("push", customer))
    }
    second_id = second[0].order_id
    assert keys == {c: [f"{second_id}-confirmed-{c}"] for c in ("email", "sms", "push")}
    assert len(MailProvider().outbox(f"{customer}@example.com")) == 1  # the first order's only

    recorded = outcomes(podium_env, customer, second_id)
    assert recorded["version"] == 5
    assert recorded["notifications"] == report["sent"]
    assert [(n["messageId"], n["kind"], n["to"]) for n in recorded["notifications"]] == [
        (f"{second_id}-confirmed-email", "confirmed", f"{customer[0]}***@own.example.com"),
        (f"{second_id}-confirmed-sms", "confirmed", f"***{phone[-4:]}"),
        (f"{second_id}-confirmed-push", "confirmed", customer),
    ]
    assert all(n["at"].endswith("Z") and n["detail"].startswith("msg_") for n in recorded["notifications"])


@pytest.mark.engine
def test_each_message_goes_once_whatever_is_redelivered_or_early(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    events = new_stream(DELIVERED)
    order_id, email = events[0].order_id, f"{customer}@example.com"
    first, second = batch(customer, events, last=5), batch(customer, events, first=6)

    # The delivery arrives before the checkout's batch: it waits for the gap.
    early = notify(podium_env, customer, second)
    assert (early["sent"], early["version"]) == ([], 0)
    assert [(s["sequence"], s["why"]) for s in early["skipped"]] == [(6, "early")]
    assert outcomes(podium_env, customer, order_id)["pending"] == [6]
    assert MailProvider().outbox(email) == []

    # The checkout's batch fills it: both are told, in order, the delivery with the newest order.
    report = notify(podium_env, customer, first)
    assert [(o["kind"], o["status"]) for o in report["sent"]] == [
        ("confirmed", "delivered"),
        ("delivered", "delivered"),
    ]
    assert report["version"] == 6
    # Redelivered, alone and together: nothing is sent again, nothing reaches the provider again.
    for again in (first, second, batch(customer, events)):
        repeat = notify(podium_env, customer, again)
        assert repeat["sent"] == []
        assert {s["why"] for s in repeat["skipped"]} == {"duplicate"}
    mails = MailProvider().outbox(email)
    assert [m["key"] for m in mails] == [f"{order_id}-confirmed-email", f"{order_id}-delivered-email"]
    assert all(MailProvider().requests(m["key"]) == 1 for m in mails)
    recorded = outcomes(podium_env, customer, order_id)
    assert (recorded["version"], recorded["pending"], len(recorded["notifications"])) == (6, [], 2)


@pytest.mark.engine
def test_a_bounce_and_an_undeliverable_sms_are_outcomes_and_push_still_goes(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    phone = fresh_phone(UNDELIVERABLE_PHONE_PREFIX)
    prefs = {"channels": ["email", "sms", "push"], "email": f"{customer}@{BOUNCE_DOMAIN}", "phone": phone}
    podium_env.call(f"/ShopCustomer/{customer}/SetPreferences", prefs)
    events = new_stream(HAPPY)

    report = notify(podium_env, customer, batch(customer, events))
    assert statuses(report) == {"email": "bounced", "sms": "undeliverable", "push": "delivered"}
    sms = next(o for o in report["sent"] if o["channel"] == "sms")
    assert "cannot be delivered" in sms["detail"]
    assert [m["subject"] for m in MailProvider().outbox(customer, "push")] == [
        f"Order {events[0].order_id} confirmed"
    ]
    assert MailProvider().outbox(phone, "sms") == []
    assert outcomes(podium_env, customer, events[0].order_id)["notifications"] == report["sent"]
    # A refused recipient is the provider answering: its breaker did not count it.
    assert common_notifications.CIRCUITS.state("sms") == "closed"


class _PushDown(MailProvider):
    """The push provider is unreachable; email and SMS work."""

    def send(self, key: str, *, to: str, subject: str, body: str, channel: str = "email") -> dict[str, Any]:
        if channel == "push":
            raise ConnectionError("push provider unreachable")
        return super().send(key, to=to, subject=subject, body=body, channel=channel)


@pytest.mark.engine
def test_a_provider_that_stays_down_is_recorded_failed_and_spoils_no_other_channel(
    podium_env: PodiumEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first failure opens the push circuit; the second attempt finds it open, and is the last.
    circuits = ProviderCircuits(BreakerSettings(failures=1, reset=timedelta(minutes=5)))
    monkeypatch.setattr(common_notifications, "CIRCUITS", circuits)
    monkeypatch.setattr(customers_module, "MailProvider", _PushDown)
    monkeypatch.setattr(
        customers_module,
        "SEND",
        RunOptions[dict[str, Any]](max_attempts=2, initial_retry_interval=timedelta(milliseconds=10)),
    )
    customer, phone = new_key("cust"), fresh_phone()
    podium_env.call(
        f"/ShopCustomer/{customer}/SetPreferences", {"channels": ["push", "email", "sms"], "phone": phone}
    )
    events = new_stream(HAPPY)

    report = notify(podium_env, customer, batch(customer, events))
    assert statuses(report) == {"push": "failed", "email": "delivered", "sms": "delivered"}
    push = report["sent"][0]
    assert "circuit open" in push["detail"], push
    assert circuits.state("push") == "open"
    assert len(MailProvider().outbox(f"{customer}@example.com")) == 1
    assert len(MailProvider().outbox(phone, "sms")) == 1
    assert MailProvider().outbox(customer, "push") == []
    assert outcomes(podium_env, customer, events[0].order_id)["notifications"] == report["sent"]


@pytest.mark.engine
def test_preference_changes_are_recorded_with_their_actor(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    path = f"/ShopCustomer/{customer}"
    assert podium_env.call(f"{path}/PreferencesHistory") == {"changes": []}
    sms = {"channels": ["sms"], "phone": fresh_phone()}

    response = podium_env.post(f"{path}/SetPreferences", sms, headers={SUBJECT_HEADER: "alice"})
    assert response.status_code == 200, response.text
    podium_env.call(f"{path}/SetPreferences", sms)  # the same again: nothing changes, nothing recorded
    podium_env.call(f"{path}/SetPreferences", {"channels": ["email"]})  # the trusted ingress: internal

    changes = podium_env.call(f"{path}/PreferencesHistory")["changes"]
    assert [(c["actor"], c["preferences"]["channels"]) for c in changes] == [
        ("alice", ["sms"]),
        (INTERNAL_CALLER, ["email"]),
    ]
    assert changes[0]["preferences"]["phone"] == sms["phone"]
    assert all(c["at"].endswith("Z") for c in changes)
    assert changes[0]["at"] <= changes[1]["at"]


@pytest.mark.engine
@pytest.mark.parametrize(
    ("handler", "body", "message"),
    [
        ("SetPreferences", {"channels": ["fax"]}, "channels.0: Input should be 'email', 'sms' or 'push'"),
        ("SetPreferences", {"channels": []}, "channels: List should have at least 1 item"),
        ("SetPreferences", {"channels": ["sms"]}, "phone: required when channels include sms"),
        ("SetPreferences", {"phone": "5550100"}, "phone: String should match pattern"),
        ("Notifications", {}, "orderId: field required"),
        ("Notifications", {"orderId": ""}, "orderId: String should have at least 1 character"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    podium_env: PodiumEnv, handler: str, body: dict[str, Any], message: str
) -> None:
    response = podium_env.post(f"/ShopCustomer/{new_key('cust')}/{handler}", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


@pytest.mark.engine
def test_notify_is_private_and_refuses_a_batch_it_cannot_take(podium_env: PodiumEnv) -> None:
    customer = new_key("cust")
    events = new_stream(HAPPY)
    good = batch(customer, events)
    podium_env.assert_private(f"/ShopCustomer/{customer}/Notify", good)

    refusals = [
        ({**good, "events": []}, "events: List should have at least 1 item"),
        (batch(new_key("cust"), events), "order.customerId: the order is"),
        (
            {**good, "events": [*good["events"], *batch(customer, new_stream(HAPPY))["events"]]},
            "events: a batch",
        ),
    ]
    for body, message in refusals:
        response = podium_env.post_private(f"/ShopCustomer/{customer}/Notify", body)
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]
    assert outcomes(podium_env, customer, events[0].order_id)["version"] == 0


@pytest.mark.engine
def test_the_shared_notification_service_answers_as_before_behind_the_breakers(podium_env: PodiumEnv) -> None:
    key, phone = new_key("msg"), fresh_phone(UNDELIVERABLE_PHONE_PREFIX)
    refused = podium_env.post_private(
        "/NotificationService/SendSMS", {"messageId": key, "to": phone, "text": "hi"}
    )
    assert refused.status_code == 502, refused.text
    assert "cannot be delivered" in refused.json()["message"]
    assert common_notifications.CIRCUITS.state("sms") == "closed"

    push = {"messageId": f"{key}-push", "userId": key, "title": "Hello", "body": "there"}
    first = podium_env.call_private("/NotificationService/SendPush", push)
    assert first["status"] == "delivered"
    assert podium_env.call_private("/NotificationService/SendPush", push) == first
    assert len(MailProvider().outbox(key, "push")) == 1
