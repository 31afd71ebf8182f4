"""The dashboard in a real browser (Debian's Chromium), against a real engine and the real systems."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from podium import IngressClient
from podium.testing import assert_eventually, new_key
from tests.dashboard.conftest import (
    DashboardEnv,
    browse,
    keep_marker,
    screenshot,
    signed_in,
    was_not_reloaded,
)

pytestmark = pytest.mark.engine

ATLANTIS = {
    "customerEmail": "alice@example.com",
    "flight": {"from": "SFO", "to": "JFK", "date": "2024-12-15", "passengers": 1},
    "hotel": {"city": "Atlantis", "checkIn": "2024-12-15", "checkOut": "2024-12-16", "guests": 2},
}
LIVE = 10_000  # ms: a change must show without a reload well within this (it takes about a second)


def test_a_trip_failing_at_the_hotel_appears_compensated_without_a_reload(dashboard: DashboardEnv) -> None:
    browse(_trip_failing_at_the_hotel(dashboard))


async def _trip_failing_at_the_hotel(dashboard: DashboardEnv) -> None:
    trip = new_key("trip")
    async with signed_in(dashboard) as page:
        assert "token=" not in page.url  # the link signed in, then the browser went to the clean URL
        await page.goto(f"{dashboard.url}/?key={trip}")
        await expect(page.locator("table.sagas")).to_contain_text("No saga matches")
        await keep_marker(page)

        booking = await asyncio.to_thread(
            dashboard.engine.call, f"/TripOrchestrator/{trip}/BookTrip", {"customerId": trip, **ATLANTIS}
        )
        assert booking["status"] == "failed"

        row = page.locator(f"tr[data-key='{trip}']")
        await expect(row).to_have_attribute("data-status", "compensated", timeout=LIVE)
        await expect(row).to_contain_text("travel")
        assert await was_not_reloaded(page)
        await screenshot(page, "sagas-atlantis")

        await row.get_by_role("link").click()
        steps = page.locator("table.steps tbody tr")
        await expect(steps.first).to_be_visible()
        statuses = {
            await steps.nth(i).get_attribute("data-step"): await steps.nth(i).get_attribute("data-status")
            for i in range(await steps.count())
        }
        undoable = {"reserve-flight", "reserve-hotel", "charge-payment"}
        assert {step: statuses[step] for step in undoable} == dict.fromkeys(undoable, "compensated")
        bars = page.locator("svg.timeline rect[data-kind='undo']")
        drawn = [await bars.nth(i).get_attribute("data-step") or "" for i in range(await bars.count())]
        assert sorted(drawn) == sorted(undoable)
        await expect(page.locator("h1")).to_contain_text("compensated")
        await screenshot(page, "saga-atlantis-timeline")


async def _held(dashboard: DashboardEnv, key: str) -> dict[str, Any]:
    def letter() -> dict[str, Any]:
        log = dashboard.engine.call(f"/LabSaga/{key}/Log")
        assert log is not None
        assert log["deadLetters"]
        assert log["deadLetters"][-1]["awakeableId"]
        found: dict[str, Any] = log["deadLetters"][-1]
        return found

    return await asyncio.to_thread(
        assert_eventually, letter, timeout=30, message=f"a held dead letter in {key}"
    )


async def _attach(dashboard: DashboardEnv, invocation: str) -> dict[str, Any]:
    def attach() -> dict[str, Any]:
        with IngressClient(dashboard.engine.ingress_url, timeout=60) as ingress:
            answer: dict[str, Any] = ingress.attach(invocation)
            return answer

    return await asyncio.to_thread(attach)


def _scenario(undo_fail: int) -> dict[str, Any]:
    return {
        "steps": [
            {"name": "a", "action": {"failTimes": 0}, "undo": {"failTimes": 0}},
            {"name": "b", "action": {"failTimes": 0}, "undo": {"failTimes": undo_fail}},
            {"name": "c", "action": {"failTimes": -1}, "undo": {"failTimes": 0}},
        ],
        "retryAttempts": 2,
        "holdMs": 600_000,
    }


def test_a_dead_letter_is_retried_from_the_page_and_another_resolved_with_a_note(
    dashboard: DashboardEnv,
) -> None:
    browse(_dead_letters(dashboard))


async def _dead_letters(dashboard: DashboardEnv) -> None:
    async with signed_in(dashboard) as page:
        await page.goto(f"{dashboard.url}/dead-letters")
        await keep_marker(page)
        # The compensation of b fails twice, which is every attempt the saga makes: a dead letter, held.
        # A third attempt succeeds: the fault is gone by the time a person retries.
        retried = new_key("saga")
        invocation = dashboard.engine.send(f"/LabSaga/{retried}/Run", _scenario(undo_fail=2))
        await _held(dashboard, retried)
        letter = page.locator(f".letter.open[data-key='{retried}'][data-step='b']")
        await expect(letter).to_be_visible(timeout=LIVE)
        assert await was_not_reloaded(page)
        await screenshot(page, "dead-letter-held")
        await letter.get_by_role("button", name="Retry compensation").click()
        result = await _attach(dashboard, invocation)
        assert result["errorType"] == "SagaCompensated"
        assert [s["status"] for s in result["log"]["steps"]] == ["compensated"] * 3
        assert result["log"]["deadLetters"][0]["resolution"] == "compensated"
        assert result["log"]["deadLetters"][0]["by"] == "ops-test"
        closed = page.locator(f".letter[data-key='{retried}'][data-step='b'] .resolution")
        await expect(closed).to_contain_text("compensated by ops-test", timeout=LIVE)

        # This one never succeeds: a person undoes it by hand and says so.
        resolved = new_key("saga")
        invocation = dashboard.engine.send(f"/LabSaga/{resolved}/Run", _scenario(undo_fail=-1))
        await _held(dashboard, resolved)
        letter = page.locator(f".letter.open[data-key='{resolved}'][data-step='b']")
        await expect(letter).to_be_visible(timeout=LIVE)
        note = "refunded by hand in the back office, ticket 4711"
        await letter.get_by_label("note").fill(note)
        await letter.get_by_role("button", name="Mark resolved").click()
        result = await _attach(dashboard, invocation)
        assert result["errorType"] == "SagaCompensated"
        assert {s["name"]: s["status"] for s in result["log"]["steps"]} == {
            "a": "compensated",
            "b": "resolved",
            "c": "compensated",
        }
        (kept,) = dashboard.engine.call(f"/LabSaga/{resolved}/Log")["deadLetters"]
        assert (kept["resolution"], kept["note"], kept["by"]) == ("resolved", note, "ops-test")
        closed = page.locator(f".letter[data-key='{resolved}'][data-step='b'] .resolution")
        await expect(closed).to_contain_text(note, timeout=LIVE)
        assert await was_not_reloaded(page)
        await screenshot(page, "dead-letters-closed")


def test_a_pending_claim_is_approved_from_the_page_and_pays_out(dashboard: DashboardEnv) -> None:
    browse(_approval(dashboard))


async def _approval(dashboard: DashboardEnv) -> None:
    claim_id = new_key("claim")
    async with signed_in(dashboard) as page:
        await page.goto(f"{dashboard.url}/approvals")
        await keep_marker(page)
        dashboard.engine.send(
            f"/ClaimSaga/{claim_id}/Run",
            {
                "claimId": claim_id,
                "policyId": "POL-1001",
                "customerId": "cust-alice",
                "amount": 1250.0,
                "description": "broken wrist, emergency room",
                "incidentDate": "2025-03-14",
            },
        )
        row = page.locator(f"tr[data-key='{claim_id}']")
        await expect(row).to_be_visible(timeout=LIVE)
        await expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))  # its deadline
        assert await was_not_reloaded(page)
        await screenshot(page, "approvals-pending")
        await row.get_by_label("comment").fill("receipts check out")
        await row.get_by_role("button", name="Approve").click()

        def outcome() -> dict[str, Any]:
            with IngressClient(dashboard.engine.ingress_url, timeout=90) as ingress:
                answer: dict[str, Any] = ingress.workflow_attach("ClaimSaga", claim_id)
                return answer

        result = await asyncio.to_thread(outcome)
        assert result["status"] == "paid"
        assert result["approval"] == {"approved": True, "by": "ops-test", "comment": "receipts check out"}
        await expect(row).to_have_count(0, timeout=LIVE)


def test_without_a_token_the_dashboard_and_its_data_are_refused(dashboard: DashboardEnv) -> None:
    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        for path in ("/", "/dead-letters", "/approvals", "/systems", "/sagas/TripOrchestrator/t/book-trip"):
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert 'name="token"' in answer.text  # the page asks for one
        for path in ("/api/sagas", "/api/approvals", "/events", "/api/sagas/TripOrchestrator/t/book-trip"):
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert "dashboard:operator" in answer.json()["message"]
        act = {"service": "LabSaga", "key": "k", "saga": "lab", "step": "b", "action": "retry"}
        assert client.post("/api/dead-letters/act", json=act).status_code == 401
        decide = {"service": "ClaimSaga", "key": "k", "promise": "approval", "decision": "approve"}
        assert client.post("/api/approvals/decide", json=decide).status_code == 401
        forged = dashboard.token().rsplit(".", 1)[0] + ".AAAA"
        assert client.get("/", params={"token": forged}).status_code == 401
        wrong_scope = dashboard.token("travel:operator")
        assert client.get("/", params={"token": wrong_scope}).status_code == 403
    for cookie in (forged, wrong_scope):
        with _client(dashboard, cookie) as client:
            assert client.get("/api/sagas").status_code == 401

    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        good = dashboard.token()
        signed_in = client.get("/", params={"token": good})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" in cookie
    with _client(dashboard, good) as client:
        assert client.get("/api/sagas").status_code == 200
        # An action needs the dashboard's own Origin too, so another site cannot make the browser act.
        refused = client.post("/api/dead-letters/act", json=act, headers={"origin": "http://evil.example"})
        assert refused.status_code == 403
        assert client.post("/api/dead-letters/act", json=act).status_code == 403  # no Origin at all


def test_the_list_is_filtered_by_system_status_key_and_time_and_dead_letters(
    dashboard: DashboardEnv,
) -> None:
    held = new_key("filtered")
    dashboard.engine.send(f"/LabSaga/{held}/Run", _scenario(undo_fail=-1))
    asyncio.run(_held(dashboard, held))
    with _client(dashboard, dashboard.token(), headers={"origin": dashboard.url}) as client:

        def keys(**query: str) -> list[str]:
            answer = client.get("/api/sagas", params={"key": held, **query})
            assert answer.status_code == 200, answer.text
            return [s["key"] for s in answer.json()]

        assert keys() == [held]
        assert keys(status="needs a person") == [held]
        assert keys(status="completed") == []
        assert keys(system="lab") == [held]
        assert keys(system="travel") == []
        assert keys(since="5") == [held]
        assert keys(key="no-such-key") == []
        (row,) = client.get("/api/sagas", params={"key": held}).json()
        assert (row["system"], row["service"], row["status"]) == ("lab", "LabSaga", "needs a person")
        letters = client.get("/dead-letters")
        assert letters.status_code == 200
        assert held in letters.text
        resolve = {"service": "LabSaga", "key": held, "saga": "lab", "step": "b", "action": "resolve"}
        done = client.post("/api/dead-letters/act", json={**resolve, "note": "undone by hand"})
        assert done.status_code == 200, done.text
        assert_eventually(lambda: keys(status="compensated") == [held], timeout=30)
        assert keys(status="needs a person") == []


def _client(dashboard: DashboardEnv, cookie: str, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=dashboard.url, timeout=10, cookies={"podium_dashboard": cookie}, **options)


def test_actions_with_bad_input_get_a_clear_4xx(dashboard: DashboardEnv) -> None:
    with _client(dashboard, dashboard.token(), headers={"origin": dashboard.url}) as client:
        answer = client.post("/api/dead-letters/act", json={"service": "LabSaga"})
        assert answer.status_code == 400
        assert answer.json()["message"] == "key, saga, step: required (a string)"
        body = {"service": "LabSaga", "key": "nope", "saga": "lab", "step": "b", "action": "resolve"}
        answer = client.post("/api/dead-letters/act", json=body)
        assert answer.status_code == 400
        assert answer.json()["message"].startswith("invalid request: note: required to resolve a dead letter")
        answer = client.post("/api/dead-letters/act", json={**body, "action": "retry"})
        assert answer.status_code == 404
        answer = client.post("/api/approvals/decide", json={"service": "S", "key": "k", "promise": "p"})
        assert answer.status_code == 400
        assert answer.json()["message"] == "decision: must be approve or reject"
        answer = client.post(
            "/api/approvals/decide",
            json={"service": "ClaimSaga", "key": "none", "promise": "approval", "decision": "approve"},
        )
        assert answer.status_code == 409
        answer = client.post(
            "/api/dead-letters/act", content=b"[1]", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
