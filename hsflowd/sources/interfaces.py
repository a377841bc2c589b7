"""The interface table: links and addresses from rtnetlink, kept current by netlink events.

``InterfaceTable`` dumps every link and address once, then follows
RTM_NEWLINK/DELLINK/NEWADDR/DELADDR on a second socket bound to the link and IPv4/IPv6
address multicast groups.  ``handle_events`` drains that socket without blocking and says
which ifindexes changed; if the kernel dropped events (ENOBUFS) it re-dumps everything.
Address events make the table re-read the addresses of those links in one dump.

Speed and duplex come from ethtool (the SIOCETHTOOL ioctl), read only when a link appears
or its up/running state changes, never on a counter poll.  Counters for all links come from
one RTM_GETSTATS dump (IFLA_STATS_LINK_64) per poll; the sample pools' once-a-second packet
counts come from sysfs (``read_packet_counts``: microseconds, where a netlink request costs
milliseconds).

Messages are read from their bytes (``rtnetlink``), not through pyroute2's message
objects: those cost tens of kilobytes of heap per link, freed late by the cycle collector,
and a host with hundreds of veths paid for them in resident memory it never got back.
What an interface costs is in docs/design.md.

The records built from this table (``interface_counters``, ``host_adapters``,
``nio_interfaces``) live in ``ifcounters`` and are importable from here too.
"""

from __future__ import annotations

import array
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import sys
from dataclasses import dataclass, field, replace
from typing import (Container, Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional,
                    Set, Tuple, Union)

from .rtnetlink import NLMSG_HDRLEN, NetlinkSocket, attributes, is_gone, messages

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
IFAPROT_KERNEL_RA = 2       # from a router advertisement (SLAAC); 1 is lo, 3 link-local
# address attributes (IFA_*)
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS, IFA_PROTO = 1, 2, 3, 8, 11

# <linux/if_link.h>: link attributes (IFLA_*), those of IFLA_LINKINFO and of a VXLAN's
# IFLA_INFO_DATA, and the RTM_GETSTATS one
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_STATS64, IFLA_LINK_NETNSID = 16, 18, 20, 23, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL = 1, 2, 3, 4
IFLA_VXLAN_TOS, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 6, 7, 15
IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6, IFLA_VXLAN_COLLECT_METADATA = 16, 17, 25
IFLA_STATS_LINK_64 = 1
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_GETSTATS = 94
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFINFOMSG = struct.Struct("=BxHiII")    # family, type, ifindex, flags, change
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, ifindex
IF_STATS_MSG = struct.Struct("=BxxxII")  # family, ifindex, filter_mask

# <linux/sockios.h>, <linux/ethtool.h>: struct ethtool_cmd, 44 bytes; speed is split in
# two 16-bit halves (at 12 and 28), duplex at 14
SIOCETHTOOL = 0x8946
ETHTOOL_GSET = 0x1
ETHTOOL_CMD_LEN = 44
DUPLEX = {0: "half", 1: "full"}

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
    def from_bytes(cls, data: bytes) -> "LinkStats":
        """IFLA_STATS_LINK_64 or IFLA_STATS64: its first 23 fields, in the kernel's order."""
        n = min(len(cls._fields), len(data) // 8)
        return cls._make(struct.unpack_from(f"={n}Q", data) + (0,) * (len(cls._fields) - n))


# ---------------------------------------------------------------- parsing netlink messages

def _text(payload: bytes) -> str:
    """A NUL-terminated string attribute (an interface name, kind, alias or label)."""
    return payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(attrs: Dict[int, bytes], kind: int) -> int:
    value = attrs.get(kind)
    return struct.unpack_from("=I", value)[0] if value and len(value) >= 4 else 0


def _u8(attrs: Dict[int, bytes], kind: int) -> int:
    value = attrs.get(kind)
    return value[0] if value else 0


def _ip_text(attrs: Dict[int, bytes], *kinds: int) -> str:
    """The first of these IPv4/IPv6 address attributes that is present, as text."""
    for kind in kinds:
        value = attrs.get(kind)
        if value and len(value) in (4, 16):
            return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)
    return ""


def parse_vxlan(data: bytes) -> Vxlan:
    """A VXLAN device's IFLA_INFO_DATA attributes."""
    attrs = attributes(data)
    port = attrs.get(IFLA_VXLAN_PORT)
    return Vxlan(
        vni=_u32(attrs, IFLA_VXLAN_ID),
        local=_ip_text(attrs, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6),
        remote=_ip_text(attrs, IFLA_VXLAN_GROUP, IFLA_VXLAN_GROUP6),
        port=struct.unpack(">H", port)[0] if port and len(port) == 2 else 4789,
        tos=_u8(attrs, IFLA_VXLAN_TOS),
        link=_u32(attrs, IFLA_VXLAN_LINK),
        learning=bool(_u8(attrs, IFLA_VXLAN_LEARNING)),
        external=bool(_u8(attrs, IFLA_VXLAN_COLLECT_METADATA)),
    )


def parse_link(body: bytes) -> Optional[Interface]:
    """An ``Interface`` from one RTM_NEWLINK message's body (speed, duplex and addresses
    empty); None for a message that is not about a link as such: bridges also announce
    port state with family AF_BRIDGE (even RTM_DELLINK when a port leaves the bridge)."""
    family, _, ifindex, flags, _ = IFINFOMSG.unpack_from(body)
    if family != socket.AF_UNSPEC:
        return None
    attrs = attributes(body, IFINFOMSG.size)
    kind, vxlan = "", None
    if IFLA_LINKINFO in attrs:
        info = attributes(attrs[IFLA_LINKINFO])
        kind = sys.intern(_text(info.get(IFLA_INFO_KIND, b"")))
        if kind == "vxlan" and IFLA_INFO_DATA in info:
            vxlan = parse_vxlan(info[IFLA_INFO_DATA])
    mac = attrs.get(IFLA_ADDRESS, b"")
    netnsid = attrs.get(IFLA_LINK_NETNSID)
    state = attrs.get(IFLA_OPERSTATE)
    return Interface(
        ifindex=ifindex,
        name=_text(attrs.get(IFLA_IFNAME, b"")),
        mac=mac if len(mac) == 6 else b"",
        kind=kind,
        master=_u32(attrs, IFLA_MASTER),
        link=_u32(attrs, IFLA_LINK),
        link_netnsid=struct.unpack("=i", netnsid)[0] if netnsid and len(netnsid) == 4 else None,
        admin_up=bool(flags & IFF_UP),
        # IFF_RUNNING is RFC 2863 "operationally up" (operstate UP, or UNKNOWN as on lo)
        oper_up=bool(flags & IFF_RUNNING),
        promisc=bool(flags & IFF_PROMISC),
        loopback=bool(flags & IFF_LOOPBACK),
        mtu=_u32(attrs, IFLA_MTU),
        flags=flags,
        operstate=OPERSTATES[state[0]] if state and state[0] < len(OPERSTATES) else "",
        alias=_text(attrs[IFLA_IFALIAS]) if IFLA_IFALIAS in attrs else "",
        vxlan=vxlan,
    )


def raw_attr(msg, header: int, nla_type: int) -> Optional[bytes]:
    """The payload of one attribute read from a pyroute2 message's raw bytes (for attributes
    pyroute2 does not know, such as INET_DIAG_CGROUP_ID in 0.7).  ``header`` is the fixed
    part after nlmsghdr."""
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


def parse_addr(body: bytes) -> Optional[Tuple[int, Address]]:
    """(ifindex, Address) from one RTM_NEWADDR/DELADDR message's body, None if not
    IPv4/IPv6."""
    family, prefixlen, flags, scope, ifindex = IFADDRMSG.unpack_from(body)
    if family == socket.AF_INET:
        make, size = ipaddress.IPv4Interface, 4
    elif family == socket.AF_INET6:
        make, size = ipaddress.IPv6Interface, 16
    else:
        return None
    attrs = attributes(body, IFADDRMSG.size)
    # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links
    # (and the only one present on most IPv6 addresses)
    packed = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if not packed or len(packed) != size:
        return None
    return ifindex, Address(
        addr=make((packed, prefixlen)),
        flags=_u32(attrs, IFA_FLAGS) if IFA_FLAGS in attrs else flags,
        scope=scope,
        proto=_u8(attrs, IFA_PROTO),
        label=_text(attrs[IFA_LABEL]) if IFA_LABEL in attrs else "",
    )


def parse_stats(body: bytes) -> Optional[Tuple[int, LinkStats]]:
    """(ifindex, LinkStats) from one RTM_NEWSTATS message's body."""
    _, ifindex, _ = IF_STATS_MSG.unpack_from(body)
    value = attributes(body, IF_STATS_MSG.size).get(IFLA_STATS_LINK_64)
    return None if value is None else (ifindex, LinkStats.from_bytes(value))


def link_request(ifindex: int = 0) -> bytes:
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)


ADDRESS_DUMP = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)     # every IPv4 and IPv6 address


def dump_links(nl: NetlinkSocket) -> Iterator[Interface]:
    """Every link of the namespace ``nl`` was opened in."""
    for _, body in nl.request(RTM_GETLINK, link_request(), dump=True):
        iface = parse_link(body)
        if iface is not None:
            yield iface


# ---------------------------------------------------------------- ethtool (speed, duplex)

def read_link_speed(sock, name: str) -> Tuple[int, str]:
    """(speed in bits/s, duplex) of one device, from ethtool's ETHTOOL_GSET (any socket
    will do; it is the namespace of ``sock`` that the name is looked up in); (0, "") if
    unknown (no such device, a device without link settings such as lo, or no link)."""
    cmd = array.array("B", struct.pack("=I", ETHTOOL_GSET) + bytes(ETHTOOL_CMD_LEN - 4))
    ifreq = struct.pack("16sP", os.fsencode(name), cmd.buffer_info()[0]).ljust(40, b"\0")
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return 0, ""
    low, duplex = struct.unpack_from("=HB", cmd, 12)
    speed = struct.unpack_from("=H", cmd, 28)[0] << 16 | low
    speed = speed if speed not in (0, 0xFFFF, 0xFFFFFFFF) else 0
    return speed * 1_000_000, DUPLEX.get(duplex, "")


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
        self._nl = NetlinkSocket()  # requests, and ethtool's ioctl (names are this namespace's)
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

    def refresh(self) -> Set[int]:
        """Re-read every link and address (ethtool only for new or changed links); the
        ifindexes that were added, changed or removed."""
        return self._resync()

    def _resync(self) -> Set[int]:
        old = self._links
        links: Dict[int, Interface] = {}
        for iface in dump_links(self._nl):
            links[iface.ifindex] = self._with_speed(iface, old.get(iface.ifindex))
        for ifindex, address in self._dump_addresses():
            if ifindex in links:
                links[ifindex].addresses.append(address)
        self._links = links
        return {i for i in set(old) | set(links) if old.get(i) != links.get(i)}

    def _with_speed(self, iface: Interface, previous: Optional[Interface]) -> Interface:
        if previous is not None and _speed_relevant(previous) == _speed_relevant(iface):
            iface.speed, iface.duplex = previous.speed, previous.duplex
        elif not iface.loopback:
            self.ethtool_reads += 1
            iface.speed, iface.duplex = read_link_speed(self._nl, iface.name)
        return iface

    def _dump_addresses(self, only: Optional[Container[int]] = None
                        ) -> Iterator[Tuple[int, Address]]:
        """Every address (or those of the links in ``only``), in the kernel's order."""
        for _, body in self._nl.request(RTM_GETADDR, ADDRESS_DUMP, dump=True):
            if only is not None and IFADDRMSG.unpack_from(body)[4] not in only:
                continue
            parsed = parse_addr(body)
            if parsed is not None:
                yield parsed

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
        hundreds of interfaces pays for the ones it samples, not for all of them; of a
        dump, only the links asked for are parsed."""
        wanted = None if ifindexes is None else set(ifindexes)
        if self._getstats:
            try:
                if wanted is not None and len(wanted) <= SINGLE_REQUEST_LIMIT:
                    return self._stats_of(wanted)
                return dict(self._stats(0, dump=True, only=wanted))
            except OSError as exc:     # a kernel before 4.7 has no RTM_GETSTATS
                if isinstance(exc, socket.timeout):
                    raise
                self._getstats = False
                log.info("RTM_GETSTATS failed (%s): interface counters come from link dumps", exc)
        out: Dict[int, LinkStats] = {}
        for _, body in self._nl.request(RTM_GETLINK, link_request(), dump=True):
            family, _, ifindex, _, _ = IFINFOMSG.unpack_from(body)
            if family != socket.AF_UNSPEC or (wanted is not None and ifindex not in wanted):
                continue
            value = attributes(body, IFINFOMSG.size).get(IFLA_STATS64)
            if value is not None:
                out[ifindex] = LinkStats.from_bytes(value)
        return out

    def _stats_of(self, wanted: Iterable[int]) -> Dict[int, LinkStats]:
        out: Dict[int, LinkStats] = {}
        for ifindex in wanted:
            try:
                out.update(self._stats(ifindex, dump=False))
            except OSError as exc:
                if not is_gone(exc):
                    raise
                # else the link went away since the last event
        return out

    def _stats(self, ifindex: int, dump: bool, only: Optional[Container[int]] = None
               ) -> Iterator[Tuple[int, LinkStats]]:
        """RTM_GETSTATS for IFLA_STATS_LINK_64 only: one link, or all of them (those in
        ``only``)."""
        header = IF_STATS_MSG.pack(socket.AF_UNSPEC, ifindex, 1 << (IFLA_STATS_LINK_64 - 1))
        for _, body in self._nl.request(RTM_GETSTATS, header, dump=dump):
            if only is not None and IF_STATS_MSG.unpack_from(body)[1] not in only:
                continue
            parsed = parse_stats(body)
            if parsed is not None:
                yield parsed

    # ------------------------------------------------------------ events

    def handle_events(self) -> Set[int]:
        """Apply every pending netlink event without blocking; the ifindexes that were
        added, changed or removed.  If the kernel dropped events, re-dump everything.

        Link events are applied one by one.  Address events only mark a link's addresses
        stale: they are then re-read in one dump, so each list keeps the kernel's order
        (primary before secondary, global before link-local), the same order a full
        refresh gives; the election's "first discovered" tie rule depends on it.
        """
        changed: Set[int] = set()
        addresses_stale: Set[int] = set()
        overflow = False
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
            changed |= self._reload_addresses(addresses_stale)
        if any(i not in self._links for i in changed):
            # a new dict: one that only had entries deleted keeps the size it grew to
            self._links = dict(self._links)
        return changed

    def _apply(self, data: bytes) -> Tuple[Set[int], Set[int]]:
        """The links that changed, and the links whose addresses did."""
        changed: Set[int] = set()
        addresses: Set[int] = set()
        for kind, _, body in messages(data):
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                changed |= self._link_event(kind, body)
            elif kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= IFADDRMSG.size:
                addresses.add(IFADDRMSG.unpack_from(body)[4])
        return changed, addresses

    def _link_event(self, kind: int, body: bytes) -> Set[int]:
        iface = parse_link(body)
        if iface is None:   # not the link coming or going (a bridge port's state, say)
            return set()
        ifindex = iface.ifindex
        old = self._links.get(ifindex)
        if kind == RTM_DELLINK:
            if self._links.pop(ifindex, None) is None:
                return set()
            # a veth whose peer left (moved to another namespace) gets no event of its own
            stale = [i.ifindex for i in self._links.values() if i.peer_here and i.link == ifindex]
            return {ifindex} | self._reread(stale)
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
                found = [parse_link(body) for _, body in
                         self._nl.request(RTM_GETLINK, link_request(ifindex))]
            except OSError as exc:
                if not is_gone(exc):
                    raise
                found = []
            iface = found[0] if found else None
            if iface is None:
                if self._links.pop(ifindex, None) is not None:
                    changed.add(ifindex)
                continue
            iface.addresses = list(old.addresses) if old else []
            iface = self._with_speed(iface, old)
            if iface != old:
                self._links[ifindex] = iface
                changed.add(ifindex)
        return changed

    def _reload_addresses(self, stale: Set[int]) -> Set[int]:
        """Read the addresses of these links again (the others' are left unparsed: a
        burst of new veths must not rebuild every address on the host for each one)."""
        fresh: Dict[int, List[Address]] = {i: [] for i in stale if i in self._links}
        for ifindex, address in self._dump_addresses(fresh):
            fresh[ifindex].append(address)
        changed = set()
        for ifindex, addresses in fresh.items():
            if addresses != self._links[ifindex].addresses:
                self._links[ifindex] = replace(self._links[ifindex], addresses=addresses)
                changed.add(ifindex)
        return changed

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        for closer in (getattr(self, "_events", None), getattr(self, "_nl", None)):
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
