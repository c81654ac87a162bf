"""The provider's offer from its settings, and the rules by which it takes or refuses a demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.provider.offer import (
    USAGE_VECTOR,
    Verdict,
    check_demand,
    linear_coeffs,
    offer_constraints,
    offer_properties,
    payment_platform,
)
from node.settings import ProviderSettings, load_settings
from protocol.constraints import Tri, parse
from protocol.properties import validate_properties
from protocol.rank import parse_rank
from tests.unit.protocol.samples import ALICE, BOB, T0_MS

NOW_MS = T0_MS


def provider(tmp_path: Path, **overrides: Any) -> ProviderSettings:
    return load_settings(tmp_path, {f"provider.{k}": v for k, v in overrides.items()}, environ={}).provider


def good_demand(cfg: ProviderSettings, expires_in_s: float = 3600.0) -> dict[str, Any]:
    return {
        "golem.srv.comp.expiration": NOW_MS + int(expires_in_s * 1000),
        "golem.node.debug.subnet": "public",
        f"golem.com.payment.platform.{payment_platform(cfg)}.address": BOB.node_id,
    }


# ---- payment platform and prices --------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("holesky", "erc20-holesky-tglm"),
        ("polygon", "erc20-polygon-glm"),
        ("mainnet", "erc20-mainnet-glm"),
        ("amoy", "erc20-amoy-tglm"),
    ],
)
def test_payment_platform_uses_glm_on_real_networks_and_tglm_on_test_networks(
    tmp_path: Path, network: str, expected: str
) -> None:
    assert payment_platform(provider(tmp_path, payment_network=network)) == expected


def test_payment_platform_names_the_driver(tmp_path: Path) -> None:
    assert payment_platform(provider(tmp_path, payment_driver="zksync", payment_network="mainnet")) == "zksync-mainnet-glm"


def test_linear_coeffs_are_per_second_prices_then_the_start_fee(tmp_path: Path) -> None:
    cfg = provider(tmp_path, cpu_per_hour=0.036, env_per_hour=0.0072, start_fee=0.5)
    cpu_per_s, env_per_s, start = linear_coeffs(cfg)
    assert cpu_per_s == pytest.approx(0.036 / 3600) == pytest.approx(0.00001)
    assert env_per_s == pytest.approx(0.0072 / 3600) == pytest.approx(0.000002)
    assert start == 0.5
    assert all(type(c) is float for c in linear_coeffs(cfg))


def test_linear_coeffs_of_free_compute_are_zero(tmp_path: Path) -> None:
    cfg = provider(tmp_path, cpu_per_hour=0.0, env_per_hour=0.0, start_fee=0.0)
    assert linear_coeffs(cfg) == [0.0, 0.0, 0.0]


def test_an_hour_of_usage_costs_the_hourly_prices(tmp_path: Path) -> None:
    """cpu_sec prices cpu time, duration_sec the environment: the usage vector order."""
    cfg = provider(tmp_path, cpu_per_hour=0.025, env_per_hour=0.005, start_fee=0.1)
    coeffs = linear_coeffs(cfg)
    usage = {"golem.usage.cpu_sec": 3600.0, "golem.usage.duration_sec": 3600.0}
    cost = sum(c * usage[name] for c, name in zip(coeffs, USAGE_VECTOR)) + coeffs[-1]
    assert cost == pytest.approx(0.025 + 0.005 + 0.1)


# ---- offer properties and constraints ---------------------------------------------------------


def test_offer_properties_describe_a_payu_linear_offer(tmp_path: Path) -> None:
    cfg = provider(tmp_path, runtime="vm", cores=2, memory_gib=3.5, storage_gib=10.0)
    props = offer_properties(cfg, ALICE.node_id, "alpha", "devnet")
    assert props["golem.com.scheme"] == "payu"
    assert props["golem.com.pricing.model"] == "linear"
    assert props["golem.com.usage.vector"] == USAGE_VECTOR
    assert len(props["golem.com.pricing.model.linear.coeffs"]) == len(props["golem.com.usage.vector"]) + 1
    assert props["golem.com.pricing.model.linear.coeffs"] == linear_coeffs(cfg)
    assert props[f"golem.com.payment.platform.{payment_platform(cfg)}.address"] == ALICE.node_id
    assert props["golem.node.debug.subnet"] == "devnet"
    assert props["golem.node.id.name"] == "alpha"
    assert props["golem.runtime.name"] == "vm"
    assert props["golem.runtime.version"] == cfg.runtime_version
    assert props["golem.inf.mem.gib"] == 3.5
    assert props["golem.inf.storage.gib"] == 10.0
    assert 1 <= props["golem.inf.cpu.threads"] <= 2


def test_offer_names_exactly_one_payment_platform(tmp_path: Path) -> None:
    cfg = provider(tmp_path, payment_network="polygon")
    props = offer_properties(cfg, ALICE.node_id, "alpha", "public")
    platforms = [k for k in props if k.startswith("golem.com.payment.platform.")]
    assert platforms == ["golem.com.payment.platform.erc20-polygon-glm.address"]


def test_offer_properties_are_a_valid_flat_property_map(tmp_path: Path) -> None:
    props = offer_properties(provider(tmp_path), ALICE.node_id, "alpha", "public")
    assert validate_properties(props) == props


def test_cheapest_first_rank_reads_the_cpu_price(tmp_path: Path) -> None:
    cfg = provider(tmp_path, cpu_per_hour=0.036)
    props = offer_properties(cfg, ALICE.node_id, "alpha", "public")
    assert parse_rank("-golem.com.pricing.model.linear.coeffs[0]").evaluate(props) == pytest.approx(-0.00001)


def test_offer_constraints_ask_for_the_subnet_and_an_expiration(tmp_path: Path) -> None:
    constraint = parse(offer_constraints("devnet"))
    demand = good_demand(provider(tmp_path))
    assert constraint.evaluate({**demand, "golem.node.debug.subnet": "devnet"}) is Tri.TRUE
    assert constraint.evaluate({**demand, "golem.node.debug.subnet": "public"}) is Tri.FALSE
    no_expiration = {k: v for k, v in demand.items() if k != "golem.srv.comp.expiration"}
    assert constraint.evaluate({**no_expiration, "golem.node.debug.subnet": "devnet"}) is Tri.UNDEFINED


def test_offer_matches_a_demand_for_its_runtime_and_subnet(tmp_path: Path) -> None:
    props = offer_properties(provider(tmp_path, runtime="wasmtime"), ALICE.node_id, "alpha", "public")
    assert parse("(&(golem.runtime.name=wasmtime)(golem.node.debug.subnet=public))").evaluate(props) is Tri.TRUE
    assert parse("(golem.runtime.name=vm)").evaluate(props) is Tri.FALSE


# ---- negotiation rules ------------------------------------------------------------------------


def test_a_good_demand_is_accepted(tmp_path: Path) -> None:
    cfg = provider(tmp_path, max_agreements=2)
    assert check_demand(cfg, good_demand(cfg), NOW_MS, active_agreements=1) == Verdict(True, "")


@pytest.mark.parametrize("active", [2, 3])
def test_no_free_capacity_is_refused(tmp_path: Path, active: int) -> None:
    cfg = provider(tmp_path, max_agreements=2)
    verdict = check_demand(cfg, good_demand(cfg), NOW_MS, active_agreements=active)
    assert not verdict.accept
    assert "capacity" in verdict.reason and f"{active} of 2" in verdict.reason


@pytest.mark.parametrize("expiration", ["soon", None, True, [NOW_MS + 3_600_000]], ids=["str", "null", "bool", "list"])
def test_a_demand_without_a_numeric_expiration_is_refused(tmp_path: Path, expiration: Any) -> None:
    cfg = provider(tmp_path)
    demand = {**good_demand(cfg), "golem.srv.comp.expiration": expiration}
    verdict = check_demand(cfg, demand, NOW_MS, 0)
    assert not verdict.accept and "golem.srv.comp.expiration" in verdict.reason


def test_a_demand_with_no_expiration_is_refused(tmp_path: Path) -> None:
    cfg = provider(tmp_path)
    demand = {k: v for k, v in good_demand(cfg).items() if k != "golem.srv.comp.expiration"}
    verdict = check_demand(cfg, demand, NOW_MS, 0)
    assert not verdict.accept and "golem.srv.comp.expiration" in verdict.reason


@pytest.mark.parametrize("expires_in_s", [299.0, 1.0, 0.0, -60.0])
def test_an_expiration_too_soon_is_refused(tmp_path: Path, expires_in_s: float) -> None:
    cfg = provider(tmp_path, min_expiration_s=300.0)
    verdict = check_demand(cfg, good_demand(cfg, expires_in_s), NOW_MS, 0)
    assert not verdict.accept and "below the minimum" in verdict.reason


def test_an_expiration_too_late_is_refused(tmp_path: Path) -> None:
    cfg = provider(tmp_path, max_expiration_s=7200.0)
    verdict = check_demand(cfg, good_demand(cfg, 7201.0), NOW_MS, 0)
    assert not verdict.accept and "above the maximum" in verdict.reason


@pytest.mark.parametrize("expires_in_s", [300.0, 7200.0])
def test_an_expiration_at_either_limit_is_accepted(tmp_path: Path, expires_in_s: float) -> None:
    cfg = provider(tmp_path, min_expiration_s=300.0, max_expiration_s=7200.0)
    assert check_demand(cfg, good_demand(cfg, expires_in_s), NOW_MS, 0).accept


def test_a_float_expiration_is_accepted(tmp_path: Path) -> None:
    cfg = provider(tmp_path)
    demand = {**good_demand(cfg), "golem.srv.comp.expiration": float(NOW_MS + 3_600_000)}
    assert check_demand(cfg, demand, NOW_MS, 0).accept


def test_a_demand_without_our_payment_platform_is_refused(tmp_path: Path) -> None:
    cfg = provider(tmp_path, payment_network="holesky")
    demand = {k: v for k, v in good_demand(cfg).items() if not k.startswith("golem.com.payment.platform.")}
    verdict = check_demand(cfg, demand, NOW_MS, 0)
    assert not verdict.accept and "erc20-holesky-tglm" in verdict.reason
    demand["golem.com.payment.platform.erc20-polygon-glm.address"] = BOB.node_id
    assert not check_demand(cfg, demand, NOW_MS, 0).accept


def test_capacity_is_checked_before_the_demand(tmp_path: Path) -> None:
    cfg = provider(tmp_path, max_agreements=1)
    verdict = check_demand(cfg, {}, NOW_MS, active_agreements=1)
    assert not verdict.accept and "capacity" in verdict.reason
