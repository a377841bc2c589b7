"""A real systemd for the tests: a Debian root made with mmdebstrap, booted with
systemd-nspawn (see /work/shared/reference/environment.md, "A real systemd in a container").

PID 1 of the test machines is not systemd, so systemd runs as PID 1 of a container of its
own: its own PID, mount and network namespaces (``--private-network``: only its loopback,
so nothing it does reaches the host's interfaces, routes or firewall), a system bus, and
its own cgroup subtree.  ``--register=no --keep-unit``: there is no host systemd or
machined to tell.

``make_root`` runs mmdebstrap (about 30 s; the tests make one root per session).
``Machine`` boots a root, runs commands inside it (``run``: nsenter into every namespace
of its init), makes sockets in its network namespace (``socket``: a collector the agent
inside can send to), and stops it (``stop``) the way environment.md says works: SIGKILL to
the container's init, which ends its PID namespace and so every process in it, and
systemd-nspawn exits at once (SIGTERM would start a shutdown that takes 10 s or more).
``cleanup`` removes the root.  Nothing is killed by name: the init by its PID, nspawn by
the PID this module started.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

SUITE = "bookworm"
# what the agent needs from Debian (the .deb's Depends, and jeepney for systemd {}), the
# tools the tests use inside, and python3-iptables for nflog { iptables=on }
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-psutil", "python3-pyroute2",
            "python3-dpkt", "python3-jeepney", "iproute2", "iptables", "python3-iptables")
CLONE_NEWNET = 0x40000000
NSPAWN_RUN = Path("/run/systemd/nspawn")


class Unavailable(Exception):
    """A container cannot be made or booted here (one line: why)."""


def why_not() -> Optional[str]:
    """Why no container can be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {package})"
    return None


def make_root(dest: Path, packages: Sequence[str] = PACKAGES, timeout: float = 600) -> Path:
    """A minimal Debian root at ``dest`` with ``packages`` (mmdebstrap, from the mirror the
    host's apt uses)."""
    cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages), SUITE,
           str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise Unavailable(f"mmdebstrap failed ({done.returncode}): "
                          f"{' | '.join(done.stderr.strip().splitlines()[-3:])}")
    return dest


def _children(pid: int) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


class Machine:
    """One booted container (see the module doc).  ``binds`` are (host path, path inside)
    pairs mounted read-only; ``shared`` is a directory both sides see at the same path,
    writable (files handed in and out, ansible's temporary files)."""

    def __init__(self, root: Path, name: str, binds: Sequence[Tuple[str, str]] = (),
                 shared: Optional[Path] = None):
        self.root = Path(root)
        self.name = name
        self.binds = list(binds)
        self.shared = shared
        self.log = Path(tempfile.mkstemp(prefix="hsft-nspawn-", suffix=".log")[1])
        self.proc: Optional[subprocess.Popen] = None
        self.init = 0                     # the container's systemd, as the host sees it
        self._made_nspawn_run = not NSPAWN_RUN.exists()

    # ------------------------------------------------------------ life
    def start(self, timeout: float = 60.0) -> "Machine":
        cmd = ["systemd-nspawn", "-D", str(self.root), "--private-network", "--register=no",
               "--keep-unit", "-M", self.name]
        cmd += [f"--bind-ro={src}:{dest}" for src, dest in self.binds]
        if self.shared is not None:
            cmd.append(f"--bind={self.shared}")
        cmd += ["-b", "--", "systemd.firstboot=off"]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"systemd-nspawn exited ({self.proc.returncode}): "
                                  f"{self.log_tail()}")
            if not self.init:
                kids = _children(self.proc.pid)
                self.init = kids[0] if kids else 0
            elif self.run("systemctl", "is-system-running", check=False).stdout.strip() in (
                    "running", "degraded"):
                return self
            time.sleep(0.2)
        raise Unavailable(f"the container did not boot within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGKILL the container's init (every process inside goes with its PID
        namespace); nspawn exits by itself, or is killed by its PID."""
        if self.init:
            try:
                os.kill(self.init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.init = 0
        if self._made_nspawn_run:     # nspawn's lock and propagation directories
            shutil.rmtree(NSPAWN_RUN, ignore_errors=True)

    def cleanup(self, keep_root: bool = False) -> None:
        """Stop it and remove its log, and its root unless told to keep it."""
        self.stop()
        if not keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self.log.unlink(missing_ok=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------ inside
    def run(self, *cmd: str, check: bool = True, timeout: float = 60.0,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """``cmd`` inside the container (every namespace of its init), to completion."""
        done = subprocess.run(["nsenter", "-t", str(self.init), "-a", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode} in {self.name}: "
                                 f"{done.stdout[-2000:]} {done.stderr[-2000:]}")
        return done

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, **kw)

    def read(self, path: str) -> str:
        """A file as the container sees it (its mounts: /sys/fs/cgroup, /proc, /run)."""
        return self.run("cat", path).stdout

    def host_pid(self, pid: int) -> int:
        """The host's PID of the container's process ``pid`` (NSpid in /proc/PID/status)."""
        ns = os.readlink(f"/proc/{self.init}/ns/pid")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                with open(f"/proc/{entry}/status") as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if int(nspid[-1]) == pid:
                return int(entry)
        raise LookupError(f"no process {pid} in {self.name}")

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket in the container's network namespace (made on a thread that joined it;
        the socket stays there whoever uses it)."""
        made: list = []

        def make():
            try:
                fd = os.open(f"/proc/{self.init}/ns/net", os.O_RDONLY)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                made.append(socket.socket(family, kind))
            except BaseException as e:   # handed to the caller
                made.append(e)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]


__all__ = ["Machine", "PACKAGES", "Unavailable", "make_root", "why_not"]
