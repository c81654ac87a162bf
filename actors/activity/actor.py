"""ActivityActor: activities under agreements — exe-unit children on the provider, mirrors on the requestor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from actors.activity.view import ActivityView
from actors.activity.vpn_routing import VpnRouter
from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import MarketError, now_ms
from actors.net.actor import Received
from actors.payment.events import ActivityUsage, UsageSeen
from exeunits.framing import FrameWriter, read_frame
from protocol.activity import (
    COMMANDS,
    ActivityCreate,
    ActivityDestroy,
    ActivityExec,
    ActivityQuery,
    ActivityRuntimeEvent,
    ActivityPackets,
    ActivityUpdate,
    ActivityVpnNodes,
    ChildEvent,
    ChildPackets,
    ChildResult,
    ChildRunBatch,
    ChildShutdown,
    ChildUsage,
    ExeResult,
    packet_batches,
)
from protocol.errors import NodeError, ProtocolError

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["ActivityActor", "ActivityError", "ActivityNotFoundError", "activities_dir", "validate_script"]

_UNRESPONSIVE_AFTER_MS = 15_000
_UPDATE_EVERY_MS = 1_000
_QUERY_AFTER_MS = 3_000
_PROVIDER_SILENT_MS = 15_000  # requestor side: no update for this long makes a view Unresponsive
_STOP_GRACE_S = 1.0
_KILL_GRACE_S = 5.0


def activities_dir(settings: Settings) -> Path:
    """Where a provider keeps its activities' work folders (their containers are labelled with it)."""
    return (Path(settings.data_dir) / "activities").absolute()


class ActivityError(NodeError):
    """An activity operation that cannot be done."""


class ActivityNotFoundError(ActivityError):
    """No such activity on this node."""


def validate_script(commands: Any) -> tuple[dict[str, Any], ...]:
    """Check an exe-script's shape: a non-empty list of one-key maps naming known commands.

    Raises:
        ActivityError: it is not; the message names the command and what is wrong.
    """
    if not isinstance(commands, (list, tuple)) or not commands:
        raise ActivityError("an exe-script is a non-empty list of commands")
    if len(commands) > 1000:
        raise ActivityError("an exe-script may hold at most 1000 commands")
    for index, command in enumerate(commands):
        if not isinstance(command, dict) or len(command) != 1:
            raise ActivityError(f"command {index} must be a map with exactly one key (the command name)")
        name, params = next(iter(command.items()))
        if name not in COMMANDS:
            raise ActivityError(f"command {index}: unknown command {name!r} (known: {', '.join(COMMANDS)})")
        if params is not None and not isinstance(params, dict):
            raise ActivityError(f"command {index} ({name}): its arguments must be a map")
    return tuple(dict(c) for c in commands)


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _FromChild:
    activity_id: str
    message: Any  # a child message, or None when the child's stdout closed


@dataclass
class _Running:
    """A provider-side activity and its exe-unit child."""

    activity_id: str
    agreement_id: str
    requestor_id: str
    usage_vector: list[str]
    expires_ms: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    writer: FrameWriter
    state: str = "New"  # Initialized once the child reports in
    reason: str = ""
    error: str = ""
    batches: dict[str, list[ExeResult]] = field(default_factory=dict)
    scripts: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # batch ids in the order they were sent
    cpu_s: float = 0.0
    duration_s: float = 0.0
    peak_memory_bytes: int = 0
    last_heard_ms: int = 0
    last_update_ms: int = 0
    run_limit_s: float = 0.0
    run_deadline_ms: int | None = None  # set while a `run` command executes
    resources: tuple[float, float, float] = (0.0, 0.0, 0.0)  # cores, memory GiB, disk GiB it may use
    runtime: str = ""

    def usage(self) -> tuple[float, ...]:
        values = {
            "golem.usage.cpu_sec": self.cpu_s,
            "golem.usage.duration_sec": self.duration_s,
            "golem.usage.gib": self.peak_memory_bytes / 2**30,
            "golem.usage.storage_gib": 0.0,
        }
        return tuple(values.get(name, 0.0) for name in self.usage_vector)


class ActivityActor(LoamActor):
    """Creates exe-units for agreements (provider) and keeps requestors' views of them."""

    name = "activity"

    def __init__(
        self, identity: Any, settings: Settings, net: Any, market: Any, *, on_actor_failure: FailureHandler | None = None
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._settings = settings
        self._identity = identity
        self._net = net
        self._market = market
        self._ask_s = settings.actors.ask_timeout_s
        self._root = activities_dir(settings)
        self._cache_dir = Path(settings.data_dir) / "cache" / "wasm"
        self._running: dict[str, _Running] = {}
        self._views: dict[str, ActivityView] = {}
        self._payment: pykka.ActorRef | None = None
        self._vpn = VpnRouter(identity.node_id)  # the requestors' networks our vm activities joined
        self._ticker: Ticker | None = None
        # What all activities together may use: cores, memory GiB, disk GiB (the provider agent
        # sets them again when it reloads its settings).
        cfg = settings.provider
        self._limits = (float(cfg.cores), cfg.memory_gib, cfg.storage_gib)

    def start_up(self) -> None:
        # Work dirs (and containers) left by a node that was killed belong to activities
        # that are gone.
        if self._settings.provider.enabled:  # any preset may sell the vm runtime
            _sweep_containers(f"loam.root={self._root}", wait=True)
        if self._root.exists():
            shutil.rmtree(self._root, ignore_errors=True)
        self._root.mkdir(parents=True, exist_ok=True)
        self._net.subscribe("activity.", self.actor_ref).get(timeout=self._ask_s)
        self._ticker = Ticker(self.actor_ref, _Tick(), 1.0)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        for run in list(self._running.values()):
            self._stop_child(run, "the provider node is stopping", notify=True)

    # -- requestor API ----------------------------------------------------------------------

    def create_activity(self, agreement_id: str) -> str:
        """Ask the provider of an approved agreement to start an activity; returns its id (state New).

        Wait on view(id) for the provider's answer.

        Raises:
            ActivityError: no such approved agreement of ours as requestor.
        """
        try:
            rec = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
        except MarketError as exc:
            raise ActivityError(str(exc)) from None
        if rec.role != "requestor" or rec.state != "Approved":
            raise ActivityError(f"agreement {agreement_id} is {rec.state}; an activity needs an Approved agreement of ours")
        activity_id = os.urandom(16).hex()
        self._views[activity_id] = ActivityView(activity_id, agreement_id, rec.terms.provider_id)
        self._net.send(rec.terms.provider_id, ActivityCreate(activity_id, agreement_id))
        return activity_id

    def view(self, activity_id: str) -> ActivityView:
        """The requestor-side view of an activity (thread-safe; wait on it from your own thread).

        Raises:
            ActivityNotFoundError.
        """
        view = self._views.get(activity_id)
        if view is None:
            raise ActivityNotFoundError(f"activity {activity_id} not found")
        return view

    def exec(self, activity_id: str, commands: Any) -> str:
        """Send an exe-script batch; returns the batch id. Results arrive in the view.

        Raises:
            ActivityNotFoundError, ActivityError: unknown activity, ended activity or a malformed script.
        """
        view = self.view(activity_id)
        if view.state in ("Terminated", "Unresponsive"):
            raise ActivityError(f"activity {activity_id} is {view.state}: {view.reason or view.error}")
        script = validate_script(commands)
        batch_id = os.urandom(16).hex()
        view.add_batch(batch_id)
        self._net.send(view.provider_id, ActivityExec(activity_id, batch_id, script))
        return batch_id

    def destroy(self, activity_id: str) -> None:
        """Ask the provider to stop the activity (idempotent). Wait on the view for Terminated."""
        view = self.view(activity_id)
        if view.state != "Terminated":
            self._net.send(view.provider_id, ActivityDestroy(activity_id))

    def activities(self) -> list[ActivityView]:
        """The requestor's activities."""
        return list(self._views.values())

    # -- provider side ---------------------------------------------------------------------

    def running(self) -> list[dict[str, Any]]:
        """The provider's running activities, for status displays."""
        return [
            {"activity_id": r.activity_id, "agreement_id": r.agreement_id, "state": r.state, "usage": list(r.usage())}
            for r in self._running.values()
        ]

    def vpn_target(self, requestor_id: str, network_id: str, ip: str) -> str:
        """The running vm activity of this requestor deployed as `ip` in `network_id`; returns its id.

        Raises:
            ActivityError: there is none (so a tunnel to it is refused).
        """
        for run in self._running.values():
            if run.requestor_id == requestor_id and self._vpn.address(run.activity_id, network_id) == ip and run.state in (
                "Deployed", "Ready"
            ):
                return run.activity_id
        raise ActivityError(f"no running activity of yours is {ip} in network {network_id} on this provider")

    def set_limits(self, cores: float, memory_gib: float, storage_gib: float) -> None:
        """What all activities together may use from now on (running ones are left alone)."""
        self._limits = (float(cores), float(memory_gib), float(storage_gib))

    def resources(self) -> dict[str, dict[str, float]]:
        """Cores, memory and disk: what running activities claim and the limits."""
        used = [sum(r.resources[i] for r in self._running.values()) for i in range(3)]
        return {
            name: {"used": used[i], "limit": self._limits[i]}
            for i, name in enumerate(("cores", "memory_gib", "storage_gib"))
        }

    def _over_limits(self, need: tuple[float, float, float]) -> str:
        """Why an activity needing these resources does not fit beside the running ones ("" when it does)."""
        used = [sum(r.resources[i] for r in self._running.values()) for i in range(3)]
        for i, (what, unit) in enumerate((("cores", ""), ("memory", " GiB"), ("disk", " GiB"))):
            if used[i] + need[i] > self._limits[i] + 1e-9:
                return (
                    f"not enough free {what} on this provider: the activity needs {need[i]:g}{unit}, "
                    f"{used[i]:g}{unit} of {self._limits[i]:g}{unit} are in use by {len(self._running)} activities"
                )
        return ""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self._on_tick(now_ms())
            return None
        try:
            if isinstance(message, _FromChild):
                self._on_child(message)
            elif isinstance(message, Received):
                self._on_network(message.sender, message.message)
        except (ProtocolError, ActivityError, MarketError) as exc:
            self._log.warning("activity_message_rejected", error=str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - remote input must never kill the actor
            self._log.error("activity_message_failed", error=repr(exc), exc_info=True)
        return None

    def _on_network(self, sender: str, msg: Any) -> None:
        if isinstance(msg, ActivityCreate):
            self._create(sender, msg)
        elif isinstance(msg, ActivityExec):
            self._exec(sender, msg)
        elif isinstance(msg, ActivityDestroy):
            run = self._running.get(msg.activity_id)
            if run is not None and run.requestor_id == sender:
                self._stop_child(run, "destroyed by the requestor", notify=True)
            elif run is None:
                self._net.send(sender, _ended(msg.activity_id, "no such activity (already ended)"))
        elif isinstance(msg, ActivityQuery):
            run = self._running.get(msg.activity_id)
            if run is None:
                self._net.send(sender, _ended(msg.activity_id, "no such activity (already ended)"))
            elif run.requestor_id == sender:
                for batch_id in run.order or [""]:
                    self._send_update(run, batch_id)
        elif isinstance(msg, ActivityUpdate):
            view = self._views.get(msg.activity_id)
            if view is not None and view.provider_id == sender:
                view.apply(msg)
                if self._payment is not None and msg.usage:
                    try:
                        self._payment.tell(UsageSeen(msg.activity_id, view.agreement_id, msg.usage, msg.usage_ms, msg.state))
                    except pykka.ActorDeadError:
                        self._payment = None
        elif isinstance(msg, ActivityPackets):
            for activity_id, batch in self._vpn.incoming(sender, msg.network_id, msg.packets).items():
                self._to_child(activity_id, msg.network_id, batch)
        elif isinstance(msg, ActivityVpnNodes):
            self._vpn.announce(sender, msg.network_id, msg.nodes)
        elif isinstance(msg, ActivityRuntimeEvent):
            view = self._views.get(msg.activity_id)
            if view is not None and view.provider_id == sender:
                view.add_event(msg)
        else:
            raise ProtocolError(f"the activity actor does not take {msg.TYPE}")

    def _create(self, sender: str, msg: ActivityCreate) -> None:
        if msg.activity_id in self._running:
            self._send_update(self._running[msg.activity_id], "")
            return
        if len(msg.activity_id) != 32 or any(c not in "0123456789abcdef" for c in msg.activity_id):
            raise ProtocolError("an activity id is 32 hex digits")
        try:
            rec = self._market.get_agreement(msg.agreement_id).get(timeout=self._ask_s)
        except MarketError:
            self._net.send(sender, _ended(msg.activity_id, f"agreement {msg.agreement_id} not found", msg.agreement_id))
            return
        terms = rec.terms
        if rec.role != "provider" or terms.requestor_id != sender:
            raise ProtocolError(f"{sender} is not the requestor of agreement {msg.agreement_id}")
        if rec.state != "Approved":
            self._net.send(sender, _ended(msg.activity_id, f"agreement {msg.agreement_id} is {rec.state}", msg.agreement_id))
            return
        runtime = terms.offer_properties.get("golem.runtime.name")
        package = terms.demand_properties.get("golem.srv.comp.task_package")
        if runtime not in ("wasmtime", "vm") or not isinstance(package, str):
            why = (
                f"runtime {runtime!r} is not one this node runs" if runtime not in ("wasmtime", "vm")
                else "the demand has no golem.srv.comp.task_package"
            )
            self._net.send(sender, _ended(msg.activity_id, why, msg.agreement_id))
            return
        expiration = terms.demand_properties.get("golem.srv.comp.expiration")
        expires_ms = int(expiration) if isinstance(expiration, (int, float)) else terms.valid_to_ms
        mem_gib = terms.offer_properties.get("golem.inf.mem.gib", 1.0)
        storage_gib = terms.offer_properties.get("golem.inf.storage.gib", 1.0)
        cores = terms.offer_properties.get("golem.inf.cpu.threads", 1)
        need = tuple(float(v) if isinstance(v, (int, float)) else 1.0 for v in (cores, mem_gib, storage_gib))
        refused = self._over_limits(need)  # type: ignore[arg-type]
        if refused:
            self._log.warning("activity_refused", activity_id=msg.activity_id, agreement_id=msg.agreement_id, reason=refused)
            self._net.send(sender, _ended(msg.activity_id, refused, msg.agreement_id))
            return
        workdir = self._root / msg.activity_id
        workdir.mkdir(parents=True)
        wall_s = max(1.0, min(self._settings.provider.max_run_s, (expires_ms - now_ms()) / 1000))
        cmd = [
            sys.executable, "-m", "exeunits.child", "--runtime", str(runtime), "--workdir", str(workdir),
            "--cache-dir", str(self._cache_dir), "--package", package,
            "--memory-bytes", str(int(float(mem_gib) * 2**30)), "--wall-s", f"{wall_s:.3f}",
            "--storage-bytes", str(int(float(storage_gib) * 2**30)),
            "--node-data-dir", str(Path(self._settings.data_dir).absolute()),
        ]
        threads = terms.offer_properties.get("golem.inf.cpu.threads")
        if runtime == "vm" and isinstance(threads, (int, float)):
            cmd += ["--cpus", str(threads)]
        log = open(workdir / "exeunit.log", "ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        assert proc.stdin is not None and proc.stdout is not None
        run = _Running(
            msg.activity_id, msg.agreement_id, sender, list(terms.offer_properties.get("golem.com.usage.vector", [])),
            expires_ms, workdir, proc, FrameWriter(proc.stdin), last_heard_ms=now_ms(), run_limit_s=wall_s,
            resources=need, runtime=str(runtime),  # type: ignore[arg-type]
        )
        self._running[msg.activity_id] = run
        threading.Thread(target=_read_child, args=(self.actor_ref, msg.activity_id, proc.stdout), daemon=True).start()
        self._log.info("activity_created", activity_id=msg.activity_id, agreement_id=msg.agreement_id, pid=proc.pid)

    def _exec(self, sender: str, msg: ActivityExec) -> None:
        run = self._running.get(msg.activity_id)
        if run is None:
            self._net.send(sender, _ended(msg.activity_id, "no such activity (already ended)"))
            return
        if run.requestor_id != sender:
            raise ProtocolError(f"{sender} is not the requestor of activity {msg.activity_id}")
        if msg.batch_id in run.batches:
            self._send_update(run, msg.batch_id)
            return
        run.batches[msg.batch_id] = []
        run.scripts[msg.batch_id] = tuple(msg.commands)
        run.order.append(msg.batch_id)
        try:
            script = validate_script(list(msg.commands))
        except ActivityError as exc:
            run.batches[msg.batch_id] = [ExeResult(0, now_ms(), "Error", None, None, str(exc), True)]
            self._send_update(run, msg.batch_id)
            return
        if run.runtime == "vm":
            self._vpn.deploy(run.activity_id, run.requestor_id, script)
        try:
            run.writer.write(ChildRunBatch(msg.batch_id, script))
        except OSError:
            run.batches[msg.batch_id] = [ExeResult(0, now_ms(), "Error", None, None, "the exe-unit is gone", True)]
            self._send_update(run, msg.batch_id)

    def _on_child(self, event: _FromChild) -> None:
        run = self._running.get(event.activity_id)
        if run is None:
            return
        msg = event.message
        run.last_heard_ms = now_ms()
        if msg is None:  # the child's stdout closed: it exited
            code = run.proc.wait()
            if run.state != "Terminated":
                self._stop_child(run, "", notify=True, error=f"the exe-unit exited unexpectedly (exit code {code})")
            return
        if isinstance(msg, ChildPackets):
            remote, local = self._vpn.outgoing(run.activity_id, msg.network_id, msg.packets)
            for node, batch in remote.items():
                for part in packet_batches(batch):
                    try:
                        self._net.send(node, ActivityPackets(msg.network_id, part))
                    except NodeError as exc:
                        self._log.debug("vpn_packets_not_sent", node=node, error=str(exc))
            for activity_id, batch in local.items():
                self._to_child(activity_id, msg.network_id, batch)
            return
        if isinstance(msg, ChildUsage):
            run.cpu_s, run.duration_s, run.peak_memory_bytes = msg.cpu_s, msg.duration_s, msg.peak_memory_bytes
            if run.state == "New":
                run.state = "Initialized"  # the child is up: its runtime is loaded
                self._send_update(run, "")
        elif isinstance(msg, ChildResult):
            result = msg.result
            script = run.scripts.get(msg.batch_id, ())
            if result.result == "Ok" and result.index < len(script) and "sign" in script[result.index]:
                result = self._signed(result)
            run.batches.setdefault(msg.batch_id, []).append(result)
            run.state = msg.state
            self._send_update(run, msg.batch_id)
            if run.state == "Terminated":
                self._stop_child(run, "terminated by the exe-script", notify=False)
        elif isinstance(msg, ChildEvent):
            if msg.kind == "started":
                # The child stops a runaway module itself; this is the backstop for one stuck
                # where wasmtime cannot interrupt it (inside a host call).
                run.run_deadline_ms = now_ms() + int((run.run_limit_s + _KILL_GRACE_S) * 1000)
            elif msg.kind == "finished":
                run.run_deadline_ms = None
            self._net.send(
                run.requestor_id,
                ActivityRuntimeEvent(run.activity_id, msg.batch_id, msg.index, now_ms(), msg.kind, msg.data, msg.return_code, msg.message),
            )

    # -- VPN packets between activities ------------------------------------------------------

    def _to_child(self, activity_id: str, network_id: str, packets: list[bytes]) -> None:
        run = self._running.get(activity_id)
        if run is None:
            return
        for part in packet_batches(packets):
            try:
                run.writer.write(ChildPackets(network_id, part))
            except OSError:
                return  # the exe-unit is going: dropped, as a network would

    def _signed(self, result: ExeResult) -> ExeResult:
        """The `sign` command's result with the provider's signature over the results' digest."""
        import dataclasses
        import json

        try:
            digest = json.loads(result.stdout or "")["digest"]
            signature = self._identity.sign(bytes.fromhex(digest)).hex()
        except (ValueError, KeyError, TypeError):
            return dataclasses.replace(result, result="Error", message="the exe-unit gave no digest to sign")
        body = json.dumps({"signer": self.node_id, "digest": digest, "signature": signature})
        return dataclasses.replace(result, stdout=body)

    def attach_payment(self, ledger: pykka.ActorRef) -> None:
        """Report provider activities' usage to the payment ledger (it issues the debit notes)."""
        self._payment = ledger

    def _report_usage(self, run: _Running, ended: bool) -> None:
        if self._payment is not None:
            try:
                self._payment.tell(ActivityUsage(run.activity_id, run.agreement_id, run.usage(), ended))
            except pykka.ActorDeadError:  # the node is stopping; the ledger marks it ended at its next start
                self._payment = None

    def _send_update(self, run: _Running, batch_id: str) -> None:
        self._report_usage(run, ended=False)
        run.last_update_ms = now_ms()
        update = ActivityUpdate(
            run.activity_id, run.agreement_id, run.state, run.reason, run.error, run.usage(), now_ms(),
            batch_id, tuple(run.batches.get(batch_id, ())),
        )
        self._net.send(run.requestor_id, update)

    def _stop_child(self, run: _Running, reason: str, *, notify: bool, error: str = "") -> None:
        """End an activity: stop its child (killing it if it does not go), remove its files."""
        self._running.pop(run.activity_id, None)
        self._vpn.forget(run.activity_id)
        busy = any(not r or not r[-1].is_batch_finished for r in run.batches.values())
        try:
            run.writer.write(ChildShutdown())
        except OSError:
            pass
        # A child in the middle of a command would only read the shutdown after it: stop it
        # with a signal (it removes its container on the way out), and kill it if it lingers.
        try:
            run.proc.wait(0.1 if busy else _STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            run.proc.terminate()
            try:
                run.proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait(5)
                _sweep_containers(f"loam.activity={run.activity_id}", wait=False)
        shutil.rmtree(run.workdir, ignore_errors=True)
        for batch_id in run.order:
            results = run.batches[batch_id]
            if not results or not results[-1].is_batch_finished:
                why = error or reason
                results.append(ExeResult(len(results), now_ms(), "Error", None, None, f"the activity ended: {why}", True))
        run.state, run.reason, run.error = "Terminated", reason, error
        self._report_usage(run, ended=True)
        self._log.info("activity_ended", activity_id=run.activity_id, reason=reason, error=error)
        if notify:
            for batch_id in run.order or [""]:
                self._send_update(run, batch_id)

    def _on_tick(self, now: int) -> None:
        for run in list(self._running.values()):
            if now - run.last_heard_ms > _UNRESPONSIVE_AFTER_MS:
                run.state = "Unresponsive"
                self._stop_child(run, "", notify=True, error="the exe-unit stopped answering and was killed")
                continue
            if run.run_deadline_ms is not None and now >= run.run_deadline_ms:
                self._stop_child(
                    run, "", notify=True, error=f"a command overran the wall-clock limit of {run.run_limit_s:.0f} s and was killed"
                )
                continue
            if now >= run.expires_ms:
                self._stop_child(run, "the agreement's expiration passed", notify=True)
                continue
            try:
                state = self._market.agreement_state(run.agreement_id).get(timeout=self._ask_s)
            except MarketError:
                state = "gone"
            if state != "Approved":
                self._stop_child(run, f"the agreement is {state}", notify=True)
                continue
            if now - run.last_update_ms >= _UPDATE_EVERY_MS:
                self._send_update(run, run.order[-1] if run.order else "")
        for view in self._views.values():
            # A provider sends an update every second while an activity runs: silence this long
            # means it is gone (killed, cut off), and clients should not wait on it any more.
            if view.state not in ("Terminated", "Unresponsive") and now - view.heard_ms > _PROVIDER_SILENT_MS:
                view.mark_unresponsive(f"the provider sent nothing for {_PROVIDER_SILENT_MS // 1000} s")
                self._log.warning("activity_provider_silent", activity_id=view.activity_id, provider=view.provider_id)
            waiting = view.state == "New" or any(not b.finished for b in view.batches.values())
            if waiting and view.state not in ("Terminated", "Unresponsive") and now - view.updated_ms > _QUERY_AFTER_MS:
                view.updated_ms = now
                if view.state == "New":
                    self._net.send(view.provider_id, ActivityCreate(view.activity_id, view.agreement_id))
                else:
                    self._net.send(view.provider_id, ActivityQuery(view.activity_id))


def _sweep_containers(label: str, *, wait: bool) -> None:
    """Remove containers a killed exe-unit left behind (in a thread: engine calls are slow)."""

    def sweep() -> None:
        try:
            from exeunits.vm.unit import connect, sweep as sweep_label

            client = connect()
            try:
                sweep_label(client, label)
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - no engine, nothing to sweep
            pass

    thread = threading.Thread(target=sweep, name="loam-sweep", daemon=True)
    thread.start()
    if wait:
        thread.join(30)


def _ended(activity_id: str, reason: str, agreement_id: str = "") -> ActivityUpdate:
    return ActivityUpdate(activity_id, agreement_id, "Terminated", reason, "", (), now_ms(), "", ())


def _read_child(ref: pykka.ActorRef, activity_id: str, stream: Any) -> None:
    """Reader thread: child frames become messages to the actor; None when the child is gone."""
    while True:
        try:
            msg = read_frame(stream)
        except NodeError:
            msg = None
        try:
            ref.tell(_FromChild(activity_id, msg))
        except pykka.ActorDeadError:
            return
        if msg is None:
            return
