"""Tests of the settings loader: layering, typo protection, type and range checks, contact addresses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from zmq.utils import z85

from node.settings import (
    DEFAULTS_PATH,
    Settings,
    default_data_dir,
    load_settings,
    parse_contact,
    parse_tcp_address,
)
from protocol.errors import SettingsError
from protocol.identity import Identity

__all__: list[str] = []

CURVE_KEY = Identity(bytes(range(1, 33))).curve_public
KEY = z85.decode(CURVE_KEY).hex()
CONTACT = f"loam://{KEY}@203.0.113.5:7500"


def write_config(data_dir: Path, text: str) -> Path:
    path = data_dir / "loam.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_defaults_load_without_a_data_dir_file(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    assert isinstance(s, Settings)
    assert s.data_dir == tmp_path
    assert s.node.subnet == "public"
    assert s.node.log_level == "info" and s.node.log_json is False
    assert s.net.listen == "tcp://0.0.0.0:7500"
    assert s.net.advertise == () and s.net.bootstrap == ()
    assert s.net.target_neighbours == 4 and s.net.max_neighbours == 8
    assert s.net.max_message_bytes == 1048576
    assert isinstance(s.net.heartbeat_s, float)
    assert s.api.host == "127.0.0.1" and s.api.port == 7465
    assert s.actors.ask_timeout_s == 10.0


def test_every_setting_has_a_shipped_default() -> None:
    text = DEFAULTS_PATH.read_text(encoding="utf-8")
    for section in ("node", "identity", "net", "api", "actors"):
        assert f"[{section}]" in text
    s = load_settings(Path("unused"), environ={})
    for section in dataclasses.fields(s):
        if section.name in ("data_dir", "overrides"):
            continue
        for f in dataclasses.fields(getattr(s, section.name)):
            assert f"\n{f.name} = " in text, f"{section.name}.{f.name} missing from node.toml"


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.net.route_ttl = 3  # type: ignore[misc]


def test_layers_apply_file_then_env_then_overrides(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        '[net]\ntarget_neighbours = 2\nmax_neighbours = 3\nroute_ttl = 4\n[node]\nname = "from-file"\n',
    )
    environ = {"LOAM_NET__MAX_NEIGHBOURS": "5", "LOAM_NET__ROUTE_TTL": "5"}
    s = load_settings(tmp_path, {"net.route_ttl": 9}, environ=environ)
    assert s.node.name == "from-file"  # file only
    assert s.net.target_neighbours == 2  # file beats default
    assert s.net.max_neighbours == 5  # env beats file
    assert s.net.route_ttl == 9  # overrides beat env


def test_none_override_means_not_given(tmp_path: Path) -> None:
    s = load_settings(tmp_path, {"net.listen": None, "node.name": "n1"}, environ={})
    assert s.net.listen == "tcp://0.0.0.0:7500"
    assert s.node.name == "n1"


def test_env_values_are_toml_with_plain_string_fallback(tmp_path: Path) -> None:
    environ = {
        "LOAM_NET__BOOTSTRAP": f'["{CONTACT}"]',
        "LOAM_NET__LISTEN": "tcp://127.0.0.1:7600",
        "LOAM_NODE__LOG_JSON": "true",
        "LOAM_NODE__NAME": "42",
        "LOAM_NET__HEARTBEAT_S": "2",
        "LOAM_DATA_DIR": "/ignored",
        "LOAM_PASSWORD": "ignored",
    }
    s = load_settings(tmp_path, environ=environ)
    assert s.net.bootstrap == (CONTACT,)
    assert s.net.listen == "tcp://127.0.0.1:7600"
    assert s.node.log_json is True
    assert s.node.name == "42"
    assert s.net.heartbeat_s == 2.0 and isinstance(s.net.heartbeat_s, float)


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[net]\ntarget_neighbors = 3\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(tmp_path, environ={})
    assert "net.target_neighbors" in str(exc.value)
    assert str(path) in str(exc.value)


def test_unknown_section_in_file_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[netw]\nlisten = 'none'\n")
    with pytest.raises(SettingsError, match=r"unknown section \[netw\]") as exc:
        load_settings(tmp_path, environ={})
    assert str(path) in str(exc.value)


def test_unknown_env_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LOAM_NET__TARGET_NEIGHBORS"):
        load_settings(tmp_path, environ={"LOAM_NET__TARGET_NEIGHBORS": "3"})


def test_unknown_override_says_command_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="command line"):
        load_settings(tmp_path, {"net.lissten": "none"}, environ={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[net\n")
    with pytest.raises(SettingsError, match="not valid TOML") as exc:
        load_settings(tmp_path, environ={})
    assert str(path) in str(exc.value)


def test_bad_api_port_is_rejected_with_its_source(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[api]\nport = 70000\n")
    with pytest.raises(SettingsError, match="api.port") as exc:
        load_settings(tmp_path, environ={})
    assert str(path) in str(exc.value)
    with pytest.raises(SettingsError, match=r"api.port \(from command line\)"):
        load_settings(tmp_path, {"api.port": -1}, environ={})
    assert load_settings(tmp_path, {"api.port": 0}, environ={}).api.port == 0  # any free port


def test_wrong_types_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"net.route_ttl .*LOAM_NET__ROUTE_TTL.* integer"):
        load_settings(tmp_path, environ={"LOAM_NET__ROUTE_TTL": "six"})
    with pytest.raises(SettingsError, match="integer"):
        load_settings(tmp_path, {"net.route_ttl": True}, environ={})
    with pytest.raises(SettingsError, match="integer"):
        load_settings(tmp_path, {"net.route_ttl": 6.0}, environ={})
    with pytest.raises(SettingsError, match="true or false"):
        load_settings(tmp_path, {"node.log_json": 1}, environ={})
    with pytest.raises(SettingsError, match="number"):
        load_settings(tmp_path, {"net.heartbeat_s": True}, environ={})
    with pytest.raises(SettingsError, match="list of strings"):
        load_settings(tmp_path, {"net.advertise": "tcp://10.0.0.1:7500"}, environ={})


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    s = load_settings(tmp_path, {"net.dead_after_s": 7}, environ={})
    assert s.net.dead_after_s == 7.0 and isinstance(s.net.dead_after_s, float)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"net.heartbeat_s": 0}, "net.heartbeat_s"),
        ({"actors.ask_timeout_s": -1.0}, "actors.ask_timeout_s"),
        ({"net.clock_skew_s": float("inf")}, "finite"),
        ({"net.target_neighbours": 0}, "at least 1"),
        ({"net.target_neighbours": 9}, "net.max_neighbours"),
        ({"net.dead_after_s": 1.0}, "net.heartbeat_s"),
        ({"net.peer_rate_msgs_per_s": 0.0}, "positive rate"),
        ({"net.max_item_bytes": 2_000_000}, "net.max_message_bytes"),
        ({"node.log_level": "verbose"}, "debug, info, warning, error"),
        ({"node.subnet": ""}, "node.subnet"),
        ({"net.listen": "0.0.0.0:7500"}, "tcp://HOST:PORT"),
        ({"net.listen": "tcp://0.0.0.0:65536"}, "0-65535"),
        ({"net.advertise": ["tcp://0.0.0.0:7500"]}, "cannot be dialled"),
        ({"net.advertise": ["udp://10.0.0.1:7500"]}, "tcp://HOST:PORT"),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        load_settings(tmp_path, overrides, environ={})


def test_good_addresses_are_accepted(tmp_path: Path) -> None:
    s = load_settings(
        tmp_path,
        {
            "net.listen": "none",
            "net.advertise": ["tcp://203.0.113.5:7500", "tcp://node.example.org:7501", "tcp://[2001:db8::1]:7502"],
            "net.bootstrap": [CONTACT],
            "node.log_level": "DEBUG",
        },
        environ={},
    )
    assert s.net.listen == "none"
    assert len(s.net.advertise) == 3
    assert s.net.bootstrap == (CONTACT,)
    assert s.node.log_level == "debug"


def test_bootstrap_without_key_explains_how_to_get_a_contact(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(tmp_path, {"net.bootstrap": ["tcp://203.0.113.5:7500"]}, environ={})
    message = str(exc.value)
    assert "net.bootstrap (from command line)" in message
    assert "key" in message and "loam net status" in message


def test_parse_contact_returns_key_and_endpoint() -> None:
    key, endpoint = parse_contact(CONTACT)
    assert key == CURVE_KEY and len(key) == 40
    assert endpoint == "tcp://203.0.113.5:7500"


@pytest.mark.parametrize(
    ("addr", "fragment"),
    [
        ("tcp://203.0.113.5:7500", "loam net status"),
        ("203.0.113.5:7500", "not a contact address"),
        ("loam://short@203.0.113.5:7500", "64 hex digits"),
        (f"loam://{KEY}203.0.113.5:7500", "64 hex digits"),
        (f"loam://{KEY}@203.0.113.5", "HOST:PORT"),
        (f"loam://{KEY}@203.0.113.5:99999", "1-65535"),
        (f"loam://{KEY}@0.0.0.0:7500", "cannot be dialled"),
        ("loam://" + "zz" * 32 + "@203.0.113.5:7500", "64 hex digits"),
    ],
)
def test_parse_contact_rejects_bad_addresses(addr: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse_contact(addr)


def test_parse_tcp_address() -> None:
    assert parse_tcp_address("tcp://10.0.0.1:7500") == ("10.0.0.1", 7500)
    assert parse_tcp_address("tcp://*:7500", bindable=True) == ("*", 7500)
    with pytest.raises(SettingsError):
        parse_tcp_address("tcp://*:7500")


def test_default_data_dir_honours_env(tmp_path: Path) -> None:
    assert default_data_dir({"LOAM_DATA_DIR": str(tmp_path)}) == tmp_path
    assert default_data_dir({}) == Path.home() / ".local" / "share" / "loam"
