"""Where the pipeline keeps things on disk, job workspaces (a checkout with a variant) and stage logs.

Everything lives under ``$PODIUM_DATA_DIR/pipeline/`` (``.podium/pipeline`` when the variable is unset)::

    workspaces/<kind>/<id>/<job>/   a job's own checkout of the sample project and its outputs
    logs/<kind>/<id>/<stage>.log    one log per stage, appended on every attempt, never deleted
    registry/<repo>/<tag>/          published images: the wheel and manifest.json
    environments/<app>/<env>/       releases/<version>/, the ``current`` symlink, history.jsonl
    dns/zone.json                   hostname → production release

A *run* names who does the work: ``pipeline/<pipelineId>``, ``deployment/<deploymentId>`` or
``build/<buildId>``. Every job gets a fresh checkout of ``sample_project/`` with its variant applied, the
way CI runners each check out the commit, so parallel jobs never share files and a retried job starts
from the same bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_PROJECT = Path(__file__).parent / "sample_project"
"""The project the pipeline ships (never modified: variants are applied to copies)."""
_NOT_SOURCE = ("__pycache__", "*.pyc", ".pytest_cache", ".*-junit.xml")
"""What running the tests by hand leaves in a project: neither copied nor part of the digest."""

ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Pipeline, deployment and build ids: they name folders."""
NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""Application (image repository) names; they are DNS labels too (the default hostname), so they do not
end with a dash."""
VERSION = r"^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}$"
"""Release versions: ``MAJOR.MINOR.PATCH``."""
IMAGE_TAG = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Images: ``<repository>:<tag>``; the repository is the application's name."""
RUN = r"^(pipeline|deployment|build)/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Who does the work (see the module docs)."""
HOSTNAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
"""Lower-case DNS names with at least two labels (at most 253 characters)."""


class StageFailed(Exception):
    """A stage failed for a reason a retry will not fix (a test, a finding, a refusal)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def root() -> Path:
    """The pipeline's data folder."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")).resolve() / "pipeline"


def workspace(run: str, job: str) -> Path:
    """The folder of one job of a run (``workspaces/pipeline/p-1/build``)."""
    return root() / "workspaces" / run / job


def log_dir(run: str) -> Path:
    """Where a run's stage logs are."""
    return root() / "logs" / run


def log_path(run: str, stage: str) -> Path:
    """The log file of one stage of a run."""
    return log_dir(run) / f"{stage}.log"


def start_log(run: str, stage: str, headline: str) -> Path:
    """Open a stage's log for a new attempt (earlier attempts stay above it) and return its path."""
    path = log_path(run, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as log:
        log.write(f"=== {stage} ({run}) attempt at {stamp}: {headline}\n")
    return path


def write_log(path: Path, text: str) -> None:
    """Append ``text`` (a line or a command's output) to a stage log."""
    with path.open("a", encoding="utf-8") as log:
        log.write(text if text.endswith("\n") else text + "\n")


# -- variants: test data that changes the sample project --------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) with ``new`` in one file of the project."""

    path: str
    old: str
    new: str


_INSECURE_CODE = '''def evaluate(expression: str) -> object:
    """Evaluate a pricing rule typed by an operator."""
    return eval(expression)


PAYMENT_API_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


'''

VARIANTS: dict[str, tuple[Edit, ...]] = {
    "ok": (),
    "broken-build": (
        Edit(
            "src/sample_app/pricing.py",
            "def percent_of(cents: int, percent: int) -> int:",
            "def percent_of(cents: int, percent: int) -> int",  # the colon is gone: a syntax error
        ),
    ),
    "failing-unit-tests": (
        Edit(
            "src/sample_app/pricing.py",
            "return (cents * percent + 50) // 100",
            "return cents * percent // 100",  # rounds down: test_percent_rounds_half_up fails
        ),
    ),
    "insecure": (
        Edit("src/sample_app/service.py", "ROUTES: dict", _INSECURE_CODE + "ROUTES: dict"),
        Edit("pyproject.toml", "dependencies = []", 'dependencies = ["requests", "pyyaml==5.3"]'),
    ),
    "failing-integration": (
        Edit("src/sample_app/service.py", '"total": net + tax,', '"total": net,'),  # forgets the tax
    ),
    "bad-production-config": (
        Edit(
            "src/sample_app/config.py",
            '"production": {"currency": "EUR",',
            '"production": {"currency": "EURO",',  # only production's health check sees it
        ),
    ),
}
"""Each variant of the sample project (see the README's test data table)."""


def checkout(dest: Path, variant: str) -> str:
    """Copy the sample project to ``dest`` (replacing what is there), apply ``variant``; return its digest.

    The digest (sha256 over every file's path and bytes) identifies the source, like a commit id: two
    checkouts of the same variant have the same digest.
    """
    edits = VARIANTS[variant]
    tmp = dest.with_name(dest.name + ".checkout")
    for stale in (tmp, dest):
        if stale.exists():
            shutil.rmtree(stale)
    shutil.copytree(SAMPLE_PROJECT, tmp, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    for edit in edits:
        target = tmp / edit.path
        text = target.read_text(encoding="utf-8")
        if text.count(edit.old) != 1:
            raise RuntimeError(f"variant {variant!r} no longer applies to {edit.path}: {edit.old!r}")
        target.write_text(text.replace(edit.old, edit.new), encoding="utf-8")
    tmp.rename(dest)
    return source_digest(dest)


def _is_source(path: Path, folder: Path) -> bool:
    parts = path.relative_to(folder).parts
    return path.is_file() and not any(fnmatch.fnmatch(part, rule) for part in parts for rule in _NOT_SOURCE)


def source_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every source file under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if _is_source(p, folder)):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
