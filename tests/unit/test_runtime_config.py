"""Engine configuration and discovery (pure, no engine started)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import typer

from podium.cli import Deployment, _target_path, read_deployments, read_gateway_limits
from podium.gateway import ServiceLimit
from podium.runtime import EngineConfig, EngineError, find_engine_binary


def test_config_binds_everything_to_loopback_with_small_memory(tmp_path: Path) -> None:
    config = EngineConfig(data_dir=tmp_path, ingress_port=18080, admin_port=19070, node_port=15122)
    parsed = tomllib.loads(config.toml())
    assert parsed["ingress"]["bind-address"] == "127.0.0.1:18080"
    assert parsed["admin"]["bind-address"] == "127.0.0.1:19070"
    assert parsed["bind-address"] == "127.0.0.1:15122"
    assert parsed["default-num-partitions"] == 4
    assert parsed["base-dir"] == str((tmp_path / "restate-data").resolve())
    assert parsed["admin"]["query-engine"]["memory-size"] == "128 MiB"
    assert config.ingress_url == "http://127.0.0.1:18080"
    assert config.log_file == tmp_path / "logs" / "restate-server.log"


def test_the_real_binary_is_found_not_the_node_wrapper() -> None:
    binary = find_engine_binary()
    assert binary.name == "restate-server"
    assert "node_modules/.bin" not in str(binary)
    assert binary.parent.name == "bin"
    assert binary.parent.parent.name.startswith("restate-server-")


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("podium.runtime._engine.__file__", str(tmp_path / "x.py"))
    monkeypatch.setattr("sys.prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="npm ci"):
        find_engine_binary(tmp_path)


def test_deployments_come_from_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.podium]\ndeployments = [{ name = "a", app = "m:app", port = 9100 }]\n')
    assert read_deployments(pyproject) == [Deployment(name="a", app="m:app", port=9100)]
    pyproject.write_text("[tool.other]\n")
    with pytest.raises(typer.BadParameter, match=r"no \[tool.podium\] deployments"):
        read_deployments(pyproject)
    with pytest.raises(typer.BadParameter, match="not found"):
        read_deployments(tmp_path / "missing.toml")


def test_gateway_limits_come_from_pyproject_and_a_bad_entry_is_named(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[tool.podium.gateway_limits]\n"
        "ShopOrder = { max_in_flight = 32, max_queue = 16 }\nOther = { max_in_flight = 4 }\n"
    )
    assert read_gateway_limits(pyproject) == {"ShopOrder": ServiceLimit(32, 16), "Other": ServiceLimit(4, 0)}
    for entry, problem in [
        ("ShopOrder = 32", "expected"),
        ("ShopOrder = { max_in_flight = 0 }", "max_in_flight must be an integer"),
        ("ShopOrder = { max_in_flight = 8, max_qeueu = 2 }", "unknown key max_qeueu"),
    ]:
        pyproject.write_text(f"[tool.podium.gateway_limits]\n{entry}\n")
        with pytest.raises(typer.BadParameter, match=f"gateway_limits\\] ShopOrder: {problem}"):
            read_gateway_limits(pyproject)


def test_the_project_lists_the_travel_deployment() -> None:
    root = Path(__file__).resolve().parents[2]
    names = [d.name for d in read_deployments(root / "pyproject.toml")]
    assert "travel" in names


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("Svc/Handler", "Svc/Handler"),
        ("Obj/key 1/Handler", "Obj/key%201/Handler"),
        ("/Obj/k/H/", "Obj/k/H"),
    ],
)
def test_invoke_targets(target: str, path: str) -> None:
    assert _target_path(target) == path


@pytest.mark.parametrize("target", ["Svc", "a/b/c/d", "a//b"])
def test_invoke_rejects_bad_targets(target: str) -> None:
    with pytest.raises(typer.BadParameter):
        _target_path(target)
