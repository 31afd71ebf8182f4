"""The stage services: ``BuildService``, ``TestService``, ``SecurityService``, ``DeployService``.

Each handler does its file-system and subprocess work inside one ``ctx.run_typed`` (a journaled side
effect, retried a few times on unexpected errors) and reports its own start and end time from the
engine's clock. A stage that fails for a reason a retry will not fix (a test, a refusal, a missing image)
ends with a ``TerminalError`` whose message says why and where the log is; its callers turn it into a
status. Every operation is idempotent by (run, stage): a retry or a replay after a crash repeats it
harmlessly (see ``environments.py`` for how deploys and rollbacks manage that).

Every handler here is private (the orchestrators' stages) except ``DeployService/Inspect``, a read that
shows anyone with ``pipeline:read`` what runs where. A client publishes an image by running a pipeline,
never by calling ``Build`` itself, so every image in the registry went through a pipeline's build.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from restate import Context, RunOptions

from podium import Service, TerminalError, call
from services.pipeline import builder, environments, scanner
from services.pipeline.models import (
    AppRef,
    AppView,
    BuildReport,
    BuildRequest,
    DeployReport,
    DeployRequest,
    DnsRequest,
    DnsUpdate,
    Image,
    ImageRef,
    IntegrationTestRequest,
    RollbackReport,
    RollbackRequest,
    ScanReport,
    ScanRequest,
    Stages,
    TestReport,
    UnitTestRequest,
    iso,
)
from services.pipeline.runner import child_env, run_pytest
from services.pipeline.workspace import StageFailed, checkout, log_path, start_log, workspace, write_log

_RUN = RunOptions[Any](max_attempts=3, initial_retry_interval=timedelta(milliseconds=200))


def _guard(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a stage function; its StageFailed becomes a TerminalError (not retried)."""
    try:
        return fn(*args)
    except StageFailed as exc:
        raise TerminalError(exc.message, exc.status) from exc


async def _timed(ctx: Context, name: str, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    started = await ctx.time()
    result: dict[str, Any] = await ctx.run_typed(name, _guard, _RUN, fn, *args)
    return {**result, "startedAt": started, "endedAt": await ctx.time()}


# -- BuildService --------------------------------------------------------------------------------------

build_service = Service("BuildService")


@build_service.handler("Build")
async def build(ctx: Context, req: BuildRequest) -> BuildReport:
    """Compile and package the sample project (``variant``) as a wheel; publish it as ``imageTag``."""
    run = req.run or "build/" + req.image_tag.replace(":", "-")
    done = await _timed(ctx, "build", builder.build, run, req.version, req.variant, req.image_tag)
    return BuildReport.model_validate(done)


@build_service.handler("GetImage")
async def get_image(ctx: Context, req: ImageRef) -> Image:
    """A published image's manifest; 404 if the tag is unknown."""
    found: dict[str, Any] = await ctx.run_typed("lookup", _guard, _RUN, builder.require_image, req.image_tag)
    return Image.model_validate(found)


# -- TestService ---------------------------------------------------------------------------------------

test_service = Service("TestService")


def _unit_tests(run: str, variant: str) -> dict[str, Any]:
    log = start_log(run, "unit-tests", f"unit tests of the sample project ({variant}), from source")
    project = workspace(run, "unit-tests") / "source"
    digest = checkout(project, variant)
    write_log(log, f"checked out sample_project ({variant}) into {project}, source digest {digest}")
    env = child_env(PYTHONPATH=str(project / "src"), APP_ENV="development")
    counts = run_pytest(project, "tests/unit", log, env, "unit tests")
    return {**counts, "suite": "unit"}


def _integration_tests(run: str, image_tag: str, env: str) -> dict[str, Any]:
    image = builder.require_image(image_tag)
    app, version = image["app"], image["version"]
    log = start_log(run, "integration-tests", f"integration tests of {app} {version} deployed in {env}")
    current = environments.current_version(app, env)
    if current != version:
        write_log(log, f"{app}/{env} runs {current}, not {version}")
        raise StageFailed(f"integration tests need {version} in {env}, but {env} runs {current} (log: {log})")
    project = workspace(run, f"integration-tests-{env}") / "source"
    checkout(project, image["variant"])  # the tests of the same source the image was built from
    pointer = environments.env_dir(app, env) / "current"
    release = pointer.resolve()
    write_log(log, f"testing {pointer} → {release}")
    child = child_env(
        PYTHONPATH=str(pointer),
        APP_ENV=env,
        SAMPLE_APP_RELEASE_DIR=str(release),
        SAMPLE_APP_EXPECTED_VERSION=version,
    )
    counts = run_pytest(project, "tests/integration", log, child, f"integration tests in {env}")
    return {**counts, "suite": f"integration ({env})"}


@test_service.handler("RunUnitTests")
async def run_unit_tests(ctx: Context, req: UnitTestRequest) -> TestReport:
    """Run the sample's unit tests against its source; 422 naming the failing tests if any fail."""
    done = await _timed(ctx, "unit tests", _unit_tests, req.run, req.variant)
    return TestReport.model_validate(done)


@test_service.handler("RunIntegrationTests")
async def run_integration_tests(ctx: Context, req: IntegrationTestRequest) -> TestReport:
    """Run the sample's integration tests against the release ``current`` designates in ``environment``."""
    done = await _timed(ctx, "integration tests", _integration_tests, req.run, req.image_tag, req.environment)
    return TestReport.model_validate(done)


# -- SecurityService -----------------------------------------------------------------------------------

security_service = Service("SecurityService")


def _scan(run: str, image_tag: str) -> dict[str, Any]:
    image = builder.require_image(image_tag)
    log = start_log(run, "security-scan", f"scan {image_tag} ({image['wheel']})")
    report = scanner.scan_wheel(builder.registry_dir(image_tag) / image["wheel"])
    path = log_path(run, "security-scan").with_suffix(".json")
    path.write_text(scanner.report_json(report))
    for finding in report["findings"]:
        where = f"{finding['file']}:{finding['line']}" if finding["line"] else finding["file"]
        write_log(log, f"{finding['severity'].upper():6} {finding['rule']} {where}: {finding['message']}")
    verdict = "passed" if report["passed"] else "failed"
    write_log(
        log, f"{report['scannedFiles']} files, {report['high']} high, {report['medium']} medium: {verdict}"
    )
    return {**report, "report": str(path), "log": str(log)}


@security_service.handler("Scan")
async def scan(ctx: Context, req: ScanRequest) -> ScanReport:
    """Scan an image with the rule set in ``scanner.py``; the report says whether the policy passed."""
    done = await _timed(ctx, "scan", _scan, req.run, req.image_tag)
    return ScanReport.model_validate(done)


# -- DeployService -------------------------------------------------------------------------------------

deploy_service = Service("DeployService", system="pipeline")


def _deploy(run: str, image_tag: str, env: str, at: str) -> dict[str, Any]:
    return environments.deploy(run, env, builder.require_image(image_tag), at)


def _update_dns(run: str, hostname: str, image_tag: str, at: str) -> dict[str, Any]:
    return environments.update_dns(run, hostname, builder.require_image(image_tag), at)


@deploy_service.handler("Deploy")
async def deploy(ctx: Context, req: DeployRequest) -> DeployReport:
    """Install an image's release in an environment, health-check it there, switch ``current`` to it."""
    at = iso(await ctx.time())
    done = await _timed(
        ctx, f"deploy {req.environment}", _deploy, req.run, req.image_tag, req.environment, at
    )
    return DeployReport.model_validate(done)


@deploy_service.handler("Rollback")
async def rollback(ctx: Context, req: RollbackRequest) -> RollbackReport:
    """Move ``current`` back to the version this run's deploy replaced (idempotent; no-op if none)."""
    at = iso(await ctx.time())
    done = await _timed(
        ctx, f"rollback {req.environment}", environments.rollback, req.run, req.app, req.environment, at
    )
    return RollbackReport.model_validate(done)


@deploy_service.handler("UpdateDns")
async def update_dns(ctx: Context, req: DnsRequest) -> DnsUpdate:
    """Point a hostname at the image's production release in the local zone file."""
    at = iso(await ctx.time())
    done = await _timed(ctx, "update dns", _update_dns, req.run, req.hostname, req.image_tag, at)
    return DnsUpdate.model_validate(done)


@deploy_service.handler("Inspect", public="read")
async def inspect(ctx: Context, req: AppRef) -> AppView:
    """An application's environments (current version, releases, every switch) and its DNS records."""
    found: dict[str, Any] = await ctx.run_typed("inspect", environments.inspect, _RUN, req.app)
    return AppView.model_validate(found)


async def rollback_stage(
    ctx: Context, stages: Stages, run: str, app: str, env: Literal["staging", "production"]
) -> list[str]:
    """A saga's compensation of a deploy, as a stage: call ``Rollback``; the environments moved back."""
    name = f"rollback-{env}"
    await stages.begin(name, phase=f"rolling-back-{env}")
    try:
        undone = await call(ctx, rollback, RollbackRequest(run=run, app=app, environment=env))
    except TerminalError as error:
        await stages.end(name, "failed", detail=error.message, log=str(log_path(run, name)))
        raise
    await stages.end(name, "succeeded", report=undone, log=undone.log, detail=undone.detail)
    return [env] if undone.moved_back else []


SERVICES = [build_service, test_service, security_service, deploy_service]
