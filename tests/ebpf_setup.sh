#!/bin/sh
# Make bcc able to compile the epcap {} program on a machine whose running kernel has no
# headers package (CI's Firecracker kernel): install Debian's bcc and 6.1 headers, then point
# /lib/modules/$(uname -r)/build and /source at them.  Run as root; safe to run again.
#
#   tests/ebpf_setup.sh           set up (the symlinks are meant to stay: CI keeps them)
#   tests/ebpf_setup.sh --remove  undo only what this script made (symlinks, empty directory)
#
# A symlink or directory that was already there is never touched: the script records what it
# made in /lib/modules/$(uname -r)/.hsflowd-ebpf-setup and --remove reads that record.
set -eu
K=$(uname -r)
DIR=/lib/modules/$K
RECORD=$DIR/.hsflowd-ebpf-setup

if [ "${1:-}" = "--remove" ]; then
    [ -f "$RECORD" ] || exit 0
    while read -r made; do
        case $made in
            link:*) [ -L "${made#link:}" ] && rm -f "${made#link:}" ;;
        esac
    done < "$RECORD"
    made_dir=$(grep -c '^dir:' "$RECORD" || true)
    rm -f "$RECORD"
    [ "$made_dir" -gt 0 ] && rmdir "$DIR" 2>/dev/null || true
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
need=""
dpkg -s python3-bpfcc >/dev/null 2>&1 || need="$need python3-bpfcc"
dpkg -s linux-headers-amd64 >/dev/null 2>&1 || need="$need linux-headers-amd64"
if [ -n "$need" ]; then
    apt-get install -y -q $need >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q $need >/dev/null; }
fi

# the newest Debian header pair: linux-headers-<ver>-amd64 (build) and -common (source)
BUILD=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$BUILD" ] || { echo "ebpf_setup: no /usr/src/linux-headers-*-amd64" >&2; exit 1; }
SOURCE=${BUILD%-amd64}-common

if [ ! -d "$DIR" ]; then
    mkdir -p "$DIR"
    echo "dir:$DIR" >> "$RECORD"
fi
for pair in "build:$BUILD" "source:$SOURCE"; do
    link=$DIR/${pair%%:*}
    if [ ! -e "$link" ] && [ ! -L "$link" ]; then
        ln -s "${pair#*:}" "$link"
        echo "link:$link" >> "$RECORD"
    fi
done
echo "ebpf_setup: $DIR/build -> $(readlink "$DIR/build"), $DIR/source -> $(readlink "$DIR/source")"
