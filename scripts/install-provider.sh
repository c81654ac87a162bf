#!/usr/bin/env bash
# Set up a Loam provider on a Debian server: a system user, a data dir, the project in a
# venv (from the checkout this script is in), optionally the Docker engine, an identity,
# and a systemd unit that restarts the node on failure and logs to the journal.
#
#   sudo scripts/install-provider.sh [--with-docker] [--bootstrap loam://KEY@HOST:PORT]
#
# Options:
#   --data-dir DIR      where the node keeps its keys, database and settings (/var/lib/loam)
#   --user NAME         the system user the node runs as (loam)
#   --prefix DIR        where the code and venv go: DIR/src, DIR/venv (/opt/loam)
#   --with-docker       install and enable the Docker engine (for the vm runtime)
#   --bootstrap CONTACT a node to join the network through (repeatable)
#   --no-start          enable the unit but do not (re)start it
#   --dry-run           print what would be done, change nothing
#   --root DIR          install into the tree under DIR instead of / (users in DIR/etc,
#                       files under DIR; implies --no-systemctl): for tests and images
#   --no-systemctl      write the unit but do not call systemctl
#   --python PY         the Python (3.11 or newer) the venv is made from (python3)
#   --pip-args "ARGS"   extra arguments for pip install (e.g. "--no-deps" offline)
#
# Running it again is safe: what exists is kept (user, identity, venv), the project is
# reinstalled from the checkout, the unit rewritten, and the node restarted.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT_NAME="loam-provider.service"

DATA_DIR="/var/lib/loam"
USER_NAME="loam"
PREFIX="/opt/loam"
WITH_DOCKER=0
START=1
DRY_RUN=0
ROOT=""
SYSTEMCTL=1
PYTHON="python3"
PIP_ARGS=""
BOOTSTRAP=()

die() { echo "install-provider: $*" >&2; exit 2; }
say() { echo "==> $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --data-dir) DATA_DIR="${2:?--data-dir needs a directory}"; shift 2 ;;
        --user) USER_NAME="${2:?--user needs a name}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --with-docker) WITH_DOCKER=1; shift ;;
        --bootstrap) BOOTSTRAP+=("${2:?--bootstrap needs a contact address}"); shift 2 ;;
        --no-start) START=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --root) ROOT="$(realpath -m "${2:?--root needs a directory}")"; SYSTEMCTL=0; shift 2 ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --pip-args) PIP_ARGS="${2-}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

for path in "$DATA_DIR" "$PREFIX"; do
    [[ "$path" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "$path: --data-dir and --prefix must be absolute paths of letters, digits, '.', '_', '-'"
done
[[ "$USER_NAME" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user $USER_NAME is not a valid user name"
for contact in "${BOOTSTRAP[@]+"${BOOTSTRAP[@]}"}"; do
    [[ "$contact" == loam://*@*:* ]] || die "--bootstrap $contact is not a contact address loam://KEY@HOST:PORT"
done
if [[ $DRY_RUN -eq 0 && $(id -u) -ne 0 ]]; then
    die "run as root (it creates a system user and a systemd unit), or try --dry-run"
fi

VENV="$PREFIX/venv"
UNIT_PATH="/etc/systemd/system/$UNIT_NAME"
PASSWORD_FILE="$DATA_DIR/password"

# Runs a command, or only prints it in a dry run.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf 'would run:'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# Writes stdin to a file (mode $2) unless it already holds exactly that; prints what it did.
write_file() {
    local path="$1" mode="$2" content
    content="$(cat)"
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "would write $path:"; printf '%s\n' "$content" | sed 's/^/    /'
        return
    fi
    if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
        echo "$path is up to date"
        return
    fi
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" >"$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
    echo "wrote $path"
}

user_exists() {
    if [[ -n "$ROOT" ]]; then
        grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null
    else
        getent passwd "$USER_NAME" >/dev/null
    fi
}

# -- the system user ---------------------------------------------------------------------------

say "system user $USER_NAME"
if user_exists; then
    echo "user $USER_NAME exists"
elif [[ -n "$ROOT" ]]; then
    run mkdir -p "$ROOT/etc"
    for f in passwd group shadow gshadow; do run touch "$ROOT/etc/$f"; done
    run useradd --prefix "$ROOT" --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "Loam provider node" "$USER_NAME"
else
    run useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "Loam provider node" "$USER_NAME"
fi

# -- Docker ------------------------------------------------------------------------------------

if [[ $WITH_DOCKER -eq 1 ]]; then
    say "Docker engine"
    if [[ -n "$ROOT" ]]; then
        echo "skipped with --root: install docker.io, squashfs-tools, gcc and libc6-dev in the image yourself"
    else
        # gcc and libc6-dev build the VPN relay that joins containers to requestors' networks.
        if ! command -v docker >/dev/null || ! command -v unsquashfs >/dev/null || ! command -v gcc >/dev/null; then
            run apt-get update
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io squashfs-tools gcc libc6-dev
        else
            echo "docker and unsquashfs are installed"
        fi
        if [[ $SYSTEMCTL -eq 1 ]]; then
            run systemctl enable --now docker.service
        fi
        run usermod -aG docker "$USER_NAME"
    fi
fi

# -- directories and the venv ------------------------------------------------------------------

say "data dir $DATA_DIR and venv $VENV"
run install -d -m 0700 "$ROOT$DATA_DIR"
run install -d -m 0755 "$ROOT$PREFIX"
if [[ -x "$ROOT$VENV/bin/python" ]]; then
    echo "venv $ROOT$VENV exists"
else
    run "$PYTHON" -m venv "$ROOT$VENV"
fi
# The node reads its shipped defaults (config/) and contract artifacts beside its code, so
# the venv runs an editable install of a snapshot of the checkout in PREFIX/src: the
# checkout itself may then move or change without touching the running provider.
if [[ $DRY_RUN -eq 1 ]]; then
    echo "would copy $SRC to $ROOT$PREFIX/src and install it into $ROOT$VENV (pip install $PIP_ARGS -e)"
else
    rm -rf "$ROOT$PREFIX/src.new"
    mkdir -p "$ROOT$PREFIX/src.new"
    # Not the hidden top-level dirs (.git, .venv, caches), node_modules or build output.
    tar -C "$SRC" --exclude='./.*' --exclude=./node_modules --exclude='*.egg-info' --exclude=./build \
        --exclude='__pycache__' -cf - . | tar -C "$ROOT$PREFIX/src.new" -xf -
    rm -rf "$ROOT$PREFIX/src"
    mv "$ROOT$PREFIX/src.new" "$ROOT$PREFIX/src"
    # shellcheck disable=SC2086 # PIP_ARGS is a list of arguments
    "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS -e "$ROOT$PREFIX/src"
    echo "installed loam $("$ROOT$VENV/bin/loam" --version | awk '{print $NF}') into $ROOT$VENV from $ROOT$PREFIX/src"
fi

# -- identity ----------------------------------------------------------------------------------

say "identity"
LOAM="$ROOT$VENV/bin/loam"
if [[ $DRY_RUN -eq 1 ]]; then
    echo "would create an identity in $ROOT$DATA_DIR unless it has one (key encrypted, password in $PASSWORD_FILE)"
elif [[ "$("$LOAM" id list --data-dir "$ROOT$DATA_DIR" --json)" != "[]" ]]; then
    echo "the data dir has an identity: $("$LOAM" id list --data-dir "$ROOT$DATA_DIR" --json | grep -m1 '"address"' | cut -d'"' -f4)"
else
    # Unattended restarts need the password on the machine; the key file stays encrypted.
    if [[ ! -s "$ROOT$PASSWORD_FILE" ]]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ROOT$PASSWORD_FILE")
    fi
    echo "created identity $("$LOAM" id create --data-dir "$ROOT$DATA_DIR" --password-file "$ROOT$PASSWORD_FILE")"
fi
if [[ $DRY_RUN -eq 0 ]]; then
    uid_gid="$USER_NAME:$USER_NAME"
    if [[ -n "$ROOT" ]]; then  # the user exists only in the tree's /etc
        uid_gid="$(awk -F: -v u="$USER_NAME" '$1 == u {print $3 ":" $4}' "$ROOT/etc/passwd")"
    fi
    chown -R "$uid_gid" "$ROOT$DATA_DIR"
fi

# -- the systemd unit --------------------------------------------------------------------------

say "systemd unit $UNIT_PATH"
environment=(
    "LOAM_DATA_DIR=$DATA_DIR"
    "LOAM_PROVIDER__ENABLED=true"
    "LOAM_IDENTITY__PASSWORD_FILE=$PASSWORD_FILE"
)
if [[ ${#BOOTSTRAP[@]} -gt 0 ]]; then
    list="$(printf '"%s",' "${BOOTSTRAP[@]}")"
    environment+=("LOAM_NET__BOOTSTRAP=[${list%,}]")
fi
{
    echo "# Written by scripts/install-provider.sh; run it again rather than editing this file."
    echo "[Unit]"
    echo "Description=Loam provider node (sells compute on the Loam network)"
    echo "Wants=network-online.target"
    echo "After=network-online.target$([[ $WITH_DOCKER -eq 1 ]] && echo " docker.service")"
    echo
    echo "[Service]"
    echo "Type=simple"
    echo "User=$USER_NAME"
    echo "Group=$USER_NAME"
    [[ $WITH_DOCKER -eq 1 ]] && echo "SupplementaryGroups=docker"
    for e in "${environment[@]}"; do
        if [[ "$e" == *'"'* ]]; then echo "Environment='$e'"; else echo "Environment=$e"; fi
    done
    if [[ $WITH_DOCKER -eq 1 ]]; then
        # Run as root ("+"): keep containers on requestors' VPN networks (bridges loamv*) from this host's ports.
        guard="INPUT -i loamv+ -m conntrack --ctstate NEW,INVALID -j DROP"
        echo "ExecStartPre=+/bin/sh -c 'iptables -w 5 -C $guard 2>/dev/null || iptables -w 5 -I $guard || true'"
    fi
    echo "ExecStart=$VENV/bin/loam node run --data-dir $DATA_DIR --log-json"
    echo "Restart=on-failure"
    echo "RestartSec=5"
    echo "TimeoutStopSec=30"
    echo "StandardOutput=journal"
    echo "StandardError=journal"
    echo "SyslogIdentifier=loam"
    echo "NoNewPrivileges=true"
    echo "ProtectSystem=full"
    echo "ReadWritePaths=$DATA_DIR"
    echo
    echo "[Install]"
    echo "WantedBy=multi-user.target"
} | write_file "$ROOT$UNIT_PATH" 0644

if [[ $SYSTEMCTL -eq 1 ]]; then
    run systemctl daemon-reload
    run systemctl enable "$UNIT_NAME"
    if [[ $START -eq 1 ]]; then
        run systemctl restart "$UNIT_NAME"
        echo "started; follow it with: journalctl -u $UNIT_NAME -f"
    fi
else
    echo "systemctl not called: enable and start $UNIT_NAME yourself"
fi
say "done"
