"""Golden byte fixtures: the encoding of every message's sample is pinned, so wire changes show up in review."""

from __future__ import annotations

import pytest

from protocol.codec import decode, encode
from tests.unit.protocol.samples import GOLDEN_DIR, REGENERATE_CMD, SAMPLES, golden_path, protocol_messages, sample

TAGS = sorted(protocol_messages())


@pytest.mark.parametrize("tag", TAGS)
def test_encoding_matches_golden_fixture(tag: str) -> None:
    if tag not in SAMPLES:
        pytest.fail(f"no sample for {tag}; add one to SAMPLES in tests/unit/protocol/samples.py")
    path = golden_path(tag)
    if not path.exists():
        pytest.fail(f"golden fixture golden/{path.name} is missing; generate it with {REGENERATE_CMD}")
    expected = path.read_text().strip()
    actual = encode(sample(tag)).hex()
    if actual != expected:
        pytest.fail(
            f"wire format of {tag} changed; if intended, regenerate with {REGENERATE_CMD} "
            f"and review the fixture diff\n  golden: {expected}\n  now:    {actual}"
        )


@pytest.mark.parametrize("tag", TAGS)
def test_golden_fixture_decodes_to_the_sample(tag: str) -> None:
    path = golden_path(tag)
    if not path.exists():
        pytest.skip("missing fixture is reported by test_encoding_matches_golden_fixture")
    assert decode(bytes.fromhex(path.read_text().strip())) == sample(tag)


def test_no_golden_fixture_without_a_message() -> None:
    stale = sorted(p.name for p in GOLDEN_DIR.glob("*.hex") if p.name[: -len(".hex")] not in TAGS)
    assert not stale, f"fixtures of messages no longer registered: {stale}; remove them or run {REGENERATE_CMD}"
