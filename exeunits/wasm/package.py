"""Golem's WASI package format: a zip with manifest.json (entry points, ro/rw/wo mount points).

A package is a zip file with ``manifest.json`` at its root::

    {
      "id": "wc-example",
      "name": "word count",
      "entry-points": [{"id": "wc", "wasm-path": "wc.wasm"}],
      "mount-points": [{"ro": "input"}, {"wo": "output"}]
    }

Each entry point names a WebAssembly module (a WASI command) inside the zip. Each mount
point is a folder of the activity's work directory that the module sees at ``/<path>``;
paths are relative, and ``.``/``..`` components are refused (as in ya-runtime-wasi).

Packages come from requestors, so everything is checked before anything is used: the
manifest's shape and types, every member name of the zip (zip-slip), symlinks and
encrypted members, the zip's size and the total size it unpacks to (zip bombs)::

    pkg = load_package(path, max_bytes=64 * 2**20)
    mounts = prepare_mounts(pkg, work_dir)            # {"/input": (work_dir/"input", "ro"), ...}
    extract(pkg, work_dir / "package")                # wasm-path of each entry point now on disk
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from protocol.errors import PackageError
from protocol.jsontypes import json_type

__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "MAX_MEMBERS",
    "UNPACKED_RATIO",
    "MOUNT_MODES",
    "MountMode",
    "EntryPoint",
    "MountPoint",
    "Package",
    "load_package",
    "extract",
    "prepare_mounts",
    "make_package",
    "check_relative_path",
]

MountMode = Literal["ro", "rw", "wo"]
MOUNT_MODES: tuple[MountMode, ...] = ("ro", "rw", "wo")

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MEMBERS = 10_000
# Without an explicit cap, a package may unpack to this many times its own size. Wasm
# compresses about 3x; a zip bomb compresses a thousand times and more.
UNPACKED_RATIO = 8
MAX_TEXT_CHARS = 256

_MANIFEST_KEYS = ("id", "name", "entry-points", "mount-points")
_ENTRY_POINT_KEYS = ("id", "wasm-path")
_WASM_MAGIC = b"\0asm"
_WASM_CORE_VERSION = b"\x01\x00\x00\x00"
# Fixed member timestamps make make_package() reproducible: the same inputs give the
# same bytes, hence the same hash when the package is published as hash:sha3:...:url.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """A runnable module of a package: its id (argv[0], the `run` command's entry_point) and zip path."""

    id: str
    wasm_path: str


@dataclass(frozen=True, slots=True)
class MountPoint:
    """A folder of the work directory that the module sees at ``/<path>``, read-only, read-write or write-only."""

    mode: MountMode
    path: str

    @property
    def guest_path(self) -> str:
        """Where the module sees the folder: ``/input`` for ``{"ro": "input"}``."""
        return "/" + self.path


@dataclass(frozen=True, slots=True)
class Package:
    """A validated WASI package on disk."""

    zip_path: Path
    id: str
    name: str
    entry_points: tuple[EntryPoint, ...]
    mount_points: tuple[MountPoint, ...]
    size_bytes: int
    unpacked_bytes: int

    def entry_point(self, entry_id: str) -> EntryPoint:
        """The entry point called ``entry_id``.

        Raises:
            PackageError: the package has no such entry point (the message lists those it has).
        """
        for entry in self.entry_points:
            if entry.id == entry_id:
                return entry
        known = ", ".join(repr(e.id) for e in self.entry_points)
        raise PackageError(f"package {self.id}: no entry point {entry_id!r} (it has {known})")

    def read_wasm(self, entry_id: str) -> bytes:
        """The module bytes of entry point ``entry_id``, read from the zip.

        Raises:
            PackageError: no such entry point, or the zip changed or broke since it was loaded.
        """
        entry = self.entry_point(entry_id)
        try:
            with zipfile.ZipFile(self.zip_path) as zf:
                info = zf.getinfo(entry.wasm_path)
                if info.file_size > self.unpacked_bytes:
                    raise PackageError(f"package {self.id}: {entry.wasm_path} changed since the package was loaded")
                return zf.read(info)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise PackageError(f"package {self.id}: cannot read {entry.wasm_path}: {exc}") from exc

    def to_manifest(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, in the original's key names."""
        return _manifest_dict(self.id, self.name, self.entry_points, self.mount_points)


def check_relative_path(path: str, what: str) -> str:
    """``path`` if it is a safe relative path (``a/b``), for mount points and zip member names.

    Refused: empty paths and components (``a//b``), absolute paths, ``.`` and ``..``
    components, backslashes (a separator on Windows) and control characters.

        >>> check_relative_path("data/in", "mount point")
        'data/in'

    Raises:
        PackageError: naming ``what`` and the path.
    """
    if not isinstance(path, str) or not path:
        raise PackageError(f"{what}: empty path")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise PackageError(f"{what} {path!r}: control characters are not allowed")
    if "\\" in path:
        raise PackageError(f"{what} {path!r}: backslashes are not allowed")
    if path.startswith("/"):
        raise PackageError(f"{what} {path!r}: absolute paths are not allowed")
    for part in path.split("/"):
        if part == "..":
            raise PackageError(f"{what} {path!r}: '..' is not allowed")
        if part == ".":
            raise PackageError(f"{what} {path!r}: '.' is not allowed")
        if not part:
            raise PackageError(f"{what} {path!r}: empty path component")
    return path


def load_package(zip_path: str | os.PathLike[str], max_bytes: int, *, max_unpacked_bytes: int | None = None) -> Package:
    """Open and validate the package at ``zip_path``; nothing is extracted.

    ``max_bytes`` caps the zip file, ``max_unpacked_bytes`` (default ``UNPACKED_RATIO``
    times ``max_bytes``) the sum of its members' sizes.

    Raises:
        PackageError: the file is too big, not a zip, unsafe, or its manifest is wrong.
    """
    path = Path(zip_path)
    label = f"package {path.name}"
    unpacked_cap = max_unpacked_bytes if max_unpacked_bytes is not None else UNPACKED_RATIO * max_bytes
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PackageError(f"{label}: cannot read it: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise PackageError(f"{label}: {size} bytes is over the limit of {max_bytes} bytes")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            members = _check_members(infos, label, unpacked_cap)
            manifest_info = members.get(MANIFEST_NAME)
            if manifest_info is None or manifest_info.is_dir():
                raise PackageError(f"{label}: no {MANIFEST_NAME} at the root of the zip")
            if manifest_info.file_size > MAX_MANIFEST_BYTES:
                raise PackageError(
                    f"{label}: {MANIFEST_NAME} is {manifest_info.file_size} bytes, over {MAX_MANIFEST_BYTES}"
                )
            raw = zf.read(manifest_info)
            pkg_id, name, entry_points, mount_points = _parse_manifest(raw, label)
            label = f"package {pkg_id}"
            for entry in entry_points:
                info = members.get(entry.wasm_path)
                if info is None or info.is_dir():
                    raise PackageError(
                        f"{label}: entry point {entry.id!r}: {entry.wasm_path} is not in the package"
                    )
                with zf.open(info) as f:
                    head = f.read(8)
                if head[:4] != _WASM_MAGIC:
                    raise PackageError(
                        f"{label}: entry point {entry.id!r}: {entry.wasm_path} is not a WebAssembly module"
                    )
                if head[4:8] != _WASM_CORE_VERSION:
                    raise PackageError(
                        f"{label}: entry point {entry.id!r}: {entry.wasm_path} is not a core WebAssembly "
                        f"module of version 1 (components are not supported)"
                    )
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{label}: not a valid zip file: {exc}") from exc
    except (OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError / NotImplementedError: zipfile's words for encryption and
        # unsupported compression methods.
        raise PackageError(f"{label}: cannot read it: {exc}") from exc
    return Package(
        zip_path=path,
        id=pkg_id,
        name=name,
        entry_points=entry_points,
        mount_points=mount_points,
        size_bytes=size,
        unpacked_bytes=sum(i.file_size for i in infos),
    )


def extract(package: Package, dest_dir: str | os.PathLike[str], *, max_unpacked_bytes: int | None = None) -> Path:
    """Unpack every member of ``package`` under ``dest_dir`` (created if missing); returns it.

    Member names were checked when loading (and are again here); symlinks already under
    ``dest_dir`` are never followed; and the bytes actually written are counted against
    ``max_unpacked_bytes`` (default: the size the package declared when loaded).

    Raises:
        PackageError: an unsafe or oversized member, a corrupt zip, or a symlink in the way.
    """
    label = f"package {package.id}"
    cap = max_unpacked_bytes if max_unpacked_bytes is not None else package.unpacked_bytes
    root = Path(dest_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zipfile.ZipFile(package.zip_path) as zf:
            # The file may have changed since load_package(): check the names again.
            members = _check_members(zf.infolist(), label, cap)
            for name, info in members.items():
                parts = name.rstrip("/").split("/")
                if info.is_dir():
                    _make_dirs(root, parts, label)
                    continue
                parent = _make_dirs(root, parts[:-1], label)
                # O_NOFOLLOW: a symlink already at the target is refused, never written through.
                fd = os.open(parent / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                try:
                    with zf.open(info) as src, open(fd, "wb") as out:
                        while chunk := src.read(_COPY_CHUNK):
                            written += len(chunk)
                            if written > cap:
                                raise PackageError(f"{label}: unpacks to more than {cap} bytes")
                            out.write(chunk)
                except BaseException:
                    (parent / parts[-1]).unlink(missing_ok=True)  # no half-written files left behind
                    raise
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{label}: corrupt zip: {exc}") from exc
    except (OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise PackageError(f"{label}: cannot extract it: {exc}") from exc
    return root


def prepare_mounts(package: Package, work_dir: str | os.PathLike[str]) -> dict[str, tuple[Path, MountMode]]:
    """Create the package's mount folders under ``work_dir``; returns ``{guest_path: (host_dir, mode)}``.

    The result is what ``WasmRunner.run(mounts=...)`` takes.

    Raises:
        PackageError: a symlink or a file where a mount folder should be (a module may
            have left one in a writable mount on an earlier run).
    """
    root = Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    mounts: dict[str, tuple[Path, MountMode]] = {}
    for mount in package.mount_points:
        host = _make_dirs(root, mount.path.split("/"), f"package {package.id}: mount point {mount.path!r}")
        mounts[mount.guest_path] = (host, mount.mode)
    return mounts


def make_package(
    out_zip: str | os.PathLike[str],
    entry_points: Mapping[str, str | os.PathLike[str]],
    mount_points: Iterable[tuple[MountMode, str] | MountPoint] = (),
    *,
    package_id: str | None = None,
    name: str | None = None,
) -> Package:
    """Write a package with one module per entry point and return it, loaded and validated.

    Each module is stored under its file name, so entry points may share a module.

        >>> make_package(tmp / "wc.zip", {"wc": "build/wc.wasm"}, [("ro", "input"), ("wo", "output")])

    Raises:
        PackageError: the manifest would be invalid, or two different files share a name.
        OSError: a module file cannot be read or the zip cannot be written.
    """
    out = Path(out_zip)
    pkg_id = package_id if package_id is not None else out.stem
    entries: list[EntryPoint] = []
    files: dict[str, Path] = {}
    for entry_id, wasm_file in entry_points.items():
        src = Path(wasm_file)
        member = src.name
        if member in files and files[member].resolve() != src.resolve():
            raise PackageError(f"package {pkg_id}: two different modules are named {member}")
        files[member] = src
        entries.append(EntryPoint(id=entry_id, wasm_path=member))
    mounts = [m if isinstance(m, MountPoint) else MountPoint(mode=m[0], path=m[1]) for m in mount_points]
    manifest = _manifest_dict(pkg_id, name if name is not None else pkg_id, entries, mounts)
    raw = json.dumps(manifest, indent=2).encode() + b"\n"
    _parse_manifest(raw, f"package {pkg_id}")  # the same checks as a provider will make
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_zip_info(MANIFEST_NAME), raw)
            for member, src in files.items():
                zf.writestr(_zip_info(member), src.read_bytes())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    total = len(raw) + sum(src.stat().st_size for src in files.values())
    return load_package(out, max_bytes=out.stat().st_size, max_unpacked_bytes=total)


# --- internals ---------------------------------------------------------------------


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _make_dirs(root: Path, parts: list[str], label: str) -> Path:
    """``root/parts...`` as folders, created as needed, refusing any symlink on the way.

    A module can create symlinks in its writable mounts, and a later run must not follow
    one out of the work directory, so each component is checked before it is used.
    """
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise PackageError(f"{label}: {path.relative_to(root)} is a symbolic link; refusing to follow it")
        if not path.exists():
            path.mkdir()
        elif not path.is_dir():
            raise PackageError(f"{label}: {path.relative_to(root)} exists and is not a folder")
    return path


def _check_members(infos: list[zipfile.ZipInfo], label: str, unpacked_cap: int) -> dict[str, zipfile.ZipInfo]:
    """The members by name, after refusing unsafe names, links, encryption, duplicates and bombs."""
    if len(infos) > MAX_MEMBERS:
        raise PackageError(f"{label}: {len(infos)} files is over the limit of {MAX_MEMBERS}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        check_relative_path(name[:-1] if info.is_dir() else name, f"{label}: file name")
        if name in members:
            raise PackageError(f"{label}: {name} appears twice in the zip")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PackageError(f"{label}: {name} is a symbolic link, which packages may not contain")
        if info.flag_bits & 0x1:
            raise PackageError(f"{label}: {name} is encrypted")
        total += info.file_size
        if total > unpacked_cap:
            raise PackageError(f"{label}: unpacks to more than {unpacked_cap} bytes")
        members[name] = info
    return members


def _manifest_dict(
    pkg_id: str, name: str, entry_points: Iterable[EntryPoint], mount_points: Iterable[MountPoint]
) -> dict[str, Any]:
    return {
        "id": pkg_id,
        "name": name,
        "entry-points": [{"id": e.id, "wasm-path": e.wasm_path} for e in entry_points],
        "mount-points": [{m.mode: m.path} for m in mount_points],
    }


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _parse_manifest(
    raw: bytes, label: str
) -> tuple[str, str, tuple[EntryPoint, ...], tuple[MountPoint, ...]]:
    where = f"{label}: {MANIFEST_NAME}"
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise PackageError(f"{where} is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PackageError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # from _no_duplicate_keys
        raise PackageError(f"{where}: {exc}") from exc
    if not isinstance(doc, dict):
        raise PackageError(f"{where} must be a JSON object, not {json_type(doc, array='a list')}")
    _check_keys(doc, _MANIFEST_KEYS, ("id", "name", "entry-points"), where)
    pkg_id = _text(doc["id"], f"{where}: id")
    name = _text(doc["name"], f"{where}: name")
    where = f"package {pkg_id}: {MANIFEST_NAME}"

    raw_entries = doc["entry-points"]
    if not isinstance(raw_entries, list):
        raise PackageError(f"{where}: entry-points must be a list, not {json_type(raw_entries, array='a list')}")
    if not raw_entries:
        raise PackageError(f"{where}: entry-points is empty; a package needs at least one module to run")
    entries: list[EntryPoint] = []
    seen_ids: set[str] = set()
    for i, item in enumerate(raw_entries):
        at = f"{where}: entry-points[{i}]"
        if not isinstance(item, dict):
            raise PackageError(f"{at} must be an object, not {json_type(item, array='a list')}")
        _check_keys(item, _ENTRY_POINT_KEYS, _ENTRY_POINT_KEYS, at)
        entry_id = _text(item["id"], f"{at}.id")
        if entry_id in seen_ids:
            raise PackageError(f"{where}: entry point id {entry_id!r} appears twice")
        seen_ids.add(entry_id)
        wasm_path = item["wasm-path"]
        if not isinstance(wasm_path, str):
            raise PackageError(f"{at}.wasm-path must be a string, not {json_type(wasm_path, array='a list')}")
        check_relative_path(wasm_path, f"{at}.wasm-path")
        entries.append(EntryPoint(id=entry_id, wasm_path=wasm_path))

    raw_mounts = doc.get("mount-points", [])
    if not isinstance(raw_mounts, list):
        raise PackageError(f"{where}: mount-points must be a list, not {json_type(raw_mounts, array='a list')}")
    mounts: list[MountPoint] = []
    seen_paths: set[str] = set()
    for i, item in enumerate(raw_mounts):
        at = f"{where}: mount-points[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise PackageError(f'{at} must be an object with one key, "ro", "rw" or "wo"')
        ((mode, path),) = item.items()
        if mode not in MOUNT_MODES:
            raise PackageError(f'{at}: unknown mode {mode!r} (expected "ro", "rw" or "wo")')
        if not isinstance(path, str):
            raise PackageError(f"{at}.{mode} must be a string, not {json_type(path, array='a list')}")
        # "output/" means the folder "output"; anything else odd is refused below.
        path = path[:-1] if path.endswith("/") and len(path) > 1 else path
        check_relative_path(path, f"{at}: mount point")
        if path in seen_paths:
            raise PackageError(f"{where}: mount point {path!r} appears twice")
        seen_paths.add(path)
        mounts.append(MountPoint(mode=mode, path=path))
    return pkg_id, name, tuple(entries), tuple(mounts)


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise PackageError(f"{where}: unknown key {names} (allowed: {', '.join(allowed)})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise PackageError(f"{where}: missing key {', '.join(repr(k) for k in missing)}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PackageError(f"{where} must be a string, not {json_type(value, array='a list')}")
    if not value.strip():
        raise PackageError(f"{where} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise PackageError(f"{where} is {len(value)} characters, over {MAX_TEXT_CHARS}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise PackageError(f"{where}: control characters are not allowed")
    return value
