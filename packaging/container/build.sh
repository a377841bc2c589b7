#!/bin/sh
# Build the agent's OCI image without a registry (an operator can run it as well as the tests):
#   sh packaging/container/build.sh [IMAGE]          (default hsflowd:latest)
# Environment: DOCKER (the client command, e.g. "docker -H unix:///run/x.sock"), PYTHON (one
# with pip, to build the agent's wheel), BASE (the base image's name), MIRROR (a sources
# file or a Debian mirror for mmdebstrap; default: this machine's apt sources).
#
# 1. The base, unless the daemon has it already: a minimal Debian 12 made by mmdebstrap
#    from Debian's packages (python3 and the agent's Debian dependencies, tini), with no
#    documentation or locales, and /usr merged by mmdebstrap's hook rather than the
#    usrmerge package (which would bring perl, 55 MB), imported as BASE.
# 2. The agent: its wheel (which holds containerd's API description, built by its build
#    step from Debian's golang-github-containerd-containerd-dev) and grpclib's (the version
#    pinned below, checked by its hash), unpacked into the image's dist-packages,
#    /usr/sbin/hsflowd and the entry point.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IMAGE="${1:-hsflowd:latest}"
BASE="${BASE:-hsflowd-base:bookworm}"
DOCKER="${DOCKER:-docker}"
PYTHON="${PYTHON:-python3}"
# the grpclib the image was tested with (on Debian 12's python3-h2 4.1 and python3-multidict
# 6.0): PyPI's wheel, and its hash
GRPCLIB="grpclib==0.4.9 \
--hash=sha256:7762ec1c8ed94dfad597475152dd35cbd11aecaaca2f243e29702435ca24cf0e"
PACKAGES="python3,python3-psutil,python3-pyroute2,python3-dpkt,python3-protobuf,python3-h2,\
python3-multidict,python3-docker,tini"
if [ -z "${MIRROR:-}" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=/etc/apt/sources.list.d/debian.sources
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! $DOCKER image inspect "$BASE" >/dev/null 2>&1; then
    echo "building the base $BASE (mmdebstrap)" >&2
    mmdebstrap --quiet --variant=essential --include="$PACKAGES" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm "$WORK/base.tar" ${MIRROR:-} </dev/null
    $DOCKER import "$WORK/base.tar" "$BASE" >/dev/null
    rm -f "$WORK/base.tar"
fi

SITE="$WORK/context/rootfs/usr/lib/python3/dist-packages"
mkdir -p "$SITE" "$WORK/context/rootfs/usr/sbin" "$WORK/wheels"
$PYTHON -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheels" "$ROOT"
printf '%s\n' "$GRPCLIB" > "$WORK/grpclib.txt"
$PYTHON -m pip download --quiet --no-deps --only-binary :all: --require-hashes \
    --requirement "$WORK/grpclib.txt" --dest "$WORK/wheels"
for wheel in "$WORK"/wheels/*.whl; do
    $PYTHON -m zipfile -e "$wheel" "$SITE"
done
if [ ! -f "$SITE/hsflowd/data/containerd-api.pb" ]; then
    echo "the agent's wheel has no containerd API description: install" \
         "golang-github-containerd-containerd-dev and protobuf-compiler" >&2
    exit 1
fi
printf '#!/usr/bin/python3\nimport sys\nfrom hsflowd.cli import run\nsys.exit(run())\n' \
    > "$WORK/context/rootfs/usr/sbin/hsflowd"
cp "$HERE/entrypoint.sh" "$WORK/context/rootfs/usr/sbin/hsflowd-entrypoint"
chmod 755 "$WORK/context/rootfs/usr/sbin/hsflowd" "$WORK/context/rootfs/usr/sbin/hsflowd-entrypoint"
cp "$HERE/Dockerfile" "$WORK/context/"
$DOCKER build --quiet --build-arg BASE="$BASE" --tag "$IMAGE" "$WORK/context" >/dev/null
echo "$IMAGE"
