"""``PipelineOrchestrator`` (seed 000 ex 4): build, test, scan, stage, verify, approve, release.

``POST /PipelineOrchestrator/{pipelineId}/Run`` with ``{version, app?, variant?}``:

1. ``BuildService/Build`` and ``TestService/RunUnitTests`` in parallel (``fan_out_fail``: the first
   failure cancels the other); the build publishes the wheel as image ``<app>:<version>``;
2. ``SecurityService/Scan`` of the image; any high finding stops the pipeline;
3. ``DeployService/Deploy`` to staging (undo: ``DeployService/Rollback``, which moves ``current`` back
   to the previous release), then ``TestService/RunIntegrationTests`` against staging's ``current``;
   failing tests roll staging back;
4. the manual approval (``PipelineApproval``, an awakeable with a deadline: the ``approval_timeout``
   setting, 24 h by default); rejected or timed out: the pipeline stops, production untouched, staging
   keeps the tested release;
5. ``DeployService/Deploy`` to production (its health check runs before the switch, so a failure
   leaves production as it was).

``GetStatus`` shows every stage with its start and end time (engine clock) and log, the approval and the
staging saga log. ``Approve`` / ``Reject`` decide the approval (operator actions; the decision records
the verified subject of the approver's token). A repeated ``Run`` returns the first result; nothing is
built or deployed twice.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext, RestateDurableFuture, RunOptions

from podium import (
    INTERNAL_CALLER,
    ApprovalOutcome,
    Decision,
    FanOutError,
    Model,
    OutcomeStatus,
    RunOnce,
    Saga,
    SagaError,
    SagaLog,
    Status,
    StatusTracker,
    TerminalError,
    VirtualObject,
    call,
    caller,
    fan_out_fail,
    read_saga_log,
    read_status,
    with_timeout,
)
from services.pipeline import settings
from services.pipeline.approval import Gate, GateOpen, close_gate, decide, open_gate
from services.pipeline.models import (
    AppRef,
    BuildReport,
    BuildRequest,
    DeployReport,
    DeployRequest,
    Finding,
    IntegrationTestRequest,
    ScanRequest,
    StageRecord,
    Stages,
    StageState,
    TestReport,
    UnitTestRequest,
    Variant,
    iso,
)
from services.pipeline.stages import (
    build,
    deploy,
    inspect,
    rollback_stage,
    run_integration_tests,
    run_unit_tests,
    scan,
)
from services.pipeline.workspace import ID, NAME, VERSION, log_dir, log_path

STAGES = [
    "build",
    "unit-tests",
    "security-scan",
    "deploy-staging",
    "integration-tests",
    "approval",
    "deploy-production",
]
SAGA = "staging-release"
_VALID_ID = re.compile(ID)

PipelineState = Literal[
    "deployed",
    "build_failed",
    "unit_tests_failed",
    "security_failed",
    "integration_failed",
    "rejected",
    "approval_timed_out",
    "deploy_failed",
]


class PipelineRequest(Model):
    version: str = Field(pattern=VERSION)
    """The release version, ``MAJOR.MINOR.PATCH``; the image is ``<app>:<version>``."""
    app: str = Field(default="sample-app", pattern=NAME)
    """The application (its environments and image repository)."""
    variant: Variant = "ok"
    """Test data: which variant of the sample project to ship (see the README)."""


class Artifact(Model):
    image_tag: str
    wheel: str
    sha256: str
    path: str


class ApprovalView(Model):
    outcome: str
    """``waiting``, ``approved``, ``rejected`` or ``timed_out``."""
    requested_at: str
    deadline_at: str
    decided_at: str | None = None
    by: str | None = None
    comment: str | None = None


class PipelineResult(Model):
    pipeline_id: str
    app: str
    version: str
    variant: str
    status: PipelineState
    reason: str | None = None
    failed_stage: str | None = None
    rolled_back: list[str] = []
    """Environments whose ``current`` pointer was moved back to the previous release."""
    environments: dict[str, str | None] = {}
    """The version each environment runs at the end (None: nothing deployed)."""
    artifact: Artifact | None = None
    findings: list[Finding] = []
    approval: ApprovalView | None = None
    stages: list[StageRecord] = []
    log_dir: str


class PipelineStatus(Status):
    saga: SagaLog | None = None
    result: PipelineResult | None = None


pipelines = VirtualObject("PipelineOrchestrator", system="pipeline")


def _approval_timeout_ms() -> int:
    return round(settings.SETTINGS.approval_timeout.total_seconds() * 1000)


@pipelines.handler("Run", public="write")
async def run(ctx: ObjectContext, req: PipelineRequest) -> PipelineResult:
    pipeline_id = ctx.key()
    if not _VALID_ID.fullmatch(pipeline_id):
        raise TerminalError(f"pipelineId (the key): {pipeline_id!r} must match {ID}", 400)
    once = RunOnce(ctx, req, PipelineResult)
    if (previous := await once.previous()) is not None:
        return previous
    return once.done(await _Pipeline(ctx, pipeline_id, req).execute())


class _Pipeline:
    def __init__(self, ctx: ObjectContext, pipeline_id: str, req: PipelineRequest) -> None:
        self.ctx = ctx
        self.id = pipeline_id
        self.req = req
        self.run = f"pipeline/{pipeline_id}"
        self.tag = f"{req.app}:{req.version}"
        self.status = StatusTracker(ctx)
        self.stages = Stages(ctx, self.status, list(STAGES))
        self.rolled_back: list[str] = []
        self.artifact: Artifact | None = None
        self.findings: list[Finding] = []
        self.approval: ApprovalView | None = None

    async def execute(self) -> PipelineResult:
        req = self.req
        await self.stages.note(
            {
                "app": req.app,
                "version": req.version,
                "variant": req.variant,
                "imageTag": self.tag,
                "logDir": str(log_dir(self.run)),
            }
        )

        # 1. build and unit tests, in parallel; the first failure cancels the other
        await self.stages.begin("build", "unit-tests", phase="building", progress=0.1)
        branches: list[RestateDurableFuture[Any]] = [
            call(
                self.ctx,
                build,
                BuildRequest(version=req.version, image_tag=self.tag, variant=req.variant, run=self.run),
            ),
            call(self.ctx, run_unit_tests, UnitTestRequest(run=self.run, variant=req.variant)),
        ]
        try:
            built, unit = await fan_out_fail(branches)
        except FanOutError as failure:
            return await self._parallel_failed(failure)
        await self._built(built)
        await self._unit_tests_passed(unit)

        # 2. security scan of the image
        await self.stages.begin("security-scan", phase="scanning", progress=0.3)
        try:
            report = await call(self.ctx, scan, ScanRequest(run=self.run, image_tag=self.tag))
        except TerminalError as error:
            return await self._failed("security-scan", "security_failed", error.message)
        self.findings = report.findings
        summary = f"{report.high} high, {report.medium} medium findings in {report.scanned_files} files"
        findings = {"findings": [f.model_dump(mode="json") for f in report.findings]}
        if not report.passed:
            high = [
                f"{f.rule} {f.file}:{f.line} {f.message}" for f in report.findings if f.severity == "high"
            ]
            await self.stages.end(
                "security-scan", "failed", report=report, log=report.log, detail=summary, extra=findings
            )
            reason = f"security scan failed ({summary}): {'; '.join(high)} (report: {report.report})"
            return await self._finish("security_failed", reason, "security-scan")
        await self.stages.end(
            "security-scan", "succeeded", report=report, log=report.log, detail=summary, extra=findings
        )

        # 3. staging, verified by the integration tests; failing tests roll staging back
        try:
            async with Saga(self.ctx, SAGA) as saga:
                await self.stages.saga_step(
                    saga,
                    "deploy-staging",
                    lambda: call(self.ctx, deploy, self._deploy("staging")),
                    compensate=lambda: self._rollback("staging"),
                    payload={"app": req.app, "environment": "staging", "version": req.version},
                    phase="deploying-staging",
                    progress=0.4,
                    failure_log=self._log("deploy-staging"),
                    describe=_switched,
                )
                await self.stages.saga_step(
                    saga,
                    "integration-tests",
                    lambda: call(
                        self.ctx,
                        run_integration_tests,
                        IntegrationTestRequest(run=self.run, image_tag=self.tag, environment="staging"),
                    ),
                    phase="integration-testing",
                    progress=0.5,
                    failure_log=self._log("integration-tests"),
                    describe=lambda tested: f"{tested.passed} passed against staging {req.version}",
                )
        except SagaError as failure:
            stage = failure.log.failed_step or "deploy-staging"
            state: PipelineState = "integration_failed" if stage == "integration-tests" else "deploy_failed"
            return await self._finish(state, failure.message, stage)

        # 4. the manual approval, with a deadline
        decided = await self._approval()
        if decided.outcome is not ApprovalOutcome.APPROVED:
            state = "rejected" if decided.outcome is ApprovalOutcome.REJECTED else "approval_timed_out"
            if decided.outcome is ApprovalOutcome.REJECTED:
                who = f" by {decided.decision.by}" if decided.decision and decided.decision.by else ""
                why = f": {decided.decision.comment}" if decided.decision and decided.decision.comment else ""
                reason = f"production deploy rejected{who}{why}; production untouched"
            else:
                reason = f"no decision before the deadline ({decided.deadline_at}); production untouched"
            return await self._finish(state, reason, "approval")

        # 5. production
        await self.stages.begin("deploy-production", phase="deploying-production", progress=0.8)
        try:
            released = await call(self.ctx, deploy, self._deploy("production"))
        except TerminalError as error:
            return await self._failed(
                "deploy-production", "deploy_failed", f"{error.message}; production untouched"
            )
        await self.stages.end(
            "deploy-production", "succeeded", report=released, log=released.log, detail=_switched(released)
        )
        return await self._finish("deployed")

    async def _built(self, built: BuildReport) -> None:
        self.artifact = Artifact(
            image_tag=self.tag, wheel=built.wheel, sha256=built.sha256, path=built.wheel_path
        )
        await self.stages.end(
            "build",
            "succeeded",
            report=built,
            log=built.log,
            detail=f"{built.wheel} sha256 {built.sha256[:12]}",
            extra={"artifact": self.artifact.model_dump(mode="json")},
        )

    async def _unit_tests_passed(self, unit: TestReport) -> None:
        await self.stages.end(
            "unit-tests", "succeeded", report=unit, log=unit.log, detail=f"{unit.passed} passed"
        )

    async def _parallel_failed(self, failure: FanOutError) -> PipelineResult:
        reasons: list[str] = []
        failed: list[str] = []
        for name, outcome in zip(("build", "unit-tests"), failure.outcomes, strict=True):
            if outcome.status is OutcomeStatus.SUCCEEDED and outcome.value is not None:
                await (self._built if name == "build" else self._unit_tests_passed)(outcome.value)
            elif outcome.status is OutcomeStatus.FAILED:
                message = outcome.error.message if outcome.error else "failed"
                failed.append(name)
                reasons.append(message)
                await self.stages.end(name, "failed", detail=message, log=str(log_path(self.run, name)))
            else:
                await self.stages.end(name, "cancelled", detail="cancelled: the other branch failed first")
        state: PipelineState = "build_failed" if "build" in failed else "unit_tests_failed"
        return await self._finish(state, "; ".join(reasons), failed[0])

    async def _failed(self, stage: str, state: PipelineState, reason: str) -> PipelineResult:
        await self.stages.end(stage, "failed", detail=reason, log=str(log_path(self.run, stage)))
        return await self._finish(state, reason, stage)

    async def _rollback(self, env: Literal["staging", "production"]) -> None:
        """The compensation of a deploy: put the previous release back (recorded as a stage)."""
        self.rolled_back += await rollback_stage(self.ctx, self.stages, self.run, self.req.app, env)

    def _deploy(self, env: Literal["staging", "production"]) -> DeployRequest:
        return DeployRequest(run=self.run, image_tag=self.tag, environment=env)

    def _log(self, stage: str) -> str:
        return str(log_path(self.run, stage))

    async def _approval(self) -> Gate:
        # The setting is read once and journaled: a replay after the deployment was reconfigured keeps it.
        timeout_ms = await self.ctx.run_typed("approval timeout", _approval_timeout_ms, RunOptions[int]())
        timeout = timedelta(milliseconds=timeout_ms)
        asked = await self.ctx.time()
        awakeable_id, decision = self.ctx.awakeable(type_hint=dict)
        gate = await call(
            self.ctx,
            open_gate,
            GateOpen(
                awakeable_id=awakeable_id,
                requested_at=iso(asked),
                deadline_at=iso(asked + timeout.total_seconds()),
                what=f"deploy {self.req.app} {self.req.version} to production",
            ),
            key=self.id,
        )
        self.approval = _view(gate)
        await self.stages.note({"approval": self.approval.model_dump(mode="json")})
        # the gate is open before the phase says so: an approver who sees the phase can decide at once
        await self.stages.begin("approval", phase="awaiting-approval", progress=0.6, state="waiting")
        await with_timeout(self.ctx, decision, timeout, cancel=False)
        gate = await call(self.ctx, close_gate, None, key=self.id)  # the decision, or timed_out if none
        self.approval = _view(gate)
        state: StageState = "succeeded" if gate.outcome is ApprovalOutcome.APPROVED else "failed"
        detail = f"{gate.outcome}" + (f" by {gate.decision.by}" if gate.decision and gate.decision.by else "")
        await self.stages.end(
            "approval", state, detail=detail, extra={"approval": self.approval.model_dump(mode="json")}
        )
        return gate

    async def _finish(
        self, state: PipelineState, reason: str | None = None, failed_stage: str | None = None
    ) -> PipelineResult:
        await self.stages.skip_pending()
        view = await call(self.ctx, inspect, AppRef(app=self.req.app))
        environments = {env: found.current for env, found in view.environments.items()}
        extra = {"environments": environments, "rolledBack": self.rolled_back}
        if state == "deployed":
            await self.stages.note(extra)
            await self.status.complete(phase="deployed")
        else:
            await self.stages.note(extra)
            await self.status.fail(reason or state, phase=state)
        return PipelineResult(
            pipeline_id=self.id,
            app=self.req.app,
            version=self.req.version,
            variant=self.req.variant,
            status=state,
            reason=reason,
            failed_stage=failed_stage,
            rolled_back=self.rolled_back,
            environments=environments,
            artifact=self.artifact,
            findings=self.findings,
            approval=self.approval,
            stages=self.stages.view(),
            log_dir=str(log_dir(self.run)),
        )


def _switched(report: DeployReport) -> str:
    return f"current → {report.version} (was {report.previous or 'nothing'})"


def _view(gate: Gate) -> ApprovalView:
    return ApprovalView(
        outcome=str(gate.outcome) if gate.outcome else "waiting",
        requested_at=gate.requested_at,
        deadline_at=gate.deadline_at,
        decided_at=gate.decided_at,
        by=gate.decision.by if gate.decision else None,
        comment=gate.decision.comment if gate.decision else None,
    )


@pipelines.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> PipelineStatus:
    """Phase, progress, every stage with its times and log, the approval, the staging saga log."""
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no pipeline {ctx.key()}", 404)
    return PipelineStatus(
        **status.model_dump(),
        saga=await read_saga_log(ctx, SAGA),
        result=await RunOnce.result_of(ctx, PipelineResult),
    )


def _decided_by(ctx: ObjectSharedContext, decision: Decision) -> Decision:
    """The decision with ``by`` set to who made it (the rule of :func:`podium.add_approval_handlers`).

    Through the gateway that is the verified subject of the approver's token, whatever the body says; a
    ``by`` in the body counts only through a trusted door (the ingress on loopback, another handler).
    """
    subject = caller(ctx)
    if subject != INTERNAL_CALLER or decision.by is None:
        return decision.model_copy(update={"by": subject})
    return decision


@pipelines.handler("Approve", kind="shared", public="operator")
async def approve(ctx: ObjectSharedContext, decision: Decision) -> Gate:
    """Decide the production approval: ``{}`` approves, ``{"approved": false}`` rejects."""
    return await call(ctx, decide, _decided_by(ctx, decision), key=ctx.key())


@pipelines.handler("Reject", kind="shared", public="operator")
async def reject(ctx: ObjectSharedContext, decision: Decision) -> Gate:
    """Reject the production approval."""
    rejected = decision.model_copy(update={"approved": False})
    return await call(ctx, decide, _decided_by(ctx, rejected), key=ctx.key())
