"""The vm exe-unit's view of a container's cgroup on the host: usage counters, and killing a command's processes.

Reading the cgroup files takes microseconds where the engine's stats call waits for its
next sample (up to a second); both work with cgroup v1 and v2::

    dirs = cgroup_dirs(container_pid)         # {"cpu": ..., "memory": ...} or {"unified": ...}
    cpu_s, peak_bytes = cgroup_usage(dirs)    # None when the files cannot be read
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["cgroup_dirs", "cgroup_usage", "kill_tree"]


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """The cgroup folders of process ``pid`` that hold cpu and memory accounting: {"cpu"|"memory"|"unified": dir}."""
    root = Path("/sys/fs/cgroup")
    dirs: dict[str, Path] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2 (pure, or the "unified" part of a hybrid setup)
            for base in (root, root / "unified"):
                if (base / relative / "cpu.stat").is_file():
                    dirs.setdefault("unified", base / relative)
                    break
            continue
        names = controllers.split(",")
        for kind, controller in (("cpu", "cpuacct"), ("memory", "memory")):
            if controller in names:
                for mount in (controllers, controller):
                    if (root / mount / relative).is_dir():
                        dirs[kind] = root / mount / relative
                        break
    return dirs


def cgroup_usage(dirs: dict[str, Path]) -> tuple[float, int] | None:
    """(cpu seconds, peak memory bytes) from cgroup files (v1 or v2); None when they cannot be read."""
    try:
        if "cpu" in dirs and "memory" in dirs:  # cgroup v1
            cpu_s = int((dirs["cpu"] / "cpuacct.usage").read_text()) / 1e9
            return cpu_s, int((dirs["memory"] / "memory.max_usage_in_bytes").read_text())
        if "unified" in dirs:
            base = dirs["unified"]
            fields = dict(line.split() for line in (base / "cpu.stat").read_text().splitlines() if " " in line)
            peak = base / "memory.peak"  # Linux 5.19 and later; memory.current before
            memory = peak if peak.is_file() else base / "memory.current"
            return int(fields["usage_usec"]) / 1e6, int(memory.read_text())
    except (OSError, ValueError, KeyError):
        return None
    return None


def kill_tree(pid: int, container_id: str) -> int:
    """SIGKILL ``pid`` and every process descended from it that runs in the container; returns how many.

    Host pids, from /proc. A process counts only if its cgroup names the container, so a
    pid that was reused by another program meanwhile is never touched.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat_line = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat_line[stat_line.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    killed = 0
    for member in tree:
        try:
            with open(f"/proc/{member}/cgroup") as f:
                if container_id not in f.read():
                    continue
            os.kill(member, signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed
