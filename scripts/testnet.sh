#!/usr/bin/env bash
# A local multi-node Loam testnet on loopback.
#
#     scripts/testnet.sh up [--providers 3] [--hosts] [--base-port 7600] [--dir .testnet]
#     scripts/testnet.sh status
#     scripts/testnet.sh demo
#     scripts/testnet.sh env
#     scripts/testnet.sh logs node-2 [-f]
#     scripts/testnet.sh cut node-2 | heal node-2     (--hosts only)
#     scripts/testnet.sh down [--purge]
#
# Every node is started by scripts/launch-peer.sh, with its data directory in
# DIR/node-I; DIR/testnet.env records the settings of the last `up`.
#
# Extending it: `up` runs the steps listed in UP_STEPS (a function `up_<step>` each)
# and `down` runs DOWN_STEPS in order; a chain or provider agents become new steps.
# A new subcommand is a function `cmd_<name>` plus a line in usage().
set -euo pipefail

LOAM_SCRIPT_NAME="testnet"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAUNCH_PEER="$REPO/scripts/launch-peer.sh"

UP_STEPS=(hosts web images chain nodes converge fund offers)
DOWN_STEPS=(nodes chain images web hosts)

# Settings; `up` takes them from its options, the other commands from DIR/testnet.env.
NODES=4 # node-0, the requestor, and three providers
BASE_PORT=7600
HOSTS_MODE=""   # 1: every node in a network namespace of its own (`up --hosts`)
VM_NODE=""      # the provider that sells the vm runtime too (when a Docker engine runs)
API_BASE_PORT="" # default: BASE_PORT + 100
HOST=127.0.0.1
TESTNET_DIR="${LOAM_TESTNET_DIR:-$REPO/.testnet}"
CONVERGE_TIMEOUT_S="${LOAM_CONVERGE_TIMEOUT_S:-60}"
DEMO_TIMEOUT_S="${LOAM_DEMO_TIMEOUT_S:-30}"
DEMO_TASKS="${LOAM_DEMO_TASKS:-12}" # tasks of the demo batch (0: none)
DEMO_TOPIC=demo
# node-0 is the requestor; the others sell compute (wasmtime) with their provider agents.
# One agreement at a time: a provider sells its one core to one activity (others go elsewhere).
PROVIDER_ENV=(LOAM_PROVIDER__ENABLED=true LOAM_PROVIDER__MAX_AGREEMENTS=1 LOAM_PROVIDER__PAYMENT_NETWORK=local)
# Every node pays and is paid on the testnet's own chain (anvil), with the contracts that
# `up` deploys there; the driver works in short cycles so that the demo sees its payment.
ANVIL="$REPO/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
chain_port() { printf '%s\n' "$((BASE_PORT + 98))"; }
payment_env() {
    printf '%s\n' "LOAM_PAYMENT__NETWORK=local" "LOAM_PAYMENT__NETWORKS_FILE=$TESTNET_DIR/networks.toml" \
        "LOAM_PAYMENT__BATCH_INTERVAL_S=${LOAM_TESTNET_BATCH_INTERVAL_S:-2}" "LOAM_PAYMENT__RESEND_S=2"
}

usage() {
    cat <<'EOF'
usage: scripts/testnet.sh COMMAND [OPTIONS]

Commands:
  up [--providers N] [--hosts] [--base-port P] [--api-base-port A] [--dir D]
        start a requestor (node-0) and N provider nodes (default 3; --nodes M
        means M nodes in all) on 127.0.0.1, ports P..P+N (default 7600), REST
        API ports A..A+N (default P+100); a local chain (anvil, port P+98) with
        the test GLM and multi-transfer contracts; the demo files (port P+99).
        Providers sell wasmtime; the last one sells vm when a Docker engine
        runs. Waits until every node has neighbours and node-0's market sees
        every offer, funds node-0 with test GLM, prints a summary.
        --hosts: every node in a network namespace of its own, on a bridge
        (10.213.0.0/24), so traffic crosses real links (root only).
        If a testnet already runs in D, print its status and exit 0.
  status
        each node: name, node id, alive or not, neighbours
  demo
        publish a gossip item (topic "demo") from the last node and wait (up to
        30 s) until every node has it; print how long it took; exit 1 if it does not
  env
        export lines for node-0's REST API (YAGNA_API_URL, YAGNA_APPKEY,
        YAGNA_PAYMENT_NETWORK, YAGNA_SUBNET): eval "$(scripts/testnet.sh env)"
        points any Golem client library at the testnet
  logs NODE [-n LINES] [-f]
        the end of a node's log (NODE is node-2 or just 2); -f follows it
  cut NODE | heal NODE
        (--hosts) take a node off the network (its link down) and back
  down [--purge]
        stop every node of the testnet; --purge also deletes the directory
  help
        this text

Every command takes --dir D (default <repo>/.testnet, or LOAM_TESTNET_DIR).
Each node's files are in D/node-I: loam.log, loam.pid, node.json and its identity.
EOF
}

# --- settings and nodes -----------------------------------------------------------

env_file() { printf '%s/testnet.env\n' "$TESTNET_DIR"; }
node_dir() { printf '%s/node-%s\n' "$TESTNET_DIR" "$1"; }
node_name() { printf 'node-%s\n' "$1"; }
node_port() { printf '%s\n' "$((BASE_PORT + $1))"; }
# Addresses: everything on 127.0.0.1, or with --hosts each node on 10.213.0.(10+I) in its
# own network namespace and the chain and web server on the bridge, 10.213.0.1.
HOSTS_NET=10.213.0
HOSTS_BRIDGE=loam-br0
node_host() { if [[ -n "$HOSTS_MODE" ]]; then printf '%s.%s\n' "$HOSTS_NET" "$((10 + $1))"; else printf '%s\n' "$HOST"; fi; }
node_netns() { printf 'loam-node-%s\n' "$1"; }
node_veth() { printf 'loam-v%s\n' "$1"; }
node_api_port() { printf '%s\n' "$((API_BASE_PORT + $1))"; }
# Prometheus metrics of node I: /metrics on the API base port + 50 + I.
node_metrics_port() { printf '%s\n' "$((API_BASE_PORT + 50 + $1))"; }

set_dir() {
    mkdir -p "$1"
    TESTNET_DIR="$(cd "$1" && pwd)"
}

write_env() {
    cat >"$(env_file)" <<EOF
# Written by scripts/testnet.sh up on $(date '+%F %T'); read by the other commands.
NODES=$NODES
BASE_PORT=$BASE_PORT
API_BASE_PORT=$API_BASE_PORT
HOST=$HOST
HOSTS_MODE=$HOSTS_MODE
VM_NODE=$VM_NODE
EOF
}

# Loads DIR/testnet.env; returns 1 when there is none.
load_env() {
    local f
    f="$(env_file)"
    [[ -f "$f" ]] || return 1
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
        NODES | BASE_PORT | API_BASE_PORT)
            if is_uint "$value"; then
                printf -v "$key" '%s' "$((10#$value))"
            fi
            ;;
        HOST) HOST="$value" ;;
        HOSTS_MODE) HOSTS_MODE="$value" ;;
        VM_NODE) VM_NODE="$value" ;;
        esac
    done <"$f"
    return 0
}

require_env() {
    load_env || die "no testnet in $TESTNET_DIR (start one with: scripts/testnet.sh up)"
}

# The pid of node I if it is running, else nothing.
node_pid() {
    local pid
    pid="$(read_pid_file "$(node_dir "$1")/loam.pid")"
    if [[ -n "$pid" ]] && pid_alive "$pid"; then
        printf '%s\n' "$pid"
    fi
}

node_alive() { [[ -n "$(node_pid "$1")" ]]; }

# The node id of node I from its node.json, or nothing.
node_id_of() {
    local f
    f="$(node_dir "$1")/node.json"
    if [[ -s "$f" ]]; then
        json_eval 'd.get("node_id")' "$f" 2>/dev/null || true
    fi
}

# How many nodes of the testnet are running.
count_alive() {
    local i n=0
    for ((i = 0; i < NODES; i++)); do
        if node_alive "$i"; then
            n=$((n + 1))
        fi
    done
    printf '%s\n' "$n"
}

# query_all OUTDIR LOAM_ARGS...: runs `loam LOAM_ARGS --data-dir DIR/node-I` for every
# node at once, the output of node I in OUTDIR/I.json (empty when it failed).
query_all() {
    local out="$1" i
    shift
    local pids=()
    for ((i = 0; i < NODES; i++)); do
        ("$LOAM" "$@" --data-dir "$(node_dir "$i")" >"$out/$i.json" 2>"$out/$i.err" || : >"$out/$i.json") &
        pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null || true
}

# A temporary directory removed when the script exits.
TMP_DIRS=()
cleanup() {
    if ((${#TMP_DIRS[@]})); then
        rm -rf "${TMP_DIRS[@]}"
    fi
}
trap cleanup EXIT
make_tmp() {
    local d
    d="$(mktemp -d "${TMPDIR:-/tmp}/loam-testnet.XXXXXX")"
    TMP_DIRS+=("$d")
    printf '%s\n' "$d"
}

# --- the report of every node (status, up's summary) ------------------------------

# print_table TMPDIR WITH_NAMES: reads TMPDIR/I.json (`loam net status --json` of node
# I) and prints one row per node.
print_table() {
    local tmp="$1" detailed="$2" i
    local rows="$tmp/rows.tsv"
    : >"$rows"
    for ((i = 0; i < NODES; i++)); do
        local alive=no pid
        pid="$(node_pid "$i")"
        if [[ -n "$pid" && -s "$(node_dir "$i")/node.json" ]]; then
            alive="yes (pid $pid)"
        elif [[ -n "$pid" ]]; then
            # Running, but without node.json: still starting, or stuck shutting down.
            alive="yes (pid $pid, no node.json)"
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$(node_name "$i")" "$(node_port "$i")" "$alive" "$(node_id_of "$i")" >>"$rows"
    done
    "$PY" - "$tmp" "$rows" "$detailed" <<'PYEOF'
import json, os, sys
tmp, rows_path, detailed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = [line.rstrip("\n").split("\t") for line in open(rows_path) if line.strip()]

def short(node_id):
    return node_id if len(node_id) <= 12 else f"{node_id[:6]}…{node_id[-4:]}"

statuses = {}
for i, *_ in rows:
    try:
        with open(os.path.join(tmp, f"{i}.json")) as fh:
            statuses[i] = json.load(fh)
    except (OSError, ValueError):
        statuses[i] = None
# Names of the testnet's own nodes, by node id, to show neighbours by name.
names = {}
for i, name, _port, _alive, node_id in rows:
    st = statuses[i]
    for nid in (node_id, (st or {}).get("node_id")):
        if nid:
            names[nid.lower()] = name

header = ["name", "node id", "port", "alive", "neighbours"]
if detailed:
    header.append("neighbour nodes")
table = [header]
for i, name, port, alive, node_id in rows:
    st = statuses[i]
    node_id = (st or {}).get("node_id") or node_id or "?"
    if st is None:
        count, who = "-", ""
    else:
        neigh = st.get("neighbours") or []
        count = str(len(neigh))
        who = ", ".join(
            names.get(str(n.get("node_id", "")).lower(), short(str(n.get("node_id", "?"))))
            + ("" if n.get("outbound") is None else (" (out)" if n.get("outbound") else " (in)"))
            for n in neigh
        )
    row = [name, node_id, port, alive, count]
    if detailed:
        row.append(who)
    table.append(row)
widths = [max(len(r[c]) for r in table) for c in range(len(header))]
for r in table:
    print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
PYEOF
}

# --- up ---------------------------------------------------------------------------

# start_node I CONTACT: starts node I (a provider when I > 0, bootstrapping from CONTACT).
start_node() {
    local i="$1" contact="$2" dir
    dir="$(node_dir "$i")"
    local args=(start --data-dir "$dir" --host "$(node_host "$i")" --port "$(node_port "$i")"
        --api-port "$(node_api_port "$i")" --name "$(node_name "$i")" --quiet)
    local env_args=()
    mapfile -t env_args < <(payment_env)
    env_args+=("LOAM_METRICS__PORT=$(node_metrics_port "$i")")
    if ((i > 0)); then
        args+=(--bootstrap "$contact")
        env_args+=("${PROVIDER_ENV[@]}")
        if [[ "$i" == "$VM_NODE" ]]; then
            env_args+=(LOAM_PROVIDER__RUNTIME=vm)
        fi
    fi
    if [[ -n "$HOSTS_MODE" ]]; then
        # The REST API and metrics listen on the node's own address, reachable over the bridge.
        env_args+=("LOAM_NETNS=$(node_netns "$i")" "LOAM_API__HOST=$(node_host "$i")" "LOAM_METRICS__HOST=$(node_host "$i")")
    fi
    env ${env_args[@]+"${env_args[@]}"} "$LAUNCH_PEER" "${args[@]}"
}

# identities_and_contact: every node gets an identity (unencrypted: a testnet) if it has
# none, in one process; prints node-0's contact address, which follows from its key.
identities_and_contact() {
    local dirs=() i
    for ((i = 0; i < NODES; i++)); do
        dirs+=("$(node_dir "$i")")
    done
    "$PY" - "$(node_host 0):$(node_port 0)" "${dirs[@]}" <<'PYEOF'
import sys
from pathlib import Path

from actors.net.actor import contact_address
from node.keystore import KeyStore
from node.storage import db_path, ensure_data_dir, open_database

endpoint, dirs = sys.argv[1], sys.argv[2:]
contact = ""
for i, d in enumerate(dirs):
    data_dir = ensure_data_dir(Path(d))
    conn = open_database(db_path(data_dir))
    try:
        store = KeyStore(data_dir, conn)
        info = store.get(None) if store.list() else store.create(alias=data_dir.name, password=None)
        if i == 0:
            contact = contact_address(store.unlock(info, None).curve_public, endpoint)
    finally:
        conn.close()
print(contact)
PYEOF
}

# All nodes at once: the providers bootstrap from node-0's contact, known from its key before
# it starts (they keep dialling until it listens).
up_nodes() {
    local contact i pids=() tmp failed=()
    contact="$(identities_and_contact)" || die "could not create the nodes' identities"
    [[ -n "$contact" ]] || die "no contact address for node-0"
    tmp="$(make_tmp)"
    for ((i = 0; i < NODES; i++)); do
        start_node "$i" "$contact" >"$tmp/$i.out" 2>&1 &
        pids[i]=$!
    done
    for ((i = 0; i < NODES; i++)); do
        wait "${pids[i]}" || failed+=("$(node_name "$i")")
        cat "$tmp/$i.out"
    done
    if ((${#failed[@]})); then
        warn "${failed[*]} did not start; stopping the nodes started so far"
        down_nodes >/dev/null || true
        exit 1
    fi
}

# The demo job's files: a WASI package of the test programs (built with clang) and an
# input text, served over http from DIR/www by a small web server on BASE_PORT + 99.
web_port() { printf '%s\n' "$((BASE_PORT + 99))"; }
# Where the chain and the demo web server listen: loopback, or the bridge with --hosts.
service_host() { if [[ -n "$HOSTS_MODE" ]]; then printf '%s.1\n' "$HOSTS_NET"; else printf '%s\n' "$HOST"; fi; }

up_web() {
    local www="$TESTNET_DIR/www"
    mkdir -p "$www"
    if ! bash "$REPO/tests/wasm/build.sh" >"$TESTNET_DIR/wasm-build.log" 2>&1; then
        warn "could not build the WASI demo programs (see $TESTNET_DIR/wasm-build.log); the demo will only show gossip"
        return 0
    fi
    local build="$REPO/tests/wasm/build"
    "$LOAM" package --entry wc="$build/wc.wasm" --entry hello="$build/hello.wasm" --mount ro:input --mount rw:output \
        -o "$www/demo.zip" --url "http://$(service_host):$(web_port)/demo.zip" | tail -n 1 >"$TESTNET_DIR/demo-package" ||
        die "could not build the demo package"
    printf 'Loam is a peer-to-peer compute marketplace.\nProviders sell compute; requestors buy it.\nEvery node runs the same daemon.\n' >"$www/words.txt"
    (cd "$www" && exec setsid "$PY" -m http.server "$(web_port)" --bind "$(service_host)" >"$TESTNET_DIR/web.log" 2>&1) &
    printf '%s\n' "$!" >"$TESTNET_DIR/web.pid"
    info "demo files served at http://$(service_host):$(web_port)/ (pid $!)"
}

# stop_service PID_FILE PATTERN LABEL: stop the process in PID_FILE if its command line
# matches PATTERN (not some other process that took its pid): SIGTERM, then SIGKILL after 5 s.
stop_service() {
    local pid_file="$1" pattern="$2" label="$3" pid i
    [[ -f "$pid_file" ]] || return 0
    pid="$(cat "$pid_file")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        info "stopped $label (pid $pid)"
    fi
    rm -f "$pid_file"
}

down_web() { stop_service "$TESTNET_DIR/web.pid" http.server "the demo web server"; }

# An image repository (Golem's GET /v1/image/info) on BASE_PORT + 97, serving the GVMI
# images in DIR/images: the test busybox image when squashfs-tools can build it.
images_port() { printf '%s\n' "$((BASE_PORT + 97))"; }

up_images() {
    local dir="$TESTNET_DIR/images"
    mkdir -p "$dir"
    if bash "$REPO/tests/images/build.sh" --no-docker >"$TESTNET_DIR/images-build.log" 2>&1; then
        cp -f "$REPO/tests/images/build/busybox.gvmi" "$dir/busybox.gvmi"
    else
        warn "could not build the busybox GVMI image (see $TESTNET_DIR/images-build.log); the image repository starts empty"
    fi
    (exec setsid "$LOAM" image-repo --dir "$dir" --host "$(service_host)" --port "$(images_port)" >"$TESTNET_DIR/images.log" 2>&1) &
    printf '%s\n' "$!" >"$TESTNET_DIR/images.pid"
    info "image repository at http://$(service_host):$(images_port)/v1/image/info (pid $!)"
}

down_images() { stop_service "$TESTNET_DIR/images.pid" image-repo "the image repository"; }

# The testnet's chain: anvil on BASE_PORT + 98 (chain id 31337, a block per transaction),
# with the test GLM token and the multi-transfer contract deployed on it; their addresses
# go to DIR/networks.toml, which every node reads as its [payment] networks_file.
up_chain() {
    if [[ ! -x "$ANVIL" ]]; then
        bash "$REPO/scripts/setup.sh" anvil || true
    fi
    [[ -x "$ANVIL" ]] || die "anvil is not installed: run scripts/setup.sh anvil"
    local url="http://$(service_host):$(chain_port)" plan
    (exec setsid "$ANVIL" --silent --host "$(service_host)" --port "$(chain_port)" >"$TESTNET_DIR/anvil.log" 2>&1) &
    printf '%s\n' "$!" >"$TESTNET_DIR/anvil.pid"
    # The contracts' addresses follow from a fresh deployer key, so the networks file is
    # written now and the nodes start while the deploy runs (`fund` waits for it).
    plan="$("$PY" -m actors.payment.local_chain --dir "$TESTNET_DIR" --rpc "$url")" || die "could not plan the contracts"
    "$LOAM" payment deploy-local --rpc "$url" --out "$TESTNET_DIR/networks.toml" --key-file "$TESTNET_DIR/deployer.key" \
        >"$TESTNET_DIR/deploy.json" 2>"$TESTNET_DIR/deploy.log" &
    DEPLOY_PID=$!
    info "chain: anvil at $url (pid $(cat "$TESTNET_DIR/anvil.pid")); deploying test GLM to $(json_eval 'd["token_address"]' <(printf '%s' "$plan")), multi-transfer to $(json_eval 'd["multi_transfer"]' <(printf '%s' "$plan"))"
}
DEPLOY_PID=""

down_chain() { stop_service "$TESTNET_DIR/anvil.pid" anvil anvil; }

# The requestor (node-0) gets test GLM and gas money on the testnet's chain, and an app
# key for its REST API (`env` prints it).
up_fund() {
    local out
    if [[ -n "$DEPLOY_PID" ]] && ! wait "$DEPLOY_PID"; then
        die "deploying the contracts on anvil failed: $(tail -n 3 "$TESTNET_DIR/deploy.log")"
    fi
    out="$("$LOAM" payment fund --data-dir "$(node_dir 0)" --amount 1000 --json)" || die "could not fund node-0 with test GLM"
    info "node-0 funded: $(json_eval 'd["token_glm"]' <(printf '%s' "$out")) test GLM on $(json_eval 'd["platform"]' <(printf '%s' "$out"))"
    if [[ ! -s "$TESTNET_DIR/appkey" ]]; then
        "$LOAM" app-key create testnet --data-dir "$(node_dir 0)" >"$TESTNET_DIR/appkey.tmp" 2>/dev/null ||
            "$LOAM" app-key list --data-dir "$(node_dir 0)" --json |
            json_eval 'next(k["key"] for k in d if k["name"] == "testnet")' >"$TESTNET_DIR/appkey.tmp"
        tail -n 1 "$TESTNET_DIR/appkey.tmp" >"$TESTNET_DIR/appkey"
        rm -f "$TESTNET_DIR/appkey.tmp"
    fi
}

# Wait until node-0's market has heard every provider's offer.
up_offers() {
    local want=$((NODES - 1)) deadline=$((SECONDS + CONVERGE_TIMEOUT_S)) started have=0
    ((want > 0)) || return 0
    started="$(now_ms)"
    while :; do
        have="$("$LOAM" market offers --data-dir "$(node_dir 0)" --json 2>/dev/null |
            json_eval 'len({o.get("issuer_id") or o.get("provider_id") or o.get("node_id") for o in d})' 2>/dev/null || echo 0)"
        if ((have >= want)); then
            info "node-0's market sees the offers of all $want provider(s) (in $(($(now_ms) - started)) ms)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            warn "node-0's market sees offers from $have of $want provider(s) after ${CONVERGE_TIMEOUT_S} s"
            return 0
        fi
        sleep 0.3
    done
}

# --hosts: a bridge in this namespace, and per node a namespace of its own joined to it
# by a veth pair; the node listens on its own address there.
up_hosts() {
    [[ -n "$HOSTS_MODE" ]] || return 0
    ((EUID == 0)) || die "--hosts needs root (network namespaces)"
    command -v ip >/dev/null 2>&1 || die "--hosts needs iproute2 (apt-get install iproute2)"
    if ! ip link show "$HOSTS_BRIDGE" >/dev/null 2>&1; then
        ip link add "$HOSTS_BRIDGE" type bridge
        ip addr add "$HOSTS_NET.1/24" dev "$HOSTS_BRIDGE"
    fi
    ip link set "$HOSTS_BRIDGE" up
    # Bridged frames pass iptables' FORWARD chain when br_netfilter is loaded, and a Docker
    # engine sets its policy to DROP: let the bridge's own traffic through.
    if command -v iptables >/dev/null 2>&1 && ! iptables -C FORWARD -i "$HOSTS_BRIDGE" -o "$HOSTS_BRIDGE" -j ACCEPT 2>/dev/null; then
        iptables -I FORWARD -i "$HOSTS_BRIDGE" -o "$HOSTS_BRIDGE" -j ACCEPT 2>/dev/null || warn "could not add an iptables FORWARD rule for $HOSTS_BRIDGE"
    fi
    local i ns veth
    for ((i = 0; i < NODES; i++)); do
        ns="$(node_netns "$i")"
        veth="$(node_veth "$i")"
        ip netns del "$ns" 2>/dev/null || true
        ip link del "$veth" 2>/dev/null || true
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$HOSTS_BRIDGE" up
        ip -n "$ns" addr add "$(node_host "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$HOSTS_NET.1"
    done
    info "hosts: $NODES network namespace(s) on bridge $HOSTS_BRIDGE ($HOSTS_NET.0/24)"
}

down_hosts() {
    [[ -n "$HOSTS_MODE" ]] || return 0
    local i
    for ((i = 0; i < NODES; i++)); do
        ip netns del "$(node_netns "$i")" 2>/dev/null || true
        ip link del "$(node_veth "$i")" 2>/dev/null || true
    done
    ip link del "$HOSTS_BRIDGE" 2>/dev/null || true
    if command -v iptables >/dev/null 2>&1; then
        iptables -D FORWARD -i "$HOSTS_BRIDGE" -o "$HOSTS_BRIDGE" -j ACCEPT 2>/dev/null || true
    fi
    info "removed the network namespaces and bridge $HOSTS_BRIDGE"
}

up_converge() {
    local want=$((NODES - 1 < 2 ? NODES - 1 : 2))
    info "waiting (up to ${CONVERGE_TIMEOUT_S} s) until every node has at least $want neighbour(s)"
    local tmp started deadline
    tmp="$(make_tmp)"
    started="$(now_ms)"
    deadline=$((SECONDS + CONVERGE_TIMEOUT_S))
    while :; do
        query_all "$tmp" net status --json
        local i behind=()
        for ((i = 0; i < NODES; i++)); do
            local n
            n="$(json_eval 'len(d.get("neighbours") or [])' "$tmp/$i.json" 2>/dev/null || echo 0)"
            if ((n < want)); then
                behind+=("$(node_name "$i")=$n")
            fi
        done
        if ((${#behind[@]} == 0)); then
            info "converged in $(($(now_ms) - started)) ms"
            LAST_STATUS_DIR="$tmp"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            warn "not converged after ${CONVERGE_TIMEOUT_S} s; neighbours: ${behind[*]}"
            print_table "$tmp" 1 >&2 || true
            warn "the nodes are left running: see scripts/testnet.sh logs NODE, or stop them with scripts/testnet.sh down"
            exit 1
        fi
        sleep 0.5
    done
}

LAST_STATUS_DIR=""

cmd_up() {
    local explicit=""
    while (($#)); do
        case "$1" in
        --nodes)
            is_uint "${2:-}" || die "--nodes needs a number >= 1"
            NODES=$((10#$2))
            explicit=1
            ((NODES >= 1)) || die "--nodes needs a number >= 1"
            shift 2
            ;;
        --providers)
            is_uint "${2:-}" || die "--providers needs a number >= 0"
            NODES=$((10#$2 + 1))
            explicit=1
            shift 2
            ;;
        --hosts)
            HOSTS_MODE=1
            shift
            ;;
        --base-port)
            is_port "${2:-}" || die "--base-port needs a port number"
            BASE_PORT=$((10#$2))
            explicit=1
            shift 2
            ;;
        --api-base-port)
            is_port "${2:-}" || die "--api-base-port needs a port number"
            API_BASE_PORT=$((10#$2))
            explicit=1
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'testnet: unknown option for up: %s\n\n' "$1" >&2
            usage >&2
            exit 2
            ;;
        esac
    done
    API_BASE_PORT="${API_BASE_PORT:-$((BASE_PORT + 100))}"
    ((BASE_PORT + NODES - 1 < 65536 && API_BASE_PORT + NODES - 1 < 65536)) ||
        die "ports $BASE_PORT..$((BASE_PORT + NODES - 1)) or $API_BASE_PORT..$((API_BASE_PORT + NODES - 1)) do not fit"
    if ((API_BASE_PORT < BASE_PORT + NODES && BASE_PORT < API_BASE_PORT + NODES)); then
        die "node ports $BASE_PORT.. and REST API ports $API_BASE_PORT.. overlap; pass --api-base-port"
    fi
    set_dir "$TESTNET_DIR"
    UP_STARTED=$SECONDS

    # Already running here? Then report on it rather than start a second one.
    local wanted_nodes="$NODES" wanted_port="$BASE_PORT" wanted_api="$API_BASE_PORT" wanted_hosts="$HOSTS_MODE"
    if load_env && (($(count_alive) > 0)); then
        info "a testnet is already running in $TESTNET_DIR ($(count_alive) of $NODES nodes alive)"
        if [[ -n "$explicit" ]] && [[ "$wanted_nodes" != "$NODES" || "$wanted_port" != "$BASE_PORT" || "$wanted_api" != "$API_BASE_PORT" ]]; then
            warn "it was started with --nodes $NODES --base-port $BASE_PORT --api-base-port $API_BASE_PORT; run scripts/testnet.sh down first to change that"
        fi
        ensure_env
        cmd_status || true
        exit 0
    fi
    NODES="$wanted_nodes"
    BASE_PORT="$wanted_port"
    API_BASE_PORT="$wanted_api"
    HOSTS_MODE="$wanted_hosts"

    ensure_env
    # The last provider sells containers too when a Docker engine runs (or starts).
    VM_NODE=""
    if ((NODES >= 3)) && [[ -z "${LOAM_TESTNET_NO_VM:-}" ]]; then
        if bash "$REPO/scripts/dockerd.sh" status >/dev/null 2>&1 ||
            { ((EUID == 0)) && command -v dockerd >/dev/null 2>&1 && bash "$REPO/scripts/dockerd.sh" start >/dev/null 2>&1; }; then
            VM_NODE=$((NODES - 1))
        fi
    fi
    write_env
    info "starting a requestor and $((NODES - 1)) provider(s)${VM_NODE:+ (node-$VM_NODE sells vm)} on ports $BASE_PORT..$((BASE_PORT + NODES - 1)) in $TESTNET_DIR${HOSTS_MODE:+, each in its own network namespace}"
    local step t0
    : >"$TESTNET_DIR/up-timings"
    for step in "${UP_STEPS[@]}"; do
        t0="$(now_ms)"
        "up_$step"
        printf '%s %s\n' "$step" "$(($(now_ms) - t0))" >>"$TESTNET_DIR/up-timings"
    done

    say ""
    if [[ -n "$LAST_STATUS_DIR" ]]; then
        print_table "$LAST_STATUS_DIR" 0
    fi
    say ""
    info "up: $NODES node(s) running in $((SECONDS - UP_STARTED)) s. Next: scripts/testnet.sh demo | env | status | logs node-0 | down"
}

# --- status -----------------------------------------------------------------------

cmd_status() {
    require_env
    ensure_env
    local tmp
    tmp="$(make_tmp)"
    query_all "$tmp" net status --json
    say "testnet in $TESTNET_DIR: $NODES node(s), ports $BASE_PORT..$((BASE_PORT + NODES - 1))"
    print_table "$tmp" 1
    local alive
    alive="$(count_alive)"
    if ((alive < NODES)); then
        say "$alive of $NODES node(s) running"
        return 1
    fi
}

# --- demo -------------------------------------------------------------------------

cmd_demo() {
    require_env
    ensure_env
    local i last=$((NODES - 1))
    for ((i = 0; i < NODES; i++)); do
        node_alive "$i" || die "$(node_name "$i") is not running (scripts/testnet.sh status)"
    done

    local text out item_id t0
    text="hello from $(node_name "$last") at $(date '+%T')"
    t0="$(now_ms)"
    out="$("$LOAM" debug publish --data-dir "$(node_dir "$last")" --topic "$DEMO_TOPIC" --text "$text")" ||
        die "\`loam debug publish\` on $(node_name "$last") failed"
    item_id="$(printf '%s\n' "$out" | awk 'NF { line = $NF } END { print line }')"
    [[ -n "$item_id" ]] || die "\`loam debug publish\` printed no item id"
    info "published item $item_id (topic \"$DEMO_TOPIC\") from $(node_name "$last"): \"$text\""

    local tmp deadline
    tmp="$(make_tmp)"
    deadline=$((SECONDS + DEMO_TIMEOUT_S))
    # seen[i]: how long after publishing node i had the item, in ms.
    local -a seen=()
    while :; do
        query_all "$tmp" debug items --topic "$DEMO_TOPIC" --json
        local elapsed missing=() idx lat
        elapsed=$(($(now_ms) - t0))
        while read -r idx lat; do
            if [[ -z "${seen[idx]:-}" && "$lat" != - ]]; then
                seen[idx]="$lat"
            fi
        done < <(item_latencies "$tmp" "$item_id" "$elapsed")
        for ((i = 0; i < NODES; i++)); do
            [[ -n "${seen[i]:-}" ]] || missing+=("$(node_name "$i")")
        done
        if ((${#missing[@]} == 0)); then
            break
        fi
        if ((SECONDS >= deadline)); then
            for ((i = 0; i < NODES; i++)); do
                if [[ -n "${seen[i]:-}" ]]; then
                    printf '  %-10s %6s ms\n' "$(node_name "$i")" "${seen[i]}"
                else
                    printf '  %-10s missing\n' "$(node_name "$i")"
                fi
            done
            die "item $item_id did not reach ${missing[*]} within ${DEMO_TIMEOUT_S} s"
        fi
        sleep 0.2
    done

    local total=0
    for ((i = 0; i < NODES; i++)); do
        printf '  %-10s %6s ms\n' "$(node_name "$i")" "${seen[i]}"
        if ((seen[i] > total)); then
            total="${seen[i]}"
        fi
    done
    say "item $item_id reached all $NODES nodes in $total ms"
    demo_job
}

# The demo job: node-0, as a requestor, finds a provider on the market, agrees, and runs
# an exe-script in a wasmtime activity (fetch a text over http, count its words, greet).
demo_job() {
    if ((NODES < 2)); then
        info "one node only: no provider for a demo job"
        return 0
    fi
    local package_file="$TESTNET_DIR/demo-package"
    if [[ ! -s "$package_file" ]]; then
        info "no demo package (the WASI programs were not built): skipping the demo job"
        return 0
    fi
    local script="$TESTNET_DIR/demo-script.json"
    cat >"$script" <<JSON
[{"deploy": {}},
 {"start": {}},
 {"transfer": {"from": "http://$(service_host):$(web_port)/words.txt", "to": "container:/input/words.txt"}},
 {"run": {"entry_point": "wc", "args": ["/input/words.txt", "/output/counts.txt"]}},
 {"run": {"entry_point": "hello", "args": ["from", "the", "testnet"]}},
 {"sign": {}}]
JSON
    say ""
    info "demo job: node-0 runs an exe-script on a provider (demand -> agreement -> activity -> results)"
    "$LOAM" run --data-dir "$(node_dir 0)" --package "$(cat "$package_file")" --script "$script" --timeout 60 \
        --budget 5 --wait-payment 90 || die "the demo job failed"
    demo_batch "$(cat "$package_file")"
    demo_service
    wait_settled 90
    say ""
    "$LOAM" market agreements --data-dir "$(node_dir 0)"
    say ""
    "$LOAM" payment payments --data-dir "$(node_dir 0)"
    "$LOAM" payment status --data-dir "$(node_dir 0)"
}

# wait_settled SECONDS: until every invoice node-0 received is paid on the chain (Settled).
wait_settled() {
    local deadline=$((SECONDS + $1)) open=""
    while :; do
        open="$("$LOAM" payment documents --data-dir "$(node_dir 0)" --kind invoice --json |
            json_eval 'sum(1 for x in d if x["role"] == "received" and x["status"] != "Settled")' 2>/dev/null || echo "?")"
        if [[ "$open" == 0 ]]; then
            info "every invoice node-0 received is settled on the chain"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            warn "$open invoice(s) of node-0 not settled after $1 s (scripts/testnet.sh logs node-0)"
            return 0
        fi
        sleep 0.5
    done
}

# The batch: the requestor library (examples/batch_files.py) over node-0's REST API counts
# the words of DEMO_TASKS files on the providers (files in and out through gftp), pays for
# the work from its budget, and waits for the invoices.
demo_batch() {
    local package="$1" inputs="$TESTNET_DIR/demo-inputs" i
    ((DEMO_TASKS > 0)) || return 0
    rm -rf "$inputs"
    mkdir -p "$inputs"
    for ((i = 1; i <= DEMO_TASKS; i++)); do
        local line=0
        for ((line = 0; line < i * 3; line++)); do
            printf 'task %s: providers sell compute, requestors buy it\n' "$i"
        done >"$inputs/text-$i.txt"
    done
    say ""
    info "demo batch: $DEMO_TASKS tasks with the requestor library over node-0's REST API (examples/batch_files.py)"
    (
        eval "$(cmd_env)"
        "$PY" "$REPO/examples/batch_files.py" --package "$package" --data-dir "$(node_dir 0)" --budget 5 \
            --workers "$((NODES - 1))" "$inputs"/text-*.txt
    ) || die "the demo batch failed"
}

# The service: a web server in a vm service on the provider that sells vm, on a virtual
# network node-0 creates, fetched through the network (examples/service_vpn.py).
demo_service() {
    if [[ -z "$VM_NODE" ]]; then
        info "no provider sells vm (no Docker engine): skipping the service on a virtual network"
        return 0
    fi
    if [[ ! -s "$TESTNET_DIR/images/busybox.gvmi" ]]; then
        info "no busybox image in the image repository: skipping the service on a virtual network"
        return 0
    fi
    if [[ -n "$HOSTS_MODE" ]]; then
        # The provider's node sits in a network namespace there, and Docker keeps other
        # namespaces away from a container's internal network.
        info "nodes in network namespaces (--hosts): skipping the service on a virtual network"
        return 0
    fi
    say ""
    info "demo service: a web server in a vm service on $(node_name "$VM_NODE"), on a virtual network, fetched through it (examples/service_vpn.py)"
    (
        eval "$(cmd_env)"
        "$PY" "$REPO/examples/service_vpn.py" --repo "$LOAM_IMAGE_REPO_URL" --tag busybox:latest --budget 2
    ) || die "the demo service failed"
}

# item_latencies TMPDIR ITEM_ID ELAPSED_MS: reads TMPDIR/I.json (`loam debug items
# --json` of node I) and prints "I MS" for each node that has the item, "I -" for the
# others. MS is the node's own received_ms - created_ms when it reports both (the same
# clock: all nodes run here), else ELAPSED_MS, when this script saw it.
item_latencies() {
    "$PY" - "$1" "$2" "$3" "$NODES" <<'PYEOF'
import json, os, sys
tmp, item_id, elapsed, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(nodes):
    try:
        with open(os.path.join(tmp, f"{i}.json")) as fh:
            items = json.load(fh)
    except (OSError, ValueError):
        items = []
    hit = next((x for x in items if isinstance(x, dict) and x.get("item_id") == item_id), None)
    if hit is None:
        print(i, "-")
        continue
    try:
        ms = max(0, int(hit["received_ms"]) - int(hit["created_ms"]))
    except (KeyError, TypeError, ValueError):
        ms = elapsed
    print(i, ms)
PYEOF
}

# --- env, cut, heal ---------------------------------------------------------------

cmd_env() {
    require_env
    [[ -s "$TESTNET_DIR/appkey" ]] || die "no app key in $TESTNET_DIR/appkey (is the testnet up?)"
    printf 'export YAGNA_API_URL=http://%s:%s\n' "$(node_host 0)" "$(node_api_port 0)"
    printf 'export YAGNA_APPKEY=%s\n' "$(cat "$TESTNET_DIR/appkey")"
    printf 'export YAGNA_PAYMENT_NETWORK=local\n'
    printf 'export YAGNA_PAYMENT_DRIVER=erc20\n'
    printf 'export YAGNA_SUBNET=public\n'
    # Not Golem's: where this testnet's image repository is (pass it as the client's repo URL).
    printf 'export LOAM_IMAGE_REPO_URL=http://%s:%s\n' "$(service_host)" "$(images_port)"
}

# node_index NODE: "node-2" or "2" as 2, checked against the testnet.
node_index() {
    local node="${1#node-}"
    [[ "$node" =~ ^[0-9]+$ ]] && ((node < NODES)) || die "NODE is node-0 .. node-$((NODES - 1)), not ${1:-nothing}"
    printf '%s\n' "$node"
}

# set_link NODE up|down: the node's link to the bridge (--hosts), what cut and heal turn.
set_link() {
    require_env
    [[ -n "$HOSTS_MODE" ]] || die "cut and heal work on a testnet started with up --hosts"
    local i
    i="$(node_index "${1:-}")"
    ip link set "$(node_veth "$i")" "$2"
    printf '%s\n' "$i"
}

cmd_cut() {
    local i
    i="$(set_link "${1:-}" down)" || exit 1
    info "$(node_name "$i") is off the network (its link $(node_veth "$i") is down); scripts/testnet.sh heal $(node_name "$i") brings it back"
}

cmd_heal() {
    local i
    i="$(set_link "${1:-}" up)" || exit 1
    info "$(node_name "$i") is back on the network"
}

# --- logs -------------------------------------------------------------------------

cmd_logs() {
    require_env
    local node="" lines=50 follow=""
    while (($#)); do
        case "$1" in
        -n | --lines)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || die "$1 needs a number"
            lines="$2"
            shift 2
            ;;
        -f | --follow)
            follow=1
            shift
            ;;
        -*)
            die "unknown option for logs: $1"
            ;;
        *)
            node="$1"
            shift
            ;;
        esac
    done
    [[ -n "$node" ]] || die "usage: scripts/testnet.sh logs NODE [-n LINES] [-f]  (NODE: node-0 .. node-$((NODES - 1)))"
    node="${node#node-}"
    [[ "$node" =~ ^[0-9]+$ ]] || die "NODE is node-I or I, not $node"
    local log
    log="$(node_dir "$node")/loam.log"
    [[ -f "$log" ]] || die "no log at $log"
    if [[ -n "$follow" ]]; then
        exec tail -n "$lines" -F "$log"
    fi
    tail -n "$lines" "$log"
}

# --- down -------------------------------------------------------------------------

# Stops every node directory under DIR, whatever testnet.env says, so that nothing
# from an earlier, larger testnet is left running. The nodes stop in parallel (one
# that hangs costs its 10 s once, not once per node); their reports print in order.
down_nodes() {
    local dir tmp dirs=() pids=() k
    tmp="$(make_tmp)"
    while IFS= read -r dir; do
        [[ -d "$dir" && -f "$dir/loam.pid" ]] || continue
        k=${#dirs[@]}
        dirs+=("$dir")
        "$LAUNCH_PEER" stop --data-dir "$dir" --name "$(basename "$dir")" >"$tmp/$k.out" 2>&1 &
        pids+=($!)
    done < <(find "$TESTNET_DIR" -mindepth 1 -maxdepth 1 -type d -name 'node-*' | sort -V)
    if ((${#dirs[@]} == 0)); then
        info "no node was running in $TESTNET_DIR"
        return 0
    fi
    local rc=0
    for k in "${!dirs[@]}"; do
        local ok=1
        wait "${pids[k]}" || ok=0
        cat "$tmp/$k.out"
        if ((!ok)); then
            warn "could not stop $(basename "${dirs[k]}")"
            rc=1
        fi
    done
    return "$rc"
}

cmd_down() {
    local purge=""
    while (($#)); do
        case "$1" in
        --purge)
            purge=1
            shift
            ;;
        *) die "unknown option for down: $1" ;;
        esac
    done
    if [[ ! -d "$TESTNET_DIR" ]]; then
        info "no testnet in $TESTNET_DIR"
        return 0
    fi
    load_env || true
    local step
    for step in "${DOWN_STEPS[@]}"; do
        "down_$step"
    done
    if [[ -n "$purge" ]]; then
        rm -rf "$TESTNET_DIR"
        info "removed $TESTNET_DIR"
    fi
}

# --- main -------------------------------------------------------------------------

main() {
    local cmd="${1:-}"
    [[ $# -eq 0 ]] || shift
    # --dir is accepted by every command, anywhere among its options.
    local args=()
    while (($#)); do
        if [[ "$1" == --dir ]]; then
            [[ -n "${2:-}" ]] || die "--dir needs a directory"
            TESTNET_DIR="$2"
            shift 2
        else
            args+=("$1")
            shift
        fi
    done
    if [[ "$cmd" != up && "$cmd" != help && "$cmd" != -h && "$cmd" != --help && -d "$TESTNET_DIR" ]]; then
        TESTNET_DIR="$(cd "$TESTNET_DIR" && pwd)"
    fi
    case "$cmd" in
    up | status | demo | env | logs | cut | heal | down)
        "cmd_$cmd" ${args[@]+"${args[@]}"}
        ;;
    help | -h | --help)
        usage
        ;;
    "")
        usage >&2
        exit 2
        ;;
    *)
        printf 'testnet: unknown command: %s\n\n' "$cmd" >&2
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
