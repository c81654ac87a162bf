"""vpn-relay: the small static program that joins a container to a requestor's VPN (see vpn-relay.c).

Built from its C source on first use, by the system's C compiler (gcc or clang with the C
library's static archives: Debian `gcc libc6-dev`), into a cache folder named by the
source's hash, so an edit to the source builds it again and a built one is reused:

    binary = relay_binary(Path("~/.local/share/loam/cache"))   # None when it cannot be built
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["relay_binary", "SOURCE", "RelayBuildError"]

SOURCE = Path(__file__).resolve().parent / "vpn-relay.c"
_COMPILERS = ("cc", "gcc", "clang")


class RelayBuildError(Exception):
    """The relay could not be built here (no C compiler or no static C library)."""


def relay_binary(cache_dir: Path) -> Path:
    """The built relay in cache_dir (built now if needed; concurrent builders wait for one another).

    Raises:
        RelayBuildError: no compiler could build it; the message says what each one said.
    """
    source = SOURCE.read_bytes()
    target = Path(cache_dir) / f"vpn-relay-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.is_file():
        return target
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / ".vpn-relay.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        problems = []
        for name in _COMPILERS:
            compiler = shutil.which(name)
            if compiler is None:
                continue
            partial = target.with_name(target.name + f".{os.getpid()}.part")
            try:
                done = subprocess.run(
                    [compiler, "-static", "-O2", "-o", str(partial), str(SOURCE)], capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                problems.append(f"{name}: {exc}")
                continue
            if done.returncode == 0 and partial.is_file():
                partial.chmod(0o755)
                partial.replace(target)
                return target
            partial.unlink(missing_ok=True)
            problems.append(f"{name}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
        raise RelayBuildError(
            "cannot build the VPN relay (needs a C compiler and the static C library, Debian: gcc libc6-dev): "
            + ("; ".join(problems) or "no C compiler found")
        )
