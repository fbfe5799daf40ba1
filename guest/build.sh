#!/usr/bin/env bash
# Build the bundled guest images (guest/build/...).
#
#   guest/build.sh           build everything and print the output path(s)
#   guest/build.sh clean     remove guest/build/
#   guest/build.sh <target>  any other guest/Makefile target (e.g. smp-demo)
set -euo pipefail

src="${BASH_SOURCE[0]}"
[[ "$src" == */* ]] || src="./$src"
here="$(cd "${src%/*}" && pwd)"

missing=0
need() {
    local tool="$1" pkg="$2"
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "guest/build.sh: error: '$tool' not found; install the Debian package '$pkg' (apt-get install $pkg)" >&2
        missing=1
    fi
}
need gcc gcc
need ld binutils
need objcopy binutils
need make make
if [ "$missing" -ne 0 ]; then
    exit 1
fi

# One build at a time: test assemblies running in parallel each build the guest on first use, and
# make's temporary files (the program table's) are shared. (cli/DefaultImage.cs holds its own lock
# file, .build.lock, around this script; this one is another file, so the two never wait on each other.)
if command -v flock >/dev/null 2>&1; then
    mkdir -p "$here/build"
    exec 9>"$here/build/.make.lock"
    flock 9
fi

make --no-print-directory -C "$here" "$@"

if [ "$#" -eq 0 ] || [ "$1" != "clean" ]; then
    make --no-print-directory -s -C "$here" outputs
fi
