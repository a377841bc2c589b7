#!/bin/sh
# Install the agent from this source tree on a Debian or Ubuntu machine (run as root):
# its own virtualenv in /opt/hsflowd, /usr/sbin/hsflowd, /etc/hsflowd.conf (kept if present)
# and the systemd unit (enabled only if you ask: systemctl enable --now hsflowd).
set -eu
cd "$(dirname "$0")/.."
PREFIX_VENV=${VENV:-/opt/hsflowd}
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3 python3-venv python3-pip iptables >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q python3 python3-venv python3-pip iptables >/dev/null; }
fi
# the system Python: the agent runs as nobody once started, and nobody must be able to
# read the interpreter it runs on (a Python under /root, such as pyenv's, is not)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -m venv "$PREFIX_VENV"
"$PREFIX_VENV/bin/pip" install -q --upgrade pip
"$PREFIX_VENV/bin/pip" install -q ".[all]"
ln -sf "$PREFIX_VENV/bin/hsflowd" /usr/sbin/hsflowd
if [ ! -e /etc/hsflowd.conf ]; then
    install -m 0644 conf/hsflowd.conf /etc/hsflowd.conf
fi
if [ -d /lib/systemd/system ]; then
    install -m 0644 hsflowd/data/hsflowd.service /lib/systemd/system/hsflowd.service
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
echo "installed: /usr/sbin/hsflowd ($("$PREFIX_VENV/bin/hsflowd" -v)), config /etc/hsflowd.conf"
