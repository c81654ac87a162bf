#!/usr/bin/env bash
# Installs what Loam needs on this machine: Python >= 3.11 with venv support, the
# virtual environment <repo>/.venv and the project in it (`pip install -e '.[test]'`),
# clang for wasm32-wasi (the WASI test programs in tests/wasm), and a running Docker
# engine with squashfs-tools and a static busybox (the vm exe-unit and its test images).
#
#     scripts/setup.sh              # everything (today: python, venv, project, wasi, docker, anvil)
#     scripts/setup.sh wasi         # one component
#     scripts/setup.sh --help
#     source scripts/setup.sh       # the same, inside the current shell
#
# Idempotent and fast on re-runs: the project is reinstalled only when setup.cfg or
# pyproject.toml is newer than the stamp file in .venv. One line on success; on
# failure it says what failed and prints the installer's output.
#
# Each component is one function `setup_<name>`; add new ones (docker, anvil)
# beside the existing ones and list them in SETUP_COMPONENTS.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What `scripts/setup.sh` with no arguments installs, in order.
SETUP_COMPONENTS=(python venv project wasi docker anvil)

# Debian packages of the WASI toolchain: clang and its linker, the C library and the
# compiler runtime for wasm32-wasi. `clang --target=wasm32-wasi` finds them by itself.
WASI_APT_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

# Debian packages of the vm exe-unit: the Docker engine, squashfs-tools to pack and unpack
# GVMI images, a static busybox, the only program in the test images (tests/images), and a
# C compiler with the static C library for the VPN relay (exeunits/vm/relay).
DOCKER_APT_PACKAGES=(docker.io squashfs-tools busybox-static gcc libc6-dev)

_SETUP_APT_UPDATED="${_SETUP_APT_UPDATED:-}"
_SETUP_PYTHON=""

setup_usage() {
    cat <<EOF
usage: scripts/setup.sh [COMPONENT...]

Installs what Loam needs and creates the virtual environment <repo>/.venv.
Components (default: all, in this order): ${SETUP_COMPONENTS[*]}
  python    a python3 >= 3.11 with venv support (from apt when missing)
  venv      the virtual environment $VENV
  project   pip install -e '.[test]' into it (skipped when up to date)
  wasi      clang for wasm32-wasi, to build tests/wasm (from apt when missing:
            ${WASI_APT_PACKAGES[*]})
  docker    a running Docker engine, squashfs-tools and a static busybox, for the vm
            exe-unit (from apt when missing: ${DOCKER_APT_PACKAGES[*]}); dockerd is
            started in the background when no engine answers (scripts/dockerd.sh)
  anvil     Node.js and npm (from apt when missing: nodejs npm), then the repo's npm
            packages (npm ci): solc for contracts/compile.mjs and the anvil local chain

Environment:
  LOAM_PYTHON   the interpreter to build the venv from (default: first python3 >= 3.11 on PATH)
  LOAM_VENV     where the venv lives (default: <repo>/.venv)
EOF
}

# --- helpers ----------------------------------------------------------------------

_setup_fail() {
    printf 'setup: FAILED: %s\n' "$*" >&2
    return 1
}

# Runs "$@" as root (directly, or through sudo without a password prompt).
_setup_as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        _setup_fail "need root to run: $*"
    fi
}

# apt_install PKG...: installs the Debian packages that are not installed yet;
# runs `apt-get update` once per setup run. Prints apt's output only on failure.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || _setup_fail "apt-get not found; install these packages by hand: $*" || return 1
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/loam-apt.XXXXXX")"
    if [[ -z "$_SETUP_APT_UPDATED" ]]; then
        if ! _setup_as_root env DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            _setup_fail "apt-get update" || return 1
        fi
        _SETUP_APT_UPDATED=1
    fi
    printf 'setup: apt-get install %s\n' "${missing[*]}"
    if ! _setup_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        _setup_fail "apt-get install ${missing[*]}" || return 1
    fi
    rm -f "$log"
}

# Prints the path of the first interpreter that is Python >= 3.11.
_setup_find_python() {
    local cand
    for cand in ${LOAM_PYTHON:+"$LOAM_PYTHON"} python3 python3.11 python3.12 python3.13 /usr/bin/python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

# True when PYTHON can build a venv with pip in it (Debian's python3 needs python3-venv).
_setup_python_has_venv() {
    "$1" -c 'import venv, ensurepip' >/dev/null 2>&1
}

# True when the venv's interpreter runs and has pip.
_setup_venv_works() {
    [[ -x "$PY" ]] && "$PY" -c 'import sys, pip; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# --- components -------------------------------------------------------------------

setup_python() {
    local py
    # A working venv needs no system interpreter (and no apt run) at all.
    if [[ -z "$_SETUP_PYTHON" ]] && _setup_venv_works; then
        return 0
    fi
    if ! py="$(_setup_find_python)"; then
        if [[ -n "${LOAM_PYTHON:-}" ]]; then
            _setup_fail "LOAM_PYTHON=$LOAM_PYTHON is not a Python >= 3.11" || return 1
        fi
        apt_install python3 python3-venv python3-dev || return 1
        py="$(_setup_find_python)" || _setup_fail "no python3 >= 3.11 found, even after installing Debian's python3" || return 1
    fi
    if ! _setup_python_has_venv "$py"; then
        # Debian splits venv/ensurepip (and the C headers) out of python3.
        apt_install python3-venv python3-dev || return 1
        _setup_python_has_venv "$py" || _setup_fail "$py cannot create virtual environments (module venv/ensurepip missing)" || return 1
    fi
    _SETUP_PYTHON="$py"
}

setup_venv() {
    # A venv whose interpreter no longer runs (its base Python was removed, or the
    # directory came from another machine) is rebuilt from scratch.
    if [[ -d "$VENV" ]] && ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; then
        printf 'setup: %s is broken or too old; recreating it\n' "$VENV"
        rm -rf "$VENV"
    fi
    if _setup_venv_works; then
        return 0
    fi
    [[ -n "$_SETUP_PYTHON" ]] || setup_python || return 1
    rm -rf "$VENV"
    local out
    if ! out="$("$_SETUP_PYTHON" -m venv "$VENV" 2>&1)"; then
        printf '%s\n' "$out" >&2
        rm -rf "$VENV"
        _setup_fail "$_SETUP_PYTHON -m venv $VENV" || return 1
    fi
    rm -f "$LOAM_STAMP"
}

setup_project() {
    if env_is_current; then
        return 0
    fi
    [[ -x "$PY" ]] || setup_venv || return 1
    local log="$VENV/setup.log"
    {
        printf '== %s: pip install -e .[test] in %s\n' "$(date '+%F %T')" "$REPO"
    } >"$log"
    if ! (cd "$REPO" && "$PY" -m pip install --disable-pip-version-check --no-input -e '.[test]') >>"$log" 2>&1; then
        printf '%s\n' '---- pip output (tail) ----' >&2
        tail -n 80 "$log" >&2
        printf '%s\n' '---------------------------' >&2
        _setup_fail "pip install -e '.[test]' (full log: $log)" || return 1
    fi
    [[ -x "$LOAM" ]] || _setup_fail "the install did not create $LOAM (is the console script declared in setup.cfg?)" || return 1
    touch "$LOAM_STAMP"
}

# True when clang can compile and link a C program for wasm32-wasi.
_setup_wasi_works() {
    command -v clang >/dev/null 2>&1 || return 1
    local dir rc=0
    dir="$(mktemp -d "${TMPDIR:-/tmp}/loam-wasi.XXXXXX")"
    printf '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n' >"$dir/t.c"
    clang --target=wasm32-wasi -O2 -o "$dir/t.wasm" "$dir/t.c" >/dev/null 2>&1 || rc=1
    rm -rf "$dir"
    return "$rc"
}

setup_wasi() {
    local pkg all_installed=1
    for pkg in "${WASI_APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            all_installed=0
            break
        fi
    done
    # Installed packages need no test compile (fast re-runs); elsewhere a toolchain of
    # one's own is fine as long as it works.
    if ((all_installed)) || _setup_wasi_works; then
        return 0
    fi
    # apt_install skips what is installed already and runs `apt-get update` only once.
    if apt_install "${WASI_APT_PACKAGES[@]}" && _setup_wasi_works; then
        return 0
    fi
    # Without it only the wasm tests are skipped, so a machine without root still gets
    # a working venv; under CI, where those tests must run, it is a failure.
    if [[ "${CI:-}" == "true" ]]; then
        _setup_fail "clang cannot build for wasm32-wasi (Debian: ${WASI_APT_PACKAGES[*]})" || return 1
    fi
    printf 'setup: warning: no clang for wasm32-wasi (Debian: apt-get install %s); the wasm tests will be skipped\n' \
        "${WASI_APT_PACKAGES[*]}" >&2
}

# True when /bin/busybox is a statically linked busybox (Debian's busybox-static).
_setup_static_busybox() {
    [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1
}

setup_docker() {
    # Only what is missing is installed: an engine of one's own (say Docker's docker-ce)
    # is used as it is, never replaced by Debian's.
    local need=() problem=""
    if ! command -v mksquashfs >/dev/null 2>&1 || ! command -v unsquashfs >/dev/null 2>&1; then
        need+=(squashfs-tools)
    fi
    _setup_static_busybox || need+=(busybox-static)
    if ! command -v docker >/dev/null 2>&1 || { ! command -v dockerd >/dev/null 2>&1 && ! bash "$REPO/scripts/dockerd.sh" status; }; then
        need+=(docker.io)
    fi
    if ((${#need[@]})); then
        apt_install "${need[@]}" || problem="apt-get install ${need[*]} failed"
    fi
    if [[ -z "$problem" ]]; then
        bash "$REPO/scripts/dockerd.sh" start || problem="the Docker engine does not start (scripts/dockerd.sh start)"
    fi
    [[ -n "$problem" ]] || return 0
    # Without it only the vm tests are skipped, so a machine without root still gets a
    # working venv; under CI, where those tests must run, it is a failure.
    if [[ "${CI:-}" == "true" ]]; then
        _setup_fail "$problem" || return 1
    fi
    printf 'setup: warning: %s; the vm exe-unit tests will be skipped\n' "$problem" >&2
}

# The anvil binary that the npm package @foundry-rs/anvil-linux-amd64 ships (package.json).
ANVIL_BIN="$REPO/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"

setup_anvil() {
    # Installed and runnable: nothing to do (fast re-runs).
    if [[ -x "$ANVIL_BIN" ]] && "$ANVIL_BIN" --version >/dev/null 2>&1; then
        return 0
    fi
    local problem=""
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm || problem="apt-get install nodejs npm failed"
    fi
    if [[ -z "$problem" ]]; then
        local log
        log="$(mktemp "${TMPDIR:-/tmp}/loam-npm.XXXXXX")"
        printf 'setup: npm ci (solc, anvil)\n'
        if ! (cd "$REPO" && npm ci --no-audit --no-fund) >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            problem="npm ci in $REPO failed"
        elif ! "$ANVIL_BIN" --version >/dev/null 2>&1; then
            problem="npm ci did not install a runnable anvil ($ANVIL_BIN)"
        fi
        rm -f "$log"
    fi
    [[ -n "$problem" ]] || return 0
    # Without it only the anvil tests are skipped; under CI, where they must run, it is a failure.
    if [[ "${CI:-}" == "true" ]]; then
        _setup_fail "$problem" || return 1
    fi
    printf 'setup: warning: %s; the anvil tests will be skipped\n' "$problem" >&2
}

# --- main -------------------------------------------------------------------------

setup_main() {
    local components=() c
    for c in "$@"; do
        case "$c" in
        -h | --help)
            setup_usage
            return 0
            ;;
        -*)
            setup_usage >&2
            return 2
            ;;
        *)
            declare -F "setup_$c" >/dev/null || {
                printf 'setup: unknown component: %s\n' "$c" >&2
                setup_usage >&2
                return 2
            }
            components+=("$c")
            ;;
        esac
    done
    ((${#components[@]})) || components=("${SETUP_COMPONENTS[@]}")

    # Two scripts setting up at once (say test.sh and testnet.sh) must not both pip install.
    local lock_fd="" lock_file
    lock_file="${TMPDIR:-/tmp}/loam-setup.$(id -u).$(printf '%s' "$VENV" | cksum | cut -d' ' -f1).lock"
    if command -v flock >/dev/null 2>&1 && exec {lock_fd}>"$lock_file"; then
        flock "$lock_fd"
    fi

    local rc=0 started
    started="$(now_ms)"
    for c in "${components[@]}"; do
        "setup_$c" || {
            rc=1
            break
        }
    done
    if [[ -n "$lock_fd" ]]; then
        exec {lock_fd}>&-
    fi
    ((rc == 0)) || return 1

    local version installed=""
    version="$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo '?')"
    if env_is_current; then
        installed=", loam installed"
    fi
    printf 'setup: ok: %s (Python %s%s) in %d ms\n' "$VENV" "$version" "$installed" "$(($(now_ms) - started))"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    setup_main "$@"
else
    # Sourced: "$@" would be the caller's own arguments, so install everything.
    setup_main
fi
