"""Open vSwitch for tests: a private ovsdb-server (and ovs-vswitchd) that the test owns.

Each OvsdbServer lives in its own short directory under /tmp (a unix socket path must stay
under 108 bytes) with OVS_RUNDIR, OVS_LOGDIR and OVS_DBDIR pointed there, so nothing in
/var/run/openvswitch is touched.  Processes run in the foreground under Popen and are
stopped by their PID.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def missing_tools() -> Optional[str]:
    """Why these tests cannot run here, or None."""
    for tool in ("ovsdb-server", "ovsdb-tool", "ovs-vsctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install openvswitch-switch)"
    if not os.path.exists(SCHEMA):
        return f"{SCHEMA} is missing"
    return None


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class OvsdbServer:
    """A fresh Open_vSwitch database served on ``unix:<dir>/db.sock``."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hsft-ovs-", dir="/tmp")
        self.db = os.path.join(self.dir, "conf.db")
        self.sock = os.path.join(self.dir, "db.sock")
        self.remote = "unix:" + self.sock
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir)
        self.proc: Optional[subprocess.Popen] = None
        subprocess.run(["ovsdb-tool", "create", self.db, SCHEMA], check=True,
                       capture_output=True)

    def start(self) -> "OvsdbServer":
        self.proc = subprocess.Popen(
            ["ovsdb-server", self.db, f"--remote=punix:{self.sock}",
             f"--pidfile={self.dir}/ovsdb-server.pid", f"--unixctl={self.dir}/ovsdb-server.ctl",
             f"--log-file={self.dir}/ovsdb-server.log"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ovsdb-server did not start; see {self.dir}/ovsdb-server.log")
            time.sleep(0.02)
        return self

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.sock)
                return True
            except OSError:
                return False

    def kill(self) -> None:
        """Like a crash: SIGKILL, the socket file stays behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- looking and poking, as a person would with ovs-vsctl ----

    def vsctl(self, *args: str) -> str:
        proc = subprocess.run(["ovs-vsctl", f"--db={self.remote}", "--no-wait", "--timeout=5",
                               *args], capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"ovs-vsctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def sflow_rows(self) -> Dict[str, Dict[str, Any]]:
        """Every sFlow row by uuid, columns as plain Python values."""
        table = json.loads(self.vsctl("--format=json", "list", "sflow"))
        rows = {}
        for data in table["data"]:
            row = {name: _plain(value) for name, value in zip(table["headings"], data)}
            rows[row.pop("_uuid")] = row
        return rows

    def bridge_sflow(self, bridge: str) -> Optional[str]:
        value = self.vsctl("get", "bridge", bridge, "sflow")    # a uuid or []
        return None if value == "[]" else value


def _plain(value: Any) -> Any:
    """OVSDB JSON to Python: ["uuid", u] -> u, ["set", [...]] -> list, ["map", ...] -> dict."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, inner = value
        if kind in ("uuid", "named-uuid"):
            return inner
        if kind == "set":
            return [_plain(v) for v in inner]
        if kind == "map":
            return {_plain(k): _plain(v) for k, v in inner}
    return value


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is true (returns its value) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Vswitchd:
    """ovs-vswitchd inside a test namespace, on the server's database."""

    def __init__(self, server: OvsdbServer, prefix: Sequence[str] = ()):
        self.server = server
        self.ctl = f"{server.dir}/ovs-vswitchd.ctl"
        self.proc = subprocess.Popen(
            [*prefix, "ovs-vswitchd", server.remote, f"--pidfile={server.dir}/ovs-vswitchd.pid",
             f"--unixctl={self.ctl}", f"--log-file={server.dir}/ovs-vswitchd.log"],
            env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: os.path.exists(self.ctl) or self.proc.poll() is not None,
                     what="ovs-vswitchd's control socket")
        finally:
            if self.proc.poll() is not None or not os.path.exists(self.ctl):
                stop_pid(self.proc)
        if self.proc.poll() is not None:
            raise RuntimeError(f"ovs-vswitchd exited; see {server.dir}/ovs-vswitchd.log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(["ovs-appctl", "-t", self.ctl, "exit", "--cleanup"],
                           capture_output=True, env=self.server.env, timeout=5)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        stop_pid(self.proc)
