"""The pipeline's local machinery without the engine: variants, the wheel, the scanner, the pointer."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from services.pipeline import builder, environments, scanner, workspace
from services.pipeline.workspace import StageFailed


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODIUM_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("variant", sorted(workspace.VARIANTS))
def test_every_variant_applies_to_the_sample(variant: str, tmp_path: Path) -> None:
    digest = workspace.checkout(tmp_path / "source", variant)
    assert (tmp_path / "source" / "pyproject.toml").is_file()
    assert (digest == workspace.source_digest(workspace.SAMPLE_PROJECT)) is (variant == "ok")


def test_the_wheel_is_reproducible_and_complete() -> None:
    first = builder.build("build/one", "1.2.3", "ok", "demo:1.2.3")
    second = builder.build("build/two", "1.2.3", "ok", "demo:1.2.3")  # same bytes: publishing is a no-op
    assert first["sha256"] == second["sha256"]
    with zipfile.ZipFile(first["wheelPath"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read("sample_app-1.2.3.dist-info/METADATA").decode()
        record = wheel.read("sample_app-1.2.3.dist-info/RECORD").decode()
    assert "sample_app/_version.py" in names
    assert "Name: sample-app\nVersion: 1.2.3\n" in metadata
    assert record.count("sha256=") == len(names) - 1  # every file but RECORD itself
    assert hashlib.sha256(Path(first["wheelPath"]).read_bytes()).hexdigest() == first["sha256"]


def test_the_scanner_rules() -> None:
    source = "\n".join(
        [
            "import os, pickle, subprocess",
            "eval('1')",
            "pickle.loads(b'')",
            "subprocess.run('ls', shell=True)",
            "os.system('ls')",
            "password = 'hunter2hunter2'",
            "subprocess.run(['ls'])",
        ]
    )
    rules = [(f["rule"], f["line"]) for f in scanner.scan_code("m.py", source)]
    assert rules == [
        ("PIPE-S001", 2),
        ("PIPE-S002", 3),
        ("PIPE-S003", 4),
        ("PIPE-S003", 5),
        ("PIPE-S004", 6),
    ]
    deps = scanner.scan_requirements(["requests==2.32.0", "pyyaml==5.3", "urllib3>=1", "jinja2"], "METADATA")
    assert [(f["rule"], f["message"].split(": ", 1)[1][:14]) for f in deps] == [
        ("PIPE-D002", "'pyyaml==5.3':"),
        ("PIPE-D001", "'urllib3>=1' ("),
        ("PIPE-D001", "'jinja2' (pin "),
    ]


def test_deploy_and_rollback_are_idempotent() -> None:
    builder.build("build/b", "1.0.0", "ok", "demo:1.0.0")
    builder.build("build/b", "2.0.0", "ok", "demo:2.0.0")
    one, two = builder.require_image("demo:1.0.0"), builder.require_image("demo:2.0.0")
    environments.deploy("pipeline/p1", "staging", one, "t1")
    assert environments.deploy("pipeline/p2", "staging", two, "t2")["previous"] == "1.0.0"
    assert environments.deploy("pipeline/p2", "staging", two, "t2")["previous"] == "1.0.0"  # a retry
    assert environments.current_version("demo", "staging") == "2.0.0"
    assert environments.rollback("pipeline/p2", "demo", "staging", "t3")["movedBack"] is True
    assert environments.rollback("pipeline/p2", "demo", "staging", "t3")["current"] == "1.0.0"  # a retry
    assert [(h["action"], h["to"]) for h in environments.history("demo", "staging")] == [
        ("deploy", "1.0.0"),
        ("deploy", "2.0.0"),
        ("rollback", "1.0.0"),
    ]
    nothing = environments.rollback("pipeline/never", "demo", "staging", "t4")
    assert (nothing["movedBack"], nothing["current"]) == (False, "1.0.0")


def test_a_release_is_immutable() -> None:
    builder.build("build/a", "1.0.0", "ok", "demo:1.0.0")
    builder.build("build/b", "1.0.0", "failing-integration", "other:1.0.0")
    environments.deploy("pipeline/p1", "staging", builder.require_image("demo:1.0.0"), "t1")
    other = {**builder.require_image("other:1.0.0"), "app": "demo"}
    with pytest.raises(StageFailed, match="releases are immutable"):
        environments.deploy("pipeline/p2", "staging", other, "t2")
