"""The security scan: a small, documented rule set run over what ships (the wheel), not the repository.

| rule | severity | finds |
|---|---|---|
| ``PIPE-S001`` | high | a call to ``eval()`` or ``exec()`` |
| ``PIPE-S002`` | high | unsafe deserialisation: ``pickle.load(s)``, ``marshal.load(s)``, ``yaml.load`` |
| ``PIPE-S003`` | high | shell execution: ``os.system``, ``os.popen``, ``subprocess.*(..., shell=True)`` |
| ``PIPE-S004`` | high | a hard-coded secret: ``password = "..."`` and such, AWS/Stripe keys, private keys |
| ``PIPE-D001`` | medium | a dependency (``Requires-Dist``) not pinned to one version with ``==`` |
| ``PIPE-D002`` | high | a pinned dependency below the fixed version of a known advisory (a local list) |

Code rules read the syntax tree of every ``.py`` file in the wheel; dependency rules read its ``METADATA``.
Policy: any **high** finding fails the scan; medium findings are reported and let it pass.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path
from typing import Any

RULES: dict[str, tuple[str, str]] = {
    "PIPE-S001": ("high", "call to eval() or exec(): arbitrary code execution"),
    "PIPE-S002": ("high", "unsafe deserialisation"),
    "PIPE-S003": ("high", "shell command execution"),
    "PIPE-S004": ("high", "hard-coded secret"),
    "PIPE-D001": ("medium", "dependency not pinned to an exact version"),
    "PIPE-D002": ("high", "dependency with a known vulnerability"),
}

ADVISORIES: dict[str, tuple[tuple[int, ...], str]] = {
    "pyyaml": ((5, 4), "CVE-2020-14343: arbitrary code execution in full_load"),
    "requests": ((2, 31, 0), "CVE-2023-32681: Proxy-Authorization header leaked on redirects"),
    "urllib3": ((1, 26, 18), "CVE-2023-45803: request body kept on 303 redirects"),
    "jinja2": ((3, 1, 3), "CVE-2024-22195: XSS through the xmlattr filter"),
}
"""Package → (first fixed version, advisory)."""

_SECRETS = [
    re.compile(
        r"""(?i)\b\w*(password|passwd|secret|api_?key|token|access_?key)\w*\s*[:=]\s*["'][^"'\s]{8,}["']"""
    ),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bsk_live_[0-9A-Za-z]{16,}\b"),
    re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
]
_UNSAFE_LOADS = {("pickle", "load"), ("pickle", "loads"), ("marshal", "load"), ("marshal", "loads")}
_SHELLS = {("os", "system"), ("os", "popen")}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*\(?([^;)]*)\)?")


def _finding(rule: str, file: str, line: int | None, detail: str) -> dict[str, Any]:
    severity, title = RULES[rule]
    return {"rule": rule, "severity": severity, "file": file, "line": line, "message": f"{title}: {detail}"}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def scan_code(file: str, source: str) -> list[dict[str, Any]]:
    """Findings of the code rules in one module."""
    findings: list[dict[str, Any]] = []
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:  # the build compiles everything first, so this is not expected
        return [_finding("PIPE-S001", file, exc.lineno, f"cannot be parsed ({exc.msg})")]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in (("eval",), ("exec",)):
            findings.append(_finding("PIPE-S001", file, node.lineno, f"{name[0]}() called"))
        elif name[-2:] in _UNSAFE_LOADS or (name[-2:] == ("yaml", "load") and not node.keywords):
            findings.append(_finding("PIPE-S002", file, node.lineno, f"{'.'.join(name)}() called"))
        elif name[-2:] in _SHELLS or (
            name[:1] == ("subprocess",)
            and any(k.arg == "shell" and getattr(k.value, "value", False) is True for k in node.keywords)
        ):
            findings.append(_finding("PIPE-S003", file, node.lineno, f"{'.'.join(name)}() called"))
    for number, line in enumerate(source.splitlines(), start=1):
        if any(pattern.search(line) for pattern in _SECRETS):
            findings.append(_finding("PIPE-S004", file, number, line.strip()[:60] + "…"))
    return findings


def _version(text: str) -> tuple[int, ...] | None:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", text):
        return None
    return tuple(int(part) for part in text.split("."))


def scan_requirements(requirements: list[str], file: str) -> list[dict[str, Any]]:
    """Findings of the dependency rules for ``Requires-Dist`` entries."""
    findings: list[dict[str, Any]] = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            continue
        name, spec = match.group(1).lower().replace("_", "-"), match.group(3).strip()
        pinned = re.fullmatch(r"==\s*([0-9][0-9A-Za-z.]*)", spec)
        if pinned is None:
            findings.append(_finding("PIPE-D001", file, None, f"{requirement!r} (pin it with ==)"))
            continue
        advisory = ADVISORIES.get(name)
        version = _version(pinned.group(1))
        if advisory is not None and version is not None and version < advisory[0]:
            fixed = ".".join(str(part) for part in advisory[0])
            findings.append(
                _finding("PIPE-D002", file, None, f"{requirement!r}: {advisory[1]} (fixed in {fixed})")
            )
    return findings


def scan_wheel(wheel: Path) -> dict[str, Any]:
    """Every finding in a wheel, and the verdict of the policy."""
    findings: list[dict[str, Any]] = []
    files = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(".py"):
                files += 1
                findings += scan_code(name, archive.read(name).decode("utf-8", "replace"))
            elif name.endswith(".dist-info/METADATA"):
                lines = archive.read(name).decode("utf-8", "replace").splitlines()
                requires = [
                    line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
                ]
                findings += scan_requirements(requires, name)
    high = sum(1 for f in findings if f["severity"] == "high")
    return {
        "passed": high == 0,
        "findings": findings,
        "scannedFiles": files,
        "high": high,
        "medium": sum(1 for f in findings if f["severity"] == "medium"),
        "policy": "fail on any high finding",
    }


def report_json(report: dict[str, Any]) -> str:
    """The report as written next to the scan's log."""
    return json.dumps(report, indent=2)
