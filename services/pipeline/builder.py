"""The build: compile the sample project, package it as a wheel, publish it to the local image registry.

There is no pip, ``build`` or hatchling in the project's environment (uv creates it without them), so the
wheel is written with :mod:`zipfile`, following the wheel format (PEP 427): the package's files, a
generated ``<package>/_version.py`` carrying the requested version, and ``<name>-<version>.dist-info/``
with ``METADATA`` (name, version, ``Requires-Python``, ``Requires-Dist`` from ``pyproject.toml``),
``WHEEL`` and ``RECORD`` (sha256 of every file). It installs with ``pip install`` like any other wheel.

The wheel is reproducible: entries are sorted and stamped 1980-01-01, so building the same source and
version twice (a retry, a replay after a crash) gives the same bytes and the same sha256.

Images are wheels published under a tag in ``registry/<repo>/<tag>/`` with a ``manifest.json``. A tag is
immutable: publishing the same bytes again is a no-op; different bytes under an existing tag are refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from services.pipeline.workspace import StageFailed, checkout, root, start_log, workspace, write_log

_EPOCH = (1980, 1, 1, 0, 0, 0)


def registry_dir(image_tag: str) -> Path:
    """Where an image is published (``registry/<repo>/<tag>``)."""
    repo, tag = image_tag.split(":", 1)
    return root() / "registry" / repo / tag


def get_image(image_tag: str) -> dict[str, Any] | None:
    """The manifest of a published image (with ``wheelPath``), or None if the tag is unknown."""
    manifest = registry_dir(image_tag) / "manifest.json"
    if not manifest.exists():
        return None
    found: dict[str, Any] = json.loads(manifest.read_text())
    found["wheelPath"] = str(registry_dir(image_tag) / found["wheel"])
    return found


def require_image(image_tag: str) -> dict[str, Any]:
    """The manifest of a published image; StageFailed (404) if there is none."""
    image = get_image(image_tag)
    if image is None:
        raise StageFailed(f"image {image_tag} is not in the registry (build it first)", 404)
    return image


def build(run: str, version: str, variant: str, image_tag: str) -> dict[str, Any]:
    """Check out ``variant``, compile every module, write the wheel, publish it as ``image_tag``."""
    log = start_log(run, "build", f"build {image_tag} (version {version}, variant {variant})")
    job = workspace(run, "build")
    source = job / "source"
    digest = checkout(source, variant)
    write_log(log, f"checked out sample_project ({variant}) into {source}, source digest {digest}")

    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    packages = sorted(p for p in (source / "src").iterdir() if (p / "__init__.py").exists())
    errors: list[str] = []
    modules = 0
    for package in packages:
        for module in sorted(package.rglob("*.py")):
            modules += 1
            relative = module.relative_to(source).as_posix()
            try:
                compile(module.read_bytes(), relative, "exec", dont_inherit=True)
            except SyntaxError as exc:
                errors.append(f"{relative}:{exc.lineno}: {exc.msg}")
    write_log(log, f"compiled {modules} modules, {len(errors)} errors")
    if errors:
        write_log(log, "\n".join(errors))
        raise StageFailed(f"build failed: {'; '.join(errors)} (log: {log})")

    wheel = _write_wheel(source, packages, project, version, job / "dist")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    write_log(log, f"wrote {wheel.name} ({wheel.stat().st_size} bytes, sha256 {sha256})")
    manifest = {
        "imageTag": image_tag,
        "app": image_tag.split(":", 1)[0],
        "version": version,
        "variant": variant,
        "wheel": wheel.name,
        "sha256": sha256,
        "sourceDigest": digest,
        "builtBy": run,
    }
    _publish(image_tag, wheel, manifest)
    write_log(log, f"published {image_tag} to {registry_dir(image_tag)}")
    return {
        **manifest,
        "wheelPath": str(registry_dir(image_tag) / wheel.name),
        "modules": modules,
        "log": str(log),
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_wheel(
    source: Path, packages: list[Path], project: dict[str, Any], version: str, out: Path
) -> Path:
    name = _normalise(project["name"])
    files: dict[str, bytes] = {}
    for package in packages:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(source / "src").as_posix()] = path.read_bytes()
        files[f"{package.name}/_version.py"] = (
            f'"""Written by the build."""\n\n__version__ = "{version}"\n'.encode()
        )
    dist_info = f"{name}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
    ]
    if "requires-python" in project:
        metadata.append(f"Requires-Python: {project['requires-python']}")
    metadata += [f"Requires-Dist: {requirement}" for requirement in project.get("dependencies", [])]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: podium-pipeline\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in sorted(files.items())]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(files):
            info = zipfile.ZipInfo(entry, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[entry])
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    wheel.write_bytes(buffer.getvalue())
    return wheel


def _publish(image_tag: str, wheel: Path, manifest: dict[str, Any]) -> None:
    target = registry_dir(image_tag)
    existing = get_image(image_tag)
    if existing is not None:
        if existing["sha256"] != manifest["sha256"]:
            raise StageFailed(
                f"image {image_tag} already exists with another artifact (sha256 {existing['sha256'][:12]}, "
                f"built by {existing['builtBy']}); tags are immutable: bump the version",
                409,
            )
        return  # the same bytes: published already (a retry)
    tmp = target.with_name(target.name + ".publishing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(wheel, tmp / wheel.name)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    try:
        tmp.rename(target)  # atomic: the tag appears complete or not at all
    except OSError:
        shutil.rmtree(tmp)
        if get_image(image_tag) is None:
            raise
        _publish(image_tag, wheel, manifest)  # another build published it meanwhile: compare
