"""Payments on a real chain for integration tests: anvil with our contracts, node settings for it, balances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.payment import chain as ch
from protocol.errors import ChainError
from tests.integration.harness import NodeProcess, free_port, wait_for

__all__ = [
    "ANVIL",
    "PLATFORM",
    "LocalChain",
    "local_chain",
    "payment_env",
    "provider_env",
    "payment_call",
    "token_balance",
    "wasm_package",
    "wait_settled",
    "negotiate",
    "activity_call",
    "db_rows",
    "payment_transfers",
    "approve_multi_transfer",
    "exe_unit_pids",
    "kill_exe_units",
]

ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
PLATFORM = "erc20-local-tglm"


@dataclass
class LocalChain:
    """An anvil process with the test GLM token and the multi-transfer contract deployed."""

    url: str
    networks_file: Path
    token: str
    multi: str
    proc: subprocess.Popen[bytes]

    def chain(self) -> ch.Chain:
        """A Chain on it (for reading balances and transfers)."""
        return ch.Chain([self.url], 31337, timeout_s=5.0)

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call (anvil's evm_mine, evm_setAutomine, txpool_content…)."""
        return self.chain().call(lambda w3: w3.provider.make_request(method, params), method)  # type: ignore[arg-type]


@contextmanager
def local_chain(base_dir: Path, *, automine: bool = True) -> Iterator[LocalChain]:
    """Start anvil on a free port and deploy the contracts with `loam payment deploy-local`."""
    if not ANVIL.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"anvil is missing under CI: run `scripts/setup.sh anvil` ({ANVIL} not installed)")
        pytest.skip("anvil is not installed (scripts/setup.sh anvil)")
    port = free_port()
    cmd = [str(ANVIL), "--silent", "--host", "127.0.0.1", "--port", str(port)]
    if not automine:
        cmd.append("--no-mining")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    networks_file = base_dir / "networks.toml"
    try:
        chain = ch.Chain([url], 31337, timeout_s=2.0)

        def up() -> bool:
            try:
                chain.call(lambda w3: w3.eth.block_number, "block number")
                return True
            except ChainError:
                assert proc.poll() is None, "anvil exited"
                return False

        wait_for("anvil answers", up, 20)
        if not automine:
            # Deploying needs blocks: mine on a timer while deploying, then stop.
            chain.call(lambda w3: w3.provider.make_request("evm_setAutomine", [True]), "automine on")
        out = subprocess.run(
            [sys.executable, "-m", "node.cli", "payment", "deploy-local", "--rpc", url, "--out", str(networks_file)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, f"deploy-local failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        deployed = json.loads(out.stdout.strip().splitlines()[-1])
        if not automine:
            chain.call(lambda w3: w3.provider.make_request("evm_setAutomine", [False]), "automine off")
        yield LocalChain(url, networks_file, deployed["token_address"], deployed["multi_transfer"], proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def payment_env(local: LocalChain, **extra: str) -> dict[str, str]:
    """Settings that make a node pay and be paid on the local chain, in short cycles."""
    env = {
        "LOAM_PAYMENT__NETWORK": "local",
        "LOAM_PAYMENT__NETWORKS_FILE": str(local.networks_file),
        "LOAM_PAYMENT__BATCH_INTERVAL_S": "1",
        "LOAM_PAYMENT__RESEND_S": "1",
        "LOAM_PAYMENT__INVOICE_WAIT_S": "3",
    }
    env.update(extra)
    return env


def provider_env(local: LocalChain, runtime: str = "wasmtime", **extra: str) -> dict[str, str]:
    """A provider selling compute paid on the local chain."""
    settings = {
        "LOAM_PROVIDER__ENABLED": "true",
        "LOAM_PROVIDER__RUNTIME": runtime,
        "LOAM_PROVIDER__PAYMENT_NETWORK": "local",
        "LOAM_PROVIDER__MAX_AGREEMENTS": "8",
    }
    settings.update(extra)  # extra may override the defaults above (e.g. max_agreements)
    return payment_env(local, **settings)


def payment_call(node: NodeProcess, method: str, timeout_s: float = 30.0, **args: Any) -> Any:
    """A `payment` control call on a node."""
    from protocol.control import ControlCall

    return node.call(ControlCall("payment", method, args), timeout_s=timeout_s).value


def token_balance(local: LocalChain, address: str) -> int:
    """The test GLM balance of an address, read from the chain."""
    return ch.balance_of(local.chain(), local.token, address)


@contextmanager
def wasm_package(base_dir: Path) -> Iterator[str]:
    """The WASI test programs as a package served over http; yields the task-package string."""
    import functools
    import hashlib
    import http.server
    import threading

    from exeunits.wasm.package import make_package
    from tests.wasm_programs import build_wasm_programs

    root = base_dir / "www"
    root.mkdir(parents=True, exist_ok=True)
    build = build_wasm_programs()
    entry_points = {name: build / f"{name}.wasm" for name in ("wc", "hello", "exitcode", "trap", "spin")}
    make_package(root / "programs.zip", entry_points, [("ro", "input"), ("rw", "output")])
    digest = hashlib.sha3_224((root / "programs.zip").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined,assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"hash:sha3:{digest}:http://127.0.0.1:{server.server_address[1]}/programs.zip"
    finally:
        server.shutdown()


def wait_settled(node: NodeProcess, agreement_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until the requestor's invoice for an agreement is Settled; returns it."""

    def settled() -> dict[str, Any] | None:
        for doc in payment_call(node, "documents", kind="invoice"):
            if doc["agreement_id"] == agreement_id and doc["status"] == "Settled":
                return doc
        return None

    return wait_for(f"invoice of {agreement_id[:12]} settled", settled, timeout_s, interval_s=0.3)


def now_ms() -> int:
    """Wall-clock ms."""
    return int(time.time() * 1000)


def negotiate(
    requestor: NodeProcess, provider: NodeProcess, task_package: str, extra: dict[str, Any] | None = None,
    runtime: str = "wasmtime", timeout_s: float = 60.0,
) -> str:  # fmt: skip
    """An Approved agreement with this very provider, paid on the local chain; returns its id.

    `extra` adds demand properties (a short debit-note interval, an accept timeout…).
    """
    from tests.integration.harness import market_call

    props: dict[str, Any] = {
        "golem.node.debug.subnet": requestor.subnet,
        "golem.srv.comp.expiration": now_ms() + 3_600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": requestor.node_id,
        "golem.srv.comp.task_package": task_package,
        **(extra or {}),
    }
    sub = market_call(requestor, "subscribe_demand", {"properties": props, "constraints": f"(golem.runtime.name={runtime})"})
    try:
        initial = wait_for(
            f"{provider.name}'s Initial proposal",
            lambda: [e for e in market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 0.5, "max_events": 100})
                     if e.get("proposal") and e["proposal"]["issuer_id"] == provider.node_id],
            timeout_s,
        )  # fmt: skip
        market_call(requestor, "counter_proposal", {
            "sub_id": sub, "proposal_id": initial[0]["proposal"]["proposal_id"], "properties": props, "constraints": "()",
        })  # fmt: skip

        def draft() -> list[dict[str, Any]]:
            events = market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 0.5, "max_events": 100})
            return [e for e in events if e.get("proposal") and e["proposal"]["state"] == "Draft"
                    and e["proposal"]["issuer_id"] == provider.node_id]  # fmt: skip

        drafts = wait_for(f"{provider.name}'s Draft", draft, timeout_s)
        agreement_id = market_call(requestor, "create_agreement", {
            "proposal_id": drafts[0]["proposal"]["proposal_id"], "valid_to_ms": now_ms() + 3_600_000,
        })  # fmt: skip
        market_call(requestor, "confirm_agreement", {"agreement_id": agreement_id})
        state = market_call(requestor, "wait_agreement", {"agreement_id": agreement_id, "timeout_s": 20})
        assert state == "Approved", f"agreement with {provider.name} is {state}"
        return agreement_id
    finally:
        market_call(requestor, "unsubscribe", {"sub_id": sub})


def activity_call(node: NodeProcess, method: str, timeout_s: float = 90.0, **args: Any) -> Any:
    """An `activity` control call on a node."""
    from protocol.control import ControlCall

    return node.call(ControlCall("activity", method, args), timeout_s=timeout_s).value


def db_rows(node: NodeProcess, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on a node's database (WAL: safe while the node runs, and after it died)."""
    import sqlite3

    from node.storage import db_path

    conn = sqlite3.connect(f"file:{db_path(node.data_dir)}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def payment_transfers(local: LocalChain, payer: str, payee: str | None = None) -> list[ch.Transfer]:
    """Every Transfer log of the test GLM from payer (to payee), in the whole chain."""
    return ch.find_transfers(local.chain(), local.token, payee, 0, None, sender=payer)


def approve_multi_transfer(local: LocalChain, key: str | bytes) -> None:
    """Let the multi-transfer contract move the key's tokens, mined now (as the driver does before its first batch)."""
    tx = ch.ensure_allowance(local.chain(), key, local.token, local.multi, 2**200)
    if tx is not None:
        ch.wait_for_receipt(local.chain(), tx, timeout_s=60.0)


def exe_unit_pids(node: NodeProcess) -> list[int]:
    """Exe-unit child processes working in this node's data dir (also orphans of a killed node)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"exeunits.child" in args and any(str(node.data_dir).encode() in a for a in args):
            pids.append(int(proc.name))
    return pids


def kill_exe_units(node: NodeProcess) -> list[int]:
    """SIGKILL the exe-units a killed node left behind (they run on until their command ends); returns their pids."""
    import signal

    pids = exe_unit_pids(node)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
