"""`loam payment`: amounts by status, accounts, test-token funding, allocations, documents and payments of a running node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["make_payment_group"]

_FUND_TIMEOUT_S = 150.0


_CALL: Any = None  # node.cli's _call, given by make_payment_group (no import of node.cli here: it may be __main__)


def _payment_call(data_dir: Path, method: str, timeout_s: float = 15.0, **args: Any) -> Any:
    from protocol.control import ControlCall, ControlResult

    return _CALL(data_dir, ControlCall("payment", method, args), ControlResult, timeout_s=timeout_s).value


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col.endswith(("GLM", "count")) else "left",
                         overflow="fold" if col == "tx" else "ellipsis")  # a transaction hash is shown whole
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console().print(table)


def _json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(func)


def make_payment_group(group_cls: type[click.Group], data_dir_option: Any, call: Any) -> click.Group:
    """The `loam payment` group, built with node.cli's group class, --data-dir option and control call."""
    global _CALL
    _CALL = call
    _data_dir_option = data_dir_option

    @click.group("payment", cls=group_cls)
    def group() -> None:
        """Payments of a running node: allocations, debit notes, invoices, settlement on the chain."""

    @group.command("status")
    @_data_dir_option
    @_json_option
    def status(data_dir: Path, as_json: bool) -> None:
        """Amounts by document status, per platform, for both roles; allocations; balances."""
        out = _payment_call(data_dir, "status")
        if as_json:
            _emit_json(out)
            return
        for side, title in (("requestor", "As requestor (documents received)"), ("provider", "As provider (documents issued)")):
            rows = [[r["platform"], r["kind"], r["status"], r["count"], r["amount_glm"]] for r in out[side]]
            _table(title, ["platform", "document", "status", "count", "amount GLM"], rows or [["-", "-", "-", 0, "0"]])
        from actors.payment.api import format_glm

        click.echo(f"paid (confirmed on chain): {format_glm(int(out['paid_wei']))} GLM; "
                   f"received (verified on chain): {format_glm(int(out['received_wei']))} GLM")  # fmt: skip
        for platform, b in sorted(out["balances"].items()):
            token = "unknown" if b["token_wei"] is None else format_glm(int(b["token_wei"])) + " GLM"
            gas = "unknown" if b["gas_wei"] is None else format_glm(int(b["gas_wei"])) + " ETH"
            click.echo(f"balance on {platform}: {token}, gas {gas}")

    @group.command("accounts")
    @_data_dir_option
    @_json_option
    def accounts(data_dir: Path, as_json: bool) -> None:
        """The node's payment accounts: platform, address, and whether it sends or receives there."""
        out = _payment_call(data_dir, "accounts")
        if as_json:
            _emit_json(out)
            return
        _table("Accounts", ["platform", "address", "send", "receive"],
               [[a["platform"], a["address"], a["send"], a["receive"]] for a in out])  # fmt: skip

    @group.command("fund")
    @_data_dir_option
    @click.option("--amount", default="1000", show_default=True, help="GLM to mint (test networks only).")
    @click.option("--platform", default=None, help="Payment platform; default: the node's [payment] network.")
    @_json_option
    def fund(data_dir: Path, amount: str, platform: str | None, as_json: bool) -> None:
        """Mint test GLM to this node's account on a test network (on the local chain also gas money)."""
        out = _payment_call(data_dir, "fund", timeout_s=_FUND_TIMEOUT_S, amount=amount, platform=platform)
        if as_json:
            _emit_json(out)
            return
        click.echo(f"minted {amount} GLM to {out['address']} on {out['platform']} (tx {out['tx_hash']}); "
                   f"balance {out['token_glm']} GLM")  # fmt: skip

    @group.command("balance")
    @_data_dir_option
    @click.option("--platform", default=None, help="Payment platform; default: the node's [payment] network.")
    @_json_option
    def balance(data_dir: Path, platform: str | None, as_json: bool) -> None:
        """The node's token and gas balance, read from the chain now."""
        out = _payment_call(data_dir, "balance", timeout_s=_FUND_TIMEOUT_S, platform=platform)
        if as_json:
            _emit_json(out)
            return
        click.echo(f"{out['platform']}: {out['token_glm']} GLM, gas {out['gas_wei']} wei")

    @group.command("allocate")
    @_data_dir_option
    @click.option("--amount", required=True, help="GLM to set aside.")
    @click.option("--platform", default=None, help="Payment platform; default: the node's [payment] network.")
    @_json_option
    def allocate(data_dir: Path, amount: str, platform: str | None, as_json: bool) -> None:
        """Create an allocation: money set aside for work; nothing is accepted beyond it."""
        out = _payment_call(data_dir, "create_allocation", amount=amount, platform=platform)
        if as_json:
            _emit_json(out)
            return
        click.echo(f"allocation {out['allocation_id']}: {out['total_glm']} GLM on {out['platform']}")

    @group.command("allocations")
    @_data_dir_option
    @_json_option
    def allocations(data_dir: Path, as_json: bool) -> None:
        """Allocations not released: total, spent (paid), reserved (accepted, not yet paid), remaining."""
        out = _payment_call(data_dir, "allocations")
        if as_json:
            _emit_json(out)
            return
        _table("Allocations", ["id", "platform", "state", "total GLM", "spent GLM", "reserved GLM", "remaining GLM"],
               [[a["allocation_id"][:16], a["platform"], a["state"], a["total_glm"], a["spent_glm"], a["reserved_glm"],
                 a["remaining_glm"]] for a in out])  # fmt: skip

    @group.command("release-allocations")
    @_data_dir_option
    def release_allocations(data_dir: Path) -> None:
        """Release every allocation (what they accepted is still paid)."""
        ids = _payment_call(data_dir, "release_allocations")
        click.echo(f"released {len(ids)} allocation(s)" + "".join(f"\n  {i}" for i in ids))

    @group.command("documents")
    @_data_dir_option
    @click.option("--kind", type=click.Choice(["invoice", "debit_note"]), default="invoice", show_default=True)
    @_json_option
    def documents(data_dir: Path, kind: str, as_json: bool) -> None:
        """Invoices or debit notes, issued and received, with their status."""
        out = _payment_call(data_dir, "documents", kind=kind)
        if as_json:
            _emit_json(out)
            return
        _table(kind.replace("_", " ").title() + "s", ["id", "role", "status", "agreement", "amount GLM"],
               [[d["document_id"][:16], d["role"], d["status"], d["agreement_id"][:16], d["amount_glm"]] for d in out])  # fmt: skip

    @group.command("payments")
    @_data_dir_option
    @_json_option
    def payments(data_dir: Path, as_json: bool) -> None:
        """Payments made and received, with their transactions."""
        out = _payment_call(data_dir, "payments")
        if as_json:
            _emit_json(out)
            return
        _table("Payments", ["role", "peer", "amount GLM", "tx"],
               [[p["role"], (p["payee_id"] if p["role"] == "made" else p["payer_id"])[:12], p["amount_glm"], p["tx_hash"]]
                for p in out])  # fmt: skip

    @group.command("deploy-local")
    @click.option("--rpc", "rpc_url", default="http://127.0.0.1:8545", show_default=True, help="The local chain (anvil).")
    @click.option("--network", default="local", show_default=True, help="The network name to write.")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="The networks file to write (give it to nodes as [payment] networks_file).")
    @click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="Deploy with this key (hex), as planned by `python -m actors.payment.local_chain`; "
                       "the addresses must come out as planned.")  # fmt: skip
    @click.option("--wait", "wait_s", type=float, default=20.0, show_default=True, help="Seconds to wait for the chain to answer.")
    def deploy_local(rpc_url: str, network: str, out_path: Path, key_file: Path | None, wait_s: float) -> None:
        """Deploy the test GLM token and the multi-transfer contract on a fresh local chain (anvil).

        Needs no running node: the deployer key (a throw-away one unless --key-file) gets gas
        money through anvil's anvil_setBalance. Writes a networks file with the addresses and
        the RPC URL.
        """
        import time

        from eth_account import Account

        from actors.payment import chain as ch
        from actors.payment.local_chain import create_address, write_networks_file
        from protocol.errors import ChainError

        chain_id = 31337
        chain = ch.Chain([rpc_url], chain_id, timeout_s=10.0)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                chain.call(lambda w3: w3.eth.block_number, "block number")
                break
            except ChainError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        deployer = Account.from_key(key_file.read_text().strip()) if key_file else Account.create()
        chain.call(lambda w3: w3.provider.make_request("anvil_setBalance", [deployer.address, hex(10**20)]), "fund deployer")
        token, multi = ch.deploy_contracts(chain, deployer.key)
        if key_file is not None and (token, multi) != (create_address(deployer.address, 0), create_address(deployer.address, 1)):
            raise ChainError(
                f"the contracts landed at {token} and {multi}, not where they were planned: the deployer "
                f"{deployer.address} had sent transactions on this chain before (use a fresh chain)"
            )
        write_networks_file(out_path, network=network, rpc_url=rpc_url, token=token, multi=multi)
        click.echo(json.dumps({"token_address": token, "multi_transfer": multi, "rpc_url": rpc_url, "networks_file": str(out_path)}))

    return group

