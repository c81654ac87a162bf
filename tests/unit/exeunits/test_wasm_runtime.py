"""The wasmtime runner on real WASI programs built from tests/wasm/*.c: I/O, exit codes, traps, limits, usage."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import wasmtime

from exeunits.wasm import (
    Limits,
    RunOutcome,
    StopReason,
    WasmRunner,
    calibrate_fuel_per_cpu_s,
    extract,
    make_package,
    prepare_mounts,
)
from protocol.errors import ExeUnitError, WasmModuleError
from tests.unit.exeunits.conftest import RunProgram

__all__: list[str] = []

MIB = 1024 * 1024
TEXT = "the quick brown fox\njumps over\n\nthe lazy dog\n"  # 4 lines, 9 words, 45 bytes


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A work directory with input/data.txt and an empty output/."""
    (tmp_path / "work" / "input").mkdir(parents=True)
    (tmp_path / "work" / "output").mkdir()
    (tmp_path / "work" / "input" / "data.txt").write_text(TEXT)
    return tmp_path / "work"


# --- I/O, arguments, exit codes ------------------------------------------------------


@pytest.mark.parametrize("out_mode", ["rw", "wo"])
def test_wc_reads_ro_mount_and_writes_counts_to_output_mount(
    run_program: RunProgram, work: Path, out_mode: str
) -> None:
    mounts = {"/input": (work / "input", "ro"), "/output": (work / "output", out_mode)}
    outcome, stdout, stderr = run_program("wc", "/input/data.txt", "/output/counts.txt", mounts=mounts)
    assert outcome.ok, outcome
    assert stdout == "4 9 45\n"
    assert stderr == ""
    assert (work / "output" / "counts.txt").read_text() == "4 9 45\n"


def test_wc_sees_only_what_is_mounted(run_program: RunProgram, work: Path) -> None:
    mounts = {"/input": (work / "input", "ro")}
    for path in ("/etc/passwd", "/input/../../etc/passwd", "/output/x"):
        outcome, _, stderr = run_program("wc", path, mounts=mounts)
        assert outcome.reason is StopReason.EXITED and outcome.exit_code == 3, (path, outcome)
        assert "cannot open" in stderr


def test_args_and_env_reach_the_module(run_program: RunProgram) -> None:
    outcome, stdout, stderr = run_program("hello", "one", "two words", "", env={"GREETING": "hi there"})
    assert outcome.ok
    assert stdout.splitlines() == [
        "argc=4",
        "argv[0]=hello",
        "argv[1]=one",
        "argv[2]=two words",
        "argv[3]=",
        "GREETING=hi there",
    ]
    assert stderr == "hello: done\n"


def test_the_host_environment_does_not_leak_into_the_module(run_program: RunProgram) -> None:
    os.environ["LOAM_TEST_SECRET"] = "x"
    try:
        outcome, stdout, _ = run_program("hello", env={"HELLO_VAR": "LOAM_TEST_SECRET"})
    finally:
        del os.environ["LOAM_TEST_SECRET"]
    assert outcome.ok
    assert stdout.splitlines()[-1] == "LOAM_TEST_SECRET unset"


@pytest.mark.parametrize("code", [0, 1, 42, 125])
def test_exit_code_of_proc_exit_is_reported(run_program: RunProgram, code: int) -> None:
    outcome, stdout, _ = run_program("exitcode", str(code))
    assert outcome.reason is StopReason.EXITED
    assert outcome.exit_code == code
    assert outcome.error is None
    assert outcome.ok is (code == 0)
    assert stdout == f"exiting with {code}\n"


def test_exit_code_over_125_is_refused_by_wasmtime(run_program: RunProgram) -> None:
    outcome, _, _ = run_program("exitcode", "255")
    assert outcome.reason is StopReason.TRAPPED
    assert outcome.exit_code is None
    assert outcome.error is not None and "exit status" in outcome.error and "[0..126)" in outcome.error


def test_read_only_mount_cannot_be_written(run_program: RunProgram, work: Path) -> None:
    mounts = {"/input": (work / "input", "ro")}
    outcome, stdout, stderr = run_program("wc", "/input/data.txt", "/input/counts.txt", mounts=mounts)
    assert outcome.exit_code == 4  # wc: cannot create the output file
    assert stdout == "4 9 45\n"
    assert "cannot create /input/counts.txt" in stderr
    assert sorted(p.name for p in (work / "input").iterdir()) == ["data.txt"]
    # Overwriting an existing file is refused too.
    outcome, _, _ = run_program("wc", "/input/data.txt", "/input/data.txt", mounts=mounts)
    assert outcome.exit_code == 4
    assert (work / "input" / "data.txt").read_text() == TEXT


def test_write_only_mount_is_readable_as_wasmtime_py_cannot_express_it(run_program: RunProgram, work: Path) -> None:
    # Documented limitation: "wo" is pre-opened read-write (see exeunits.wasm.runtime).
    (work / "output" / "old.txt").write_text("a b\n")
    outcome, stdout, _ = run_program("wc", "/output/old.txt", mounts={"/output": (work / "output", "wo")})
    assert outcome.ok
    assert stdout == "1 2 4\n"


# --- traps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "trap_code", "words"),
    [
        ("unreachable", "UNREACHABLE", "unreachable"),
        ("div0", "INTEGER_DIVISION_BY_ZERO", "integer divide by zero"),
        ("oob", "MEMORY_OUT_OF_BOUNDS", "out of bounds memory access"),
    ],
)
def test_trap_is_an_error_result_naming_the_trap(
    run_program: RunProgram, kind: str, trap_code: str, words: str
) -> None:
    outcome, stdout, _ = run_program("trap", kind)
    assert outcome.reason is StopReason.TRAPPED
    assert outcome.exit_code is None
    assert outcome.trap_code == trap_code
    assert outcome.error is not None
    assert outcome.error.startswith(f"wasm trap {trap_code}: ")
    assert words in outcome.error
    assert "\n" not in outcome.error  # one line; the backtrace is in detail
    assert outcome.detail is not None and "backtrace" in outcome.detail
    assert stdout == f"trap: {kind}\n"  # output written before the trap is kept


def test_runner_keeps_working_after_a_trap(run_program: RunProgram) -> None:
    run_program("trap", "div0")
    outcome, stdout, _ = run_program("hello")
    assert outcome.ok
    assert stdout.startswith("argc=1\n")


# --- limits ----------------------------------------------------------------------------


def test_spin_over_the_cpu_limit_is_stopped(run_program: RunProgram) -> None:
    outcome, stdout, _ = run_program("spin", "100000000000", limits=Limits(cpu_s=0.1))
    assert outcome.reason is StopReason.CPU_LIMIT
    assert outcome.trap_code in {"OUT_OF_FUEL", "INTERRUPT"}  # whichever budget ran out first here
    assert outcome.error is not None and outcome.error.startswith("cpu limit of 0.1 s exceeded")
    assert stdout == ""
    assert outcome.cpu_s < 1.0


def test_spin_over_the_cpu_limit_is_stopped_by_fuel(run_program: RunProgram, tmp_path: Path) -> None:
    # So little fuel per cpu-second that fuel runs out long before the cpu clock.
    frugal = WasmRunner(tmp_path / "cache", fuel_per_cpu_s=10**8)
    outcome, _, _ = run_program("spin", "100000000000", limits=Limits(cpu_s=0.1), use=frugal)
    assert outcome.reason is StopReason.CPU_LIMIT
    assert outcome.trap_code == "OUT_OF_FUEL"
    assert outcome.error == "cpu limit of 0.1 s exceeded: the module used up its fuel (10000000 wasm instructions)"
    assert outcome.fuel_consumed == 10_000_000
    assert outcome.cpu_s < 0.1


def test_spin_over_the_cpu_limit_is_stopped_by_the_cpu_clock(run_program: RunProgram, tmp_path: Path) -> None:
    # So much fuel per cpu-second that only the watchdog's cpu clock can stop it.
    generous = WasmRunner(tmp_path / "cache", fuel_per_cpu_s=10**15)
    outcome, _, _ = run_program("spin", "100000000000", limits=Limits(cpu_s=0.1), use=generous)
    assert outcome.reason is StopReason.CPU_LIMIT
    assert outcome.trap_code == "INTERRUPT"
    assert outcome.error is not None and outcome.error.startswith("cpu limit of 0.1 s exceeded (0.")
    assert 0.1 <= outcome.cpu_s < 1.0


def test_spin_within_its_limits_finishes(run_program: RunProgram) -> None:
    outcome, stdout, _ = run_program("spin", "1000000", limits=Limits(cpu_s=5, wall_s=10, memory_bytes=16 * MIB))
    assert outcome.ok, outcome
    assert stdout.startswith("rounds=1000000 checksum=")
    assert outcome.fuel_consumed > 1_000_000 * 10  # about 23 instructions a round


def test_forever_is_stopped_by_the_wall_clock_limit(run_program: RunProgram) -> None:
    outcome, stdout, _ = run_program("forever", limits=Limits(wall_s=0.2))
    assert outcome.reason is StopReason.WALL_LIMIT
    assert outcome.error == "wall-clock limit of 0.2 s exceeded"
    assert outcome.trap_code == "INTERRUPT"
    assert 0.2 <= outcome.wall_s < 1.5
    assert outcome.cpu_s > 0.1  # it was spinning
    assert stdout == "forever: spinning\n"


def test_forever_sleeping_in_host_calls_is_stopped_between_two_calls(run_program: RunProgram) -> None:
    # Sleeping costs no cpu, so the cpu limit never triggers; the wall-clock limit does,
    # once the current 50 ms sleep returns to wasm code.
    outcome, _, _ = run_program("forever", "sleep", limits=Limits(cpu_s=0.05, wall_s=0.2))
    assert outcome.reason is StopReason.WALL_LIMIT
    assert 0.2 <= outcome.wall_s < 1.5
    assert outcome.cpu_s < 0.05


def test_stopping_one_run_does_not_disturb_another_in_parallel(
    runner: WasmRunner, wasm_build: Path, tmp_path: Path
) -> None:
    # Each run has its own engine, so one run's epoch interruption cannot hit another.
    results: dict[str, RunOutcome] = {}

    def run(name: str, args: list[str], limits: Limits) -> None:
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        results[name] = runner.run(wasm_build / f"{name}.wasm", [name, *args], {}, {}, out, err, limits)

    threads = [
        threading.Thread(target=run, args=("forever", [], Limits(wall_s=0.1))),
        threading.Thread(target=run, args=("spin", ["150000000"], Limits(wall_s=20))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results["forever"].reason is StopReason.WALL_LIMIT
    assert results["spin"].ok, results["spin"]
    assert results["spin"].wall_s > 0.1  # it was still running when the other one was stopped


def test_hog_over_the_memory_limit_sees_malloc_fail(run_program: RunProgram) -> None:
    outcome, stdout, _ = run_program("hog", "1000", limits=Limits(memory_bytes=24 * MIB))
    assert outcome.reason is StopReason.EXITED
    assert outcome.exit_code == 1
    assert "(malloc failed)" in stdout
    assert outcome.peak_memory_bytes <= 24 * MIB
    got = int(stdout.splitlines()[-1].split("=")[1].split()[0])
    assert 16 <= got < 24


def test_hog_that_aborts_at_the_memory_limit_gets_a_hint(run_program: RunProgram) -> None:
    outcome, stdout, _ = run_program("hog", "1000", "abort", limits=Limits(memory_bytes=24 * MIB))
    assert outcome.reason is StopReason.TRAPPED
    assert outcome.trap_code == "UNREACHABLE"
    assert outcome.error is not None and "a failed allocation may have caused it" in outcome.error
    assert "aborting" in stdout


def test_memory_limit_below_the_initial_memory_fails_cleanly(run_program: RunProgram) -> None:
    outcome, _, _ = run_program("hog", "1", limits=Limits(memory_bytes=64 * 1024))
    assert outcome.reason is StopReason.MEMORY_LIMIT
    assert outcome.error is not None and "memory limit of 65536 bytes" in outcome.error
    assert outcome.exit_code is None
    assert outcome.peak_memory_bytes == 0


def test_peak_memory_of_hog_is_what_it_allocated(run_program: RunProgram) -> None:
    outcome, _, _ = run_program("hog", "40")
    assert outcome.ok
    assert 40 * MIB <= outcome.peak_memory_bytes < 42 * MIB


def test_usage_is_measured(run_program: RunProgram) -> None:
    outcome, _, _ = run_program("spin", "20000000")
    assert outcome.ok
    assert 0.005 < outcome.cpu_s <= outcome.wall_s + 0.01
    assert outcome.peak_memory_bytes == 2 * 65536  # the C runtime's initial two pages
    assert outcome.fuel_consumed > 20_000_000


@pytest.mark.parametrize(
    "limits",
    [{"cpu_s": 0}, {"cpu_s": -1.0}, {"wall_s": float("inf")}, {"memory_bytes": 1.5}, {"memory_bytes": True}],
)
def test_bad_limits_are_refused(limits: dict[str, object]) -> None:
    with pytest.raises(ExeUnitError, match="limit"):
        Limits(**limits)  # type: ignore[arg-type]


# --- bad modules and bad calls ---------------------------------------------------------


def _wat(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(text)))
    return path


def test_bad_modules_raise_wasm_module_error(runner: WasmRunner, tmp_path: Path) -> None:
    not_wasm = tmp_path / "junk.wasm"
    not_wasm.write_bytes(b"\0asm\x01\0\0\0garbage")
    library = _wat(tmp_path, "lib", '(module (func (export "add") (param i32 i32) (result i32) local.get 0))')
    foreign = _wat(tmp_path, "foreign", '(module (import "env" "hack" (func)) (func (export "_start")))')
    cases = [
        (not_wasm, "junk.wasm is not a valid WebAssembly module"),
        (library, "lib.wasm has no _start function"),
        (foreign, "foreign.wasm imports what this runtime does not provide: env.hack"),
        (tmp_path / "missing.wasm", "cannot read module"),
    ]
    for path, message in cases:
        with pytest.raises(WasmModuleError, match=message):
            runner.run(path, ["x"], {}, {}, tmp_path / "o", tmp_path / "e")
        with pytest.raises(WasmModuleError):
            runner.prepare(path)


def test_bad_calls_raise_exe_unit_error(runner: WasmRunner, wasm_build: Path, tmp_path: Path) -> None:
    hello = wasm_build / "hello.wasm"
    out, err = tmp_path / "o", tmp_path / "e"
    with pytest.raises(ExeUnitError, match="argv"):
        runner.run(hello, [], {}, {}, out, err)
    with pytest.raises(ExeUnitError, match="environment variable name"):
        runner.run(hello, ["hello"], {"A=B": "c"}, {}, out, err)
    with pytest.raises(ExeUnitError, match="does not exist"):
        runner.run(hello, ["hello"], {}, {"/in": (tmp_path / "nowhere", "ro")}, out, err)
    with pytest.raises(ExeUnitError, match="unknown mode"):
        runner.run(hello, ["hello"], {}, {"/in": (tmp_path, "rx")}, out, err)  # type: ignore[dict-item]
    with pytest.raises(ExeUnitError, match="stdout"):
        runner.run(hello, ["hello"], {}, {}, tmp_path / "no" / "such" / "dir", err)


# --- from a package, as the exe-unit will do it -----------------------------------------


def test_package_entry_point_runs_with_its_mount_points(runner: WasmRunner, wasm_build: Path, tmp_path: Path) -> None:
    pkg = make_package(
        tmp_path / "wc.zip",
        {"wc": wasm_build / "wc.wasm", "hello": wasm_build / "hello.wasm"},
        [("ro", "input"), ("wo", "output")],
    )
    work = tmp_path / "activity"
    mounts = prepare_mounts(pkg, work)
    assert mounts == {"/input": (work / "input", "ro"), "/output": (work / "output", "wo")}
    (work / "input" / "data.txt").write_text(TEXT)
    image = extract(pkg, tmp_path / "image")
    entry = pkg.entry_point("wc")
    outcome = runner.run(
        image / entry.wasm_path,
        [entry.id, "/input/data.txt", "/output/counts.txt"],
        {},
        mounts,
        tmp_path / "stdout",
        tmp_path / "stderr",
        Limits(cpu_s=5, memory_bytes=64 * MIB, wall_s=10),
    )
    assert outcome.ok, outcome
    assert (work / "output" / "counts.txt").read_text() == "4 9 45\n"
    assert (tmp_path / "stdout").read_text() == "4 9 45\n"


def test_calibration_measures_a_plausible_fuel_rate() -> None:
    rate = calibrate_fuel_per_cpu_s(target_cpu_s=0.05)
    # Anything from an old laptop to a fast server; the point is the order of magnitude.
    assert 1e8 < rate < 1e12
