"""Logs against the real engine, read back as the JSON lines a deployment writes.

Saga events come in order with their fields, once each even when the engine replays at every await;
the correlation id goes from a client through the gateway to a handler and the handler it calls, and
comes back in the answer.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from restate import Context, ObjectContext

import podium
from podium import Model
from podium.runtime import ChildProcess, free_port
from podium.testing import (
    Deployer,
    PodiumEnv,
    assert_eventually,
    harness_issuer,
    new_key,
    running_gateway,
)
from podium.testing.plugin import EngineHandle

pytestmark = pytest.mark.engine

Lines = Callable[[], list[dict[str, Any]]]

# -- a relay: a public handler that calls a private one, both reporting what they saw -------------------

log = logging.getLogger("tests.relay")

relay = podium.Service("LogRelay", system="logtest")
notes = podium.VirtualObject("LogNotes", system="logtest")


class Seen(Model):
    correlation_id: str
    invocation_id: str


class Relayed(Model):
    outer: Seen
    inner: Seen


@notes.handler("Note")
async def note(ctx: ObjectContext, text: str) -> Seen:
    log.info("noted %s", text)
    return Seen(correlation_id=podium.correlation_id(ctx), invocation_id=ctx.request().id)


@relay.handler("Relay", public="write")
async def relay_text(ctx: Context, text: str) -> Relayed:
    log.info("relaying %s", text)
    inner = await podium.call(ctx, note, text, key=text)
    return Relayed(
        outer=Seen(correlation_id=podium.correlation_id(ctx), invocation_id=ctx.request().id), inner=inner
    )


relay_app = podium.app([relay, notes])


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def lines() -> Iterator[Lines]:
    """This process's logs as a deployment writes them (configure_logging), read back as JSON objects."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    podium.configure_logging(system="lab", stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


# -- saga events ----------------------------------------------------------------------------------------


def step(name: str, *, fail: int = 0, undo_fail: int = 0, undo: bool = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "action": {"failTimes": fail}, **extra}
    spec["undo"] = {"failTimes": undo_fail} if undo else None
    return spec


def slow(name: str, ms: int) -> dict[str, Any]:
    spec = step(name)
    spec["action"]["slowMs"] = ms
    return spec


Event = tuple[str, str | None, int | None, str | None]
"""A saga event as (event, step, attempt, outcome)."""

SCENARIOS: dict[str, tuple[dict[str, Any], list[Event]]] = {
    "completes": (
        {"steps": [step("a"), step("b")]},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "a", 1, "completed"),
            ("saga.step_done", "b", 1, "completed"),
            ("saga.ended", None, None, "completed"),
        ],
    ),
    "compensates, retrying a compensation": (
        {"steps": [step("a"), step("b", undo_fail=1), step("c", fail=-1)], "retryAttempts": 3},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "a", 1, "completed"),
            ("saga.step_done", "b", 1, "completed"),
            ("saga.step_failed", "c", 1, "failed"),
            ("saga.compensating", None, None, "compensating"),
            ("saga.compensation_done", "c", 1, "compensated"),
            ("saga.compensation_failed", "b", 1, "retrying"),
            ("saga.compensation_done", "b", 2, "compensated"),
            ("saga.compensation_done", "a", 1, "compensated"),
            ("saga.ended", None, None, "compensated"),
        ],
    ),
    "dead-letters": (
        {"steps": [step("a"), step("b", undo_fail=-1), step("c", fail=-1)], "retryAttempts": 2},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "a", 1, "completed"),
            ("saga.step_done", "b", 1, "completed"),
            ("saga.step_failed", "c", 1, "failed"),
            ("saga.compensating", None, None, "compensating"),
            ("saga.compensation_done", "c", 1, "compensated"),
            ("saga.compensation_failed", "b", 1, "retrying"),
            ("saga.compensation_failed", "b", 2, "failed"),
            ("saga.dead_lettered", "b", 2, "dead_letter"),
            ("saga.ended", None, None, "failed"),
        ],
    ),
    "passes its pivot and recovers forward": (
        {"steps": [step("a"), step("p", pivot=True, undo=False), step("c", fail=1)], "retryAttempts": 3},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "a", 1, "completed"),
            ("saga.step_done", "p", 1, "completed"),
            ("saga.pivot_passed", "p", None, None),
            ("saga.step_retry", "c", 1, "retrying"),
            ("saga.step_done", "c", 2, "completed"),
            ("saga.ended", None, None, "completed"),
        ],
    ),
    "needs a person after its pivot": (
        {"steps": [step("p", pivot=True, undo=False), step("c", fail=-1)], "retryAttempts": 2},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "p", 1, "completed"),
            ("saga.pivot_passed", "p", None, None),
            ("saga.step_retry", "c", 1, "retrying"),
            ("saga.step_failed", "c", 2, "failed"),
            ("saga.ended", None, None, "needs_attention"),
        ],
    ),
    "hits its deadline": (
        {"steps": [step("a"), slow("b", 1_500), step("c")], "timeoutMs": 300},
        [
            ("saga.started", None, None, None),
            ("saga.step_done", "a", 1, "completed"),
            ("saga.deadline_hit", "b", None, None),
            ("saga.step_failed", "b", 1, "failed"),
            ("saga.compensating", None, None, "compensating"),
            ("saga.compensation_done", "b", 1, "compensated"),
            ("saga.compensation_done", "a", 1, "compensated"),
            ("saga.ended", None, None, "compensated"),
        ],
    ),
}

LEVELS = {
    "saga.step_failed": {"WARNING", "ERROR"},
    "saga.step_retry": {"WARNING"},
    "saga.deadline_hit": {"WARNING"},
    "saga.compensation_failed": {"WARNING"},
    "saga.dead_lettered": {"ERROR"},
}
"""Levels of the events that are not INFO (``saga.ended`` depends on its outcome)."""
FAILURES = {
    "saga.step_failed",
    "saga.step_retry",
    "saga.deadline_hit",
    "saga.compensating",
    "saga.compensation_failed",
    "saga.dead_lettered",
}
"""Events that carry the error that caused them."""
ENDED_LEVELS = {"completed": "INFO", "compensated": "WARNING", "failed": "ERROR", "needs_attention": "ERROR"}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_saga_logs_each_event_once_in_order_with_its_fields(
    lab: PodiumEnv, lines: Lines, scenario: str
) -> None:
    body, expected = SCENARIOS[scenario]
    key, correlation = new_key("logsaga"), new_key("corr")
    response = lab.post(f"/LabSaga/{key}/Run", body, headers={podium.CORRELATION_HEADER: correlation})
    assert response.is_success, response.text
    events = [line for line in lines() if line["name"] == "podium.saga" and line.get("key") == key]
    # Under forced replay the handler runs again from the top at every await: still one line per event.
    assert [(e["event"], e.get("step"), e.get("attempt"), e.get("outcome")) for e in events] == expected
    assert {e["invocation_id"] for e in events} == {response.headers["x-restate-id"]}
    for event in events:
        assert event["correlation_id"] == correlation
        assert (event["system"], event["saga"], event["service"], event["handler"]) == (
            "lab",
            "lab",
            "LabSaga",
            "Run",
        )
        if event["event"] == "saga.ended":
            assert event["level"] == ENDED_LEVELS[event["outcome"]]
        else:
            assert event["level"] in LEVELS.get(event["event"], {"INFO"}), event
        if event["event"] in FAILURES or (event["event"] == "saga.ended" and event["outcome"] != "completed"):
            assert event["error"], event
            assert event["error"] in event["message"], event


def test_an_invocation_started_at_the_ingress_is_its_own_correlation_id(lab: PodiumEnv, lines: Lines) -> None:
    key = new_key("logsaga")
    response = lab.post(f"/LabSaga/{key}/Run", {"steps": [step("a")]})
    assert response.is_success, response.text
    events = [line for line in lines() if line["name"] == "podium.saga" and line.get("key") == key]
    assert len(events) == 3
    assert {e["correlation_id"] for e in events} == {response.headers["x-restate-id"]}


# -- the correlation id through the gateway ------------------------------------------------------------


def relayed(lines: Lines, correlation: str) -> dict[str, dict[str, Any]]:
    """The relay's own log lines for one request, by message prefix."""
    found = [
        line
        for line in lines()
        if line["name"] == "tests.relay" and line.get("correlation_id") == correlation
    ]
    return {line["message"].split()[0]: line for line in found}


def test_the_correlation_id_follows_a_request_through_the_gateway_and_back(
    podium_engine: EngineHandle, podium_deployer: Deployer, lines: Lines
) -> None:
    podium_deployer.deploy(relay_app)
    with running_gateway(podium_engine.ingress_url, podium_engine.admin_url) as gateway:
        token = gateway.token("logtest:write")
        started = [line for line in lines() if line.get("event") == "gateway.started"]
        assert [line["url"] for line in started] == [gateway.url]

        sent = new_key("client")
        text = new_key("text")
        answer = gateway.post("/LogRelay/Relay", text, token=token, headers={podium.CORRELATION_HEADER: sent})
        assert answer.status_code == 200, answer.text
        assert answer.headers[podium.CORRELATION_HEADER] == sent
        seen = Relayed.model_validate(answer.json())
        assert seen.outer.correlation_id == seen.inner.correlation_id == sent
        assert seen.outer.invocation_id != seen.inner.invocation_id
        logged = relayed(lines, sent)
        assert logged["relaying"]["invocation_id"] == seen.outer.invocation_id
        assert (logged["relaying"]["service"], logged["relaying"]["handler"]) == ("LogRelay", "Relay")
        assert "key" not in logged["relaying"]  # a service has none
        assert logged["noted"]["invocation_id"] == seen.inner.invocation_id
        assert (logged["noted"]["service"], logged["noted"]["key"]) == ("LogNotes", text)

        # None sent, or one that is not well formed: the gateway makes one, and every hop sees it.
        for header in ({}, {podium.CORRELATION_HEADER: "two words"}):
            answer = gateway.post("/LogRelay/Relay", new_key("text"), token=token, headers=header)
            assert answer.status_code == 200, answer.text
            made = answer.headers[podium.CORRELATION_HEADER]
            assert len(made) == 32
            assert int(made, 16) >= 0
            seen = Relayed.model_validate(answer.json())
            assert seen.outer.correlation_id == seen.inner.correlation_id == made
            assert set(relayed(lines, made)) == {"relaying", "noted"}

        # A refusal carries one too, and the gateway logs it with its class and the id.
        refused = httpx.post(
            f"{gateway.url}/LogRelay/Relay", json="x", headers={podium.CORRELATION_HEADER: sent}
        )
        assert refused.status_code == 401
        assert refused.headers[podium.CORRELATION_HEADER] == sent
        line = next(line for line in lines() if line.get("event") == "gateway.refused-401")
        assert (line["name"], line["status"], line["path"], line["correlation_id"]) == (
            "podium.gateway",
            401,
            "/LogRelay/Relay",
            sent,
        )


def test_a_handlers_own_lines_are_written_once_under_forced_replay(
    replay_env: PodiumEnv, lines: Lines
) -> None:
    deployer = Deployer(replay_env.admin_url)
    try:
        deployer.deploy(relay_app)
        correlation = new_key("corr")
        answer = replay_env.post(
            "/LogRelay/Relay", new_key("text"), headers={podium.CORRELATION_HEADER: correlation}
        )
        assert answer.status_code == 200, answer.text
    finally:
        deployer.close()
    # Relay suspends at its call and runs again from the top: "relaying" is still written once.
    found = [line["message"].split()[0] for line in lines() if line.get("correlation_id") == correlation]
    assert sorted(found) == ["noted", "relaying"]


# -- the gateway command --------------------------------------------------------------------------------


def test_the_gateway_command_writes_json_lines(podium_engine: EngineHandle, tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "gateway.log"
    process = ChildProcess(
        [
            *(sys.executable, "-m", "podium.gateway", "--upstream", podium_engine.ingress_url),
            *("--admin-url", podium_engine.admin_url, "--issuer-key", str(harness_issuer().path)),
            *("--port", str(port), "--max-in-flight", "2"),
        ],
        log_file=log_file,
        env={podium.LOG_FORMAT_ENV: "json"},
        name="gateway",
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/podium/gateway/health").status_code == 200
            except httpx.HTTPError:
                return False

        assert_eventually(up, timeout=15, message="the gateway command to listen")
        assert httpx.post(f"{url}/LogRelay/Relay", json="x").status_code == 401
        process.stop()
        assert process.returncode() == 0, process.tail()
    finally:
        process.stop()
    written = [json.loads(line) for line in log_file.read_text().splitlines()]  # every line is JSON
    assert {line["system"] for line in written} == {"gateway"}
    assert "httpx" not in {line["name"] for line in written}  # the route table's reads are not news
    events = [line["event"] for line in written if "event" in line]
    assert events == ["gateway.started", "gateway.refused-401", "gateway.stopping", "gateway.stopped"]
