"""Deterministic sample instances of every wire message, and the writer of their golden fixtures.

Every message registered by a module of the `protocol` package needs a builder in SAMPLES;
test_codec fails for any that has none. After an intended wire change, regenerate the
fixtures and review the diff:

    .venv/bin/python -m tests.unit.protocol.samples --write-golden
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any, Callable

import protocol
from protocol import activity, control, gftp, market, net, payment, vpn
from protocol.codec import Message, encode, registered
from protocol.identity import Identity

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "MALLORY",
    "SAMPLES",
    "GOLDEN_DIR",
    "REGENERATE_CMD",
    "PROVIDER",
    "REQUESTOR",
    "OFFER_PROPERTIES",
    "OFFER_CONSTRAINTS",
    "DEMAND_PROPERTIES",
    "DEMAND_CONSTRAINTS",
    "DEMAND_RANK",
    "protocol_messages",
    "market_offer",
    "debit_note",
    "invoice",
    "payment_sent",
    "PAYMENT_COEFFS",
    "market_demand",
    "requestor_proposal",
    "provider_proposal",
    "agreement_terms",
    "reason_text",
    "sample",
    "golden_path",
    "write_golden",
]

GOLDEN_DIR = Path(__file__).with_name("golden")
VPN_TUNNEL_ID = "5e" * 16
# An ICMP echo request from 192.168.0.2 to 192.168.0.3.
IPV4_PACKET = bytes.fromhex("4500001c0001000040010000c0a80002c0a800030800f7ff00000000")
REGENERATE_CMD = ".venv/bin/python -m tests.unit.protocol.samples --write-golden"

# Fixed keys: signatures are deterministic (RFC 6979), so the encoded samples are too.
ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
CAROL = Identity(bytes([3]) * 32)
MALLORY = Identity(bytes([0x66]) * 32)

T0_MS = 1_700_000_000_000

# The market samples: ALICE sells, BOB buys.
PROVIDER = ALICE
REQUESTOR = BOB
PLATFORM = "erc20-holesky-tglm"

# Flat properties of every JSON kind the market carries (lists, bools, ints, floats, strings).
OFFER_PROPERTIES: dict[str, Any] = {
    "golem.runtime.name": "wasmtime",
    "golem.runtime.version": "0.1.0",
    "golem.inf.cpu.threads": 4,
    "golem.inf.mem.gib": 2.0,
    "golem.node.id.name": "alpha",
    "golem.node.debug.subnet": "public",
    "golem.srv.caps.multi-activity": True,
    "golem.com.scheme": "payu",
    "golem.com.pricing.model": "linear",
    "golem.com.pricing.model.linear.coeffs": [0.025 / 3600, 0.005 / 3600, 0.0],
    "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
    f"golem.com.payment.platform.{PLATFORM}.address": PROVIDER.node_id,
}
OFFER_CONSTRAINTS = "(&(golem.node.debug.subnet=public)(golem.srv.comp.expiration>0))"

DEMAND_PROPERTIES: dict[str, Any] = {
    "golem.node.debug.subnet": "public",
    "golem.srv.comp.expiration": T0_MS + 1_800_000,
    "golem.srv.comp.task_package": "hash:sha3:0123abcd:http://198.51.100.9/image.gvmi",
    f"golem.com.payment.platform.{PLATFORM}.address": REQUESTOR.node_id,
    "golem.com.payment.chosen-platform": PLATFORM,
}
DEMAND_CONSTRAINTS = "(&(golem.runtime.name=wasmtime)(golem.node.debug.subnet=public)(golem.inf.mem.gib>=0.5))"
DEMAND_RANK = "-golem.com.pricing.model.linear.coeffs[0]"


def protocol_messages() -> dict[str, type[Message]]:
    """Every message registered by a module of the protocol package (all of them imported)."""
    for mod in pkgutil.walk_packages(protocol.__path__, "protocol."):
        importlib.import_module(mod.name)
    return {
        tag: cls
        for tag, cls in registered().items()
        if cls.__module__ == "protocol" or cls.__module__.startswith("protocol.")
    }


def peer_record(identity: Identity = ALICE, seq: int = 7) -> net.PeerRecord:
    """A signed record that lists an address, subnets and a via node."""
    return net.PeerRecord(
        node_id=identity.node_id,
        curve_key=identity.curve_public,
        addresses=("tcp://198.51.100.7:7464", "tcp://[2001:db8::7]:7464"),
        subnets=("public", "devnet"),
        via=(CAROL.node_id,),
        seq=seq,
    ).signed(identity)


def dial_out_record(identity: Identity = BOB) -> net.PeerRecord:
    """A signed record of a node that only dials out (no addresses, reachable via others)."""
    return net.PeerRecord(
        node_id=identity.node_id,
        curve_key=identity.curve_public,
        addresses=(),
        subnets=("public",),
        via=(ALICE.node_id, CAROL.node_id),
        seq=1,
    ).signed(identity)


def gossip_item(identity: Identity = ALICE, payload: bytes = b"offer:\x00\x01\x02", slot: str = "offers") -> net.GossipItem:
    """A live gossip item on the market topic."""
    return net.GossipItem.create(
        identity, "market.offer", payload, subnet="public", created_ms=T0_MS, expires_ms=T0_MS + 3_600_000, slot=slot
    )


def _hello() -> net.Hello:
    return net.Hello(record=peer_record(), neighbour=True)


def _hello_ack() -> net.HelloAck:
    return net.HelloAck(record=peer_record(BOB, seq=3), neighbour=False, peers=(peer_record(), dial_out_record()))


def _gossip_push() -> net.GossipPush:
    live = gossip_item()
    withdrawn = gossip_item(BOB, payload=b"old", slot="").withdrawal(BOB)
    return net.GossipPush(items=(live, withdrawn), solicited=True)


def _gossip_digest() -> net.GossipDigest:
    return net.GossipDigest(subnet="public", buckets=tuple(bytes([i]) * 8 for i in range(net.DIGEST_BUCKETS)))


def _gossip_ids() -> net.GossipIds:
    return net.GossipIds(
        subnet="public",
        buckets=(0, 17, 63),
        entries=((gossip_item().item_id, False), ("ab" * 32, True)),
    )


def _net_status() -> control.NetStatus:
    neighbour = control.NeighbourInfo(
        node_id=BOB.node_id,
        role="neighbour",
        outbound=True,
        address="tcp://198.51.100.8:7464",
        subnets=("public",),
        age_s=12.5,
        idle_s=0.25,
    )
    return control.NetStatus(
        node_id=ALICE.node_id,
        name="alpha",
        subnets=("public", "devnet"),
        listen="tcp://0.0.0.0:7464",
        addresses=("tcp://198.51.100.7:7464",),
        contact=f"{ALICE.node_id}@tcp://198.51.100.7:7464",
        neighbours=(neighbour,),
        known_peers=42,
        gossip_items=1234,
        uptime_s=3600.75,
    )


def _gossip_entry() -> control.GossipEntry:
    item = gossip_item()
    return control.GossipEntry(
        item_id=item.item_id,
        topic=item.topic,
        origin=item.origin,
        subnet=item.subnet,
        created_ms=item.created_ms,
        expires_ms=item.expires_ms,
        received_ms=T0_MS + 250,
        payload=item.payload,
    )


def _inbox_entry() -> control.InboxEntry:
    return control.InboxEntry(sender=BOB.node_id, text="héllo ✓", received_ms=T0_MS + 99)


def market_offer(
    identity: Identity = PROVIDER,
    properties: dict[str, Any] | None = None,
    constraints: str = OFFER_CONSTRAINTS,
    rank: str = "",
    created_ms: int = T0_MS,
    expires_ms: int = T0_MS + 3_600_000,
) -> market.MarketOffer:
    """An offer whose id is the hash of its content (OFFER_PROPERTIES unless given)."""
    props = dict(OFFER_PROPERTIES if properties is None else properties)
    return market.MarketOffer(
        offer_id=market.MarketOffer.content_id(identity.node_id, props, constraints, rank, created_ms, expires_ms),
        provider_id=identity.node_id,
        properties=props,
        constraints=constraints,
        rank=rank,
        created_ms=created_ms,
        expires_ms=expires_ms,
    )


def market_demand(
    identity: Identity = REQUESTOR,
    properties: dict[str, Any] | None = None,
    constraints: str = DEMAND_CONSTRAINTS,
    rank: str = DEMAND_RANK,
    created_ms: int = T0_MS + 500,
    expires_ms: int = T0_MS + 3_600_000,
) -> market.MarketDemand:
    """A demand whose id is the hash of its content (DEMAND_PROPERTIES unless given)."""
    props = dict(DEMAND_PROPERTIES if properties is None else properties)
    return market.MarketDemand(
        demand_id=market.MarketDemand.content_id(identity.node_id, props, constraints, rank, created_ms, expires_ms),
        requestor_id=identity.node_id,
        properties=props,
        constraints=constraints,
        rank=rank,
        created_ms=created_ms,
        expires_ms=expires_ms,
    )


def _proposal(
    prev_proposal_id: str, issuer: Identity, properties: dict[str, Any], constraints: str,
    created_ms: int, demand: market.MarketDemand | None,
) -> market.ProposalSent:
    demand_id, offer_id = market_demand().demand_id, market_offer().offer_id
    expires_ms = created_ms + 300_000
    return market.ProposalSent(
        proposal_id=market.ProposalSent.content_id(
            prev_proposal_id, demand_id, offer_id, issuer.node_id, properties, constraints, created_ms, expires_ms
        ),
        prev_proposal_id=prev_proposal_id,
        demand_id=demand_id,
        offer_id=offer_id,
        issuer_id=issuer.node_id,
        properties=dict(properties),
        constraints=constraints,
        created_ms=created_ms,
        expires_ms=expires_ms,
        demand=demand,
    )


def requestor_proposal() -> market.ProposalSent:
    """The requestor's first counter to the offer's Initial proposal, carrying the demand along."""
    demand, offer = market_demand(), market_offer()
    return _proposal(
        market.initial_proposal_id(demand.demand_id, offer.offer_id), REQUESTOR,
        DEMAND_PROPERTIES, DEMAND_CONSTRAINTS, T0_MS + 1_000, demand,
    )


def provider_proposal() -> market.ProposalSent:
    """The provider's answer to requestor_proposal (no demand attached)."""
    return _proposal(
        requestor_proposal().proposal_id, PROVIDER, OFFER_PROPERTIES, OFFER_CONSTRAINTS, T0_MS + 2_000, None
    )


def agreement_terms(**changes: Any) -> market.AgreementTerms:
    """The terms made from provider_proposal and requestor_proposal (changes replace fields, id kept)."""
    offer_side, demand_side = provider_proposal(), requestor_proposal()
    created_ms = T0_MS + 5_000
    fields: dict[str, Any] = dict(
        agreement_id=market.AgreementTerms.make_id(
            offer_side.proposal_id, demand_side.proposal_id, REQUESTOR.node_id, created_ms
        ),
        requestor_id=REQUESTOR.node_id,
        provider_id=PROVIDER.node_id,
        demand_id=demand_side.demand_id,
        offer_id=offer_side.offer_id,
        demand_proposal_id=demand_side.proposal_id,
        offer_proposal_id=offer_side.proposal_id,
        demand_properties=dict(demand_side.properties),
        demand_constraints=demand_side.constraints,
        offer_properties=dict(offer_side.properties),
        offer_constraints=offer_side.constraints,
        valid_to_ms=T0_MS + 1_800_000,
        created_ms=created_ms,
        app_session_id="session-1",
    )
    fields.update(changes)
    return market.AgreementTerms(**fields)


def reason_text(reason: dict[str, Any]) -> str:
    """A reason as the market signs it: canonical JSON."""
    return json.dumps(reason, sort_keys=True, separators=(",", ":"))


_REJECT_REASON: dict[str, Any] = {"message": "no free capacity", "golem.proposal.rejection.is-final": True}
_END_REASON: dict[str, Any] = {"message": "work done", "golem.requestor.code": "Success", "attempts": [1, 2.5, None]}


def _agreement_proposed() -> market.AgreementProposed:
    terms = agreement_terms()
    return market.AgreementProposed(terms=terms, requestor_signature=market.sign_act(REQUESTOR, "propose", terms))


def _agreement_approved() -> market.AgreementApproved:
    terms, at = agreement_terms(), T0_MS + 6_000
    return market.AgreementApproved(
        agreement_id=terms.agreement_id, approved_ms=at, provider_signature=market.sign_act(PROVIDER, "approve", terms, at)
    )


def _agreement_rejected() -> market.AgreementRejected:
    terms, at = agreement_terms(), T0_MS + 6_000
    return market.AgreementRejected(
        agreement_id=terms.agreement_id, reason=dict(_REJECT_REASON), ts_ms=at,
        signature=market.sign_act(PROVIDER, "reject", terms, reason_text(_REJECT_REASON), at),
    )


def _agreement_cancelled() -> market.AgreementCancelled:
    terms, at = agreement_terms(), T0_MS + 5_500
    reason = {"message": "found a cheaper offer"}
    return market.AgreementCancelled(
        agreement_id=terms.agreement_id, reason=reason, ts_ms=at,
        signature=market.sign_act(REQUESTOR, "cancel", terms, reason_text(reason), at),
    )


def _agreement_terminated() -> market.AgreementTerminated:
    terms, at = agreement_terms(), T0_MS + 600_000
    return market.AgreementTerminated(
        agreement_id=terms.agreement_id, terminator=REQUESTOR.node_id, reason=dict(_END_REASON), ts_ms=at,
        signature=market.sign_act(REQUESTOR, "terminate", terms, reason_text(_END_REASON), at),
    )


def _control_result() -> control.ControlResult:
    # As node.control_api.plain() renders a Proposal: a map with lists, None and numbers inside.
    proposal = provider_proposal()
    return control.ControlResult(
        value={
            "type": "Proposal",
            "proposal_id": proposal.proposal_id,
            "issuer_id": proposal.issuer_id,
            "properties": dict(proposal.properties),
            "constraints": proposal.constraints,
            "state": "Draft",
            "timestamp_ms": proposal.created_ms,
            "prev_proposal_id": None,
            "demand_id": proposal.demand_id,
            "offer_id": proposal.offer_id,
        }
    )


ACTIVITY_ID = "0f" * 16
BATCH_ID = "1e" * 16
EXE_SCRIPT = (
    {"deploy": {}},
    {"start": {}},
    {"run": {"entry_point": "wc", "args": ["/input/data.txt", "/output/counts.txt"], "capture": {"stdout": {"atEnd": {}}}}},
)


def exe_result(index: int = 2, result: str = "Ok", finished: bool = True) -> activity.ExeResult:
    """A command result; an Error one carries a message naming the command."""
    if result == "Ok":
        return activity.ExeResult(index, T0_MS + 3_000 + index, "Ok", "3 7 41\n", "", None, finished)
    return activity.ExeResult(index, T0_MS + 3_000 + index, "Error", "", "wc: cannot open", f"command {index} (run) failed", finished)


GFTP_TRANSFER_ID = "2d" * 16
GFTP_FILE_HASH = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"  # sha3-256 of b""
GFTP_SLOT_ID = "3c" * 32

# The payment samples: ALICE (the provider) bills BOB (the requestor).
PAYMENT_COEFFS = (0.025 / 3600, 0.005 / 3600, 0.0)


def debit_note(total_wei: int = 1_250_000_000_000_000, due: bool = True) -> payment.DebitNote:
    """A signed mid-agreement debit note of the sample activity."""
    return payment.make_debit_note(
        PROVIDER, agreement_id=agreement_terms().agreement_id, activity_id=ACTIVITY_ID, recipient_id=REQUESTOR.node_id,
        payment_platform=PLATFORM, total_amount_due_wei=total_wei, usage_counter_vector=(120.5, 180.0),
        timestamp_ms=T0_MS + 120_000, previous_debit_note_id="4b" * 32, payment_due_ms=T0_MS + 240_000 if due else None,
    )


def invoice(amount_wei: int = 2**70 + 7) -> payment.Invoice:
    """A signed invoice for the sample agreement (an amount beyond msgpack's 64-bit ints)."""
    return payment.make_invoice(
        PROVIDER, agreement_id=agreement_terms().agreement_id, activity_ids=(ACTIVITY_ID,), recipient_id=REQUESTOR.node_id,
        payment_platform=PLATFORM, amount_wei=amount_wei, payment_due_ms=T0_MS + 900_000, timestamp_ms=T0_MS + 700_000,
    )


def payment_sent() -> payment.PaymentSent:
    """BOB's signed notice of a batch transfer paying the sample invoice."""
    inv = invoice()
    return payment.make_payment_sent(
        REQUESTOR, payee_id=PROVIDER.node_id, platform=PLATFORM, amount_wei=2**70 + 7, tx_hash="0x" + "5a" * 32,
        document_ids=(inv.invoice_id,), timestamp_ms=T0_MS + 800_000,
        agreement_amounts=((inv.agreement_id, 2**70 + 7),),
    )


SAMPLES: dict[str, Callable[[], Message]] = {
    # protocol.net
    net.PeerRecord.TYPE: peer_record,
    net.Hello.TYPE: _hello,
    net.HelloAck.TYPE: _hello_ack,
    net.Heartbeat.TYPE: lambda: net.Heartbeat(seq=2**40 + 3),
    net.Goodbye.TYPE: lambda: net.Goodbye(reason="shutting down"),
    net.PeerExchange.TYPE: lambda: net.PeerExchange(peers=(peer_record(), dial_out_record())),
    net.Routed.TYPE: lambda: net.Routed(target=BOB.node_id, ttl=6, frame=b"\x97\x01frame-bytes\xff"),
    net.GossipItem.TYPE: gossip_item,
    net.GossipPush.TYPE: _gossip_push,
    net.GossipDigest.TYPE: _gossip_digest,
    net.GossipIds.TYPE: _gossip_ids,
    net.GossipPull.TYPE: lambda: net.GossipPull(ids=(gossip_item().item_id, "cd" * 32)),
    # protocol.control
    control.ControlFailed.TYPE: lambda: control.ControlFailed(error="PeerUnreachableError", message="no route"),
    control.NetStatusRequest.TYPE: control.NetStatusRequest,
    control.NeighbourInfo.TYPE: lambda: _net_status().neighbours[0],
    control.NetStatus.TYPE: _net_status,
    control.GossipPublishRequest.TYPE: lambda: control.GossipPublishRequest(
        topic="market.offer", payload=b"\x00payload", ttl_s=30.5, subnet=""
    ),
    control.GossipPublished.TYPE: lambda: control.GossipPublished(item_id=gossip_item().item_id, created_ms=T0_MS),
    control.GossipWithdrawRequest.TYPE: lambda: control.GossipWithdrawRequest(item_id=gossip_item().item_id),
    control.GossipListRequest.TYPE: lambda: control.GossipListRequest(topic="market.offer"),
    control.GossipEntry.TYPE: _gossip_entry,
    control.GossipList.TYPE: lambda: control.GossipList(entries=(_gossip_entry(),)),
    control.TextNote.TYPE: lambda: control.TextNote(text="hi there"),
    control.DirectSendRequest.TYPE: lambda: control.DirectSendRequest(recipient=BOB.node_id, text="hi there"),
    control.DirectSent.TYPE: lambda: control.DirectSent(path="route"),
    control.InboxRequest.TYPE: control.InboxRequest,
    control.InboxEntry.TYPE: _inbox_entry,
    control.Inbox.TYPE: lambda: control.Inbox(entries=(_inbox_entry(),)),
    control.NetCountersRequest.TYPE: control.NetCountersRequest,
    control.NetCounters.TYPE: lambda: control.NetCounters(
        counters={"frames_in": 1024, "frames_out": 998, "rejected.signature": 3, "gossip.items": 0}
    ),
    control.ControlCall.TYPE: lambda: control.ControlCall(
        target="market",
        method="subscribe_demand",
        args={"properties": dict(DEMAND_PROPERTIES), "constraints": DEMAND_CONSTRAINTS, "rank": DEMAND_RANK, "ttl_s": 60.0},
    ),
    control.ControlResult.TYPE: _control_result,
    # protocol.market
    market.MarketOffer.TYPE: market_offer,
    market.MarketDemand.TYPE: market_demand,
    market.ProposalSent.TYPE: requestor_proposal,
    market.ProposalRejected.TYPE: lambda: market.ProposalRejected(
        proposal_id=requestor_proposal().proposal_id,
        demand_id=market_demand().demand_id,
        offer_id=market_offer().offer_id,
        reason=dict(_REJECT_REASON),
    ),
    market.AgreementTerms.TYPE: agreement_terms,
    market.AgreementProposed.TYPE: _agreement_proposed,
    market.AgreementApproved.TYPE: _agreement_approved,
    market.AgreementRejected.TYPE: _agreement_rejected,
    market.AgreementCancelled.TYPE: _agreement_cancelled,
    market.AgreementTerminated.TYPE: _agreement_terminated,
    market.AgreementAck.TYPE: lambda: market.AgreementAck(
        agreement_id=agreement_terms().agreement_id, acked=market.AgreementTerminated.TYPE
    ),
    # protocol.activity
    activity.ActivityCreate.TYPE: lambda: activity.ActivityCreate(ACTIVITY_ID, agreement_terms().agreement_id),
    activity.ActivityExec.TYPE: lambda: activity.ActivityExec(ACTIVITY_ID, BATCH_ID, EXE_SCRIPT),
    activity.ActivityDestroy.TYPE: lambda: activity.ActivityDestroy(ACTIVITY_ID),
    activity.ActivityQuery.TYPE: lambda: activity.ActivityQuery(ACTIVITY_ID),
    activity.ExeResult.TYPE: exe_result,
    activity.ActivityUpdate.TYPE: lambda: activity.ActivityUpdate(
        ACTIVITY_ID, agreement_terms().agreement_id, "Ready", "", "", (0.25, 12.5), T0_MS + 5_000, BATCH_ID,
        (exe_result(0, "Ok", False), exe_result(1, "Error", True)),
    ),
    activity.ActivityRuntimeEvent.TYPE: lambda: activity.ActivityRuntimeEvent(
        ACTIVITY_ID, BATCH_ID, 2, T0_MS + 4_000, "finished", "", 3, "wc exited with code 3"
    ),
    activity.ChildRunBatch.TYPE: lambda: activity.ChildRunBatch(BATCH_ID, EXE_SCRIPT),
    activity.ChildShutdown.TYPE: activity.ChildShutdown,
    activity.ChildEvent.TYPE: lambda: activity.ChildEvent(BATCH_ID, 2, "stdout", "3 7 41\n", None, None),
    activity.ChildResult.TYPE: lambda: activity.ChildResult(BATCH_ID, exe_result(2, "Ok", True), "Ready"),
    activity.ChildUsage.TYPE: lambda: activity.ChildUsage(0.5, 3.25, 48 * 2**20),
    # protocol.gftp
    gftp.GftpRequestChunk.TYPE: lambda: gftp.GftpRequestChunk(GFTP_TRANSFER_ID, GFTP_FILE_HASH, 262_144, 262_144),
    gftp.GftpChunk.TYPE: lambda: gftp.GftpChunk(GFTP_TRANSFER_ID, 262_144, b"word count input\n\x00\xff", 262_163),
    gftp.GftpFailed.TYPE: lambda: gftp.GftpFailed(
        GFTP_TRANSFER_ID, "refused", f"file {GFTP_FILE_HASH} is not published for node {CAROL.node_id}"
    ),
    gftp.GftpUploadChunk.TYPE: lambda: gftp.GftpUploadChunk(GFTP_TRANSFER_ID, GFTP_SLOT_ID, 0, b"3 7 41\n", 7),
    gftp.GftpUploadAck.TYPE: lambda: gftp.GftpUploadAck(GFTP_TRANSFER_ID, 0, 7),
    gftp.GftpUploadFinish.TYPE: lambda: gftp.GftpUploadFinish(GFTP_TRANSFER_ID, GFTP_SLOT_ID, 7, GFTP_FILE_HASH),
    # protocol.activity: VPN packets and maps
    activity.ActivityPackets.TYPE: lambda: activity.ActivityPackets("3f2a9c", (IPV4_PACKET, IPV4_PACKET[:20])),
    activity.ActivityVpnNodes.TYPE: lambda: activity.ActivityVpnNodes(
        "3f2a9c", {"192.168.0.1": ALICE.node_id, "192.168.0.2": BOB.node_id}
    ),
    activity.ChildPackets.TYPE: lambda: activity.ChildPackets("3f2a9c", (IPV4_PACKET,)),
    # protocol.vpn
    vpn.VpnOpen.TYPE: lambda: vpn.VpnOpen(VPN_TUNNEL_ID, "3f2a9c", "192.168.0.2", 80),
    vpn.VpnOpened.TYPE: lambda: vpn.VpnOpened(VPN_TUNNEL_ID, "cannot connect to port 80 of the service: Connection refused"),
    vpn.VpnData.TYPE: lambda: vpn.VpnData(VPN_TUNNEL_ID, 3, b"GET / HTTP/1.0\r\n\r\n\x00\xff"),
    vpn.VpnAck.TYPE: lambda: vpn.VpnAck(VPN_TUNNEL_ID, 4, 2),
    vpn.VpnClose.TYPE: lambda: vpn.VpnClose(VPN_TUNNEL_ID, 9, "the service closed the connection"),
    gftp.GftpUploadDone.TYPE: lambda: gftp.GftpUploadDone(GFTP_TRANSFER_ID, 7, GFTP_FILE_HASH),
    # protocol.payment
    payment.DebitNote.TYPE: debit_note,
    payment.Invoice.TYPE: invoice,
    payment.DocumentAccepted.TYPE: lambda: payment.accept_document(
        REQUESTOR, document_id=debit_note().debit_note_id, kind=payment.DEBIT_NOTE,
        total_amount_accepted_wei=1_250_000_000_000_000, allocation_id="6d" * 16, timestamp_ms=T0_MS + 125_000,
    ),
    payment.DocumentRejected.TYPE: lambda: payment.reject_document(
        REQUESTOR, document_id=invoice().invoice_id, kind=payment.INVOICE, reason="IncorrectAmount",
        message="invoice asks more than the usage seen prices at", timestamp_ms=T0_MS + 710_000,
        total_amount_accepted_wei=1_250_000_000_000_000,
    ),
    payment.PaymentSent.TYPE: payment_sent,
    payment.DocumentAck.TYPE: lambda: payment.DocumentAck(
        document_id=invoice().invoice_id, kind=payment.INVOICE, acked=payment.DocumentAccepted.TYPE
    ),
}


def sample(tag: str) -> Message:
    """The sample instance of the message registered under tag."""
    return SAMPLES[tag]()


def golden_path(tag: str) -> Path:
    """Where the golden hex of a message's sample lives."""
    return GOLDEN_DIR / f"{tag}.hex"


def write_golden() -> list[str]:
    """(Re)write the fixture of every message, remove fixtures of unknown tags; returns the tags written."""
    tags = sorted(protocol_messages())
    missing = [t for t in tags if t not in SAMPLES]
    if missing:
        raise SystemExit(f"no sample for {', '.join(missing)}: add one to SAMPLES in {Path(__file__).name}")
    GOLDEN_DIR.mkdir(exist_ok=True)
    for stale in GOLDEN_DIR.glob("*.hex"):
        if stale.name[: -len(".hex")] not in tags:
            stale.unlink()
    for tag in tags:
        golden_path(tag).write_text(encode(sample(tag)).hex() + "\n")
    return tags


def main(argv: list[str] | None = None) -> int:
    """Command line: --write-golden rewrites the fixtures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-golden", action="store_true", help="rewrite tests/unit/protocol/golden/*.hex")
    args = parser.parse_args(argv)
    if not args.write_golden:
        parser.print_help()
        return 2
    tags = write_golden()
    print(f"wrote {len(tags)} golden fixtures to {GOLDEN_DIR.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
