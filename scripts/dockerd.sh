#!/usr/bin/env bash
# Starts a Docker engine for the vm exe-unit and its tests when none answers, without
# systemd: dockerd runs in the background, logging to $LOAM_DOCKERD_LOG.
#
#     scripts/dockerd.sh start     # idempotent: returns at once when an engine answers
#     scripts/dockerd.sh status    # exit 0 when an engine answers
#     scripts/dockerd.sh stop      # stops the dockerd that `start` started (and only that one)
#
# Needs root and Debian's docker.io (`scripts/setup.sh docker` installs it).
# Environment: LOAM_DOCKERD_LOG (default /var/log/dockerd.log), LOAM_DOCKERD_WAIT_S
# (default 60: how long `start` waits for the engine to answer).
set -euo pipefail

LOAM_SCRIPT_NAME="dockerd"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log_file="${LOAM_DOCKERD_LOG:-/var/log/dockerd.log}"
wait_s="${LOAM_DOCKERD_WAIT_S:-60}"
pid_file="${TMPDIR:-/tmp}/loam-dockerd.pid"

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

dockerd_start() {
    if engine_answers; then
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found (scripts/setup.sh docker, or Debian: apt-get install docker.io)"
    command -v docker >/dev/null 2>&1 || die "docker (the client) not found (Debian: apt-get install docker.io)"
    [[ "$(id -u)" == 0 ]] || die "starting dockerd needs root"
    local pid=""
    if [[ -f "$pid_file" ]]; then
        pid="$(cat "$pid_file" 2>/dev/null || true)"
    fi
    # A dockerd of ours that is still starting up: wait for it rather than start another.
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        mkdir -p "$(dirname "$log_file")"
        # setsid: the engine must outlive the shell (and the test run) that started it.
        setsid dockerd >>"$log_file" 2>&1 </dev/null &
        pid=$!
        printf '%s\n' "$pid" >"$pid_file"
        info "started dockerd (pid $pid, log $log_file)"
    fi
    local deadline=$((SECONDS + wait_s))
    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log_file" >&2 || true
            die "dockerd exited at start (log: $log_file)"
        fi
        ((SECONDS < deadline)) || die "dockerd did not answer within ${wait_s} s (log: $log_file)"
        sleep 0.2
    done
}

dockerd_stop() {
    [[ -f "$pid_file" ]] || return 0
    local pid
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    rm -f "$pid_file"
}

case "${1:-}" in
start) dockerd_start ;;
status) engine_answers ;;
stop) dockerd_stop ;;
-h | --help | "")
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [[ -n "${1:-}" ]]
    ;;
*)
    die "unknown command: $1 (start, status, stop)"
    ;;
esac
