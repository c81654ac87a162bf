"""Activities with real node processes: from demand to agreement to an exe-unit running WASI programs."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from exeunits.wasm.package import make_package
from protocol.control import ControlCall
from protocol.errors import ControlError
from protocol.identity import recover_signer
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for
from tests.wasm_programs import build_wasm_programs

pytestmark = pytest.mark.integration

PLATFORM = "erc20-holesky-tglm"
WORDS = "the quick brown fox\njumps over\nthe lazy dog\n"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the package directory, and takes uploads with PUT."""

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        target = Path(self.directory) / "uploads" / Path(self.path).name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(self.rfile.read(length))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local web server: (base url, folder it serves)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


@pytest.fixture
def package(web: tuple[str, Path]) -> str:
    """A WASI package of the test programs on the web server, as a task-package string."""
    build = build_wasm_programs()
    base, root = web
    entry_points = {name: build / f"{name}.wasm" for name in ("wc", "hello", "exitcode", "trap", "spin")}
    make_package(root / "programs.zip", entry_points, [("ro", "input"), ("rw", "output")])
    digest = hashlib.sha3_224((root / "programs.zip").read_bytes()).hexdigest()
    (root / "data.txt").write_text(WORDS)
    return f"hash:sha3:{digest}:{base}/programs.zip"


def _agreement(requestor: NodeProcess, provider: NodeProcess, task_package: str, runtime: str = "wasmtime") -> str:
    """Negotiate an approved agreement for an activity of runtime running task_package."""
    wait_for("the provider's offer", lambda: market_call(requestor, "known_offers", {}), 15)
    props = {
        "golem.node.debug.subnet": "public",
        "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": requestor.node_id,
        "golem.srv.comp.task_package": task_package,
    }
    sub = market_call(requestor, "subscribe_demand", {"properties": props, "constraints": f"(golem.runtime.name={runtime})"})
    initial = wait_for("an Initial proposal", lambda: market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 1.0}), 15)
    market_call(requestor, "counter_proposal", {
        "sub_id": sub, "proposal_id": initial[0]["proposal"]["proposal_id"], "properties": props, "constraints": "()",
    })
    draft = wait_for("the provider's answer", lambda: market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 1.0}), 15)
    agreement_id = market_call(requestor, "create_agreement", {
        "proposal_id": draft[0]["proposal"]["proposal_id"], "valid_to_ms": int(time.time() * 1000) + 600_000,
    })
    market_call(requestor, "confirm_agreement", {"agreement_id": agreement_id})
    assert market_call(requestor, "wait_agreement", {"agreement_id": agreement_id, "timeout_s": 10}) == "Approved"
    return agreement_id


def activity(node: NodeProcess, method: str, **args: Any) -> Any:
    """Call the node's activity API through its control channel."""
    return node.call(ControlCall("activity", method, args), timeout_s=90).value


@pytest.fixture
def pair(testnet: Testnet) -> tuple[NodeProcess, NodeProcess]:
    """A wasmtime provider and a requestor joined through it."""
    provider = testnet.add("provider", env={"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__MAX_AGREEMENTS": "4"})
    requestor = testnet.add("requestor")
    return requestor, provider


def test_an_exe_script_runs_wasi_programs_with_files_in_and_out(pair: tuple[NodeProcess, NodeProcess], package: str, web: tuple[str, Path]) -> None:
    requestor, provider = pair
    base, root = web
    agreement_id = _agreement(requestor, provider, package)
    created = activity(requestor, "create", agreement_id=agreement_id)
    assert created["state"] == "Initialized", created
    activity_id = created["activity_id"]
    script = [
        {"deploy": {}},
        {"start": {}},
        {"transfer": {"from": f"{base}/data.txt", "to": "container:/input/data.txt"}},
        {"run": {"entry_point": "wc", "args": ["/input/data.txt", "/output/counts.txt"]}},
        {"transfer": {"from": "container:/output/counts.txt", "to": f"{base}/counts.txt"}},
        {"sign": {}},
    ]
    batch = activity(requestor, "exec", activity_id=activity_id, script=script)
    results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    assert [r["result"] for r in results] == ["Ok"] * 6, [r["message"] for r in results]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4, 5]
    # `sign`: the provider's signature over the digest of the batch's results before it.
    signed = json.loads(results[5]["stdout"])
    assert signed["signer"] == provider.node_id
    assert recover_signer(bytes.fromhex(signed["digest"]), bytes.fromhex(signed["signature"])) == provider.node_id
    rows = [[r["index"], r["result"], r["stdout"], r["stderr"], r["message"]] for r in results[:5]]
    digest = hashlib.sha3_256(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert signed["digest"] == digest
    assert results[-1]["is_batch_finished"]
    lines, words, chars = (int(x) for x in results[3]["stdout"].split())
    assert (lines, words, chars) == (WORDS.count("\n"), len(WORDS.split()), len(WORDS.encode()))
    assert (root / "uploads" / "counts.txt").read_text().split() == results[3]["stdout"].split()
    # Usage flows back: cpu seconds and duration grow.
    wait_for("usage", lambda: activity(requestor, "state", activity_id=activity_id)["usage"][1] > 0, 10)
    # Destroying the activity stops the exe-unit and removes its files on the provider.
    ended = activity(requestor, "destroy", activity_id=activity_id)
    assert ended["state"] == "Terminated"
    wait_for("no running activity", lambda: not activity(provider, "running"), 10)
    assert not list((provider.data_dir / "activities").iterdir())


def test_a_failing_command_says_which_and_why_and_stops_the_batch(pair: tuple[NodeProcess, NodeProcess], package: str) -> None:
    requestor, provider = pair
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, package))["activity_id"]
    script = [
        {"deploy": {}},
        {"start": {}},
        {"run": {"entry_point": "exitcode", "args": ["3"]}},
        {"run": {"entry_point": "hello", "args": []}},
    ]
    batch = activity(requestor, "exec", activity_id=activity_id, script=script)
    results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    assert [r["result"] for r in results] == ["Ok", "Ok", "Error"]
    assert results[-1]["is_batch_finished"]
    assert "command 2 (run)" in results[-1]["message"] and "code 3" in results[-1]["message"]
    # A trap is reported by name; the activity keeps serving the next batch.
    batch = activity(requestor, "exec", activity_id=activity_id, script=[{"run": {"entry_point": "trap", "args": []}}])
    trapped = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=30)
    assert trapped[0]["result"] == "Error" and "trap" in trapped[0]["message"]
    batch = activity(requestor, "exec", activity_id=activity_id, script=[{"run": {"entry_point": "hello", "args": ["x"]}}])
    assert activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=30)[0]["result"] == "Ok"
    # A run before deploy, an unknown command, a malformed script: clear errors, nothing breaks.
    with pytest.raises(ControlError, match="unknown command"):
        activity(requestor, "exec", activity_id=activity_id, script=[{"fly": {}}])
    with pytest.raises(ControlError, match="non-empty list"):
        activity(requestor, "exec", activity_id=activity_id, script=[])


def test_a_package_whose_hash_does_not_match_is_refused(pair: tuple[NodeProcess, NodeProcess], package: str) -> None:
    requestor, provider = pair
    wrong = "hash:sha3:" + "0" * 56 + ":" + package.split(":", 3)[3]
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, wrong))["activity_id"]
    batch = activity(requestor, "exec", activity_id=activity_id, script=[{"deploy": {}}])
    results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=30)
    assert results[0]["result"] == "Error" and "hash mismatch" in results[0]["message"]


def test_streamed_output_arrives_as_events(pair: tuple[NodeProcess, NodeProcess], package: str) -> None:
    requestor, provider = pair
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, package))["activity_id"]
    script = [
        {"deploy": {}},
        {"start": {}},
        {"run": {"entry_point": "hello", "args": ["streamed"], "capture": {"stdout": {"stream": {}}}}},
    ]
    batch = activity(requestor, "exec", activity_id=activity_id, script=script)
    activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    events = wait_for(
        "a finished event",
        lambda: (e := activity(requestor, "events", activity_id=activity_id, batch_id=batch)) and e[-1]["kind"] == "finished" and e,
        10,
    )
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and "stdout" in kinds
    assert "streamed" in "".join(e["data"] for e in events if e["kind"] == "stdout")
    assert events[-1]["return_code"] == 0


def test_terminating_the_agreement_stops_the_activity(pair: tuple[NodeProcess, NodeProcess], package: str) -> None:
    requestor, provider = pair
    agreement_id = _agreement(requestor, provider, package)
    activity_id = activity(requestor, "create", agreement_id=agreement_id)["activity_id"]
    batch = activity(requestor, "exec", activity_id=activity_id, script=[{"deploy": {}}, {"start": {}}])
    activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    assert activity(provider, "running")
    market_call(requestor, "terminate_agreement", {"agreement_id": agreement_id, "reason": {"message": "done"}})
    wait_for("the provider to stop the exe-unit", lambda: not activity(provider, "running"), 10)
    state = wait_for(
        "the requestor to see it end",
        lambda: (s := activity(requestor, "state", activity_id=activity_id))["state"] == "Terminated" and s,
        10,
    )
    assert "agreement" in state["reason"]
    assert not list((provider.data_dir / "activities").iterdir())


def test_a_runaway_program_is_stopped_and_the_requestor_told_why(testnet: Testnet, package: str) -> None:
    provider = testnet.add("provider", env={"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__MAX_RUN_S": "2"})
    requestor = testnet.add("requestor")
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, package))["activity_id"]
    script = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "spin", "args": ["100000000000"]}}]
    started = time.monotonic()
    batch = activity(requestor, "exec", activity_id=activity_id, script=script)
    results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=30)
    assert time.monotonic() - started < 20
    assert results[-1]["result"] == "Error" and results[-1]["is_batch_finished"]
    assert "limit" in results[-1]["message"], results[-1]["message"]
    # The activity survives its runaway command.
    batch = activity(requestor, "exec", activity_id=activity_id, script=[{"run": {"entry_point": "hello", "args": []}}])
    assert activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=30)[0]["result"] == "Ok"


def test_a_vm_activity_runs_commands_in_a_container_and_leaves_nothing(testnet: Testnet, tmp_path: Path) -> None:
    from tests.images.support import FileServer, build_images, engine

    client = engine()
    images = build_images()
    provider = testnet.add("vm-provider", env={"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__RUNTIME": "vm"})
    requestor = testnet.add("requestor")
    www = tmp_path / "vm-www"
    www.mkdir()
    shutil.copy(images / "busybox.gvmi", www / "busybox.gvmi")
    (www / "data.txt").write_text(WORDS)
    with FileServer(www) as server:
        agreement_id = _agreement(requestor, provider, server.package("busybox.gvmi"), runtime="vm")
        activity_id = activity(requestor, "create", agreement_id=agreement_id)["activity_id"]
        script = [
            {"deploy": {}},
            {"start": {}},
            {"transfer": {"from": f"{server.url}/data.txt", "to": "container:/golem/work/data.txt"}},
            {"run": {"entry_point": "/bin/sh", "args": ["-c", "wc -w < /golem/work/data.txt; ls /sys/class/net"]}},
        ]
        batch = activity(requestor, "exec", activity_id=activity_id, script=script)
        results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
        assert [r["result"] for r in results] == ["Ok"] * 4, [r["message"] for r in results]
        words, *interfaces = results[3]["stdout"].split()
        assert int(words) == len(WORDS.split())
        assert interfaces == ["lo"]  # no network unless the agreement allows it
        assert client.containers.list(all=True, filters={"label": f"loam.activity={activity_id}"})
        activity(requestor, "destroy", activity_id=activity_id)
        wait_for(
            "the container to be removed",
            lambda: not client.containers.list(all=True, filters={"label": f"loam.activity={activity_id}"}),
            15,
        )


def test_files_move_by_gftp_over_loams_network(pair: tuple[NodeProcess, NodeProcess], package: str, tmp_path: Path) -> None:
    requestor, provider = pair
    source = tmp_path / "words.txt"
    source.write_text(WORDS * 100)
    published = requestor.call(ControlCall("gftp", "publish", {"path": str(source)})).value
    result_path = tmp_path / "counts-by-gftp.txt"
    slot = requestor.call(ControlCall("gftp", "open_upload", {"dest_path": str(result_path), "max_bytes": 1 << 20})).value
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, package))["activity_id"]
    script = [
        {"deploy": {}},
        {"start": {}},
        {"transfer": {"from": published["url"], "to": "container:/input/words.txt"}},
        {"run": {"entry_point": "wc", "args": ["/input/words.txt", "/output/counts.txt"]}},
        {"transfer": {"from": "container:/output/counts.txt", "to": slot["url"]}},
    ]
    batch = activity(requestor, "exec", activity_id=activity_id, script=script)
    results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    assert [r["result"] for r in results] == ["Ok"] * 5, [r["message"] for r in results]
    lines, words, _ = (int(x) for x in result_path.read_text().split())
    assert (lines, words) == (WORDS.count("\n") * 100, len(WORDS.split()) * 100)


def test_loam_run_takes_a_script_from_demand_to_results_and_cleans_up(pair: tuple[NodeProcess, NodeProcess], package: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    requestor, provider = pair
    wait_for("the provider's offer", lambda: market_call(requestor, "known_offers", {}), 15)
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "hello", "args": ["via", "cli"]}}]))
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--data-dir", str(requestor.data_dir), "--package", package,
         "--script", str(script), "--json", "--no-payment"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert [r["result"] for r in results] == ["Ok"] * 3
    assert "argv[2]=cli" in results[2]["stdout"]
    agreements = market_call(requestor, "list_agreements", {})
    assert [a["state"] for a in agreements] == ["Terminated"]
    wait_for("no running activity", lambda: not activity(provider, "running"), 10)


def test_a_provider_killed_mid_command_takes_its_exe_unit_along(testnet: Testnet, package: str) -> None:
    from tests.integration.payment_support import exe_unit_pids

    provider = testnet.add("provider", env={"LOAM_PROVIDER__ENABLED": "true"})
    requestor = testnet.add("requestor")
    activity_id = activity(requestor, "create", agreement_id=_agreement(requestor, provider, package))["activity_id"]
    activity(requestor, "exec", activity_id=activity_id,
             script=[{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "spin", "args": []}}])  # fmt: skip
    pids = wait_for("the exe-unit running", lambda: exe_unit_pids(provider), 30)
    wait_for("spin running", lambda: activity(provider, "running")[0]["state"] != "New", 30)
    provider.kill()
    # No orphan spins on after its node: the child follows the node that started it.
    wait_for("the exe-unit gone", lambda: not exe_unit_pids(provider), 10)

    def running(pid: int) -> bool:  # a zombie waits for a reaper, but runs no more
        try:
            state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            return False
        return "zombie" not in state

    assert not [pid for pid in pids if running(pid)]
    # The requestor stops waiting on it: its view turns Unresponsive once the updates stop.
    state = wait_for("the requestor's view Unresponsive",
                     lambda: (s := activity(requestor, "state", activity_id=activity_id))["state"] == "Unresponsive" and s, 40)  # fmt: skip
    assert "the provider sent nothing" in state["error"]
