"""The network interfaces of another network namespace (a container's): counters and links.

Counters: /proc/PID/net/dev is the device table of PID's network namespace, read from here
without entering it (procfs shows each process's own namespace), so a poll costs one file
read per container and no setns.

Links (ifindex, name, MAC, and a veth's peer ifindex in our namespace): /proc has no MACs,
and /sys/class/net shows the namespace that mounted sysfs, not PID's.  So a thread of ours
joins PID's namespace (setns(2) changes only the calling thread), opens an rtnetlink socket
there and dumps the links, then ends; the rest of the agent never leaves its namespace.
This is done when a container starts and when the device names in its net/dev change, not
per poll.  It needs CAP_SYS_ADMIN (the docker module keeps root, as hsflowd's does).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from typing import Dict, List, NamedTuple, Optional, Tuple

from .interfaces import ADDRESS_DUMP, IFA_ADDRESS, IFADDRMSG, RTM_GETADDR, Interface, dump_links
from .rtnetlink import NetlinkSocket, attributes


class NetDevCounters(NamedTuple):
    """One line of /proc/net/dev: the fields virt_net_io (2104) carries."""

    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errs: int = 0
    rx_drop: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errs: int = 0
    tx_drop: int = 0


def parse_net_dev(text: str) -> Dict[str, NetDevCounters]:
    """/proc/net/dev: device -> counters (two header lines, then ``name: 16 numbers``)."""
    out: Dict[str, NetDevCounters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        v = rest.split()
        if len(v) < 12:
            continue
        out[name.strip()] = NetDevCounters(
            rx_bytes=int(v[0]), rx_packets=int(v[1]), rx_errs=int(v[2]), rx_drop=int(v[3]),
            tx_bytes=int(v[8]), tx_packets=int(v[9]), tx_errs=int(v[10]), tx_drop=int(v[11]))
    return out


def read_net_dev(pid: int, procfs: str = "/proc") -> Dict[str, NetDevCounters]:
    """PID's namespace's device counters (OSError when the process is gone)."""
    with open(os.path.join(procfs, str(pid), "net/dev")) as f:
        return parse_net_dev(f.read())


def sum_net_dev(devices: Dict[str, NetDevCounters], skip=("lo",)) -> NetDevCounters:
    """The counters of every device but loopback, added up (as ``docker stats`` shows)."""
    total = [0] * len(NetDevCounters._fields)
    for name, counters in devices.items():
        if name in skip:
            continue
        for i, value in enumerate(counters):
            total[i] += value
    return NetDevCounters(*total)


def same_netns(pid: int, procfs: str = "/proc") -> bool:
    """Whether PID shares this process's network namespace (a --network host container)."""
    try:
        mine = os.stat(os.path.join(procfs, "self/ns/net"))
        theirs = os.stat(os.path.join(procfs, str(pid), "ns/net"))
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


class NetnsError(OSError):
    """The namespace cannot be entered or read (one line: why)."""


def read_namespace(pid: int, procfs: str = "/proc", addresses: bool = False,
                   timeout: float = 2.0) -> Tuple[List[Interface], List[bytes]]:
    """The links of PID's network namespace and, with ``addresses``, its IP addresses
    (packed, loopback's left out), read by a thread that joins it."""
    path = os.path.join(procfs, str(pid), "ns/net")
    result: list = []

    def in_namespace():
        try:
            from pyroute2 import netns            # netns.setns: for Pythons before 3.12
            try:
                netns.setns(path, flags=0)        # join only: pyroute2 would make a missing one
            except OSError as e:
                raise OSError(e.errno, f"setns: {os.strerror(e.errno or 0)}") from None
            with NetlinkSocket() as nl:
                links = list(dump_links(nl))
                found = [_packed(body) for _, body in nl.request(RTM_GETADDR, ADDRESS_DUMP,
                                                                 dump=True)] if addresses else []
            result.append((links, [a for a in found if a]))
        except BaseException as e:  # handed to the caller's thread
            result.append(e)

    thread = threading.Thread(target=in_namespace, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise NetnsError(f"reading the links of {path} took more than {timeout} s")
    if isinstance(result[0], BaseException):
        e = result[0]
        if isinstance(e, OSError):
            raise NetnsError(e.errno, f"{path}: {e.strerror or e}")
        raise NetnsError(f"{path}: {e}")
    return result[0]


def _packed(body: bytes) -> Optional[bytes]:
    """An RTM_NEWADDR's address, packed; None for loopback's and link-local IPv6."""
    packed = attributes(body, IFADDRMSG.size).get(IFA_ADDRESS)
    try:
        address = ipaddress.ip_address(packed)
    except ValueError:
        return None
    if address.is_loopback or (address.version == 6 and address.is_link_local):
        return None
    return address.packed


def container_adapters(links: List[Interface]) -> List[Interface]:
    """The links a container's host_adapters (2001) lists: up, not loopback, with a MAC
    (hsflowd's readVNIC: up && !loopback, and a MAC)."""
    return [i for i in sorted(links, key=lambda i: i.ifindex)
            if i.admin_up and not i.loopback and len(i.mac) == 6 and any(i.mac)]


def peer_ifindex(link: Interface) -> Optional[int]:
    """For a container's veth: the ifindex of its other end, which lives in another
    namespace (ours, for Docker's bridge network); None otherwise."""
    if link.is_veth and link.link and link.link_netnsid is not None:
        return link.link
    return None
