"""Who may call a handler: ``public=``, ``system=``, and what the engine is told (pure, no engine)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from restate import Context, ObjectContext, ObjectSharedContext, WorkflowContext
from restate.discovery import compute_discovery_json
from restate.endpoint import Endpoint

import podium
from podium import Model, Service, VirtualObject, Workflow, add_approval_handlers


class Note(Model):
    text: str


def endpoint_manifest(*services: Any) -> dict[str, dict[str, Any]]:
    """What the SDK announces to the engine at discovery, by service name."""
    manifest = json.loads(compute_discovery_json(Endpoint().bind(*services), 4, "bidi"))
    return {service["name"]: service for service in manifest["services"]}


def handlers_of(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {handler["name"]: handler for handler in service["handlers"]}


# -- what a declaration may say -------------------------------------------------------------------------

REGISTRARS: dict[str, Callable[[str | None], Callable[..., Any]]] = {
    "Service.handler": lambda system: Service("Svc", system=system).handler,
    "VirtualObject.handler": lambda system: VirtualObject("Obj", system=system).handler,
    "Workflow.main": lambda system: Workflow("Flow", system=system).main,
    "Workflow.handler": lambda system: Workflow("Flow", system=system).handler,
}


@pytest.mark.parametrize("registrar", REGISTRARS)
@pytest.mark.parametrize("kind", ["admin", "Read", "public", ""])
def test_public_must_be_read_write_or_operator(registrar: str, kind: str) -> None:
    with pytest.raises(ValueError, match="public must be one of read, write, operator or None"):
        REGISTRARS[registrar]("lab")("H", public=kind)


@pytest.mark.parametrize("registrar", REGISTRARS)
@pytest.mark.parametrize("kind", ["read", "write", "operator"])
def test_every_kind_is_accepted(registrar: str, kind: str) -> None:
    REGISTRARS[registrar]("lab")("H", public=kind)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Service("Quotes").handler("Get", public="read"), "Quotes"),
        (lambda: VirtualObject("Cart").handler("Add", public="write"), "Cart"),
        (lambda: Workflow("Claim").main("Run", public="write"), "Claim"),
        (lambda: add_approval_handlers(Workflow("Review")), "Review"),
    ],
)
def test_a_public_handler_needs_its_service_to_name_a_system(make: Callable[[], Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} has a public handler, so it must name its system"):
        make()


def test_a_service_without_a_system_may_have_private_handlers() -> None:
    service = Service("Internal")

    @service.handler("Work")
    async def work(ctx: Context, note: Note) -> Note:
        return note

    assert handlers_of(endpoint_manifest(service)["Internal"])["Work"]["ingressPrivate"] is True


@pytest.mark.parametrize("system", ["", "two words", "travel/admin", "a:b"])
def test_a_system_is_a_short_plain_name(system: str) -> None:
    with pytest.raises(ValueError, match="system must be a short name"):
        Service("Svc", system=system)


@pytest.mark.parametrize("make", [Service, VirtualObject, Workflow])
def test_ingress_private_passed_to_a_service_is_refused(make: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=re.escape("mark handlers public=... instead")):
        make("Svc", system="lab", ingress_private=False)


@pytest.mark.parametrize("registrar", REGISTRARS)
@pytest.mark.parametrize("value", [True, False])
def test_ingress_private_passed_to_a_handler_is_refused(registrar: str, value: bool) -> None:
    with pytest.raises(TypeError, match=re.escape("say public=... instead of ingress_private")):
        REGISTRARS[registrar]("lab")("H", ingress_private=value)


# -- what the engine is told ----------------------------------------------------------------------------


APPROVE = {"podium.approval": "approval", "podium.decision": "approve"}
REJECT = {"podium.approval": "approval", "podium.decision": "reject"}


def test_the_manifest_marks_private_handlers_and_names_kinds_and_systems() -> None:
    quotes = Service("Quotes", system="shop", metadata={"team": "pricing"})
    carts = VirtualObject("Cart", system="shop")
    claims = Workflow("Claim", system="insurance")
    add_approval_handlers(claims)
    reviews = Workflow("Review", system="insurance")
    add_approval_handlers(reviews, public=None)

    @quotes.handler("Get", public="read")
    async def get_quote(ctx: Context, note: Note) -> Note:
        return note

    @quotes.handler("Reprice")
    async def reprice(ctx: Context, note: Note) -> Note:
        return note

    @carts.handler("Add", public="write", metadata={"owner": "cart-team"})
    async def add(ctx: ObjectContext, note: Note) -> None:
        return None

    @carts.handler("Peek", kind="shared")
    async def peek(ctx: ObjectSharedContext) -> None:
        return None

    @claims.main("Run", public="write")
    async def run_claim(ctx: WorkflowContext, note: Note) -> None:
        return None

    @reviews.main("Run")
    async def run_review(ctx: WorkflowContext, note: Note) -> None:
        return None

    manifest = endpoint_manifest(quotes, carts, claims, reviews)

    assert {name: service.get("metadata") for name, service in manifest.items()} == {
        "Quotes": {"team": "pricing", "podium.system": "shop"},
        "Cart": {"podium.system": "shop"},
        "Claim": {"podium.system": "insurance"},
        "Review": {"podium.system": "insurance"},
    }
    # Privacy is per handler: the service-level flag stays unset, so no handler inherits it.
    assert all(service.get("ingressPrivate") is None for service in manifest.values())
    seen = {
        f"{name}/{handler['name']}": (handler["ingressPrivate"], handler.get("metadata"))
        for name, service in manifest.items()
        for handler in service["handlers"]
    }
    assert seen == {
        "Quotes/Get": (False, {"podium.access": "read"}),
        "Quotes/Reprice": (True, None),
        "Cart/Add": (False, {"owner": "cart-team", "podium.access": "write"}),
        "Cart/Peek": (True, None),
        "Claim/Run": (False, {"podium.access": "write"}),
        "Claim/Approve": (False, {**APPROVE, "podium.access": "operator"}),
        "Claim/Reject": (False, {**REJECT, "podium.access": "operator"}),
        "Review/Run": (True, None),
        "Review/Approve": (True, APPROVE),  # the dashboard finds decision handlers by their metadata
        "Review/Reject": (True, REJECT),
    }


# -- who asked ------------------------------------------------------------------------------------------


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class _Ctx:
    def __init__(self, headers: dict[str, str]) -> None:
        self._request = _Request(headers)

    def request(self) -> _Request:
        return self._request


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-podium-subject": "alice"}, "alice"),
        ({"X-Podium-Subject": "bob"}, "bob"),
        ({"x-podium-subject": ""}, "internal"),
        ({"x-other": "mallory"}, "internal"),
        ({}, "internal"),
    ],
)
def test_caller_reads_the_subject_header(headers: dict[str, str], expected: str) -> None:
    assert podium.caller(_Ctx(headers)) == expected


# -- an app with no key to check signatures with --------------------------------------------------------


def ask(app: Any, method: str, path: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://deployment") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def keyless_app(monkeypatch: pytest.MonkeyPatch, source: str) -> Any:
    service = Service("Keyless", system="lab")

    @service.handler("Hello", public="read")
    async def hello(ctx: Context) -> str:
        return "hello"

    if source == "argument":
        return podium.app([service], identity_keys=[])
    monkeypatch.delenv(podium.IDENTITY_KEYS_ENV, raising=False)
    return podium.app([service])


@pytest.mark.parametrize("source", ["argument", "environment"])
@pytest.mark.parametrize(("method", "path"), [("POST", "/invoke/Keyless/Hello"), ("GET", "/discover")])
def test_an_app_without_keys_refuses_everything_and_says_which_variable_to_set(
    monkeypatch: pytest.MonkeyPatch, source: str, method: str, path: str
) -> None:
    response = ask(keyless_app(monkeypatch, source), method, path)
    assert response.status_code == 401
    assert "PODIUM_IDENTITY_KEYS" in response.text


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_an_app_without_keys_still_answers_its_health_check(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    assert ask(keyless_app(monkeypatch, source), "GET", "/health").status_code == 200
