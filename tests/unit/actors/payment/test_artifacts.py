"""The committed contract artifacts match the Solidity sources."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from actors.payment.chain import ARTIFACTS_DIR

CONTRACTS_DIR = ARTIFACTS_DIR.parent
RECOMPILE = "npm ci && node contracts/compile.mjs"


def _artifacts() -> list[Path]:
    return sorted(ARTIFACTS_DIR.glob("*.json"))


def test_every_contract_has_an_artifact() -> None:
    names = {p.stem for p in _artifacts()}
    assert {"TestGLM", "MultiTransfer"} <= names, f"missing artifacts: run `{RECOMPILE}`"


@pytest.mark.parametrize("path", _artifacts(), ids=lambda p: p.stem)
def test_artifact_is_up_to_date_with_its_source(path: Path) -> None:
    artifact = json.loads(path.read_text())
    source = CONTRACTS_DIR / artifact["sourceName"]
    assert source.is_file(), f"{path.name}: its source {artifact['sourceName']} is gone; run `{RECOMPILE}`"
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert sha == artifact["sourceSha256"], f"contracts/{source.name} changed since it was compiled: run `{RECOMPILE}`"
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
    assert artifact["compiler"]["evmVersion"] == "paris"
    assert artifact["compiler"]["optimizer"]["enabled"] is True
