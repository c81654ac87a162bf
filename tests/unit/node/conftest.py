"""Shared fixtures of the node tests: cheap scrypt and an environment free of LOAM_* variables."""

from __future__ import annotations

import os

import pytest

import node.keystore

__all__: list[str] = []

FAST_SCRYPT_N = 2**10


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keystore files made in tests use a tiny scrypt cost (production stays at 2**18)."""
    monkeypatch.setattr(node.keystore, "SCRYPT_N", FAST_SCRYPT_N)


@pytest.fixture(autouse=True)
def clean_loam_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the LOAM_* variables of whoever runs them."""
    for name in list(os.environ):
        if name.startswith("LOAM_"):
            monkeypatch.delenv(name)
