"""The dashboard's web app (Starlette, Jinja2 templates, a little plain JavaScript, no build step).

Pages: ``/`` every saga (filters by system, status and time, search by key), ``/sagas/{service}/{key}/{name}``
one saga drawn as a timeline, ``/dead-letters``, ``/approvals``, ``/systems`` (per-system charts). Each page
has a part marked live; ``/events`` (server-sent events) says when the engine's sagas or invocations
changed and the page fetches that part again. ``/api/...`` answers the same data as JSON, and takes the
actions: retry or resolve a held dead letter, approve or reject.

Signing in: a token of the gateway's issuer with the scope ``dashboard:operator`` (``podium token --scope
dashboard:operator``), given once as ``?token=`` (the link ``podium up`` prints), becomes an http-only,
SameSite=Strict cookie and the browser is sent to the clean URL. Without it pages ask for a token and data
answers 401. Actions also require the request's ``Origin`` to be the dashboard's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from podium._human import Decision
from podium._saga import DeadLetterAction
from podium._services import describe_validation_error
from podium.dashboard._data import (
    STATUSES,
    Approval,
    EngineData,
    EngineError,
    Saga,
    SagaFilter,
    SystemStats,
    Timeline,
)
from podium.gateway._tokens import Claims, TokenError, TokenVerifier, grants

SCOPE = "dashboard:operator"
"""The scope a token needs to open the dashboard and act from it."""
COOKIE = "podium_dashboard"
HEALTH_PATH = "/health"
PAGE_HEADERS = {
    "cache-control": "no-store",
    # Scripts and styles come from the dashboard's own files only: nothing inline, nothing fetched.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_HERE = Path(__file__).parent
log = logging.getLogger("podium.dashboard")


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads and acts, and whom it lets in.

    Args:
        admin_url: The engine's admin API (its SQL and service list).
        ingress_url: The trusted ingress, where actions are sent (resolving awakeables, deciding
            approvals).
        verifier: Verifies sign-in tokens (the gateway's issuer keys).
        poll_interval: Seconds between two looks at the engine while someone watches ``/events``.
        secure_cookie: Mark the session cookie ``Secure`` (browsers keep it on http://127.0.0.1 and
            localhost too, which they count as secure origins).
    """

    admin_url: str
    ingress_url: str
    verifier: TokenVerifier
    poll_interval: float = 0.5
    secure_cookie: bool = True


class _Changes:
    """One poller of the engine shared by every watcher: bumps ``version`` when the fingerprint changes."""

    def __init__(self, data: EngineData, interval: float) -> None:
        self.data = data
        self.interval = interval
        self.version = 0
        self.watchers = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        last: str | None = None
        while self.watchers:
            current: str | None
            try:
                current = await self.data.fingerprint()
            except EngineError as exc:
                log.warning("cannot read the engine for live updates: %s", exc)
                current = last
            if current != last:
                last = current
                async with self._changed:
                    self.version += 1
                    self._changed.notify_all()
            await asyncio.sleep(self.interval)
        self._task = None

    async def watch(self) -> AsyncIterator[int]:
        """Yield the version now, then each time it changes."""
        self.watchers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._poll())
        try:
            seen = -1
            while True:
                async with self._changed:

                    def moved(last: int = seen) -> bool:
                        return self.version != last

                    await self._changed.wait_for(moved)
                    seen = self.version
                yield seen
        finally:
            self.watchers -= 1


def _fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(("html", "svg")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _fmt_time
    env.filters["seconds"] = _fmt_seconds
    env.filters["q"] = lambda text: quote(str(text), safe="")
    env.filters["json"] = lambda value: json.dumps(value, indent=2, default=str)
    return env


def _claims(request: Request, verifier: TokenVerifier) -> Claims | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        claims = verifier.verify(token)
    except TokenError:
        return None
    return claims if grants(claims.scopes, SCOPE) else None


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is not None and origin == f"{request.url.scheme}://{request.url.netloc}"


def _filter(request: Request) -> tuple[SagaFilter, dict[str, str]]:
    """The list's filters from the query string, and the values to show back in the form."""
    wanted = {
        name: request.query_params.get(name, "").strip() for name in ("system", "status", "since", "key")
    }
    where = SagaFilter(
        system=wanted["system"] or None,
        status=wanted["status"] or None,
        key=wanted["key"] or None,
        since_minutes=int(wanted["since"]) if wanted["since"].isdigit() else None,
    )
    return where, wanted


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI app."""
    templates = _templates()
    # No kept-alive connections: each look at the engine opens and closes its own (loopback, cheap), so
    # none is left half-open when the engine closes an idle one or a page cancels a request.
    http = httpx.AsyncClient(timeout=20.0, limits=httpx.Limits(max_keepalive_connections=0))
    data = EngineData(config.admin_url, http)
    changes = _Changes(data, config.poll_interval)
    ingress = config.ingress_url.rstrip("/")

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        fragment = request.headers.get("x-podium-fragment") == "live"
        html = templates.get_template(name).render(
            request=request, fragment=fragment, path=request.url.path, admin_url=config.admin_url, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)

    Handler = Callable[[Request, Claims], Awaitable[Response]]

    def signed_in(handler: Handler, *, api: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token = request.query_params.get("token")
            if token is not None and request.method == "GET" and not api:
                return _sign_in(request, token)
            claims = _claims(request, config.verifier)
            if claims is None:
                if api:
                    return _problem(401, f"sign in with a token with the scope {SCOPE} (podium token)")
                return page(request, "login.html", status_code=401, error=None, scope=SCOPE)
            if request.method == "POST" and not _same_origin(request):
                return _problem(403, "actions are taken from the dashboard's own pages only (Origin)")
            try:
                return await handler(request, claims)
            except EngineError as exc:
                if api:
                    return _problem(502, str(exc))
                return page(request, "error.html", status_code=502, error=str(exc))

        return endpoint

    def _sign_in(request: Request, token: str) -> Response:
        try:
            claims = config.verifier.verify(token.strip())
        except TokenError as exc:
            return page(request, "login.html", status_code=401, error=str(exc), scope=SCOPE)
        if not grants(claims.scopes, SCOPE):
            return page(
                request,
                "login.html",
                status_code=403,
                error=f"this token does not carry the scope {SCOPE}",
                scope=SCOPE,
            )
        rest = {k: v for k, v in request.query_params.items() if k != "token"}
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token.strip(),
            max_age=max(1, int(claims.expires_at - time.time())),
            httponly=True,
            secure=config.secure_cookie,
            samesite="strict",
        )
        return response

    async def sagas_page(request: Request, claims: Claims) -> Response:
        where, wanted = _filter(request)
        found = await data.sagas(where)
        return page(
            request,
            "sagas.html",
            sagas=found.sagas,
            total=found.matching,
            all_count=found.total,
            systems=found.systems,
            statuses=STATUSES,
            wanted=wanted,
            who=claims.subject,
        )

    async def saga_page(request: Request, claims: Claims) -> Response:
        params = request.path_params
        saga = await data.saga(params["service"], params["key"], params["name"])
        if saga is None:
            return page(request, "error.html", status_code=404, error="no such saga", who=claims.subject)
        timeline = await data.timeline(saga)
        return page(
            request, "saga.html", saga=saga, timeline=timeline, chart=_chart(timeline), who=claims.subject
        )

    async def dead_letters_page(request: Request, claims: Claims) -> Response:
        found = await data.sagas(SagaFilter(dead_letters=True))
        return page(request, "dead_letters.html", sagas=found.sagas, total=found.matching, who=claims.subject)

    async def approvals_page(request: Request, claims: Claims) -> Response:
        return page(request, "approvals.html", approvals=await data.approvals(), who=claims.subject)

    async def systems_page(request: Request, claims: Claims) -> Response:
        charts = [_system_chart(entry) for entry in await data.stats()]
        return page(request, "systems.html", systems=charts, who=claims.subject)

    async def api_sagas(request: Request, claims: Claims) -> Response:
        where, _ = _filter(request)
        return JSONResponse([_saga_json(s) for s in (await data.sagas(where)).sagas])

    async def api_saga(request: Request, claims: Claims) -> Response:
        params = request.path_params
        saga = await data.saga(params["service"], params["key"], params["name"])
        if saga is None:
            return _problem(404, "no such saga")
        timeline = await data.timeline(saga)
        return JSONResponse({**_saga_json(saga), "timeline": _timeline_json(timeline)})

    async def api_approvals(request: Request, claims: Claims) -> Response:
        return JSONResponse([_approval_json(a) for a in await data.approvals()])

    async def api_act(request: Request, claims: Claims) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        missing = [f for f in ("service", "key", "saga", "step") if not isinstance(body.get(f), str)]
        if missing:
            return _problem(400, f"{', '.join(missing)}: required (a string)")
        try:
            action = DeadLetterAction.model_validate({**body, "by": claims.subject})
        except ValidationError as exc:
            return _problem(400, describe_validation_error(exc, show_input=False))
        saga = await data.saga(body["service"], body["key"], body["saga"])
        if saga is None:
            return _problem(404, f"no saga {body['saga']} at {body['service']}/{body['key']}")
        letter = next((d for d in saga.open_letters if d.step == body["step"]), None)
        if letter is None or letter.awakeable_id is None:
            return _problem(
                409, f"the dead letter of {body['step']} is not waiting for a person (acted on, or not held)"
            )
        answer = await http.post(
            f"{ingress}/restate/awakeables/{quote(letter.awakeable_id, safe='')}/resolve",
            json=action.model_dump(mode="json"),
        )
        if not answer.is_success:
            return _problem(502, f"the engine did not take the action ({answer.status_code}): {answer.text}")
        log.info("%s: %s the dead letter of %s in %s", claims.subject, action.action, body["step"], saga.ref)
        return JSONResponse({"accepted": True, "action": action.action})

    async def api_decide(request: Request, claims: Claims) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        missing = [f for f in ("service", "key", "promise") if not isinstance(body.get(f), str)]
        if missing:
            return _problem(400, f"{', '.join(missing)}: required (a string)")
        if body.get("decision") not in ("approve", "reject"):
            return _problem(400, "decision: must be approve or reject")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            return _problem(400, "comment: must be a string")
        pending = [
            a
            for a in await data.approvals()
            if (a.service, a.key, a.promise) == (body["service"], body["key"], body["promise"])
        ]
        if not pending:
            return _problem(409, f"{body['service']}/{body['key']} is not waiting for {body['promise']}")
        approval = pending[0]
        handler = approval.approve if body["decision"] == "approve" else approval.reject
        if handler is None:
            return _problem(409, f"{approval.service} has no handler to {body['decision']}")
        decision = Decision(approved=body["decision"] == "approve", by=claims.subject, comment=comment)
        answer = await http.post(
            f"{ingress}/{quote(approval.service, safe='')}/{quote(approval.key, safe='')}/{handler}",
            json=decision.model_dump(mode="json"),
        )
        if not answer.is_success:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text
            return _problem(answer.status_code if answer.status_code < 500 else 502, str(message))
        log.info("%s: %s %s/%s", claims.subject, body["decision"], approval.service, approval.key)
        return JSONResponse(answer.json())

    async def events(request: Request, claims: Claims) -> Response:
        async def stream() -> AsyncIterator[dict[str, str]]:
            async for version in changes.watch():
                yield {"event": "changed", "data": str(version)}

        return EventSourceResponse(stream(), ping=15)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await http.aclose()

    key_path = "{service}/{key}/{name}"
    routes = [
        Route("/", signed_in(sagas_page)),
        Route(f"/sagas/{key_path}", signed_in(saga_page)),
        Route("/dead-letters", signed_in(dead_letters_page)),
        Route("/approvals", signed_in(approvals_page)),
        Route("/systems", signed_in(systems_page)),
        Route("/events", signed_in(events, api=True)),
        Route("/api/sagas", signed_in(api_sagas, api=True)),
        Route(f"/api/sagas/{key_path}", signed_in(api_saga, api=True)),
        Route("/api/approvals", signed_in(api_approvals, api=True)),
        Route("/api/dead-letters/act", signed_in(api_act, api=True), methods=["POST"]),
        Route("/api/approvals/decide", signed_in(api_decide, api=True), methods=["POST"]),
        Route(HEALTH_PATH, health),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _json_body(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "body: must be a JSON object")
    if not isinstance(body, dict):
        return _problem(400, "body: must be a JSON object")
    return body


def _saga_json(saga: Saga) -> dict[str, Any]:
    return {
        "system": saga.system,
        "service": saga.service,
        "key": saga.key,
        "name": saga.name,
        "status": saga.status,
        "invocationStatus": saga.invocation_status,
        "started": saga.started.isoformat() if saga.started else None,
        "ended": saga.ended.isoformat() if saga.ended else None,
        "duration": saga.duration,
        "currentStep": saga.current_step,
        "log": saga.log.model_dump(mode="json"),
    }


def _approval_json(approval: Approval) -> dict[str, Any]:
    return {
        **asdict(approval),
        "started": approval.started.isoformat() if approval.started else None,
        "deadline": approval.deadline.isoformat() if approval.deadline else None,
    }


def _timeline_json(timeline: Timeline) -> dict[str, Any]:
    return {
        "kept": timeline.kept,
        "deadline": timeline.deadline.isoformat() if timeline.deadline else None,
        "bars": [
            {
                "step": b.step,
                "kind": b.kind,
                "outcome": b.outcome,
                "start": b.start.isoformat(),
                "end": b.end.isoformat(),
                "open": b.open,
            }
            for b in timeline.bars
        ],
    }


@dataclass
class _Drawn:
    step: str
    kind: str
    outcome: str
    x: float
    y: float
    width: float
    title: str


def _chart(timeline: Timeline, *, width: float = 760.0, row: float = 26.0) -> dict[str, Any]:
    """Coordinates of the timeline's bars, its deadline and its time axis, for the SVG template."""
    if not timeline.bars:
        return {"bars": [], "height": 0, "width": width, "ticks": [], "deadline": None}
    start = min(b.start for b in timeline.bars)
    end = max(b.end for b in timeline.bars)
    if timeline.deadline is not None and timeline.deadline - end < dt.timedelta(minutes=10):
        end = max(end, timeline.deadline)
    span = max((end - start).total_seconds(), 0.001)

    def x(at: dt.datetime) -> float:
        return round((at - start).total_seconds() / span * width, 1)

    steps: list[str] = []
    for bar in timeline.bars:
        if bar.step not in steps:
            steps.append(bar.step)
    drawn = []
    for bar in timeline.bars:
        y = steps.index(bar.step) * row + (4 if bar.kind == "action" else 14)
        length = (bar.end - bar.start).total_seconds()
        drawn.append(
            _Drawn(
                bar.step,
                bar.kind,
                bar.outcome,
                x(bar.start),
                y,
                max(x(bar.end) - x(bar.start), 2.0),
                f"{bar.step}: {'compensation' if bar.kind == 'undo' else 'action'} {bar.outcome}, "
                f"{_fmt_seconds(length)} from {_fmt_time(bar.start)}" + (" (going on)" if bar.open else ""),
            )
        )
    ticks = [{"x": round(width * i / 4, 1), "label": _fmt_seconds(span * i / 4)} for i in range(5)]
    deadline = x(timeline.deadline) if timeline.deadline is not None and timeline.deadline <= end else None
    return {
        "bars": drawn,
        "steps": steps,
        "height": len(steps) * row,
        "width": width,
        "ticks": ticks,
        "deadline": deadline,
        "row": row,
    }


def _system_chart(entry: SystemStats, *, width: float = 300.0, height: float = 80.0) -> dict[str, Any]:
    """Three bar charts of a system's last minutes: sagas ended, p99 duration, compensation rate."""
    minutes = entry.minutes
    step = width / len(minutes)
    series = []
    for title, kind, values, fmt in (
        ("sagas ended per minute", "rate", [float(m.ended) for m in minutes], lambda v: f"{v:.0f}"),
        ("p99 duration", "latency", [m.p99 or 0.0 for m in minutes], _fmt_seconds),
        (
            "compensated or failed",
            "compensation",
            [m.compensated / m.ended * 100 if m.ended else 0.0 for m in minutes],
            lambda v: f"{v:.0f}%",
        ),
    ):
        top = max(values) or 1.0
        bars = []
        for index, (minute, value) in enumerate(zip(minutes, values, strict=True)):
            h = round(value / top * height, 1)
            bars.append(
                {
                    "x": round(index * step + 1, 1),
                    "w": round(step - 2, 1),
                    "y": round(height - h, 1),
                    "h": h,
                    "label": f"{minute.at:%H:%M}: {fmt(value)}",
                }
            )
        series.append(
            {
                "title": title,
                "kind": kind,
                "bars": bars,
                "width": width,
                "height": height,
                "max_label": fmt(max(values)),
                "first": f"{minutes[0].at:%H:%M}",
                "last": f"{minutes[-1].at:%H:%M}",
            }
        )
    return {"name": entry.system, "running": entry.running, "series": series}
