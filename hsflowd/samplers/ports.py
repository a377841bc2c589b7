"""Input and output interfaces of a sampled packet: hsflowd's host model and bridge model.

Host model (a NIC, macvlan or ipvlan parent): a packet the host sent has input = internal
(0x3FFFFFFF), output = the interface; one it received has input = the interface, output =
internal.  hsflowd decides this from MAC ownership; the kernel tells us directly
(sll_pkttype, or the eBPF hook), which also holds for ipvlan children, whose packets carry
the parent's MAC.  Only a frame the kernel calls "other host" (seen because of promiscuous
mode, or addressed to a macvlan child in a container) falls back to MACs: a destination
this host or one of its macvlan children owns is delivered here.

Bridge model (a bridge such as docker0): the real bridge ports.  The source and
destination MACs are looked up in the bridge's forwarding database, which maps a
container's MAC to the host side of its veth, i.e. the container's port in this
namespace; frames to or from the bridge's own stack are internal, and a broadcast or
multicast destination is "multiple outputs" (format 2, count unknown).

The MAC tables come from a netlink neighbour dump (AF_BRIDGE), of which the entries of the
sampled devices are kept, re-read when interfaces change, when a MAC is missing (at most
once a second) and once a minute: never per packet.  The dump is read from its bytes
(``sources.rtnetlink``): a bridge with hundreds of ports has thousands of entries, and
pyroute2's objects for them cost megabytes of heap each time.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Dict, Iterable, Optional, Set, Tuple

from ..sflow import INTERNAL, HeaderProtocol
from ..sources.rtnetlink import NetlinkSocket, attributes
from .flow import FCS, Packet

log = logging.getLogger("hsflowd.samplers")

PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = 0, 1, 2, 3, 4
FORMAT_SINGLE, FORMAT_MULTIPLE = 0, 2
REFRESH_INTERVAL = 60.0      # a MAC that moved to another port shows up within a minute
MISS_REFRESH_INTERVAL = 1.0  # an unknown MAC re-reads the tables at most once a second

Ports = Tuple[int, int, int]  # input ifindex, output format, output value

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ETHERNET_LINK_TYPES = (ARPHRD_ETHER, ARPHRD_LOOPBACK)
RAW_IP_STRIPPED = FCS + 14  # hsflowd counts the missing Ethernet header as stripped
_NONE: frozenset = frozenset()

# <linux/neighbour.h>
RTM_GETNEIGH = 30
NDMSG = struct.Struct("=BxxxiHBB")      # family, ifindex, state, flags, type
NDA_LLADDR, NDA_MASTER = 2, 9


def parse_fdb_entry(body: bytes) -> Optional[Tuple[int, int, bytes]]:
    """(port ifindex, bridge ifindex or 0, MAC) of one RTM_NEWNEIGH message's body."""
    _, ifindex, _, _, _ = NDMSG.unpack_from(body)
    attrs = attributes(body, NDMSG.size)
    mac = attrs.get(NDA_LLADDR, b"")
    if len(mac) != 6:
        return None
    master = attrs.get(NDA_MASTER)
    return ifindex, struct.unpack("=I", master)[0] if master and len(master) == 4 else 0, mac


class PortMap:
    """What the two models need to know about MACs, from the kernel's tables.

    Only what the sampled devices need is read: the forwarding database of each sampled
    bridge, and the macvlan children of each other sampled device.  A bridge with hundreds
    of ports has hundreds of entries, so the tables are re-read when the interfaces change
    (coalesced to the next tick), when a MAC is missing, and otherwise once a minute."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.local_macs: Set[bytes] = set()          # every interface MAC in this namespace
        self.fdb: Dict[int, Dict[bytes, int]] = {}   # bridge ifindex -> MAC -> port ifindex
        self.uppers: Dict[int, Set[bytes]] = {}      # device -> MACs of its macvlan children
        self.bridges: Set[int] = set()               # sampled devices that are bridges
        self.devices: Set[int] = set()               # the other sampled devices
        self.last_refresh = 0.0
        self.stale = True
        self._nl: Optional[NetlinkSocket] = None

    def update_local(self, interfaces: Iterable) -> None:
        """The MACs of this namespace's own interfaces (from the table: no netlink)."""
        self.local_macs = {i.mac for i in interfaces if i.mac}

    def interfaces_changed(self, interfaces: Iterable, taps: Iterable) -> None:
        """Taps or interfaces changed: the local MACs now, the kernel's tables right away the
        first time, else at the next tick (one re-read for a burst of changes)."""
        taps = list(taps)
        self.bridges = {t.ifindex for t in taps if t.bridge}
        self.devices = {t.ifindex for t in taps if not t.bridge}
        if not self.last_refresh:
            self.refresh(interfaces)
        else:
            self.update_local(interfaces)
            self.stale = True

    def tick(self, interfaces: Iterable) -> None:
        """Once a second: re-read the tables if they are stale or a minute old."""
        if self.stale or self.clock() - self.last_refresh >= REFRESH_INTERVAL:
            self.refresh(interfaces)

    def refresh(self, interfaces: Iterable) -> None:
        self.last_refresh = self.clock()
        self.stale = False
        self.update_local(interfaces)
        if not (self.bridges or self.devices):
            self.fdb, self.uppers = {}, {}
            self.close()   # its netlink socket and event loop, until something is tapped again
            return
        fdb: Dict[int, Dict[bytes, int]] = {}
        uppers: Dict[int, Set[bytes]] = {}
        try:
            if self._nl is None:
                self._nl = NetlinkSocket()
            request = NDMSG.pack(socket.AF_BRIDGE, 0, 0, 0, 0)
            for _, body in self._nl.request(RTM_GETNEIGH, request, dump=True):
                entry = parse_fdb_entry(body)
                if entry is None:
                    continue
                ifindex, master, mac = entry
                # the sampled bridges' entries, and those of the other sampled devices
                if master not in self.bridges and ifindex not in self.devices:
                    continue
                if mac[0] & 1:
                    continue  # multicast entries say nothing about where a host is
                if master:
                    fdb.setdefault(master, {})[mac] = ifindex
                else:
                    uppers.setdefault(ifindex, set()).add(mac)
        except Exception as e:  # a missing table costs accuracy, never the sampler
            log.debug("bridge neighbour dump failed: %s", e)
            return
        self.fdb, self.uppers = fdb, uppers

    def refresh_after_miss(self, interfaces: Iterable) -> bool:
        """A MAC was not found: re-read the tables unless that was done very recently."""
        if self.clock() - self.last_refresh < MISS_REFRESH_INTERVAL:
            return False
        self.refresh(interfaces)
        return True

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None


def host_ports(ifindex: int, pkttype: int, dst: bytes, local: Set[bytes], uppers: Set[bytes]) -> Ports:
    """hsflowd's host model, with the kernel's direction first."""
    if pkttype == PACKET_OUTGOING:
        return INTERNAL, FORMAT_SINGLE, ifindex
    if pkttype != PACKET_OTHERHOST or dst in local or dst in uppers:
        return ifindex, FORMAT_SINGLE, INTERNAL
    return ifindex, FORMAT_SINGLE, 0  # seen in passing: received here, destination unknown


def bridge_ports(bridge: int, pkttype: int, src: bytes, dst: bytes, fdb: Dict[bytes, int]) -> Ports:
    """hsflowd's bridge model: real ports from the forwarding database."""
    if pkttype == PACKET_OUTGOING:
        in_port = INTERNAL
    else:
        in_port = fdb.get(src, 0)
    if dst[0] & 1:
        return in_port, FORMAT_MULTIPLE, 0
    if pkttype == PACKET_HOST:
        return in_port, FORMAT_SINGLE, INTERNAL
    return in_port, FORMAT_SINGLE, fdb.get(dst, 0)


def ethernet_packet(ports: PortMap, tap, interfaces, data: bytes, length: int, pkttype: int,
                    timestamp_ns: int) -> Optional[Packet]:
    """One captured Ethernet frame of ``tap`` as a packet for the flow-sample builder, with
    the ports of the bridge model (bridges) or the host model (everything else); None for a
    runt without addresses.  (The samplers work the host model out in line: this is the
    same.)"""
    if len(data) < 14:
        return None
    ifindex = tap.ifindex
    dst = data[0:6]
    if tap.bridge:
        fdb = ports.fdb.get(ifindex, {})
        if (dst not in fdb or data[6:12] not in fdb) and not dst[0] & 1 \
                and ports.refresh_after_miss(interfaces()):
            fdb = ports.fdb.get(ifindex, {})
        in_if, out_format, out_if = bridge_ports(ifindex, pkttype, data[6:12], dst, fdb)
    else:
        in_if, out_format, out_if = host_ports(
            ifindex, pkttype, dst, ports.local_macs, ports.uppers.get(ifindex, _NONE))
    return data, length, in_if, out_if, timestamp_ns, out_format


def raw_ip_packet(ifindex: int, data: bytes, length: int, pkttype: int,
                  timestamp_ns: int) -> Optional[Tuple[Packet, int]]:
    """A packet of a device with no link header (tun, wireguard): (the packet, its header
    protocol, IPv4 or IPv6); None if it is not IP.  Its stripped bytes are RAW_IP_STRIPPED."""
    version = data[0] >> 4 if data else 0
    if version not in (4, 6):
        return None
    in_if, out_if = (INTERNAL, ifindex) if pkttype == PACKET_OUTGOING else (ifindex, INTERNAL)
    return ((data, length, in_if, out_if, timestamp_ns, 0),
            int(HeaderProtocol.IPV4 if version == 4 else HeaderProtocol.IPV6))
