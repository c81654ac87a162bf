"""The `loam` command line: identities, running a node, and asking a running node about the network."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click
from rich import box
from rich.console import Console
from rich.table import Table

from node.keystore import (
    PASSWORD_ENV,
    IdentityInfo,
    KeyStore,
    parse_private_key,
    read_password,
    read_password_file,
)
from node.settings import default_data_dir, load_settings
from node.storage import db_path, ensure_data_dir, open_database
from protocol.errors import ControlError, IdentityError, NodeError

if TYPE_CHECKING:
    from protocol.control import NetStatus

__all__ = ["main", "cli", "open_keystore", "ERROR_EXIT_CODE"]

# Usage errors exit with 2 in click too: either way the command was not carried out.
ERROR_EXIT_CODE = 2


def _version() -> str:
    try:
        return metadata.version("loam")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class _LoamGroup(click.Group):
    """A click group that reports our own errors as one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NodeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(ERROR_EXIT_CODE)


def _data_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="LOAM_DATA_DIR",
        default=lambda: str(default_data_dir()),
        show_default="$LOAM_DATA_DIR or ~/.local/share/loam",
        help="Where the node keeps its keys, database and loam.toml.",
    )(func)


@contextmanager
def open_keystore(data_dir: Path) -> Iterator[KeyStore]:
    """The keystore of a data directory, creating the directory (0700) and database as needed.

    Raises:
        StorageError: the directory or database cannot be created, opened or migrated.
    """
    data_dir = ensure_data_dir(data_dir)
    conn = open_database(db_path(data_dir))
    try:
        yield KeyStore(data_dir, conn)
    finally:
        conn.close()


def _console() -> Console:
    # No markup: Z85 keys in contact addresses contain '[' and ']'.
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        # Piped output: no colour codes, and wide enough that addresses are never cut.
        console = Console(highlight=False, markup=False, no_color=True, width=max(console.width, 200))
    return console


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def _identity_json(info: IdentityInfo) -> dict[str, Any]:
    return {
        "address": info.address,
        "alias": info.alias,
        "default": info.is_default,
        "encrypted": info.encrypted,
        "created": _iso_ms(info.created_ms),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _password_for_new_key(no_password: bool, password_file: Path | None, *, can_prompt: bool = True) -> str | None:
    if no_password and password_file is not None:
        raise click.UsageError("--no-password and --password-file contradict each other")
    if no_password:
        return None
    if password_file is not None:
        password = read_password_file(password_file)
        source = f"password file {password_file}"
    elif os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    elif can_prompt:
        return click.prompt("Password for the new key", hide_input=True, confirmation_prompt=True, err=True)
    else:
        raise IdentityError(
            f"the key was read from stdin, so there is no way to ask for a password; "
            f"use --password-file, ${PASSWORD_ENV} or --no-password"
        )
    if password == "":
        raise IdentityError(f"{source} is empty; use --no-password to store the key unencrypted")
    return password


@click.group(name="loam", cls=_LoamGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="loam")
def cli() -> None:
    """Loam: a peer-to-peer compute marketplace node."""


# -- loam id ------------------------------------------------------------------------------


@cli.group("id", cls=_LoamGroup)
def id_group() -> None:
    """Create, import and inspect node identities."""


@id_group.command("create")
@_data_dir_option
@click.option("--alias", help="A name for the identity, usable instead of its address.")
@click.option("--no-password", is_flag=True, help="Store the key unencrypted (testnets only).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Read the password from this file instead of asking (${PASSWORD_ENV} works too).",
)
def id_create(data_dir: Path, alias: str | None, no_password: bool, password_file: Path | None) -> None:
    """Make a new identity and print its address."""
    with open_keystore(data_dir) as store:
        store.check_alias(alias)  # before asking for a password that would go to waste
        password = _password_for_new_key(no_password, password_file)
        info = store.create(alias=alias, password=password)
    if password is None:
        click.echo("warning: the key is stored unencrypted", err=True)
    click.echo(info.address)


@id_group.command("import")
@_data_dir_option
@click.option("--alias", help="A name for the identity, usable instead of its address.")
@click.option(
    "--private-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the hex private key (0x optional); without it the key is read from stdin.",
)
@click.option("--no-password", is_flag=True, help="Store the key unencrypted (testnets only).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Read the password from this file instead of asking (${PASSWORD_ENV} works too).",
)
def id_import(
    data_dir: Path, alias: str | None, private_key_file: Path | None, no_password: bool, password_file: Path | None
) -> None:
    """Add an existing private key as an identity and print its address."""
    can_prompt = True
    if private_key_file is not None:
        try:
            key_text = private_key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"cannot read private key file {private_key_file}: {exc}") from None
    else:
        stdin = sys.stdin
        if stdin.isatty():
            key_text = click.prompt("Private key (hex)", hide_input=True, err=True)
        else:
            key_text = stdin.read()
            can_prompt = False
    private_key = parse_private_key(key_text)
    with open_keystore(data_dir) as store:
        store.check_alias(alias)
        password = _password_for_new_key(no_password, password_file, can_prompt=can_prompt)
        info = store.import_key(private_key, alias=alias, password=password)
    if password is None:
        click.echo("warning: the key is stored unencrypted", err=True)
    click.echo(info.address)


@id_group.command("list")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def id_list(data_dir: Path, as_json: bool) -> None:
    """List the identities of this data directory."""
    with open_keystore(data_dir) as store:
        infos = store.list()
    if as_json:
        click.echo(json.dumps([_identity_json(i) for i in infos], indent=2))
        return
    if not infos:
        click.echo("no identities yet; create one with `loam id create`")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("alias")
    table.add_column("address", no_wrap=True)
    table.add_column("default")
    table.add_column("encrypted")
    for info in infos:
        table.add_row(info.alias or "", info.address, "yes" if info.is_default else "", "yes" if info.encrypted else "no")
    _console().print(table)


@id_group.command("show")
@_data_dir_option
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def id_show(data_dir: Path, name: str | None, as_json: bool) -> None:
    """Show one identity (the default one without NAME), by alias or address.

    The CURVE public key is shown when the key can be unlocked: it is unencrypted, or a
    password is in $LOAM_PASSWORD or identity.password_file.
    """
    with open_keystore(data_dir) as store:
        info = store.get(name)
        password = None
        if info.encrypted:
            password = read_password(load_settings(data_dir))
        curve_key = None
        if not info.encrypted or password is not None:
            curve_key = store.unlock(info, password).curve_public.decode("ascii")
    data = _identity_json(info)
    if curve_key is not None:
        data["curve_key"] = curve_key
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        click.echo(f"{key + ':':<11}{'' if value is None else value}")


# -- loam node ----------------------------------------------------------------------------


@cli.group("node", cls=_LoamGroup)
def node_group() -> None:
    """Run the node."""


@node_group.command("run")
@_data_dir_option
@click.option("--listen", help='Address to listen on, tcp://HOST:PORT, or "none" to only dial out.')
@click.option("--advertise", multiple=True, help="Address other nodes should dial (repeatable).")
@click.option("--bootstrap", multiple=True, help="Contact address loam://<key>@host:port to join through (repeatable).")
@click.option("--subnet", help="Market partition to join.")
@click.option("--name", help="Human-readable node name.")
@click.option("--api-port", type=int, help="Port of the local REST API.")
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of console text.")
@click.option("--log-level", help="debug, info, warning or error.")
def node_run(
    data_dir: Path,
    listen: str | None,
    advertise: tuple[str, ...],
    bootstrap: tuple[str, ...],
    subnet: str | None,
    name: str | None,
    api_port: int | None,
    log_json: bool,
    log_level: str | None,
) -> None:
    """Run a node in the foreground until interrupted."""
    overrides: dict[str, Any] = {
        "net.listen": listen,
        "net.advertise": list(advertise) if advertise else None,
        "net.bootstrap": list(bootstrap) if bootstrap else None,
        "node.subnet": subnet,
        "node.name": name,
        "api.port": api_port,
        "node.log_json": True if log_json else None,
        "node.log_level": log_level,
    }
    settings = load_settings(ensure_data_dir(data_dir), overrides)
    from node.logging import configure_logging

    configure_logging(settings.node.log_level, settings.node.log_json)
    # Imported here so that `loam id ...` does not load the whole node.
    from node.daemon import run_node

    sys.exit(run_node(settings))


# -- loam net -----------------------------------------------------------------------------


@cli.group("net", cls=_LoamGroup)
def net_group() -> None:
    """Ask a running node about the overlay network."""


@net_group.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as a JSON object.")
def net_status(data_dir: Path, as_json: bool) -> None:
    """Show the running node's id, addresses, contact address and neighbours."""
    from node.control import ControlClient
    from protocol.codec import to_wire
    from protocol.control import ControlFailed, NetStatus, NetStatusRequest

    reply = ControlClient(data_dir).call(NetStatusRequest(), timeout_s=5.0)
    if isinstance(reply, ControlFailed):
        raise ControlError(f"the node could not report its status: {reply.error}: {reply.message}")
    if not isinstance(reply, NetStatus):
        raise ControlError(f"the node answered a status request with {type(reply).__name__}")
    if as_json:
        click.echo(json.dumps(_jsonable(to_wire(reply)), indent=2))
        return
    _print_net_status(reply)


def _print_net_status(status: NetStatus) -> None:
    console = _console()
    rows = [
        ("node id", status.node_id),
        ("name", status.name),
        ("subnets", ", ".join(status.subnets)),
        ("listen", status.listen),
        ("addresses", ", ".join(status.addresses) or "(none: dials out only)"),
        ("contact", status.contact),
        ("known peers", str(status.known_peers)),
        ("gossip items", str(status.gossip_items)),
        ("uptime", _format_duration(status.uptime_s)),
    ]
    for label, value in rows:
        console.print(f"{label + ':':<14}{value}", soft_wrap=True)
    console.print()
    if not status.neighbours:
        console.print("no links")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"links ({len(status.neighbours)})", title_justify="left")
    table.add_column("node id", no_wrap=True)
    table.add_column("role")
    table.add_column("dir")
    table.add_column("address", no_wrap=True)
    table.add_column("subnets")
    table.add_column("age", justify="right")
    table.add_column("idle", justify="right")
    for n in status.neighbours:
        table.add_row(
            n.node_id,
            n.role,
            "out" if n.outbound else "in",
            n.address,
            ", ".join(n.subnets),
            _format_duration(n.age_s),
            _format_duration(n.idle_s),
        )
    console.print(table)


@net_group.command("counters")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def net_counters(data_dir: Path, as_json: bool) -> None:
    """Show the node's network counters: frames, rejected input by reason, gossip, routing."""
    from protocol.control import NetCounters, NetCountersRequest

    reply = _call(data_dir, NetCountersRequest(), NetCounters)
    if as_json:
        click.echo(json.dumps(reply.counters, indent=2, sort_keys=True))
        return
    for name in sorted(reply.counters):
        click.echo(f"{name:<40}{reply.counters[name]:>12}")


def _call(data_dir: Path, request: Any, expect: type, timeout_s: float = 10.0) -> Any:
    """Send a control request to the node and check the answer's type."""
    from node.control import ControlClient

    reply = ControlClient(data_dir).call(request, timeout_s=timeout_s)
    if not isinstance(reply, expect):
        raise ControlError(f"the node answered {request.TYPE} with {type(reply).__name__}")
    return reply


# -- loam debug ---------------------------------------------------------------------------


@cli.group("debug", cls=_LoamGroup)
def debug_group() -> None:
    """Try the overlay by hand: publish gossip items, send notes between nodes."""


@debug_group.command("publish")
@_data_dir_option
@click.option("--topic", default="demo", show_default=True, help="Gossip topic.")
@click.option("--text", required=True, help="The item's payload, as text.")
@click.option("--ttl", "ttl_s", type=float, default=300.0, show_default=True, help="Lifetime in seconds.")
def debug_publish(data_dir: Path, topic: str, text: str, ttl_s: float) -> None:
    """Publish a gossip item from the node; prints its id."""
    from protocol.control import GossipPublished, GossipPublishRequest

    reply = _call(data_dir, GossipPublishRequest(topic, text.encode(), ttl_s, ""), GossipPublished)
    click.echo(reply.item_id)


@debug_group.command("withdraw")
@_data_dir_option
@click.argument("item_id")
def debug_withdraw(data_dir: Path, item_id: str) -> None:
    """Withdraw a gossip item the node published."""
    from protocol.control import GossipPublished, GossipWithdrawRequest

    _call(data_dir, GossipWithdrawRequest(item_id), GossipPublished)
    click.echo(f"withdrawn {item_id}")


@debug_group.command("items")
@_data_dir_option
@click.option("--topic", default="", help="Only this topic (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def debug_items(data_dir: Path, topic: str, as_json: bool) -> None:
    """List the live gossip items the node knows."""
    from protocol.codec import to_wire
    from protocol.control import GossipList, GossipListRequest

    reply = _call(data_dir, GossipListRequest(topic), GossipList)
    if as_json:
        rows = []
        for entry in reply.entries:
            row = to_wire(entry)
            row["payload"] = entry.payload.decode("utf-8", "replace")
            rows.append(row)
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("item id", "topic", "origin", "received", "payload"):
        table.add_column(column, no_wrap=column != "payload")
    for entry in reply.entries:
        table.add_row(
            entry.item_id[:16],
            entry.topic,
            entry.origin,
            _iso_ms(entry.received_ms),
            entry.payload[:60].decode("utf-8", "replace"),
        )
    _console().print(table)


@debug_group.command("send")
@_data_dir_option
@click.option("--to", "recipient", required=True, help="Node id of the recipient.")
@click.option("--text", required=True, help="What to send.")
def debug_send(data_dir: Path, recipient: str, text: str) -> None:
    """Send a text note to another node (directly, or forwarded through the overlay)."""
    from protocol.control import DirectSendRequest, DirectSent

    reply = _call(data_dir, DirectSendRequest(recipient, text), DirectSent)
    click.echo(f"sent ({reply.path})")


@debug_group.command("inbox")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def debug_inbox(data_dir: Path, as_json: bool) -> None:
    """Show the text notes the node received."""
    from protocol.codec import to_wire
    from protocol.control import Inbox, InboxRequest

    reply = _call(data_dir, InboxRequest(), Inbox)
    if as_json:
        click.echo(json.dumps([to_wire(e) for e in reply.entries], indent=2))
        return
    for entry in reply.entries:
        click.echo(f"{_iso_ms(entry.received_ms)}  {entry.sender}  {entry.text}")


# -- loam market --------------------------------------------------------------------------


class MarketDocumentError(NodeError):
    """A demand or offer file that cannot be read, or is not a Golem market document."""


@cli.group("market", cls=_LoamGroup)
def market_group() -> None:
    """Work with demands and offers offline."""


@market_group.command("explain")
@click.option(
    "--demand",
    "demand_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='The demand: a JSON object {"properties": {...}, "constraints": "..."}.',
)
@click.option(
    "--offer",
    "offer_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='The offer: a JSON object {"properties": {...}, "constraints": "..."}.',
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def market_explain(demand_path: Path, offer_path: Path, as_json: bool) -> None:
    """Say whether a demand and an offer match and, if not, which clauses fail and why.

    Each file holds what Golem's REST API takes: "properties" (nested or flat JSON) and
    "constraints" (a filter string; an empty string means no constraints). Matching is
    two-way: the demand's constraints are evaluated on the offer's properties, the
    offer's constraints on the demand's. Only TRUE on both sides is a match; a clause
    on an absent property is "undefined".

    \b
    Exit status: 0 when they match, 1 when they do not,
    2 when a file is missing or malformed.
    """
    from protocol.constraint_analysis import explain, match

    demand_props, demand_constraint = _read_market_document(demand_path, "demand")
    offer_props, offer_constraint = _read_market_document(offer_path, "offer")
    result = match(demand_props, demand_constraint, offer_props, offer_constraint)
    failing = [("demand", f) for f in explain(demand_constraint, offer_props)]
    failing += [("offer", f) for f in explain(offer_constraint, demand_props)]
    if as_json:
        report = {
            "match": result.matched,
            "demand_side": result.demand_side.value,
            "offer_side": result.offer_side.value,
            "failing": [
                {
                    "side": side,
                    "clause": f.clause,
                    "result": f.result.value,
                    "property": f.property,
                    "value": f.value,
                    "why": f.why,
                }
                for side, f in failing
            ],
        }
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        click.echo(f"match: {'yes' if result.matched else 'no'}")
        click.echo(f"demand side: {result.demand_side.value:<9}  (the demand's constraints on the offer's properties)")
        click.echo(f"offer side:  {result.offer_side.value:<9}  (the offer's constraints on the demand's properties)")
        for side in ("demand", "offer"):
            rows = [f for s, f in failing if s == side]
            if rows:
                click.echo(f"\nfailing on the {side} side:")
            for f in rows:
                click.echo(f"  {f.clause}")
                click.echo(f"      {f.result.value}: {f.why}")
    if not result.matched:
        sys.exit(1)


def _read_market_document(path: Path, side: str) -> tuple[dict[str, Any], Any]:
    """The flat properties and parsed constraints of a demand or offer file.

    Raises:
        MarketDocumentError: the file is missing, unreadable, not JSON, or lacks a key;
            its properties do not flatten; its constraints do not parse.
    """
    from protocol.constraints import Empty, parse
    from protocol.errors import ConstraintSyntaxError, PropertyError
    from protocol.properties import flatten

    what = f"{side} file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MarketDocumentError(f"{what} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MarketDocumentError(f"cannot read {what}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MarketDocumentError(f"{what} is not valid JSON: {exc.msg} at {exc.lineno}:{exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise MarketDocumentError(f"{what} is not usable JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MarketDocumentError(f'{what} must hold a JSON object with "properties" and "constraints"')
    missing = [key for key in ("properties", "constraints") if key not in doc]
    if missing:
        raise MarketDocumentError(f"{what} has no {' and no '.join(repr(k) for k in missing)} key")
    if not isinstance(doc["constraints"], str):
        raise MarketDocumentError(f'{what}: "constraints" must be a string, not {type(doc["constraints"]).__name__}')
    try:
        props = flatten(doc["properties"])
    except PropertyError as exc:
        raise MarketDocumentError(f"{what}: properties: {exc}") from None
    if doc["constraints"].strip() == "":
        return props, Empty()
    try:
        constraint = parse(doc["constraints"])
    except ConstraintSyntaxError as exc:
        raise MarketDocumentError(f"{what}: constraints {exc}") from None
    return props, constraint


def _market_call(data_dir: Path, method: str, **args: Any) -> Any:
    from protocol.control import ControlCall, ControlResult

    return _call(data_dir, ControlCall("market", method, args), ControlResult).value


@market_group.command("offers")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def market_offers(data_dir: Path, as_json: bool) -> None:
    """List the offers of other nodes that the running node has heard."""
    offers = _market_call(data_dir, "known_offers")
    if as_json:
        click.echo(json.dumps(_jsonable(offers), indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"offers heard ({len(offers)})", title_justify="left")
    for column in ("offer id", "provider", "name", "runtime", "threads", "mem GiB", "coeffs", "expires"):
        table.add_column(column, no_wrap=True)
    for offer in sorted(offers, key=lambda o: o["created_ms"]):
        props = offer["properties"]
        table.add_row(
            offer["offer_id"][:12],
            offer["provider_id"],
            str(props.get("golem.node.id.name", "")),
            str(props.get("golem.runtime.name", "")),
            str(props.get("golem.inf.cpu.threads", "")),
            str(props.get("golem.inf.mem.gib", "")),
            ", ".join(f"{c:.6g}" for c in props.get("golem.com.pricing.model.linear.coeffs", [])),
            _iso_ms(offer["expires_ms"]),
        )
    _console().print(table)


@market_group.command("agreements")
@_data_dir_option
@click.option("--state", help="Only agreements in this state (Approved, Terminated, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def market_agreements(data_dir: Path, state: str | None, as_json: bool) -> None:
    """List the agreements the running node is party to."""
    records = _market_call(data_dir, "list_agreements", state=state)
    if as_json:
        click.echo(json.dumps(_jsonable(records), indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"agreements ({len(records)})", title_justify="left")
    for column in ("agreement id", "role", "state", "peer", "valid to", "updated"):
        table.add_column(column, no_wrap=True)
    for rec in sorted(records, key=lambda r: r["updated_ms"]):
        terms = rec["terms"]
        peer = terms["provider_id"] if rec["role"] == "requestor" else terms["requestor_id"]
        table.add_row(
            terms["agreement_id"][:12], rec["role"], rec["state"], peer, _iso_ms(terms["valid_to_ms"]), _iso_ms(rec["updated_ms"])
        )
    _console().print(table)


@cli.group("app-key", cls=_LoamGroup)
def app_key_group() -> None:
    """Manage the keys requestor agents use with the REST API (Authorization: Bearer KEY)."""


@contextmanager
def _app_keys(data_dir: Path) -> Iterator[Any]:
    from node.appkeys import AppKeyStore

    data_dir = ensure_data_dir(data_dir)
    conn = open_database(db_path(data_dir))
    try:
        yield AppKeyStore(conn)
    finally:
        conn.close()


@app_key_group.command("create")
@_data_dir_option
@click.argument("name")
def app_key_create(data_dir: Path, name: str) -> None:
    """Create an app-key NAME acting as the node's default identity; prints the key."""
    with open_keystore(data_dir) as keystore:
        identity = keystore.get(None).address
    with _app_keys(data_dir) as keys:
        click.echo(keys.create(name, identity).key)


@app_key_group.command("list")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def app_key_list(data_dir: Path, as_json: bool) -> None:
    """List the app-keys."""
    with _app_keys(data_dir) as keys:
        rows = keys.list()
    if as_json:
        click.echo(json.dumps([{"name": k.name, "key": k.key, "identity": k.identity, "created": _iso_ms(k.created_ms)} for k in rows], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("name", "key", "identity", "created"):
        table.add_column(column, no_wrap=True)
    for k in rows:
        table.add_row(k.name, k.key, k.identity, _iso_ms(k.created_ms))
    _console().print(table)


@app_key_group.command("drop")
@_data_dir_option
@click.argument("name")
def app_key_drop(data_dir: Path, name: str) -> None:
    """Delete the app-key NAME."""
    with _app_keys(data_dir) as keys:
        keys.drop(name)
    click.echo(f"dropped app-key {name}")


@cli.command("package")
@click.option("--entry", "entries", multiple=True, required=True, metavar="ID=FILE.wasm",
              help="An entry point: its id and WASI module (repeatable).")
@click.option("--mount", "mounts", multiple=True, metavar="MODE:PATH", help="A mount point, ro:input, rw:output or wo:out (repeatable).")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The package zip to write.")
@click.option("--url", help="Where the package will be served; prints the task package string for it.")
def package_cmd(entries: tuple[str, ...], mounts: tuple[str, ...], out: Path, url: str | None) -> None:
    """Build a WASI package (Golem's zip with manifest.json) for the wasmtime runtime."""
    import hashlib

    from exeunits.wasm.package import make_package
    from protocol.errors import PackageError

    entry_points = {}
    for entry in entries:
        entry_id, sep, wasm = entry.partition("=")
        if not sep or not entry_id or not wasm:
            raise PackageError(f"--entry {entry!r}: expected ID=FILE.wasm")
        entry_points[entry_id] = wasm
    mount_points = []
    for mount in mounts:
        mode, sep, path = mount.partition(":")
        if not sep or mode not in ("ro", "rw", "wo") or not path:
            raise PackageError(f"--mount {mount!r}: expected ro:PATH, rw:PATH or wo:PATH")
        mount_points.append((mode, path))
    package = make_package(out, entry_points, mount_points)
    digest = hashlib.sha3_224(out.read_bytes()).hexdigest()
    click.echo(f"wrote {out} ({package.size_bytes} bytes; entry points: {', '.join(entry_points)}; sha3-224 {digest})")
    if url:
        click.echo(f"hash:sha3:{digest}:{url}")


@cli.command("run")
@_data_dir_option
@click.option("--runtime", type=click.Choice(["wasmtime", "vm"]), default="wasmtime", show_default=True)
@click.option("--package", required=True, help="The task package: hash:sha3:<sha3-224 hex>:<url>.")
@click.option("--script", "script_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The exe-script: a JSON list of commands, as Golem's ExeScript.")
@click.option("--constraints", default="", help="Extra demand constraints, e.g. (golem.inf.mem.gib>=2).")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True, help="Seconds to wait for a provider and for the results.")
@click.option("--budget", "budget_glm", default="5", show_default=True, help="GLM to allocate for the run (when the node runs payments).")
@click.option("--wait-payment", "wait_payment_s", type=float, default=0.0, show_default=True,
              help="Seconds to wait for the invoice to be settled on the chain (0: do not wait).")
@click.option("--no-payment", "no_payment", is_flag=True,
              help="Make no allocation: the provider's documents wait as Received for `loam payment` decisions.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as a JSON list.")
def run_cmd(
    data_dir: Path, runtime: str, package: str, script_file: Path, constraints: str, timeout_s: float, budget_glm: str,
    wait_payment_s: float, no_payment: bool, as_json: bool,
) -> None:
    """Run an exe-script on a provider: demand, agreement, activity, results, and clean up.

    Exits 0 when every command succeeded, 1 when one failed.
    """
    from node.quickrun import run_script

    try:
        script = json.loads(script_file.read_text())
    except ValueError as exc:
        raise ControlError(f"{script_file} is not JSON: {exc}") from None
    say = (lambda _text: None) if as_json else (lambda text: click.echo(text, err=True))
    results = run_script(
        data_dir, runtime, package, script, constraints=constraints, timeout_s=timeout_s, budget_glm=budget_glm,
        wait_payment_s=wait_payment_s, pay=not no_payment, say=say,
    )
    if as_json:
        click.echo(json.dumps(_jsonable(results), indent=2))
    else:
        for r in results:
            click.echo(f"[{r['index']}] {r['result']}" + (f": {r['message']}" if r.get("message") else ""))
            for stream in ("stdout", "stderr"):
                if r.get(stream):
                    click.echo("    " + r[stream].rstrip("\n").replace("\n", "\n    "))
    sys.exit(0 if results and all(r["result"] == "Ok" for r in results) else 1)


def _register_provider_commands() -> None:
    from node.cli_provider import provider_group

    cli.add_command(provider_group)


_register_provider_commands()


@cli.command("image-repo")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The folder of GVMI files to serve (name.gvmi is tagged name:latest).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=7697, show_default=True, help="Port to listen on.")
def image_repo_cmd(folder: Path, host: str, port: int) -> None:
    """Serve GVMI images as Golem's image repository does (GET /v1/image/info?hash=…|tag=…), in the foreground."""
    from node.image_repo import serve

    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="--dir")
    click.echo(f"image repository of {folder} at http://{host}:{port}/v1/image/info", err=True)
    serve(folder, host, port)


def _register_payment_commands() -> None:
    from node.cli_payment import make_payment_group

    cli.add_command(make_payment_group(_LoamGroup, _data_dir_option, _call))


_register_payment_commands()


def main() -> None:
    """Entry point of the `loam` console script."""
    cli(prog_name="loam")


if __name__ == "__main__":
    main()
