"""NetActor: the overlay. Links, handshakes, heartbeats, peer exchange, direct messages, gossip."""

from __future__ import annotations

import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actors.base import FailureHandler, LoamActor
from actors.net.gossip import Accepted, GossipStore
from actors.net.io import FrameIn, LinkDown, NetIO, Tick
from actors.net.links import Contact, Link, PeerTable, backoff_ms
from actors.net.ratelimit import TokenBucket
from protocol.codec import Message
from protocol.control import InboxEntry, NeighbourInfo, NetStatus, TextNote
from protocol.envelope import Envelope, ReplayGuard, open_frame, seal
from protocol.errors import NetError, ProtocolError
from protocol.identity import Identity, is_node_id, keccak
from protocol.net import (
    GLOBAL_SUBNET,
    Goodbye,
    GossipDigest,
    GossipIds,
    GossipItem,
    GossipPull,
    GossipPush,
    Heartbeat,
    Hello,
    HelloAck,
    PeerExchange,
    PeerRecord,
    Routed,
)

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["NetActor", "Received", "GossipExpired", "contact_address", "PEER_TOPIC"]

PEER_TOPIC = "net.peer"
_PEER_RECORD_TTL_MS = 10 * 60_000
_PEER_REPUBLISH_MS = 4 * 60_000
_PULL_CHUNK = 256
_MAX_LINKS = 256
_INBOX_MAX = 1000
_MAX_PULLED = 20_000


@dataclass(frozen=True, slots=True)
class Received:
    """A message delivered to a subscribing actor, with the node that sent it (maybe this one)."""

    sender: str
    message: Message


@dataclass(frozen=True, slots=True)
class GossipExpired:
    """A gossip item a subscriber was told about has expired."""

    item_id: str
    topic: str


def contact_address(curve_public: bytes, endpoint: str) -> str:
    """The address others bootstrap through: loam://<curve key hex>@host:port."""
    from zmq.utils import z85

    return f"loam://{z85.decode(curve_public).hex()}@{endpoint.removeprefix('tcp://')}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class NetActor(LoamActor):
    """Owns the overlay; other actors send and subscribe through its proxy."""

    name = "net"

    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        *,
        bootstrap: tuple[tuple[bytes, str], ...] = (),
        peer_store: Any = None,
        on_actor_failure: FailureHandler | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._id = identity
        self._cfg = settings.net
        self._node_name = settings.node.name
        self._subnets: tuple[str, ...] = (settings.node.subnet,)
        self._peer_store = peer_store
        self._rng = random.Random(seed)
        now = _now_ms()
        self._started_ms = now
        self._contacts = [Contact(key, endpoint) for key, endpoint in bootstrap]
        self._links: dict[str, Link] = {}
        self._by_node: dict[str, str] = {}  # node id -> key of its up link
        self._link_seq = 0
        self._peers = PeerTable(identity.node_id, self._cfg.passive_max)
        self._replay = ReplayGuard(window_ms=int(2 * self._cfg.clock_skew_s * 1000))
        self._store = GossipStore(
            self._cfg.max_gossip_items,
            self._cfg.max_items_per_origin,
            int(self._cfg.max_item_ttl_s * 1000),
            own_origin=identity.node_id,
        )
        self._routed_seen: OrderedDict[bytes, int] = OrderedDict()
        self._stranger_bucket = TokenBucket(self._cfg.peer_rate_msgs_per_s, self._cfg.peer_rate_burst, now)
        self._subscribers: dict[str, list[pykka.ActorRef]] = {}
        self._gossip_subscribers: dict[str, list[pykka.ActorRef]] = {}
        self._inbox: deque[InboxEntry] = deque(maxlen=_INBOX_MAX)
        self._counters: dict[str, int] = {}
        self._io: NetIO | None = None
        self._record: PeerRecord | None = None
        self._record_item: GossipItem | None = None
        self._record_published_ms = 0
        self._next = {"maintain": 0, "anti_entropy": 0, "expire": 0, "persist": now + 30_000}
        self._log_budget: dict[str, int] = {}
        self.listen_endpoint: str | None = None
        self._addresses: tuple[str, ...] = ()

    # -- life cycle -----------------------------------------------------------------------

    def start_up(self) -> None:
        listen = None if self._cfg.listen == "none" else self._cfg.listen
        self._io = NetIO(
            curve_secret=self._id.curve_secret,
            curve_public=self._id.curve_public,
            listen=listen,
            max_message_bytes=self._cfg.max_message_bytes,
            deliver=self.actor_ref,
            tick_s=0.1,
        )
        self.listen_endpoint = self._io.bound_endpoint
        self._addresses = self._advertised_addresses(self._io.bound_endpoint)
        self._refresh_record(_now_ms())
        if self._peer_store is not None:
            now = _now_ms()
            for _, blob in self._peer_store.load_all(self._cfg.passive_max):
                try:
                    record = _decode_record(blob)
                except ProtocolError:
                    continue
                self._peers.learn(record, now - 1)
        self._io.start()
        self._publish_record(_now_ms())
        self._log.info(
            "net_started",
            listen=self._io.bound_endpoint,
            addresses=list(self._addresses),
            bootstrap=len(self._contacts),
            known_peers=len(self._peers),
        )

    def on_stop(self) -> None:
        for link in list(self._links.values()):
            if link.up:
                self._send_msg(link, Goodbye("shutdown"))
        self._flush_pushes()
        self._persist_peers()
        if self._io is not None:
            self._io.stop()
            self._io = None
        self._log.info("net_stopped")

    def after_message(self) -> None:
        # Gossip pushes are batched per link and flushed when the mailbox runs dry: one
        # envelope carries many items under load, and an item never waits when idle.
        if self._io is not None and self.actor_inbox.empty():
            self._flush_pushes()

    # -- the public API (call through the proxy) -------------------------------------------

    def contact(self) -> str | None:
        """This node's contact address, or None if it does not accept connections."""
        if not self._addresses:
            return None
        return contact_address(self._id.curve_public, self._addresses[0])

    def subscribe(self, type_prefix: str, ref: pykka.ActorRef) -> None:
        """Deliver direct messages whose type tag starts with type_prefix to ref as Received."""
        self._subscribers.setdefault(type_prefix, []).append(ref)

    def subscribe_gossip(self, topic: str, ref: pykka.ActorRef) -> None:
        """Deliver live items, withdrawals (GossipItem) and expiries (GossipExpired) of a topic to ref."""
        self._gossip_subscribers.setdefault(topic, []).append(ref)

    def send(self, recipient: str, msg: Message) -> str:
        """Send a message to a node; returns how: "local", "link", "dial" or "route".

        Raises:
            NetError: the recipient is not a node id.
        """
        if not is_node_id(recipient):
            raise NetError(f"{recipient!r} is not a node id")
        if recipient == self.node_id:
            self._deliver(Received(self.node_id, msg))
            return "local"
        env = seal(self._id, msg, _now_ms(), recipient=recipient)
        return self._send_frame_to(recipient, env.to_frame())

    def publish(self, topic: str, payload: bytes, ttl_s: float, subnet: str = "", slot: str = "") -> GossipItem:
        """Publish a gossip item to every node of a subnet ("" = this node's subnet).

        Raises:
            NetError: the item is too large or its lifetime out of range.
        """
        if len(payload) > self._cfg.max_item_bytes:
            raise NetError(f"gossip payload of {len(payload)} bytes is over the cap of {self._cfg.max_item_bytes}")
        if not 0 < ttl_s <= self._cfg.max_item_ttl_s:
            raise NetError(f"gossip ttl must be in (0, {self._cfg.max_item_ttl_s}] s, got {ttl_s}")
        now = _now_ms()
        item = GossipItem.create(
            self._id, topic, payload, subnet=subnet or self._subnets[0], created_ms=now,
            expires_ms=now + int(ttl_s * 1000), slot=slot,
        )
        self._accept_item(item, None, now)
        return item

    def withdraw(self, item_id: str) -> bool:
        """Withdraw an item this node published; False if it holds no such live item."""
        stored = self._store.get(item_id)
        if stored is None or stored.item.withdrawn or stored.item.origin != self.node_id:
            return False
        self._accept_item(stored.item.withdrawal(self._id), None, _now_ms())
        return True

    def items(self, topic: str = "") -> list[tuple[GossipItem, int]]:
        """Live items this node knows (of a topic, or all) with their receive times (ms)."""
        return [(s.item, s.received_ms) for s in self._store.live(topic)]

    def inbox(self) -> list[InboxEntry]:
        """TextNotes received, oldest first."""
        return list(self._inbox)

    def peer_record(self, node_id: str) -> PeerRecord | None:
        """The newest record known of a node."""
        entry = self._peers.get(node_id)
        return entry.record if entry else None

    def counters(self) -> dict[str, int]:
        """Event counters (frames in and out, rejections by reason, gossip)."""
        return dict(self._counters)

    def status(self) -> NetStatus:
        """The node's view of the overlay."""
        now = _now_ms()
        neighbours = tuple(
            NeighbourInfo(
                node_id=link.node_id or "",
                role="neighbour" if link.neighbour else "direct",
                outbound=link.outbound,
                address=link.endpoint or (link.record.addresses[0] if link.record and link.record.addresses else ""),
                subnets=link.record.subnets if link.record else (),
                age_s=(now - link.created_ms) / 1000,
                idle_s=(now - link.last_in_ms) / 1000,
            )
            for link in self._links.values()
            if link.up
        )
        return NetStatus(
            node_id=self.node_id,
            name=self._node_name,
            subnets=self._subnets,
            listen=self.listen_endpoint or "none",
            addresses=self._addresses,
            contact=self.contact() or "",
            neighbours=neighbours,
            known_peers=len(self._peers),
            gossip_items=len(self._store.live()),
            uptime_s=(now - self._started_ms) / 1000,
        )

    # -- incoming -------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, FrameIn):
            self._count("frames_in")
            try:
                self._on_frame(message)
            except ProtocolError as exc:
                self._reject(type(exc).__name__, str(exc), link=message.link)
                self._forget_stranger(message.link)
            except Exception as exc:  # noqa: BLE001 - remote input must never kill the node
                self._count("frame_bugs")
                self._log.error("frame_handling_failed", link=message.link, error=repr(exc), exc_info=True)
        elif isinstance(message, Tick):
            self._on_tick(_now_ms())
        elif isinstance(message, LinkDown):
            link = self._links.get(message.link)
            if link is not None:
                self._drop_link(link, message.reason, failed=not link.up)
        return None

    def _forget_stranger(self, key: str) -> None:
        """After bad input on a connection without a completed handshake, forget the connection."""
        link = self._links.get(key)
        if link is None:
            if key.startswith("i:"):
                self._io.close(key)
        elif not link.up and not link.outbound:
            del self._links[key]
            self._io.close(key)

    def _on_frame(self, frame_in: FrameIn) -> None:
        now = _now_ms()
        link = self._links.get(frame_in.link)
        # Connections without a handshake share one budget, so a swarm of new connections
        # cannot make the node verify signatures without end.
        bucket = link.msg_bucket if link is not None and link.up else self._stranger_bucket
        if not bucket.take(now):
            self._reject("rate_limited", "peer sends too fast", link=frame_in.link)
            return
        env, msg = open_frame(
            frame_in.frame,
            now_ms=now,
            max_bytes=self._cfg.max_message_bytes,
            skew_ms=int(self._cfg.clock_skew_s * 1000),
            replay=self._replay,
        )
        if link is None:
            link = self._adopt_inbound(frame_in, env, msg, now)
            if link is None:
                return
        elif link.up and env.sender != link.node_id:
            raise ProtocolError(f"frame on the link of {link.node_id} is signed by {env.sender}")
        link.last_in_ms = now
        if not isinstance(msg, Heartbeat):
            link.last_app_ms = now
        if isinstance(msg, Hello):
            self._on_hello(link, env, msg, now)
        elif isinstance(msg, HelloAck):
            self._on_hello_ack(link, env, msg, now)
        elif not link.up:
            raise ProtocolError(f"{type(msg).TYPE} before the handshake")
        elif isinstance(msg, Heartbeat):
            pass
        elif isinstance(msg, GossipPush):
            self._on_push(link, msg, now)
        elif isinstance(msg, GossipDigest):
            self._on_digest(link, msg)
        elif isinstance(msg, GossipIds):
            self._on_ids(link, msg)
        elif isinstance(msg, GossipPull):
            self._on_pull(link, msg)
        elif isinstance(msg, PeerExchange):
            self._learn_records(msg.peers, now)
        elif isinstance(msg, Routed):
            self._on_routed(link, msg, now)
        elif isinstance(msg, Goodbye):
            self._log.info("peer_said_goodbye", peer=link.node_id, reason=msg.reason[:100])
            self._drop_link(link, f"goodbye: {msg.reason[:100]}", failed=False, say_goodbye=False)
        else:
            self._on_direct(env, msg)

    def _adopt_inbound(self, frame_in: FrameIn, env: Envelope, msg: Message, now: int) -> Link | None:
        """A frame on a connection we have not seen: a Hello, or a known peer that reconnected."""
        if not frame_in.link.startswith("i:"):
            return None  # a closed outbound link; its late frames are dropped
        if isinstance(msg, Hello):
            if len(self._links) >= _MAX_LINKS:
                raise ProtocolError("too many links")
            link = self._new_link(frame_in.link, outbound=False, endpoint="", curve_key=frame_in.curve_key, now=now)
            return link
        if isinstance(msg, (Goodbye, Heartbeat)):
            return None  # the last words of a link we already closed
        # ZeroMQ gives a reconnecting peer a new routing id; the CURVE key it authenticated
        # with tells us which node it is.
        old_key = self._by_node.get(env.sender)
        old = self._links.get(old_key) if old_key else None
        if old is None or old.outbound or old.curve_key != frame_in.curve_key:
            raise ProtocolError(f"{type(msg).TYPE} from {env.sender} on a connection without a handshake")
        del self._links[old.key]
        self._io.close(old.key)
        old.key = frame_in.link
        self._links[old.key] = old
        self._by_node[env.sender] = old.key
        return old

    def _on_hello(self, link: Link, env: Envelope, hello: Hello, now: int) -> None:
        record = hello.record
        record.verify()
        if env.sender != record.node_id:
            raise ProtocolError(f"hello signed by {env.sender} carries the record of {record.node_id}")
        if record.curve_key != link.curve_key:
            raise ProtocolError(f"{record.node_id} presents a peer record for another CURVE key")
        if link.outbound:
            raise ProtocolError("hello on a link we dialled")
        granted = hello.neighbour and self._neighbour_count() < self._cfg.max_neighbours
        self._learn_records((record,), now)
        link.node_id = record.node_id
        link.record = record
        link.neighbour = granted
        self._send_msg(
            link,
            HelloAck(self._record, granted, tuple(self._peers.sample(16, self._rng))),
            force=True,
        )
        self._link_up(link, now)

    def _on_hello_ack(self, link: Link, env: Envelope, ack: HelloAck, now: int) -> None:
        if not link.outbound or link.up:
            raise ProtocolError("unexpected hello ack")
        record = ack.record
        record.verify()
        if env.sender != record.node_id or record.curve_key != link.curve_key:
            raise ProtocolError("hello ack from a node other than the one dialled")
        if link.expected_node and link.expected_node != record.node_id:
            raise ProtocolError(f"dialled {link.expected_node} but {record.node_id} answered")
        self._learn_records((record,) + ack.peers, now)
        link.node_id = record.node_id
        link.record = record
        link.neighbour = link.want_neighbour and ack.neighbour
        for contact in self._contacts:
            if contact.curve_key == link.curve_key:
                contact.failures = 0
        self._link_up(link, now)
        if link.want_neighbour and not link.neighbour and not link.pending and link.key in self._links:
            self._drop_link(link, "not taken as neighbour", failed=False)

    def _link_up(self, link: Link, now: int) -> None:
        assert link.node_id is not None
        link.up = True
        self._peers.seen(link.node_id, now)
        other_key = self._by_node.get(link.node_id)
        if other_key is not None and other_key != link.key and other_key in self._links:
            # Two links to one node (both dialled at once): both ends keep the one dialled
            # by the smaller node id, so they agree without talking about it.
            other = self._links[other_key]
            keep, drop = (link, other) if link.initiator(self.node_id) < other.initiator(self.node_id) else (other, link)
            keep.neighbour = keep.neighbour or drop.neighbour
            keep.pending.extend(drop.pending)
            drop.pending.clear()
            self._drop_link(drop, "duplicate link", failed=False)
            link = keep
        self._by_node[link.node_id] = link.key
        for frame in link.pending:
            self._io.send(link.key, frame)
        link.pending.clear()
        self._log.info(
            "link_up", peer=link.node_id, neighbour=link.neighbour, outbound=link.outbound, links=len(self._by_node)
        )
        if link.neighbour:
            self._send_digests(link)
            self._refresh_record(now)

    def _on_direct(self, env: Envelope, msg: Message) -> None:
        if env.recipient != self.node_id:
            raise ProtocolError(f"{type(msg).TYPE} from {env.sender} is not addressed to this node")
        if isinstance(msg, TextNote):
            self._inbox.append(InboxEntry(env.sender, msg.text[:10_000], _now_ms()))
            self._log.info("text_note_received", sender=env.sender)
            return
        self._deliver(Received(env.sender, msg))

    def _deliver(self, received: Received) -> None:
        tag = received.message.TYPE
        delivered = False
        for prefix, refs in self._subscribers.items():
            if tag.startswith(prefix):
                delivered = _tell_all(refs, received) or delivered
        if not delivered:
            self._reject("no_handler", f"no actor takes {tag}")

    # -- direct messages and routing -------------------------------------------------------

    def _send_frame_to(self, recipient: str, frame: bytes) -> str:
        key = self._by_node.get(recipient)
        if key is not None:
            self._io.send(key, frame)
            return "link"
        for link in self._links.values():
            if link.expected_node == recipient and not link.up:
                link.pending.append(frame)
                return "dial"
        entry = self._peers.get(recipient)
        if entry is not None and entry.record.addresses and entry.next_try_ms <= _now_ms():
            link = self._dial(entry.endpoint(), entry.record.curve_key, neighbour=False, expected=recipient)
            if link is not None:
                link.pending.append(frame)
                return "dial"
        self._route(recipient, frame, self._cfg.route_ttl, exclude=None)
        return "route"

    def _route(self, target: str, frame: bytes, ttl: int, exclude: str | None) -> None:
        """Forward a frame for target along live links: to it, through its via nodes, or by flooding."""
        routed = Routed(target, ttl, frame)
        key = self._by_node.get(target)
        if key is not None:
            self._send_msg(self._links[key], routed)
            return
        entry = self._peers.get(target)
        if entry is not None:
            for via in entry.record.via:
                via_key = self._by_node.get(via)
                if via_key is not None and via_key != exclude:
                    self._send_msg(self._links[via_key], routed)
                    return
            for via in entry.record.via:
                via_entry = self._peers.get(via)
                if via_entry is not None and via_entry.record.addresses and via != self.node_id:
                    link = self._dial(via_entry.endpoint(), via_entry.record.curve_key, neighbour=False, expected=via)
                    if link is not None:
                        link.pending.append(seal(self._id, routed, _now_ms(), recipient=via).to_frame())
                        return
        if ttl <= 0:
            self._reject("route_ttl", f"no route to {target}")
            return
        flooded = Routed(target, ttl - 1, frame)
        sent = 0
        for link in self._neighbour_links():
            if link.key != exclude:
                self._send_msg(link, flooded)
                sent += 1
        if not sent:
            self._reject("no_route", f"no route to {target}")

    def _on_routed(self, link: Link, routed: Routed, now: int) -> None:
        digest = keccak(routed.frame)[:16]
        if digest in self._routed_seen:
            return
        self._routed_seen[digest] = now
        while len(self._routed_seen) > 50_000:
            self._routed_seen.popitem(last=False)
        if routed.target == self.node_id:
            env, msg = open_frame(
                routed.frame,
                now_ms=now,
                max_bytes=self._cfg.max_message_bytes,
                skew_ms=int(self._cfg.clock_skew_s * 1000),
                replay=self._replay,
            )
            self._count("routed_in")
            self._on_direct(env, msg)
            return
        if not is_node_id(routed.target) or routed.ttl < 0:
            raise ProtocolError("routed message with a bad target or ttl")
        self._count("routed_forwarded")
        self._route(routed.target, routed.frame, min(routed.ttl, self._cfg.route_ttl), exclude=link.key)

    # -- gossip ---------------------------------------------------------------------------

    def _accepts_subnet(self, subnet: str) -> bool:
        return subnet == GLOBAL_SUBNET or subnet in self._subnets

    def _accept_item(self, item: GossipItem, source: Link | None, now: int) -> Accepted:
        result = self._store.offer(item, now)
        if result not in (Accepted.NEW, Accepted.WITHDRAWN):
            if result in (Accepted.FULL,):
                self._reject("gossip_full", f"store full for items of {item.origin}")
            elif result is Accepted.FORGED:
                self._reject("gossip_bad_item", f"{item.origin} withdraws item {item.item_id} of another origin")
            return result
        self._count("gossip_new")
        for link in self._neighbour_links():
            if link is source:
                continue
            if item.subnet == GLOBAL_SUBNET or item.subnet in (link.record.subnets if link.record else ()):
                link.out_items.append(item)
        if item.topic == PEER_TOPIC and not item.withdrawn and item.origin != self.node_id:
            try:
                self._learn_records((_decode_record(item.payload),), now)
            except ProtocolError as exc:
                self._reject("bad_peer_item", str(exc))
        _tell_all(self._gossip_subscribers.get(item.topic, []), item)
        return result

    def _on_push(self, link: Link, push: GossipPush, now: int) -> None:
        for item in push.items:
            solicited = push.solicited and item.item_id in link.pulled
            link.pulled.discard(item.item_id)
            if not self._store.is_news(item.item_id, item.withdrawn):
                continue
            if not solicited and not link.item_bucket.take(now):
                self._reject("gossip_rate_limited", "peer pushes items too fast", link=link.key)
                return
            if not self._accepts_subnet(item.subnet):
                self._reject("gossip_foreign_subnet", f"item of subnet {item.subnet!r}", link=link.key)
                continue
            if len(item.payload) > self._cfg.max_item_bytes:
                self._reject("gossip_too_large", f"item of {len(item.payload)} bytes", link=link.key)
                continue
            try:
                item.verify()
            except ProtocolError as exc:
                self._reject("gossip_bad_item", str(exc), link=link.key)
                continue
            self._accept_item(item, link, now)

    def _shared_subnets(self, link: Link) -> list[str]:
        theirs = link.record.subnets if link.record else ()
        return [GLOBAL_SUBNET] + [s for s in self._subnets if s in theirs]

    def _send_digests(self, link: Link) -> None:
        for subnet in self._shared_subnets(link):
            self._send_msg(link, GossipDigest(subnet, self._store.digest(subnet)))

    def _on_digest(self, link: Link, digest: GossipDigest) -> None:
        if digest.subnet not in self._shared_subnets(link):
            return
        buckets = self._store.differing_buckets(digest.subnet, digest.buckets)
        if buckets:
            entries = self._store.entries(digest.subnet, buckets)
            for chunk in _chunks(entries, 4096):
                self._send_msg(link, GossipIds(digest.subnet, tuple(buckets), tuple(chunk)))
            if not entries:
                self._send_msg(link, GossipIds(digest.subnet, tuple(buckets), ()))

    def _on_ids(self, link: Link, ids: GossipIds) -> None:
        if ids.subnet not in self._shared_subnets(link):
            return
        to_pull, to_push = self._store.reconcile(ids.subnet, ids.buckets, ids.entries)
        # A peer could list made-up ids without end; what we ask for at once is bounded.
        to_pull = to_pull[: max(0, _MAX_PULLED - len(link.pulled))]
        for chunk in _chunks(to_pull, _PULL_CHUNK):
            link.pulled.update(chunk)
            self._send_msg(link, GossipPull(tuple(chunk)))
        link.out_items.extend(to_push)

    def _on_pull(self, link: Link, pull: GossipPull) -> None:
        items = []
        for item_id in pull.ids[:_PULL_CHUNK * 4]:
            stored = self._store.get(item_id)
            if stored is not None and self._accepts_subnet(stored.item.subnet):
                items.append(stored.item)
        self._push_now([link], items, solicited=True)

    def _flush_pushes(self) -> None:
        # Links that are owed the same items get the same envelope, signed once: a new item
        # goes to every neighbour but its source, so this usually means one signature per
        # flush. It is safe to share because a receiver accepts a link message only from the
        # node at the other end of that link.
        groups: dict[tuple[str, ...], tuple[list[GossipItem], list[Link]]] = {}
        for link in self._links.values():
            if link.out_items and link.up:
                items, link.out_items = link.out_items, []
                key = tuple(item.item_id for item in items)
                groups.setdefault(key, (items, []))[1].append(link)
        for items, links in groups.values():
            self._push_now(links, items, solicited=False)

    def _push_now(self, links: list[Link], items: list[GossipItem], solicited: bool) -> None:
        budget = self._cfg.max_message_bytes // 2
        batch: list[GossipItem] = []
        size = 0
        for item in items:
            item_size = len(item.payload) + 400
            if batch and size + item_size > budget:
                self._send_shared(links, GossipPush(tuple(batch), solicited))
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            self._send_shared(links, GossipPush(tuple(batch), solicited))

    # -- timers ---------------------------------------------------------------------------

    def _on_tick(self, now: int) -> None:
        cfg = self._cfg
        heartbeat_ms = int(cfg.heartbeat_s * 1000)
        for link in list(self._links.values()):
            if link.key not in self._links:
                continue
            if not link.up:
                if now - link.created_ms > cfg.handshake_timeout_s * 1000:
                    self._drop_link(link, "handshake timed out", failed=True)
                continue
            if now - link.last_in_ms > cfg.dead_after_s * 1000:
                self._log.warning("peer_lost", peer=link.node_id, silent_s=(now - link.last_in_ms) / 1000)
                self._drop_link(link, "no heartbeat", failed=True)
                continue
            if not link.neighbour and now - link.last_app_ms > cfg.direct_idle_s * 1000:
                self._drop_link(link, "idle direct link", failed=False)
                continue
            if now - link.last_out_ms >= heartbeat_ms:
                link.heartbeat_seq += 1
                self._send_msg(link, Heartbeat(link.heartbeat_seq))
        if now >= self._next["maintain"]:
            self._next["maintain"] = now + 500
            self._maintain(now)
        if now >= self._next["anti_entropy"]:
            self._next["anti_entropy"] = now + int(cfg.anti_entropy_s * 1000)
            neighbours = self._neighbour_links()
            if neighbours:
                partner = self._rng.choice(neighbours)
                self._send_digests(partner)
                self._send_msg(partner, PeerExchange(tuple(self._peers.sample(8, self._rng))))
        if now >= self._next["expire"]:
            self._next["expire"] = now + 1000
            for item in self._store.expire(now):
                _tell_all(self._gossip_subscribers.get(item.topic, []), GossipExpired(item.item_id, item.topic))
        if now >= self._next["persist"]:
            self._next["persist"] = now + 30_000
            self._persist_peers()
        if now - self._record_published_ms > _PEER_REPUBLISH_MS:
            self._publish_record(now)

    def _maintain(self, now: int) -> None:
        """Keep between target and max neighbours: dial known peers, fall back to bootstrap."""
        neighbours = self._neighbour_count()
        dialling = sum(1 for link in self._links.values() if link.want_neighbour and not link.up)
        missing = self._cfg.target_neighbours - neighbours - dialling
        if missing <= 0:
            return
        linked = set(self._by_node) | {link.expected_node for link in self._links.values() if link.expected_node}
        for entry in self._peers.candidates(linked, self._subnets, now, self._rng)[:missing]:
            key = self._by_node.get(entry.record.node_id)
            if key is not None:
                continue
            self._dial(entry.endpoint(), entry.record.curve_key, neighbour=True, expected=entry.record.node_id)
            missing -= 1
        if missing > 0 and neighbours == 0 and not dialling:
            for contact in self._contacts:
                if contact.next_try_ms <= now and not any(
                    link.curve_key == contact.curve_key for link in self._links.values()
                ):
                    contact.next_try_ms = now + backoff_ms(contact.failures)
                    contact.failures += 1
                    self._dial(contact.endpoint, contact.curve_key, neighbour=True, expected=None)

    # -- links ----------------------------------------------------------------------------

    def _new_link(self, key: str, *, outbound: bool, endpoint: str, curve_key: bytes, now: int) -> Link:
        cfg = self._cfg
        link = Link(
            key=key,
            outbound=outbound,
            endpoint=endpoint,
            curve_key=curve_key,
            created_ms=now,
            msg_bucket=TokenBucket(cfg.peer_rate_msgs_per_s, cfg.peer_rate_burst, now),
            item_bucket=TokenBucket(cfg.gossip_rate_items_per_s, cfg.gossip_rate_burst, now),
            last_in_ms=now,
            last_out_ms=now,
            last_app_ms=now,
        )
        self._links[key] = link
        return link

    def _dial(self, endpoint: str | None, curve_key: bytes, *, neighbour: bool, expected: str | None) -> Link | None:
        if endpoint is None or len(self._links) >= _MAX_LINKS:
            return None
        now = _now_ms()
        self._link_seq += 1
        link = self._new_link(f"o:{self._link_seq}", outbound=True, endpoint=endpoint, curve_key=curve_key, now=now)
        link.want_neighbour = neighbour
        link.expected_node = expected
        self._io.connect(link.key, endpoint, curve_key)
        self._send_msg(link, Hello(self._record, neighbour), force=True)
        self._log.debug("dialling", endpoint=endpoint, peer=expected, neighbour=neighbour)
        return link

    def _drop_link(self, link: Link, reason: str, *, failed: bool, say_goodbye: bool = True) -> None:
        if self._links.pop(link.key, None) is None:
            return
        if say_goodbye and link.up:
            self._send_msg(link, Goodbye(reason), force=True)
        self._io.close(link.key)
        if link.node_id and self._by_node.get(link.node_id) == link.key:
            del self._by_node[link.node_id]
        node = link.node_id or link.expected_node
        if failed and node:
            self._peers.failed(node, _now_ms())
        if link.pending:
            # Direct messages that waited for this dial go over the overlay instead.
            target = link.expected_node
            if target:
                for frame in link.pending:
                    self._route(target, frame, self._cfg.route_ttl, exclude=link.key)
        if link.up:
            self._log.info("link_down", peer=link.node_id, reason=reason, links=len(self._by_node))
            if link.neighbour:
                self._refresh_record(_now_ms())

    def _neighbour_links(self) -> list[Link]:
        return [link for link in self._links.values() if link.up and link.neighbour]

    def _neighbour_count(self) -> int:
        return sum(1 for link in self._links.values() if link.up and link.neighbour)

    def _send_msg(self, link: Link, msg: Message, force: bool = False) -> None:
        if not (link.up or force):
            return
        now = _now_ms()
        frame = seal(self._id, msg, now, recipient=link.node_id).to_frame()
        link.last_out_ms = now
        self._io.send(link.key, frame)
        self._count("frames_out")

    def _send_shared(self, links: list[Link], msg: Message) -> None:
        """One envelope, addressed to no one in particular, sent on several links."""
        now = _now_ms()
        frame = seal(self._id, msg, now).to_frame()
        for link in links:
            link.last_out_ms = now
            self._io.send(link.key, frame)
            self._count("frames_out")

    # -- peers and our own record ---------------------------------------------------------

    def _learn_records(self, records: tuple[PeerRecord, ...], now: int) -> None:
        for record in records:
            entry = self._peers.get(record.node_id)
            if entry is not None and record.seq <= entry.record.seq:
                continue
            try:
                record.verify()
            except ProtocolError as exc:
                self._reject("bad_peer_record", str(exc))
                continue
            self._peers.learn(record, now)

    def _advertised_addresses(self, bound: str | None) -> tuple[str, ...]:
        if bound is None:
            return ()
        if self._cfg.advertise:
            return tuple(self._cfg.advertise)
        host, _, port = bound.removeprefix("tcp://").rpartition(":")
        if host in ("0.0.0.0", "*", "[::]"):
            return tuple(f"tcp://{ip}:{port}" for ip in _local_ipv4_addresses())
        return (f"tcp://{host}:{port}",)

    def _refresh_record(self, now: int) -> None:
        via: tuple[str, ...] = ()
        if not self._addresses:
            via = tuple(sorted(
                link.node_id for link in self._neighbour_links()
                if link.node_id and link.record and link.record.addresses
            ))[:16]
        if self._record is not None and self._record.via == via:
            return
        seq = max(now, (self._record.seq + 1) if self._record else 0)
        self._record = PeerRecord(self.node_id, self._id.curve_public, self._addresses, self._subnets, via, seq).signed(self._id)
        if self._record_published_ms:
            self._publish_record(now)

    def _publish_record(self, now: int) -> None:
        from protocol.codec import encode

        self._record_published_ms = now
        item = GossipItem.create(
            self._id, PEER_TOPIC, encode(self._record), subnet=GLOBAL_SUBNET, created_ms=now,
            expires_ms=now + _PEER_RECORD_TTL_MS, slot="record",
        )
        self._accept_item(item, None, now)

    def _persist_peers(self) -> None:
        if self._peer_store is None:
            return
        from protocol.codec import encode

        try:
            for entry in self._peers.entries.values():
                if entry.record.addresses:
                    self._peer_store.save(entry.record.node_id, encode(entry.record), entry.last_seen_ms)
        except Exception as exc:  # noqa: BLE001 - a full disk must not take the overlay down
            self._log.error("peers_not_saved", error=repr(exc))

    # -- bookkeeping ----------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def _reject(self, reason: str, detail: str, link: str | None = None) -> None:
        self._count(f"rejected.{reason}")
        # Log the first few of each kind per minute: a flood of garbage must not become a
        # flood of log lines.
        minute = int(time.time() // 60)
        budget_key = f"{reason}:{minute}"
        used = self._log_budget.get(budget_key, 0)
        if used < 20:
            if len(self._log_budget) > 1000:
                self._log_budget.clear()
            self._log_budget[budget_key] = used + 1
            self._log.warning("message_rejected", reason=reason, detail=detail[:300], link=link)


def _tell_all(refs: list[pykka.ActorRef], message: Any) -> bool:
    """Tell every live subscriber; forget those that stopped (a node stops its actors one by one)."""
    told = False
    for ref in list(refs):
        try:
            ref.tell(message)
            told = True
        except pykka.ActorDeadError:
            refs.remove(ref)
    return told


def _decode_record(blob: bytes) -> PeerRecord:
    from protocol.codec import decode

    record = decode(blob, PeerRecord)
    record.verify()
    return record


def _chunks(values: list, size: int) -> list[list]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def _local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses, non-loopback ones first, loopback last."""
    import socket

    found: list[str] = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            ip = info[4][0]
            if ip not in found and not ip.startswith("127."):
                found.append(ip)
    except OSError:
        pass
    return found[:7] + ["127.0.0.1"]
