"""Tests of the `loam` command line, run in-process with click's CliRunner."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from node.cli import cli, open_keystore
from node.settings import Settings
from protocol.control import NeighbourInfo, NetStatus, NetStatusRequest
from protocol.errors import ControlError, IdentityError
from protocol.identity import Identity

__all__: list[str] = []

KEY_HEX = bytes(range(1, 33)).hex()
KEY_ADDRESS = Identity(bytes(range(1, 33))).node_id


def run(args: list[str], data_dir: Path, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], **kwargs)


def id_list(data_dir: Path) -> list[dict[str, Any]]:
    result = run(["id", "list", "--json"], data_dir)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "loam" in result.output


def test_create_without_password_prints_the_address(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run(["id", "create", "--alias", "main", "--no-password"], data_dir)
    assert result.exit_code == 0, result.output
    address = result.stdout.strip()
    assert address.startswith("0x") and len(address) == 42
    assert (data_dir / "keys" / f"{address}.key").exists()
    [entry] = id_list(data_dir)
    assert entry["address"] == address
    assert entry["alias"] == "main" and entry["default"] is True and entry["encrypted"] is False
    assert set(entry) == {"address", "alias", "default", "encrypted", "created"}


def test_create_with_password_from_env(tmp_path: Path) -> None:
    result = run(["id", "create"], tmp_path, env={"LOAM_PASSWORD": "s3cret"})
    assert result.exit_code == 0, result.output
    address = result.stdout.strip()
    assert (tmp_path / "keys" / f"{address}.json").exists()
    with open_keystore(tmp_path) as store:
        info = store.get(address)
        assert info.encrypted
        assert store.unlock(info, "s3cret").node_id == address
        with pytest.raises(IdentityError, match="wrong password"):
            store.unlock(info, "nope")


def test_create_prompts_twice_for_the_password(tmp_path: Path) -> None:
    result = run(["id", "create"], tmp_path, input="pw1\npw1\n")
    assert result.exit_code == 0, result.output
    assert id_list(tmp_path)[0]["encrypted"] is True


def test_create_with_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("filepw\n")
    result = run(["id", "create", "--password-file", str(tmp_path / "pw")], tmp_path / "d")
    assert result.exit_code == 0, result.output
    with open_keystore(tmp_path / "d") as store:
        store.unlock(store.get(None), "filepw")


def test_duplicate_alias_is_a_clean_error(tmp_path: Path) -> None:
    assert run(["id", "create", "--alias", "a", "--no-password"], tmp_path).exit_code == 0
    result = run(["id", "create", "--alias", "a", "--no-password"], tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "alias 'a'" in result.stderr
    assert "Traceback" not in result.output
    assert len(id_list(tmp_path)) == 1


def test_import_from_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text("0x" + KEY_HEX + "\n")
    result = run(["id", "import", "--private-key-file", str(key_file), "--no-password", "--alias", "imp"], tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == KEY_ADDRESS
    [entry] = id_list(tmp_path)
    assert entry["address"] == KEY_ADDRESS and entry["alias"] == "imp"


def test_import_from_stdin_with_env_password(tmp_path: Path) -> None:
    result = run(["id", "import"], tmp_path, input=KEY_HEX + "\n", env={"LOAM_PASSWORD": "pw"})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == KEY_ADDRESS
    assert id_list(tmp_path)[0]["encrypted"] is True


def test_import_from_stdin_without_password_source_is_refused(tmp_path: Path) -> None:
    result = run(["id", "import"], tmp_path, input=KEY_HEX + "\n")
    assert result.exit_code == 2
    assert "--password-file" in result.stderr


def test_import_bad_hex_is_a_clean_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text("not a key at all")
    result = run(["id", "import", "--private-key-file", str(key_file), "--no-password"], tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "64 hex digits" in result.stderr
    assert "Traceback" not in result.output


def test_import_same_key_twice_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY_HEX)
    args = ["id", "import", "--private-key-file", str(key_file), "--no-password"]
    assert run(args, tmp_path).exit_code == 0
    result = run(args, tmp_path)
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_list_table_and_empty_list(tmp_path: Path) -> None:
    result = run(["id", "list"], tmp_path)
    assert result.exit_code == 0 and "no identities" in result.stdout
    assert id_list(tmp_path) == []
    run(["id", "create", "--alias", "first", "--no-password"], tmp_path)
    result = run(["id", "list"], tmp_path)
    assert result.exit_code == 0, result.output
    address = id_list(tmp_path)[0]["address"]
    assert "first" in result.stdout and address in result.stdout
    assert "\x1b[" not in result.stdout


def test_show_plain_identity_includes_curve_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY_HEX)
    run(["id", "import", "--private-key-file", str(key_file), "--no-password", "--alias", "k"], tmp_path)
    result = run(["id", "show", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["address"] == KEY_ADDRESS and data["alias"] == "k" and data["default"] is True
    assert data["curve_key"] == Identity(bytes(range(1, 33))).curve_public.decode()
    text = run(["id", "show", "k"], tmp_path)
    assert text.exit_code == 0 and KEY_ADDRESS in text.stdout and "curve_key" in text.stdout


def test_show_encrypted_identity_needs_password_for_curve_key(tmp_path: Path) -> None:
    run(["id", "create", "--alias", "e"], tmp_path, env={"LOAM_PASSWORD": "pw"})
    locked = json.loads(run(["id", "show", "e", "--json"], tmp_path).stdout)
    assert locked["encrypted"] is True and "curve_key" not in locked
    unlocked = json.loads(run(["id", "show", "e", "--json"], tmp_path, env={"LOAM_PASSWORD": "pw"}).stdout)
    assert len(unlocked["curve_key"]) == 40
    wrong = run(["id", "show", "e"], tmp_path, env={"LOAM_PASSWORD": "bad"})
    assert wrong.exit_code == 2 and "wrong password" in wrong.stderr


def test_show_unknown_identity(tmp_path: Path) -> None:
    result = run(["id", "show", "ghost"], tmp_path)
    assert result.exit_code == 2 and "ghost" in result.stderr


def test_bad_setting_in_data_dir_is_a_clean_error(tmp_path: Path) -> None:
    run(["id", "create", "--alias", "e"], tmp_path, env={"LOAM_PASSWORD": "pw"})
    (tmp_path / "loam.toml").write_text("[net]\nlisten_port = 1\n")
    result = run(["id", "show", "e"], tmp_path)
    assert result.exit_code == 2
    assert "net.listen_port" in result.stderr and str(tmp_path / "loam.toml") in result.stderr


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    seen: list[Settings] = []

    def run_node(settings: Settings) -> int:
        seen.append(settings)
        return 0

    module = types.ModuleType("node.daemon")
    module.run_node = run_node  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.daemon", module)
    monkeypatch.setattr("node.logging.configure_logging", lambda level, json: None)
    return seen


def test_node_run_maps_flags_to_settings(tmp_path: Path, fake_daemon: list[Settings]) -> None:
    key = os.urandom(32).hex()
    args = [
        "node", "run",
        "--listen", "tcp://127.0.0.1:7601",
        "--advertise", "tcp://203.0.113.5:7601",
        "--bootstrap", f"loam://{key}@203.0.113.9:7500",
        "--subnet", "devnet",
        "--name", "n1",
        "--api-port", "7470",
        "--log-json",
        "--log-level", "debug",
    ]
    result = run(args, tmp_path)
    assert result.exit_code == 0, result.output
    [s] = fake_daemon
    assert s.data_dir == tmp_path
    assert s.net.listen == "tcp://127.0.0.1:7601"
    assert s.net.advertise == ("tcp://203.0.113.5:7601",)
    assert s.net.bootstrap == (f"loam://{key}@203.0.113.9:7500",)
    assert (s.node.subnet, s.node.name, s.node.log_json, s.node.log_level) == ("devnet", "n1", True, "debug")
    assert s.api.port == 7470


def test_node_run_without_flags_keeps_file_settings(tmp_path: Path, fake_daemon: list[Settings]) -> None:
    (tmp_path / "loam.toml").write_text('[net]\nadvertise = ["tcp://198.51.100.1:7500"]\n[node]\nlog_json = true\n')
    assert run(["node", "run"], tmp_path).exit_code == 0
    [s] = fake_daemon
    assert s.net.advertise == ("tcp://198.51.100.1:7500",) and s.node.log_json is True


def test_node_run_bad_bootstrap_is_a_clean_error(tmp_path: Path, fake_daemon: list[Settings]) -> None:
    result = run(["node", "run", "--bootstrap", "tcp://203.0.113.9:7500"], tmp_path)
    assert result.exit_code == 2
    assert "net.bootstrap (from command line)" in result.stderr and "loam net status" in result.stderr
    assert fake_daemon == []


def _fake_control(monkeypatch: pytest.MonkeyPatch, reply: Any) -> list[tuple[Path, Any, float]]:
    calls: list[tuple[Path, Any, float]] = []

    class ControlClient:
        def __init__(self, data_dir: Path) -> None:
            self.data_dir = data_dir

        def call(self, request: Any, timeout_s: float) -> Any:
            calls.append((self.data_dir, request, timeout_s))
            if isinstance(reply, Exception):
                raise reply
            return reply

    module = types.ModuleType("node.control")
    module.ControlClient = ControlClient  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.control", module)
    return calls


STATUS = NetStatus(
    node_id=KEY_ADDRESS,
    name="n1",
    subnets=("public",),
    listen="tcp://0.0.0.0:7500",
    addresses=("tcp://203.0.113.5:7500",),
    contact="loam://" + "[" * 3 + "a" * 37 + "@203.0.113.5:7500",
    neighbours=(
        NeighbourInfo(
            node_id="0x" + "1" * 40, role="neighbour", outbound=True, address="tcp://203.0.113.6:7500",
            subnets=("public",), age_s=3725.0, idle_s=0.4,
        ),
    ),
    known_peers=12,
    gossip_items=345,
    uptime_s=3725.0,
)


def test_net_status_prints_summary_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_control(monkeypatch, STATUS)
    result = run(["net", "status"], tmp_path)
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, NetStatusRequest(), 5.0)]
    out = result.stdout
    for fragment in (KEY_ADDRESS, "n1", "public", STATUS.contact, "345", "1h 02m 05s", "0x" + "1" * 40, "out"):
        assert fragment in out


def test_net_status_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_control(monkeypatch, STATUS)
    result = run(["net", "status", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["node_id"] == KEY_ADDRESS and data["known_peers"] == 12
    assert data["neighbours"][0]["outbound"] is True


def test_net_status_without_a_node_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_control(monkeypatch, ControlError("no node is running in this data directory"))
    result = run(["net", "status"], tmp_path)
    assert result.exit_code == 2
    assert result.stderr == "error: no node is running in this data directory\n"
