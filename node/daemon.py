"""The daemon: assembles one node from its actors, runs it, and shuts it down in order.

Read `Node.start` to see the whole node at a glance: which actors exist, in what order they
start, and what the local control channel can ask of them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pykka
import structlog

from actors.activity.actor import ActivityActor
from actors.gftp.actor import GftpActor
from actors.vpn.actor import VpnActor
from actors.market.actor import MarketActor
from actors.net.actor import NetActor
from actors.provider.agent import ProviderAgentActor
from node.control import ControlServer, runtime_file
from node.control_api import ControlApi
from node.keystore import KeyStore, read_password
from node.logging import configure_logging
from node.settings import Settings, parse_contact
from node.storage import PeerStore, db_path, ensure_data_dir, open_database
from protocol.control import (
    ControlCall,
    DirectSendRequest,
    DirectSent,
    GossipEntry,
    GossipList,
    GossipListRequest,
    GossipPublished,
    GossipPublishRequest,
    GossipWithdrawRequest,
    Inbox,
    InboxRequest,
    NetCounters,
    NetCountersRequest,
    NetStatusRequest,
    TextNote,
)
from protocol.errors import ControlError, NodeError
from protocol.identity import Identity

# Every wire message type is registered with the codec before the network starts: a payment
# document that arrives while the payment actors are still starting is decoded, not dropped.
__import__("protocol.payment")

__all__ = ["Node", "run_node", "EXIT_ACTOR_FAILED"]

EXIT_ACTOR_FAILED = 70


class Node:
    """One running node: its identity, database, actors and control channel."""

    def __init__(self, settings: Settings, identity: Identity) -> None:
        self.settings = settings
        self.identity = identity
        self.node_id = identity.node_id
        self._log = structlog.get_logger().bind(node_id=self.node_id)
        self._stop = threading.Event()
        self._failure: str | None = None
        self._actors: list[pykka.ActorRef] = []  # in start order; stopped in reverse
        self._dbs: list[sqlite3.Connection] = []  # one connection per actor that stores things
        self._control: ControlServer | None = None
        self._api: Any = None  # ApiServer (node/api), when serving
        self._metrics: Any = None  # MetricsServer, when serving
        self.net: Any = None  # NetActor proxy
        self.market: Any = None  # MarketActor proxy
        self.activity: Any = None  # ActivityActor proxy
        self.gftp: Any = None  # GftpActor proxy
        self.vpn: Any = None  # VpnActor proxy (virtual networks, tunnels to services)
        self.provider: Any = None  # ProviderAgentActor proxy, when this node sells compute
        self.payment: Any = None  # PaymentLedgerActor proxy, when payments are enabled
        self.payment_driver: Any = None  # PaymentDriverActor proxy (every chain call happens there)

    # -- assembly -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every actor, then the control channel, then announce the node as running."""
        cfg = self.settings
        fail = self._actor_failed
        bootstrap = tuple(parse_contact(addr) for addr in cfg.net.bootstrap)
        self.net = self._start_actor(
            NetActor, self.identity, cfg, bootstrap=bootstrap, peer_store=PeerStore(self._open_db()), on_actor_failure=fail
        ).proxy()
        self.market = self._start_actor(
            MarketActor, self.identity, cfg, self.net, self._open_db(), on_actor_failure=fail
        ).proxy()
        self.gftp = self._start_actor(GftpActor, self.identity, cfg, self.net, on_actor_failure=fail).proxy()
        self.activity = self._start_actor(
            ActivityActor, self.identity, cfg, self.net, self.market, on_actor_failure=fail
        ).proxy()
        self.vpn = self._start_actor(VpnActor, self.identity, cfg, self.net, self.activity, on_actor_failure=fail).proxy()
        if cfg.provider.enabled:
            self.provider = self._start_actor(
                ProviderAgentActor, self.identity, cfg, self.market, activity=self.activity, on_actor_failure=fail
            ).proxy()
        if cfg.payment.enabled:
            from actors.payment.driver_actor import PaymentDriverActor
            from actors.payment.ledger_actor import PaymentLedgerActor

            self.payment_driver = self._start_actor(
                PaymentDriverActor, self.identity, cfg, self._open_db(), on_actor_failure=fail
            ).proxy()
            ledger_ref = self._start_actor(
                PaymentLedgerActor, self.identity, cfg, self.net, self.market, self.activity, self.payment_driver,
                self._open_db(), on_actor_failure=fail,
            )  # fmt: skip
            self.payment = ledger_ref.proxy()
            self._ask(self.activity.attach_payment(ledger_ref))
        handlers = self._control_handlers()
        self._control = ControlServer(cfg.data_dir, handlers, self.node_id)
        self._control.start()
        self._start_metrics(handlers[ControlCall])
        self._start_api()
        self._write_runtime_file()
        self._log.info("node_started", name=cfg.node.name, contact=self._ask(self.net.contact()))

    def _start_metrics(self, control: Any) -> None:
        """Serve Prometheus metrics ([metrics]); a port that is taken costs a warning, not the node."""
        from node.metrics import MetricsServer, NodeCollector

        if not self.settings.metrics.enabled:
            return

        def payment_status() -> Any:
            # Through the control targets: the payment ledger may or may not run on this node.
            try:
                return control(ControlCall("payment", "status", {})).value
            except ControlError as exc:
                if "no control target 'payment'" in str(exc):
                    return None  # payments are not enabled: no metrics, and no error either
                raise

        collector = NodeCollector(
            net=self.net, market=self.market, activity=self.activity, provider=self.provider, payment_status=payment_status
        )
        server = MetricsServer(self.settings, collector)
        try:
            server.start()
        except OSError as exc:
            self._log.warning("metrics_unavailable", host=self.settings.metrics.host, port=self.settings.metrics.port, error=str(exc))
            return
        self._metrics = server
        self._log.info("metrics_serving", url=server.url)

    def _start_api(self) -> None:
        """Serve the REST API ([api]) on its own thread; an address that cannot be bound costs a warning, not the node."""
        from node.api import ApiServer

        if not self.settings.api.enabled:
            return
        server = ApiServer(self.settings, self.node_id, self, db_path(self.settings.data_dir))
        if server.start():
            self._api = server

    def _open_db(self) -> sqlite3.Connection:
        conn = open_database(db_path(self.settings.data_dir))
        self._dbs.append(conn)
        return conn

    def _start_actor(self, cls: type, *args: Any, **kwargs: Any) -> pykka.ActorRef:
        ref = cls.start(*args, **kwargs)
        self._actors.append(ref)
        # on_start runs in the actor's thread; a failure there stops the actor silently in
        # pykka, so ask it once to be sure it is serving before going on.
        try:
            ref.proxy().ping().get(timeout=self.settings.actors.ask_timeout_s)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise NodeError(self._failure or f"the {cls.name} actor did not start: {exc!r}") from None
        return ref

    def _control_handlers(self) -> dict[type, Any]:
        net = self.net
        ask = self._ask
        subnet = self.settings.node.subnet

        def publish(req: GossipPublishRequest) -> GossipPublished:
            item = ask(net.publish(req.topic, req.payload, req.ttl_s, req.subnet or subnet))
            return GossipPublished(item.item_id, item.created_ms)

        def withdraw(req: GossipWithdrawRequest) -> GossipPublished:
            if not ask(net.withdraw(req.item_id)):
                raise ControlError(f"this node published no live item {req.item_id}")
            return GossipPublished(req.item_id, int(time.time() * 1000))

        def list_items(req: GossipListRequest) -> GossipList:
            entries = tuple(
                GossipEntry(i.item_id, i.topic, i.origin, i.subnet, i.created_ms, i.expires_ms, received, i.payload)
                for i, received in ask(net.items(req.topic))
            )
            return GossipList(entries)

        api = ControlApi(
            self.market, self.provider, self.settings.actors.ask_timeout_s, activity=self.activity, gftp=self.gftp,
            payment=self.payment, payment_driver=self.payment_driver,
        )
        return {
            ControlCall: api.handle,
            NetStatusRequest: lambda req: ask(net.status()),
            NetCountersRequest: lambda req: NetCounters(ask(net.counters())),
            GossipPublishRequest: publish,
            GossipWithdrawRequest: withdraw,
            GossipListRequest: list_items,
            DirectSendRequest: lambda req: DirectSent(ask(net.send(req.recipient, TextNote(req.text)))),
            InboxRequest: lambda req: Inbox(tuple(ask(net.inbox()))),
        }

    def _ask(self, future: pykka.Future) -> Any:
        return future.get(timeout=self.settings.actors.ask_timeout_s)

    # -- running --------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the node to shut down (safe from signal handlers and other threads)."""
        self._log.info("stop_requested", reason=reason)
        self._stop.set()

    def _actor_failed(self, actor: str, error: BaseException) -> None:
        self._failure = f"the {actor} actor failed: {error}"
        self._stop.set()

    def wait(self) -> None:
        """Block until asked to stop, checking every interval that each actor still answers."""
        interval = self.settings.actors.health_interval_s
        while not self._stop.wait(interval):
            for ref in self._actors:
                try:
                    ref.proxy().ping().get(timeout=self.settings.actors.ask_timeout_s)
                except (pykka.ActorDeadError, pykka.Timeout) as exc:
                    # A hung or dead actor must not leave a node that looks alive.
                    self._failure = f"actor {ref} does not answer: {exc!r}"
                    self._stop.set()
                    break

    def shutdown(self) -> int:
        """Stop the control channel, then the actors in reverse start order; returns the exit code."""
        if self._api is not None:
            self._api.stop()
        if self._control is not None:
            self._control.stop()
        if self._metrics is not None:
            self._metrics.stop()
        for ref in reversed(self._actors):
            try:
                ref.stop(timeout=self.settings.actors.ask_timeout_s)
            except pykka.Timeout:
                self._log.error("actor_stop_timed_out", actor=str(ref))
            except pykka.ActorDeadError:
                pass
        for conn in self._dbs:
            conn.close()
        runtime_file(self.settings.data_dir).unlink(missing_ok=True)
        if self._failure:
            self._log.error("node_failed", error=self._failure)
            return EXIT_ACTOR_FAILED
        self._log.info("node_stopped")
        return 0

    def _write_runtime_file(self) -> None:
        data = {
            "pid": os.getpid(),
            "node_id": self.node_id,
            "name": self.settings.node.name,
            "contact": self._ask(self.net.contact()),
            "listen": self._ask(self.net.status()).listen,
            "control": self._control.endpoint if self._control else None,
            "api": self._api.url if self._api else None,
            "metrics": self._metrics.url if self._metrics else None,
        }
        path = runtime_file(self.settings.data_dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)  # readers never see half a file


def _check_not_running(data_dir: Path) -> None:
    path = runtime_file(data_dir)
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # a stale file from a node that was killed
    except PermissionError:
        pass
    if pid != os.getpid():
        raise NodeError(f"a node (pid {pid}) is already running with data dir {data_dir}")


def load_identity(settings: Settings) -> Identity:
    """Unlock the identity the settings name (the default one when no alias is set)."""
    conn = open_database(db_path(settings.data_dir))
    try:
        store = KeyStore(settings.data_dir, conn)
        info = store.get(settings.identity.alias or None)
        return store.unlock(info, read_password(settings))
    finally:
        conn.close()


def run_node(settings: Settings) -> int:
    """Run a node until SIGINT or SIGTERM; returns the process exit code.

    Raises:
        NodeError: the node cannot start (no identity, bad settings, data dir in use).
    """
    configure_logging(settings.node.log_level, settings.node.log_json)
    ensure_data_dir(settings.data_dir)
    _check_not_running(settings.data_dir)
    identity = load_identity(settings)
    if not settings.node.name:
        import dataclasses

        settings = dataclasses.replace(
            settings, node=dataclasses.replace(settings.node, name=f"loam-{identity.node_id[2:10].lower()}")
        )
    structlog.contextvars.bind_contextvars(node_id=identity.node_id)
    node = Node(settings, identity)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: node.request_stop(signal.Signals(signum).name))
    try:
        node.start()
    except BaseException:
        node.shutdown()
        raise
    node.wait()
    return node.shutdown()
