"""PaymentDriverActor: the payments worker — every chain call of the node happens here, never in the ledger."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pykka

from actors.base import FailureHandler, LoamActor, Ticker
from actors.payment.driver_store import DriverStore
from actors.payment.messages import (
    BalanceUpdate,
    PaymentsSettled,
    PaymentVerified,
    SchedulePayment,
    VerifyPayment,
    WatchBalance,
    network_paths,
    split_platform,
)
from actors.payment.networks import Network, load_network_layers
from protocol.errors import ChainError, PaymentError, SettingsError

if TYPE_CHECKING:
    import sqlite3

    from actors.payment import chain as ch
    from actors.payment.driver import PaymentDriver
    from node.settings import Settings
    from protocol.identity import Identity

__all__ = ["PaymentDriverActor"]  # its messages live in actors/payment/messages.py

_ETH = 10**18
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Cycle:
    pass


class PaymentDriverActor(LoamActor):
    """Sends and checks ERC-20 payments on the configured networks, exactly once (see PaymentDriver)."""

    name = "payment-driver"

    def __init__(
        self, identity: Identity, settings: Settings, conn: sqlite3.Connection, *,
        on_actor_failure: FailureHandler | None = None,
    ) -> None:  # fmt: skip
        super().__init__(identity.node_id, on_actor_failure)
        self._identity = identity
        self._cfg = settings.payment
        self._settings = settings
        self._store = DriverStore(conn)
        self._networks: dict[str, Network] = {}
        self._chains: dict[str, ch.Chain] = {}
        self._drivers: dict[str, PaymentDriver] = {}
        self._driver_platforms: frozenset[str] = frozenset()
        self._approved: set[str] = set()
        self._approving: dict[str, str] = {}  # platform -> its approval's tx hash, sent and not yet mined
        self._ledger: pykka.ActorRef | None = None
        self._watch: set[str] = set()  # platforms whose balance the ledger wants
        self._reported_ms = 0
        self._ticker: Ticker | None = None
        # Every chain call runs on this one thread, in order (the settlement core is not
        # thread-safe, and one thread keeps its nonces in order); the actor only hands work
        # over, so it answers its health check and status asks however slow the chain is.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="payment-chain")
        self._cycling: Future[None] | None = None

    def start_up(self) -> None:
        try:
            self._networks = load_network_layers(network_paths(self._settings))
        except SettingsError as exc:
            # A broken networks file must not stop the node: payments say why they cannot run.
            self._log.error("payment_networks_unreadable", error=str(exc))
        self._ticker = Ticker(self.actor_ref, _Cycle(), self._cfg.batch_interval_s)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        # A chain call in progress ends by its own timeout; nothing queued behind it starts.
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run fn on the chain thread; its errors are logged there (and kept in the future)."""

        def run() -> T:
            try:
                return fn(*args)
            except (PaymentError, ChainError, ValueError) as exc:
                self._log.warning("driver_step_failed", step=getattr(fn, "__name__", "?"), error=str(exc)[:300])
                raise
            except Exception as exc:  # a bug: logged with its traceback, the thread goes on
                self._log.error("driver_step_crashed", step=getattr(fn, "__name__", "?"), error=repr(exc), exc_info=True)
                raise

        return self._worker.submit(run)

    # -- the ledger's side ------------------------------------------------------------

    def attach_ledger(self, ledger: pykka.ActorRef, platforms: list[str]) -> None:
        """Where to report settled payments and balances (of these platforms) to."""
        self._ledger = ledger

        def attach() -> None:
            self._watch.update(platforms)
            for platform in platforms:
                self._send_balance(platform)  # now, not a cycle later: a requestor allocates soon after start
            self._reported_ms = 0  # report everything final once more: the ledger ignores what it knows

        self._submit(attach)

    def networks(self) -> list[Network]:
        """The payment networks this node knows."""
        return list(self._networks.values())

    def network(self, platform: str) -> Network:
        """The network of a platform.

        Raises:
            PaymentError: unknown platform, or its token is not deployed/configured.
        """
        _, name, token = split_platform(platform)
        net = self._networks.get(name)
        if net is None:
            raise PaymentError(f"payment platform {platform}: no network {name!r} (known: {', '.join(self._networks)})")
        if net.token.lower() != token:
            raise PaymentError(f"payment platform {platform}: network {name} pays in {net.token}, not {token}")
        if net.token_address is None:
            raise PaymentError(
                f"payment platform {platform}: the {net.token} token address of {name} is not configured "
                "(the testnet script writes it into the node's networks file)"
            )
        return net

    def _tell(self, ref: pykka.ActorRef | None, message: Any) -> None:
        if ref is None:
            return
        try:
            ref.tell(message)
        except pykka.ActorDeadError:  # the node is stopping
            pass

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Cycle):
            if self._cycling is None or self._cycling.done():  # a slow chain: cycles do not pile up
                self._cycling = self._submit(self._cycle)
        elif isinstance(message, SchedulePayment):
            self._submit(self._schedule, message)
        elif isinstance(message, VerifyPayment):
            self._submit(self._verify, message)
        elif isinstance(message, WatchBalance):
            self._submit(self._watch_balance, message.platform)
        return None

    def _watch_balance(self, platform: str) -> None:
        self._watch.add(platform)
        self._send_balance(platform)

    def _chain(self, platform: str) -> ch.Chain:
        from actors.payment import (
            chain as ch,  # web3: imported on first use, not at the node's start
        )

        net = self.network(platform)
        chain = self._chains.get(net.name)
        if chain is None:
            chain = ch.Chain(net.rpc_urls, net.chain_id, timeout_s=self._cfg.chain_timeout_s)
            self._chains[net.name] = chain
        return chain

    def _driver(self, platform: str) -> PaymentDriver:
        from actors.payment.driver import PaymentDriver  # web3, on first use

        driver = self._drivers.get(platform)
        if driver is None:
            net = self.network(platform)
            driver = PaymentDriver(
                self._store, self._chain(platform), self._identity.private_key, net.token_address or "",
                net.batch_contract, confirmations=net.confirmations,
                max_fee_cap_wei=int(self._cfg.max_fee_gwei * 10**9), batch_min=self._cfg.batch_min,
                batch_max=self._cfg.batch_max, stuck_after_s=self._cfg.stuck_after_s, platform=platform,
            )  # fmt: skip
            self._drivers[platform] = driver
            self._driver_platforms = frozenset(self._drivers)  # what the actor thread reads (one reference)
        return driver

    def _schedule(self, msg: SchedulePayment) -> None:
        driver = self._driver(msg.platform)
        driver.schedule(msg.payment_id, msg.payee_address, msg.amount_wei)

    def _ensure_allowance(self, platform: str) -> bool:
        """Whether the multi-transfer contract may move our tokens (approved once, for everything).

        The approval is sent, and False returned until it is mined: the actor never waits for
        a block (a node whose actor hangs that long fails its health check).
        """
        from actors.payment import (
            chain as ch,  # web3: imported on first use, not at the node's start
        )

        if platform in self._approved:
            return True
        net = self.network(platform)
        if net.batch_contract is not None:
            chain = self._chain(platform)
            sent = self._approving.get(platform)
            if sent is not None:
                r = ch.receipt(chain, sent)
                if r is None:
                    return False  # not mined yet: looked at again next cycle
                del self._approving[platform]
                self._log.info("multi_transfer_approval_mined", platform=platform, tx_hash=sent, succeeded=r.succeeded)
            tx = ch.ensure_allowance(chain, self._identity.private_key, net.token_address or "", net.batch_contract, 2**200)
            if tx is not None:
                self._approving[platform] = tx
                self._log.info("multi_transfer_approval_sent", platform=platform, tx_hash=tx)
                return False
        self._approved.add(platform)
        return True

    def _cycle(self) -> None:
        platforms = set(self._store.open_platforms()) | set(self._drivers)
        for platform in sorted(platforms):
            try:
                if self._ensure_allowance(platform):
                    self._driver(platform).cycle()
                else:
                    self._driver(platform).reconcile()  # what is already on its way is still followed
            except (PaymentError, ChainError, ValueError) as exc:
                self._log.warning("payment_cycle_failed", platform=platform, error=str(exc)[:300])
        self._report()
        for platform in sorted(self._watch):
            self._send_balance(platform)

    def _report(self) -> None:
        if self._ledger is None:
            return
        rows = self._store.settled_since(self._reported_ms)
        if rows:
            self._tell(self._ledger, PaymentsSettled(tuple((pid, status, tx) for pid, status, tx, _ in rows)))
            self._reported_ms = max(r[3] for r in rows)

    def _send_balance(self, platform: str) -> None:
        if self._ledger is None:
            return
        token = gas = None
        try:
            token, gas = self._balance(platform)
        except (PaymentError, ChainError) as exc:
            self._log.debug("balance_unknown", platform=platform, error=str(exc)[:200])
        self._tell(self._ledger, BalanceUpdate(platform, self._identity.node_id, token, gas))

    # -- asked from the control channel and the ledger's callers ------------------------

    def balance(self, platform: str, address: str | None = None) -> Future[tuple[int, int]]:
        """A future of (token wei, gas wei) of an address (default: this node) on a platform, read on the chain thread.

        Its result raises PaymentError or ChainError.
        """
        return self._submit(self._balance, platform, address)

    def _balance(self, platform: str, address: str | None = None) -> tuple[int, int]:
        from actors.payment import (
            chain as ch,  # web3: imported on first use, not at the node's start
        )

        chain = self._chain(platform)
        owner = address or self._identity.node_id
        token = ch.balance_of(chain, self.network(platform).token_address or "", owner)
        gas = int(chain.call(lambda w3: w3.eth.get_balance(owner), f"gas balance of {owner}"))  # type: ignore[arg-type]
        return token, gas

    def status(self) -> dict[str, dict[str, int]]:
        """Payment amounts in wei by driver status (pending, batched, confirmed, failed), per platform."""
        platforms = set(self._store.open_platforms()) | self._driver_platforms
        return {p: self._store.totals(p) for p in sorted(platforms)}

    def fund(self, platform: str, amount_wei: int) -> Future[dict[str, Any]]:
        """A future of minting test tokens to this node on a test network (and, on the local chain, gas money).

        Its result raises PaymentError (not a test network, a bad amount) or ChainError (the chain refused).
        """
        return self._submit(self._fund, platform, amount_wei)

    def _fund(self, platform: str, amount_wei: int) -> dict[str, Any]:
        from actors.payment import (
            chain as ch,  # web3: imported on first use, not at the node's start
        )

        net = self.network(platform)
        if not net.testnet:
            raise PaymentError(f"payment platform {platform} pays in real GLM: `fund` only mints test tokens")
        if not isinstance(amount_wei, int) or amount_wei <= 0:
            raise PaymentError(f"amount {amount_wei!r} is not a positive amount of wei")
        chain = self._chain(platform)
        me = self._identity.node_id
        gas = int(chain.call(lambda w3: w3.eth.get_balance(me), f"gas balance of {me}"))  # type: ignore[arg-type]
        if gas < _ETH // 10 and net.chain_id == 31337:
            # A local dev chain (anvil) lets anyone set a balance: gas money for the mint and payments.
            chain.call(lambda w3: w3.provider.make_request("anvil_setBalance", [me, hex(10 * _ETH)]), "set gas balance")
        tx = ch.mint(chain, self._identity.private_key, net.token_address or "", me, amount_wei)
        r = ch.wait_for_receipt(chain, tx, timeout_s=120.0)
        if not r.succeeded:
            raise ChainError(f"mint of {amount_wei} wei to {me} reverted in block {r.block_number}")
        token, gas = self._balance(platform)
        self._send_balance(platform)
        return {"platform": platform, "address": me, "tx_hash": tx, "token_wei": token, "gas_wei": gas}

    # -- verification (provider) ----------------------------------------------------------

    def _verify(self, msg: VerifyPayment) -> None:
        try:
            amount = self._transferred(msg)
            reply = PaymentVerified(msg.payment_id, msg.tx_hash, amount)
        except (PaymentError, ChainError) as exc:
            reply = PaymentVerified(msg.payment_id, msg.tx_hash, None, str(exc)[:300])
        self._tell(msg.reply_to, reply)

    def _transferred(self, msg: VerifyPayment) -> int | None:
        """Token moved from payer to payee by the transaction, once it has its confirmations; None before."""
        from actors.payment import (
            chain as ch,  # web3: imported on first use, not at the node's start
        )

        net = self.network(msg.platform)
        chain = self._chain(msg.platform)
        r = ch.receipt(chain, msg.tx_hash)
        if r is None or r.confirmations < max(net.confirmations, 1):
            return None
        if not r.succeeded:
            raise PaymentError(f"transaction {msg.tx_hash} reverted in block {r.block_number}")
        transfers = ch.find_transfers(
            chain, net.token_address or "", msg.payee_address, r.block_number, r.block_number, sender=msg.payer_address
        )
        return sum(t.amount_wei for t in transfers if t.tx_hash.lower() == msg.tx_hash.lower())
