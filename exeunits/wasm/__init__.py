"""The wasmtime exe-unit's core: WASI packages, and running their modules with limits and usage."""

from __future__ import annotations

from exeunits.wasm.cache import WASMTIME_VERSION, EngineSettings, ModuleCache
from exeunits.wasm.package import (
    EntryPoint,
    MountMode,
    MountPoint,
    Package,
    extract,
    load_package,
    make_package,
    prepare_mounts,
)
from exeunits.wasm.runtime import (
    FUEL_PER_CPU_S,
    Limits,
    RunOutcome,
    StopReason,
    WasmRunner,
    calibrate_fuel_per_cpu_s,
)

__all__ = [
    "WASMTIME_VERSION",
    "EngineSettings",
    "ModuleCache",
    "EntryPoint",
    "MountMode",
    "MountPoint",
    "Package",
    "extract",
    "load_package",
    "make_package",
    "prepare_mounts",
    "FUEL_PER_CPU_S",
    "Limits",
    "RunOutcome",
    "StopReason",
    "WasmRunner",
    "calibrate_fuel_per_cpu_s",
]
