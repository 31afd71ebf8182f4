"""Circuit breakers around the simulated external providers (card gateway, carriers, mail, SMS, push).

One way for every service that calls a provider: :class:`ProviderCircuits` keeps one pybreaker
``CircuitBreaker`` per provider name and process, and :func:`guarded` runs one provider call through it
as a ``ctx.run`` action:

- after ``failures`` failures or timeouts in a row the circuit opens, and calls fail fast, without
  reaching the provider, until ``reset`` has passed; then one call is let through (half-open), and its
  success closes the circuit again (its failure opens it for another period);
- a timeout and an open circuit are **retryable** (the run retries with backoff; an open circuit asks to
  come back when it half-opens), which is safe because every provider call carries an idempotency key;
- a provider's own answer (a decline, a conflict, "unavailable": :class:`ProviderError`) is its final
  word: terminal at once, and not a failure of the provider as far as the breaker is concerned (below
  500).

Why pybreaker: the calls it guards are plain synchronous functions (SQLite-backed simulations standing in
for HTTP clients), which the SDK runs on a worker thread inside ``ctx.run``; pybreaker guards a
synchronous call, while asyncio breakers (aiobreaker, purgatory) guard coroutines, which these calls are
not. While the circuit is closed it is entered as a context manager (``breaker.calling()``), because
``breaker.call(f)`` holds the breaker's lock while ``f`` runs, which would make every call of the process
wait behind a slow one; while it is open or half-open, ``breaker.call`` holding the lock is what lets one
trial through and makes the calls arriving meanwhile wait for its verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import pybreaker
from restate.exceptions import RetryableError

from podium import TerminalError
from services.common.providers import ProviderError, ProviderTimeout

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerSettings:
    """How quickly a provider's circuit opens, and how long it stays open."""

    failures: int
    """Failures or timeouts of one provider in a row that open its circuit."""
    reset: timedelta
    """How long an open circuit fails fast before it lets one call through (half-open)."""


class CircuitOpen(Exception):
    """A provider's circuit is open: the call was not made."""

    def __init__(self, provider: str, retry_after: timedelta) -> None:
        super().__init__(
            f"provider {provider} is failing: circuit open, not called "
            f"(next try in {retry_after.total_seconds():.1f} s)"
        )
        self.provider = provider
        self.retry_after = retry_after


class _Watch(pybreaker.CircuitBreakerListener):
    """Remembers when a circuit opened (to tell callers when to come back) and logs every change."""

    def __init__(self) -> None:
        self.opened_at = 0.0

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.opened_at = time.monotonic()
        before = old_state.name if old_state is not None else "none"
        _log.warning("provider %s: circuit %s -> %s", cb.name, before, new_state.name)


def _business_answer(error: BaseException) -> bool:
    """A decline or a conflict is the provider answering: not a failure of the provider."""
    return isinstance(error, ProviderError) and error.code < 500


class ProviderCircuits:
    """One circuit breaker per provider name, with the numbers of ``settings``."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._breakers: dict[str, tuple[pybreaker.CircuitBreaker, _Watch]] = {}
        self._lock = threading.Lock()

    def _breaker(self, provider: str) -> tuple[pybreaker.CircuitBreaker, _Watch]:
        with self._lock:
            if provider not in self._breakers:
                watch = _Watch()
                breaker = pybreaker.CircuitBreaker(
                    fail_max=self.settings.failures,
                    reset_timeout=self.settings.reset.total_seconds(),
                    exclude=[_business_answer],
                    listeners=[watch],
                    name=provider,
                    throw_new_error_on_trip=False,  # the call that trips it reports its own failure
                )
                self._breakers[provider] = (breaker, watch)
            return self._breakers[provider]

    def state(self, provider: str) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return str(self._breaker(provider)[0].current_state)

    def call(self, provider: str, provider_call: Callable[[], T]) -> T:
        """Run ``provider_call`` through ``provider``'s breaker.

        Raises:
            CircuitOpen: The circuit is open; ``provider_call`` did not run.
        """
        breaker, _ = self._breaker(provider)
        try:
            if breaker.current_state == pybreaker.STATE_CLOSED:
                # Not breaker.call(): it holds the breaker's lock while the call runs, and every call of
                # the process would wait behind a slow one.
                with breaker.calling():
                    return provider_call()
            # Open or half-open, breaker.call() holding the lock is what we want: one trial reaches the
            # provider, and the calls that arrive meanwhile wait for its verdict instead of piling on.
            return breaker.call(provider_call)
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpen(provider, self.until_half_open(provider) or timedelta(0)) from exc

    def until_half_open(self, provider: str) -> timedelta | None:
        """How long ``provider``'s circuit stays open (at least 50 ms), None when it is not open."""
        breaker, watch = self._breaker(provider)
        if breaker.current_state != pybreaker.STATE_OPEN:
            return None
        left = self.settings.reset.total_seconds() - (time.monotonic() - watch.opened_at)
        return timedelta(seconds=max(0.05, left))


def guarded(provider: str, provider_call: Callable[[], T], circuits: ProviderCircuits) -> T:
    """Call a provider through its breaker, as a ``ctx.run`` action.

    Raises:
        RetryableError: The provider did not answer in time, or its circuit is open: the run retries,
            when the circuit half-opens if it is open (the idempotency key keeps a retry from acting
            twice).
        TerminalError: The provider's final word (a decline, a conflict, "unavailable"), with its status.
    """
    try:
        return circuits.call(provider, provider_call)
    except CircuitOpen as exc:
        raise RetryableError(str(exc), status_code=503, retry_after=exc.retry_after) from exc
    except ProviderTimeout as exc:
        # If this timeout opened the circuit, come back when it half-opens; else the run's own backoff.
        retry_after = circuits.until_half_open(provider)
        raise RetryableError(exc.message, status_code=504, retry_after=retry_after) from exc
    except ProviderError as exc:
        raise TerminalError(exc.message, exc.code) from exc
