"""What the agent reads of a container's process, whichever module reports the container
(docker {}, containerd {}, k8s {}): its cgroup's counters and its network namespace.

The groups are found once per process (``attach``), their files read on every poll; the
namespace's /proc/PID/net/dev too, and its links (host_adapters, the host side of its
veths, and with ``addresses`` its IP addresses) only when the device names in net/dev
change (``sources.vnic``: a thread that joins the namespace).  No daemon is asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import FrozenSet, Iterable, Optional, Sequence, Tuple

from ..sflow.counters import OsName
from ..sources import cgroups, vnic
from .records import DiskIo, GuestReading, NetIo, round_half_up, vcpus_of


@dataclass
class ContainerProcess:
    """One container's process and what was last read of it."""

    pid: int = 0
    cgroup: Optional[cgroups.Cgroup] = None
    counters: cgroups.CgroupCounters = cgroups.CgroupCounters()
    net: Optional[vnic.NetDevCounters] = None  # None: no namespace of its own
    own_netns: bool = True
    devices: FrozenSet[str] = frozenset()      # its net/dev names when the links were read
    adapters: Tuple[Tuple[int, bytes], ...] = ()   # (ifIndex in its namespace, MAC)
    peers: Tuple[int, ...] = ()                # host side of its veths
    ips: Tuple[bytes, ...] = ()                # its namespace's addresses, packed


class ProcessReader:
    """Reads ``ContainerProcess``es: the cgroup mounts (read once), /proc, a logger."""

    def __init__(self, log: logging.Logger, procfs: str = "/proc", addresses: bool = False):
        self.log = log
        self.procfs = procfs
        self.addresses = addresses
        self.mounts: Optional[cgroups.Mounts]
        try:
            self.mounts = cgroups.read_mounts(procfs)
        except OSError as e:
            self.mounts = None
            log.warning("cannot read the cgroup mounts (%s): containers are reported "
                        "without CPU, memory and disk counters", e)

    def attach(self, p: ContainerProcess, pid: int, name: str, net: bool = True) -> bool:
        """Find the groups and (``net``) the links of ``pid``, the container's (new)
        process; whether its links were read."""
        p.pid, p.cgroup = pid, None
        if self.mounts is not None:
            try:
                p.cgroup = cgroups.Cgroup.of_process(pid, self.mounts, self.procfs)
            except OSError as e:
                self.log.debug("container %s: no cgroup (%s)", name, e)
        p.own_netns = net and not vnic.same_netns(pid, self.procfs)
        p.devices = frozenset()
        if not p.own_netns:
            p.net, p.adapters, p.peers, p.ips = None, (), (), ()
            return False
        return self.read_net(p, name)

    def gone(self, p: ContainerProcess) -> bool:
        """Its group went away: it stopped, whether or not its daemon said so."""
        return p.cgroup is not None and not p.cgroup.exists()

    def poll(self, p: ContainerProcess, name: str) -> bool:
        """Read its counters now; whether its links changed."""
        if p.cgroup is not None:
            p.counters = merge(p.counters, p.cgroup.read())
        if p.own_netns and p.pid:
            return self.read_net(p, name)
        return False

    def read_net(self, p: ContainerProcess, name: str) -> bool:
        try:
            devices = vnic.read_net_dev(p.pid, self.procfs)
        except OSError:
            return False        # it stopped: the last counters stand
        names = frozenset(devices)
        changed = names != p.devices and self._read_links(p, name, names)
        p.net = vnic.sum_net_dev(devices)
        return changed

    def _read_links(self, p: ContainerProcess, name: str, names: FrozenSet[str]) -> bool:
        p.devices = names
        try:
            links, addresses = vnic.read_namespace(p.pid, self.procfs, self.addresses)
        except OSError as e:
            self.log.debug("container %s: links not read (%s)", name, e)
            return False
        adapters = vnic.container_adapters(links)
        p.adapters = tuple((i.ifindex, i.mac) for i in adapters)
        p.peers = tuple(x for x in (vnic.peer_ifindex(i) for i in adapters) if x)
        p.ips = tuple(addresses)
        return True


def merge(old: cgroups.CgroupCounters, new: cgroups.CgroupCounters) -> cgroups.CgroupCounters:
    """The new reading, the old value wherever the new one is missing (a group that went
    away between the event and the poll keeps its last counters)."""
    return cgroups.CgroupCounters(*(n if n is not None else o for o, n in zip(old, new)))


@dataclass(frozen=True)
class HostFacts:
    """What a guest's host_descr and limits borrow from the host (read once)."""

    memory: int
    cpus: int
    machine_type: int
    os_release: str

    @classmethod
    def read(cls) -> "HostFacts":
        import os
        import platform

        import psutil

        from ..sources.identity import machine_type_of
        return cls(memory=psutil.virtual_memory().total, cpus=psutil.cpu_count() or 1,
                   machine_type=int(machine_type_of(platform.machine())),
                   os_release=os.uname().release)


def container_reading(name: str, uuid: bytes, state: int, p: ContainerProcess,
                      host: HostFacts, memory_limit: int = 0) -> GuestReading:
    """One container's sample (``memory_limit``: its daemon's, if the cgroup has none)."""
    k = p.counters
    limit = k.memory_limit or memory_limit or host.memory
    return GuestReading(
        hostname=name, uuid=uuid, state=state, cpu_ns=k.cpu_ns,
        vcpus=vcpus_of(k.cpu_limit, k.cpus_allowed, host.cpus), memory=k.memory or 0,
        max_memory=min(limit, host.memory),
        disk=DiskIo(rd_req=k.rd_req, rd_bytes=k.rd_bytes, wr_req=k.wr_req, wr_bytes=k.wr_bytes),
        net=_net_io(p), adapters=p.adapters, machine_type=host.machine_type,
        os_name=int(OsName.LINUX), os_release=host.os_release)


@dataclass
class Retired:
    """What the containers a pod no longer has counted (the counters that only grow: CPU
    time and disk I/O), so that its own never go back when one goes."""

    cpu_ns: Optional[int] = None
    rd_req: Optional[int] = None
    rd_bytes: Optional[int] = None
    wr_req: Optional[int] = None
    wr_bytes: Optional[int] = None

    def add(self, k: cgroups.CgroupCounters) -> None:
        """A container's last counters."""
        for f in fields(self):
            value = getattr(k, f.name)
            if value is not None:
                setattr(self, f.name, (getattr(self, f.name) or 0) + value)


def pod_reading(name: str, uuid: bytes, state: int, members: Sequence[ContainerProcess],
                running: Sequence[ContainerProcess], net: Optional[ContainerProcess],
                host: HostFacts, retired: Optional[Retired] = None,
                sandbox: Optional[ContainerProcess] = None) -> GuestReading:
    """A pod's sample: its containers summed.  Counters (CPU time, disk) add up the
    containers it has (``members``) and those it had (``retired``), so they never go back
    when one goes; gauges (memory, limits, vCPUs) only those running.  Its limits are its
    workloads': the sandbox (the pause container, to which the kubelet gives no limit) is
    left out unless it is all that runs.  A limit counts only if every workload running has
    one; vCPUs are the quotas summed, else the most CPUs any of them may run on.  Its network
    is its namespace's (``net``: the process whose namespace is read)."""
    gone = retired or Retired()
    live = [p.counters for p in running]
    workloads = [p.counters for p in running if p is not sandbox] or live
    limits = [k.memory_limit for k in workloads]
    quotas = [k.cpu_limit for k in workloads]
    if workloads and all(quotas):
        vcpus = max(1, round_half_up(sum(quotas)))
    else:
        vcpus = max([k.cpus_allowed or host.cpus for k in workloads] or [host.cpus])
    memory_limit = sum(limits) if workloads and all(limits) else host.memory
    counted = [p.counters for p in members]
    return GuestReading(
        hostname=name, uuid=uuid, state=state,
        cpu_ns=_sum([gone.cpu_ns] + [k.cpu_ns for k in counted]),
        vcpus=vcpus, memory=sum(k.memory or 0 for k in live),
        max_memory=min(memory_limit, host.memory),
        disk=DiskIo(rd_req=_sum([gone.rd_req] + [k.rd_req for k in counted]),
                    rd_bytes=_sum([gone.rd_bytes] + [k.rd_bytes for k in counted]),
                    wr_req=_sum([gone.wr_req] + [k.wr_req for k in counted]),
                    wr_bytes=_sum([gone.wr_bytes] + [k.wr_bytes for k in counted])),
        net=_net_io(net) if net is not None else NetIo(),
        adapters=net.adapters if net is not None else (), machine_type=host.machine_type,
        os_name=int(OsName.LINUX), os_release=host.os_release)


def _net_io(p: ContainerProcess) -> NetIo:
    return NetIo(**p.net._asdict()) if p.net is not None else NetIo()


def _sum(values: Iterable[Optional[int]]) -> Optional[int]:
    """The known values added up; None if none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None
