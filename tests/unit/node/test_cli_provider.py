"""`loam provider` with no node running: presets and settings are checked and written to the data dir."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from node.cli import cli

__all__: list[str] = []

REQUESTOR = "0x" + "ab" * 20


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)])


def presets(data_dir: Path) -> list[dict[str, Any]]:
    result = run(data_dir, "provider", "preset", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_with_no_presets_the_list_shows_the_implicit_one(tmp_path: Path) -> None:
    [implicit] = presets(tmp_path)
    assert implicit["name"] == "default" and implicit["implicit"] is True and implicit["runtime"] == "wasmtime"
    table = run(tmp_path, "provider", "preset", "list").stdout
    assert "none stored: the [provider] settings act as one" in table and "default" in table


def test_preset_lifecycle_through_the_cli(tmp_path: Path) -> None:
    result = run(tmp_path, "provider", "preset", "create", "--name", "cheap", "--runtime", "wasmtime",
                 "--starting-fee", "0.1", "--env-per-hour", "0.02", "--cpu-per-hour", "0.2", "--cores", "2")
    assert result.exit_code == 0, result.output
    assert "created preset cheap (active); no node is running" in result.stdout
    [cheap] = presets(tmp_path)
    assert cheap == {
        "name": "cheap", "runtime": "wasmtime", "active": True, "implicit": False, "start_fee": 0.1,
        "env_per_hour": 0.02, "cpu_per_hour": 0.2, "cores": 2, "memory_gib": None, "storage_gib": None,
    }
    assert run(tmp_path, "provider", "preset", "update", "--name", "cheap", "--cpu-per-hour", "0.3").exit_code == 0
    assert run(tmp_path, "provider", "preset", "deactivate", "cheap").exit_code == 0
    [cheap] = presets(tmp_path)
    assert cheap["cpu_per_hour"] == 0.3 and cheap["active"] is False
    assert run(tmp_path, "provider", "preset", "activate", "--name", "cheap").exit_code == 0
    assert presets(tmp_path)[0]["active"] is True
    assert run(tmp_path, "provider", "preset", "remove", "cheap").exit_code == 0
    assert presets(tmp_path)[0]["implicit"] is True


def test_bad_preset_input_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    result = run(tmp_path, "provider", "preset", "create", "--name", "x", "--runtime", "docker",
                 "--starting-fee", "0", "--env-per-hour", "0", "--cpu-per-hour", "0")
    assert result.exit_code == 2 and "'docker' is not one of 'wasmtime', 'vm'" in result.output
    result = run(tmp_path, "provider", "preset", "create", "--name", "x", "--runtime", "vm",
                 "--starting-fee", "0", "--env-per-hour", "-1", "--cpu-per-hour", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: preset 'x': env_per_hour = -1.0 must be a price in GLM of 0 or more"
    result = run(tmp_path, "provider", "preset", "create", "--name", "x", "--runtime", "vm",
                 "--starting-fee", "free", "--env-per-hour", "0", "--cpu-per-hour", "0")
    assert result.exit_code == 2 and "'free' is not a valid float" in result.output
    result = run(tmp_path, "provider", "preset", "update", "--name", "x", "--cpu-per-hour", "1")
    assert result.exit_code == 2 and "no preset named 'x'" in result.stderr
    result = run(tmp_path, "provider", "preset", "update", "--name", "x")
    assert result.exit_code == 2 and "nothing to change" in result.output
    assert not (tmp_path / "presets.toml").exists()


def test_settings_set_writes_loam_toml_and_show_reads_it(tmp_path: Path) -> None:
    result = run(tmp_path, "provider", "settings", "set", "--cores", "4", "--memory", "8", "--disk", "20",
                 "--starting-fee", "0.01", "--cpu-per-hour", "0.1", "--payment-network", "polygon",
                 "--node-name", "garage", "--block-requestors", REQUESTOR.upper().replace("0X", "0x"))
    assert result.exit_code == 0, result.output
    assert "saved --node-name, --cores, --memory, --disk, --starting-fee, --cpu-per-hour, --payment-network" in result.stdout
    assert "no node is running" in result.stdout
    data = tomllib.loads((tmp_path / "loam.toml").read_text())
    assert data["node"] == {"name": "garage"}
    assert data["provider"]["cores"] == 4 and data["provider"]["block_requestors"] == [REQUESTOR]
    shown = json.loads(run(tmp_path, "provider", "settings", "show", "--json").stdout)
    assert shown["cores"] == 4 and shown["memory_gib"] == 8.0 and shown["storage_gib"] == 20.0
    assert shown["payment_network"] == "polygon" and shown["node_name"] == "garage"
    assert shown["block_requestors"] == [REQUESTOR] and shown["debit_note_interval_s"] == 120.0
    text = run(tmp_path, "provider", "settings", "show").stdout
    assert "cores:" in text and "(node id)" in text


def test_bad_settings_are_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    assert run(tmp_path, "provider", "settings", "set", "--cores", "2").exit_code == 0
    before = (tmp_path / "loam.toml").read_text()
    cases = [
        (["--cores", "many"], "'many' is not a valid integer"),
        (["--cores", "0"], "provider.cores"),
        (["--memory", "-2"], "must be positive"),
        (["--payment-network", "moon"], "--payment-network 'moon' is not a known payment network (known: local, holesky"),
        (["--allow-requestors", "bob"], "--allow-requestors: 'bob' is not a node id"),
        (["--debit-note-accept-timeout", "1"], "must be at least 5 seconds"),
        (["--account", "nobody"], "must be an address 0x followed by 40 hex digits"),
        ([], "nothing to set"),
    ]
    for args, message in cases:
        result = run(tmp_path, "provider", "settings", "set", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert (tmp_path / "loam.toml").read_text() == before


def test_status_without_a_running_node_says_how_to_start_one(tmp_path: Path) -> None:
    result = run(tmp_path, "provider", "status")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: no node is running with data dir {tmp_path}; start it with `loam node run`"


def test_a_new_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new"
    assert run(data_dir, "provider", "settings", "set", "--cores", "2").exit_code == 0
    assert data_dir.stat().st_mode & 0o777 == 0o700


def test_a_clash_with_a_loam_variable_of_the_shell_is_reported_after_saving(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["provider", "settings", "set", "--cores", "2", "--data-dir", str(tmp_path)],
        env={"LOAM_PROVIDER__MAX_AGREEMENTS": "0"},
    )
    assert result.exit_code == 2
    assert "saved to loam.toml, but with this shell's LOAM_ variables the settings do not load" in result.stderr
    assert "provider.max_agreements (from environment variable LOAM_PROVIDER__MAX_AGREEMENTS)" in result.stderr
    assert tomllib.loads((tmp_path / "loam.toml").read_text())["provider"] == {"cores": 2}
