"""How much of a command's output a result carries (Golem's capture modes)."""

from __future__ import annotations

from pathlib import Path

from exeunits.output import OUTPUT_CAP_BYTES, captured, tail


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "out"
    path.write_text(text)
    return path


def test_default_is_the_whole_output_up_to_the_cap(tmp_path: Path) -> None:
    assert captured(_file(tmp_path, "hello\n"), {}, "stdout") == "hello\n"
    long = "x" * (OUTPUT_CAP_BYTES + 10) + "END"
    assert captured(_file(tmp_path, long), None, "stdout").endswith("END")
    assert len(tail(_file(tmp_path, long))) == OUTPUT_CAP_BYTES


def test_head_tail_and_head_tail_parts(tmp_path: Path) -> None:
    path = _file(tmp_path, "0123456789")
    assert captured(path, {"stdout": {"atEnd": {"part": {"head": 3}}}}, "stdout") == "012"
    assert captured(path, {"stdout": {"atEnd": {"part": {"tail": 3}}}}, "stdout") == "789"
    assert captured(path, {"stdout": {"atEnd": {"part": {"headTail": 4}}}}, "stdout") == "0189"
    assert captured(path, {"stdout": {"atEnd": {"part": {"head": 100}}}}, "stdout") == "0123456789"


def test_a_streamed_only_output_is_left_out_of_the_result(tmp_path: Path) -> None:
    path = _file(tmp_path, "abc")
    assert captured(path, {"stdout": {"stream": {}}}, "stdout") is None
    # The other stream, not mentioned, keeps the default.
    assert captured(path, {"stdout": {"stream": {}}}, "stderr") == "abc"


def test_a_malformed_part_falls_back_to_the_default(tmp_path: Path) -> None:
    path = _file(tmp_path, "abc")
    assert captured(path, {"stdout": {"atEnd": {"part": {"middle": 1}}}}, "stdout") == "abc"
    assert captured(path, {"stdout": {"atEnd": {"part": {"head": -1}}}}, "stdout") == "abc"
