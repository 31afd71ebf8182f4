"""Wire models of the pipeline services, and the per-stage timing record both orchestrators keep."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from pydantic import Field

from podium import Model, Saga, StatusTracker, TerminalError
from services.pipeline.workspace import HOSTNAME, IMAGE_TAG, RUN, VERSION

T = TypeVar("T")

Variant = Literal[
    "ok", "broken-build", "failing-unit-tests", "insecure", "failing-integration", "bad-production-config"
]
Environment = Literal["staging", "production"]


# -- stage services -------------------------------------------------------------------------------------


class Timed(Model):
    started_at: float
    """When the stage's handler started (engine clock, seconds since the epoch)."""
    ended_at: float


class BuildRequest(Model):
    version: str = Field(pattern=VERSION)
    image_tag: str = Field(pattern=IMAGE_TAG)
    variant: Variant = "ok"
    run: str | None = Field(default=None, pattern=RUN)
    """Who builds (``pipeline/<id>``); by default ``build/<repo>-<tag>``."""


class BuildReport(Timed):
    image_tag: str
    app: str
    version: str
    variant: str
    wheel: str
    wheel_path: str
    sha256: str
    source_digest: str
    modules: int
    log: str


class ImageRef(Model):
    image_tag: str = Field(pattern=IMAGE_TAG)


class Image(Model):
    image_tag: str
    app: str
    version: str
    variant: str
    wheel: str
    wheel_path: str
    sha256: str
    source_digest: str
    built_by: str


class UnitTestRequest(Model):
    run: str = Field(pattern=RUN)
    variant: Variant = "ok"


class IntegrationTestRequest(Model):
    run: str = Field(pattern=RUN)
    image_tag: str = Field(pattern=IMAGE_TAG)
    """The image deployed in ``environment`` (its tests come from the same source)."""
    environment: Environment = "staging"


class TestReport(Timed):
    __test__ = False  # a model, not a test class

    suite: str
    total: int
    passed: int
    failed: int
    skipped: int
    failures: list[str]
    log: str


class ScanRequest(Model):
    run: str = Field(pattern=RUN)
    image_tag: str = Field(pattern=IMAGE_TAG)


class Finding(Model):
    rule: str
    severity: Literal["high", "medium"]
    file: str
    line: int | None
    message: str


class ScanReport(Timed):
    passed: bool
    findings: list[Finding]
    scanned_files: int
    high: int
    medium: int
    policy: str
    report: str
    log: str


class DeployRequest(Model):
    run: str = Field(pattern=RUN)
    image_tag: str = Field(pattern=IMAGE_TAG)
    environment: Environment


class DeployReport(Timed):
    app: str
    environment: str
    version: str
    previous: str | None
    current: str | None
    release_dir: str
    log: str


class RollbackRequest(Model):
    run: str = Field(pattern=RUN)
    app: str
    environment: Environment


class RollbackReport(Timed):
    app: str
    environment: str
    version: str | None
    """The version this run had deployed (None if it never switched the pointer)."""
    moved_back: bool
    current: str | None
    detail: str
    log: str


class DnsRequest(Model):
    run: str = Field(pattern=RUN)
    hostname: str = Field(pattern=HOSTNAME, max_length=253)
    image_tag: str = Field(pattern=IMAGE_TAG)


class DnsRecord(Model):
    hostname: str
    app: str
    environment: str
    version: str
    release: str
    """The release folder the name points at."""
    deployed_by: str
    updated_at: str


class DnsUpdate(DnsRecord):
    log: str


class AppRef(Model):
    app: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class EnvironmentView(Model):
    current: str | None
    releases: list[str]
    history: list[dict[str, Any]]


class AppView(Model):
    app: str
    environments: dict[str, EnvironmentView]
    dns: list[DnsRecord]


# -- stage timings ----------------------------------------------------------------------------------------

StageState = Literal["pending", "running", "waiting", "succeeded", "failed", "cancelled", "skipped"]


class StageRecord(Model):
    name: str
    status: StageState = "pending"
    started_at: str | None = None
    """ISO 8601 UTC, from the engine's clock (``ctx.time()``)."""
    ended_at: str | None = None
    duration_ms: int | None = None
    detail: str | None = None
    log: str | None = None


def iso(seconds: float) -> str:
    """An engine timestamp as ISO 8601 UTC with milliseconds."""
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Stages:
    """Keeps every stage's status and timings in the status record's ``metadata.stages``.

    Times come from ``ctx.time()`` (journaled), or from the stage service's own report, never from the
    wall clock, so a replay writes the same record.
    """

    def __init__(self, ctx: Any, status: StatusTracker, names: list[str]) -> None:
        self.ctx = ctx
        self.status = status
        self.records = {name: StageRecord(name=name) for name in names}
        self._started: dict[str, float] = {}

    def view(self) -> list[StageRecord]:
        """Every stage, in order."""
        return list(self.records.values())

    def _metadata(self) -> dict[str, Any]:
        return {"stages": [r.model_dump(mode="json") for r in self.records.values()]}

    async def begin(
        self, *names: str, phase: str, progress: float | None = None, state: StageState = "running"
    ) -> float:
        """Mark ``names`` started now; returns the time."""
        now = await self.ctx.time()
        for name in names:
            record = self.records.setdefault(name, StageRecord(name=name))
            record.status, record.started_at = state, iso(now)
            self._started[name] = now
        await self.status.update(phase=phase, progress=progress, step=names[0], metadata=self._metadata())
        return float(now)

    async def end(
        self,
        name: str,
        state: StageState,
        *,
        detail: str | None = None,
        log: str | None = None,
        report: Timed | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Mark ``name`` ended (with the report's times when there is one, else started → now)."""
        record = self.records.setdefault(name, StageRecord(name=name))
        record.status, record.detail, record.log = state, detail, log or record.log
        if report is not None:
            started, ended = report.started_at, report.ended_at
        else:
            ended = await self.ctx.time()
            started = self._started.get(name, ended)
        if state != "skipped":
            record.started_at, record.ended_at = iso(started), iso(ended)
            record.duration_ms = max(0, round((ended - started) * 1000))
        completed = name if state == "succeeded" else None
        await self.status.update(completed_step=completed, metadata=self._metadata() | (extra or {}))

    async def saga_step(
        self,
        saga: Saga,
        name: str,
        action: Callable[[], Awaitable[T]],
        *,
        phase: str,
        progress: float,
        failure_log: str,
        describe: Callable[[T], str],
        compensate: Callable[[], Awaitable[Any]] | None = None,
        payload: Any = None,
    ) -> T:
        """Run one saga step as a stage: begin, the step, then succeeded or failed (before compensating)."""
        await self.begin(name, phase=phase, progress=progress)
        try:
            result = await saga.step(name, action, compensate=compensate, payload=payload)
        except TerminalError as error:
            await self.end(name, "failed", detail=error.message, log=failure_log)
            raise
        report = result if isinstance(result, Timed) else None
        await self.end(
            name, "succeeded", report=report, log=getattr(result, "log", None), detail=describe(result)
        )
        return result

    async def skip_pending(self) -> None:
        """Mark the stages that never started as skipped."""
        for record in self.records.values():
            if record.status == "pending":
                record.status = "skipped"
        await self.status.update(metadata=self._metadata())

    async def note(self, metadata: dict[str, Any]) -> None:
        """Add something to the status metadata (approval, environments, findings)."""
        await self.status.update(metadata=metadata)
