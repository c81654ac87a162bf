"""Payloads, resources and strategies as demand properties, constraints and rankings."""

from __future__ import annotations

import hashlib

import pytest

from protocol.constraints import Tri, parse
from requestor.errors import ConfigurationError
from requestor.payload import Resources, VmImage, WasmPackage, build_demand, parse_task_package, task_package_for
from requestor.strategy import Custom, LowestPrice, MostThreads, Prices, ProviderOffer, as_strategy

PKG = "hash:sha3:" + "ab" * 28 + ":http://127.0.0.1:8000/prog.zip"


def _offer(pid: str, threads: int, coeffs: list[float], **extra: object) -> ProviderOffer:
    props = {
        "golem.inf.cpu.threads": threads, "golem.inf.mem.gib": 4.0, "golem.inf.storage.gib": 10.0,
        "golem.runtime.name": "wasmtime", "golem.node.debug.subnet": "public",
        "golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": coeffs,
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"], **extra,
    }
    return ProviderOffer(f"prop-{pid}", pid, props)


def test_a_wasm_demand_names_the_package_runtime_resources_and_payment() -> None:
    decorations = {
        "properties": [{"key": "golem.com.payment.platform.erc20-local-tglm.address", "value": "0xabc"},
                       {"key": "golem.com.payment.protocol.version", "value": "3"}],
        "constraints": ["(golem.com.payment.platform.erc20-local-tglm.address=*)"],
    }
    props, cons = build_demand(WasmPackage(PKG), Resources(cores=2, memory_gib=1.5), subnet="public",
                               expiration_ms=123, decorations=decorations)
    assert props["golem.srv.comp.task_package"] == PKG and props["golem.srv.comp.expiration"] == 123
    assert props["golem.com.payment.platform.erc20-local-tglm.address"] == "0xabc"
    assert props["golem.com.payment.protocol.version"] == 3
    constraint = parse(cons)
    offer = _offer("p", 2, [0.1, 0.1, 0.0], **{"golem.com.payment.platform.erc20-local-tglm.address": "0xdef"})
    assert constraint.evaluate(offer.properties) is Tri.TRUE
    small = _offer("q", 1, [0.1, 0.1, 0.0], **{"golem.com.payment.platform.erc20-local-tglm.address": "0xdef"})
    assert constraint.evaluate(small.properties) is Tri.FALSE  # one thread is too few


def test_a_vm_demand_asks_for_gvmkit_squash_on_the_vm_runtime() -> None:
    props, cons = build_demand(VmImage(PKG), Resources(), subnet="s1", expiration_ms=1)
    assert props["golem.srv.comp.vm.package_format"] == "gvmkit-squash"
    assert "(golem.runtime.name=vm)" in cons and "(golem.node.debug.subnet=s1)" in cons


@pytest.mark.parametrize("bad", ["", "hash:sha3:abc:http://h/p", "hash:sha3:" + "zz" * 28 + ":http://h/p",
                                 "hash:sha3:" + "ab" * 28 + ":ftp://h/p", "hash:sha3:" + "ab" * 28 + ":http://"])
def test_malformed_task_packages_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="task package"):
        parse_task_package(bad)


def test_a_task_package_string_is_made_from_a_file(tmp_path) -> None:
    f = tmp_path / "p.zip"
    f.write_bytes(b"zip")
    text = task_package_for(f, "http://h/p.zip")
    assert parse_task_package(text) == (hashlib.sha3_224(b"zip").hexdigest(), "http://h/p.zip")


@pytest.mark.parametrize("kwargs", [{"cores": 0}, {"cores": 1.5}, {"memory_gib": -1}, {"storage_gib": "1"}])
def test_bad_resources_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        Resources(**kwargs)


def test_strategies_rank_by_price_threads_or_a_callable() -> None:
    cheap = _offer("cheap", 1, [0.0001, 0.0001, 0.0])
    big = _offer("big", 8, [0.001, 0.001, 0.0])
    assert LowestPrice().score(cheap) > LowestPrice().score(big)
    assert MostThreads().score(big) > MostThreads().score(cheap)
    assert Custom(lambda o: -o.threads).score(cheap) > Custom(lambda o: -o.threads).score(big)
    assert isinstance(as_strategy("most_threads"), MostThreads) and isinstance(as_strategy(None), LowestPrice)
    with pytest.raises(ConfigurationError):
        as_strategy("fastest")


def test_price_caps_and_malformed_prices_refuse_offers() -> None:
    offer = _offer("p", 1, [1 / 3600, 2 / 3600, 0.5])
    assert offer.cpu_per_hour == pytest.approx(1.0) and offer.env_per_hour == pytest.approx(2.0)
    assert offer.problem(Prices(cpu_per_hour=2.0)) is None
    assert "cpu_per_hour price 1 GLM is above the cap of 0.5" in (offer.problem(Prices(cpu_per_hour=0.5)) or "")
    assert "start" in (offer.problem(Prices(start=0.1)) or "")
    assert "do not match" in (_offer("q", 1, [0.1]).problem(None) or "")
    assert "non-negative" in (_offer("q", 1, [0.1, -1.0, 0.0]).problem(None) or "")
