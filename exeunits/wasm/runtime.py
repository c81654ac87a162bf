"""Runs one WASI command module with wasmtime: argv, env, mounts, captured output, limits and usage.

    runner = WasmRunner(cache_dir)
    outcome = runner.run(
        "wc.wasm", ["wc", "/input/data.txt", "/output/counts.txt"], {"LANG": "C"},
        {"/input": (work / "input", "ro"), "/output": (work / "output", "wo")},
        work / "stdout.txt", work / "stderr.txt",
        Limits(cpu_s=10, memory_bytes=256 * 2**20, wall_s=60),
    )
    outcome.exit_code, outcome.error, outcome.cpu_s, outcome.peak_memory_bytes

What is enforced inside the process, and how:

- cpu: two budgets, whichever runs out first. Fuel: the module gets
  ``cpu_s * fuel_per_cpu_s`` instructions (deterministic, but an instruction's cost
  varies: see ``FUEL_PER_CPU_S``). The thread's own cpu clock, read by a watchdog
  thread every ``tick_s``, which stops the module through epoch interruption.
- memory: ``Store.set_limits(memory_size=...)`` caps each linear memory; ``memory.grow``
  then fails, which C's malloc reports as NULL (a module needing more than the limit
  just to start gets MEMORY_LIMIT). A module that aborts on a failed allocation traps;
  its error then says how close to the limit it was, as wasmtime-py does not report
  the failed grow itself. Wasmtime's own host allocations are not counted.
- wall clock: the same watchdog. Epoch interruption stops wasm code only: a module
  blocked in a host call (a long sleep) stops when the call returns. The hard limit is
  the exe-unit process being killed by its parent.
- mounts: ``ro`` folders are pre-opened read-only (wasmtime-py's ``fs_mutable=False``,
  read-only directory and file permissions: no writes, no new files). ``wo`` cannot be expressed with wasmtime-py's
  API and is pre-opened read-write: the module can read what is in a ``wo`` folder.

A trap or a limit is not an exception but a ``RunOutcome`` with ``reason`` and a
one-line ``error``; only a module that cannot be compiled, linked or started, or a
wrong call, raises.
"""

from __future__ import annotations

import enum
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import wasmtime

from exeunits.wasm.cache import EngineSettings, ModuleCache
from exeunits.wasm.package import MOUNT_MODES, MountMode
from protocol.errors import ExeUnitError, WasmModuleError

__all__ = [
    "FUEL_PER_CPU_S",
    "WATCHDOG_TICK_S",
    "WASI_MODULES",
    "StopReason",
    "Limits",
    "RunOutcome",
    "WasmRunner",
    "calibrate_fuel_per_cpu_s",
]

# Fuel (about one unit per wasm instruction) that one cpu-second buys. Measured with
# tests/wasm/spin.c (an integer xorshift loop, no system calls) under wasmtime 50.0.1 on
# a 2-core Intel Xeon VM: median 9.85e9 per cpu-second over 7 runs of 0.7 s; wc.c over
# a 22 MB file gave 1.0e10. This is the rate of plain compute, the fastest there is:
# code that spends its time in page faults or host calls burns fewer instructions per
# cpu-second (hog.c, touching fresh memory: about 1.3e9), and there the cpu clock
# watchdog is what stops it. calibrate_fuel_per_cpu_s() measures it on another machine.
FUEL_PER_CPU_S = 10_000_000_000
# How often the watchdog looks at the clocks; the precision of the cpu and wall limits.
WATCHDOG_TICK_S = 0.01
# The WASI versions a module may import (what Linker.define_wasi provides).
WASI_MODULES = frozenset({"wasi_snapshot_preview1"})

_MAX_FUEL = 2**63 - 1
# A trap with linear memory at this fraction of the memory limit gets a hint that the
# limit may be the cause.
_NEAR_MEMORY_LIMIT = 0.9
# "0: " numbering and the "wasm trap: " prefix of the lines under wasmtime's "Caused by:".
_CAUSE_PREFIX = re.compile(r"^(?:\d+:\s*)?(?:wasm trap:\s*)?")


class StopReason(enum.StrEnum):
    """Why a run ended."""

    EXITED = "exited"  # returned from _start or called proc_exit; see exit_code
    TRAPPED = "trapped"  # a wasm trap (unreachable, division by zero, out of bounds, ...)
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"
    WALL_LIMIT = "wall_limit"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one run; None means unlimited.

    Raises:
        ExeUnitError: a limit that is not a positive number.
    """

    cpu_s: float | None = None
    memory_bytes: int | None = None
    wall_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_bytes", "wall_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ExeUnitError(f"limit {name} must be a positive number, not {value!r}")
        if self.memory_bytes is not None and not isinstance(self.memory_bytes, int):
            raise ExeUnitError(f"limit memory_bytes must be an integer, not {self.memory_bytes!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """How a run ended and what it used.

    ``exit_code`` is set only when ``reason`` is EXITED. ``cpu_s`` and ``wall_s`` cover
    instantiation and execution (not loading the module: ``load_s``).
    ``peak_memory_bytes`` is the size of the module's linear memory at the end, which is
    its peak: wasm memory never shrinks.
    """

    exit_code: int | None
    error: str | None
    cpu_s: float
    wall_s: float
    peak_memory_bytes: int
    reason: StopReason
    trap_code: str | None = None
    fuel_consumed: int = 0
    cache_hit: bool = False
    load_s: float = 0.0
    detail: str | None = field(default=None, repr=False)  # wasmtime's full message, with the wasm backtrace

    @property
    def ok(self) -> bool:
        """True when the module exited with code 0."""
        return self.reason is StopReason.EXITED and self.exit_code == 0


class WasmRunner:
    """Runs WASI command modules, compiling each module once into ``cache_dir``.

    Every run gets its own engine (creating one costs about 0.1 ms), so an epoch
    interruption stops only that run and runs in several threads do not disturb each
    other; compiled code is shared through the disk cache.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        settings: EngineSettings | None = None,
        fuel_per_cpu_s: int = FUEL_PER_CPU_S,
        tick_s: float = WATCHDOG_TICK_S,
    ) -> None:
        self.settings = settings if settings is not None else EngineSettings()
        self.cache = ModuleCache(cache_dir, self.settings)
        self.fuel_per_cpu_s = fuel_per_cpu_s
        self.tick_s = tick_s
        self._log = structlog.get_logger().bind(component="wasm-runner")

    def prepare(self, wasm_path: str | os.PathLike[str]) -> bool:
        """Compile ``wasm_path`` into the cache and check it is a WASI command; True if it was cached already.

        For a deploy step: a module that cannot run fails here, before any `run`.

        Raises:
            WasmModuleError: the module does not compile, has no ``_start`` or imports
                something other than WASI.
        """
        engine = wasmtime.Engine(self.settings.config())
        _, hit = self._load(engine, Path(wasm_path))
        return hit

    def run(
        self,
        wasm_path: str | os.PathLike[str],
        argv: Sequence[str],
        env: Mapping[str, str],
        mounts: Mapping[str, tuple[str | os.PathLike[str], MountMode]],
        stdout_path: str | os.PathLike[str],
        stderr_path: str | os.PathLike[str],
        limits: Limits = Limits(),
    ) -> RunOutcome:
        """Run the module's ``_start`` with ``argv`` (argv[0] first), ``env`` and ``mounts``.

        ``mounts`` maps a guest path (``/input``) to a host folder and ``"ro"``, ``"rw"``
        or ``"wo"``. stdout and stderr go to the two files (created or truncated; they
        grow while the module runs, so they can be followed). Blocks until the module ends.

        Raises:
            WasmModuleError: the module cannot be compiled, linked or started.
            ExeUnitError: a bad argument: a missing mount folder, an unknown mode, an
                output file that cannot be created.
        """
        path = Path(wasm_path)
        _check_run_args(argv, env, mounts)
        engine = wasmtime.Engine(self.settings.config())
        load_started = time.perf_counter()
        module, cache_hit = self._load(engine, path)
        load_s = time.perf_counter() - load_started

        store = wasmtime.Store(engine)
        fuel_budget = _MAX_FUEL
        if self.settings.consume_fuel:
            if limits.cpu_s is not None:
                fuel_budget = min(_MAX_FUEL, max(1, int(limits.cpu_s * self.fuel_per_cpu_s)))
            store.set_fuel(fuel_budget)
        if self.settings.epoch_interruption:
            # The watchdog stops a run by moving the epoch on by one.
            store.set_epoch_deadline(1)
        if limits.memory_bytes is not None:
            store.set_limits(memory_size=limits.memory_bytes)
        store.set_wasi(_wasi_config(argv, env, mounts, stdout_path, stderr_path))
        linker = wasmtime.Linker(engine)
        linker.define_wasi()

        watchdog = None
        if self.settings.epoch_interruption and (limits.cpu_s is not None or limits.wall_s is not None):
            watchdog = _Watchdog(engine, limits, self.tick_s)
        cpu_started = time.thread_time()
        wall_started = time.perf_counter()
        if watchdog is not None:
            watchdog.start()
        instance: wasmtime.Instance | None = None
        exit_code: int | None = None
        trap: wasmtime.WasmtimeError | wasmtime.Trap | None = None
        try:
            try:
                instance = linker.instantiate(store, module)
            except wasmtime.Trap as exc:  # the module's start function trapped
                trap = exc
            except wasmtime.WasmtimeError as exc:
                if limits.memory_bytes is not None and "exceeds memory limits" in str(exc):
                    trap = exc
                else:
                    raise WasmModuleError(f"{path.name} cannot be instantiated: {_causes(str(exc))}") from exc
            if instance is not None:
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)  # _load checked it
                try:
                    start(store)
                    exit_code = 0
                except wasmtime.ExitTrap as exc:  # proc_exit(code), which exit() in C calls
                    exit_code = exc.code
                except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                    trap = exc
        finally:
            if watchdog is not None:
                watchdog.stop()
            cpu_s = time.thread_time() - cpu_started
            wall_s = time.perf_counter() - wall_started

        peak = _linear_memory_bytes(store, instance)
        fuel_consumed = fuel_budget - store.get_fuel() if self.settings.consume_fuel else 0
        reason, error, trap_code = StopReason.EXITED, None, None
        if trap is not None:
            reason, error, trap_code = self._explain(trap, instance is None, limits, fuel_budget, peak, watchdog)
            self._log.debug("wasm_run_stopped", module=path.name, reason=str(reason), error=error)
        return RunOutcome(
            exit_code=exit_code if trap is None else None,
            error=error,
            cpu_s=cpu_s,
            wall_s=wall_s,
            peak_memory_bytes=peak,
            reason=reason,
            trap_code=trap_code,
            fuel_consumed=fuel_consumed,
            cache_hit=cache_hit,
            load_s=load_s,
            detail=str(trap) if trap is not None else None,
        )

    def _load(self, engine: wasmtime.Engine, path: Path) -> tuple[wasmtime.Module, bool]:
        try:
            wasm = path.read_bytes()
        except OSError as exc:
            raise WasmModuleError(f"cannot read module {path}: {exc.strerror or exc}") from exc
        module, hit = self.cache.load(engine, wasm, name=path.name)
        start = [e for e in module.exports if e.name == "_start"]
        if not start or not isinstance(start[0].type, wasmtime.FuncType):
            raise WasmModuleError(
                f"{path.name} has no _start function: it is not a WASI command (was it built as a library?)"
            )
        foreign = sorted({f"{i.module}.{i.name}" for i in module.imports if i.module not in WASI_MODULES})
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise WasmModuleError(f"{path.name} imports what this runtime does not provide: {shown}")
        return module, hit

    def _explain(
        self,
        trap: wasmtime.WasmtimeError | wasmtime.Trap,
        at_instantiation: bool,
        limits: Limits,
        fuel_budget: int,
        peak_memory_bytes: int,
        watchdog: _Watchdog | None,
    ) -> tuple[StopReason, str, str | None]:
        code = trap.trap_code if isinstance(trap, wasmtime.Trap) else None
        code_name = code.name if code is not None else None
        causes = _causes(str(trap))
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return (
                StopReason.CPU_LIMIT,
                f"cpu limit of {limits.cpu_s:g} s exceeded: the module used up its fuel "
                f"({fuel_budget} wasm instructions)",
                code_name,
            )
        if code is wasmtime.TrapCode.INTERRUPT and watchdog is not None and watchdog.reason is not None:
            if watchdog.reason is StopReason.CPU_LIMIT:
                return (
                    StopReason.CPU_LIMIT,
                    f"cpu limit of {limits.cpu_s:g} s exceeded ({watchdog.cpu_used_s:.3f} s of cpu time used)",
                    code_name,
                )
            return StopReason.WALL_LIMIT, f"wall-clock limit of {limits.wall_s:g} s exceeded", code_name
        if at_instantiation and code is None and limits.memory_bytes is not None:
            return (
                StopReason.MEMORY_LIMIT,
                f"memory limit of {limits.memory_bytes} bytes is below what the module needs to start: {causes}",
                None,
            )
        if code is None and "invalid exit status" in causes:
            # wasmtime's WASI refuses proc_exit codes of 126 and above (shells reserve them).
            return StopReason.TRAPPED, f"the module exited with a status wasmtime refuses: {causes}", None
        label = f"wasm trap {code_name}" if code_name else "wasm error"
        error = f"{label}: {causes}"
        if limits.memory_bytes is not None and peak_memory_bytes >= _NEAR_MEMORY_LIMIT * limits.memory_bytes:
            # wasmtime-py cannot tell us that memory.grow failed, only how big memory
            # got. Programs that abort on a failed allocation (Rust's default, C's
            # xmalloc) trap right there, so say so rather than leave a bare "unreachable".
            error += (
                f" (linear memory was at {peak_memory_bytes} of the {limits.memory_bytes} bytes allowed:"
                " a failed allocation may have caused it)"
            )
        return StopReason.TRAPPED, error, code_name


class _Watchdog:
    """A thread that stops a run through epoch interruption when its cpu or wall-clock time runs out.

    It reads the cpu clock of the thread that runs the module (created on that thread),
    so time spent in WASI host calls counts as well as wasm code.
    """

    def __init__(self, engine: wasmtime.Engine, limits: Limits, tick_s: float) -> None:
        self._engine = engine
        self._limits = limits
        self._tick_s = tick_s
        self._cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wasm-watchdog", daemon=True)
        self.reason: StopReason | None = None
        self.cpu_used_s = 0.0

    def start(self) -> None:
        self._cpu_started = time.clock_gettime(self._cpu_clock)
        self._wall_started = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        cpu_limit, wall_limit = self._limits.cpu_s, self._limits.wall_s
        while not self._done.wait(self._tick_s):
            if wall_limit is not None and time.perf_counter() - self._wall_started >= wall_limit:
                self.reason = StopReason.WALL_LIMIT
            elif cpu_limit is not None:
                self.cpu_used_s = time.clock_gettime(self._cpu_clock) - self._cpu_started
                if self.cpu_used_s >= cpu_limit:
                    self.reason = StopReason.CPU_LIMIT
            if self.reason is not None:
                # Wasm code traps with INTERRUPT at its next function entry or loop back-edge.
                self._engine.increment_epoch()
                return


def calibrate_fuel_per_cpu_s(target_cpu_s: float = 0.3) -> float:
    """Measure on this machine how much fuel one cpu-second of plain integer code burns.

    Runs the same kind of loop as tests/wasm/spin.c (written in WAT, so no compiler is
    needed) for about ``target_cpu_s`` and returns fuel per cpu-second, the figure to
    pass as ``WasmRunner(fuel_per_cpu_s=...)``.
    """
    engine = wasmtime.Engine(EngineSettings().config())
    module = wasmtime.Module(engine, bytes(wasmtime.wat2wasm(_SPIN_WAT)))
    rounds, fuel, cpu = 1_000_000, 0, 0.0
    for _ in range(6):
        store = wasmtime.Store(engine)
        store.set_fuel(_MAX_FUEL)
        store.set_epoch_deadline(1)
        spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)
        started = time.thread_time()
        spin(store, rounds)
        cpu = time.thread_time() - started
        fuel = _MAX_FUEL - store.get_fuel()
        if cpu >= target_cpu_s * 0.8:
            break
        rounds = int(rounds * min(100.0, target_cpu_s / max(cpu, 1e-4)))
    return fuel / cpu


_SPIN_WAT = """
(module
  (func (export "spin") (param $n i64) (result i64)
    (local $x i64) (local $sum i64)
    (local.set $x (i64.const 0x9E3779B97F4A7C15))
    (block $done
      (loop $next
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (local.set $sum (i64.add (local.get $sum) (i64.shr_u (local.get $x) (i64.const 32))))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $next)))
    (local.get $sum)))
"""


def _check_run_args(
    argv: Sequence[str], env: Mapping[str, str], mounts: Mapping[str, tuple[str | os.PathLike[str], MountMode]]
) -> None:
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise ExeUnitError("argv must be a non-empty list of strings without NUL, argv[0] first")
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ExeUnitError(f"bad environment variable name {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ExeUnitError(f"environment variable {name}: the value must be a string without NUL")
    for guest, (host, mode) in mounts.items():
        if not isinstance(guest, str) or not guest or "\0" in guest:
            raise ExeUnitError(f"bad guest path {guest!r}")
        if mode not in MOUNT_MODES:
            raise ExeUnitError(f'mount {guest}: unknown mode {mode!r} (expected "ro", "rw" or "wo")')
        if not Path(host).is_dir():
            raise ExeUnitError(f"mount {guest}: host folder {host} does not exist")


def _wasi_config(
    argv: Sequence[str],
    env: Mapping[str, str],
    mounts: Mapping[str, tuple[str | os.PathLike[str], MountMode]],
    stdout_path: str | os.PathLike[str],
    stderr_path: str | os.PathLike[str],
) -> wasmtime.WasiConfig:
    config = wasmtime.WasiConfig()
    config.argv = list(argv)
    config.env = list(env.items())
    # No stdin is configured: wasmtime then gives the module an empty one.
    for what, target in (("stdout", stdout_path), ("stderr", stderr_path)):
        try:
            setattr(config, f"{what}_file", os.fspath(target))
        except wasmtime.WasmtimeError as exc:
            raise ExeUnitError(f"cannot create the {what} file {target}: {exc}") from exc
    for guest, (host, mode) in mounts.items():
        try:
            config.preopen_dir(os.fspath(host), guest, fs_mutable=mode != "ro")
        except wasmtime.WasmtimeError as exc:
            raise ExeUnitError(f"mount {guest}: cannot open {host}: {exc}") from exc
    return config


def _linear_memory_bytes(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    exports = instance.exports(store).by_index
    return sum(export.data_len(store) for export in exports if isinstance(export, wasmtime.Memory))


def _causes(message: str) -> str:
    """The "Caused by" lines of a wasmtime error, without the backtrace, on one line."""
    text = message.strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1]
    lines = [_CAUSE_PREFIX.sub("", line.strip()) for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else message.strip()
