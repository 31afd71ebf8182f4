"""Load generators: open loop (requests sent on schedule) and closed loop (fixed concurrency).

Open loop is the honest one: a request is sent at its scheduled time whether or not earlier ones have
finished, as real users do, so an overloaded system shows its queueing delay instead of slowing the
generator down (closed loop hides that: see docs/performance.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx


@dataclass
class Sample:
    """One request: when it was sent (seconds from the start), how long it took, how it ended."""

    sent: float
    latency: float
    outcome: str
    """``ok``, ``http-<status>``, or the exception's class name."""


@dataclass
class Run:
    """Everything one load run observed."""

    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    elapsed: float = 0.0


async def _one(client: httpx.AsyncClient, path: str, run: Run, timeout: float) -> None:
    key = uuid.uuid4().hex
    body = {"id": key}
    sent = time.monotonic()
    try:
        response = await client.post(path.format(key=key), json=body, timeout=timeout)
        outcome = "ok" if response.status_code == 200 else f"http-{response.status_code}"
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    run.samples.append(Sample(sent=sent - run.started, latency=time.monotonic() - sent, outcome=outcome))


async def open_loop(ingress: str, path: str, *, rate: float, duration: float, timeout: float = 30.0) -> Run:
    """Send ``rate`` requests per second for ``duration`` seconds, on schedule."""
    run = Run()
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=4000)
    async with httpx.AsyncClient(base_url=ingress, limits=limits) as client:
        run.started = time.monotonic()
        tasks = []
        total = int(rate * duration)
        for n in range(total):
            delay = run.started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, path, run, timeout)))
        await asyncio.gather(*tasks)
        run.elapsed = time.monotonic() - run.started
    return run


async def closed_loop(
    ingress: str, path: str, *, concurrency: int, duration: float, timeout: float = 30.0
) -> Run:
    """Keep ``concurrency`` requests in flight for ``duration`` seconds."""
    run = Run()
    async with httpx.AsyncClient(
        base_url=ingress, limits=httpx.Limits(max_connections=concurrency)
    ) as client:
        run.started = time.monotonic()
        deadline = run.started + duration

        async def worker() -> None:
            while time.monotonic() < deadline:
                await _one(client, path, run, timeout)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.elapsed = time.monotonic() - run.started
    return run
