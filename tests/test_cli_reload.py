"""`hsflowd reload --pid PID`: what the unit's ExecReload runs (with systemd's $MAINPID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO}

CATCHER = """
import signal, sys, time
got = []
signal.signal(signal.SIGHUP, lambda *a: got.append(1))
print("ready", flush=True)
deadline = time.monotonic() + 10
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
print("hup" if got else "none", flush=True)
"""


def hsflowd(*args):
    return subprocess.run([sys.executable, "-m", "hsflowd", *args], capture_output=True,
                          text=True, env=ENV, timeout=30)


def test_reload_pid_sends_sighup_to_that_process():
    p = subprocess.Popen([sys.executable, "-c", CATCHER], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        result = hsflowd("reload", "--pid", str(p.pid))
        assert result.returncode == 0, result.stderr
        assert f"pid {p.pid}" in result.stdout
        assert p.stdout.readline().strip() == "hup"
    finally:
        p.kill()
        p.communicate()


def test_reload_pid_of_no_process_is_one_line():
    # a pid that is free: the highest one not in use below pid_max
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    result = hsflowd("reload", "--pid", str(pid))
    assert result.returncode == 1
    assert result.stderr.strip() == f"hsflowd: no such process: {pid}"
