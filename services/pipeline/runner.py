"""Running the sample project's tests: ``python -m pytest`` in a subprocess, results read from JUnit XML.

- unit tests (``tests/unit``) run against the source of the job's checkout (``PYTHONPATH=src``);
- integration tests (``tests/integration``) run against a deployed release: ``PYTHONPATH`` is the
  environment's ``current`` pointer, ``APP_ENV`` the environment, and ``SAMPLE_APP_RELEASE_DIR`` /
  ``SAMPLE_APP_EXPECTED_VERSION`` tell the tests which release they must find there.

The child gets a small, explicit environment: no plugins auto-loaded (the outer test session's plugins
are not the sample's), no bytecode written (a deployed release is never modified), no cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from services.pipeline.workspace import StageFailed, write_log

TEST_TIMEOUT_S = 300
"""A test run that takes longer is stopped and counts as failed."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process run by a stage."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    env.update(extra)
    return env


def run_pytest(project: Path, tests: str, log: Path, env: dict[str, str], what: str) -> dict[str, Any]:
    """Run ``tests`` (a folder of ``project``) and return counts; StageFailed if any test fails."""
    report = project / f".{tests.replace('/', '-')}-junit.xml"
    report.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(project),
        "-c",
        str(project / "pyproject.toml"),
        f"--junitxml={report}",
        tests,
    ]
    shown_env = " ".join(f"{k}={v}" for k, v in env.items() if k not in ("PATH", "HOME", "LANG"))
    write_log(log, f"$ cd {project} && {shown_env} {' '.join(argv)}")
    try:
        done = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        write_log(log, f"stopped after {TEST_TIMEOUT_S} s")
        raise StageFailed(f"{what} timed out after {TEST_TIMEOUT_S} s (log: {log})") from exc
    write_log(log, done.stdout + done.stderr + f"exit status {done.returncode}")
    counts = _counts(report)
    counts["exitCode"] = done.returncode
    counts["log"] = str(log)
    if done.returncode != 0 or counts["total"] == 0:
        failures = counts["failures"] or [f"pytest exited with status {done.returncode}"]
        raise StageFailed(
            f"{what} failed: {counts['failed']} failed, {counts['passed']} passed "
            f"({'; '.join(failures)}) (log: {log})"
        )
    return counts


def _counts(report: Path) -> dict[str, Any]:
    counts: dict[str, Any] = {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    if not report.exists():
        return counts
    for case in ET.parse(report).getroot().iter("testcase"):
        counts["total"] += 1
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            counts["failed"] += 1
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
            message = (problem.get("message") or "").splitlines()[0][:120] if problem.get("message") else ""
            counts["failures"].append(f"{name}: {message}" if message else name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts
