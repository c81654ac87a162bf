#!/usr/bin/env bash
# Compiles the WASI test programs tests/wasm/*.c into tests/wasm/build/<name>.wasm
# with clang for wasm32-wasi (Debian: clang lld wasi-libc libclang-rt-dev-wasm32;
# `scripts/setup.sh wasi` installs them). Debian's clang finds wasi-libc by itself,
# so no --sysroot is needed; set WASI_SYSROOT to use another one.
#
#     tests/wasm/build.sh                 # build what is missing or stale
#     tests/wasm/build.sh --force         # rebuild everything
#     tests/wasm/build.sh --out DIR       # somewhere else than tests/wasm/build
#
# Environment: CC (default clang), CFLAGS (appended). Only the build directory is
# written, one file at a time through a temporary name, so concurrent runs are safe.
set -euo pipefail

src_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="$src_dir/build"
force=0
while (($#)); do
    case "$1" in
    --force) force=1 ;;
    --out)
        out_dir="${2:?--out needs a directory}"
        shift
        ;;
    -h | --help)
        sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        printf 'build.sh: unknown argument: %s\n' "$1" >&2
        exit 2
        ;;
    esac
    shift
done

cc="${CC:-clang}"
command -v "$cc" >/dev/null 2>&1 || {
    printf 'build.sh: %s not found (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)\n' "$cc" >&2
    exit 127
}
# -O2 as the packages users send us would be; --strip-all keeps the modules small.
# shellcheck disable=SC2054 # -Wl,--strip-all is one argument
flags=(--target=wasm32-wasi -O2 -Wall -Wextra -Wl,--strip-all)
if [[ -n "${WASI_SYSROOT:-}" ]]; then
    flags+=("--sysroot=$WASI_SYSROOT")
fi
# shellcheck disable=SC2206 # CFLAGS is a list of words on purpose
flags+=(${CFLAGS:-})

mkdir -p "$out_dir"
built=0 total=0
for src in "$src_dir"/*.c; do
    name="$(basename "$src" .c)"
    out="$out_dir/$name.wasm"
    total=$((total + 1))
    if ((!force)) && [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "${BASH_SOURCE[0]}" ]]; then
        continue
    fi
    tmp="$out_dir/.$name.$$.wasm"
    if ! "$cc" "${flags[@]}" -o "$tmp" "$src"; then
        rm -f "$tmp"
        printf 'build.sh: FAILED: %s %s -o %s %s\n' "$cc" "${flags[*]}" "$out" "$src" >&2
        exit 1
    fi
    mv -f "$tmp" "$out"
    built=$((built + 1))
done
printf 'build.sh: %d of %d modules built in %s\n' "$built" "$total" "$out_dir"
