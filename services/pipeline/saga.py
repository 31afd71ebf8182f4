"""``DeploymentSaga`` (seed 003 ex 4): staging → integration tests → production → DNS, with rollback.

``POST /DeploymentSaga/{deploymentId}/Run`` with ``{deploymentId, version, imageTag, hostname?}``
deploys a published image (``BuildService/Build`` publishes one; every pipeline publishes
``<app>:<version>``) with the same ``DeployService`` and ``TestService`` as the pipeline:

| stage | undo | on failure |
|---|---|---|
| resolve the image (``BuildService/GetImage``), check its version | — | ``failed``, nothing touched |
| deploy to staging | roll staging back | ``failed`` |
| integration tests against staging's ``current`` | — | ``tests_failed``: staging rolled back |
| deploy to production (health-checked first) | roll production back | ``failed``: staging rolled back |
| update DNS (``hostname`` → the production release) | — | ``failed``: production and staging rolled back |

Every stage writes a log under ``logs/deployment/<deploymentId>/``; rollbacks never delete logs,
releases or workspaces, and the result lists each stage's log. A repeated ``Run`` returns the first
result. ``Run`` takes ``pipeline:operator``: it puts an image in production without the pipeline's
approval, so starting it is itself the operator's decision.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import (
    Model,
    RunOnce,
    Saga,
    SagaError,
    SagaLog,
    Status,
    StatusTracker,
    TerminalError,
    VirtualObject,
    call,
    read_saga_log,
    read_status,
)
from services.pipeline.models import (
    AppRef,
    DeployReport,
    DeployRequest,
    DnsRecord,
    DnsRequest,
    ImageRef,
    IntegrationTestRequest,
    StageRecord,
    Stages,
)
from services.pipeline.stages import (
    deploy,
    get_image,
    inspect,
    rollback_stage,
    run_integration_tests,
    update_dns,
)
from services.pipeline.workspace import HOSTNAME, ID, IMAGE_TAG, VERSION, log_dir, log_path

SAGA = "deployment"
STAGES = ["resolve-image", "deploy-staging", "integration-tests", "deploy-production", "update-dns"]
_VALID_ID = re.compile(ID)

DeploymentState = Literal["deployed", "tests_failed", "failed"]


class DeploymentRequest(Model):
    deployment_id: str = Field(pattern=ID)
    """Must equal the key in the URL."""
    version: str = Field(pattern=VERSION)
    image_tag: str = Field(pattern=IMAGE_TAG)
    """``<app>:<tag>``, a published image whose version is ``version``."""
    hostname: str | None = Field(default=None, pattern=HOSTNAME, max_length=253)
    """The DNS name to point at production; ``<app>.podium.test`` by default."""


class DeploymentResult(Model):
    deployment_id: str
    app: str
    version: str
    image_tag: str
    hostname: str
    status: DeploymentState
    reason: str | None = None
    failed_stage: str | None = None
    rolled_back: list[str] = []
    """Environments whose ``current`` pointer was moved back, in the order it happened."""
    environments: dict[str, str | None] = {}
    """The version each environment runs at the end (None: nothing deployed)."""
    dns: DnsRecord | None = None
    """The hostname's record at the end (None: never set)."""
    stages: list[StageRecord] = []
    log_dir: str
    logs: dict[str, str] = {}
    """Each stage's log file (kept after a rollback)."""


class DeploymentStatus(Status):
    saga: SagaLog | None = None
    result: DeploymentResult | None = None


sagas = VirtualObject("DeploymentSaga", system="pipeline")


@sagas.handler("Run", public="operator")
async def run(ctx: ObjectContext, req: DeploymentRequest) -> DeploymentResult:
    deployment_id = ctx.key()
    if not _VALID_ID.fullmatch(deployment_id):
        raise TerminalError(f"deploymentId (the key): {deployment_id!r} must match {ID}", 400)
    if req.deployment_id != deployment_id:
        raise TerminalError(
            f"deploymentId: {req.deployment_id!r} must equal the key in the URL ({deployment_id!r})", 400
        )
    once = RunOnce(ctx, req, DeploymentResult)
    if (previous := await once.previous()) is not None:
        return previous
    return once.done(await _Deployment(ctx, req).execute())


class _Deployment:
    def __init__(self, ctx: ObjectContext, req: DeploymentRequest) -> None:
        self.ctx = ctx
        self.req = req
        self.run = f"deployment/{req.deployment_id}"
        self.app = req.image_tag.split(":", 1)[0]
        self.hostname = req.hostname or f"{self.app}.podium.test"
        self.status = StatusTracker(ctx)
        self.stages = Stages(ctx, self.status, list(STAGES))
        self.rolled_back: list[str] = []

    def _deploy(self, env: Literal["staging", "production"]) -> DeployRequest:
        return DeployRequest(run=self.run, image_tag=self.req.image_tag, environment=env)

    async def execute(self) -> DeploymentResult:
        req = self.req
        await self.stages.note(
            {
                "app": self.app,
                "version": req.version,
                "imageTag": req.image_tag,
                "hostname": self.hostname,
                "logDir": str(log_dir(self.run)),
            }
        )
        await self.stages.begin("resolve-image", phase="resolving-image", progress=0.05)
        try:
            image = await call(self.ctx, get_image, ImageRef(image_tag=req.image_tag))
        except TerminalError as error:
            return await self._failed("resolve-image", error.message)
        if image.version != req.version:
            reason = (
                f"image {req.image_tag} holds version {image.version}, not {req.version}; nothing deployed"
            )
            return await self._failed("resolve-image", reason)
        await self.stages.end(
            "resolve-image", "succeeded", detail=f"{image.wheel} sha256 {image.sha256[:12]}"
        )

        try:
            async with Saga(self.ctx, SAGA) as saga:
                await self.stages.saga_step(
                    saga,
                    "deploy-staging",
                    lambda: call(self.ctx, deploy, self._deploy("staging")),
                    compensate=lambda: self._rollback("staging"),
                    payload={"app": self.app, "environment": "staging", "version": req.version},
                    phase="deploying-staging",
                    progress=0.2,
                    failure_log=self._log("deploy-staging"),
                    describe=_switched,
                )
                await self.stages.saga_step(
                    saga,
                    "integration-tests",
                    lambda: call(
                        self.ctx,
                        run_integration_tests,
                        IntegrationTestRequest(run=self.run, image_tag=req.image_tag, environment="staging"),
                    ),
                    phase="integration-testing",
                    progress=0.4,
                    failure_log=self._log("integration-tests"),
                    describe=lambda tested: f"{tested.passed} passed against staging {req.version}",
                )
                await self.stages.saga_step(
                    saga,
                    "deploy-production",
                    lambda: call(self.ctx, deploy, self._deploy("production")),
                    compensate=lambda: self._rollback("production"),
                    payload={"app": self.app, "environment": "production", "version": req.version},
                    phase="deploying-production",
                    progress=0.6,
                    failure_log=self._log("deploy-production"),
                    describe=_switched,
                )
                await self.stages.saga_step(
                    saga,
                    "update-dns",
                    lambda: call(
                        self.ctx,
                        update_dns,
                        DnsRequest(run=self.run, hostname=self.hostname, image_tag=req.image_tag),
                    ),
                    phase="updating-dns",
                    progress=0.8,
                    failure_log=self._log("update-dns"),
                    describe=lambda record: f"{record.hostname} → {record.version}",
                )
        except SagaError as failure:
            stage = failure.log.failed_step or "deploy-staging"
            state: DeploymentState = "tests_failed" if stage == "integration-tests" else "failed"
            return await self._finish(state, failure.message, stage)
        return await self._finish("deployed")

    async def _rollback(self, env: Literal["staging", "production"]) -> None:
        """The compensation of a deploy: put the previous release back (recorded as a stage)."""
        self.rolled_back += await rollback_stage(self.ctx, self.stages, self.run, self.app, env)

    def _log(self, stage: str) -> str:
        return str(log_path(self.run, stage))

    async def _failed(self, stage: str, reason: str) -> DeploymentResult:
        await self.stages.end(stage, "failed", detail=reason)
        return await self._finish("failed", reason, stage)

    async def _finish(
        self, state: DeploymentState, reason: str | None = None, failed_stage: str | None = None
    ) -> DeploymentResult:
        await self.stages.skip_pending()
        view = await call(self.ctx, inspect, AppRef(app=self.app))
        environments = {env: found.current for env, found in view.environments.items()}
        dns = next((r for r in view.dns if r.hostname == self.hostname), None)
        await self.stages.note({"environments": environments, "rolledBack": self.rolled_back})
        if state == "deployed":
            await self.status.complete(phase="deployed")
        else:
            await self.status.fail(reason or state, phase=state)
        stages = self.stages.view()
        return DeploymentResult(
            deployment_id=self.req.deployment_id,
            app=self.app,
            version=self.req.version,
            image_tag=self.req.image_tag,
            hostname=self.hostname,
            status=state,
            reason=reason,
            failed_stage=failed_stage,
            rolled_back=self.rolled_back,
            environments=environments,
            dns=dns,
            stages=stages,
            log_dir=str(log_dir(self.run)),
            logs={s.name: s.log for s in stages if s.log},
        )


def _switched(report: DeployReport) -> str:
    return f"current → {report.version} (was {report.previous or 'nothing'})"


@sagas.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> DeploymentStatus:
    """Phase, every stage with its times and log, the saga log, and the result once there is one."""
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no deployment {ctx.key()}", 404)
    return DeploymentStatus(
        **status.model_dump(),
        saga=await read_saga_log(ctx, SAGA),
        result=await RunOnce.result_of(ctx, DeploymentResult),
    )
