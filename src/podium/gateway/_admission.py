"""Admission: a fixed number of slots and a bounded FIFO queue of requests waiting for one.

A slot that is released goes straight to the request at the head of the queue, so ``in_flight`` never
dips below the limit while anyone waits and a newcomer cannot overtake a waiter. A waiter that gives up
(its wait timed out, or its client went away) leaves the queue at once, so the places it held are free
for others; a slot handed to a waiter in the same instant it gave up is passed on, never lost.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Admission:
    """At most ``limit`` holders at once; at most ``max_queue`` waiting, first come first served.

    Args:
        limit: Slots (requests forwarded at once).
        max_queue: Waiters allowed when every slot is taken; 0 refuses at once.
    """

    def __init__(self, limit: int, max_queue: int) -> None:
        if limit < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {limit}")
        if max_queue < 0:
            raise ValueError(f"max_queue must not be negative, not {max_queue}")
        self.limit = limit
        self.max_queue = max_queue
        self.in_flight = 0
        """Slots held now."""
        self.closed = False
        """Once set, every request is refused (the gateway is stopping)."""
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it (no await: the fast path)."""
        if self.in_flight < self.limit and not self._waiters and not self.closed:
            self.in_flight += 1
            return True
        return False

    def queue_full(self) -> bool:
        """Whether a request arriving now would be refused without waiting."""
        return self.closed or (self.in_flight >= self.limit and len(self._waiters) >= self.max_queue)

    async def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting in the queue for up to ``timeout`` seconds; False when refused.

        Cancelling the caller (its client went away) leaves the queue; if a slot had just been handed
        over, it is released again.
        """
        if self.try_acquire():
            return True
        if self.queue_full() or timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot as the client left: pass it on
            else:
                self._forget(waiter)
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Give a slot back: to the first waiter if there is one, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # in_flight is unchanged: the slot changes hands
                return
        self.in_flight -= 1

    def close(self) -> None:
        """Refuse every new request and every waiter (the gateway is stopping)."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)
            self._forget(waiter)

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
