"""Live status of a long-running handler, readable from a shared handler at any moment.

The run handler writes a :class:`Status` record to its state with a :class:`StatusTracker`; a shared
handler returns it with :func:`read_status`. Timestamps come from the engine's journaled clock
(``ctx.time()``), so a replay writes the same record, never a new wall-clock time.

Example::

    status = StatusTracker(ctx)
    await status.update(phase="validation", progress=0.2)
    ...
    await status.complete()

    @workflow.handler("GetOrderStatus")
    async def get_status(ctx: WorkflowSharedContext) -> Status:
        return await read_status(ctx) or Status.empty()
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from podium._context import can_write_state
from podium._model import Model

DEFAULT_KEY = "podium.status"


class PhaseChange(Model):
    """One entry of the phase history."""

    phase: str
    """The phase entered."""
    at: str
    """When (ISO 8601, UTC, from the engine's clock)."""
    progress: float
    """Progress when it was entered."""


class Status(Model):
    """Where a long-running handler is."""

    phase: str = "pending"
    """A short name of the current phase (``validation``, ``payment``, ``completed``...)."""
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction done, 0 to 1."""
    current_step: str | None = None
    """The step running now."""
    completed_steps: list[str] = []
    """Steps finished so far, in order."""
    metadata: dict[str, Any] = {}
    """Anything else worth showing (counts, ids)."""
    updated_at: str | None = None
    """When this record was last written (ISO 8601, UTC, from the engine's clock)."""
    is_complete: bool = False
    """True once the handler has finished, successfully or not."""
    error: str | None = None
    """Why it failed, when it did."""
    history: list[PhaseChange] = []
    """Every phase change, oldest first."""

    @classmethod
    def empty(cls) -> Status:
        """The status of something that has not started."""
        return cls()


def _iso(seconds: float) -> str:
    return (
        dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class StatusTracker:
    """Writes a :class:`Status` record to the handler's state (object or workflow handlers only).

    Args:
        ctx: An object or workflow context of the run handler.
        key: State key of the record, to keep several in one handler.
    """

    def __init__(self, ctx: Any, key: str = DEFAULT_KEY) -> None:
        if not can_write_state(ctx):
            raise TypeError("StatusTracker needs an exclusive object handler or a workflow run handler")
        self.ctx = ctx
        self.key = key
        self.status = Status()

    async def update(
        self,
        *,
        phase: str | None = None,
        progress: float | None = None,
        step: str | None = None,
        completed_step: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Status:
        """Change some fields, stamp the time, record a phase change, and save."""
        now = _iso(await self.ctx.time())
        status = self.status
        if progress is not None:
            if not 0.0 <= progress <= 1.0:
                raise ValueError(f"progress must be between 0 and 1, got {progress}")
            status.progress = progress
        if completed_step is not None:
            status.completed_steps.append(completed_step)
            if status.current_step == completed_step:
                status.current_step = None
        if step is not None:
            status.current_step = step
        if metadata:
            status.metadata.update(metadata)
        if phase is not None and phase != status.phase:
            status.phase = phase
            status.history.append(PhaseChange(phase=phase, at=now, progress=status.progress))
        status.updated_at = now
        self._save()
        return status

    async def complete(self, *, phase: str = "completed") -> Status:
        """Mark finished successfully (progress 1)."""
        self.status.is_complete = True
        self.status.current_step = None
        return await self.update(phase=phase, progress=1.0)

    async def fail(self, error: str, *, phase: str = "failed") -> Status:
        """Mark finished with an error; progress stays where it was."""
        self.status.is_complete = True
        self.status.error = error
        return await self.update(phase=phase)

    def _save(self) -> None:
        self.ctx.set(self.key, self.status.model_dump(mode="json"))


async def read_status(ctx: Any, key: str = DEFAULT_KEY) -> Status | None:
    """The status record of this object or workflow, from any of its handlers (shared ones too)."""
    raw = await ctx.get(key)
    return None if raw is None else Status.model_validate(raw)
