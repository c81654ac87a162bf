"""The one settings loader: shipped defaults, loam.toml, LOAM_* variables and flags into Settings."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from zmq.utils import z85

from protocol.errors import SettingsError

__all__ = [
    "Settings",
    "NodeSettings",
    "IdentitySettings",
    "NetSettings",
    "ApiSettings",
    "ActorSettings",
    "ProviderSettings",
    "MetricsSettings",
    "load_settings",
    "payment_networks",
    "parse_contact",
    "parse_tcp_address",
    "default_data_dir",
    "DEFAULTS_PATH",
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "LOG_LEVELS",
]

DEFAULTS_PATH = Path(__file__).resolve().parents[1] / "config" / "node.toml"
NETWORKS_PATH = DEFAULTS_PATH.parent / "networks.toml"
CONFIG_FILE_NAME = "loam.toml"
ENV_PREFIX = "LOAM_"
LOG_LEVELS = ("debug", "info", "warning", "error")
CURVE_KEY_BYTES = 32

_COMMAND_LINE = "command line"
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$")
_SUBNET_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ACCOUNT_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Hosts one can bind to but never dial.
_UNDIALABLE_HOSTS = frozenset({"0.0.0.0", "[::]", "*"})


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """[node]: name, market subnet and logging."""

    name: str
    subnet: str
    log_level: str
    log_json: bool


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """[identity]: which key the node runs as and where its password is."""

    alias: str
    password_file: str


@dataclass(frozen=True, slots=True)
class NetSettings:
    """[net]: overlay addresses, view sizes, timers and abuse limits."""

    listen: str
    advertise: tuple[str, ...]
    bootstrap: tuple[str, ...]
    target_neighbours: int
    max_neighbours: int
    passive_max: int
    heartbeat_s: float
    dead_after_s: float
    handshake_timeout_s: float
    direct_idle_s: float
    anti_entropy_s: float
    max_message_bytes: int
    clock_skew_s: float
    peer_rate_msgs_per_s: float
    peer_rate_burst: int
    gossip_rate_items_per_s: float
    gossip_rate_burst: int
    max_gossip_items: int
    max_items_per_origin: int
    max_item_bytes: int
    max_item_ttl_s: float
    route_ttl: int


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """[api]: whether and where the local REST API listens."""

    enabled: bool
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ActorSettings:
    """[actors]: timeouts shared by every actor."""

    ask_timeout_s: float
    health_interval_s: float


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """[provider]: whether this node sells compute, what it offers and its negotiation rules."""

    enabled: bool
    runtime: str
    runtime_version: str
    cores: int
    memory_gib: float
    storage_gib: float
    start_fee: float
    env_per_hour: float
    cpu_per_hour: float
    payment_driver: str
    payment_network: str
    max_agreements: int
    min_expiration_s: float
    max_expiration_s: float
    offer_ttl_s: float
    max_run_s: float
    account: str
    debit_note_interval_s: float
    debit_note_accept_timeout_s: float
    payment_timeout_s: float
    allow_requestors: tuple[str, ...]
    block_requestors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """[metrics]: the Prometheus endpoint."""

    enabled: bool
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    """[payment]: the ledger and the ERC-20 driver: networks, batching cycle, fees, tolerance."""

    enabled: bool
    network: str
    networks_file: str
    batch_interval_s: float
    batch_min: int
    batch_max: int
    max_fee_gwei: float
    stuck_after_s: float
    resend_s: float
    allocation_timeout_s: float
    tolerance_percent: float
    invoice_wait_s: float
    chain_timeout_s: float


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node is configured with, checked once at load and passed down explicitly."""

    data_dir: Path
    node: NodeSettings
    identity: IdentitySettings
    net: NetSettings
    api: ApiSettings
    actors: ActorSettings
    provider: ProviderSettings
    metrics: MetricsSettings
    payment: PaymentSettings
    # The command-line layer the settings were loaded with, so a running node can reload
    # its files without losing its flags (dotted key, value).
    overrides: tuple[tuple[str, Any], ...] = ()


_SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "identity": IdentitySettings,
    "net": NetSettings,
    "api": ApiSettings,
    "actors": ActorSettings,
    "provider": ProviderSettings,
    "metrics": MetricsSettings,
    "payment": PaymentSettings,
}
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    name: typing.get_type_hints(cls) for name, cls in _SECTIONS.items()
}


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory: $LOAM_DATA_DIR, else ~/.local/share/loam."""
    env = os.environ if environ is None else environ
    value = env.get("LOAM_DATA_DIR", "")
    if value:
        return Path(value).expanduser()
    return Path.home() / ".local" / "share" / "loam"


def parse_tcp_address(addr: str, *, what: str = "address", bindable: bool = False) -> tuple[str, int]:
    """Split "tcp://HOST:PORT" into (host, port).

    bindable allows wildcard hosts (0.0.0.0, [::], *) that can be listened on but not dialled.

    Raises:
        SettingsError: not of the form tcp://HOST:PORT, or the port is out of range.
    """
    if not isinstance(addr, str) or not addr.startswith("tcp://"):
        raise SettingsError(f"{what} {addr!r} must look like tcp://HOST:PORT")
    host, port, problem = _split_host_port(addr[len("tcp://"):], bindable=bindable)
    if problem:
        raise SettingsError(f"{what} {addr!r} {problem}")
    return host, port


def _split_host_port(hostport: str, *, bindable: bool) -> tuple[str, int, str]:
    """(host, port, "") or ("", 0, what is wrong)."""
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not host:
        return "", 0, "must look like tcp://HOST:PORT"
    if not (_HOST_RE.match(host) or (bindable and host == "*")):
        return "", 0, f"has an invalid host {host!r}"
    if not bindable and host in _UNDIALABLE_HOSTS:
        return "", 0, (
            f"cannot be dialled: {host} only makes sense for listening; give an address other nodes can reach"
        )
    # Port 0 (any free port) makes sense only for listening.
    if not port_text.isdigit() or not (0 if bindable else 1) <= int(port_text) <= 65535:
        return "", 0, f"has port {port_text!r}; a port is {'0' if bindable else '1'}-65535"
    return host, int(port_text), ""


def parse_contact(addr: str) -> tuple[bytes, str]:
    """Split a contact address "loam://<curve key hex>@host:port" into (Z85 key bytes, "tcp://host:port").

    The key is the peer's CURVE public key as 64 hex digits (hex, so the address needs no
    quoting in a shell).

    >>> key, endpoint = parse_contact("loam://" + "ab" * 32 + "@10.0.0.1:7500")
    >>> endpoint
    'tcp://10.0.0.1:7500'

    Raises:
        SettingsError: the address is not a contact address; the message says how to get one.
    """
    how = "run `loam net status` on that node: it prints the node's contact address"
    if not isinstance(addr, str):
        raise SettingsError(f"a contact address is a string like loam://<curve key>@host:port, not {addr!r}")
    if addr.startswith("tcp://"):
        raise SettingsError(
            f"{addr!r} is a plain network address, but joining through a node needs its CURVE "
            f"public key too, as loam://<curve key>@host:port; {how}"
        )
    if not addr.startswith("loam://"):
        raise SettingsError(f"{addr!r} is not a contact address loam://<curve key>@host:port; {how}")
    key_text, at, hostport = addr[len("loam://"):].partition("@")
    try:
        raw = bytes.fromhex(key_text)
    except ValueError:
        raw = b""
    if not at or len(raw) != CURVE_KEY_BYTES:
        raise SettingsError(
            f"{addr!r} does not start with a CURVE key of {2 * CURVE_KEY_BYTES} hex digits followed by '@'; {how}"
        )
    _, _, problem = _split_host_port(hostport, bindable=False)
    if problem:
        raise SettingsError(f"contact address {addr!r} {problem.replace('tcp://', 'loam://<key>@')}")
    return z85.encode(raw), "tcp://" + hostport


# A layer maps (section, key) to (value, where the value came from).
_Layer = dict[tuple[str, str], tuple[Any, str]]


def load_settings(
    data_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and check the node's settings, lowest layer first:

    config/node.toml, then <data_dir>/loam.toml, then LOAM_<SECTION>__<KEY> variables,
    then overrides (dotted keys such as "net.listen"; a None value means "not given").

    >>> s = load_settings(Path("no-such-dir"), {"net.target_neighbours": 2})
    >>> s.net.target_neighbours
    2

    Raises:
        SettingsError: a file that does not parse, an unknown section or key, a value of the
            wrong type or out of range; the message names the key and where the value came from.
    """
    data_dir = Path(data_dir).expanduser()
    env = os.environ if environ is None else environ
    merged: _Layer = {}
    merged.update(_file_layer(DEFAULTS_PATH, required=True))
    merged.update(_file_layer(data_dir / CONFIG_FILE_NAME, required=False))
    merged.update(_env_layer(env))
    merged.update(_overrides_layer(overrides or {}))

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if (section, f.name) not in merged:
                raise SettingsError(f"{section}.{f.name} has no value (the shipped {DEFAULTS_PATH} is incomplete)")
            value, source = merged[(section, f.name)]
            values[f.name] = _check_type(section, f.name, value, source)
        sections[section] = values
    _check_values(sections, merged)
    networks = payment_networks(data_dir, sections.get("payment", {}).get("networks_file", ""))
    if sections["provider"]["payment_network"] not in networks:
        network, source = merged[("provider", "payment_network")]
        raise SettingsError(
            f"provider.payment_network (from {source}) = {network!r} is not a known payment network "
            f"(known: {', '.join(networks)})"
        )
    kept = tuple((k, v) for k, v in (overrides or {}).items() if v is not None)
    return Settings(data_dir=data_dir, overrides=kept, **{s: _SECTIONS[s](**v) for s, v in sections.items()})


def payment_networks(data_dir: Path | None = None, networks_file: str = "") -> tuple[str, ...]:
    """The names of the payment networks: config/networks.toml, and the node's own networks file
    (networks_file, relative to the data dir; else <data dir>/networks.toml when it exists).

    Raises:
        SettingsError: the shipped file is missing, or a networks file is not TOML.
    """
    paths = [NETWORKS_PATH]
    if data_dir is not None:
        extra = Path(data_dir) / (networks_file or "networks.toml")
        if networks_file or extra.exists():
            paths.append(extra)
    names: list[str] = []
    for path in paths:
        try:
            with path.open("rb") as fh:
                table = tomllib.load(fh).get("networks", {})
        except FileNotFoundError:
            continue  # the payment settings report a missing networks_file themselves
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"the payment networks {path} cannot be read: {exc}") from None
        if isinstance(table, dict):
            names += [n for n in table if n not in names]
    return tuple(names)


def _unknown_key_error(section: str, key: str | None, source: str) -> SettingsError:
    if key is None:
        return SettingsError(
            f"unknown section [{section}] in {source}; known sections: {', '.join(_SECTIONS)}"
        )
    return SettingsError(
        f"unknown key {section}.{key} in {source}; keys of [{section}]: {', '.join(_FIELD_TYPES[section])}"
    )


def _file_layer(path: Path, *, required: bool) -> _Layer:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"the shipped defaults {path} are missing") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path} cannot be read: {exc}") from None
    source = str(path)
    layer: _Layer = {}
    for section, table in data.items():
        if section not in _SECTIONS:
            raise _unknown_key_error(section, None, source)
        if not isinstance(table, dict):
            raise SettingsError(f"{section} in {source} must be a table [{section}], not a value")
        for key, value in table.items():
            if key not in _FIELD_TYPES[section]:
                raise _unknown_key_error(section, key, source)
            layer[(section, key)] = (value, source)
    return layer


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for name, raw in env.items():
        # Only LOAM_<SECTION>__<KEY> names are settings; LOAM_DATA_DIR, LOAM_PASSWORD and
        # the like have no double underscore.
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        source = f"environment variable {name}"
        if section not in _SECTIONS:
            raise _unknown_key_error(section, None, source)
        if key not in _FIELD_TYPES[section]:
            raise _unknown_key_error(section, key, source)
        layer[(section, key)] = (_parse_env_value(raw, _FIELD_TYPES[section][key]), source)
    return layer


def _parse_env_value(raw: str, field_type: Any) -> Any:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    # A string setting takes the text as it is unless it was quoted: LOAM_NODE__NAME=42 is "42".
    if field_type is str and not isinstance(value, str):
        return raw
    return value


def _overrides_layer(overrides: Mapping[str, Any]) -> _Layer:
    layer: _Layer = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, dot, key = dotted.partition(".")
        if not dot:
            raise SettingsError(f"override {dotted!r} must be a dotted key such as net.listen")
        if section not in _SECTIONS:
            raise _unknown_key_error(section, None, _COMMAND_LINE)
        if key not in _FIELD_TYPES[section]:
            raise _unknown_key_error(section, key, _COMMAND_LINE)
        layer[(section, key)] = (value, _COMMAND_LINE)
    return layer


def _check_type(section: str, key: str, value: Any, source: str) -> Any:
    expected = _FIELD_TYPES[section][key]
    where = f"{section}.{key} (from {source})"
    if expected is bool:
        if type(value) is not bool:
            raise SettingsError(f"{where} must be true or false, not {value!r}")
        return value
    if expected is int:
        if type(value) is not int:
            raise SettingsError(f"{where} must be an integer, not {value!r}")
        return value
    if expected is float:
        if type(value) not in (int, float):
            raise SettingsError(f"{where} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise SettingsError(f"{where} must be a finite number, not {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, not {value!r}")
        return value
    if expected == tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    raise TypeError(f"no type check for {section}.{key} of type {expected!r}")


def _check_values(sections: dict[str, dict[str, Any]], merged: _Layer) -> None:
    def where(section: str, key: str) -> str:
        return f"{section}.{key} (from {merged[(section, key)][1]})"

    def fail(section: str, key: str, what: str) -> typing.NoReturn:
        value = sections[section][key]
        raise SettingsError(f"{where(section, key)} = {value!r} {what}")

    def wrap(section: str, key: str, exc: SettingsError) -> SettingsError:
        return SettingsError(f"{where(section, key)}: {exc}")

    node, net, api = sections["node"], sections["net"], sections["api"]

    if not _SUBNET_RE.match(node["subnet"]):
        fail("node", "subnet", "must be 1-64 letters, digits, '.', '_' or '-'")
    level = node["log_level"].lower()
    if level not in LOG_LEVELS:
        fail("node", "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    node["log_level"] = level

    if net["listen"] != "none":
        try:
            parse_tcp_address(net["listen"], what="listen address", bindable=True)
        except SettingsError as exc:
            raise wrap("net", "listen", SettingsError(f'{exc} (or "none" to only dial out)')) from None
    for addr in net["advertise"]:
        try:
            parse_tcp_address(addr, what="advertised address")
        except SettingsError as exc:
            raise wrap("net", "advertise", exc) from None
    for addr in net["bootstrap"]:
        try:
            parse_contact(addr)
        except SettingsError as exc:
            raise wrap("net", "bootstrap", exc) from None

    for section_name, values in sections.items():
        for key, value in values.items():
            if key.endswith("_s") and not key.endswith("_per_s") and value <= 0:
                fail(section_name, key, "must be a positive duration in seconds")
    for key in (
        "target_neighbours", "max_neighbours", "passive_max", "max_message_bytes",
        "peer_rate_burst", "gossip_rate_burst", "max_gossip_items", "max_items_per_origin",
        "max_item_bytes", "route_ttl",
    ):
        if net[key] < 1:
            fail("net", key, "must be at least 1")
    for key in ("peer_rate_msgs_per_s", "gossip_rate_items_per_s"):
        if net[key] <= 0:
            fail("net", key, "must be a positive rate")
    if net["target_neighbours"] > net["max_neighbours"]:
        fail("net", "target_neighbours", f"is above {where('net', 'max_neighbours')} = {net['max_neighbours']}")
    if net["dead_after_s"] <= net["heartbeat_s"]:
        fail("net", "dead_after_s", f"must be longer than {where('net', 'heartbeat_s')} = {net['heartbeat_s']}")
    if net["max_item_bytes"] > net["max_message_bytes"]:
        fail("net", "max_item_bytes", f"is above {where('net', 'max_message_bytes')} = {net['max_message_bytes']}")
    if net["max_items_per_origin"] > net["max_gossip_items"]:
        fail(
            "net", "max_items_per_origin",
            f"is above {where('net', 'max_gossip_items')} = {net['max_gossip_items']}",
        )

    provider = sections["provider"]
    if provider["runtime"] not in ("wasmtime", "vm"):
        fail("provider", "runtime", "must be wasmtime or vm")
    for key in ("cores", "max_agreements"):
        if provider[key] < 1:
            fail("provider", key, "must be at least 1")
    for key in ("memory_gib", "storage_gib"):
        if provider[key] <= 0:
            fail("provider", key, "must be positive")
    for key in ("start_fee", "env_per_hour", "cpu_per_hour"):
        if provider[key] < 0 or provider[key] != provider[key]:
            fail("provider", key, "must be a price of 0 or more")
    if provider["min_expiration_s"] > provider["max_expiration_s"]:
        fail("provider", "min_expiration_s", f"is above {where('provider', 'max_expiration_s')}")
    if not _SUBNET_RE.match(provider["payment_network"]) or not _SUBNET_RE.match(provider["payment_driver"]):
        fail("provider", "payment_network", "must be a network name such as holesky or polygon")
    if provider["account"] and not _ACCOUNT_RE.match(provider["account"]):
        fail("provider", "account", "must be an address 0x followed by 40 hex digits, or \"\" for the node's own")
    # Golem's bounds: a debit note every 1 s to 24 h, accepted within at least 5 s.
    if not 1.0 <= provider["debit_note_interval_s"] <= 86400.0:
        fail("provider", "debit_note_interval_s", "must be between 1 and 86400 seconds")
    if provider["debit_note_accept_timeout_s"] < 5.0:
        fail("provider", "debit_note_accept_timeout_s", "must be at least 5 seconds")
    for key in ("allow_requestors", "block_requestors"):
        for node_id in provider[key]:
            if not _ACCOUNT_RE.match(node_id):
                fail("provider", key, f"holds {node_id!r}, which is not a node id (0x followed by 40 hex digits)")
        provider[key] = tuple(n.lower() for n in provider[key])

    metrics = sections["metrics"]
    if not metrics["host"]:
        fail("metrics", "host", "must name a host to listen on")
    if not 0 <= metrics["port"] <= 65535:
        fail("metrics", "port", "is not a port; a port is 0-65535 (0 = any free port)")

    payment = sections["payment"]
    if not _SUBNET_RE.match(payment["network"]):
        fail("payment", "network", "must be a network name such as holesky or polygon")
    if not 1 <= payment["batch_min"] <= payment["batch_max"] <= 500:
        fail("payment", "batch_min", f"must be at least 1 and at most {where('payment', 'batch_max')} (at most 500)")
    if payment["max_fee_gwei"] <= 0:
        fail("payment", "max_fee_gwei", "must be a positive gas price in gwei")
    if not 0 <= payment["tolerance_percent"] <= 100:
        fail("payment", "tolerance_percent", "must be a percentage 0-100")

    if not api["host"]:
        fail("api", "host", "must name a host to listen on")
    if not 0 <= api["port"] <= 65535:
        fail("api", "port", "is not a port; a port is 0-65535 (0 = any free port, named in node.json)")
