"""Golem's own client libraries, unchanged, against a Loam testnet: yapapi 0.13 and golem-core 0.7.

Each library is installed into its own virtual environment under `.cache/` (they pin old
dependencies, so never into the project's venv), and runs a small script of ours written
against its public API (tests/integration/api/). The nodes pay each other on a local chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.harness import REPO, NodeProcess, Testnet, free_port, wait_for
from tests.integration.payment_support import local_chain, payment_call, payment_env, provider_env, wasm_package
from tests.integration.test_rest_api import Api, app_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPTS = Path(__file__).resolve().parent / "api"
CLIENTS = {"yapapi": "yapapi==0.13.1", "golem-core": "golem-core==0.7.8"}
WORDS = "one two three\nfour five\n"


def client_python(name: str) -> Path:
    """The python of a venv holding one client library (made on first use; a failed install skips, but not under CI)."""
    venv = REPO / ".cache" / f"{name}-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file() and marker.read_text() == CLIENTS[name]:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", CLIENTS[name]], check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        message = f"cannot install {CLIENTS[name]}: {exc}\n{stderr.decode(errors='replace')[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    marker.write_text(CLIENTS[name])
    return python


def run_client(name: str, script: str, requestor_dir: Path, key: str, api: str, *args: str, timeout_s: float = 400) -> dict:
    """Run one of our client scripts with the library's python; returns its last JSON line."""
    python = client_python(name)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",  # Loam's gftp
        "HOME": os.environ.get("HOME", "/tmp"),
        "YAGNA_APPKEY": key,
        "YAGNA_API_URL": api,
        "YAGNA_PAYMENT_NETWORK": "local",
        "YAGNA_PAYMENT_DRIVER": "erc20",
        "LOAM_DATA_DIR": str(requestor_dir),  # where `gftp server` finds its node
    }
    done = subprocess.run(
        [str(python), str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=timeout_s,
        cwd=requestor_dir,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"{name} exited {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-8000:]}"
    return json.loads(lines[-1])


def test_yapapi_runs_tasks_polling_and_streaming_and_a_service_and_pays(testnet: Testnet, tmp_path: Path) -> None:
    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        # Debit notes every 2 s, so the streamed run, kept 5 s, has some for yapapi to accept.
        provider_settings = provider_env(local, LOAM_API__PORT=str(free_port()), LOAM_PROVIDER__DEBIT_NOTE_INTERVAL_S="2")
        testnet.add("provider", env=provider_settings)
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
        payment_call(requestor, "fund", amount="100", timeout_s=120)
        key = app_key(requestor)
        api = json.loads((requestor.data_dir / "node.json").read_text())["api"]
        (tmp_path / "in.txt").write_text(WORDS)
        # Polled results (yapapi's default): the output is in each command's result.
        out = run_client("yapapi", "yapapi_task.py", requestor.data_dir, key, api,
                         package, str(tmp_path / "in.txt"), str(tmp_path / "counts.txt"), "poll")
        [result] = out["results"]
        assert result["wc"].split()[:2] == ["2", "5"] and "yapapi" in result["hello"], result
        assert (tmp_path / "counts.txt").read_text().split()[:2] == ["2", "5"]
        _assert_invoice_accepted(requestor, key)
        # Server-sent events: the output arrives as stdout events.
        (tmp_path / "counts.txt").unlink()
        out = run_client("yapapi", "yapapi_task.py", requestor.data_dir, key, api,
                         package, str(tmp_path / "in.txt"), str(tmp_path / "counts.txt"), "stream", "5")
        assert out["streamed"].split()[:3] == ["2", "5", "24"] and "argv[1]=yapapi" in out["streamed"], out
        assert (tmp_path / "counts.txt").read_text().split()[:2] == ["2", "5"]
        client = Api(requestor, key)
        notes = client.ok("GET", "/payment-api/v1/debitNotes")
        # Those that came while the activity ran were accepted; one sent as it ended may be left
        # to the invoice, as yapapi leaves it.
        assert [n for n in notes if n["status"] in ("ACCEPTED", "SETTLED")], notes
        # A service: started, a run loop of three commands, stopped.
        out = run_client("yapapi", "yapapi_service.py", requestor.data_dir, key, api, package)
        assert [o.split("argv[1]=")[1].split()[0] for o in out["outputs"]] == ["round-0", "round-1", "round-2"], out
        assert out["states"] == ["running"] and out["final"] == ["terminated"]


def _assert_pages_fetched(out: dict[str, Any]) -> None:
    """The VPN scripts' two fetches over net-api: the small page, and 200 kB intact."""
    assert out["small"].startswith("HTTP/1.") and " 200 " in out["small"].split("\r\n")[0], out
    assert out["small"].rstrip().endswith("hello over the vpn"), out
    assert " 200 " in out["big_status"] and out["big_len"] == 200_000 and out["big_ok"], out


def _assert_invoice_accepted(requestor: NodeProcess, key: str) -> None:
    """The client accepted the provider's invoice through the payment-api (the ledger then pays it)."""
    client = Api(requestor, key)
    invoices = wait_for(
        "an accepted invoice",
        lambda: [i for i in client.ok("GET", "/payment-api/v1/invoices") if i["status"] in ("ACCEPTED", "SETTLED")],
        60,
    )
    assert invoices[0]["payerAddr"] == client.ok("GET", "/me")["identity"] == requestor.node_id


def test_golem_core_negotiates_runs_a_batch_and_pays_the_invoice(testnet: Testnet, tmp_path: Path) -> None:
    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        testnet.add("provider", env=provider_env(local, LOAM_API__PORT=str(free_port())))
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
        payment_call(requestor, "fund", amount="100", timeout_s=120)
        key = app_key(requestor)
        api = json.loads((requestor.data_dir / "node.json").read_text())["api"]
        (tmp_path / "in.txt").write_text(WORDS)
        out = run_client("golem-core", "golem_core_task.py", requestor.data_dir, key, api,
                         package, str(tmp_path / "in.txt"), str(tmp_path / "counts.txt"))
        assert out["state"] == ["Ready", None]
        assert [r["index"] for r in out["results"]] == list(range(6)) and {r["result"] for r in out["results"]} == {"Ok"}
        assert out["results"][3]["stdout"].split()[:2] == ["2", "5"] and "golem-core" in out["results"][4]["stdout"]
        assert (tmp_path / "counts.txt").read_text().split()[:2] == ["2", "5"]
        _assert_invoice_accepted(requestor, key)


@pytest.fixture
def image_repository(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Loam's image repository serving the busybox test image: (repository URL, image sha3, its http link)."""
    from tests.images.support import GVMI_NAME, build_images, engine, sha3_224

    engine()
    images = build_images()
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images / GVMI_NAME, folder / GVMI_NAME)
    port = free_port()
    repo = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "image-repo", "--dir", str(folder), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        repo_url = f"http://127.0.0.1:{port}"
        info = wait_for("the image repository", lambda: _info(f"{repo_url}/v1/image/info?tag=busybox"), 20)
        assert info["sha3"] == sha3_224(folder / GVMI_NAME)
        yield repo_url, info["sha3"], info["http"]
    finally:
        repo.terminate()
        repo.wait(10)


def _vm_pair(
    testnet: Testnet, local: Any, providers: tuple[str, ...] = ("vm-provider",), **provider_extra: str
) -> tuple[NodeProcess, str, str]:
    """vm providers and a funded requestor: (requestor, its app-key, its API URL)."""
    for name in providers:
        testnet.add(name, env=provider_env(local, runtime="vm", LOAM_API__PORT=str(free_port()), **provider_extra))
    requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
    payment_call(requestor, "fund", amount="100", timeout_s=120)
    api = json.loads((requestor.data_dir / "node.json").read_text())["api"]
    return requestor, app_key(requestor), api


def test_yapapi_runs_a_vm_task_from_an_image_repository(
    testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]
) -> None:
    repo_url, image_hash, _ = image_repository
    with local_chain(tmp_path) as local:
        requestor, key, api = _vm_pair(testnet, local)
        (tmp_path / "in.txt").write_text(WORDS)
        out = run_client("yapapi", "yapapi_vm.py", requestor.data_dir, key, api,
                         repo_url, image_hash, str(tmp_path / "in.txt"), str(tmp_path / "count.txt"))
        [result] = out["results"]
        assert result.split() == ["busybox", "5"], out  # the repository's image ran, and counted the file sent in
        assert (tmp_path / "count.txt").read_text().split() == ["5"]
        _assert_invoice_accepted(requestor, key)


def test_yapapi_reaches_a_vm_service_on_its_vpn_through_net_api(
    testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]
) -> None:
    """yapapi's network: a web server in a vm service, fetched over WebSocket-carried TCP through the tunnel."""
    repo_url, image_hash, _ = image_repository
    with local_chain(tmp_path) as local:
        requestor, key, api = _vm_pair(testnet, local)
        out = run_client("yapapi", "yapapi_vpn.py", requestor.data_dir, key, api, repo_url, image_hash, key)
        assert out["states"] == ["running"] and out["ip"].startswith("192.168.0."), out
        _assert_pages_fetched(out)
        assert out["final"] == ["terminated"], out
        # The network was removed with the client's exit; the tunnels are closed on both ends.
        client = Api(requestor, key)
        assert client.ok("GET", "/net-api/v1/net") == []
        _assert_invoice_accepted(requestor, key)


def test_golem_core_reaches_a_vm_service_on_its_vpn(
    testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]
) -> None:
    """golem-core's network: a node for the provider, its deploy args, then the web server fetched over net-api."""
    _, image_hash, image_url = image_repository
    with local_chain(tmp_path) as local:
        requestor, key, api = _vm_pair(testnet, local)
        out = run_client("golem-core", "golem_core_vpn.py", requestor.data_dir, key, api, image_hash, image_url)
        assert out["results"] == ["Ok"] * 3 and out["ip"].startswith("192.168.0."), out
        _assert_pages_fetched(out)
        client = Api(requestor, key)
        assert client.ok("GET", "/net-api/v1/net") == []
        _assert_invoice_accepted(requestor, key)


def test_yapapi_services_on_two_providers_reach_each_other_over_the_vpn(
    testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]
) -> None:
    """As yapapi's webapp example: a second service fetches a page from the first at its VPN address (IP packets
    between two providers' containers, through both nodes)."""
    repo_url, image_hash, _ = image_repository
    with local_chain(tmp_path) as local:
        # One agreement each: the two services land on different providers.
        requestor, key, api = _vm_pair(testnet, local, ("vm-provider-a", "vm-provider-b"), LOAM_PROVIDER__MAX_AGREEMENTS="1")
        out = run_client("yapapi", "yapapi_vpn.py", requestor.data_dir, key, api, repo_url, image_hash, key, "cluster")
        assert out["server_provider"] != out["fetcher_provider"], out
        assert out["small"].rstrip().endswith("hello over the vpn"), out  # the requestor's own connection
        [fetched] = out["fetched"]
        assert fetched.startswith("HTTP/1.") and fetched.rstrip().endswith("hello over the vpn"), out
        assert out["fetcher_ip"] != out["ip"] and out["fetcher_ip"].startswith("192.168.0."), out
        assert out["final"] == ["terminated", "terminated"], out


def test_golem_core_runs_a_vm_activity_and_pays(testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]) -> None:
    _, image_hash, image_url = image_repository
    with local_chain(tmp_path) as local:
        requestor, key, api = _vm_pair(testnet, local)
        (tmp_path / "in.txt").write_text(WORDS)
        out = run_client("golem-core", "golem_core_vm.py", requestor.data_dir, key, api,
                         image_hash, image_url, str(tmp_path / "in.txt"), str(tmp_path / "count.txt"))
        assert [r["result"] for r in out["results"]] == ["Ok"] * 5, out
        assert out["results"][3]["stdout"].split() == ["busybox", "5"]
        assert (tmp_path / "count.txt").read_text().split() == ["5"]
        _assert_invoice_accepted(requestor, key)


def _info(url: str) -> Any:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None
