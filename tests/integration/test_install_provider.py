"""scripts/install-provider.sh in its testable mode (--root DIR): the user, the dirs, the identity, the unit, and a rerun.

No systemd runs here, so the script installs into a directory tree and calls no systemctl;
what systemd would run (the unit's ExecStart with its environment) is then started by
hand and must come up as a provider. The venv is made beforehand with the development
venv's packages on its path, so only the build tools come from the package index (--pip-args --no-deps).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import site
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import REPO, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"),
]

SCRIPT = REPO / "scripts" / "install-provider.sh"
CONTACT = "loam://" + "ab" * 32 + "@127.0.0.1:9"


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), "--pip-args", "--no-deps", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys such as Environment repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not a unit file line: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def unquote(value: str) -> str:
    return value[1:-1] if value[:1] == value[-1:] and value[:1] in ("'", '"') else value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tree with the venv made already, seeing the development venv's packages (pip and setuptools too)."""
    root = tmp_path / "root"
    venv = root / "opt" / "loam" / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # type: ignore[attr-defined]
    [purelib] = list((venv / "lib").glob("python3*/site-packages"))
    (purelib / "dev-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def test_install_creates_user_dirs_identity_and_a_unit_that_starts_a_provider(root: Path) -> None:
    host_passwd = Path("/etc/passwd").read_text()
    result = install(root, "--bootstrap", CONTACT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    [entry] = [line for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith("loam:")]
    name, _, uid, gid, _, home, shell = entry.split(":")
    assert (home, shell) == ("/var/lib/loam", "/usr/sbin/nologin")
    assert int(uid) < 1000  # a system user
    assert any(line.startswith("loam:") for line in (root / "etc" / "group").read_text().splitlines())

    data = root / "var" / "lib" / "loam"
    st = data.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == (int(uid), int(gid))
    password = data / "password"
    assert stat.S_IMODE(password.stat().st_mode) == 0o600 and len(password.read_text()) == 64
    assert "created identity 0x" in out

    loam = root / "opt" / "loam" / "venv" / "bin" / "loam"
    ids = json.loads(subprocess.run([str(loam), "id", "list", "--data-dir", str(data), "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert len(ids) == 1 and ids[0]["encrypted"] is True
    # The venv runs the snapshot in PREFIX/src, not the checkout.
    assert (root / "opt" / "loam" / "src" / "config" / "node.toml").exists()
    assert not (root / "opt" / "loam" / "src" / ".git").exists()

    unit = parse_unit((root / "etc" / "systemd" / "system" / "loam-provider.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"] == ["/opt/loam/venv/bin/loam node run --data-dir /var/lib/loam --log-json"]
    assert service["Restart"] == ["on-failure"] and service["User"] == ["loam"]
    assert service["StandardOutput"] == ["journal"] and service["StandardError"] == ["journal"]
    env = dict(unquote(e).split("=", 1) for e in service["Environment"])
    assert env["LOAM_PROVIDER__ENABLED"] == "true"
    assert env["LOAM_IDENTITY__PASSWORD_FILE"] == "/var/lib/loam/password"
    assert json.loads(env["LOAM_NET__BOOTSTRAP"]) == [CONTACT]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "systemctl not called" in out

    # What systemd would run, with the tree's paths: it comes up selling compute.
    argv = shlex.split(service["ExecStart"][0])
    argv[0] = str(root) + argv[0]
    argv[argv.index("--data-dir") + 1] = str(data)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
    run_env.update({k: (str(root) + v if v.startswith("/var/lib/loam") else v) for k, v in env.items()})
    run_env.update({"LOAM_NET__LISTEN": "tcp://127.0.0.1:0", "LOAM_METRICS__PORT": "0", "LOAM_API__ENABLED": "false"})
    proc = subprocess.Popen(argv, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the installed node to start", lambda: proc.poll() is None and (data / "node.json").exists(), 30)
        status = wait_for("its offer", lambda: json.loads(subprocess.run(
            [str(loam), "provider", "status", "--json", "--data-dir", str(data)], capture_output=True, text=True, env=run_env,
        ).stdout or "null"), 30)
        assert status["offers"][0]["offer_id"] and status["offers"][0]["runtime"] == "wasmtime"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""

    # Again: nothing new is created, the identity is kept, the unit is unchanged.
    again = install(root, "--bootstrap", CONTACT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "user loam exists" in again.stdout and "the data dir has an identity" in again.stdout
    assert ids[0]["address"] in again.stdout
    assert "loam-provider.service is up to date" in again.stdout
    assert [line for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith("loam:")] == [entry]
    assert len(json.loads(subprocess.run([str(loam), "id", "list", "--data-dir", str(data), "--json"],
                                         capture_output=True, text=True, check=True).stdout)) == 1
    assert Path("/etc/passwd").read_text() == host_passwd  # the host's own users were not touched


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install(root, "--dry-run", "--with-docker")
    assert result.returncode == 0, result.stderr
    assert "would run: useradd --prefix" in result.stdout
    assert "would write " + str(root / "etc/systemd/system/loam-provider.service") in result.stdout
    assert "ExecStart=/opt/loam/venv/bin/loam node run --data-dir /var/lib/loam --log-json" in result.stdout
    assert "SupplementaryGroups=docker" in result.stdout
    # The VPN bridges' guard, as the vm exe-unit's HOST_GUARD_RULE has it, put in place as root before the node starts.
    from exeunits.vm.unit import HOST_GUARD_RULE

    guard = " ".join(HOST_GUARD_RULE)
    assert f"ExecStartPre=+/bin/sh -c 'iptables -w 5 -C {guard} 2>/dev/null || iptables -w 5 -I {guard} || true'" in result.stdout
    assert not root.exists()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    for args, message in (
        (["--data-dir", "relative"], "must be absolute paths"),
        (["--user", "Bad User"], "is not a valid user name"),
        (["--bootstrap", "tcp://1.2.3.4:7500"], "is not a contact address"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ):
        result = install(tmp_path / "root", "--dry-run", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
