"""A process's cgroup counters: CPU time, CPU limit, memory, block I/O; cgroup v1 and v2.

Where they are: /proc/PID/cgroup names the process's group in every hierarchy (v1 lines
``N:controller[,controller]:/path``, the v2 line ``0::/path``), and /proc/self/mountinfo
says where each hierarchy is mounted.  A controller mounted as v1 is read there (a hybrid
host such as Debian without systemd, or Docker's cgroupfs driver on v1); otherwise from the
unified (v2) tree.  The groups are found once per process and the files read on every
poll: a few small reads per container, no Docker API call.

============  =================================  =====================================
what          v1                                 v2
============  =================================  =====================================
CPU time      cpuacct.usage (ns)                 cpu.stat usage_usec
CPU limit     cpu.cfs_quota_us / cfs_period_us   cpu.max ("max 100000", "50000 100000")
CPUs allowed  cpuset.effective_cpus              cpuset.cpus.effective
memory used   memory.usage_in_bytes              memory.current
memory limit  memory.limit_in_bytes              memory.max ("max")
block I/O     blkio.throttle.io_service_bytes_   io.stat (rbytes, wbytes, rios, wios)
              recursive, ..._serviced_recursive
============  =================================  =====================================

A systemd unit's groups are found from its ControlGroup path instead (``Cgroup.of_unit``):
under every v2 mount, and under a v1 controller's only where the unit's accounting for it
is on (systemd makes a unit a v1 group of its own only then).  Its processes are where
systemd tracks them (``tracking_dir``): the v2 tree, else v1's name=systemd hierarchy.

These are the numbers ``docker stats`` shows (Docker reads the same files).  On v1 the
throttle counters stay at zero until a throttle limit is set on the device (blk-throttle
starts lazily; see environment.md); they are what Docker reports all the same.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

# memory.limit_in_bytes with no limit: PAGE_COUNTER_MAX pages, rounded down to a page
# (9223372036854771712 with 4 KiB pages); anything this large means "unlimited"
V1_UNLIMITED = 1 << 62


class Mounts(NamedTuple):
    """Where the hierarchies are: v1 controller -> mount point; the v2 mount point."""

    v1: Dict[str, str]
    v2: Optional[str]


class CgroupCounters(NamedTuple):
    """One reading; None where the host does not have the value."""

    cpu_ns: Optional[int] = None          # CPU time used, nanoseconds
    cpu_limit: Optional[float] = None     # CPUs' worth of quota, None when unlimited
    cpus_allowed: Optional[int] = None    # CPUs in its cpuset
    memory: Optional[int] = None          # bytes in use
    memory_limit: Optional[int] = None    # bytes, None when unlimited
    rd_bytes: Optional[int] = None
    wr_bytes: Optional[int] = None
    rd_req: Optional[int] = None
    wr_req: Optional[int] = None


# ---------------------------------------------------------------- parsing

def parse_mountinfo(text: str) -> Mounts:
    """The cgroup mounts of /proc/self/mountinfo (the first mount of each wins)."""
    v1: Dict[str, str] = {}
    v2: Optional[str] = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point = _unescape(fields[4])
        if tail[0] == "cgroup2":
            v2 = v2 or mount_point
        elif tail[0] == "cgroup":
            # the super options name the controllers ("rw,cpu,cpuacct"); the others
            # ("rw", "xattr", "name=systemd") are never looked up, so they do no harm
            for option in tail[2].split(","):
                v1.setdefault(option, mount_point)
    return Mounts(v1, v2)


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape")


def parse_proc_cgroup(text: str) -> Dict[str, str]:
    """/proc/PID/cgroup: controller -> group path; the v2 group under the key ""."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        else:
            for controller in controllers.split(","):
                out[controller] = path
    return out


def parse_int(text: str) -> int:
    return int(text.split()[0])


def parse_cpu_stat_usage(text: str) -> Optional[int]:
    """v2 cpu.stat: usage_usec, in nanoseconds."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    return None


def parse_cfs(quota: str, period: str) -> Optional[float]:
    """v1 cfs_quota_us / cfs_period_us as CPUs; None when unlimited (quota -1)."""
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def parse_cpu_max(text: str) -> Optional[float]:
    """v2 cpu.max ("max 100000" or "50000 100000") as CPUs; None when unlimited."""
    words = text.split()
    if not words or words[0] == "max":
        return None
    period = int(words[1]) if len(words) > 1 else 100000
    return int(words[0]) / period if period > 0 else None


def parse_cpuset(text: str) -> int:
    """How many CPUs a list such as "0-3,8,10-11" names."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def parse_memory_limit(text: str) -> Optional[int]:
    """v1 memory.limit_in_bytes or v2 memory.max; None when unlimited."""
    value = text.strip()
    if value == "max":
        return None
    limit = int(value)
    return None if limit >= V1_UNLIMITED else limit


def parse_blkio(text: str) -> Tuple[int, int]:
    """v1 blkio ``MAJ:MIN Op value`` lines: the Read and the Write totals over devices."""
    read = write = 0
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3:
            if words[1] == "Read":
                read += int(words[2])
            elif words[1] == "Write":
                write += int(words[2])
    return read, write


def parse_io_stat(text: str) -> Tuple[int, int, int, int]:
    """v2 io.stat: rbytes, wbytes, rios, wios summed over devices."""
    sums = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
    for line in text.splitlines():
        for word in line.split()[1:]:
            key, _, value = word.partition("=")
            if key in sums:
                sums[key] += int(value)
    return sums["rbytes"], sums["wbytes"], sums["rios"], sums["wios"]


# ---------------------------------------------------------------- reading

CLONE_NEWCGROUP = 0x02000000


def join_init_cgroup_namespace(procfs: str = "/proc", init: int = 1) -> bool:
    """Join PID 1's cgroup namespace if this process is in another one; True if it did.

    In a container with a cgroup namespace of its own (containerd gives every
    unprivileged container one on cgroup v2 hosts), /proc/PID/cgroup shows the other
    containers' groups as "/../.." paths that lead nowhere under the mounted tree; in the
    host's namespace (PID 1's, with the host's PID namespace) they are the paths under the
    host's cgroup tree.  Only the calling thread joins: call it before any thread starts.
    Needs CAP_SYS_ADMIN; OSError if it is refused.  (``init``: whose namespace, for tests.)"""
    from ..libc import libc
    theirs = os.path.join(procfs, str(init), "ns", "cgroup")
    mine = os.path.join(procfs, "self", "ns", "cgroup")
    try:
        if os.stat(theirs).st_ino == os.stat(mine).st_ino:
            return False
        fd = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False           # no cgroup namespaces, or PID 1 is not ours to see
    try:
        if libc().setns(fd, CLONE_NEWCGROUP) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


def read_mounts(procfs: str = "/proc") -> Mounts:
    with open(os.path.join(procfs, "self/mountinfo")) as f:
        return parse_mountinfo(f.read())


@dataclass(frozen=True)
class Cgroup:
    """The directories of one process's groups: v1 per controller, and v2."""

    v1: Dict[str, str]
    v2: Optional[str]

    @classmethod
    def of_process(cls, pid: int, mounts: Mounts, procfs: str = "/proc") -> "Cgroup":
        """The groups of ``pid`` (OSError if it is gone)."""
        with open(os.path.join(procfs, str(pid), "cgroup")) as f:
            # a group outside this process's cgroup namespace ("/../..") is out of reach
            groups = {c: path for c, path in parse_proc_cgroup(f.read()).items()
                      if not path.startswith("/..")}
        v1 = {controller: os.path.join(mount, groups[controller].lstrip("/"))
              for controller, mount in mounts.v1.items() if controller in groups}
        v2 = None
        if mounts.v2 is not None and "" in groups:
            v2 = os.path.join(mounts.v2, groups[""].lstrip("/"))
        if not v1 and v2 is None:
            raise OSError(f"the cgroups of process {pid} are not in this agent's view")
        return cls(v1, v2)

    @classmethod
    def of_unit(cls, path: str, mounts: Mounts, v1_controllers: Iterable[str] = ()) -> "Cgroup":
        """The groups of a systemd unit whose ControlGroup is ``path``: v2's, and v1's for
        ``v1_controllers`` (those its accounting turns on)."""
        v1 = {c: os.path.join(mounts.v1[c], path.lstrip("/"))
              for c in v1_controllers if c in mounts.v1}
        v2 = os.path.join(mounts.v2, path.lstrip("/")) if mounts.v2 is not None else None
        return cls(v1, v2)

    def _file(self, controller: str, v1_name: str, v2_name: Optional[str]) -> Optional[str]:
        """The file to read: v1 if that controller is mounted as v1, else v2."""
        if controller in self.v1:
            return os.path.join(self.v1[controller], v1_name)
        if self.v2 is not None and v2_name is not None:
            return os.path.join(self.v2, v2_name)
        return None

    def read(self) -> CgroupCounters:
        """Every counter that can be read now (None for the others)."""
        values: Dict[str, object] = {}
        usage = self._file("cpuacct", "cpuacct.usage", None)
        if usage is not None:
            values["cpu_ns"] = _read(usage, parse_int)
        elif self.v2 is not None:
            values["cpu_ns"] = _read(os.path.join(self.v2, "cpu.stat"), parse_cpu_stat_usage)
        if "cpu" in self.v1:
            quota = _read(os.path.join(self.v1["cpu"], "cpu.cfs_quota_us"), str)
            period = _read(os.path.join(self.v1["cpu"], "cpu.cfs_period_us"), str)
            if quota is not None and period is not None:
                values["cpu_limit"] = parse_cfs(quota, period)
        elif self.v2 is not None:
            values["cpu_limit"] = _read(os.path.join(self.v2, "cpu.max"), parse_cpu_max)
        cpuset = self._file("cpuset", "cpuset.effective_cpus", "cpuset.cpus.effective")
        if cpuset is not None:
            values["cpus_allowed"] = _read(cpuset, parse_cpuset)
        memory = self._file("memory", "memory.usage_in_bytes", "memory.current")
        if memory is not None:
            values["memory"] = _read(memory, parse_int)
        limit = self._file("memory", "memory.limit_in_bytes", "memory.max")
        if limit is not None:
            values["memory_limit"] = _read(limit, parse_memory_limit)
        if "blkio" in self.v1:
            base = self.v1["blkio"]
            data = _read(os.path.join(base, "blkio.throttle.io_service_bytes_recursive"), parse_blkio)
            ios = _read(os.path.join(base, "blkio.throttle.io_serviced_recursive"), parse_blkio)
            if data is not None:
                values["rd_bytes"], values["wr_bytes"] = data
            if ios is not None:
                values["rd_req"], values["wr_req"] = ios
        elif self.v2 is not None:
            io = _read(os.path.join(self.v2, "io.stat"), parse_io_stat)
            if io is not None:
                values["rd_bytes"], values["wr_bytes"], values["rd_req"], values["wr_req"] = io
        return CgroupCounters(**values)

    def exists(self) -> bool:
        """Whether the group is still there (it goes when the container stops)."""
        some = next(iter(self.v1.values()), None) or self.v2
        return some is not None and os.path.isdir(some)


def tracking_dir(path: str, mounts: Mounts) -> Optional[str]:
    """Where systemd keeps the processes of the unit whose ControlGroup is ``path``: the v2
    tree (pure or hybrid), else v1's name=systemd hierarchy; None if neither is mounted."""
    base = mounts.v2 if mounts.v2 is not None else mounts.v1.get("name=systemd")
    return os.path.join(base, path.lstrip("/")) if base is not None else None


def read_pids(directory: str) -> List[int]:
    """The processes in a group and in the groups below it (a unit that delegates has
    its processes in sub-groups); [] if the group is gone."""
    pids: List[int] = []
    for here, _dirs, _files in os.walk(directory):
        try:
            with open(os.path.join(here, "cgroup.procs")) as f:
                pids.extend(int(word) for word in f.read().split())
        except (OSError, ValueError):
            pass
    return pids


def _read(path: str, parse):
    """``parse(text of path)``, or None if the file is missing or unreadable."""
    try:
        with open(path) as f:
            return parse(f.read())
    except (OSError, ValueError, IndexError):
        return None
