"""Engine settings and the on-disk cache of compiled modules, keyed by wasmtime version, settings and wasm hash.

Compiling a module with Cranelift takes about 100 ms for a 30 KB C program (seconds for
big ones); loading the compiled form back takes well under a millisecond. The cache key
covers everything that changes the machine code: the wasmtime version, the CPU
architecture, the engine settings and the sha256 of the module bytes::

    cache = ModuleCache(cache_dir, EngineSettings())
    module, hit = cache.load(engine, wasm_bytes)

A cached file is native code that wasmtime maps and runs without checking it again, so
the cache folder must be writable by this provider only (it is created with mode 0700).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog
import wasmtime

from protocol.errors import WasmModuleError

__all__ = ["WASMTIME_VERSION", "EngineSettings", "CacheStats", "ModuleCache"]

WASMTIME_VERSION = importlib.metadata.version("wasmtime")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The engine configuration of every run; each field is part of the cache key.

    ``consume_fuel`` makes compiled code count instructions (the cpu budget); its cost
    measured on spin.c is within noise. ``epoch_interruption`` lets the watchdog stop a
    module from another thread.
    """

    consume_fuel: bool = True
    epoch_interruption: bool = True
    opt_level: str = "speed"
    max_wasm_stack_bytes: int = 512 * 1024

    def config(self) -> wasmtime.Config:
        """A fresh wasmtime Config (an Engine consumes the one it is given)."""
        config = wasmtime.Config()
        config.consume_fuel = self.consume_fuel
        config.epoch_interruption = self.epoch_interruption
        config.cranelift_opt_level = self.opt_level
        config.max_wasm_stack = self.max_wasm_stack_bytes
        return config

    def digest(self) -> str:
        """A short hash of the wasmtime version, the machine and these settings."""
        fields = ";".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))
        text = f"wasmtime={WASMTIME_VERSION};machine={platform.machine()};{fields}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(slots=True)
class CacheStats:
    """What the cache did since it was made: modules loaded from disk, compiled, and cache files found unusable."""

    hits: int = 0
    compiles: int = 0
    rejected: int = 0


class ModuleCache:
    """Compiled modules on disk, one file per (engine digest, wasm sha256).

    Safe for several threads and processes: a file is written under a temporary name and
    renamed into place, so a reader sees either nothing or a complete file.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], settings: EngineSettings) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.settings = settings
        self.stats = CacheStats()
        self._digest = settings.digest()
        self._lock = threading.Lock()
        self._log = structlog.get_logger().bind(component="wasm-cache")

    def path_for(self, wasm_sha256: str) -> Path:
        """Where the compiled form of the module with this sha256 lives."""
        return self.cache_dir / f"{wasm_sha256}.{self._digest}.cwasm"

    def load(self, engine: wasmtime.Engine, wasm: bytes, *, name: str = "module") -> tuple[wasmtime.Module, bool]:
        """The module for ``wasm``, from the cache when possible; returns it and whether it was a cache hit.

        ``engine`` must have been built from this cache's settings.

        Raises:
            WasmModuleError: ``wasm`` does not compile (named by ``name``).
        """
        sha = hashlib.sha256(wasm).hexdigest()
        path = self.path_for(sha)
        if path.exists():
            try:
                module = wasmtime.Module.deserialize_file(engine, str(path))
            except wasmtime.WasmtimeError as exc:
                # Written by another wasmtime build or truncated by a crash: compile again.
                self._log.warning("wasm_cache_file_rejected", path=str(path), reason=str(exc))
                with self._lock:
                    self.stats.rejected += 1
                path.unlink(missing_ok=True)
            else:
                with self._lock:
                    self.stats.hits += 1
                return module, True
        try:
            module = wasmtime.Module(engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise WasmModuleError(f"{name} is not a valid WebAssembly module: {_first_line(str(exc))}") from exc
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(module.serialize())
            os.replace(tmp, path)
        except OSError as exc:
            # A full or read-only disk costs speed, not correctness.
            self._log.warning("wasm_cache_write_failed", path=str(path), reason=str(exc))
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self.stats.compiles += 1
        self._log.debug("wasm_module_compiled", name=name, sha256=sha, wasm_bytes=len(wasm))
        return module, False


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) if lines else text
