"""Provider settings written to loam.toml: checked by the loader first, refused with a clear reason, nothing lost."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from node.settings import load_settings, payment_networks
from node.settings_file import update_settings_file
from protocol.errors import SettingsError

__all__: list[str] = []

REQUESTOR = "0x" + "12" * 20


def test_changes_are_written_beside_what_the_file_already_holds(tmp_path: Path) -> None:
    (tmp_path / "loam.toml").write_text('[net]\ntarget_neighbours = 3\n\n[provider]\nmax_agreements = 2\n')
    settings = update_settings_file(tmp_path, {"provider.cores": 4, "node.name": "garage", "provider.block_requestors": [REQUESTOR]})
    assert settings.provider.cores == 4 and settings.node.name == "garage"
    data = tomllib.loads((tmp_path / "loam.toml").read_text())
    assert data["net"] == {"target_neighbours": 3}
    assert data["provider"] == {"max_agreements": 2, "cores": 4, "block_requestors": [REQUESTOR]}
    loaded = load_settings(tmp_path, environ={})
    assert loaded.provider.cores == 4 and loaded.provider.max_agreements == 2
    assert loaded.provider.block_requestors == (REQUESTOR,)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"provider.cores": 0}, "provider.cores .* = 0 must be at least 1"),
        ({"provider.memory_gib": -1.0}, "provider.memory_gib .* must be positive"),
        ({"provider.cpu_per_hour": -0.5}, "provider.cpu_per_hour .* must be a price of 0 or more"),
        ({"provider.payment_network": "moon"}, "'moon' is not a known payment network \\(known: local, holesky"),
        ({"provider.account": "0x12"}, "provider.account .* must be an address 0x followed by 40 hex digits"),
        ({"provider.debit_note_interval_s": 0.5}, "debit_note_interval_s .* must be between 1 and 86400 seconds"),
        ({"provider.debit_note_interval_s": 90000.0}, "must be between 1 and 86400 seconds"),
        ({"provider.debit_note_accept_timeout_s": 4.0}, "debit_note_accept_timeout_s .* must be at least 5 seconds"),
        ({"provider.allow_requestors": ["bob"]}, "allow_requestors .* holds 'bob', which is not a node id"),
        ({"provider.colour": "red"}, "unknown key provider.colour"),
        ({"node.subnet": "a b"}, "node.subnet .* must be 1-64 letters"),
    ],
)
def test_a_bad_value_is_refused_by_key_and_file_and_nothing_is_written(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "loam.toml"
    path.write_text("[provider]\ncores = 2\n")
    with pytest.raises(SettingsError, match=message) as info:
        update_settings_file(tmp_path, changes)
    assert "loam-settings-" not in str(info.value)  # the scratch copy is never named
    assert path.read_text() == "[provider]\ncores = 2\n"


def test_the_error_names_the_real_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"from {tmp_path / 'loam.toml'}"):
        update_settings_file(tmp_path, {"provider.cores": 0})


def test_a_network_of_the_nodes_own_networks_file_is_known(tmp_path: Path) -> None:
    (tmp_path / "networks.toml").write_text('[networks.devchain]\nchain_id = 1337\n')
    assert "devchain" in payment_networks(tmp_path)
    assert update_settings_file(tmp_path, {"provider.payment_network": "devchain"}).provider.payment_network == "devchain"


def test_new_provider_defaults_are_golems(tmp_path: Path) -> None:
    cfg = load_settings(tmp_path, environ={}).provider
    assert (cfg.debit_note_interval_s, cfg.debit_note_accept_timeout_s, cfg.payment_timeout_s) == (120.0, 240.0, 120.0)
    assert cfg.account == "" and cfg.allow_requestors == () and cfg.block_requestors == ()
    metrics = load_settings(tmp_path, environ={}).metrics
    assert (metrics.enabled, metrics.host, metrics.port) == (True, "127.0.0.1", 7466)


def test_reloading_keeps_the_command_line_layer(tmp_path: Path) -> None:
    first = load_settings(tmp_path, {"node.name": "from-flag", "net.listen": None}, environ={})
    assert first.overrides == (("node.name", "from-flag"),)
    (tmp_path / "loam.toml").write_text('[node]\nname = "from-file"\n')
    assert load_settings(tmp_path, dict(first.overrides), environ={}).node.name == "from-flag"


def test_a_networks_file_named_in_the_payment_settings_is_found_relative_to_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "mine.toml").write_text('[networks.devchain]\nchain_id = 1337\n')
    (tmp_path / "loam.toml").write_text('[payment]\nnetworks_file = "chain/mine.toml"\n')
    settings = update_settings_file(tmp_path, {"provider.payment_network": "devchain"})
    assert settings.provider.payment_network == "devchain"
    assert tomllib.loads((tmp_path / "loam.toml").read_text())["payment"] == {"networks_file": "chain/mine.toml"}
