"""The service's request handler: ``handle({"path": ..., "body": ...})`` → a response dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sample_app import __version__, config, pricing


def quote(body: dict[str, Any]) -> dict[str, Any]:
    """Price an order: ``{"lines": [[unit_cents, quantity], ...], "discountPercent": n}``."""
    settings = config.load()
    lines = [(int(unit), int(quantity)) for unit, quantity in body.get("lines", [])]
    gross = pricing.subtotal(lines)
    net = pricing.apply_discount(gross, int(body.get("discountPercent", 0)), limit=settings.max_discount)
    tax = pricing.percent_of(net, settings.tax_percent)
    return {
        "currency": settings.currency,
        "subtotal": gross,
        "discount": gross - net,
        "tax": tax,
        "total": net + tax,
    }


def health(_body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether this release can serve in its environment: the settings load and a quote works."""
    problems: list[str] = []
    try:
        settings = config.load()
        quote({"lines": [[100, 1]]})
        env = settings.env
    except ValueError as exc:
        problems.append(str(exc))
        env = None
    return {"ok": not problems, "version": __version__, "env": env, "problems": problems}


ROUTES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"/quote": quote, "/health": health}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Route a request; unknown paths answer 404."""
    route = ROUTES.get(str(request.get("path")))
    if route is None:
        return {"status": 404, "body": {"error": f"no route {request.get('path')!r}"}}
    try:
        return {"status": 200, "body": route(dict(request.get("body") or {}))}
    except ValueError as exc:
        return {"status": 400, "body": {"error": str(exc)}}
