"""`loam provider`: presets, settings and status of a node that sells compute.

Every change is written to the data directory first (presets.toml, loam.toml); when a node
runs there, it is then told to reload, which re-publishes its offers. With no node running
the change simply waits in the files for the next start.
"""

from __future__ import annotations

import json
from decimal import Decimal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click
from rich import box
from rich.console import Console
from rich.table import Table

from node.presets import RUNTIMES, Preset, PresetStore, effective_presets
from node.settings import default_data_dir, load_settings, payment_networks
from node.storage import ensure_data_dir
from protocol.errors import ControlError, SettingsError

__all__ = ["provider_group", "node_is_running"]


def _data_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="LOAM_DATA_DIR",
        default=lambda: str(default_data_dir()),
        show_default="$LOAM_DATA_DIR or ~/.local/share/loam",
        help="Where the node keeps its keys, database, loam.toml and presets.toml.",
    )(func)


def _console() -> Console:
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, no_color=True, width=max(console.width, 200))
    return console


def _iso_ms(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def node_is_running(data_dir: Path) -> bool:
    """Whether a node serves the control channel of this data dir."""
    from node.control import control_endpoint

    return Path(control_endpoint(Path(data_dir)).removeprefix("ipc://")).exists()


def _control(data_dir: Path, target: str, method: str, timeout_s: float = 35.0, **args: Any) -> Any:
    from node.control import ControlClient
    from protocol.control import ControlCall, ControlResult

    reply = ControlClient(data_dir).call(ControlCall(target, method, args), timeout_s=timeout_s)
    if not isinstance(reply, ControlResult):
        raise ControlError(f"the node answered {target}.{method} with {type(reply).__name__}")
    return reply.value


def _apply_to_running_node(data_dir: Path, what: str, changes: dict[str, Any] | None = None) -> None:
    """Tell a running node to reload its provider settings and presets, and say what happened.

    changes are the settings just written (dotted keys); one the node does not take, because
    its command line or environment overrides loam.toml, is named in a warning.
    """
    if not node_is_running(data_dir):
        click.echo(f"{what}; no node is running with data dir {data_dir}, so it takes effect when one starts")
        return
    try:
        reloaded = _control(data_dir, "provider", "reload")
    except ControlError as exc:
        if "no control target 'provider'" in str(exc):
            click.echo(
                f"{what}; the running node does not sell compute (provider.enabled is false): "
                "it takes effect when the node runs with the provider enabled"
            )
            return
        raise ControlError(f"{what}, but the running node could not apply it: {exc}") from None
    offers, rules = reloaded["offers"], reloaded["rules"]
    published = [o for o in offers if o["offer_id"]]
    fresh = sum(1 for o in published if o.get("republished"))
    click.echo(
        f"{what}; the running node offers {len(published)} preset{'s' if len(published) != 1 else ''} "
        f"({fresh} re-published, {len(published) - fresh} unchanged)"
    )
    for offer in offers:
        if not offer["offer_id"] and offer["not_offered"] != "inactive":
            click.echo(f"warning: preset {offer['preset']} is not offered: {offer['not_offered']}", err=True)
    for dotted, value in (changes or {}).items():
        key = _RULE_KEYS.get(dotted, dotted.partition(".")[2])
        if key in rules and rules[key] != value and dotted != "node.subnet":
            click.echo(
                f"warning: the running node keeps {dotted} = {rules[key]!r}: its command line or a LOAM_ "
                "environment variable overrides loam.toml",
                err=True,
            )


# Settings whose value in force the provider agent reports under another name.
_RULE_KEYS = {"node.name": "node_name", "node.subnet": "subnet", "provider.account": "payment_account"}


@click.group("provider")
def provider_group() -> None:
    """Sell compute: presets (what is offered and at what price), settings and status."""


# -- presets -------------------------------------------------------------------------------


@provider_group.group("preset")
def preset_group() -> None:
    """Presets: each active one is published as an offer (runtime, resources, prices in GLM)."""


def _preset_json(preset: Preset, implicit: bool = False) -> dict[str, Any]:
    return {
        "name": preset.name, "runtime": preset.runtime, "active": preset.active, "implicit": implicit,
        "start_fee": preset.start_fee, "env_per_hour": preset.env_per_hour, "cpu_per_hour": preset.cpu_per_hour,
        "cores": preset.cores, "memory_gib": preset.memory_gib, "storage_gib": preset.storage_gib,
    }


@preset_group.command("list")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def preset_list(data_dir: Path, as_json: bool) -> None:
    """List the presets (with none stored: the implicit one from the [provider] settings)."""
    settings = load_settings(data_dir)
    presets, implicit = effective_presets(data_dir, settings.provider)
    rows = [_preset_json(p, implicit) for p in presets]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    title = "presets" + (" (none stored: the [provider] settings act as one)" if implicit else "")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left")
    for column in ("name", "runtime", "active", "start fee", "GLM/h env", "GLM/h cpu", "cores", "mem GiB", "disk GiB"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"], r["runtime"], "yes" if r["active"] else "no", f"{r['start_fee']:g}", f"{r['env_per_hour']:g}",
            f"{r['cpu_per_hour']:g}", *("all" if r[k] is None else f"{r[k]:g}" for k in ("cores", "memory_gib", "storage_gib")),
        )
    _console().print(table)


def _price_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for flag, dest, text in reversed((
            ("--starting-fee", "start_fee", "GLM once per agreement"),
            ("--env-per-hour", "env_per_hour", "GLM per hour of activity"),
            ("--cpu-per-hour", "cpu_per_hour", "GLM per hour of cpu time"),
        )):
            func = click.option(flag, dest, type=float, required=required, help=text)(func)
        func = click.option("--disk", "storage_gib", type=float, help="Disk GiB it may use (default: the provider's limit).")(func)
        func = click.option("--memory", "memory_gib", type=float, help="Memory GiB it may use (default: the provider's limit).")(func)
        func = click.option("--cores", type=int, help="Cores it may use (default: the provider's limit).")(func)
        return func
    return decorate


@preset_group.command("create")
@_data_dir_option
@click.option("--name", required=True, help="The preset's name.")
@click.option("--runtime", type=click.Choice(RUNTIMES), required=True, help="The runtime it sells.")
@_price_options(required=True)
@click.option("--inactive", is_flag=True, help="Store it without publishing it yet.")
def preset_create(data_dir: Path, name: str, runtime: str, inactive: bool, **values: Any) -> None:
    """Create a preset (active unless --inactive) and apply it to a running node."""
    preset = PresetStore(ensure_data_dir(data_dir)).create(Preset(name=name, runtime=runtime, active=not inactive, **values))
    _apply_to_running_node(data_dir, f"created preset {preset.name} ({'active' if preset.active else 'inactive'})")


@preset_group.command("update")
@_data_dir_option
@click.option("--name", required=True, help="The preset to change.")
@click.option("--runtime", type=click.Choice(RUNTIMES), help="The runtime it sells.")
@_price_options(required=False)
def preset_update(data_dir: Path, name: str, runtime: str | None, **values: Any) -> None:
    """Change some values of a preset and apply it to a running node."""
    if runtime is None and all(v is None for v in values.values()):
        raise click.UsageError("nothing to change: give at least one of --runtime, prices or resources")
    PresetStore(data_dir).update(name, runtime=runtime, **values)
    _apply_to_running_node(data_dir, f"updated preset {name}")


def _name_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("name", required=False)(click.option("--name", "name_option", help="The preset (or give it as NAME).")(func))


def _one_name(name: str | None, name_option: str | None) -> str:
    if name and name_option and name != name_option:
        raise click.UsageError(f"two preset names given: {name} and {name_option}")
    chosen = name or name_option
    if not chosen:
        raise click.UsageError("name the preset: NAME or --name NAME")
    return chosen


@preset_group.command("remove")
@_data_dir_option
@_name_argument
def preset_remove(data_dir: Path, name: str | None, name_option: str | None) -> None:
    """Delete a preset (its offer is withdrawn)."""
    chosen = _one_name(name, name_option)
    PresetStore(data_dir).remove(chosen)
    _apply_to_running_node(data_dir, f"removed preset {chosen}")


@preset_group.command("activate")
@_data_dir_option
@_name_argument
def preset_activate(data_dir: Path, name: str | None, name_option: str | None) -> None:
    """Publish a preset as an offer."""
    chosen = _one_name(name, name_option)
    PresetStore(data_dir).set_active(chosen, True)
    _apply_to_running_node(data_dir, f"activated preset {chosen}")


@preset_group.command("deactivate")
@_data_dir_option
@_name_argument
def preset_deactivate(data_dir: Path, name: str | None, name_option: str | None) -> None:
    """Stop offering a preset (kept for later)."""
    chosen = _one_name(name, name_option)
    PresetStore(data_dir).set_active(chosen, False)
    _apply_to_running_node(data_dir, f"deactivated preset {chosen}")


# -- settings ------------------------------------------------------------------------------


@provider_group.group("settings")
def settings_group() -> None:
    """The provider's settings: limits, default prices, negotiation rules (stored in loam.toml)."""


# (option, dotted key, click type, help)
_SETTABLE: tuple[tuple[str, str, Any, str], ...] = (
    ("--node-name", "node.name", str, "The node's human-readable name (in its offers)."),
    ("--cores", "provider.cores", int, "Cores all activities together may use."),
    ("--memory", "provider.memory_gib", float, "Memory GiB all activities together may use."),
    ("--disk", "provider.storage_gib", float, "Disk GiB all activities together may use."),
    ("--starting-fee", "provider.start_fee", float, "GLM once per agreement (of the implicit preset)."),
    ("--env-per-hour", "provider.env_per_hour", float, "GLM per hour of activity (of the implicit preset)."),
    ("--cpu-per-hour", "provider.cpu_per_hour", float, "GLM per hour of cpu time (of the implicit preset)."),
    ("--runtime", "provider.runtime", click.Choice(RUNTIMES), "The runtime of the implicit preset."),
    ("--subnet", "node.subnet", str, "The market partition (applies at the next start)."),
    ("--payment-network", "provider.payment_network", str, "The network paid on (config/networks.toml)."),
    ("--account", "provider.account", str, "The address paid (\"\" = the node's own id)."),
    ("--max-agreements", "provider.max_agreements", int, "Simultaneous agreements."),
    ("--debit-note-interval", "provider.debit_note_interval_s", float, "Seconds between debit notes (1-86400)."),
    ("--debit-note-accept-timeout", "provider.debit_note_accept_timeout_s", float, "Seconds a requestor has to accept one (>= 5)."),
    ("--payment-timeout", "provider.payment_timeout_s", float, "Seconds a requestor has to pay an accepted one."),
    ("--allow-requestors", "provider.allow_requestors", str, "Comma-separated node ids dealt with (\"\" = anyone)."),
    ("--block-requestors", "provider.block_requestors", str, "Comma-separated node ids refused (\"\" = none)."),
)


def _settings_view(data_dir: Path) -> dict[str, Any]:
    settings = load_settings(data_dir)
    provider = settings.provider
    return {
        "node_name": settings.node.name,
        "subnet": settings.node.subnet,
        "enabled": provider.enabled,
        "runtime": provider.runtime,
        "cores": provider.cores,
        "memory_gib": provider.memory_gib,
        "storage_gib": provider.storage_gib,
        "start_fee": provider.start_fee,
        "env_per_hour": provider.env_per_hour,
        "cpu_per_hour": provider.cpu_per_hour,
        "payment_driver": provider.payment_driver,
        "payment_network": provider.payment_network,
        "account": provider.account,
        "max_agreements": provider.max_agreements,
        "min_expiration_s": provider.min_expiration_s,
        "max_expiration_s": provider.max_expiration_s,
        "debit_note_interval_s": provider.debit_note_interval_s,
        "debit_note_accept_timeout_s": provider.debit_note_accept_timeout_s,
        "payment_timeout_s": provider.payment_timeout_s,
        "allow_requestors": list(provider.allow_requestors),
        "block_requestors": list(provider.block_requestors),
    }


@settings_group.command("show")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def settings_show(data_dir: Path, as_json: bool) -> None:
    """Show the provider settings as a node started now would have them (files and LOAM_* variables)."""
    view = _settings_view(data_dir)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    for key, value in view.items():
        if isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif value == "":
            value = "(node id)" if key == "account" else "(derived from the node id)" if key == "node_name" else ""
        click.echo(f"{key + ':':<30}{value}")


def _settings_set_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option, dotted, kind, text in reversed(_SETTABLE):
        func = click.option(option, dotted.replace(".", "__"), type=kind, help=text)(func)
    return func


def _node_ids(text: str, option: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    for node_id in ids:
        if not (node_id.startswith("0x") and len(node_id) == 42):
            raise SettingsError(f"{option}: {node_id!r} is not a node id (0x followed by 40 hex digits)")
    return [n.lower() for n in ids]


@settings_group.command("set")
@_data_dir_option
@_settings_set_options
def settings_set(data_dir: Path, **values: Any) -> None:
    """Change settings (checked, then written to loam.toml) and apply them to a running node."""
    from node.settings_file import update_settings_file

    changes: dict[str, Any] = {}
    for option, dotted, _kind, _text in _SETTABLE:
        value = values[dotted.replace(".", "__")]
        if value is None:
            continue
        if dotted.endswith("_requestors"):
            value = _node_ids(value, option)
        elif dotted == "provider.payment_network" and value not in payment_networks(data_dir):
            raise SettingsError(
                f"{option} {value!r} is not a known payment network (known: {', '.join(payment_networks(data_dir))})"
            )
        changes[dotted] = value
    if not changes:
        raise click.UsageError("nothing to set: give at least one option (see --help)")
    update_settings_file(ensure_data_dir(data_dir), changes)
    try:
        load_settings(data_dir)
    except SettingsError as exc:
        # The file alone is fine (it was checked); a LOAM_ variable of this shell clashes with it.
        raise SettingsError(f"saved to loam.toml, but with this shell's LOAM_ variables the settings do not load: {exc}") from None
    names = ", ".join(option for option, dotted, _k, _t in _SETTABLE if dotted in changes)
    if "node.subnet" in changes and node_is_running(data_dir):
        click.echo("note: a running node changes its subnet only when it restarts", err=True)
    _apply_to_running_node(data_dir, f"saved {names}", changes)


# -- status --------------------------------------------------------------------------------


def _earnings(data_dir: Path) -> dict[str, Any] | None:
    """The payment ledger's totals by document status, or None when the node runs no payments."""
    try:
        return _control(data_dir, "payment", "status", timeout_s=10.0)
    except ControlError as exc:
        if "no control target 'payment'" in str(exc) or "has no control method" in str(exc):
            return None
        raise


@provider_group.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def provider_status(data_dir: Path, as_json: bool) -> None:
    """What the running node offers, its agreements and activities, resource use and earnings."""
    if not node_is_running(data_dir):
        raise ControlError(f"no node is running with data dir {data_dir}; start it with `loam node run`")
    try:
        status = _control(data_dir, "provider", "status")
    except ControlError as exc:
        if "no control target 'provider'" in str(exc):
            raise ControlError(
                "the running node does not sell compute: set provider.enabled = true in loam.toml "
                "(or LOAM_PROVIDER__ENABLED=true) and restart it"
            ) from None
        raise
    payment = _earnings(data_dir)
    if payment is None:
        status["earnings"] = "payments not enabled"
    else:
        # What this node issued as a provider, by document status, and what reached it on the chain.
        status["earnings"] = {"by_status": payment.get("provider", []), "received_wei": payment.get("received_wei", "0")}
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
        return
    _print_status(status)


def _print_status(status: dict[str, Any]) -> None:
    console = _console()
    rules = status["rules"]
    console.print(f"node {rules['node_name']} on subnet {rules['subnet']}, paid on {rules['payment_platform']} to {rules['account']}")
    offers = Table(box=box.SIMPLE_HEAD, show_edge=False, title="offers", title_justify="left")
    for column in ("preset", "runtime", "start fee", "GLM/h env", "GLM/h cpu", "cores", "mem GiB", "disk GiB", "offer id"):
        offers.add_column(column, no_wrap=True)
    for o in status["offers"]:
        offers.add_row(
            o["preset"] + (" (implicit)" if o["implicit"] else ""), o["runtime"], f"{o['start_fee']:g}",
            f"{o['env_per_hour']:g}", f"{o['cpu_per_hour']:g}",
            *("all" if o[k] is None else f"{o[k]:g}" for k in ("cores", "memory_gib", "storage_gib")),
            o["offer_id"] or f"not offered: {o['not_offered']}",
        )
    console.print(offers)
    agreements = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"agreements ({len(status['agreements'])})", title_justify="left")
    for column in ("agreement id", "state", "requestor", "runtime", "valid to"):
        agreements.add_column(column, no_wrap=True)
    for a in status["agreements"]:
        agreements.add_row(a["agreement_id"][:12], a["state"], a["requestor_id"], str(a["runtime"]), _iso_ms(a["valid_to_ms"]))
    console.print(agreements)
    activities = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"activities ({len(status['activities'])})", title_justify="left")
    for column in ("activity id", "agreement id", "state", "usage"):
        activities.add_column(column, no_wrap=True)
    for a in status["activities"]:
        activities.add_row(a["activity_id"][:12], a["agreement_id"][:12], a["state"], ", ".join(f"{u:.3g}" for u in a["usage"]))
    console.print(activities)
    resources = Table(box=box.SIMPLE_HEAD, show_edge=False, title="resources (in use by activities / limit)", title_justify="left")
    for column in ("cores", "memory GiB", "disk GiB", "agreements"):
        resources.add_column(column, no_wrap=True)
    res = status["resources"]
    resources.add_row(
        *(f"{res[k]['used']:g} / {res[k]['limit']:g}" if k in res else "" for k in ("cores", "memory_gib", "storage_gib")),
        f"{sum(1 for a in status['agreements'] if a['state'] == 'Approved')} / {rules['max_agreements']}",
    )
    console.print(resources)
    earnings = status["earnings"]
    if isinstance(earnings, str):
        console.print(f"earnings: {earnings}")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="earnings by status", title_justify="left")
    for column in ("document", "platform", "status", "count", "GLM"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("count", "GLM") else "left")
    for row in earnings["by_status"]:
        table.add_row(str(row["kind"]).replace("_", " "), row["platform"], row["status"], str(row["count"]), row["amount_glm"])
    console.print(table)
    received = format(Decimal(int(earnings["received_wei"])) / 10**18, "f")
    console.print(f"received on the chain: {received.rstrip('0').rstrip('.') if '.' in received else received} GLM")
