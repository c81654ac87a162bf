#!/usr/bin/env bash
# Starts, stops and inspects one Loam node running in the background.
#
#     scripts/launch-peer.sh start --port 7500 --data-dir ~/.loam-a
#     scripts/launch-peer.sh start --port 7501 --data-dir /tmp/b --bootstrap loam://KEY@127.0.0.1:7500
#     scripts/launch-peer.sh status --data-dir /tmp/b
#     scripts/launch-peer.sh stop --data-dir /tmp/b
#
# The node's pid goes to DATA_DIR/loam.pid and its output to DATA_DIR/loam.log.
set -euo pipefail

LOAM_SCRIPT_NAME="launch-peer"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT_S="${LOAM_START_TIMEOUT_S:-20}"
STOP_TIMEOUT_S="${LOAM_STOP_TIMEOUT_S:-10}"

usage() {
    cat <<'EOF'
usage: scripts/launch-peer.sh COMMAND [OPTIONS]

Commands:
  start   start a node in the background
  stop    stop a node started by `start`
  status  show a node's network status (`loam net status`)

start --data-dir D (--port P | --no-listen) [OPTIONS] [-- EXTRA_NODE_RUN_ARGS...]
  --data-dir D       the node's data directory (created if missing); an identity
                     without a password is created in it when it has none
  --port P           TCP port to listen on
  --host H           address to listen on (default 127.0.0.1)
  --no-listen        accept no connections, only dial out (`--listen none`)
  --bootstrap ADDR   a peer's contact address loam://KEY@HOST:PORT (repeatable)
  --advertise ADDR   the address other machines reach this node at (tcp://HOST:PORT)
  --subnet S         join subnet S
  --name N           the node's display name
  --api-port P       port of the node's local REST API
  --log-json         log JSON lines instead of text
  --quiet            print one line when started, not a block
  Waits up to 20 s (LOAM_START_TIMEOUT_S) for DATA_DIR/node.json, then prints the
  node id and its contact address. On failure prints the end of the log and exits 1.

stop --data-dir D
  SIGTERM, then SIGKILL after 10 s (LOAM_STOP_TIMEOUT_S); removes DATA_DIR/loam.pid.

status --data-dir D [--json]
  Runs `loam net status --data-dir D`; exits 2 when no node runs there.

Files in the data directory: loam.pid, loam.log (the previous run's is kept as
loam.log.1), node.json (written by the node once it is ready).
EOF
}

# --- option parsing ---------------------------------------------------------------

DATA_DIR=""
PORT=""
HOST="127.0.0.1"
NO_LISTEN=""
NAME=""
SUBNET=""
ADVERTISE=""
LOG_JSON=""
API_PORT=""
QUIET=""
JSON=""
BOOTSTRAPS=()
EXTRA=()

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
}

parse_options() {
    while (($#)); do
        case "$1" in
        --data-dir)
            need_value "$@"
            DATA_DIR="$2"
            shift 2
            ;;
        --port)
            need_value "$@"
            PORT="$2"
            shift 2
            ;;
        --host)
            need_value "$@"
            HOST="$2"
            shift 2
            ;;
        --bootstrap)
            need_value "$@"
            BOOTSTRAPS+=("$2")
            shift 2
            ;;
        --subnet)
            need_value "$@"
            SUBNET="$2"
            shift 2
            ;;
        --name)
            need_value "$@"
            NAME="$2"
            shift 2
            ;;
        --advertise)
            need_value "$@"
            ADVERTISE="$2"
            shift 2
            ;;
        --api-port)
            need_value "$@"
            API_PORT="$2"
            shift 2
            ;;
        --no-listen)
            NO_LISTEN=1
            shift
            ;;
        --log-json)
            LOG_JSON=1
            shift
            ;;
        --json)
            JSON=1
            shift
            ;;
        -q | --quiet)
            QUIET=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            EXTRA=("$@")
            break
            ;;
        *)
            printf 'launch-peer: unknown option: %s\n\n' "$1" >&2
            usage >&2
            exit 2
            ;;
        esac
    done
    [[ -n "$DATA_DIR" ]] || die "--data-dir is required (see --help)"
    # Absolute, so that the pid file and node.json mean the same from anywhere.
    if [[ -d "$DATA_DIR" ]]; then
        DATA_DIR="$(cd "$DATA_DIR" && pwd)"
    elif [[ "$DATA_DIR" != /* ]]; then
        DATA_DIR="$PWD/$DATA_DIR"
    fi
    PID_FILE="$DATA_DIR/loam.pid"
    LOG_FILE="$DATA_DIR/loam.log"
    NODE_JSON="$DATA_DIR/node.json"
}

label() {
    if [[ -n "$NAME" ]]; then
        printf '%s' "$NAME"
    else
        printf '%s' "$DATA_DIR"
    fi
}

# True when PID is alive and is a loam process (not an unrelated process that got
# a recycled pid).
is_our_node() {
    local pid="$1"
    pid_alive "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'loam'
}

# The pid of the node running from DATA_DIR, or nothing.
running_pid() {
    local pid
    pid="$(read_pid_file "$PID_FILE")"
    if [[ -n "$pid" ]] && is_our_node "$pid"; then
        printf '%s\n' "$pid"
    fi
}

print_log_tail() {
    local lines=40
    if [[ -s "$LOG_FILE" ]]; then
        printf -- '---- last %s lines of %s ----\n' "$lines" "$LOG_FILE" >&2
        tail -n "$lines" "$LOG_FILE" >&2
        printf -- '----\n' >&2
    else
        printf 'launch-peer: (%s is empty)\n' "$LOG_FILE" >&2
    fi
}

# print_node_info HOW PID: "LABEL: HOW" and the node id and contact from node.json.
print_node_info() {
    local how="$1" pid="$2" node_id contact
    node_id="$(json_eval 'd.get("node_id")' "$NODE_JSON" 2>/dev/null || true)"
    contact="$(json_eval 'd.get("contact")' "$NODE_JSON" 2>/dev/null || true)"
    if [[ -n "$QUIET" ]]; then
        info "$(label): $how, pid $pid, node id ${node_id:-?}, contact ${contact:-none}"
        return 0
    fi
    info "$(label): $how"
    say "  pid:     $pid"
    say "  node id: ${node_id:-?}"
    say "  contact: ${contact:-(none: dial-out only)}"
    say "  log:     $LOG_FILE"
}

# --- start ------------------------------------------------------------------------

# How many identities DATA_DIR's database holds (0 without one), read with the standard
# library only: a full `loam id list` costs a second of imports on every start.
identity_count() {
    "$PY" - "$DATA_DIR/loam.db" <<'PYEOF'
import sqlite3, sys
from pathlib import Path
db = Path(sys.argv[1])
if not db.exists():
    print(0)
    sys.exit(0)
try:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    print(conn.execute("SELECT count(*) FROM identities").fetchone()[0])
except sqlite3.Error:
    print(0)  # no table yet: `loam id create` makes it
PYEOF
}

ensure_identity() {
    local count out
    count="$(identity_count)" || die "could not read the identities in $DATA_DIR"
    if ((count == 0)); then
        # Its stderr only warns that the key is unencrypted, which is said below anyway.
        local err
        err="$(mktemp "${TMPDIR:-/tmp}/loam-id.XXXXXX")"
        if ! out="$("$LOAM" id create --data-dir "$DATA_DIR" --no-password ${NAME:+--alias "$NAME"} 2>"$err")"; then
            cat "$err" >&2
            rm -f "$err"
            die "\`loam id create --data-dir $DATA_DIR --no-password\` failed"
        fi
        rm -f "$err"
        info "$(label): no identity in $DATA_DIR; created one without a password: $(tail -n 1 <<<"$out")"
    fi
}

cmd_start() {
    parse_options "$@"
    if [[ -z "$NO_LISTEN" ]]; then
        [[ -n "$PORT" ]] || die "start needs --port P (or --no-listen)"
        is_port "$PORT" || die "bad port: $PORT"
    fi
    [[ -z "$API_PORT" ]] || is_port "$API_PORT" || die "bad --api-port: $API_PORT"
    ensure_env
    mkdir -p "$DATA_DIR"
    DATA_DIR="$(cd "$DATA_DIR" && pwd)"
    PID_FILE="$DATA_DIR/loam.pid"
    LOG_FILE="$DATA_DIR/loam.log"
    NODE_JSON="$DATA_DIR/node.json"

    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        print_node_info "already running" "$pid"
        return 0
    fi
    rm -f "$PID_FILE"

    ensure_identity

    local listen="none"
    [[ -n "$NO_LISTEN" ]] || listen="tcp://$HOST:$PORT"
    local args=(node run --data-dir "$DATA_DIR" --listen "$listen")
    local b
    for b in ${BOOTSTRAPS[@]+"${BOOTSTRAPS[@]}"}; do
        args+=(--bootstrap "$b")
    done
    [[ -z "$SUBNET" ]] || args+=(--subnet "$SUBNET")
    [[ -z "$NAME" ]] || args+=(--name "$NAME")
    [[ -z "$ADVERTISE" ]] || args+=(--advertise "$ADVERTISE")
    [[ -z "$API_PORT" ]] || args+=(--api-port "$API_PORT")
    [[ -z "$LOG_JSON" ]] || args+=(--log-json)
    args+=(${EXTRA[@]+"${EXTRA[@]}"})

    if [[ -f "$LOG_FILE" ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
    # A node.json left by a node that was killed would look like a ready node.
    rm -f "$NODE_JSON"
    printf '== %s: loam %s\n' "$(date '+%F %T')" "${args[*]}" >"$LOG_FILE"

    # setsid: own session and process group, so the node outlives this shell and its
    # terminal, and `stop` can kill the whole group. In a non-interactive shell the
    # background job is not a group leader, so setsid execs and $! is the node's pid.
    # LOAM_NETNS: run the node inside that network namespace (the testnet's --hosts mode).
    local netns=()
    [[ -z "${LOAM_NETNS:-}" ]] || netns=(ip netns exec "$LOAM_NETNS")
    nohup setsid ${netns[@]+"${netns[@]}"} "$LOAM" "${args[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"

    local deadline=$((SECONDS + START_TIMEOUT_S)) node_pid=""
    while ((SECONDS < deadline)); do
        if [[ -s "$NODE_JSON" ]]; then
            node_pid="$(json_eval 'd["pid"]' "$NODE_JSON" 2>/dev/null || true)"
            if [[ -n "$node_pid" ]]; then
                break
            fi
        fi
        if ! pid_alive "$pid"; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            rm -f "$PID_FILE"
            printf 'launch-peer: error: %s: the node exited during start-up (exit status %s)\n' "$(label)" "$rc" >&2
            print_log_tail
            exit 1
        fi
        sleep 0.2
    done
    if [[ -z "$node_pid" ]]; then
        printf 'launch-peer: error: %s: no %s after %s s\n' "$(label)" "$NODE_JSON" "$START_TIMEOUT_S" >&2
        print_log_tail
        stop_pid "$pid" >/dev/null 2>&1 || true
        rm -f "$PID_FILE"
        exit 1
    fi
    if [[ "$node_pid" != "$pid" ]]; then
        # Started through a wrapper that forked; the node's own pid is the one to signal.
        pid="$node_pid"
        printf '%s\n' "$pid" >"$PID_FILE"
    fi
    print_node_info "started" "$pid"
}

# --- stop -------------------------------------------------------------------------

# stop_pid PID: SIGTERM, wait, SIGKILL (the whole process group when PID leads it).
# Prints how it stopped.
stop_pid() {
    local pid="$1" start
    start="$(now_ms)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while pid_alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if pid_alive "$pid"; then
        local pgid
        pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
        if [[ "$pgid" == "$pid" ]]; then
            kill -KILL -- "-$pid" 2>/dev/null || true
        else
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
        printf 'SIGKILL after %s s\n' "$STOP_TIMEOUT_S"
        return 0
    fi
    printf 'SIGTERM, exited after %s ms\n' "$(($(now_ms) - start))"
}

cmd_stop() {
    parse_options "$@"
    local pid how
    pid="$(read_pid_file "$PID_FILE")"
    if [[ -z "$pid" ]]; then
        info "$(label): not running (no $PID_FILE)"
        return 0
    fi
    if ! is_our_node "$pid"; then
        rm -f "$PID_FILE"
        info "$(label): not running (removed the stale pid file, pid $pid)"
        return 0
    fi
    how="$(stop_pid "$pid")"
    if pid_alive "$pid"; then
        die "$(label): pid $pid is still alive after SIGKILL"
    fi
    rm -f "$PID_FILE"
    # A clean exit removes node.json; after SIGKILL it is stale.
    rm -f "$NODE_JSON"
    info "$(label): stopped pid $pid ($how)"
}

# --- status -----------------------------------------------------------------------

cmd_status() {
    parse_options "$@"
    ensure_env
    local args=(net status --data-dir "$DATA_DIR")
    [[ -z "$JSON" ]] || args+=(--json)
    local pid
    pid="$(read_pid_file "$PID_FILE")"
    if [[ -n "$pid" ]] && ! is_our_node "$pid"; then
        warn "$(label): $PID_FILE names pid $pid, which is not running"
    fi
    exec "$LOAM" "${args[@]}"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
    start | stop | status)
        shift
        "cmd_$cmd" "$@"
        ;;
    -h | --help | help)
        usage
        ;;
    "")
        usage >&2
        exit 2
        ;;
    *)
        printf 'launch-peer: unknown command: %s\n\n' "$cmd" >&2
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
