"""The vm exe-unit: one activity's container on the Docker engine, driven by exe-script commands.

``deploy`` prepares the task package's image (see ``image.py``) and creates a container
from it: no network unless the agreement allows it (or the requestor's VPN, below), the
agreement's memory and cpu limits, one host folder per volume the image declares (under
``<workdir>/volumes``), and a shell loop as its main process so that ``run`` can execute
commands in it. ``start`` starts it; ``run`` executes ``entry_point args...`` inside with
output going to the same files (and stream events) as the wasmtime exe-unit's; ``transfer``
moves files between http(s) URLs and ``container:/path``; ``close`` removes the container,
its network and its folders::

    unit = VmExeUnit(args, out)          # args: the child's parsed arguments
    unit.deploy({}); unit.start({})
    stdout, stderr, _ = unit.run("batch-1", 0, {"entry_point": "/bin/echo", "args": ["hi"]})
    unit.close()

A ``deploy`` whose ``net`` describes the requestor's VPN (what yapapi and golem-core
send: ``{"net": [{"id", "ip", "mask", "nodeIp", "nodes", "gateway"}], "hosts": {...}}``)
puts the container, when the agreement gives it no network, on a Docker network of its
own, ``loam-vpn-<workdir name>``, created ``internal``: the node on the host can open
connections to the container's address there (``container_address()``) to relay the
requestor's, while the container has no route out of the host. ``hosts`` become entries
of the container's /etc/hosts.

Every container and network carries the labels ``loam.activity=<workdir name>`` and
``loam.root=<workdir's parent>``; ``sweep()`` removes the containers and networks that a
killed child left behind.
"""

from __future__ import annotations

import argparse
import atexit
import codecs
import contextlib
import ipaddress
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from exeunits.output import captured
from exeunits.vm import cgroups, files
from exeunits.vm.vpn import RELAY_PATH, RelayLink
from protocol.activity import ChildEvent, ChildPackets
from protocol.errors import ExeUnitError

if TYPE_CHECKING:
    import docker

    from exeunits.framing import FrameWriter
    from exeunits.vm.image import VmImage
    from protocol.activity import ChildRunBatch

__all__ = [
    "ACTIVITY_LABEL",
    "ROOT_LABEL",
    "RUNTIME_NAME",
    "DEFAULT_PIDS_LIMIT",
    "VPN_NETWORK_PREFIX",
    "VPN_BRIDGE_PREFIX",
    "HOST_GUARD_RULE",
    "guard_host",
    "VmExeUnit",
    "connect",
    "container_address",
    "engine_available",
    "sweep",
]

RUNTIME_NAME = "vm"
ACTIVITY_LABEL = "loam.activity"
ROOT_LABEL = "loam.root"
# A fork bomb in one container must not exhaust the provider's process table.
DEFAULT_PIDS_LIMIT = 4096
_DEFAULT_MAX_TRANSFER_BYTES = 256 * 1024 * 1024
_ENGINE_TIMEOUT_S = 120.0
# The container's main process: it only waits to be told to stop, so that `run` can
# execute commands beside it.
_INIT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
# After killing a command that overran its wall-clock limit, how long its output may take
# to end before the whole container goes (a process that escaped the kill holds it open).
_KILL_GRACE_S = 2.0
# get_archive reports Go's os.FileMode: directory, symlink, device, named pipe, socket,
# char device and irregular are type bits; a regular file has none of them.
_GO_FILE_TYPE_BITS = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)
VPN_NETWORK_PREFIX = "loam-vpn-"
VPN_BRIDGE_PREFIX = "loamv"  # + 10 characters of the activity id: a Linux interface name has at most 15
# New connections from a VPN bridge to the host itself are dropped; the node's own connections
# to the containers (their replies are ESTABLISHED) pass. An internal network has no route
# out of the host, this keeps it from the host's own listening ports.
HOST_GUARD_RULE = ("INPUT", "-i", VPN_BRIDGE_PREFIX + "+", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")
# What a deploy's VPN description may hold: yagna accepts a few networks per activity.
_MAX_VPN_NETWORKS = 4
_MAX_HOSTS = 256
_VPN_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# A host name as /etc/hosts takes it: no blanks, and no ':' (the engine's "name:ip" form).
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")


def connect(timeout_s: float = _ENGINE_TIMEOUT_S) -> docker.DockerClient:
    """A client of the local Docker engine (``DOCKER_HOST`` or the default socket) that has answered a ping.

    Raises:
        ExeUnitError: the docker SDK is missing or no engine answers.
    """
    try:
        import docker
    except ImportError as exc:
        raise ExeUnitError("the vm runtime needs the docker package (pip install docker)") from exc
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except docker.errors.DockerException as exc:
        raise ExeUnitError(f"no Docker engine answers: {exc}") from exc
    return client


def engine_available() -> bool:
    """True when a Docker engine answers here (the provider offers the vm runtime only then)."""
    try:
        connect(timeout_s=5).close()
    except ExeUnitError:
        return False
    return True


def sweep(client: docker.DockerClient, label: str = ACTIVITY_LABEL) -> list[str]:
    """Remove every container (running or not) carrying ``label``, then every network; returns the containers' ids.

    ``label`` is a key (``loam.activity``: every activity container on this engine) or
    ``key=value`` (``loam.activity=<id>``: one activity's; ``loam.root=<dir>``: one node's).
    The networks are the activities' VPN networks; one that cannot be removed is logged.

        >>> sweep(client, f"{ROOT_LABEL}={activities_dir}")   # at node start: what a killed node left

    Raises:
        ExeUnitError: the engine does not answer.
    """
    import docker.errors

    try:
        found = client.api.containers(all=True, quiet=True, filters={"label": label})
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        raise ExeUnitError(f"cannot list the containers labelled {label}: {exc}") from exc
    removed = []
    for entry in found:
        container_id = entry["Id"]
        if _remove_container(client, container_id):
            removed.append(container_id)
    if removed:
        structlog.get_logger().bind(component="vm").info("vm_containers_swept", label=label, count=len(removed))
    try:
        networks = client.api.networks(filters={"label": label})
    except (docker.errors.DockerException, OSError) as exc:
        raise ExeUnitError(f"cannot list the networks labelled {label}: {exc}") from exc
    gone = sum(_remove_network(client, entry["Id"]) for entry in networks)
    if gone:
        structlog.get_logger().bind(component="vm").info("vm_networks_swept", label=label, count=gone)
    return removed


def _docker_subnets(avoid: list[ipaddress.IPv4Network], tries: int = 64) -> list[ipaddress.IPv4Network]:
    """Candidate /28 subnets for a VPN container's network, from a random start, clear of `avoid`.

    From 172.16.0.0/12 first, then 10.0.0.0/8 and 100.64.0.0/10 (a VPN may cover a whole range).
    """
    import random

    out: list[ipaddress.IPv4Network] = []
    for space in (ipaddress.IPv4Network(n) for n in ("172.16.0.0/12", "10.0.0.0/8", "100.64.0.0/10")):
        if any(a.supernet_of(space) for a in avoid):
            continue  # all of it taken
        count = space.num_addresses // 16
        start = random.randrange(count)
        for i in range(min(count, tries * 64)):
            subnet = ipaddress.IPv4Network((int(space.network_address) + ((start + i) % count) * 16, 28))
            if not any(subnet.overlaps(a) for a in avoid):
                out.append(subnet)
                if len(out) >= tries:
                    return out
    return out


def _host_routes() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this host routes to directly (/proc/net/route), but the default route."""
    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            routes.append(net)
    return routes


def guard_host() -> bool:
    """Make sure HOST_GUARD_RULE is in the host's firewall (root only); True when it is."""
    import subprocess

    iptables = shutil.which("iptables")
    if os.geteuid() != 0 or iptables is None:
        return False
    try:
        if subprocess.run([iptables, "-w", "5", "-C", *HOST_GUARD_RULE], capture_output=True, timeout=10).returncode == 0:
            return True
        inserted = subprocess.run([iptables, "-w", "5", "-I", *HOST_GUARD_RULE], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return inserted.returncode == 0


def container_address(client: docker.DockerClient, activity_id: str, root: str) -> str | None:
    """The IPv4 address of the activity's running container (on its VPN network or bridge); None without one.

    The container is the one labelled ``loam.activity=<activity_id>`` and ``loam.root=<root>``;
    None when it is not running or has no network::

        >>> container_address(client, activity_id, str(activities_dir))
        '172.19.0.2'

    Raises:
        ExeUnitError: the engine does not answer.
    """
    import docker.errors

    filters = {"label": [f"{ACTIVITY_LABEL}={activity_id}", f"{ROOT_LABEL}={root}"], "status": "running"}
    try:
        found = client.api.containers(filters=filters)
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        raise ExeUnitError(f"cannot list the containers of activity {activity_id}: {exc}") from exc
    for entry in found:
        networks = (entry.get("NetworkSettings") or {}).get("Networks") or {}
        # The VPN network first: a container is on it or on bridge, but be sure which is asked for.
        for name in sorted(networks, key=lambda n: not n.startswith(VPN_NETWORK_PREFIX)):
            address = (networks[name] or {}).get("IPAddress")
            if address:
                return str(address)
    return None


class VmExeUnit:
    """Runs exe-script commands for one activity in a container on the Docker engine."""

    def __init__(
        self, args: argparse.Namespace, out: FrameWriter, *, client: docker.DockerClient | None = None
    ) -> None:
        self._out = out
        self.workdir = Path(args.workdir).absolute()
        self.state = "Initialized"
        self._package: str = args.package
        self._cache_dir: str | None = getattr(args, "cache_dir", None)
        self._memory_bytes: int | None = getattr(args, "memory_bytes", None)
        self._storage_bytes: int | None = getattr(args, "storage_bytes", None)
        self._wall_s: float | None = getattr(args, "wall_s", None)
        self._cpus: float | None = getattr(args, "cpus", None)
        self._allow_network: bool = bool(getattr(args, "allow_network", False))
        self._node_data_dir: str | None = getattr(args, "node_data_dir", None)
        self._max_package_bytes: int = getattr(args, "max_package_bytes", None) or _DEFAULT_MAX_TRANSFER_BYTES
        self._client = client
        self._container_id: str | None = None
        self._network_id: str | None = None
        self._vpn: list[dict[str, Any]] = []  # the networks deploy named
        self._relay: Path | None = None  # the vpn-relay to put in the container, when one could be built
        self._vpn_problem = ""  # why the container cannot join its networks at the IP level
        self._links: dict[str, RelayLink] = {}  # network id -> relay link, once started
        self._volumes: dict[str, Path] = {}  # guest path -> host folder
        self.image: VmImage | None = None
        self._peak_memory_bytes = 0
        self._cpu_s = 0.0
        self._cgroup_dirs: dict[str, Path] = {}
        self._log = structlog.get_logger().bind(component="vm", activity=self.workdir.name)
        # A child that returns from main() (shutdown, stdin closed) must not leave its
        # container behind; a killed child's is for sweep().
        atexit.register(self.close)

    @property
    def container_id(self) -> str | None:
        """The id of the activity's container, once deployed (None after close)."""
        return self._container_id

    @property
    def network_id(self) -> str | None:
        """The id of the activity's VPN network, when deploy created one (None after close)."""
        return self._network_id

    @property
    def volumes(self) -> dict[str, Path]:
        """The image's volumes: container path -> host folder."""
        return dict(self._volumes)

    # -- commands -----------------------------------------------------------------------

    def deploy(self, params: dict[str, Any]) -> str:
        """Prepare the image and create the container (state Deployed).

        With a ``net`` (the requestor's VPN) and no network from the agreement, the container
        goes on an internal network of its own instead of none; ``hosts`` go to its /etc/hosts.

        Raises:
            ExeUnitError: see ``prepare_image``; a bad ``env``, ``hostname``, ``net`` or ``hosts``
                (then nothing is created); the engine refuses the network or the container.
        """
        from docker.types import Mount

        from exeunits.vm.image import prepare_image

        if self.state != "Initialized":
            raise ExeUnitError(f"deploy needs state Initialized, the activity is {self.state}")
        env = params.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ExeUnitError("deploy env must be a map of strings")
        if any(not k or "=" in k or "\0" in k + v for k, v in env.items()):
            raise ExeUnitError("deploy env names must be non-empty and free of '=' and NUL")
        hostname = params.get("hostname")
        if hostname is not None and (not isinstance(hostname, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", hostname)):
            raise ExeUnitError("deploy hostname must be a host name")
        vpn = _vpn_networks(params.get("net"))
        extra_hosts = _extra_hosts(params.get("hosts"))
        client = self._engine()
        self._vpn = vpn
        if vpn:
            self._relay, self._vpn_problem = self._find_relay()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            image = prepare_image(
                client, self._package, self.workdir / "download",
                max_package_bytes=self._max_package_bytes, lock_dir=self._cache_dir,
            )
        finally:
            shutil.rmtree(self.workdir / "download", ignore_errors=True)
        mounts = []
        volumes_root = self.workdir / "volumes"
        for i, guest in enumerate(image.config["Volumes"]):
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", guest.strip("/"))[:60]
            host = volumes_root / f"{i}-{slug}"
            host.mkdir(parents=True, exist_ok=True)
            self._volumes[guest] = host
            # Mount, not a "host:guest:rw" bind string: a colon in a path cannot change its meaning.
            mounts.append(Mount(target=guest, source=str(host), type="bind"))
        labels = {ACTIVITY_LABEL: self.workdir.name, ROOT_LABEL: str(self.workdir.parent)}
        network_mode = "bridge" if self._allow_network else "none"
        if vpn and not self._allow_network:
            # The bridge network would also give a route out; the VPN only needs the node
            # (on the host) to reach the container.
            network_mode = self._create_vpn_network(client, labels, vpn)
        try:
            created = self._create_container(client, image, mounts, network_mode, env, labels, hostname, extra_hosts)
            if self._relay is not None:
                self._put_relay(client, created["Id"])
        except BaseException:
            self._remove_vpn_network()
            raise
        self._container_id = created["Id"]
        self.image = image
        self.state = "Deployed"
        self._log.info("vm_deployed", image=image.tag, cached=image.cached, container=created["Id"][:12], network=network_mode)
        how = "cached" if image.cached else "downloaded and imported"
        return f"deployed image {image.tag} ({how}), volumes: {', '.join(self._volumes) or 'none'}"

    def _create_vpn_network(self, client: docker.DockerClient, labels: dict[str, str], vpn: list[dict[str, Any]]) -> str:
        """Create the activity's internal network; returns its name."""
        import docker.errors
        import docker.types

        name = VPN_NETWORK_PREFIX + self.workdir.name
        # The bridge's name on the host matches HOST_GUARD_RULE, which keeps containers away from the host's ports.
        bridge = VPN_BRIDGE_PREFIX + self.workdir.name[:10]
        if not guard_host():
            self._log.warning(
                "vm_vpn_host_unguarded", rule=" ".join(HOST_GUARD_RULE),
                why="not root or no iptables: a container on a VPN network can reach ports this host listens on; "
                    "add the rule as root (scripts/install-provider.sh has the service do it)",
            )  # fmt: skip
        # A small subnet of our choosing, clear of the VPN's own ranges (the engine's default
        # pools go round to 192.168.0.0/20 in time, which would shadow a 192.168.0.x VPN
        # address in the container) and of this host's routes.
        avoid = [n["network"] for n in vpn] + _host_routes()
        problem = "no free subnet"
        for subnet in _docker_subnets(avoid):
            gateway = str(next(subnet.hosts()))
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)])
            try:
                created = client.api.create_network(
                    name, driver="bridge", internal=True, labels=labels, check_duplicate=True, ipam=ipam,
                    options={"com.docker.network.bridge.name": bridge},
                )  # fmt: skip
            except docker.errors.APIError as exc:
                problem = _explain(exc)
                if "overlap" in problem.lower():
                    continue  # another network has it: the next one
                raise ExeUnitError(f"the Docker engine refused the VPN network {name}: {problem}") from exc
            except docker.errors.DockerException as exc:
                raise ExeUnitError(f"the Docker engine refused the VPN network {name}: {_explain(exc)}") from exc
            self._network_id = created["Id"]
            self._log.info("vm_vpn_network_created", network=name, id=created["Id"][:12], subnet=str(subnet), vpn=[n["id"] for n in vpn])
            return name
        raise ExeUnitError(f"the Docker engine refused the VPN network {name}: {problem}")

    def _create_container(
        self,
        client: docker.DockerClient,
        image: VmImage,
        mounts: list[Any],
        network_mode: str,
        env: dict[str, str],
        labels: dict[str, str],
        hostname: str | None,
        extra_hosts: dict[str, str],
    ) -> dict[str, Any]:
        import docker.errors

        vpn_devices: dict[str, Any] = {}
        if self._relay is not None:
            # The relay makes a tun device with the activity's address: in its own network namespace only.
            vpn_devices = {"cap_add": ["NET_ADMIN"], "devices": ["/dev/net/tun:/dev/net/tun:rwm"]}
        host_config = client.api.create_host_config(
            **vpn_devices,
            mounts=mounts,
            network_mode=network_mode,
            extra_hosts=extra_hosts or None,
            mem_limit=self._memory_bytes,
            # The same value: no swap on top of the memory limit.
            memswap_limit=self._memory_bytes,
            nano_cpus=int(self._cpus * 1e9) if self._cpus else None,
            pids_limit=DEFAULT_PIDS_LIMIT,
            security_opt=["no-new-privileges"],
            init=True,  # docker-init as pid 1 reaps what `run` commands leave behind
            auto_remove=False,
        )
        try:
            created: dict[str, Any] = client.api.create_container(
                image.id,
                entrypoint=["/bin/sh", "-c", _INIT],
                command=[],
                environment=env,
                labels=labels,
                hostname=hostname,
                host_config=host_config,
                # Network mode "none" alone already leaves only lo; a disabled network also
                # leaves /etc/hosts unmanaged, without the hosts deploy asked for.
                network_disabled=network_mode == "none" and not extra_hosts,
            )
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"the Docker engine refused a container of image {image.tag}: {_explain(exc)}") from exc
        return created

    def start(self, params: dict[str, Any]) -> str:
        """Start the container (state Ready).

        Raises:
            ExeUnitError: not deployed, or the container does not start (an image without /bin/sh).
        """
        import docker.errors

        if self.state != "Deployed" or self._container_id is None:
            raise ExeUnitError(f"start needs state Deployed, the activity is {self.state}")
        api = self._engine().api
        try:
            api.start(self._container_id)
            pid = int(api.inspect_container(self._container_id)["State"].get("Pid") or 0)
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"the container does not start (the image needs /bin/sh): {_explain(exc)}") from exc
        self._cgroup_dirs = cgroups.cgroup_dirs(pid) if pid > 0 else {}
        self.state = "Ready"
        joined = self._join_networks(api)
        return f"started; {joined}" if joined else "started"

    def vpn_send(self, network_id: str, packets: tuple[bytes, ...]) -> None:
        """IP packets for the container from its network (dropped when it is not in that network)."""
        link = self._links.get(network_id)
        if link is not None:
            link.send(packets)

    def _find_relay(self) -> tuple[Path | None, str]:
        """The relay binary and "" — or None and why the container cannot join at the IP level."""
        from exeunits.vm.relay import RelayBuildError, relay_binary

        if not os.path.exists("/dev/net/tun"):
            return None, "this host has no /dev/net/tun"
        cache = Path(self._cache_dir).parent if self._cache_dir else self.workdir.parent / ".cache"
        try:
            return relay_binary(cache), ""
        except (RelayBuildError, OSError) as exc:
            return None, str(exc)

    def _put_relay(self, client: docker.DockerClient, container_id: str) -> None:
        import io
        import tarfile

        import docker.errors

        assert self._relay is not None
        data = self._relay.read_bytes()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(RELAY_PATH.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        try:
            client.api.put_archive(container_id, "/", archive.getvalue())
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"cannot put the VPN relay into the container: {_explain(exc)}") from exc

    def _join_networks(self, api: Any) -> str:
        """Start a relay per network; returns what to tell the requestor ("" without networks).

        A relay that cannot start costs the IP level only: the requestor's TCP connections to
        the container still work (the node relays them to its address on the host).
        """
        if not self._vpn:
            return ""
        if self._relay is None or self._container_id is None:
            self._log.warning("vm_vpn_not_joined", why=self._vpn_problem)
            return f"vpn: reachable from the requestor only ({self._vpn_problem})"
        joined = []
        for i, net in enumerate(self._vpn):
            address, netmask = str(net["node_ip"]), str(net["network"].netmask)
            try:
                link = RelayLink.open(api, self._container_id, f"vpn{i}", net["id"], address, netmask, self._packets_out)
            except ExeUnitError as exc:
                self._log.warning("vm_vpn_not_joined", network=net["id"], why=str(exc))
                joined.append(f"{address} reachable from the requestor only ({exc})")
                continue
            self._links[net["id"]] = link
            joined.append(f"{address}/{netmask} on vpn{i}")
            self._log.info("vm_vpn_joined", network=net["id"], ip=address, device=f"vpn{i}")
        return "vpn: " + ", ".join(joined)

    def _packets_out(self, network_id: str, packets: list[bytes]) -> None:
        try:
            self._out.write(ChildPackets(network_id, tuple(packets)))
        except (OSError, ValueError):
            pass  # the node is gone, or a packet it would refuse: dropped, as a network would

    def run(self, batch_id: str, index: int, params: dict[str, Any]) -> tuple[str | None, str | None, str]:
        """Execute ``entry_point args...`` in the container; returns (stdout tail, stderr tail, message).

        Raises:
            _CommandFailed: the command exited with a non-zero code (carries its output).
            ExeUnitError: bad parameters, not Ready, or the container is gone.
        """
        import docker.errors

        from exeunits.child import _CommandFailed

        if self.state != "Ready" or self._container_id is None:
            raise ExeUnitError(f"run needs state Ready (deploy and start first), the activity is {self.state}")
        entry = params.get("entry_point")
        args = params.get("args", [])
        if not isinstance(entry, str) or not entry or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ExeUnitError("run needs entry_point (a string) and args (a list of strings)")
        if "\0" in entry or any("\0" in a for a in args):
            raise ExeUnitError("run: NUL characters are not allowed in entry_point or args")
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out_path, err_path = logs / f"{batch_id}-{index}.out", logs / f"{batch_id}-{index}.err"
        capture = params.get("capture") or {}
        streaming = isinstance(capture, dict) and any(isinstance(v, dict) and "stream" in v for v in capture.values())
        self._out.write(ChildEvent(batch_id, index, "started", entry, None, None))
        api = self._engine().api
        watchdog: _Watchdog | None = None
        try:
            exec_id = api.exec_create(self._container_id, [entry, *args], stdout=True, stderr=True, tty=False)["Id"]
            with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
                decoders = {k: codecs.getincrementaldecoder("utf-8")("replace") for k in ("stdout", "stderr")}
                chunks = api.exec_start(exec_id, stream=True, demux=True)
                if self._wall_s:
                    watchdog = _Watchdog(self, exec_id, self._wall_s)
                for out_chunk, err_chunk in chunks:
                    for kind, chunk, file in (("stdout", out_chunk, out_file), ("stderr", err_chunk, err_file)):
                        if not chunk:
                            continue
                        file.write(chunk)
                        file.flush()
                        if streaming:
                            text = decoders[kind].decode(chunk)
                            if text:
                                self._out.write(ChildEvent(batch_id, index, kind, text, None, None))
            if watchdog is not None:
                watchdog.cancel()
            code = -1 if watchdog is not None and watchdog.fired else self._exit_code(exec_id)
        except (docker.errors.DockerException, OSError) as exc:
            if watchdog is not None:
                watchdog.cancel()
            if watchdog is None or not watchdog.fired:
                message = f"the container cannot run commands: {_explain(exc)}"
                self._out.write(ChildEvent(batch_id, index, "finished", "", -1, message))
                raise ExeUnitError(f"run {entry}: {message}") from exc
            code = -1
        stdout, stderr = captured(out_path, capture, "stdout"), captured(err_path, capture, "stderr")
        if watchdog is not None and watchdog.fired:
            message = f"wall-clock limit of {self._wall_s:g} s exceeded; {entry} was killed"
            if watchdog.removed_container:
                message += " with its container (a process it started would not stop)"
        else:
            message = None if code == 0 else _exit_message(entry, code, self._memory_bytes)
        self._out.write(ChildEvent(batch_id, index, "finished", "", code, message))
        if message is not None:
            raise _CommandFailed(f"run {entry}: {message}", stdout, stderr)
        return stdout, stderr, ""

    def transfer(self, params: dict[str, Any]) -> str:
        """Copy a file between an http(s) URL and ``container:/path``, or within the container.

        Paths inside a volume go through its host folder; others through the engine's
        archive API. ``.``/``..`` components and symlinks on the host side are refused.

        Raises:
            ExeUnitError: bad URLs, a path outside the container, a failed or oversized transfer.
        """
        src, dst = params.get("from"), params.get("to")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ExeUnitError("transfer needs from and to")
        if self.state not in ("Deployed", "Ready") or self._container_id is None:
            raise ExeUnitError(f"transfer needs a deployed activity, the activity is {self.state}")
        src_scheme, dst_scheme = urllib.parse.urlparse(src).scheme, urllib.parse.urlparse(dst).scheme
        if "gftp" in (src_scheme, dst_scheme):
            return self._gftp_transfer(src, dst, src_scheme, dst_scheme)
        if src_scheme in ("http", "https", "container") and dst_scheme == "container":
            dst_parts = files.container_parts(dst)
            with tempfile.TemporaryFile(dir=self.workdir) as tmp:
                if src_scheme == "container":
                    self._read_container_file(src, files.container_parts(src), tmp)
                else:
                    files.download_to(src, tmp, self._transfer_cap())
                tmp.seek(0)
                self._write_container_file(dst, dst_parts, tmp)
            return f"{'copied' if src_scheme == 'container' else 'fetched'} {src} to {dst}"
        if src_scheme == "container" and dst_scheme in ("http", "https"):
            with tempfile.TemporaryFile(dir=self.workdir) as tmp:
                size = self._read_container_file(src, files.container_parts(src), tmp)
                tmp.seek(0)
                request = urllib.request.Request(dst, data=tmp, method="PUT", headers={"Content-Length": str(size)})
                try:
                    with urllib.request.urlopen(request, timeout=files.HTTP_TIMEOUT_S):
                        pass
                except (OSError, ValueError) as exc:
                    raise ExeUnitError(f"cannot upload to {dst}: {exc}") from None
            return f"uploaded {src} to {dst}"
        raise ExeUnitError(f"transfer from {src_scheme or src!r} to {dst_scheme or dst!r} is not supported by this exe-unit")

    def _gftp_transfer(self, src: str, dst: str, src_scheme: str, dst_scheme: str) -> str:
        """gftp:// ↔ container:, through a file in the work dir and the local node."""
        from exeunits.child import gftp_fetch, gftp_upload

        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp_dir:
            tmp = Path(tmp_dir) / "transfer"
            if src_scheme == "gftp" and dst_scheme == "container":
                gftp_fetch(self._node_data_dir, src, tmp, self._transfer_cap())
                with open(tmp, "rb") as f:
                    self._write_container_file(dst, files.container_parts(dst), f)
                return f"fetched {src} to {dst}"
            if src_scheme == "container" and dst_scheme == "gftp":
                with open(tmp, "wb") as f:
                    self._read_container_file(src, files.container_parts(src), f)
                gftp_upload(self._node_data_dir, tmp, dst)
                return f"uploaded {src} to {dst}"
        raise ExeUnitError(f"transfer from {src_scheme or src!r} to {dst_scheme or dst!r} is not supported by this exe-unit")

    def terminate(self, params: dict[str, Any] | None = None) -> str:
        """Remove the container and its volumes (state Terminated)."""
        self.close()
        return "terminated"

    def run_batch(self, batch: ChildRunBatch) -> None:
        """Run a batch's commands in order, as the wasmtime exe-unit does (the loop is runtime-neutral)."""
        from exeunits.child import WasmExeUnit

        WasmExeUnit.run_batch(self, batch)  # type: ignore[arg-type]
        if self.state == "Terminated":
            self.close()

    def storage_used_bytes(self) -> int:
        """Disk the activity uses: its files on the host (volumes, logs) and what the container wrote to its own layer."""
        import docker.errors

        used = 0
        for root, _dirs, names in os.walk(self.workdir):
            for name in names:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(root, name))
                    if stat.S_ISREG(st.st_mode):
                        used += st.st_size
        if self._container_id is not None and self._client is not None:
            try:
                found = self._client.api.containers(all=True, size=True, filters={"id": self._container_id})
            except docker.errors.DockerException:
                found = []
            used += sum(int(c.get("SizeRw") or 0) for c in found)
        return used

    def check_storage(self) -> None:
        """Raises ExeUnitError when the activity's files outgrew the disk limit (checked after run and transfer)."""
        if self._storage_bytes is not None and self.storage_used_bytes() > self._storage_bytes:
            raise ExeUnitError(f"the activity's files exceed the storage limit of {self._storage_bytes} bytes")

    def _transfer_cap(self) -> int:
        if self._storage_bytes is None:
            return self._max_package_bytes
        return max(0, min(self._max_package_bytes, self._storage_bytes - self.storage_used_bytes()))

    def usage(self) -> tuple[float, int]:
        """(cpu seconds, peak memory bytes) of the container so far; zeros before it started.

        Read from the container's cgroup when this process can see it (microseconds), else
        from the engine's stats (which waits for its next sample, up to a second).
        """
        import docker.errors

        if self._container_id is None or self._client is None or self.state != "Ready":
            return self._cpu_s, self._peak_memory_bytes
        sample = cgroups.cgroup_usage(self._cgroup_dirs) if self._cgroup_dirs else None
        if sample is None:
            try:
                stats = self._client.api.stats(self._container_id, stream=False, one_shot=True)
            except docker.errors.DockerException:
                return self._cpu_s, self._peak_memory_bytes
            cpu_ns = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
            memory = stats.get("memory_stats") or {}
            sample = cpu_ns / 1e9, int(memory.get("max_usage") or memory.get("usage") or 0)
        self._cpu_s = max(self._cpu_s, sample[0])
        self._peak_memory_bytes = max(self._peak_memory_bytes, sample[1])
        return self._cpu_s, self._peak_memory_bytes

    def close(self) -> None:
        """Remove the container (killing what runs in it), its VPN network and the volume folders; idempotent."""
        for link in self._links.values():
            link.close()
        self._links.clear()
        container_id, self._container_id = self._container_id, None
        if container_id is not None and self._client is not None:
            _remove_container(self._client, container_id)
            self._log.info("vm_container_removed", container=container_id[:12])
        self._remove_vpn_network()
        shutil.rmtree(self.workdir / "volumes", ignore_errors=True)
        self._volumes.clear()
        self.state = "Terminated"
        atexit.unregister(self.close)

    # -- internals ----------------------------------------------------------------------

    def _remove_vpn_network(self) -> None:
        network_id, self._network_id = self._network_id, None
        if network_id is not None and self._client is not None and _remove_network(self._client, network_id):
            self._log.info("vm_vpn_network_removed", network=network_id[:12])

    def _engine(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def _exit_code(self, exec_id: str) -> int:
        # The output stream ends when the process closes it; its exit is recorded a moment later.
        for _ in range(100):
            info = self._engine().api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.01)
        return -1

    def _volume_of(self, parts: list[str]) -> tuple[Path, list[str]] | None:
        """The host folder and the remaining parts when ``parts`` lies inside a volume (the innermost one)."""
        best: tuple[Path, list[str]] | None = None
        for guest, host in self._volumes.items():
            guest_parts = [p for p in guest.split("/") if p]
            if parts[: len(guest_parts)] == guest_parts and len(parts) > len(guest_parts):
                if best is None or len(parts) - len(guest_parts) < len(best[1]):
                    best = host, parts[len(guest_parts):]
        return best

    def _read_container_file(self, url: str, parts: list[str], dest: IO[bytes]) -> int:
        """Copy the container file at ``parts`` into ``dest``; returns its size."""
        import docker.errors

        inside = self._volume_of(parts)
        if inside is not None:
            fd = files.open_beneath(inside[0], inside[1], url, writing=False)
            with open(fd, "rb") as f:
                return files.copy_capped(f, dest, self._max_package_bytes, url)
        try:
            stream, info = self._engine().api.get_archive(self._container_id, "/" + "/".join(parts))
        except docker.errors.NotFound:
            raise ExeUnitError(f"{url}: no such file in the container") from None
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"{url}: cannot read it from the container: {_explain(exc)}") from exc
        if int(info.get("mode", 0)) & _GO_FILE_TYPE_BITS:
            files.drain(stream)
            raise ExeUnitError(f"{url}: not a regular file")
        if int(info.get("size", 0)) > self._max_package_bytes:
            files.drain(stream)
            raise ExeUnitError(f"{url}: {info['size']} bytes is larger than the limit of {self._max_package_bytes} bytes")
        with files.ChunkReader(stream) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    return files.copy_capped(f, dest, self._max_package_bytes, url)
        raise ExeUnitError(f"{url}: not a regular file")

    def _write_container_file(self, url: str, parts: list[str], src: IO[bytes]) -> None:
        """Write ``src`` to the container file at ``parts`` (its folder must exist unless in a volume)."""
        import docker.errors

        inside = self._volume_of(parts)
        if inside is not None:
            fd = files.open_beneath(inside[0], inside[1], url, writing=True)
            with open(fd, "wb") as f:
                files.copy_capped(src, f, self._max_package_bytes, url)
            return
        size = src.seek(0, os.SEEK_END)
        src.seek(0)
        with tempfile.TemporaryFile(dir=self.workdir) as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                info = tarfile.TarInfo(parts[-1])
                info.size, info.mode, info.mtime = size, 0o644, int(time.time())
                tar.addfile(info, src)
            archive.seek(0)
            folder = "/" + "/".join(parts[:-1])
            try:
                ok = self._engine().api.put_archive(self._container_id, folder, archive)
            except docker.errors.NotFound:
                raise ExeUnitError(f"{url}: the folder {folder} does not exist in the container") from None
            except docker.errors.DockerException as exc:
                raise ExeUnitError(f"{url}: cannot write it into the container: {_explain(exc)}") from exc
            if not ok:
                raise ExeUnitError(f"{url}: the engine did not write it")


# --- helpers ----------------------------------------------------------------------------


class _Watchdog:
    """Kills a `run` command that overruns the wall-clock limit: its process tree first, the container if need be."""

    def __init__(self, unit: VmExeUnit, exec_id: str, wall_s: float) -> None:
        self._unit = unit
        self._exec_id = exec_id
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.fired = False
        self.removed_container = False
        self._thread = threading.Thread(target=self._watch, args=(wall_s,), daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop watching; once it fired, wait until it has finished killing."""
        with self._lock:
            self._done.set()
        if self.fired:
            self._thread.join(_ENGINE_TIMEOUT_S)

    def _watch(self, wall_s: float) -> None:
        if self._done.wait(wall_s):
            return
        with self._lock:
            # The command may have ended just as the limit passed: then it was in time.
            if self._done.is_set():
                return
            self.fired = True
        killed = 0
        client, container_id = self._unit._client, self._unit.container_id
        try:
            info = client.api.exec_inspect(self._exec_id) if client is not None and container_id else {}
            if info.get("Running") and int(info.get("Pid") or 0) > 0:
                killed = cgroups.kill_tree(int(info["Pid"]), container_id or "")
        except Exception:  # noqa: BLE001 - any failure here falls back to removing the container
            killed = 0
        if killed and self._done.wait(_KILL_GRACE_S):
            return
        # Not allowed to signal the container's processes, or one of them escaped and keeps
        # the output open: only removing the container ends the command.
        self.removed_container = True
        self._unit.close()


def _remove_container(client: docker.DockerClient, container_id: str) -> bool:
    """Force-remove a container and its anonymous volumes; False when it was already gone."""
    import docker.errors

    try:
        client.api.remove_container(container_id, force=True, v=True)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return False
        structlog.get_logger().bind(component="vm").error("vm_container_not_removed", container=container_id[:12], error=str(exc))
        return False
    except docker.errors.DockerException as exc:
        structlog.get_logger().bind(component="vm").error("vm_container_not_removed", container=container_id[:12], error=str(exc))
        return False


def _remove_network(client: docker.DockerClient, network_id: str) -> bool:
    """Remove a network; False when it was already gone or cannot go (logged)."""
    import docker.errors

    try:
        client.api.remove_network(network_id)
        return True
    except docker.errors.NotFound:
        return False
    except (docker.errors.DockerException, OSError) as exc:
        structlog.get_logger().bind(component="vm").error("vm_network_not_removed", network=network_id[:12], error=str(exc))
        return False


def _ipv4(value: Any, field: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise ExeUnitError(f"deploy {field} must be an IPv4 address, not {value!r}")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ExeUnitError(f"deploy {field} {value!r} is not an IPv4 address") from None


def _vpn_networks(value: Any) -> list[dict[str, Any]]:
    """A deploy's ``net``, checked: up to four VPN descriptions; [] when absent.

    Raises:
        ExeUnitError: a description that is not what yapapi and golem-core send (the message names the field).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ExeUnitError("deploy net must be a list of networks")
    if len(value) > _MAX_VPN_NETWORKS:
        raise ExeUnitError(f"deploy net lists {len(value)} networks, at most {_MAX_VPN_NETWORKS} are allowed")
    checked = []
    for i, net in enumerate(value):
        where = f"net[{i}]"
        if not isinstance(net, dict):
            raise ExeUnitError(f"deploy {where} must be a map")
        net_id = net.get("id")
        if not isinstance(net_id, str) or not _VPN_ID.fullmatch(net_id):
            raise ExeUnitError(f"deploy {where}.id must be 1 to 128 characters of A-Z a-z 0-9 _ . -")
        ip = _ipv4(net.get("ip"), f"{where}.ip")
        mask = net.get("mask")
        if mask is None:
            mask = "255.255.255.0"
        _ipv4(mask, f"{where}.mask")
        try:
            # Host bits in ip are tolerated: the network is what ip and mask select.
            network = ipaddress.IPv4Network(f"{ip}/{mask}", strict=False)
        except ValueError:
            raise ExeUnitError(f"deploy {where}.mask {mask} is not a netmask") from None
        inside = f"{ip}/{mask}"
        if "nodeIp" not in net:
            raise ExeUnitError(f"deploy {where}.nodeIp is missing")
        node_ip = _ipv4(net["nodeIp"], f"{where}.nodeIp")
        if node_ip not in network:
            raise ExeUnitError(f"deploy {where}.nodeIp {node_ip} is not inside {inside}")
        gateway = net.get("gateway")
        if gateway is not None:
            _ipv4(gateway, f"{where}.gateway")
        nodes = net.get("nodes")
        nodes = {} if nodes is None else nodes
        if not isinstance(nodes, dict):
            raise ExeUnitError(f"deploy {where}.nodes must be a map of IPv4 addresses to node ids")
        for address, node in nodes.items():
            if _ipv4(address, f"{where}.nodes address") not in network:
                raise ExeUnitError(f"deploy {where}.nodes address {address} is not inside {inside}")
            if not isinstance(node, str):
                raise ExeUnitError(f"deploy {where}.nodes[{address}] must be a node id (a string)")
        checked.append({"id": net_id, "network": network, "node_ip": node_ip, "gateway": gateway, "nodes": dict(nodes)})
    return checked


def _extra_hosts(value: Any) -> dict[str, str]:
    """A deploy's ``hosts`` (host name -> IPv4 address), checked; {} when absent.

    Raises:
        ExeUnitError: not a map, too many entries, a bad name or a value that is not an IPv4 address.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExeUnitError("deploy hosts must be a map of host names to IPv4 addresses")
    if len(value) > _MAX_HOSTS:
        raise ExeUnitError(f"deploy hosts has {len(value)} entries, at most {_MAX_HOSTS} are allowed")
    hosts = {}
    for name, address in value.items():
        if not isinstance(name, str) or not _HOST_NAME.fullmatch(name):
            raise ExeUnitError(f"deploy hosts: {name!r} is not a host name")
        hosts[name] = str(_ipv4(address, f"hosts[{name}]"))
    return hosts


def _exit_message(entry: str, code: int, memory_bytes: int | None) -> str:
    if code == 126:
        return f"{entry} cannot be executed in the container (exit code 126)"
    if code == 127:
        return f"{entry} was not found in the container (exit code 127)"
    if code == 137 and memory_bytes:
        return f"{entry} was killed (exit code 137: SIGKILL, likely over the memory limit of {memory_bytes} bytes)"
    if code > 128:
        return f"{entry} was killed by signal {code - 128} (exit code {code})"
    return f"{entry} exited with code {code}"


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)

