"""GVMI images: pack and read round trip, every kind of corruption, import into the real Docker engine."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from exeunits.vm.gvmi import (
    check_config,
    config_changes,
    import_gvmi,
    main,
    pack_gvmi,
    read_gvmi,
    unpacked_size,
)
from protocol.errors import ExeUnitError, PackageError
from tests.images.support import build_images, engine

__all__: list[str] = []

CONFIG: dict[str, Any] = {
    "Env": ["PATH=/bin", "GREETING=hello world"],
    "Cmd": ["/bin/sh"],
    "WorkingDir": "/golem/work",
    "Volumes": {"/golem/work": {}},
}


@pytest.fixture(scope="module")
def rootfs() -> Path:
    return build_images(with_docker=False) / "rootfs"


@pytest.fixture(scope="module")
def packed(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GVMI image of the test rootfs with CONFIG (gzip: the fastest to pack)."""
    return _pack(rootfs, CONFIG, tmp_path_factory.mktemp("gvmi") / "app.gvmi")


def _pack(rootfs: Path, config: dict[str, Any], out: Path) -> Path:
    pack_gvmi(rootfs, config, out, compression="gzip")
    return out


def _rewrite_trailer(src: Path, dst: Path, *, raw: bytes, crc: int | None = None, length: bytes | None = None) -> Path:
    """A copy of src with another config trailer (a valid crc and length unless given)."""
    layout = read_gvmi(src)
    squashfs = src.read_bytes()[: layout.squashfs_size]
    crc_value = zlib.crc32(raw) if crc is None else crc
    length_field = f"{len(raw):08d}".encode() if length is None else length
    dst.write_bytes(squashfs + struct.pack("<I", crc_value) + raw + length_field)
    return dst


def test_pack_then_read_gives_back_the_config_and_layout(packed: Path) -> None:
    layout = read_gvmi(packed)
    raw = json.dumps(CONFIG, separators=(",", ":")).encode()
    assert layout.config == CONFIG
    assert layout.squashfs_offset == 0
    assert layout.squashfs_size == packed.stat().st_size - 4 - len(raw) - 8
    assert packed.read_bytes()[:4] == b"hsqs"


def test_trailer_is_crc32_le_then_json_then_8_ascii_digits(packed: Path) -> None:
    data = packed.read_bytes()
    length = int(data[-8:].decode())
    assert data[-8:] == f"{length:08d}".encode()
    raw = data[-8 - length : -8]
    assert json.loads(raw) == CONFIG
    (crc,) = struct.unpack("<I", data[-8 - length - 4 : -8 - length])
    assert crc == zlib.crc32(raw)


def test_packed_image_holds_the_rootfs(packed: Path, rootfs: Path) -> None:
    assert unpacked_size(packed) >= (rootfs / "bin" / "busybox").stat().st_size


def test_flipped_config_byte_is_a_bad_crc(packed: Path, tmp_path: Path) -> None:
    data = bytearray(packed.read_bytes())
    data[-10] ^= 0x01  # inside the JSON
    bad = tmp_path / "bad.gvmi"
    bad.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="bad crc"):
        read_gvmi(bad)


@pytest.mark.parametrize("length", [b"0000012x", b"        ", b"-0000001"])
def test_length_that_is_not_8_digits_is_refused(packed: Path, tmp_path: Path, length: bytes) -> None:
    bad = tmp_path / "bad.gvmi"
    bad.write_bytes(packed.read_bytes()[:-8] + length)
    with pytest.raises(PackageError, match="bad length field"):
        read_gvmi(bad)


def test_length_beyond_the_file_is_refused(packed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gvmi"
    bad.write_bytes(b"hsqs" + b"\0" * 20 + b"{}" + b"00090000")
    with pytest.raises(PackageError, match="truncated or bad length"):
        read_gvmi(bad)
    bad.write_bytes(packed.read_bytes()[:-8] + b"99999999")
    with pytest.raises(PackageError, match="over"):
        read_gvmi(bad)


def test_file_shorter_than_a_trailer_is_truncated(tmp_path: Path) -> None:
    short = tmp_path / "short.gvmi"
    short.write_bytes(b"0000002")
    with pytest.raises(PackageError, match="truncated"):
        read_gvmi(short)


def test_cut_squashfs_image_is_truncated(packed: Path, tmp_path: Path) -> None:
    layout = read_gvmi(packed)
    data = packed.read_bytes()
    cut = tmp_path / "cut.gvmi"
    cut.write_bytes(data[: layout.squashfs_size // 2] + data[layout.squashfs_size :])
    with pytest.raises(PackageError, match="truncated: the squashfs image needs"):
        read_gvmi(cut)


def test_image_that_is_not_squashfs_is_refused(packed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gvmi"
    bad.write_bytes(b"PK\x03\x04" + packed.read_bytes()[4:])
    with pytest.raises(PackageError, match="no squashfs image"):
        read_gvmi(bad)


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b"\xff\xfe"])
def test_config_that_is_not_a_json_object_is_refused(packed: Path, tmp_path: Path, raw: bytes) -> None:
    bad = _rewrite_trailer(packed, tmp_path / "bad.gvmi", raw=raw)
    with pytest.raises(PackageError, match="config"):
        read_gvmi(bad)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"Env": "A=1"}, "Env must be a list"),
        ({"Env": ["NOEQUALS"]}, "NAME=value"),
        ({"Env": ["A=1\nCMD x"]}, "newline"),
        ({"Cmd": "sh"}, "Cmd must be a list"),
        ({"Entrypoint": [1]}, "Entrypoint must be a list"),
        ({"WorkingDir": 5}, "WorkingDir must be a string"),
        ({"Volumes": ["/a"]}, "Volumes must be an object"),
        ({"Volumes": {"relative/path": {}}}, "not an absolute path"),
        ({"Volumes": {"/golem/../etc": {}}}, r"'\.\.'"),
        ({"Volumes": {"/": {}}}, "not an absolute path below"),
    ],
)
def test_bad_config_fields_are_refused(config: dict[str, Any], match: str) -> None:
    with pytest.raises(PackageError, match=match):
        check_config(config)


def test_config_changes_quote_what_the_engine_would_expand() -> None:
    config = check_config({"Env": ['A=$HOME "x"'], "WorkingDir": "/w d", "Volumes": {"/v/$X": {}}})
    assert config_changes(config) == ['ENV A="\\$HOME \\"x\\""', 'WORKDIR "/w d"', 'VOLUME ["/v/\\\\$X"]']


def test_pack_refuses_a_bad_config_and_leaves_no_file(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError):
        pack_gvmi(rootfs, {"Volumes": {"x": {}}}, tmp_path / "out.gvmi")
    assert list(tmp_path.iterdir()) == []


def test_pack_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExeUnitError, match="not a directory"):
        pack_gvmi(tmp_path / "nope", {}, tmp_path / "out.gvmi")


def test_cli_info_prints_the_layout(packed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(packed)]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == CONFIG


def test_cli_pack_takes_env_and_volumes(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.gvmi"
    assert main(["pack", str(rootfs), str(out), "--env", "A=1", "--volume", "/data", "--compression", "gzip"]) == 0
    assert read_gvmi(out).config == {"Env": ["A=1"], "Volumes": {"/data": {}}}


# --- import into the engine ---------------------------------------------------------------


def test_import_applies_the_config_exactly(rootfs: Path, tmp_path: Path) -> None:
    client = engine()
    config = {
        "Env": ["PATH=/bin", 'TRICKY=it\'s "$HOME" \\ ${X}', "EMPTY="],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo $TRICKY"],
        "WorkingDir": "/work dir/$X",
        "Volumes": {"/golem/work": {}, "/golem/out put": {}},
    }
    image = _pack(rootfs, config, tmp_path / "tricky.gvmi")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tag = "loam-test/gvmi-import:tricky"
    try:
        image_id = import_gvmi(client, image, tag, tmp_dir=scratch)
        got = client.api.inspect_image(tag)
        assert got["Id"] == image_id
        assert got["Config"]["Env"] == config["Env"]
        assert got["Config"]["Entrypoint"] == config["Entrypoint"]
        assert got["Config"]["Cmd"] == config["Cmd"]
        assert got["Config"]["WorkingDir"] == config["WorkingDir"]
        assert got["Config"]["Volumes"] == config["Volumes"]
        output = client.containers.run(tag, remove=True, network_mode="none", entrypoint=["/bin/cat", "/etc/passwd"])
        assert output.startswith(b"root:x:0:0")
    finally:
        client.images.remove(tag, force=True)
    assert list(scratch.iterdir()) == [], "the temporary files of the import are left behind"


def test_import_refuses_an_image_that_unpacks_too_big(packed: Path, tmp_path: Path) -> None:
    client = engine()
    tag = "loam-test/gvmi-import:bomb"
    with pytest.raises(PackageError, match="unpacks to"):
        import_gvmi(client, packed, tag, max_unpacked_bytes=1024, tmp_dir=tmp_path)
    assert not client.images.list(name="loam-test/gvmi-import")
    assert list(tmp_path.iterdir()) == []
