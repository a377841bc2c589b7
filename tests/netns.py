"""Test topologies: network namespaces and veth pairs that the tests create and always remove.

Everything here is named ``hsft<pid>x<n>`` so that a test can only ever touch what it made;
the root namespace's interfaces, routes and firewall are never changed.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
from typing import List, Optional, Sequence, Union

import psutil

_counter = itertools.count(1)


def unique(stem: str = "") -> str:
    """A short name no other test run uses (interface names are limited to 15 bytes)."""
    name = f"hsft{os.getpid() % 100000}{stem}{next(_counter)}"
    return name[:15]


def run(cmd: Union[str, Sequence[str]], check: bool = True, **kw) -> subprocess.CompletedProcess:
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Namespace:
    """One network namespace with loopback up.  ``ns.run("ip addr")`` runs inside it."""

    def __init__(self, name: Optional[str] = None):
        self.name = name or unique("n")
        run(["ip", "netns", "add", self.name])
        self.run("ip link set lo up")
        self.processes: List[subprocess.Popen] = []

    def prefix(self) -> List[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd: Union[str, Sequence[str]], check: bool = True, **kw):
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return run(self.prefix() + args, check=check, **kw)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start a process inside the namespace; it is killed (by its PID) on delete()."""
        proc = subprocess.Popen(self.prefix() + list(cmd), **kw)
        self.processes.append(proc)
        return proc

    def ifindex(self, ifname: str) -> int:
        out = self.run(["cat", f"/sys/class/net/{ifname}/ifindex"]).stdout
        return int(out)

    def mac(self, ifname: str) -> str:
        return self.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()

    def delete(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.processes.clear()
        run(["ip", "netns", "del", self.name], check=False)


def veth(a_ns: Optional[Namespace], a_name: str, b_ns: Optional[Namespace], b_name: str,
         a_addr: Optional[str] = None, b_addr: Optional[str] = None) -> None:
    """A veth pair between two namespaces (None = the namespace this process is in), both up.

    The pair is created inside the first namespace so nothing appears in the root namespace
    even for a moment, unless a_ns is None.
    """
    create = ["ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name]
    if b_ns is not None:
        create += ["netns", b_ns.name]
    if a_ns is not None:
        a_ns.run(create)
    else:
        run(create)
    for ns, name, addr in ((a_ns, a_name, a_addr), (b_ns, b_name, b_addr)):
        runner = ns.run if ns is not None else run
        if addr:
            runner(["ip", "addr", "add", addr, "dev", name])
        runner(["ip", "link", "set", name, "up"])


_OURS = re.compile(r"hsft(\d+)n\d+$")   # Namespace's names: hsft<pid % 100000>n<count>


def _test_runs() -> set:
    """pid % 100000 of every Python process alive now (a test run or one of its workers)."""
    alive = set()
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"]
        if cmdline and "python" in cmdline[0]:
            alive.add(p.pid % 100000)
    return alive


def remove_stale_namespaces() -> list:
    """Delete the namespaces of test runs that were killed before their teardown ran
    (SIGKILL, a timeout): ours by name, from a process that is gone.  A namespace of a run
    still alive, or of anyone else, is never touched."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    alive = _test_runs()
    removed = []
    for name in names:
        m = _OURS.match(name)
        if m and int(m.group(1)) not in alive:
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def is_root() -> bool:
    return os.geteuid() == 0
