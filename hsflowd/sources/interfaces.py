"""The interface table: links and addresses from rtnetlink, kept current by netlink events.

``InterfaceTable`` dumps every link and address once (pyroute2 ``IPRoute``), then follows
RTM_NEWLINK/DELLINK/NEWADDR/DELADDR on a second socket bound to the link and IPv4/IPv6
address multicast groups.  ``handle_events`` drains that socket without blocking and says
which ifindexes changed; if the kernel dropped events (ENOBUFS) it re-dumps everything.

Speed and duplex come from ethtool (pyroute2's ``Ethtool``), read only when a
link appears or its up/running state changes, never on a counter poll.  Counters for all
links come from one RTM_GETSTATS dump (IFLA_STATS_LINK_64) per poll; the sample pools'
once-a-second packet counts come from sysfs (``read_packet_counts``: microseconds, where a
netlink request costs milliseconds).

The event socket is a plain non-blocking AF_NETLINK socket whose link messages pyroute2's
``ifinfmsg`` decodes: pyroute2 0.9's ``IPRoute.get()`` reads through an asyncio transport
that buffers datagrams behind the file descriptor, so ``select()`` on it misses queued
events (measured: 5 of 10 RTM_NEWLINK lost).  A plain socket behaves the same under
pyroute2 0.7 and 0.9.  Address events make the table re-read the addresses in one dump.

The records built from this table (``interface_counters``, ``host_adapters``,
``nio_interfaces``) live in ``ifcounters`` and are importable from here too.
"""

from __future__ import annotations

import errno
import os
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass, field, replace
from typing import (Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple,
                    Union)

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ..netlink import discard_stray_replies

log = logging.getLogger(__name__)

__all__ = [
    "Address", "Interface", "InterfaceTable", "LinkStats", "Vxlan",
    "interface_counters", "host_adapters", "local_addresses", "nio_interfaces", "raw_attr",
]

# <linux/if.h>
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
IFF_MASTER = 0x400
IFF_SLAVE = 0x800
IFF_LOWER_UP = 0x10000

# <linux/if_addr.h> IFA_F_*; 0x01 is SECONDARY for IPv4 and TEMPORARY (privacy) for IPv6
IFA_F_SECONDARY = 0x01
IFA_F_TEMPORARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFA_F_MANAGETEMPADDR = 0x100
IFA_F_NOPREFIXROUTE = 0x200
IFA_PROTO = 11              # attribute type; pyroute2 0.7 does not decode it
IFAPROT_KERNEL_RA = 2       # from a router advertisement (SLAAC); 1 is lo, 3 link-local

# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
NLMSG_HDRLEN = 16
IFADDRMSG_LEN = 8

_V6_LINK_LOCAL = ipaddress.ip_network("fe80::/10")
SINGLE_REQUEST_LIMIT = 16   # up to this many links, counters are asked for link by link


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Address:
    """One address on an interface: ``addr`` is an ``ip_interface`` (address and prefix)."""

    addr: Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
    flags: int = IFA_F_PERMANENT
    scope: int = 0
    proto: int = 0          # IFA_PROTO (kernel 5.18+), 0 when unknown
    label: str = ""

    @property
    def ip(self):
        return self.addr.ip

    @property
    def network(self):
        return self.addr.network

    @property
    def version(self) -> int:
        return self.addr.version

    @property
    def secondary(self) -> bool:
        return self.version == 4 and bool(self.flags & IFA_F_SECONDARY)

    @property
    def temporary(self) -> bool:
        return self.version == 6 and bool(self.flags & IFA_F_TEMPORARY)

    @property
    def deprecated(self) -> bool:
        return bool(self.flags & IFA_F_DEPRECATED)

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dadfailed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)

    @property
    def permanent(self) -> bool:
        return bool(self.flags & IFA_F_PERMANENT)

    @property
    def slaac(self) -> bool:
        """An IPv6 address made by stateless autoconfiguration, not by an administrator.

        Certain when the kernel says so (IFA_PROTO kernel_ra), or for privacy addresses
        and their ``mngtmpaddr`` template.  Otherwise inferred: a /64 with a finite
        lifetime (no IFA_F_PERMANENT) is what SLAAC makes, including NetworkManager's
        user-space SLAAC; DHCPv6 leases are /128 and static addresses are permanent.
        """
        if self.version != 6 or self.ip in _V6_LINK_LOCAL:
            return False
        if self.proto == IFAPROT_KERNEL_RA or self.flags & (IFA_F_TEMPORARY | IFA_F_MANAGETEMPADDR):
            return True
        return not self.flags & IFA_F_PERMANENT and self.addr.network.prefixlen == 64


class Vxlan(NamedTuple):
    """A VXLAN device's tunnel, from IFLA_INFO_DATA (``ip -d link show`` says the same).

    ``remote`` is IFLA_VXLAN_GROUP/GROUP6: the fixed remote end, or the multicast group;
    addresses are strings as pyroute2 gives them, "" when not set.  ``external`` is
    collect_metadata (flow-based, as Open vSwitch's vxlan_sys_4789): every packet carries
    its own VNI and remote, so the device has neither."""

    vni: int = 0
    local: str = ""
    remote: str = ""
    port: int = 4789        # the UDP destination port (IFLA_VXLAN_PORT)
    tos: int = 0            # 1 = inherit the inner packet's
    link: int = 0           # the underlay device (IFLA_VXLAN_LINK), 0 if not bound
    learning: bool = True
    external: bool = False


@dataclass
class Interface:
    """One link in this network namespace, as rtnetlink and ethtool describe it.

    ``kind`` is IFLA_INFO_KIND ("" for physical NICs and lo).  ``link`` is IFLA_LINK: the
    lower device of a macvlan/vlan, or a veth's peer; ``link_netnsid`` is set when that
    device lives in another namespace (then ``link`` is an ifindex over there).
    ``speed`` is in bits/s (0 unknown); ``duplex`` "full", "half" or "".  ``vxlan`` is
    set for VXLAN devices only.
    """

    ifindex: int
    name: str
    mac: bytes = b""
    kind: str = ""
    master: int = 0
    link: int = 0
    link_netnsid: Optional[int] = None
    speed: int = 0
    duplex: str = ""
    admin_up: bool = False
    oper_up: bool = False
    promisc: bool = False
    loopback: bool = False
    mtu: int = 0
    addresses: List[Address] = field(default_factory=list)
    flags: int = 0          # raw IFF_* bits
    operstate: str = ""     # IFLA_OPERSTATE: "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN", ...
    alias: str = ""         # IFLA_IFALIAS (hsflowd's agent= also matches aliases)
    vxlan: Optional[Vxlan] = None

    @property
    def is_vlan(self) -> bool:
        return self.kind == "vlan"

    @property
    def is_bond_master(self) -> bool:
        return bool(self.flags & IFF_MASTER) or self.kind == "bond"

    @property
    def is_veth(self) -> bool:
        return self.kind == "veth"

    @property
    def peer_here(self) -> bool:
        """A veth whose other end is in this namespace too (``link`` is its ifindex)."""
        return self.is_veth and self.link != 0 and self.link_netnsid is None


class LinkStats(NamedTuple):
    """struct rtnl_link_stats64 as the kernel reports it (the 23 fields pyroute2 decodes)."""

    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    multicast: int = 0
    collisions: int = 0
    rx_length_errors: int = 0
    rx_over_errors: int = 0
    rx_crc_errors: int = 0
    rx_frame_errors: int = 0
    rx_fifo_errors: int = 0
    rx_missed_errors: int = 0
    tx_aborted_errors: int = 0
    tx_carrier_errors: int = 0
    tx_fifo_errors: int = 0
    tx_heartbeat_errors: int = 0
    tx_window_errors: int = 0
    rx_compressed: int = 0
    tx_compressed: int = 0

    @classmethod
    def from_nla(cls, value) -> "LinkStats":
        return cls(**{name: int(value.get(name, 0) or 0) for name in cls._fields})


# ---------------------------------------------------------------- parsing netlink messages

def _mac(text: Optional[str]) -> bytes:
    """IFLA_ADDRESS as pyroute2 prints it ("aa:bb:..."), kept only if it is a 6-byte MAC."""
    if not text:
        return b""
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return b""
    return raw if len(raw) == 6 else b""


def parse_vxlan(data) -> Vxlan:
    """A VXLAN device's IFLA_INFO_DATA, as pyroute2 (0.7 and 0.9) decodes it."""
    get = data.get_attr
    port = get("IFLA_VXLAN_PORT")
    return Vxlan(
        vni=get("IFLA_VXLAN_ID") or 0,
        local=get("IFLA_VXLAN_LOCAL") or get("IFLA_VXLAN_LOCAL6") or "",
        remote=get("IFLA_VXLAN_GROUP") or get("IFLA_VXLAN_GROUP6") or "",
        port=4789 if port is None else port,
        tos=get("IFLA_VXLAN_TOS") or 0,
        link=get("IFLA_VXLAN_LINK") or 0,
        learning=bool(get("IFLA_VXLAN_LEARNING")),
        external=bool(get("IFLA_VXLAN_COLLECT_METADATA")),
    )


def parse_link(msg) -> Interface:
    """An ``Interface`` from one RTM_NEWLINK message (speed, duplex and addresses empty)."""
    flags = msg["flags"]
    netnsid = msg.get_attr("IFLA_LINK_NETNSID")
    info = msg.get_attr("IFLA_LINKINFO")
    kind = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
    vxlan = None
    if kind == "vxlan":
        data = info.get_attr("IFLA_INFO_DATA")
        vxlan = parse_vxlan(data) if data is not None else None
    return Interface(
        ifindex=msg["index"],
        name=msg.get_attr("IFLA_IFNAME") or "",
        mac=_mac(msg.get_attr("IFLA_ADDRESS")),
        kind=kind,
        master=msg.get_attr("IFLA_MASTER") or 0,
        link=msg.get_attr("IFLA_LINK") or 0,
        link_netnsid=netnsid,
        admin_up=bool(flags & IFF_UP),
        # IFF_RUNNING is RFC 2863 "operationally up" (operstate UP, or UNKNOWN as on lo)
        oper_up=bool(flags & IFF_RUNNING),
        promisc=bool(flags & IFF_PROMISC),
        loopback=bool(flags & IFF_LOOPBACK),
        mtu=msg.get_attr("IFLA_MTU") or 0,
        flags=flags,
        operstate=msg.get_attr("IFLA_OPERSTATE") or "",
        alias=msg.get_attr("IFLA_IFALIAS") or "",
        vxlan=vxlan,
    )


def raw_attr(msg, header: int, nla_type: int) -> Optional[bytes]:
    """The payload of one attribute read from the raw message (for attributes pyroute2
    does not know, such as IFA_PROTO or INET_DIAG_CGROUP_ID in 0.7).  ``header`` is the fixed part after nlmsghdr."""
    try:
        data, base = msg.data, msg.offset
        end = base + msg["header"]["length"]
    except (AttributeError, KeyError, TypeError):
        return None
    off = base + NLMSG_HDRLEN + header
    while off + 4 <= end:
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            return None
        if kind & 0x3FFF == nla_type:
            return bytes(data[off + 4:off + length])
        off += (length + 3) & ~3
    return None


def local_addresses(interfaces: Iterable[Interface]) -> FrozenSet[bytes]:
    """Every address of this host (packed), from the interface table."""
    return frozenset(a.ip.packed for iface in interfaces for a in iface.addresses)


def parse_addr(msg) -> Optional[Tuple[int, Address]]:
    """(ifindex, Address) from one RTM_NEWADDR/DELADDR message, None if not IPv4/IPv6."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links
    # (and the only one present on most IPv6 addresses)
    text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if not text:
        return None
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    proto = msg.get_attr("IFA_PROTO")
    if proto is None:
        raw = raw_attr(msg, IFADDRMSG_LEN, IFA_PROTO)
        proto = raw[0] if raw else 0
    return msg["index"], Address(
        addr=ipaddress.ip_interface(f"{text}/{msg['prefixlen']}"),
        flags=flags,
        scope=msg["scope"],
        proto=int(proto or 0),
        label=msg.get_attr("IFA_LABEL") or "",
    )


# ---------------------------------------------------------------- ethtool (speed, duplex)

def read_link_speed(ethtool, name: str) -> Tuple[int, str]:
    """(speed in bits/s, duplex) of one device from pyroute2's ethtool; (0, "") if unknown
    (no such device, a device without link settings such as lo, or no link)."""
    try:
        mode = ethtool.get_link_mode(name)
    except Exception:  # pyroute2's EthtoolError and OSError: the answer is "unknown"
        return 0, ""
    speed = mode.speed if mode.speed and mode.speed not in (0xFFFF, 0xFFFFFFFF) else 0
    duplex = (mode.duplex or "").lower()
    return speed * 1_000_000, duplex if duplex in ("full", "half") else ""


def _read_int(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(os.read(fd, 32))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the table

def _speed_relevant(iface: Interface) -> Tuple:
    """What, when it changes, makes us ask ethtool again (a renegotiation drops carrier)."""
    return iface.kind, iface.admin_up, iface.oper_up, iface.flags & IFF_LOWER_UP


class InterfaceTable:
    """Every link of this network namespace, with its addresses, kept current by events.

    Open it in the namespace it should describe: its sockets stay bound to that namespace
    whichever thread uses them later.
    """

    def __init__(self, rcvbuf: int = 1 << 20):
        self.resyncs = 0            # full re-dumps after the kernel dropped events
        self.ethtool_reads = 0      # how often speed/duplex were read (telemetry, tests)
        self._getstats = True       # RTM_GETSTATS works here (Linux 4.7+)
        self._links: Dict[int, Interface] = {}
        self._ipr = IPRoute()
        self._ethtool = Ethtool()   # its ioctl socket decides the namespace names are looked up in
        # subscribe before dumping, so nothing that happens during the dump is missed
        self._events = socket.socket(socket.AF_NETLINK,
                                     socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                     socket.NETLINK_ROUTE)
        try:
            self._events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._events.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._resync()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ lookups

    def __getitem__(self, ifindex: int) -> Interface:
        return self._links[ifindex]

    def get(self, ifindex: int, default=None) -> Optional[Interface]:
        return self._links.get(ifindex, default)

    def by_name(self, name: str) -> Optional[Interface]:
        for iface in self._links.values():
            if iface.name == name:
                return iface
        return None

    def __iter__(self) -> Iterator[Interface]:
        return iter([self._links[i] for i in sorted(self._links)])

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, ifindex: object) -> bool:
        return ifindex in self._links

    def fileno(self) -> int:
        """The event socket, for select()/poll(): readable means call handle_events()."""
        return self._events.fileno()

    # ------------------------------------------------------------ dumps

    def refresh(self) -> None:
        """Re-read every link and address (ethtool only for new or changed links)."""
        self._resync()

    def _resync(self) -> Set[int]:
        old = self._links
        links: Dict[int, Interface] = {}
        for msg in self._ipr.get_links():
            if msg["family"] != socket.AF_UNSPEC:
                continue
            iface = parse_link(msg)
            links[iface.ifindex] = self._with_speed(iface, old.get(iface.ifindex))
        for msg in self._ipr.get_addr():
            parsed = parse_addr(msg)
            if parsed and parsed[0] in links:
                links[parsed[0]].addresses.append(parsed[1])
        self._links = links
        return {i for i in set(old) | set(links) if old.get(i) != links.get(i)}

    def _with_speed(self, iface: Interface, previous: Optional[Interface]) -> Interface:
        if previous is not None and _speed_relevant(previous) == _speed_relevant(iface):
            iface.speed, iface.duplex = previous.speed, previous.duplex
        elif not iface.loopback:
            self.ethtool_reads += 1
            iface.speed, iface.duplex = read_link_speed(self._ethtool, iface.name)
        return iface

    def read_packet_counts(self, ifindexes: Iterable[int], sysfs: str = "/sys") -> Dict[int, int]:
        """ifindex -> rx + tx packets, read from sysfs: what the sample pools need each
        second.  Three small reads a link (the ifindex file confirms the name still is
        that link) cost microseconds; a netlink request through pyroute2 costs
        milliseconds.  A link whose files cannot be read is left out."""
        out: Dict[int, int] = {}
        for ifindex in ifindexes:
            iface = self._links.get(ifindex)
            if iface is None:
                continue
            base = f"{sysfs}/class/net/{iface.name}/"
            try:
                if _read_int(base + "ifindex") != ifindex:
                    continue
                out[ifindex] = (_read_int(base + "statistics/rx_packets")
                                + _read_int(base + "statistics/tx_packets"))
            except (OSError, ValueError):
                continue
        return out

    def read_counters(self, ifindexes: Optional[Iterable[int]] = None) -> Dict[int, LinkStats]:
        """ifindex -> LinkStats for every link (or for ``ifindexes``): RTM_GETSTATS for
        IFLA_STATS_LINK_64 only (a third of the cost of a full link dump), else the
        IFLA_STATS64 of a link dump.  A few links are asked for one by one, so a host with
        hundreds of interfaces pays for the ones it samples, not for all of them."""
        if ifindexes is not None:
            wanted = list(ifindexes)
            if self._getstats and len(wanted) <= SINGLE_REQUEST_LIMIT:
                out: Dict[int, LinkStats] = {}
                for ifindex in wanted:
                    try:
                        for msg in self._ipr.stats("get", ifindex=ifindex, filter_mask=1):
                            if msg.get_attr("IFLA_STATS_LINK_64") is not None:
                                out[ifindex] = LinkStats.from_nla(msg.get_attr("IFLA_STATS_LINK_64"))
                    except NetlinkError:
                        continue  # the link went away since the last event
                discard_stray_replies(self._ipr)
                return out
        if self._getstats:
            try:
                return {msg["ifindex"]: LinkStats.from_nla(msg.get_attr("IFLA_STATS_LINK_64"))
                        for msg in self._ipr.stats("dump", filter_mask=1)
                        if msg.get_attr("IFLA_STATS_LINK_64") is not None}
            except NetlinkError as exc:
                self._getstats = False
                log.info("RTM_GETSTATS failed (%s): interface counters come from link dumps", exc)
        return {msg["index"]: LinkStats.from_nla(msg.get_attr("IFLA_STATS64"))
                for msg in self._ipr.get_links()
                if msg["family"] == socket.AF_UNSPEC and msg.get_attr("IFLA_STATS64") is not None}

    # ------------------------------------------------------------ events

    def handle_events(self) -> Set[int]:
        """Apply every pending netlink event without blocking; the ifindexes that were
        added, changed or removed.  If the kernel dropped events, re-dump everything.

        Link events are applied one by one.  Address events only mark the addresses
        stale: they are then re-read in one dump, so each list keeps the kernel's order
        (primary before secondary, global before link-local), the same order a full
        refresh gives; the election's "first discovered" tie rule depends on it.
        """
        changed: Set[int] = set()
        addresses_stale = overflow = False
        while True:
            try:
                data = self._events.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overflow = True     # keep draining: whatever is queued is older than the dump
                continue
            if not overflow:
                links, addrs = self._apply(data)
                changed |= links
                addresses_stale |= addrs
        if overflow:
            self.resyncs += 1
            log.info("netlink events were lost (ENOBUFS): re-reading all interfaces")
            return changed | self._resync()
        if addresses_stale:
            changed |= self._reload_addresses()
        return changed

    def _apply(self, data: bytes) -> Tuple[Set[int], bool]:
        changed: Set[int] = set()
        addresses = False
        offset = 0
        while offset + NLMSG_HDRLEN <= len(data):
            length, kind = struct.unpack_from("IH", data, offset)
            if length < NLMSG_HDRLEN:
                break
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                msg = ifinfmsg(data, offset=offset)
                msg.decode()
                changed |= self._link_event(kind, msg)
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                addresses = True
            offset += (length + 3) & ~3
        return changed, addresses

    def _link_event(self, kind: int, msg) -> Set[int]:
        # bridges also announce port state with family AF_BRIDGE (even RTM_DELLINK when a
        # port leaves the bridge): that is not the link coming or going
        if msg["family"] != socket.AF_UNSPEC:
            return set()
        ifindex = msg["index"]
        old = self._links.get(ifindex)
        if kind == RTM_DELLINK:
            if self._links.pop(ifindex, None) is None:
                return set()
            # a veth whose peer left (moved to another namespace) gets no event of its own
            stale = [i.ifindex for i in self._links.values() if i.peer_here and i.link == ifindex]
            return {ifindex} | self._reread(stale)
        iface = parse_link(msg)
        if old is not None:
            iface.addresses = list(old.addresses)
        iface = self._with_speed(iface, old)
        if iface == old:
            return set()
        self._links[ifindex] = iface
        changed = {ifindex}
        # the first end of a new veth pair is announced before its peer exists, with no
        # IFLA_LINK, and is not announced again when the peer appears
        peer = self._links.get(iface.link) if iface.peer_here else None
        if old is None and peer is not None and peer.is_veth and peer.link != ifindex:
            changed |= self._reread([peer.ifindex])
        return changed

    def _reread(self, ifindexes: List[int]) -> Set[int]:
        """Ask the kernel again about some links; the ones that changed or are gone."""
        changed = set()
        for ifindex in ifindexes:
            old = self._links.get(ifindex)
            try:
                msgs = [m for m in self._ipr.get_links(ifindex) if m["family"] == socket.AF_UNSPEC]
            except NetlinkError:
                msgs = []
            discard_stray_replies(self._ipr)
            if not msgs:
                if self._links.pop(ifindex, None) is not None:
                    changed.add(ifindex)
                continue
            iface = parse_link(msgs[0])
            iface.addresses = list(old.addresses) if old else []
            iface = self._with_speed(iface, old)
            if iface != old:
                self._links[ifindex] = iface
                changed.add(ifindex)
        return changed

    def _reload_addresses(self) -> Set[int]:
        fresh: Dict[int, List[Address]] = {i: [] for i in self._links}
        for msg in self._ipr.get_addr():
            parsed = parse_addr(msg)
            if parsed and parsed[0] in fresh:
                fresh[parsed[0]].append(parsed[1])
        changed = set()
        for ifindex, addresses in fresh.items():
            if addresses != self._links[ifindex].addresses:
                self._links[ifindex] = replace(self._links[ifindex], addresses=addresses)
                changed.add(ifindex)
        return changed

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        for closer in (getattr(self, "_events", None), getattr(self, "_ethtool", None),
                       getattr(self, "_ipr", None)):
            if closer is not None:
                try:
                    closer.close()
                except Exception:   # closing is best effort
                    pass

    def __enter__(self) -> "InterfaceTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def __getattr__(name: str):
    # the counter records are in ifcounters (which imports this module); offer them here too
    if name in ("interface_counters", "host_adapters", "nio_interfaces", "MAX_HOST_ADAPTERS"):
        from . import ifcounters
        return getattr(ifcounters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
