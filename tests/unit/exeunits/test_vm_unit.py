"""VmExeUnit against the real Docker engine: deploy, run, limits, no network, transfers, clean-up."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from exeunits.child import _CommandFailed
from exeunits.vm.unit import ACTIVITY_LABEL, ROOT_LABEL, VmExeUnit, sweep
from protocol.activity import ChildEvent, ChildResult, ChildRunBatch
from protocol.errors import ExeUnitError
from tests.images.support import DOCKER_ARCHIVE_NAME, GVMI_NAME, FileServer, build_images

__all__: list[str] = []

MEMORY_BYTES = 64 * 1024 * 1024
CPUS = 0.5


class Recorder:
    """Stands in for the child's FrameWriter: keeps every message written."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def write(self, msg: Any) -> None:
        self.messages.append(msg)

    def events(self, kind: str | None = None) -> list[ChildEvent]:
        return [m for m in self.messages if isinstance(m, ChildEvent) and kind in (None, m.kind)]


def _args(workdir: Path, package: str, **overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "workdir": str(workdir),
        "cache_dir": str(workdir.parent / "cache"),
        "package": package,
        "cpu_s": None,
        "memory_bytes": MEMORY_BYTES,
        "wall_s": 120.0,
        "max_package_bytes": 64 * 1024 * 1024,
        "cpus": CPUS,
        "allow_network": False,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def _new_unit(tmp: Path, server: FileServer, client: docker.DockerClient, name: str = GVMI_NAME, **overrides: Any) -> tuple[VmExeUnit, Recorder]:
    out = Recorder()
    workdir = tmp / f"act-{os.urandom(6).hex()}"
    return VmExeUnit(_args(workdir, server.package(name), **overrides), out, client=client), out  # type: ignore[arg-type]


def _containers(client: docker.DockerClient, unit: VmExeUnit) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={"label": f"{ACTIVITY_LABEL}={unit.workdir.name}"})


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory, server: FileServer, client: docker.DockerClient) -> Iterator[tuple[VmExeUnit, Recorder]]:
    """One deployed and started unit (GVMI package) shared by the tests that only run commands."""
    unit, out = _new_unit(tmp_path_factory.mktemp("vm"), server, client)
    unit.deploy({"env": {"FROM_DEPLOY": "yes"}})
    unit.start({})
    yield unit, out
    unit.close()


def _sh(unit: VmExeUnit, script: str, *, index: int = 0, **params: Any) -> tuple[str, str, str]:
    return unit.run("b", index, {"entry_point": "/bin/sh", "args": ["-c", script], **params})


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [GVMI_NAME, DOCKER_ARCHIVE_NAME])
def test_both_package_formats_deploy_start_and_run(tmp_path: Path, server: FileServer, client: docker.DockerClient, name: str) -> None:
    unit, _ = _new_unit(tmp_path, server, client, name)
    try:
        assert "deployed image loam/" in unit.deploy({})
        assert unit.state == "Deployed"
        assert unit.start({}) == "started"
        assert unit.state == "Ready"
        stdout, stderr, _ = unit.run("b", 0, {"entry_point": "/bin/echo", "args": ["hello", "vm"]})
        assert (stdout, stderr) == ("hello vm\n", "")
    finally:
        unit.close()


def test_commands_out_of_order_are_refused(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, _ = _new_unit(tmp_path, server, client)
    with pytest.raises(ExeUnitError, match="run needs state Ready"):
        unit.run("b", 0, {"entry_point": "/bin/true", "args": []})
    with pytest.raises(ExeUnitError, match="start needs state Deployed"):
        unit.start({})
    with pytest.raises(ExeUnitError, match="transfer needs a deployed activity"):
        unit.transfer({"from": f"{server.url}/words.txt", "to": "container:/golem/work/w"})
    unit.close()


def test_close_leaves_no_container_and_no_volume_folder(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, _ = _new_unit(tmp_path, server, client)
    unit.deploy({})
    unit.start({})
    _sh(unit, "echo data > /golem/work/file")
    volume = unit.volumes["/golem/work"]
    assert (volume / "file").read_text() == "data\n"
    assert len(_containers(client, unit)) == 1
    unit.close()
    assert _containers(client, unit) == []
    assert not volume.exists()
    assert unit.state == "Terminated"
    unit.close()  # idempotent


def test_sweep_removes_containers_left_by_a_killed_child(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, _ = _new_unit(tmp_path, server, client)
    unit.deploy({})
    unit.start({})
    container_id = unit.container_id
    # A killed child closes nothing: its container is still there for the node to sweep.
    assert sweep(client, f"{ACTIVITY_LABEL}={unit.workdir.name}") == [container_id]
    assert _containers(client, unit) == []
    assert sweep(client, f"{ACTIVITY_LABEL}={unit.workdir.name}") == []
    unit.close()  # the container is already gone: no error


def test_sweep_by_root_label_takes_every_activity_of_a_node(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    units = [_new_unit(tmp_path / "node-a", server, client)[0] for _ in range(2)]
    for unit in units:
        unit.deploy({})
    removed = sweep(client, f"{ROOT_LABEL}={units[0].workdir.parent}")
    assert sorted(removed) == sorted(u.container_id for u in units)
    for unit in units:
        unit.close()


def test_run_batch_runs_an_exe_script_and_terminate_removes_the_container(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, out = _new_unit(tmp_path, server, client)
    commands = (
        {"deploy": {}},
        {"start": {}},
        {"run": {"entry_point": "/bin/sh", "args": ["-c", "echo $LOAM_TEST_IMAGE"]}},
        {"terminate": {}},
    )
    unit.run_batch(ChildRunBatch("batch-1", commands))
    results = [m.result for m in out.messages if isinstance(m, ChildResult)]
    assert [r.result for r in results] == ["Ok"] * 4
    assert results[2].stdout == "busybox\n"
    assert results[-1].is_batch_finished
    assert unit.state == "Terminated"
    assert _containers(client, unit) == []


# --- run ------------------------------------------------------------------------------------


def test_run_captures_output_and_reports_events(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, out = ready
    before = len(out.messages)
    stdout, stderr, _ = _sh(unit, "echo out; echo err >&2", index=7)
    assert (stdout, stderr) == ("out\n", "err\n")
    events = [m for m in out.messages[before:] if isinstance(m, ChildEvent)]
    assert [(e.kind, e.index) for e in events] == [("started", 7), ("finished", 7)]
    assert events[-1].return_code == 0
    assert (unit.workdir / "logs" / "b-7.out").read_text() == "out\n"


def test_wc_counts_a_file_in_the_working_directory(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    stdout, _, _ = _sh(unit, "printf 'a b c\\nd e\\n' > words && wc -l -w words")
    assert stdout.split() == ["2", "5", "words"]


def test_environment_comes_from_the_image_and_deploy(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    stdout, _, _ = _sh(unit, 'echo "$LOAM_TEST_IMAGE $FROM_DEPLOY $(pwd)"')
    assert stdout == "busybox yes /golem/work\n"


def test_failing_command_is_an_error_with_its_output_and_code(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, out = ready
    with pytest.raises(_CommandFailed, match="exited with code 3") as info:
        _sh(unit, "echo partial; echo oops >&2; exit 3")
    assert (info.value.stdout, info.value.stderr) == ("partial\n", "oops\n")
    finished = out.events("finished")[-1]
    assert finished.return_code == 3 and "code 3" in (finished.message or "")


def test_missing_entry_point_fails_clearly(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    with pytest.raises(_CommandFailed, match="/no/such/program"):
        unit.run("b", 0, {"entry_point": "/no/such/program", "args": []})


def test_bad_run_parameters_are_refused(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    for params in ({"args": []}, {"entry_point": "/bin/echo", "args": "x"}, {"entry_point": "/bin/echo", "args": [1]}):
        with pytest.raises(ExeUnitError, match="entry_point"):
            unit.run("b", 0, params)


def test_streamed_output_arrives_as_events_while_running(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, out = ready
    before = len(out.messages)
    capture = {"stdout": {"stream": {}}, "stderr": {"stream": {}}}
    _sh(unit, "for i in 1 2 3; do echo line$i; sleep 0.05; done; echo done >&2", capture=capture)
    events = [m for m in out.messages[before:] if isinstance(m, ChildEvent)]
    assert "".join(e.data for e in events if e.kind == "stdout") == "line1\nline2\nline3\n"
    assert "".join(e.data for e in events if e.kind == "stderr") == "done\n"
    assert sum(e.kind == "stdout" for e in events) >= 2, "the output came in one piece at the end"
    assert events[0].kind == "started" and events[-1].kind == "finished"


# --- isolation and limits -----------------------------------------------------------------


def test_container_has_no_network(ready: tuple[VmExeUnit, Recorder], client: docker.DockerClient) -> None:
    unit, _ = ready
    stdout, _, _ = _sh(unit, "ls /sys/class/net")
    assert stdout.split() == ["lo"]
    started = time.monotonic()
    with pytest.raises(_CommandFailed):
        _sh(unit, "wget -q -T 2 -O - http://192.0.2.1/")  # TEST-NET-1: never routed
    assert time.monotonic() - started < 2, "without a network, a connection fails at once"
    assert client.api.inspect_container(unit.container_id)["HostConfig"]["NetworkMode"] == "none"


def test_limits_and_labels_are_applied(ready: tuple[VmExeUnit, Recorder], client: docker.DockerClient) -> None:
    unit, _ = ready
    attrs = client.api.inspect_container(unit.container_id)
    host = attrs["HostConfig"]
    assert host["Memory"] == MEMORY_BYTES
    assert host["MemorySwap"] == MEMORY_BYTES
    assert host["NanoCpus"] == int(CPUS * 1e9)
    assert host["PidsLimit"] and host["PidsLimit"] > 0
    assert attrs["Config"]["Labels"][ACTIVITY_LABEL] == unit.workdir.name
    assert attrs["Config"]["Labels"][ROOT_LABEL] == str(unit.workdir.parent)
    assert {m["Destination"]: m["Source"] for m in attrs["Mounts"]} == {"/golem/work": str(unit.volumes["/golem/work"])}


def test_memory_hog_is_killed_at_the_limit(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    with pytest.raises(_CommandFailed, match="137"):
        unit.run("b", 0, {"entry_point": "/bin/tail", "args": ["/dev/zero"]})
    # The container itself survives its command.
    assert _sh(unit, "echo alive")[0] == "alive\n"


def test_usage_reports_cpu_and_memory(ready: tuple[VmExeUnit, Recorder]) -> None:
    unit, _ = ready
    _sh(unit, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    cpu_s, peak_bytes = unit.usage()
    assert cpu_s > 0.01
    assert 0 < peak_bytes <= MEMORY_BYTES


def test_usage_falls_back_to_the_engine_stats_without_cgroup_access(ready: tuple[VmExeUnit, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    unit, _ = ready
    from_cgroup = unit.usage()
    for name, value in (("_cgroup_dirs", {}), ("_cpu_s", 0.0), ("_peak_memory_bytes", 0)):
        monkeypatch.setattr(unit, name, value)
    cpu_s, peak_bytes = unit.usage()
    assert cpu_s >= from_cgroup[0] > 0
    assert 0 < peak_bytes <= MEMORY_BYTES


def test_network_is_given_when_the_agreement_allows_it(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, _ = _new_unit(tmp_path, server, client, allow_network=True)
    try:
        unit.deploy({})
        assert client.api.inspect_container(unit.container_id)["HostConfig"]["NetworkMode"] == "bridge"
    finally:
        unit.close()


# --- transfer -------------------------------------------------------------------------------


def test_transfer_in_and_out_through_a_volume(ready: tuple[VmExeUnit, Recorder], server: FileServer) -> None:
    unit, _ = ready
    unit.transfer({"from": f"{server.url}/words.txt", "to": "container:/golem/work/in/words.txt"})
    stdout, _, _ = _sh(unit, "wc -w < /golem/work/in/words.txt && tr a-z A-Z < in/words.txt > out.txt")
    assert stdout.strip() == "5"
    unit.transfer({"from": "container:/golem/work/out.txt", "to": f"{server.url}/upload/out.txt"})
    assert server.uploads["/upload/out.txt"] == b"ONE TWO THREE\nFOUR FIVE\n"


def test_transfer_outside_volumes_goes_through_the_engine(ready: tuple[VmExeUnit, Recorder], server: FileServer) -> None:
    unit, _ = ready
    unit.transfer({"from": f"{server.url}/words.txt", "to": "container:/tmp/words.txt"})
    assert _sh(unit, "cat /tmp/words.txt")[0] == "one two three\nfour five\n"
    unit.transfer({"from": "container:/tmp/words.txt", "to": "container:/golem/work/copy.txt"})
    assert (unit.volumes["/golem/work"] / "copy.txt").read_text() == "one two three\nfour five\n"
    _sh(unit, "echo from-etc > /etc/motd")
    unit.transfer({"from": "container:/etc/motd", "to": f"{server.url}/upload/motd"})
    assert server.uploads["/upload/motd"] == b"from-etc\n"


def test_transfer_into_a_missing_folder_outside_volumes_fails(ready: tuple[VmExeUnit, Recorder], server: FileServer) -> None:
    unit, _ = ready
    with pytest.raises(ExeUnitError, match="does not exist"):
        unit.transfer({"from": f"{server.url}/words.txt", "to": "container:/no/such/dir/words.txt"})
    with pytest.raises(ExeUnitError, match="no such file"):
        unit.transfer({"from": "container:/no/such/file", "to": f"{server.url}/upload/x"})


@pytest.mark.parametrize(
    "target",
    ["container:/golem/work/../../etc/passwd", "container:/golem/work/./x", "container:golem/work/x", "container:/", "container:/golem/work/%2e%2e/x"],
)
def test_path_traversal_is_refused(ready: tuple[VmExeUnit, Recorder], server: FileServer, target: str) -> None:
    unit, _ = ready
    with pytest.raises(ExeUnitError):
        unit.transfer({"from": f"{server.url}/words.txt", "to": target})
    with pytest.raises(ExeUnitError):
        unit.transfer({"from": target, "to": f"{server.url}/upload/x"})


def test_symlinks_planted_in_a_volume_are_not_followed(ready: tuple[VmExeUnit, Recorder], server: FileServer) -> None:
    unit, _ = ready
    # Inside the container these point at its own files; on the host they would point at the host's.
    _sh(unit, "ln -sf /etc/passwd /golem/work/link && ln -sfn / /golem/work/rootdir")
    with pytest.raises(ExeUnitError, match="not a regular file"):
        unit.transfer({"from": "container:/golem/work/link", "to": f"{server.url}/upload/leak"})
    with pytest.raises(ExeUnitError, match="symlink"):
        unit.transfer({"from": "container:/golem/work/rootdir/etc/hostname", "to": f"{server.url}/upload/leak"})
    marker = f"loam-vm-test-{os.urandom(4).hex()}"
    with pytest.raises(ExeUnitError, match="symlink"):
        unit.transfer({"from": f"{server.url}/words.txt", "to": f"container:/golem/work/rootdir/tmp/{marker}"})
    assert not Path("/tmp", marker).exists()
    assert "/upload/leak" not in server.uploads


def test_fifo_planted_in_a_volume_does_not_hang_a_transfer(ready: tuple[VmExeUnit, Recorder], server: FileServer) -> None:
    unit, _ = ready
    _sh(unit, "rm -f /golem/work/fifo && mkfifo /golem/work/fifo")
    started = time.monotonic()
    for params in (
        {"from": "container:/golem/work/fifo", "to": f"{server.url}/upload/fifo"},
        {"from": f"{server.url}/words.txt", "to": "container:/golem/work/fifo"},
    ):
        with pytest.raises(ExeUnitError, match="not a regular file"):
            unit.transfer(params)
    assert time.monotonic() - started < 2


def test_storage_limit_counts_volumes_and_the_container_layer(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, out = _new_unit(tmp_path, server, client, storage_bytes=1024 * 1024)
    try:
        unit.deploy({})
        unit.start({})
        unit.check_storage()
        _sh(unit, "dd if=/dev/zero of=/tmp/big bs=1024 count=1500 2>/dev/null")
        with pytest.raises(ExeUnitError, match="storage limit"):
            unit.check_storage()
        _sh(unit, "rm /tmp/big && dd if=/dev/zero of=/golem/work/big bs=1024 count=1500 2>/dev/null")
        unit.run_batch(ChildRunBatch("b", ({"run": {"entry_point": "/bin/true", "args": []}},)))
        result = [m.result for m in out.messages if isinstance(m, ChildResult)][-1]
        assert result.result == "Error" and "storage limit" in (result.message or "")
    finally:
        unit.close()


def test_command_over_the_wall_clock_limit_is_killed_and_the_container_survives(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, out = _new_unit(tmp_path, server, client, wall_s=0.5)
    try:
        unit.deploy({})
        unit.start({})
        started = time.monotonic()
        with pytest.raises(_CommandFailed, match="wall-clock limit of 0.5 s exceeded") as info:
            _sh(unit, "echo before; sleep 30 & sleep 30")
        assert time.monotonic() - started < 5
        assert info.value.stdout == "before\n"
        assert _sh(unit, "echo alive")[0] == "alive\n"
        assert "sleep 30" not in _sh(unit, "ps -o args")[0], "a process of the killed command is still running"
    finally:
        unit.close()


def test_command_whose_processes_escape_the_kill_takes_the_container_with_it(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit, _ = _new_unit(tmp_path, server, client, wall_s=0.5)
    unit.deploy({})
    unit.start({})
    # The subshell exits at once: its sleep is re-parented to the container's init, out of
    # the command's process tree, and keeps the command's output open.
    with pytest.raises(_CommandFailed, match="with its container"):
        _sh(unit, "(sleep 30 &); sleep 30")
    assert unit.state == "Terminated"
    assert _containers(client, unit) == []
    unit.close()


def test_nested_and_odd_volumes_are_mounted_where_transfers_put_files(tmp_path: Path, server: FileServer, client: docker.DockerClient) -> None:
    from exeunits.vm.gvmi import pack_gvmi

    volumes = {"/golem": {}, "/golem/work": {}, "/odd:name,x=y": {}}
    pack_gvmi(build_images() / "rootfs", {"Env": ["PATH=/bin"], "Volumes": volumes}, server.root / "nested.gvmi", compression="gzip")
    unit, _ = _new_unit(tmp_path, server, client, "nested.gvmi")
    try:
        unit.deploy({})
        unit.start({})
        assert sorted(unit.volumes) == sorted(volumes)
        for target in ("/golem/work/a.txt", "/golem/b.txt", "/odd:name,x=y/c.txt"):
            unit.transfer({"from": f"{server.url}/words.txt", "to": f"container:{target}"})
            assert _sh(unit, f"wc -w < '{target}'")[0].strip() == "5"
        assert (unit.volumes["/golem/work"] / "a.txt").is_file()
    finally:
        unit.close()
