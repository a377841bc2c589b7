"""The counter records of a container's, VM's or service's data source (3:N), and
virt_node (2100).

A guest's sample carries, in hsflowd's order: host_descr (2000), host_parent (2002, the
host 2:1), virt_net_io (2104), virt_cpu (2101), virt_memory (2102), virt_disk_io (2103)
and host_adapters (2001); a service has no interfaces of its own, so no 2104 and no 2001.
The modules fill a ``GuestReading``; this file turns it into records, wrapping counters to
their field's width and sending what is unknown as sFlow says (counters all ones, gauges
0).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from enum import IntEnum
from typing import List, Optional, Sequence, Tuple

from ..sflow import Record
from ..sflow.counters import (UNKNOWN32, UNKNOWN64, HostAdapter, HostAdapters, HostDescr,
                              HostParent, VirtCpu, VirtDiskIo, VirtMemory, VirtNetIo, VirtNode)

HOST_PARENT = (2, 1)     # every guest belongs to the host's physical entity


class VirState(IntEnum):
    """libvirt's virDomainState, which virt_cpu's ``state`` is."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


@dataclass(frozen=True)
class DiskIo:
    """virt_disk_io's values; None is unknown."""

    capacity: int = 0
    allocation: int = 0
    available: int = 0
    rd_req: Optional[int] = None
    rd_bytes: Optional[int] = None
    wr_req: Optional[int] = None
    wr_bytes: Optional[int] = None
    errs: Optional[int] = None


@dataclass(frozen=True)
class NetIo:
    """virt_net_io's values, seen from inside the guest (rx = received by the guest)."""

    rx_bytes: Optional[int] = None
    rx_packets: Optional[int] = None
    rx_errs: Optional[int] = None
    rx_drop: Optional[int] = None
    tx_bytes: Optional[int] = None
    tx_packets: Optional[int] = None
    tx_errs: Optional[int] = None
    tx_drop: Optional[int] = None


@dataclass(frozen=True)
class GuestReading:
    """Everything one counter sample of a guest says."""

    hostname: str
    uuid: bytes                                  # 16 bytes
    state: int = VirState.NOSTATE
    cpu_ns: Optional[int] = None                 # CPU time used
    vcpus: int = 0
    memory: int = 0                              # bytes in use
    max_memory: int = 0                          # bytes it may use
    disk: DiskIo = DiskIo()
    net: Optional[NetIo] = NetIo()               # None: no virt_net_io (a service)
    adapters: Optional[Sequence[Tuple[int, bytes]]] = ()   # (ifIndex, MAC); None: no 2001
    machine_type: int = 0                        # host_descr: 0 unknown
    os_name: int = 0
    os_release: str = ""


def _c32(value: Optional[int]) -> int:
    return UNKNOWN32 if value is None else value & 0xFFFFFFFF


def _c64(value: Optional[int]) -> int:
    return UNKNOWN64 if value is None else value & 0xFFFFFFFFFFFFFFFF


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8 (a string field's maximum)."""
    raw = text.encode("utf-8", "surrogateescape")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def guest_records(r: GuestReading) -> List[Record]:
    """The guest's records, in hsflowd's order."""
    n = r.net
    d = r.disk
    out: List[Record] = [
        HostDescr(hostname=clip(r.hostname, 64), uuid=uuidlib.UUID(bytes=bytes(r.uuid)),
                  machine_type=r.machine_type, os_name=r.os_name,
                  os_release=clip(r.os_release, 32)),
        HostParent(container_type=HOST_PARENT[0], container_index=HOST_PARENT[1])]
    if n is not None:
        out.append(VirtNetIo(rx_bytes=_c64(n.rx_bytes), rx_packets=_c32(n.rx_packets),
                             rx_errs=_c32(n.rx_errs), rx_drop=_c32(n.rx_drop),
                             tx_bytes=_c64(n.tx_bytes), tx_packets=_c32(n.tx_packets),
                             tx_errs=_c32(n.tx_errs), tx_drop=_c32(n.tx_drop)))
    out += [
        VirtCpu(state=int(r.state),
                cpuTime=UNKNOWN32 if r.cpu_ns is None else (r.cpu_ns // 1_000_000) & 0xFFFFFFFF,
                nrVirtCpu=r.vcpus),
        VirtMemory(memory=r.memory, maxMemory=r.max_memory),
        VirtDiskIo(capacity=d.capacity, allocation=d.allocation, available=d.available,
                   rd_req=_c32(d.rd_req), rd_bytes=_c64(d.rd_bytes), wr_req=_c32(d.wr_req),
                   wr_bytes=_c64(d.wr_bytes), errs=_c32(d.errs))]
    if r.adapters is not None:
        out.append(HostAdapters(adapters=[HostAdapter(ifIndex=ifindex, mac_addresses=[mac])
                                          for ifindex, mac in r.adapters]))
    return out


@dataclass
class NodeFacts:
    """virt_node's host figures (psutil, read when the host sample is made)."""

    mhz: int = 0
    cpus: int = 0
    memory: int = 0
    memory_free: int = 0


def read_node_facts() -> NodeFacts:
    import psutil
    vm = psutil.virtual_memory()
    try:
        freq = psutil.cpu_freq()
    except (OSError, RuntimeError, NotImplementedError):
        freq = None
    return NodeFacts(mhz=int(freq.current) if freq else 0, cpus=psutil.cpu_count() or 0,
                     memory=vm.total, memory_free=vm.free)


def virt_node(num_domains: int, facts: Optional[NodeFacts] = None) -> VirtNode:
    """2100 for the host sample: the host as a hypervisor, and how many guests it has."""
    f = facts or read_node_facts()
    return VirtNode(mhz=f.mhz, cpus=f.cpus, memory=f.memory, memory_free=f.memory_free,
                    num_domains=num_domains)


def round_half_up(x: float) -> int:
    """C's round(): 0.5 goes up (Python's round() would give 0)."""
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def vcpus_of(cpu_limit: Optional[float], cpus_allowed: Optional[int], host_cpus: int) -> int:
    """virt_cpu's nrVirtCpu of a cgroup (a container, a service): its CPU quota rounded as
    C's round() (0.5 CPU -> 1, as hsflowd's NanoCpus/1e9), at least 1; without a quota,
    the CPUs it may run on."""
    if cpu_limit:
        return max(1, round_half_up(cpu_limit))
    return cpus_allowed or host_cpus


__all__ = ["DiskIo", "GuestReading", "NetIo", "NodeFacts", "VirState", "guest_records",
           "read_node_facts", "round_half_up", "vcpus_of", "virt_node", "clip"]
