"""The provider for people who run it, with real node processes: presets and settings changed through
the CLI while the node runs, allow and block lists, resource limits across activities, status and metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.control import runtime_file
from protocol.control import ControlCall
from protocol.errors import ControlError
from tests.integration.harness import REPO, NodeProcess, Testnet, market_call, wait_for

pytestmark = pytest.mark.integration

PLATFORM = "erc20-holesky-tglm"
# Activities here are created but never deployed: the package is only fetched by `deploy`.
UNUSED_PACKAGE = "hash:sha3:" + "0" * 56 + ":http://127.0.0.1:9/unused.zip"


def loam(node: NodeProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `loam` CLI on a node's data dir, as a person would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--data-dir", str(node.data_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    if check:
        assert proc.returncode == 0, f"loam {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def offers_of(requestor: NodeProcess, provider: NodeProcess) -> list[dict[str, Any]]:
    """The provider's offers as the requestor's market knows them."""
    return [o for o in requestor.market("known_offers") if o["provider_id"] == provider.node_id]


def coeffs(cpu_per_hour: float, env_per_hour: float, start_fee: float) -> list[float]:
    return [cpu_per_hour / 3600.0, env_per_hour / 3600.0, start_fee]


def demand_props(requestor: NodeProcess) -> dict[str, Any]:
    return {
        "golem.node.debug.subnet": "public",
        "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": requestor.node_id,
        "golem.srv.comp.task_package": UNUSED_PACKAGE,
    }


def counter_first_offer(requestor: NodeProcess, constraints: str = "(golem.runtime.name=wasmtime)") -> dict[str, Any]:
    """Subscribe a demand, counter the first Initial proposal; returns the provider's answer event."""
    props = demand_props(requestor)
    sub = market_call(requestor, "subscribe_demand", {"properties": props, "constraints": constraints})
    initial = wait_for("an Initial proposal", lambda: market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 1.0}), 15)
    market_call(requestor, "counter_proposal", {
        "sub_id": sub, "proposal_id": initial[0]["proposal"]["proposal_id"], "properties": props, "constraints": "()",
    })
    answer = wait_for("the provider's answer", lambda: market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 1.0}), 15)
    return answer[0]


def agreement(requestor: NodeProcess, constraints: str = "(golem.runtime.name=wasmtime)") -> str:
    """A full negotiation to an Approved agreement."""
    answer = counter_first_offer(requestor, constraints)
    assert answer["type"] == "ProposalEvent", answer
    agreement_id = market_call(requestor, "create_agreement", {
        "proposal_id": answer["proposal"]["proposal_id"], "valid_to_ms": int(time.time() * 1000) + 600_000,
    })
    market_call(requestor, "confirm_agreement", {"agreement_id": agreement_id})
    assert market_call(requestor, "wait_agreement", {"agreement_id": agreement_id, "timeout_s": 10}) == "Approved"
    return agreement_id


def activity(node: NodeProcess, method: str, **args: Any) -> Any:
    return node.call(ControlCall("activity", method, args), timeout_s=60).value


def scrape(node: NodeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The node's metrics over HTTP: {(sample name, sorted labels): value}."""
    url = json.loads(runtime_file(node.data_dir).read_text())["metrics"]
    assert url, "the node serves no metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


PROVIDER_ENV = {"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__MAX_AGREEMENTS": "4"}


def test_presets_and_prices_changed_through_the_cli_are_republished_to_the_market(testnet: Testnet) -> None:
    provider = testnet.add("provider", env=PROVIDER_ENV)
    requestor = testnet.add("requestor")
    implicit = wait_for("the implicit offer", lambda: offers_of(requestor, provider), 15)
    assert [o["properties"]["golem.com.pricing.model.linear.coeffs"] for o in implicit] == [coeffs(0.025, 0.005, 0.0)]

    out = loam(provider, "provider", "preset", "create", "--name", "cheap", "--runtime", "wasmtime",
               "--starting-fee", "0.5", "--env-per-hour", "0.036", "--cpu-per-hour", "0.072", "--cores", "1").stdout
    assert "created preset cheap (active); the running node offers 1 preset (1 re-published, 0 unchanged)" in out

    def prices() -> list[list[float]]:
        return sorted(o["properties"]["golem.com.pricing.model.linear.coeffs"] for o in offers_of(requestor, provider))

    # The preset replaces the implicit offer: the old one is withdrawn network-wide.
    wait_for("the preset's offer alone", lambda: prices() == [coeffs(0.072, 0.036, 0.5)], 15)

    loam(provider, "provider", "preset", "update", "--name", "cheap", "--cpu-per-hour", "0.144")
    wait_for("the new price", lambda: prices() == [coeffs(0.144, 0.036, 0.5)], 15)

    loam(provider, "provider", "preset", "create", "--name", "second", "--runtime", "wasmtime",
         "--starting-fee", "0", "--env-per-hour", "0", "--cpu-per-hour", "1")
    wait_for("two offers", lambda: prices() == sorted([coeffs(0.144, 0.036, 0.5), coeffs(1.0, 0.0, 0.0)]), 15)
    out = loam(provider, "provider", "preset", "deactivate", "second").stdout
    assert "the running node offers 1 preset (0 re-published, 1 unchanged)" in out
    wait_for("one offer again", lambda: prices() == [coeffs(0.144, 0.036, 0.5)], 15)

    # The harness runs the node with --name, which wins over loam.toml: the CLI says so.
    out = loam(provider, "provider", "settings", "set", "--node-name", "garage", "--debit-note-interval", "60")
    assert "warning: the running node keeps node.name = 'provider': its command line" in out.stderr
    renamed = wait_for(
        "the offer with the new debit-note interval",
        lambda: [
            o for o in offers_of(requestor, provider)
            if o["properties"]["golem.com.scheme.payu.debit-note.interval-sec?"] == 60.0
        ],
        15,
    )
    assert renamed[0]["properties"]["golem.node.id.name"] == "provider"

    status = json.loads(loam(provider, "provider", "status", "--json").stdout)
    by_name = {o["preset"]: o for o in status["offers"]}
    assert by_name["cheap"]["offer_id"] == renamed[0]["offer_id"]
    assert by_name["cheap"]["cpu_per_hour"] == 0.144 and by_name["cheap"]["runtime"] == "wasmtime"
    assert by_name["second"]["offer_id"] is None and by_name["second"]["not_offered"] == "inactive"
    assert status["rules"]["node_name"] == "provider" and status["rules"]["debit_note_interval_s"] == 60.0
    assert status["earnings"] == "payments not enabled" or isinstance(status["earnings"], dict)
    table = loam(provider, "provider", "status").stdout
    assert "cheap" in table and "0.144" in table and "earnings" in table
    assert json.loads(loam(provider, "provider", "settings", "show", "--json").stdout)["node_name"] == "garage"

    # A bad value changes nothing: the node keeps offering what it did.
    bad = loam(provider, "provider", "settings", "set", "--cores", "0", check=False)
    assert bad.returncode == 2 and "provider.cores" in bad.stderr and "must be at least 1" in bad.stderr
    bad = loam(provider, "provider", "settings", "set", "--payment-network", "moon", check=False)
    assert bad.returncode == 2 and "'moon' is not a known payment network" in bad.stderr
    assert prices() == [coeffs(0.144, 0.036, 0.5)]

    # A file broken by hand: the reload is refused with the reason, and the offers stay.
    good = (provider.data_dir / "loam.toml").read_text()
    (provider.data_dir / "loam.toml").write_text("[provider\n")
    with pytest.raises(ControlError, match="loam.toml is not valid TOML"):
        provider.call(ControlCall("provider", "reload", {}), timeout_s=30)
    (provider.data_dir / "loam.toml").write_text(good)
    assert provider.alive() and prices() == [coeffs(0.144, 0.036, 0.5)]
    assert provider.call(ControlCall("provider", "offers", {})).value[0]["offer_id"]

    # Removing every preset brings back the implicit one from the [provider] settings.
    loam(provider, "provider", "preset", "remove", "cheap")
    loam(provider, "provider", "preset", "remove", "second")
    wait_for("the implicit offer again", lambda: prices() == [coeffs(0.025, 0.005, 0.0)], 15)


def test_blocked_and_not_allowed_requestors_are_refused_with_a_reason(testnet: Testnet) -> None:
    provider = testnet.add("provider", env=PROVIDER_ENV)
    requestor = testnet.add("requestor")
    [offer] = wait_for("the offer", lambda: offers_of(requestor, provider), 15)

    out = loam(provider, "provider", "settings", "set", "--block-requestors", requestor.node_id).stdout
    # The lists are negotiation rules, not part of the offer: it stays as it is.
    assert "(0 re-published, 1 unchanged)" in out
    assert [o["offer_id"] for o in offers_of(requestor, provider)] == [offer["offer_id"]]
    answer = counter_first_offer(requestor)
    assert answer["type"] == "ProposalRejectedEvent"
    assert answer["reason"]["message"] == f"requestor {requestor.node_id} is blocked by this provider"

    other = "0x" + "ab" * 20
    loam(provider, "provider", "settings", "set", "--block-requestors", "", "--allow-requestors", other)
    answer = counter_first_offer(requestor)
    assert answer["type"] == "ProposalRejectedEvent"
    assert answer["reason"]["message"] == f"requestor {requestor.node_id} is not on this provider's allow-list"

    loam(provider, "provider", "settings", "set", "--allow-requestors", f"{other},{requestor.node_id}")
    assert counter_first_offer(requestor)["type"] == "ProposalEvent"
    shown = json.loads(loam(provider, "provider", "settings", "show", "--json").stdout)
    assert shown["allow_requestors"] == [other, requestor.node_id.lower()] and shown["block_requestors"] == []


def test_activities_together_stay_within_the_cores_and_run_on_the_offers_runtime(testnet: Testnet) -> None:
    # The [provider] runtime says vm (no Docker engine needed: no preset sells it); the one
    # preset sells wasmtime with 1 of the node's 2 cores per activity. Set before the node
    # starts, with no node running: the CLI only writes the files.
    provider = testnet.add("provider", start=False, env=PROVIDER_ENV)
    out = loam(provider, "provider", "settings", "set", "--runtime", "vm", "--cores", "2", "--memory", "4").stdout
    assert "no node is running" in out
    loam(provider, "provider", "preset", "create", "--name", "wasm-1core", "--runtime", "wasmtime",
         "--starting-fee", "0", "--env-per-hour", "0.01", "--cpu-per-hour", "0.1", "--cores", "1", "--memory", "1", "--disk", "0.5")
    provider.start()
    requestor = testnet.add("requestor")
    wait_for("the offer", lambda: offers_of(requestor, provider), 15)
    agreement_id = agreement(requestor)

    first, second = (activity(requestor, "create", agreement_id=agreement_id) for _ in range(2))
    assert first["state"] == "Initialized" and second["state"] == "Initialized", (first, second)
    third = activity(requestor, "create", agreement_id=agreement_id)
    third = wait_for(
        "the third activity's refusal",
        lambda: (s := activity(requestor, "state", activity_id=third["activity_id"]))["state"] == "Terminated" and s,
        15,
    )
    assert "not enough free cores on this provider: the activity needs 1, 2 of 2 are in use" in third["reason"]
    running = activity(provider, "running")
    assert len(running) == 2

    status = json.loads(loam(provider, "provider", "status", "--json").stdout)
    assert status["resources"]["cores"] == {"used": 2.0, "limit": 2.0}
    assert status["resources"]["memory_gib"] == {"used": 2.0, "limit": 4.0}
    assert [a["agreement_id"] for a in status["agreements"]] == [agreement_id]
    assert status["agreements"][0]["runtime"] == "wasmtime"
    assert len(status["activities"]) == 2

    # One ends: the cores it held are free again.
    activity(requestor, "destroy", activity_id=first["activity_id"])
    wait_for("the provider to free its cores", lambda: len(activity(provider, "running")) == 1, 15)
    assert activity(requestor, "create", agreement_id=agreement_id)["state"] == "Initialized"

    # A raised limit applies at once, to the running node.
    loam(provider, "provider", "settings", "set", "--cores", "3")
    assert activity(requestor, "create", agreement_id=agreement_id)["state"] == "Initialized"
    assert len(activity(provider, "running")) == 3


def test_the_metrics_endpoint_reports_real_values(testnet: Testnet) -> None:
    provider = testnet.add("provider", env=PROVIDER_ENV)
    requestor = testnet.add("requestor")
    wait_for("the offer", lambda: offers_of(requestor, provider), 15)
    agreement(requestor)

    def approved(node: NodeProcess, role: str) -> bool:
        return scrape(node).get(("loam_agreements", (("role", role), ("state", "Approved")))) == 1.0

    wait_for("the requestor's metrics to show the agreement", lambda: approved(requestor, "requestor"), 10)
    wait_for("the provider's metrics to show the agreement", lambda: approved(provider, "provider"), 10)
    r, p = scrape(requestor), scrape(provider)
    assert r[("loam_peers", (("role", "neighbour"),))] >= 1
    assert r[("loam_offers_known", ())] == 1.0
    assert r[("loam_gossip_items", ())] >= 2  # at least the peer records and the offer
    assert r[("loam_net_frames_in_total", ())] > 0 and r[("loam_net_frames_out_total", ())] > 0
    assert p[("loam_demands_known", ())] >= 1
    assert p[("loam_provider_offers", (("runtime", "wasmtime"),))] == 1.0
    assert p[("loam_resources_limit", (("resource", "cores"),))] == 1.0
    for node in (r, p):
        for source in ("net", "market", "activity", "provider"):
            assert node[("loam_scrape_errors", (("source", source),))] == 0.0
    # Counters only go up.
    before = scrape(requestor)[("loam_net_frames_in_total", ())]
    wait_for("more frames", lambda: scrape(requestor)[("loam_net_frames_in_total", ())] > before, 10)
