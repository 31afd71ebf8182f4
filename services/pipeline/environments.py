"""Environments and DNS on the local disk: releases, an atomically switched ``current`` pointer, a zone.

Each application's environment is a folder ``environments/<app>/<env>/``::

    releases/<version>/   the unpacked wheel (immutable once installed) and .release.json
    current               a symlink to releases/<version>, replaced atomically (rename over it)
    history.jsonl         every pointer switch: deploy or rollback, from, to, by whom, when
    deployments/<run>.json what a run did here: version, previous version, status

A deploy installs the release if it is not there, runs its health check in that environment
(``python -m <package>.health`` with ``APP_ENV=<env>``) *before* switching, then records its intent
(with the previous version) and switches. So a failed deploy never moves the pointer, and a retry after a
crash finds the intent and switches to the same release without losing the previous one. A rollback moves
the pointer back to the version the run's deploy replaced, only while the pointer is still on that run's
release. Every operation is idempotent per (run, environment); a lock file serialises runs that touch
the same environment.

The DNS zone ``dns/zone.json`` maps hostnames to production releases; it is rewritten whole and renamed
over the old file, so a reader sees the old zone or the new one. Test data: the local DNS provider refuses
any name in the reserved ``.invalid`` top-level domain.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.pipeline.runner import child_env
from services.pipeline.workspace import StageFailed, root, start_log, write_log

ENVIRONMENTS = ("staging", "production")
HEALTH_TIMEOUT_S = 60


def env_dir(app: str, env: str) -> Path:
    """The folder of one environment of an application."""
    return root() / "environments" / app / env


def current_version(app: str, env: str) -> str | None:
    """The version the ``current`` pointer designates, or None when nothing is deployed."""
    pointer = env_dir(app, env) / "current"
    if not pointer.is_symlink():
        return None
    return Path(os.readlink(pointer)).name


def history(app: str, env: str) -> list[dict[str, Any]]:
    """Every pointer switch of an environment, oldest first."""
    path = env_dir(app, env) / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def releases(app: str, env: str) -> list[str]:
    """The versions installed in an environment."""
    folder = env_dir(app, env) / "releases"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / ".release.json").exists())


@contextmanager
def _locked(app: str, env: str) -> Iterator[Path]:
    folder = env_dir(app, env)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)  # atomic


def _record_file(folder: Path, run: str) -> Path:
    return folder / "deployments" / (run.replace("/", "--") + ".json")


def _switch(folder: Path, version: str | None) -> None:
    """Point ``current`` at ``releases/<version>`` (or remove it), atomically."""
    pointer = folder / "current"
    if version is None:
        pointer.unlink(missing_ok=True)
        return
    tmp = folder / "current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("releases") / version)
    tmp.replace(pointer)  # rename over the old link: readers see the old release or the new one


def _note(folder: Path, entry: dict[str, Any]) -> bool:
    """Append a history entry once per (action, run); False if it was there (a retry)."""
    path = folder / "history.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            seen = json.loads(line)
            if (seen["action"], seen["by"]) == (entry["action"], entry["by"]):
                return False
    with path.open("a") as out:
        out.write(json.dumps(entry) + "\n")
    return True


def _install(folder: Path, image: dict[str, Any], log: Path) -> Path:
    """Unpack the image's wheel into ``releases/<version>`` (verifying RECORD); reuse an identical one."""
    release: Path = folder / "releases" / str(image["version"])
    manifest = release / ".release.json"
    if manifest.exists():
        installed = json.loads(manifest.read_text())
        if installed["sha256"] != image["sha256"]:
            raise StageFailed(
                f"release {image['version']} of {image['app']} is already installed from another artifact "
                f"({installed['imageTag']}, sha256 {installed['sha256'][:12]}); releases are immutable",
                409,
            )
        write_log(log, f"release {image['version']} already installed at {release}")
        return release
    wheel = Path(image["wheelPath"])
    data = wheel.read_bytes()
    if hashlib.sha256(data).hexdigest() != image["sha256"]:
        raise StageFailed(f"the artifact of {image['imageTag']} does not match its sha256", 409)
    tmp = release.with_name(release.name + ".installing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise StageFailed(f"{wheel.name} has an unsafe path {name!r}", 409)
        archive.extractall(tmp)
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for line in archive.read(record).decode().splitlines():
            path, digest, _size = line.rsplit(",", 2)
            if digest:
                actual = hashlib.sha256((tmp / path).read_bytes()).digest()
                expected = base64.urlsafe_b64decode(digest.removeprefix("sha256=") + "==")
                if actual != expected:
                    raise StageFailed(f"{wheel.name}: {path} does not match its RECORD hash", 409)
    packages = sorted(p.name for p in tmp.iterdir() if (p / "__init__.py").exists())
    _write_json(
        tmp / ".release.json",
        {
            "app": image["app"],
            "version": image["version"],
            "imageTag": image["imageTag"],
            "sha256": image["sha256"],
            "packages": packages,
        },
    )
    tmp.rename(release)
    write_log(log, f"installed {wheel.name} into {release} ({len(names)} files, RECORD verified)")
    return release


def health_check(release: Path, env: str, log: Path) -> dict[str, Any]:
    """Run ``python -m <package>.health`` from the release with ``APP_ENV=env``; StageFailed if unhealthy."""
    package = json.loads((release / ".release.json").read_text())["packages"][0]
    argv = [sys.executable, "-m", f"{package}.health"]
    write_log(log, f"$ APP_ENV={env} PYTHONPATH={release} {' '.join(argv)}")
    done = subprocess.run(
        argv,
        env=child_env(APP_ENV=env, PYTHONPATH=str(release)),
        cwd=release,
        capture_output=True,
        text=True,
        timeout=HEALTH_TIMEOUT_S,
        check=False,
    )
    write_log(log, done.stdout + done.stderr + f"exit status {done.returncode}")
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"ok": False, "problems": [done.stderr.strip().splitlines()[-1:] or "no output"]}
    if done.returncode != 0 or not report.get("ok"):
        problems = "; ".join(str(p) for p in report.get("problems", [])) or f"exit {done.returncode}"
        raise StageFailed(f"health check of {release.name} in {env} failed: {problems} (log: {log})")
    return report


def deploy(run: str, env: str, image: dict[str, Any], at: str) -> dict[str, Any]:
    """Install the image's release in ``env``, check its health there, switch ``current`` to it."""
    app, version = image["app"], image["version"]
    stage = f"deploy-{env}"
    log = start_log(run, stage, f"deploy {image['imageTag']} (version {version}) to {app}/{env}")
    with _locked(app, env) as folder:
        record_path = _record_file(folder, run)
        record: dict[str, Any] | None = json.loads(record_path.read_text()) if record_path.exists() else None
        if record is not None and record["version"] != version:
            raise StageFailed(f"{run} already deployed {record['version']} to {app}/{env}", 409)
        if record is not None and record["status"] != "switching":
            write_log(log, f"already done by this run: {record['status']}")
            return _deploy_report(app, env, record, folder, log)
        release = _install(folder, image, log)
        if record is None:
            health = health_check(release, env, log)
            previous = current_version(app, env)
            record = {"run": run, "version": version, "previous": previous, "status": "switching"}
            record["health"] = health
            _write_json(record_path, record)  # the intent, with the previous version, before the switch
        _switch(folder, version)
        if record["previous"] != version:
            _note(
                folder, {"action": "deploy", "from": record["previous"], "to": version, "by": run, "at": at}
            )
        record["status"] = "deployed"
        _write_json(record_path, record)
        write_log(log, f"current → releases/{version} (was {record['previous'] or 'nothing'})")
        return _deploy_report(app, env, record, folder, log)


def _deploy_report(app: str, env: str, record: dict[str, Any], folder: Path, log: Path) -> dict[str, Any]:
    return {
        "app": app,
        "environment": env,
        "version": record["version"],
        "previous": record["previous"],
        "current": current_version(app, env),
        "releaseDir": str(folder / "releases" / record["version"]),
        "log": str(log),
    }


def rollback(run: str, app: str, env: str, at: str) -> dict[str, Any]:
    """Undo this run's deploy to ``env``: move ``current`` back to the version it replaced."""
    log = start_log(run, f"rollback-{env}", f"roll back what {run} deployed to {app}/{env}")
    with _locked(app, env) as folder:
        record_path = _record_file(folder, run)
        if not record_path.exists():
            detail = "this run never switched the pointer here: nothing to undo"
            write_log(log, detail)
            return _rollback_report(app, env, None, False, detail, log)
        record = json.loads(record_path.read_text())
        version, previous = record["version"], record["previous"]
        current = current_version(app, env)
        if record["status"] == "rolled_back":
            moved, detail = record["movedBack"], record["rollback"]
        elif previous == version:
            moved, detail = False, f"{version} was already current before this run: nothing to undo"
        elif current == version or record["status"] == "rolling_back":
            record["status"] = "rolling_back"
            _write_json(record_path, record)
            if current == version:
                _switch(folder, previous)
            _note(folder, {"action": "rollback", "from": version, "to": previous, "by": run, "at": at})
            moved = True
            detail = f"current → {'releases/' + previous if previous else 'nothing'} (was {version})"
        else:
            moved, detail = False, f"current is {current}, not {version}: left alone"
        record.update(status="rolled_back", movedBack=moved, rollback=detail)
        _write_json(record_path, record)
        write_log(log, detail)
        return _rollback_report(app, env, version, moved, detail, log)


def _rollback_report(
    app: str, env: str, version: str | None, moved: bool, detail: str, log: Path
) -> dict[str, Any]:
    return {
        "app": app,
        "environment": env,
        "version": version,
        "movedBack": moved,
        "current": current_version(app, env),
        "detail": detail,
        "log": str(log),
    }


# -- DNS ------------------------------------------------------------------------------------------------


def zone_file() -> Path:
    """The local DNS zone: ``{"records": {hostname: record}}``."""
    return root() / "dns" / "zone.json"


def zone() -> dict[str, dict[str, Any]]:
    """Every DNS record."""
    path = zone_file()
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = json.loads(path.read_text())["records"]
    return records


def update_dns(run: str, hostname: str, image: dict[str, Any], at: str) -> dict[str, Any]:
    """Point ``hostname`` at the production release of the image's version (the zone is replaced whole)."""
    log = start_log(run, "update-dns", f"{hostname} → {image['app']} {image['version']} (production)")
    if hostname.endswith(".invalid"):
        write_log(log, "refused by the DNS provider: .invalid is a reserved top-level domain")
        raise StageFailed(
            f"the DNS provider refused to update {hostname}: .invalid is a reserved domain (log: {log})",
            503,
        )
    path = zone_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = zone()
        release = env_dir(image["app"], "production") / "releases" / image["version"]
        record = {
            "hostname": hostname,
            "app": image["app"],
            "environment": "production",
            "version": image["version"],
            "release": str(release),
            "deployedBy": run,
            "updatedAt": at,
        }
        previous = records.get(hostname)
        records[hostname] = record
        _write_json(path, {"records": records})
        fcntl.flock(lock, fcntl.LOCK_UN)
    write_log(log, f"{hostname} → {release} (was {previous['version'] if previous else 'unset'})")
    return {**record, "log": str(log)}


def inspect(app: str) -> dict[str, Any]:
    """An application's environments (current version, releases, switches) and DNS records."""
    return {
        "app": app,
        "environments": {
            env: {
                "current": current_version(app, env),
                "releases": releases(app, env),
                "history": history(app, env),
            }
            for env in ENVIRONMENTS
        },
        "dns": [record for record in zone().values() if record["app"] == app],
    }
