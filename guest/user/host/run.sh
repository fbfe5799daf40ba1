#!/usr/bin/env bash
# host/run.sh HOST_DIR: runs the host builds of the user programs (make host-test) in a fresh
# temporary directory (the flat file system) and checks their exit statuses and result lines.
set -uo pipefail
bin="$(cd "$1" && pwd)"
fs=$(mktemp -d)
trap 'rm -rf "$fs"' EXIT
cd "$fs"
fail=0
# fileserver's checksums with the default 150 operations per worker (golden values: the guest
# kernel must print the same, for any vCPU count).
declare -A golden=([1]=0x3820529883003e0b [2]=0xf240b5b901bd1fb6 [4]=0xf3d82c8728490a13 [8]=0x5d0bd2992ef3a695)
out=
run() { # run <program> [hex arg]
    local status
    out=$("$bin/$1" "${2:-0}" </dev/null 2>&1); status=$?
    printf '%s\n' "$out" | sed "s/^/  /"
    if [ $status -ne 0 ]; then echo "host-test: $1 ${2:-} exited $status"; fail=1; fi
}
for p in hello selftest null_syscall read1 write1 open_close stat page_fault pipe_rtt spawn_exit; do
    echo "== $p"; run "$p"
done
for t in 1 2 4 8; do
    echo "== fileserver $t workers"; run fileserver "$t"
    grep -q "^result fileserver workers=$t ops=$((t * 150)) checksum=${golden[$t]}\$" <<<"$out" \
        || { echo "host-test: fileserver $t: expected checksum ${golden[$t]}"; fail=1; }
done
echo "== runall"; run runall
left=$(ls -A | grep -v '^fs_w' || true)
[ -z "$left" ] || { echo "host-test: files left behind: $left"; fail=1; }
[ $fail -eq 0 ] && echo "host-test: all passed" || echo "host-test: FAILED"
exit $fail
