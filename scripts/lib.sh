# shellcheck shell=bash
# Common definitions for the scripts in scripts/. Source it, don't run it:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#     ensure_env            # creates/updates <repo>/.venv when needed
#     "$LOAM" id list --data-dir /tmp/x --json
#
# It defines REPO, VENV, PY, LOAM, the message helpers (say, warn, die), ensure_env
# and small helpers for JSON and processes. It changes no shell options of the
# caller, so it works with and without `set -euo pipefail`.

if [[ -n "${_LOAM_LIB_SOURCED:-}" ]]; then
    return 0
fi
_LOAM_LIB_SOURCED=1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LOAM_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
LOAM="$VENV/bin/loam"
# Written by setup.sh after a successful `pip install -e '.[test]'`; the install is
# redone when a file below is newer than it.
LOAM_STAMP="$VENV/.loam-installed"
LOAM_INSTALL_INPUTS=("$REPO/setup.cfg" "$REPO/pyproject.toml")
export REPO VENV PY LOAM LOAM_STAMP

# --- messages ---------------------------------------------------------------------

# The prefix of every message: the name of the script that is running.
LOAM_SCRIPT_NAME="${LOAM_SCRIPT_NAME:-$(basename "${0:-loam}")}"

say() { printf '%s\n' "$*"; }
info() { printf '%s: %s\n' "$LOAM_SCRIPT_NAME" "$*"; }
warn() { printf '%s: warning: %s\n' "$LOAM_SCRIPT_NAME" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$LOAM_SCRIPT_NAME" "$*" >&2
    exit 1
}

# --- the Python environment -------------------------------------------------------

# True when the venv exists, its interpreter runs and the project install is current.
env_is_current() {
    [[ -x "$PY" && -x "$LOAM" && -f "$LOAM_STAMP" ]] || return 1
    local f
    for f in "${LOAM_INSTALL_INPUTS[@]}"; do
        if [[ -f "$f" && "$f" -nt "$LOAM_STAMP" ]]; then
            return 1
        fi
    done
    "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

# Make sure <repo>/.venv exists with the project installed; runs scripts/setup.sh
# only when something is missing or stale, so it is cheap to call every time.
ensure_env() {
    if env_is_current; then
        return 0
    fi
    bash "$REPO/scripts/setup.sh" || die "setting up the Python environment failed (see above)"
}

# --- small helpers ----------------------------------------------------------------

# Current time in milliseconds since the epoch.
now_ms() {
    local t
    t="$(date +%s%3N)"
    if [[ "$t" == *N ]]; then # a date without %N
        t="$(($(date +%s) * 1000))"
    fi
    printf '%s\n' "$t"
}

# json_eval EXPR [FILE]: parse JSON from FILE (or stdin) into `d` and print the value
# of the Python expression EXPR (strings bare, other values as JSON; None prints
# nothing). Exit status 1 when the input is not JSON or EXPR fails.
#     json_eval 'd["node_id"]' "$dir/node.json"
#     loam net status --data-dir D --json | json_eval 'len(d["neighbours"])'
json_eval() {
    local expr="$1" file="${2:--}"
    "$PY" - "$expr" "$file" 3<&0 <<'PYEOF'
import json, os, sys
expr, path = sys.argv[1], sys.argv[2]
try:
    if path == "-":
        with os.fdopen(3) as fh:
            d = json.load(fh)
    else:
        with open(path) as fh:
            d = json.load(fh)
    v = eval(expr, {"json": json}, {"d": d})
except Exception as exc:  # noqa: BLE001 - reported to the caller by the exit status
    print(f"json_eval: {exc!r}", file=sys.stderr)
    sys.exit(1)
if v is None:
    pass
elif isinstance(v, str):
    print(v)
else:
    print(json.dumps(v))
PYEOF
}

# True when PID names a running process (zombies count as gone).
pid_alive() {
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z* ]]
}

# The first line of FILE if it is a process id, else nothing.
read_pid_file() {
    local file="$1" pid=""
    if [[ -f "$file" ]]; then
        read -r pid <"$file" || true
    fi
    if [[ "$pid" =~ ^[0-9]+$ ]]; then
        printf '%s\n' "$pid"
    fi
}

# True when $1 is a whole number (digits only).
is_uint() { [[ "${1:-}" =~ ^[0-9]+$ ]]; }

# True when $1 is a TCP port number (1..65535).
is_port() { is_uint "${1:-}" && ((10#$1 > 0 && 10#$1 < 65536)); }

# A node id shortened for tables: 0x1234…abcd.
short_id() {
    local id="$1"
    if ((${#id} > 12)); then
        printf '%s…%s\n' "${id:0:6}" "${id: -4}"
    else
        printf '%s\n' "$id"
    fi
}
