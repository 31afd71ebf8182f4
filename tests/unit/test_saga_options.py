"""Saga options are plain data (pure, no engine)."""

from datetime import timedelta

from podium import BEST_EFFORT, COMPENSATE_ALL, COMPENSATE_COMPLETED, PARALLEL, Backoff, Scope


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(initial_interval=timedelta(seconds=1), factor=3, max_interval=timedelta(seconds=5))
    assert [backoff.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 5, 5]


def test_ready_made_strategies() -> None:
    assert COMPENSATE_ALL.scope is Scope.ALL
    assert not COMPENSATE_ALL.best_effort
    assert not COMPENSATE_ALL.parallel
    assert COMPENSATE_COMPLETED.scope is Scope.COMPLETED
    assert BEST_EFFORT.best_effort
    assert PARALLEL.parallel
    assert PARALLEL.best_effort
