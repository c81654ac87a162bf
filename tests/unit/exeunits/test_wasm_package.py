"""WASI packages: the manifest's checks, zip-slip and zip-bomb defences, extraction, mounts and make_package."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from exeunits.wasm import package as package_module
from exeunits.wasm.package import (
    EntryPoint,
    MountPoint,
    Package,
    check_relative_path,
    extract,
    load_package,
    make_package,
    prepare_mounts,
)
from protocol.errors import ExeUnitError, PackageError

__all__: list[str] = []

MIB = 1024 * 1024
WASM = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))'))
MANIFEST: dict[str, Any] = {
    "id": "example",
    "name": "an example",
    "entry-points": [{"id": "main", "wasm-path": "main.wasm"}],
    "mount-points": [{"ro": "input"}, {"wo": "output"}, {"rw": "data/cache"}],
}


def write_zip(path: Path, members: dict[str, bytes | str], *, manifest: Any = MANIFEST) -> Path:
    """A zip with ``manifest`` (a dict as JSON, bytes as they are, None for none) and ``members``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if manifest is not None:
            zf.writestr("manifest.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def with_manifest(tmp_path: Path, manifest: Any, members: dict[str, bytes | str] | None = None) -> Path:
    return write_zip(tmp_path / "pkg.zip", {"main.wasm": WASM} if members is None else members, manifest=manifest)


def changed(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(MANIFEST))
    for key, value in changes.items():
        key = key.replace("_", "-")
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return doc


# --- a good package --------------------------------------------------------------------


def test_a_valid_package_loads(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST)
    pkg = load_package(path, max_bytes=MIB)
    assert pkg.id == "example" and pkg.name == "an example"
    assert pkg.entry_points == (EntryPoint(id="main", wasm_path="main.wasm"),)
    assert pkg.mount_points == (
        MountPoint(mode="ro", path="input"),
        MountPoint(mode="wo", path="output"),
        MountPoint(mode="rw", path="data/cache"),
    )
    assert [m.guest_path for m in pkg.mount_points] == ["/input", "/output", "/data/cache"]
    assert pkg.size_bytes == path.stat().st_size
    assert pkg.read_wasm("main") == WASM
    assert pkg.to_manifest() == MANIFEST


def test_mount_points_are_optional_and_a_trailing_slash_is_accepted(tmp_path: Path) -> None:
    pkg = load_package(with_manifest(tmp_path, changed(mount_points=...)), max_bytes=MIB)
    assert pkg.mount_points == ()
    pkg = load_package(with_manifest(tmp_path, changed(mount_points=[{"rw": "output/"}])), max_bytes=MIB)
    assert pkg.mount_points == (MountPoint(mode="rw", path="output"),)


def test_unknown_entry_point_lists_the_known_ones(tmp_path: Path) -> None:
    pkg = load_package(with_manifest(tmp_path, MANIFEST), max_bytes=MIB)
    with pytest.raises(PackageError, match=r"package example: no entry point 'other' \(it has 'main'\)"):
        pkg.entry_point("other")


# --- bad manifests ---------------------------------------------------------------------


BAD_MANIFESTS: list[tuple[str, Any, str]] = [
    ("not json", b"{'id': 1}", "is not valid JSON: .* at line 1 column 2"),
    ("not utf-8", b'{"id": "\xff"}', "is not UTF-8"),
    ("a list", b"[]", "must be a JSON object, not a list"),
    ("duplicate key", b'{"id": "a", "id": "b"}', "duplicate key 'id'"),
    ("unknown key", changed(version="1.0"), r"unknown key 'version' \(allowed: id, name, entry-points, mount-points\)"),
    ("no id", changed(id=...), "missing key 'id'"),
    ("id a number", changed(id=7), "id must be a string, not a number"),
    ("empty name", changed(name="  "), "name is empty"),
    ("control char", changed(name="a\nb"), "control characters"),
    ("long name", changed(name="x" * 300), "300 characters"),
    ("no entry points", changed(entry_points=...), "missing key 'entry-points'"),
    ("entry points an object", changed(entry_points={"id": "main"}), "entry-points must be a list, not an object"),
    ("entry points empty", changed(entry_points=[]), "entry-points is empty"),
    ("entry a string", changed(entry_points=["main.wasm"]), r"entry-points\[0\] must be an object, not a string"),
    (
        "entry unknown key",
        changed(entry_points=[{"id": "main", "wasm-path": "main.wasm", "args": []}]),
        r"entry-points\[0\]: unknown key 'args'",
    ),
    ("entry no wasm-path", changed(entry_points=[{"id": "main"}]), r"entry-points\[0\]: missing key 'wasm-path'"),
    ("entry id null", changed(entry_points=[{"id": None, "wasm-path": "main.wasm"}]), "id must be a string, not null"),
    (
        "wasm-path a list",
        changed(entry_points=[{"id": "main", "wasm-path": ["main.wasm"]}]),
        "wasm-path must be a string, not a list",
    ),
    (
        "wasm-path with ..",
        changed(entry_points=[{"id": "main", "wasm-path": "../main.wasm"}]),
        r"wasm-path '../main.wasm': '..' is not allowed",
    ),
    (
        "duplicate entry ids",
        changed(entry_points=[{"id": "main", "wasm-path": "main.wasm"}, {"id": "main", "wasm-path": "main.wasm"}]),
        "entry point id 'main' appears twice",
    ),
    (
        "wasm missing from the zip",
        changed(entry_points=[{"id": "main", "wasm-path": "other.wasm"}]),
        "entry point 'main': other.wasm is not in the package",
    ),
    ("mount points an object", changed(mount_points={"ro": "input"}), "mount-points must be a list"),
    ("mount with two keys", changed(mount_points=[{"ro": "a", "rw": "b"}]), "must be an object with one key"),
    ("mount a string", changed(mount_points=["input"]), "must be an object with one key"),
    ("mount unknown mode", changed(mount_points=[{"rx": "input"}]), "unknown mode 'rx'"),
    ("mount path a number", changed(mount_points=[{"ro": 1}]), r"mount-points\[0\]\.ro must be a string"),
    ("mount absolute", changed(mount_points=[{"ro": "/etc"}]), "'/etc': absolute paths are not allowed"),
    ("mount ..", changed(mount_points=[{"rw": "data/../../etc"}]), "'data/../../etc': '..' is not allowed"),
    ("mount just ..", changed(mount_points=[{"rw": ".."}]), "'..' is not allowed"),
    ("mount .", changed(mount_points=[{"rw": "./data"}]), "'.' is not allowed"),
    ("mount empty", changed(mount_points=[{"rw": ""}]), "empty path"),
    ("mount //", changed(mount_points=[{"rw": "a//b"}]), "empty path component"),
    ("mount backslash", changed(mount_points=[{"rw": "..\\etc"}]), "backslashes are not allowed"),
    ("mount NUL", changed(mount_points=[{"rw": "a\u0000b"}]), "control characters are not allowed"),
    (
        "duplicate mount",
        changed(mount_points=[{"ro": "input"}, {"rw": "input"}]),
        "mount point 'input' appears twice",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), [c[1:] for c in BAD_MANIFESTS], ids=[c[0] for c in BAD_MANIFESTS])
def test_bad_manifest_is_refused_with_a_clear_error(tmp_path: Path, manifest: Any, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        load_package(with_manifest(tmp_path, manifest), max_bytes=MIB)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "pkg.zip", {"main.wasm": WASM}, manifest=None)
    with pytest.raises(PackageError, match="package pkg.zip: no manifest.json at the root of the zip"):
        load_package(path, max_bytes=MIB)
    members: dict[str, bytes | str] = {"sub/manifest.json": json.dumps(MANIFEST), "main.wasm": WASM}
    nested = write_zip(tmp_path / "nested.zip", members, manifest=None)
    with pytest.raises(PackageError, match="no manifest.json at the root"):
        load_package(nested, max_bytes=MIB)


def test_oversized_manifest_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_module, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(PackageError, match="manifest.json is .* bytes, over 100"):
        load_package(with_manifest(tmp_path, changed(name="x" * 200)), max_bytes=MIB)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not wasm at all", "main.wasm is not a WebAssembly module"),
        (b"\0asm\x0d\x00\x01\x00", "components are not supported"),
    ],
)
def test_entry_point_that_is_not_a_core_module_is_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        load_package(with_manifest(tmp_path, MANIFEST, {"main.wasm": data}), max_bytes=MIB)


# --- unsafe or oversized zips ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.sh", "'..' is not allowed"),
        ("lib/../../evil.sh", "'..' is not allowed"),
        ("/etc/cron.d/evil", "absolute paths are not allowed"),
        ("..\\evil.sh", "backslashes are not allowed"),
        ("a//b", "empty path component"),
    ],
)
def test_zip_slip_member_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.wasm", WASM)
        # ZipInfo keeps the name as given (ZipFile.write would sanitise it).
        zf.writestr(zipfile.ZipInfo(name), b"#!/bin/sh\n")
    with pytest.raises(PackageError, match=f"file name .*{message}"):
        load_package(path, max_bytes=MIB)


def test_symlink_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.wasm", WASM)
        link = zipfile.ZipInfo("input")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    with pytest.raises(PackageError, match="input is a symbolic link"):
        load_package(path, max_bytes=MIB)


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pkg.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.wasm", WASM)
        zf.writestr("main.wasm", b"\0asm\x01\0\0\0 something else")
    with pytest.raises(PackageError, match="main.wasm appears twice"):
        load_package(path, max_bytes=MIB)


def test_encrypted_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.wasm", WASM)
        zf.writestr("secret.bin", b"x")
    # zipfile cannot write encrypted members: set the flag in the central directory.
    data = bytearray(path.read_bytes())
    header = data.rfind(b"secret.bin") - 46
    assert data[header : header + 4] == b"PK\x01\x02"
    data[header + 8] |= 0x1
    path.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="secret.bin is encrypted"):
        load_package(path, max_bytes=MIB)


def test_package_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST, {"main.wasm": WASM, "data.bin": os.urandom(20_000)})
    with pytest.raises(PackageError, match=r"package pkg.zip: \d+ bytes is over the limit of 10000 bytes"):
        load_package(path, max_bytes=10_000)


def test_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    bomb = with_manifest(tmp_path, MANIFEST, {"main.wasm": WASM, "zeros.bin": bytes(50 * MIB)})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(PackageError, match="unpacks to more than 800000 bytes"):
        load_package(bomb, max_bytes=100_000)  # default cap: UNPACKED_RATIO times max_bytes
    with pytest.raises(PackageError, match="unpacks to more than 1048576 bytes"):
        load_package(bomb, max_bytes=10 * MIB, max_unpacked_bytes=MIB)


def test_too_many_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_module, "MAX_MEMBERS", 10)
    members: dict[str, bytes | str] = {f"f{i}": b"" for i in range(10)}
    members["main.wasm"] = WASM
    with pytest.raises(PackageError, match="12 files is over the limit of 10"):
        load_package(with_manifest(tmp_path, MANIFEST, members), max_bytes=MIB)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"PK\x03\x04 this is no zip", "not a valid zip file"), (b"", "not a valid zip file")],
)
def test_not_a_zip_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "pkg.zip"
    path.write_bytes(content)
    with pytest.raises(PackageError, match=message):
        load_package(path, max_bytes=MIB)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="package nope.zip: cannot read it"):
        load_package(tmp_path / "nope.zip", max_bytes=MIB)


def test_package_errors_are_exe_unit_errors() -> None:
    assert issubclass(PackageError, ExeUnitError)


# --- extraction and mounts -------------------------------------------------------------


def test_extract_unpacks_every_member(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST, {"main.wasm": WASM, "lib/data.txt": "hello", "empty/": ""})
    dest = extract(load_package(path, max_bytes=MIB), tmp_path / "out")
    assert (dest / "main.wasm").read_bytes() == WASM
    assert (dest / "lib" / "data.txt").read_text() == "hello"
    assert (dest / "empty").is_dir()
    assert json.loads((dest / "manifest.json").read_text()) == MANIFEST


def test_extract_does_not_follow_a_symlink_in_the_destination(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST, {"main.wasm": WASM, "lib/data.txt": "pwned"})
    pkg = load_package(path, max_bytes=MIB)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "lib").symlink_to(outside)
    with pytest.raises(PackageError, match="lib is a symbolic link"):
        extract(pkg, dest)
    assert list(outside.iterdir()) == []
    # Nor a symlink where a file goes.
    dest = tmp_path / "out2"
    dest.mkdir()
    (dest / "main.wasm").symlink_to(outside / "target")
    with pytest.raises(PackageError, match="cannot extract"):
        extract(pkg, dest)
    assert not (outside / "target").exists()


def test_extract_counts_the_bytes_it_writes(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST, {"main.wasm": WASM, "big.bin": bytes(300_000)})
    pkg = load_package(path, max_bytes=MIB)
    with pytest.raises(PackageError, match="unpacks to more than 100000 bytes"):
        extract(pkg, tmp_path / "out", max_unpacked_bytes=100_000)
    assert not (tmp_path / "out" / "big.bin").exists()  # no half-written file left


def test_extract_rechecks_a_package_swapped_after_loading(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST)
    pkg = load_package(path, max_bytes=MIB)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo("../escape"), b"x")
    with pytest.raises(PackageError, match="'..' is not allowed"):
        extract(pkg, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_prepare_mounts_creates_the_folders(tmp_path: Path) -> None:
    pkg = load_package(with_manifest(tmp_path, MANIFEST), max_bytes=MIB)
    work = tmp_path / "work"
    mounts = prepare_mounts(pkg, work)
    assert mounts == {
        "/input": (work / "input", "ro"),
        "/output": (work / "output", "wo"),
        "/data/cache": (work / "data" / "cache", "rw"),
    }
    assert all(host.is_dir() for host, _ in mounts.values())
    assert prepare_mounts(pkg, work) == mounts  # idempotent


def test_prepare_mounts_refuses_a_symlink_left_by_an_earlier_run(tmp_path: Path) -> None:
    pkg = load_package(with_manifest(tmp_path, MANIFEST), max_bytes=MIB)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "cache").symlink_to("/etc")
    with pytest.raises(PackageError, match="mount point 'data/cache': data/cache is a symbolic link"):
        prepare_mounts(pkg, work)


def test_check_relative_path_accepts_plain_relative_paths() -> None:
    assert check_relative_path("a/b.c/d-e_f", "path") == "a/b.c/d-e_f"
    assert check_relative_path("..hidden/x..", "path") == "..hidden/x.."


# --- make_package ----------------------------------------------------------------------


def test_make_package_round_trips(tmp_path: Path) -> None:
    wasm = tmp_path / "main.wasm"
    wasm.write_bytes(WASM)
    pkg = make_package(
        tmp_path / "out" / "demo.zip",
        {"main": wasm, "alias": wasm},
        [("ro", "input"), MountPoint(mode="wo", path="output")],
        name="A demo",
    )
    assert isinstance(pkg, Package)
    assert (pkg.id, pkg.name) == ("demo", "A demo")
    assert pkg.entry_points == (EntryPoint("main", "main.wasm"), EntryPoint("alias", "main.wasm"))
    assert pkg.mount_points == (MountPoint("ro", "input"), MountPoint("wo", "output"))
    with zipfile.ZipFile(pkg.zip_path) as zf:
        assert sorted(zf.namelist()) == ["main.wasm", "manifest.json"]
    assert load_package(pkg.zip_path, max_bytes=MIB) == pkg


def test_make_package_is_reproducible(tmp_path: Path) -> None:
    wasm = tmp_path / "main.wasm"
    wasm.write_bytes(WASM)
    a = make_package(tmp_path / "a" / "p.zip", {"main": wasm}, [("rw", "data")])
    b = make_package(tmp_path / "b" / "p.zip", {"main": wasm}, [("rw", "data")])
    assert a.zip_path.read_bytes() == b.zip_path.read_bytes()


def test_make_package_refuses_what_load_package_would(tmp_path: Path) -> None:
    wasm = tmp_path / "main.wasm"
    wasm.write_bytes(WASM)
    with pytest.raises(PackageError, match="'..' is not allowed"):
        make_package(tmp_path / "p.zip", {"main": wasm}, [("rw", "../up")])
    with pytest.raises(PackageError, match="entry-points is empty"):
        make_package(tmp_path / "p.zip", {})
    other = tmp_path / "sub" / "main.wasm"
    other.parent.mkdir()
    other.write_bytes(WASM)
    with pytest.raises(PackageError, match="two different modules are named main.wasm"):
        make_package(tmp_path / "p.zip", {"a": wasm, "b": other})
    assert not (tmp_path / "p.zip").exists()


def test_read_wasm_of_a_package_that_broke_after_loading(tmp_path: Path) -> None:
    path = with_manifest(tmp_path, MANIFEST)
    pkg = load_package(path, max_bytes=MIB)
    path.write_bytes(b"gone")
    with pytest.raises(PackageError, match="cannot read main.wasm"):
        pkg.read_wasm("main")
