#!/usr/bin/env bash
# Builds the container images of the vm exe-unit tests into tests/images/build/:
#
#   rootfs/              a root filesystem: Debian's static busybox and a link per applet,
#                        /golem/work, /tmp, /etc/passwd
#   busybox.docker.tar   `docker save` of it, imported with the config below as
#                        loam-test/busybox:latest (needs a running Docker engine)
#   busybox.gvmi         a GVMI image of it (squashfs + the same config), packed by
#                        `python -m exeunits.vm pack` (needs squashfs-tools)
#
# The config: Env PATH and LOAM_TEST_IMAGE=busybox, WorkingDir /golem/work, Volume
# /golem/work, Cmd /bin/sh.
#
#     tests/images/build.sh               # build what is missing or stale
#     tests/images/build.sh --force       # rebuild everything
#     tests/images/build.sh --no-docker   # only rootfs/ and busybox.gvmi (no engine needed)
#
# Environment: BUSYBOX (default /bin/busybox, from Debian's busybox-static), PYTHON
# (default <repo>/.venv/bin/python). Outputs are written through temporary names.
set -euo pipefail

src_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$src_dir/../.." && pwd)"
out_dir="$src_dir/build"
force=0
with_docker=1
while (($#)); do
    case "$1" in
    --force) force=1 ;;
    --no-docker) with_docker=0 ;;
    -h | --help)
        sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        printf 'build.sh: unknown argument: %s\n' "$1" >&2
        exit 2
        ;;
    esac
    shift
done

busybox="${BUSYBOX:-/bin/busybox}"
python="${PYTHON:-$repo/.venv/bin/python}"
tag="loam-test/busybox:latest"
env_path="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
env_marker="LOAM_TEST_IMAGE=busybox"

fail() {
    printf 'build.sh: %s\n' "$*" >&2
    exit 1
}

[[ -x "$busybox" ]] || fail "$busybox not found (Debian: apt-get install busybox-static)"
# The image has no C library: a dynamically linked busybox would not start in it.
if ldd "$busybox" >/dev/null 2>&1; then
    fail "$busybox is dynamically linked; install Debian's busybox-static (or set BUSYBOX)"
fi

# Up to date when every output is newer than its inputs (this script, busybox, the packer).
stale() {
    local out="$1" dep
    ((force)) && return 0
    [[ -e "$out" ]] || return 0
    for dep in "${BASH_SOURCE[0]}" "$busybox" "$repo/exeunits/vm/gvmi.py"; do
        [[ "$out" -nt "$dep" ]] || return 0
    done
    return 1
}

mkdir -p "$out_dir"
built=()

# --- rootfs/ ---------------------------------------------------------------------------
stamp="$out_dir/.rootfs.done"
if stale "$stamp" || [[ ! -d "$out_dir/rootfs" ]]; then
    tmp="$out_dir/.rootfs.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bin,dev,etc,proc,root,sys,tmp,golem/work}
    chmod 1777 "$tmp/tmp"
    cp "$busybox" "$tmp/bin/busybox"
    chmod 755 "$tmp/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$tmp/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
    rm -rf "$out_dir/rootfs"
    mv "$tmp" "$out_dir/rootfs"
    touch "$stamp"
    built+=(rootfs)
fi

# --- busybox.gvmi ----------------------------------------------------------------------
if stale "$out_dir/busybox.gvmi" || [[ "$out_dir/busybox.gvmi" -ot "$stamp" ]]; then
    [[ -x "$python" ]] || fail "$python not found (run scripts/setup.sh, or set PYTHON)"
    command -v mksquashfs >/dev/null 2>&1 || fail "mksquashfs not found (Debian: apt-get install squashfs-tools)"
    tmp="$out_dir/.busybox.$$.gvmi"
    (cd "$repo" && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m exeunits.vm pack \
        "$out_dir/rootfs" "$tmp" --env "$env_path" --env "$env_marker" \
        --volume /golem/work --workdir /golem/work --cmd '["/bin/sh"]' >/dev/null) || {
        rm -f "$tmp"
        fail "packing busybox.gvmi failed"
    }
    mv "$tmp" "$out_dir/busybox.gvmi"
    built+=(busybox.gvmi)
fi

# --- busybox.docker.tar ----------------------------------------------------------------
if ((with_docker)) && { stale "$out_dir/busybox.docker.tar" || [[ "$out_dir/busybox.docker.tar" -ot "$stamp" ]]; }; then
    command -v docker >/dev/null 2>&1 || fail "docker not found (scripts/setup.sh docker)"
    docker info >/dev/null 2>&1 || fail "no Docker engine answers (scripts/dockerd.sh start)"
    tmp="$out_dir/.busybox.$$.docker.tar"
    tar --numeric-owner -C "$out_dir/rootfs" -c . |
        docker import \
            --change "ENV $env_path" --change "ENV $env_marker" \
            --change 'VOLUME ["/golem/work"]' --change 'WORKDIR /golem/work' --change 'CMD ["/bin/sh"]' \
            - "$tag" >/dev/null
    docker save -o "$tmp" "$tag" || {
        rm -f "$tmp"
        fail "docker save $tag failed"
    }
    mv "$tmp" "$out_dir/busybox.docker.tar"
    built+=(busybox.docker.tar)
fi

if ((${#built[@]})); then
    printf 'build.sh: built %s in %s\n' "${built[*]}" "$out_dir"
fi
