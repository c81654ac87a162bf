#!/usr/bin/env bash
# Runs the test suite (tests/) with pytest from <repo>/.venv, setting it up first
# when needed. Arguments go to pytest; without any, it runs everything quietly (-q).
#
#     scripts/test.sh                          # all tests
#     scripts/test.sh tests/unit -x            # one folder, stop at the first failure
#     scripts/test.sh -m "not integration" -v
#
# Exits with pytest's status; "no tests collected" (5) is a failure too.
set -euo pipefail

LOAM_SCRIPT_NAME="test"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
-h | --help)
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

ensure_env
cd "$REPO"

# -q unless the caller chose a verbosity.
args=("$@")
quiet=(-q)
for a in "$@"; do
    case "$a" in
    -q | -v | -vv | -vvv | --quiet | --verbose | --verbosity=*) quiet=() ;;
    esac
done

exec "$PY" -m pytest ${quiet[@]+"${quiet[@]}"} ${args[@]+"${args[@]}"}
