"""App-keys through the CLI and the store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from node.appkeys import AppKeyStore
from node.cli import cli
from node.storage import db_path, open_database


def _run(args: list[str], data_dir: Path) -> object:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_create_list_find_and_drop(tmp_path: Path) -> None:
    assert _run(["id", "create", "--no-password"], tmp_path).exit_code == 0
    created = _run(["app-key", "create", "requestor"], tmp_path)
    assert created.exit_code == 0
    key = created.stdout.strip()
    assert len(key) == 32 and int(key, 16) >= 0
    listed = json.loads(_run(["app-key", "list", "--json"], tmp_path).stdout)
    assert [(k["name"], k["key"]) for k in listed] == [("requestor", key)]
    conn = open_database(db_path(tmp_path))
    try:
        found = AppKeyStore(conn).find(key)
        assert found is not None and found.name == "requestor" and found.identity == listed[0]["identity"]
        assert AppKeyStore(conn).find("0" * 32) is None
    finally:
        conn.close()
    assert _run(["app-key", "drop", "requestor"], tmp_path).exit_code == 0
    assert json.loads(_run(["app-key", "list", "--json"], tmp_path).stdout) == []


def test_bad_names_and_duplicates_are_clear_errors(tmp_path: Path) -> None:
    _run(["id", "create", "--no-password"], tmp_path)
    assert _run(["app-key", "create", "one"], tmp_path).exit_code == 0
    again = _run(["app-key", "create", "one"], tmp_path)
    assert again.exit_code == 2 and "exists already" in again.stderr
    bad = _run(["app-key", "create", "no spaces"], tmp_path)
    assert bad.exit_code == 2 and "must be 1-64" in bad.stderr
    missing = _run(["app-key", "drop", "nope"], tmp_path)
    assert missing.exit_code == 2 and "no app-key named" in missing.stderr


def test_an_app_key_needs_an_identity(tmp_path: Path) -> None:
    result = _run(["app-key", "create", "early"], tmp_path)
    assert result.exit_code == 2 and "error:" in result.stderr
