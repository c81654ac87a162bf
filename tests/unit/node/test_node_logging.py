"""Tests of the logging setup: console and JSON output, level filtering, repeated configuration."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from node.logging import configure_logging, get_logger
from protocol.errors import SettingsError

__all__: list[str] = []


@pytest.fixture(autouse=True)
def restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_lines_carry_event_level_timestamp_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    get_logger(actor="net").info("link_opened", peer="0xAb", size_bytes=12)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "link_opened"
    assert record["level"] == "info"
    assert record["actor"] == "net" and record["peer"] == "0xAb" and record["size_bytes"] == 12
    assert "T" in record["timestamp"] and record["timestamp"].endswith("Z")


def test_level_filters_and_console_output_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", json=False)
    log = get_logger()
    log.info("hidden_event")
    log.warning("shown_event", offer_id="o1")
    err = capsys.readouterr().err
    assert "hidden_event" not in err
    assert "shown_event" in err and "offer_id=o1" in err
    assert "\x1b[" not in err  # no colour codes when stderr is not a terminal


def test_stdlib_loggers_are_rendered_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    logging.getLogger("pykka").warning("actor %s died", "x")
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["event"] == "actor x died" and record["logger"] == "pykka"


def test_configuring_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger()
    configure_logging("info", json=False)
    configure_logging("debug", json=True)
    log.debug("once")
    lines = [line for line in capsys.readouterr().err.splitlines() if "once" in line]
    assert len(lines) == 1
    assert json.loads(lines[0])["level"] == "debug"


def test_unknown_level_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="verbose"):
        configure_logging("verbose", json=False)
