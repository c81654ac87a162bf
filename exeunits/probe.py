"""Which runtimes work on this machine: a provider offers only those."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RuntimeProbe", "probe_runtime"]


@dataclass(frozen=True, slots=True)
class RuntimeProbe:
    """Whether a runtime can run here, its version, and why not when it cannot."""

    name: str
    available: bool
    version: str
    reason: str = ""


def probe_runtime(name: str) -> RuntimeProbe:
    """Check a runtime by starting what it needs (a wasmtime engine; a Docker engine answering a ping)."""
    if name == "wasmtime":
        try:
            import wasmtime

            wasmtime.Engine()
            from importlib.metadata import version

            return RuntimeProbe(name, True, version("wasmtime"))
        except Exception as exc:  # noqa: BLE001 - any failure means: do not offer it
            return RuntimeProbe(name, False, "", f"wasmtime does not start: {exc}")
    if name == "vm":
        import shutil

        missing = [tool for tool in ("unsquashfs",) if shutil.which(tool) is None]
        if missing:
            return RuntimeProbe(name, False, "", f"{', '.join(missing)} is not installed (Debian: squashfs-tools)")
        try:
            import docker

            client = docker.from_env(timeout=3)
            info = client.version()
            client.close()
            return RuntimeProbe(name, True, str(info.get("Version", "")))
        except Exception as exc:  # noqa: BLE001
            return RuntimeProbe(name, False, "", f"no Docker engine answers: {exc}")
    return RuntimeProbe(name, False, "", f"unknown runtime {name!r}")
