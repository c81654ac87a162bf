"""gvmkit-build's GVMI image format: a squashfs root filesystem followed by its Docker config.

A GVMI file, as gvmkit-build writes it, is::

    +--------------------+------------------+-------------------+-----------------------+
    | squashfs image     | crc32 (4 bytes,  | config JSON       | JSON length (8 ASCII  |
    | of the root fs     | little-endian)   | (Docker config)   | decimal digits, 0-pad)|
    +--------------------+------------------+-------------------+-----------------------+

The crc32 (IEEE, as zlib computes it) covers the JSON only. The config is the ``Config``
object of ``docker inspect`` (``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``,
``Volumes``, ...). Images come from requestors, so reading checks every field and size
before anything is unpacked::

    layout = read_gvmi("app.gvmi")                    # (squashfs_offset, squashfs_size, config)
    pack_gvmi("rootfs/", {"Env": ["A=1"], "Volumes": {"/golem/work": {}}}, "app.gvmi")
    image_id = import_gvmi(docker.from_env(), "app.gvmi", "loam/0123456789abcdef:latest")

From the shell (``info`` prints the layout as JSON)::

    python -m exeunits.vm pack ROOTFS OUT.gvmi --env A=1 --volume /golem/work
    python -m exeunits.vm info OUT.gvmi

Packing and unpacking use Debian's squashfs-tools (``mksquashfs``, ``unsquashfs``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from protocol.errors import ExeUnitError, PackageError

if TYPE_CHECKING:
    import docker

__all__ = [
    "CRC_BYTES",
    "LENGTH_BYTES",
    "MAX_CONFIG_BYTES",
    "SQUASHFS_MAGIC",
    "GvmiLayout",
    "read_gvmi",
    "check_config",
    "check_volume_path",
    "config_changes",
    "pack_gvmi",
    "unpacked_size",
    "import_gvmi",
    "main",
]

CRC_BYTES = 4
LENGTH_BYTES = 8
# A Docker config is a few kilobytes; the length field could announce up to 100 MB.
MAX_CONFIG_BYTES = 1024 * 1024
SQUASHFS_MAGIC = b"hsqs"
# The squashfs 4 superblock: magic at 0, bytes_used (u64, little-endian) at 40; 96 bytes in all.
_SUPERBLOCK_BYTES = 96
_BYTES_USED = struct.Struct("<Q")
_BYTES_USED_OFFSET = 40
_MAX_LIST_ITEMS = 4096
_MAX_TEXT_CHARS = 64 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_TOOL_TIMEOUT_S = 600.0


class GvmiLayout(NamedTuple):
    """Where the parts of a GVMI file are: the squashfs image's offset and size, and the config."""

    squashfs_offset: int
    squashfs_size: int
    config: dict[str, Any]


def read_gvmi(path: str | os.PathLike[str]) -> GvmiLayout:
    """Read and check the trailer of the GVMI file at ``path``; nothing is unpacked.

    The config is returned as stored (see ``check_config`` for the fields Loam uses).

        >>> read_gvmi("app.gvmi").config["Volumes"]
        {'/golem/work': {}}

    Raises:
        PackageError: the file is truncated, its length field or crc is wrong, the config
            is not a JSON object, or the image part is not a whole squashfs image.
    """
    label = f"GVMI image {Path(path).name}"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < CRC_BYTES + LENGTH_BYTES:
                raise PackageError(f"{label}: truncated ({size} bytes, not even a config trailer)")
            f.seek(size - LENGTH_BYTES)
            raw_length = f.read(LENGTH_BYTES)
            if not re.fullmatch(rb"[0-9]{8}", raw_length):
                raise PackageError(f"{label}: bad length field {raw_length!r} (8 ASCII digits expected)")
            config_bytes = int(raw_length)
            if config_bytes > MAX_CONFIG_BYTES:
                raise PackageError(f"{label}: bad length field: a config of {config_bytes} bytes is over {MAX_CONFIG_BYTES}")
            squashfs_size = size - LENGTH_BYTES - config_bytes - CRC_BYTES
            if squashfs_size < _SUPERBLOCK_BYTES:
                raise PackageError(
                    f"{label}: truncated or bad length field: {size} bytes cannot hold a squashfs image "
                    f"and a config of {config_bytes} bytes"
                )
            f.seek(squashfs_size)
            (crc_stored,) = struct.unpack("<I", f.read(CRC_BYTES))
            raw_config = f.read(config_bytes)
            f.seek(0)
            superblock = f.read(_SUPERBLOCK_BYTES)
    except OSError as exc:
        raise PackageError(f"{label}: cannot read it: {exc.strerror or exc}") from exc
    crc = zlib.crc32(raw_config)
    if crc != crc_stored:
        raise PackageError(f"{label}: bad crc of the config (stored {crc_stored:#010x}, computed {crc:#010x})")
    try:
        config = json.loads(raw_config)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{label}: the config is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise PackageError(f"{label}: the config is a JSON {type(config).__name__}, not an object")
    if superblock[:4] != SQUASHFS_MAGIC:
        raise PackageError(f"{label}: no squashfs image at the start of the file (magic {superblock[:4]!r})")
    (bytes_used,) = _BYTES_USED.unpack_from(superblock, _BYTES_USED_OFFSET)
    if bytes_used > squashfs_size:
        raise PackageError(
            f"{label}: truncated: the squashfs image needs {bytes_used} bytes, the file holds {squashfs_size}"
        )
    return GvmiLayout(0, squashfs_size, config)


def check_config(config: Any, label: str = "image config", *, for_import: bool = True) -> dict[str, Any]:
    """The fields of a Docker config that Loam applies, checked: Env, Cmd, Entrypoint, WorkingDir, Volumes.

    Missing fields are filled with empty values (``Cmd``/``Entrypoint`` with None). With
    ``for_import`` (a GVMI config about to become ``docker import --change`` lines), env
    entries must be ``NAME=value`` without newlines; an image the engine already holds
    needs only the types and its volumes checked.

        >>> check_config({"Env": ["A=1"], "Volumes": {"/golem/work": {}}})["Volumes"]
        ['/golem/work']

    Raises:
        PackageError: a field of the wrong type, an env entry that is not NAME=value, a
            volume that is not an absolute path without ``.``/``..``, or text with a newline.
    """
    if not isinstance(config, dict):
        raise PackageError(f"{label}: not a JSON object")
    env = config.get("Env") or []
    if not _is_str_list(env):
        raise PackageError(f"{label}: Env must be a list of strings")
    for entry in env if for_import else ():
        name = entry.partition("=")[0]
        if "=" not in entry or not _ENV_NAME.match(name):
            raise PackageError(f"{label}: Env entry {entry[:80]!r} is not NAME=value")
        _check_text(entry, f"{label}: Env entry {name}")
    result: dict[str, Any] = {"Env": list(env)}
    for key in ("Cmd", "Entrypoint"):
        value = config.get(key)
        if value is not None and not _is_str_list(value):
            raise PackageError(f"{label}: {key} must be a list of strings or null")
        result[key] = list(value) if value is not None else None
    workdir = config.get("WorkingDir") or ""
    if not isinstance(workdir, str):
        raise PackageError(f"{label}: WorkingDir must be a string")
    if for_import:
        _check_text(workdir, f"{label}: WorkingDir")
    result["WorkingDir"] = workdir
    volumes = config.get("Volumes") or {}
    if not isinstance(volumes, dict) or len(volumes) > _MAX_LIST_ITEMS:
        raise PackageError(f"{label}: Volumes must be an object (path -> {{}})")
    for volume in volumes:
        check_volume_path(volume, label)
    result["Volumes"] = sorted(volumes)
    return result


def check_volume_path(path: str, label: str = "image config") -> str:
    """``path`` if it is an absolute container path without ``.``/``..`` components or control characters.

    Raises:
        PackageError: naming the path.
    """
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise PackageError(f"{label}: volume {str(path)[:80]!r} is not an absolute path below /")
    _check_text(path, f"{label}: volume {path[:80]!r}")
    if any(part in (".", "..") for part in path.split("/")):
        raise PackageError(f"{label}: volume {path[:80]!r} has a '.' or '..' component")
    return path


def config_changes(config: dict[str, Any]) -> list[str]:
    """Dockerfile instructions (``docker import --change``) that give an imported image ``config``.

    ``config`` is what ``check_config`` returns. The engine runs ENV, WORKDIR and VOLUME
    through its shell-word parser, so quotes, ``$`` and backslashes are escaped; CMD and
    ENTRYPOINT use the JSON (exec) form, which it takes literally.

        >>> config_changes({"Env": ["A=1 2"], "Cmd": ["sh"], "Entrypoint": None, "WorkingDir": "", "Volumes": []})
        ['ENV A="1 2"', 'CMD ["sh"]']
    """
    changes = []
    for entry in config["Env"]:
        name, _, value = entry.partition("=")
        changes.append(f"ENV {name}={_quote_word(value)}")
    for key in ("Cmd", "Entrypoint"):
        if config[key] is not None:
            changes.append(f"{key.upper()} {json.dumps(config[key])}")
    if config["WorkingDir"]:
        changes.append(f"WORKDIR {_quote_word(config['WorkingDir'])}")
    if config["Volumes"]:
        changes.append(f"VOLUME {json.dumps([_escape_word(v, quote=True) for v in config['Volumes']])}")
    return changes


def pack_gvmi(
    rootfs_dir: str | os.PathLike[str],
    config: dict[str, Any],
    out_path: str | os.PathLike[str],
    *,
    compression: str = "lzo",
) -> GvmiLayout:
    """Write a GVMI image of ``rootfs_dir`` with ``config`` to ``out_path`` and return its layout.

    ``compression`` is a mksquashfs ``-comp`` method (gvmkit-build's default is lzo; gzip,
    lz4, xz and zstd also work). The file appears whole or not at all.

        >>> pack_gvmi("build/rootfs", {"Env": ["PATH=/bin"], "Volumes": {"/golem/work": {}}}, "app.gvmi")

    Raises:
        PackageError: ``config`` is not a valid config (see ``check_config``).
        ExeUnitError: mksquashfs is missing or fails.
    """
    check_config(config)
    raw = json.dumps(config, separators=(",", ":")).encode()
    if len(raw) > MAX_CONFIG_BYTES:
        raise PackageError(f"image config: {len(raw)} bytes is over the limit of {MAX_CONFIG_BYTES}")
    rootfs = Path(rootfs_dir)
    if not rootfs.is_dir():
        raise ExeUnitError(f"cannot pack {rootfs}: not a directory")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _tool(["mksquashfs", str(rootfs), str(tmp), "-noappend", "-no-progress", "-quiet", "-comp", compression])
        with open(tmp, "ab") as f:
            f.write(struct.pack("<I", zlib.crc32(raw)))
            f.write(raw)
            f.write(f"{len(raw):08d}".encode())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return read_gvmi(out)


def unpacked_size(path: str | os.PathLike[str]) -> int:
    """The total size of the files in the squashfs image at the start of ``path`` (from its listing).

    Raises:
        ExeUnitError: unsquashfs is missing or cannot read the image.
    """
    listing = _tool(["unsquashfs", "-lln", str(path)])
    total = 0
    for line in listing.splitlines():
        # "-rw-r--r-- 0/0   1234 2024-01-01 00:00 squashfs-root/path": regular files only.
        fields = line.split(None, 3)
        if len(fields) >= 3 and fields[0].startswith("-") and fields[2].isdigit():
            total += int(fields[2])
    return total


def import_gvmi(
    client: docker.DockerClient,
    path: str | os.PathLike[str],
    tag: str,
    *,
    max_unpacked_bytes: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Import the GVMI image at ``path`` into the Docker engine as ``tag``, with its config; returns the image id.

    The squashfs image is unpacked with unsquashfs into a temporary directory (under
    ``tmp_dir``), tarred and imported with the config's Env, Cmd, Entrypoint, WorkingDir
    and Volumes; the temporary files are removed whatever happens.

    Raises:
        PackageError: a bad GVMI file or config, or one that unpacks to more than ``max_unpacked_bytes``.
        ExeUnitError: squashfs-tools are missing or fail, or the engine refuses the import.
    """
    import docker.errors
    from docker.utils import parse_repository_tag

    layout = read_gvmi(path)
    config = check_config(layout.config, f"GVMI image {Path(path).name}")
    changes = config_changes(config)
    if max_unpacked_bytes is not None:
        size = unpacked_size(path)
        if size > max_unpacked_bytes:
            raise PackageError(f"GVMI image {Path(path).name}: unpacks to {size} bytes, over the limit of {max_unpacked_bytes}")
    repository, tag_name = parse_repository_tag(tag)
    tmp = Path(tempfile.mkdtemp(prefix="loam-gvmi-", dir=tmp_dir))
    try:
        root = tmp / "root"
        # -no-xattrs: a tar of the tree would not carry them anyway; the image part ends
        # before the config trailer (the superblock says where), so the whole file is given.
        _tool(["unsquashfs", "-no-progress", "-quiet", "-no-xattrs", "-d", str(root), str(path)])
        tar_path = tmp / "rootfs.tar"
        _tool(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar_path), "."])
        shutil.rmtree(root, ignore_errors=True)  # halve the peak disk use before the upload
        try:
            with open(tar_path, "rb") as f:
                # An open file, not a path: the SDK would take a path it cannot open for a URL.
                client.api.import_image(src=f, repository=repository, tag=tag_name or "latest", changes=changes)
            return str(client.api.inspect_image(f"{repository}:{tag_name or 'latest'}")["Id"])
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"the Docker engine refused GVMI image {Path(path).name}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- internals ---------------------------------------------------------------------


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= _MAX_LIST_ITEMS and all(isinstance(v, str) for v in value)


def _check_text(text: str, what: str) -> None:
    # The engine reads --change lines one per line: a newline would start another instruction.
    if len(text) > _MAX_TEXT_CHARS or any(c in text for c in "\n\r\0"):
        raise PackageError(f"{what}: too long, or has a newline or NUL character")


def _escape_word(text: str, *, quote: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("$", "\\$").replace('"', '\\"')
    return text.replace("'", "\\'") if quote else text


def _quote_word(text: str) -> str:
    return f'"{_escape_word(text)}"'


def _tool(argv: list[str]) -> str:
    """Run a squashfs-tools (or tar) command; its stdout, or an ExeUnitError with its stderr."""
    if shutil.which(argv[0]) is None:
        hint = " (Debian: apt-get install squashfs-tools)" if "squashfs" in argv[0] else ""
        raise ExeUnitError(f"{argv[0]} is not installed{hint}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=_TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExeUnitError(f"{argv[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ExeUnitError(f"{argv[0]} failed (exit code {proc.returncode}): {detail}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    """``python -m exeunits.vm pack|info``: build or inspect GVMI images."""
    parser = argparse.ArgumentParser(prog="python -m exeunits.vm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="pack a root filesystem directory into a GVMI image")
    pack.add_argument("rootfs")
    pack.add_argument("out")
    pack.add_argument("--config", help="a JSON file with a Docker config to start from")
    pack.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    pack.add_argument("--volume", action="append", default=[], metavar="PATH")
    pack.add_argument("--workdir")
    pack.add_argument("--entrypoint", help="a JSON list")
    pack.add_argument("--cmd", help="a JSON list")
    pack.add_argument("--compression", default="lzo")
    info = sub.add_parser("info", help="print the layout and config of a GVMI image as JSON")
    info.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            layout = read_gvmi(args.path)
            print(json.dumps(layout._asdict(), indent=2))
            return 0
        config: dict[str, Any] = json.loads(Path(args.config).read_text()) if args.config else {}
        config["Env"] = [*(config.get("Env") or []), *args.env]
        config["Volumes"] = {**(config.get("Volumes") or {}), **{v: {} for v in args.volume}}
        if args.workdir is not None:
            config["WorkingDir"] = args.workdir
        if args.entrypoint is not None:
            config["Entrypoint"] = json.loads(args.entrypoint)
        if args.cmd is not None:
            config["Cmd"] = json.loads(args.cmd)
        layout = pack_gvmi(args.rootfs, config, args.out, compression=args.compression)
        print(f"{args.out}: squashfs {layout.squashfs_size} bytes, config {len(json.dumps(config))} bytes")
        return 0
    except (ExeUnitError, OSError, ValueError) as exc:
        print(f"gvmi: error: {exc}", file=sys.stderr)
        return 1

