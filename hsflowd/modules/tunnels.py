"""The sFlow tunnel structures (sflow_tunnels.txt) for the kernel's VXLAN devices.

On with ``pcap {}`` or ``epcap {}``: a flow hook adds to the samplers' flow samples what
Open vSwitch reports for its own tunnel ports, for the kernel's VXLAN devices.

Direction.  sflow_tunnels.txt lets the agents of the switches where a tunnel starts and
ends describe the outer headers "added or removed as packets transit the switch": an
"ingress" structure says how the packet arrived, an "egress" one how it will leave,
wherever that differs from the sampled header.  This host is such an end point, and the
sample's input and output (hsflowd's host and bridge models) say which way the packet went:

- A sample whose input is a VXLAN device (host model: the device was sampled and the
  packet came out of the tunnel; bridge model: the bridge forwarded it from its VXLAN
  port) was decapsulated here.  The sampled header is the inner frame, so the outer
  header that was removed is extended_ipv4/ipv6_tunnel_ingress (1024/1026), and its VNI
  extended_vni_ingress (1030).  A sample whose output is a VXLAN device is about to be
  encapsulated: the outer header that will be added is extended_ipv4/ipv6_tunnel_egress
  (1023/1025) with extended_vni_egress (1029).  Open vSwitch does the same by port.
- A sampled packet on any other device that is VXLAN (UDP to 4789 or to a local VXLAN
  device's port, the I flag set) and ends or starts its tunnel on this host carries the
  outer header in the sampled header.  Received for one of this host's addresses, it
  will be decapsulated before it goes on: extended_decapsulate_egress (1027), "the packet
  leaves starting at inner_header_offset", and its VNI came with it: extended_vni_ingress
  (1030).  Sent from one of this host's addresses, it was encapsulated here:
  extended_decapsulate_ingress (1028), "it arrived starting at inner_header_offset", and
  the VNI is what it leaves with: extended_vni_egress (1029).  A VXLAN packet that only
  passes through (routed or bridged to a container that ends the tunnel) gets nothing: a
  transit device reports the headers as they are.  inner_header_offset counts bytes from
  the start of the sampled header to the inner Ethernet header.

Where the outer addresses come from (the decapsulated packet no longer has them):
the device (IFLA_VXLAN_LOCAL, IFLA_VXLAN_GROUP: remote or group, IFLA_VXLAN_PORT, TOS)
and its forwarding database (AF_BRIDGE neighbours of the device: MAC -> remote VTEP,
port, VNI; the all-zeros MAC is where unknown and broadcast frames go).  Egress: the
remote is the entry of the inner destination MAC, else the all-zeros entries; if that is
several VTEPs (head-end replication) no outer header is one, and only the VNI is sent.
Ingress: the remote is the entry of the inner source MAC (learnt from the outer source
when learning is on), else the one unicast default remote, else unknown (zeros).  The
local end is the device's local address, or if it has none the source address the kernel
picks towards the remote (a route lookup, per device and family, with the table).  The
outer source port is a hash of the inner flow that only the kernel knows: 0.  Devices in
external (collect_metadata) mode have no VNI or remote of their own and get no records.

The hook runs only while this namespace can end a VXLAN tunnel: while it has a VXLAN
device (any: one in external mode, such as Open vSwitch's vxlan_sys_4789, ends tunnels
too), or a UDP socket on a VXLAN port (a device moved to another namespace keeps its socket
here: Docker's overlay networks); otherwise it is not run.  The tables are read when interfaces change, when
a MAC is missing (at most once a second, once per MAC) and once a minute: never per
packet.  Any other sample costs the hook two dict lookups and two tests of the walk that
every hook shares (bench/bench_tunnels.py).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from ..sflow import (ExtendedDecapsulateEgress, ExtendedDecapsulateIngress, ExtendedIPv4TunnelEgress,
                     ExtendedIPv4TunnelIngress, ExtendedIPv6TunnelEgress, ExtendedIPv6TunnelIngress,
                     ExtendedVniEgress, ExtendedVniIngress, HeaderProtocol)
from ..sflow.samples import INTERNAL
from ..frames import FCS, SampledPacket, append_records
from ..netlink import discard_stray_replies
from ..sources.procfs import read_udp_ports
from . import AgentState, Module, register

log = logging.getLogger("hsflowd.tunnels")

VXLAN_PORT = 4789           # IANA; Linux's own default before 3.7 was 8472 (a device says so)
IPPROTO_UDP = 17
OUTER_V4 = 20 + 8 + 8       # what VXLAN adds around the inner Ethernet frame, besides
OUTER_V6 = 40 + 8 + 8       # the outer Ethernet header (sampled_ipv4/6 length: the IP packet)
TOS_INHERIT = 1             # IFLA_VXLAN_TOS 1: copy the inner packet's
ZERO_MAC = b"\0" * 6
REFRESH_INTERVAL = 60.0
MISS_REFRESH_INTERVAL = 1.0
MAX_MISSED = 4096

_IPV4_TUNNEL = struct.Struct(">IIII4s4sIIII")
_IPV6_TUNNEL = struct.Struct(">IIII16s16sIIII")
_WORD_RECORD = struct.Struct(">III")

UNKNOWN4, UNKNOWN6 = b"\0" * 4, b"\0" * 16
_ETHERNET = int(HeaderProtocol.ETHERNET_ISO8023)


# ---------------------------------------------------------------- records

class Outer(NamedTuple):
    """An outer IP/UDP header of the tunnel: the body of 1023-1026 less length and tos."""

    src: bytes              # packed, 4 or 16 bytes (zeros: unknown)
    dst: bytes
    dst_port: int
    tos: int = 0


def tunnel_record(egress: bool, outer: Outer, length: int) -> bytes:
    """extended_ipv4/ipv6_tunnel_egress/ingress: the outer header added or removed here.
    ``length`` is the outer IP packet's; the protocol is UDP, the source port unknown."""
    if len(outer.dst) == 4:
        tag = ExtendedIPv4TunnelEgress.tag if egress else ExtendedIPv4TunnelIngress.tag
        return _IPV4_TUNNEL.pack(tag, 32, length, IPPROTO_UDP, outer.src, outer.dst, 0,
                                 outer.dst_port, 0, outer.tos)
    tag = ExtendedIPv6TunnelEgress.tag if egress else ExtendedIPv6TunnelIngress.tag
    return _IPV6_TUNNEL.pack(tag, 56, length, IPPROTO_UDP, outer.src, outer.dst, 0,
                             outer.dst_port, 0, outer.tos)


def vni_record(egress: bool, vni: int) -> bytes:
    return _WORD_RECORD.pack(ExtendedVniEgress.tag if egress else ExtendedVniIngress.tag, 4, vni)


def decap_record(egress: bool, offset: int) -> bytes:
    tag = ExtendedDecapsulateEgress.tag if egress else ExtendedDecapsulateIngress.tag
    return _WORD_RECORD.pack(tag, 4, offset)


# ---------------------------------------------------------------- a VXLAN packet in a header

class VxlanHit(NamedTuple):
    """A VXLAN packet found in a sampled header."""

    offset: int             # from the start of the header to the inner Ethernet header
    vni: int
    src: bytes              # the outer addresses, packed
    dst: bytes


def vxlan_in(buf: bytes, pkt: SampledPacket, ports) -> Optional[VxlanHit]:
    """The VXLAN packet ``pkt`` (a walk of ``buf``) is, None if it is not one: UDP to one of
    ``ports`` (a first fragment at most) and a whole VXLAN header with the I flag (RFC
    7348)."""
    l4 = pkt.l4
    if pkt.ip_protocol != IPPROTO_UDP or l4 < 0 or l4 + 16 > pkt.end \
            or pkt.dst_port not in ports or not buf[l4 + 8] & 0x08:
        return None
    vni = buf[l4 + 12] << 16 | buf[l4 + 13] << 8 | buf[l4 + 14]
    return VxlanHit(l4 + 16 - pkt.start, vni, pkt.src_ip, pkt.dst_ip)


# ---------------------------------------------------------------- one VXLAN device

class Dest(NamedTuple):
    """One remote VTEP of a forwarding-database entry."""

    addr: bytes             # packed
    port: int = 0           # 0: the device's
    vni: int = 0            # 0: the device's (NDA_VNI)


def _packed(text) -> bytes:
    if not text:
        return b""
    try:
        return ipaddress.ip_address(str(text).split("%")[0]).packed
    except ValueError:
        return b""


def parse_fdb(messages: Iterable) -> Dict[int, Dict[bytes, Tuple[Dest, ...]]]:
    """ifindex -> MAC -> remote VTEPs, from AF_BRIDGE neighbour messages (pyroute2).  Only
    a VXLAN device's own entries have a destination address (NDA_DST); a MAC with several
    (``bridge fdb append``) is sent to each of them."""
    out: Dict[int, Dict[bytes, Tuple[Dest, ...]]] = {}
    for msg in messages:
        addr = _packed(msg.get_attr("NDA_DST"))
        lladdr = msg.get_attr("NDA_LLADDR")
        if not addr or not lladdr:
            continue
        try:
            mac = bytes.fromhex(lladdr.replace(":", ""))
        except ValueError:
            continue
        dest = Dest(addr, msg.get_attr("NDA_PORT") or 0, msg.get_attr("NDA_VNI") or 0)
        table = out.setdefault(msg["ifindex"], {})
        table[mac] = table.get(mac, ()) + (dest,)
    return out


class VxlanDevice:
    """What the records need to know about one VXLAN device: its tunnel, its forwarding
    database (None until read: then the device's remote stands for it), and the local
    address of each family."""

    __slots__ = ("ifindex", "vni", "port", "tos", "learning", "fdb", "defaults", "local")

    def __init__(self, ifindex: int, info, fdb: Optional[Dict[bytes, Tuple[Dest, ...]]] = None,
                 sources: Optional[Dict[int, bytes]] = None):
        self.ifindex = ifindex
        self.vni = info.vni
        self.port = info.port
        self.tos = info.tos
        self.learning = info.learning
        if fdb is None:
            remote = _packed(info.remote)
            fdb = {ZERO_MAC: (Dest(remote),)} if remote else {}
        self.fdb = fdb
        self.defaults = fdb.get(ZERO_MAC, ())
        local = _packed(info.local)
        self.local: Dict[int, bytes] = dict(sources or {})
        if local:
            self.local[len(local)] = local

    def egress(self, dst_mac: bytes) -> Tuple[Optional[Outer], int, bool]:
        """(outer header, VNI, missed) of a frame to ``dst_mac`` that goes into the tunnel;
        no outer header if it goes to several VTEPs or none; missed: a unicast MAC that is
        not in the table (the all-zeros entries took it)."""
        dests = self.fdb.get(dst_mac) if not dst_mac[0] & 1 else None
        missed = dests is None and not dst_mac[0] & 1
        if dests is None:
            dests = self.defaults
        if len(dests) != 1:
            return None, self.vni, missed
        dest = dests[0]
        size = len(dest.addr)
        src = self.local.get(size, UNKNOWN4 if size == 4 else UNKNOWN6)
        return Outer(src, dest.addr, dest.port or self.port, self.tos), dest.vni or self.vni, missed

    def ingress(self, src_mac: bytes) -> Tuple[Optional[Outer], int, bool]:
        """(outer header, VNI, missed) of a frame from ``src_mac`` that came out of the tunnel:
        the remote VTEP where the table has the MAC (learnt from the outer source), else the
        one unicast default remote; missed: learning is on and the MAC is not learnt yet."""
        dests = self.fdb.get(src_mac)
        missed = dests is None and self.learning and not src_mac[0] & 1
        remote = b""
        if dests is not None and len(dests) == 1:
            remote = dests[0].addr
        elif dests is None and len(self.defaults) == 1 and not _multicast(self.defaults[0].addr):
            remote = self.defaults[0].addr
        if remote:
            size = len(remote)
            local = self.local.get(size, UNKNOWN4 if size == 4 else UNKNOWN6)
        elif len(self.local) == 1:
            local = next(iter(self.local.values()))
            remote = UNKNOWN4 if len(local) == 4 else UNKNOWN6
        else:
            return None, self.vni, missed
        return Outer(remote, local, self.port, 0), self.vni, missed

    def destinations(self) -> List[bytes]:
        """Every remote VTEP, the default ones first (for the route lookups)."""
        seen: List[bytes] = [d.addr for d in self.defaults]
        for dests in self.fdb.values():
            seen.extend(d.addr for d in dests if d.addr not in seen)
        return seen


def _multicast(addr: bytes) -> bool:
    return (len(addr) == 4 and 224 <= addr[0] <= 239) or (len(addr) == 16 and addr[0] == 0xFF)


# ---------------------------------------------------------------- the module

def _enabled(config) -> bool:
    return bool(config.pcap) or bool(config.epcap)


@register("tunnels", enabled=_enabled)
class TunnelsModule(Module):
    """The hook, the VXLAN devices of this namespace and their tables."""

    def __init__(self, ctx, clock=time.monotonic, ipr_factory=None,
                 udp_ports: Callable[[], Set[int]] = read_udp_ports):
        super().__init__(ctx)
        self.clock = clock
        self.udp_ports = udp_ports                    # this namespace's bound UDP ports
        self.devices_here = False
        self.infos: Dict[int, object] = {}           # ifindex -> interfaces.Vxlan
        self.devices: Dict[int, VxlanDevice] = {}
        self.fdb: Dict[int, Dict[bytes, Tuple[Dest, ...]]] = {}
        self.sources: Dict[int, Dict[int, bytes]] = {}
        self.local_addrs: Set[bytes] = set()
        self.ports: Set[int] = {VXLAN_PORT}
        self.last_refresh = 0.0
        self.stale = True
        self.missed: Set[bytes] = set()
        self.records = 0                               # samples given tunnel records
        self.failed = False                            # a table read failed (said once)
        self._ipr = None
        self._ipr_factory = ipr_factory

    # ------------------------------------------------------------ state
    def reconcile(self, state: AgentState) -> None:
        if self.last_refresh and "interfaces" not in state.changed:
            return
        self.update(state.interfaces)

    def update(self, interfaces: Iterable) -> None:
        """The interface table changed: devices, ports and local addresses now (no I/O), the
        kernel's tables the first time, else at the next tick."""
        interfaces = list(interfaces)
        infos = {i.ifindex: i.vxlan for i in interfaces if i.vxlan is not None}
        self.devices_here = bool(infos)
        self.ports = {VXLAN_PORT} | {v.port for v in infos.values()}
        local = {a.ip.packed for i in interfaces for a in i.addresses}
        local |= {_packed(v.remote) for v in infos.values() if _multicast(_packed(v.remote))}
        self.local_addrs = local
        self.infos = {ifindex: v for ifindex, v in infos.items() if not v.external}
        if not self.last_refresh:
            self.refresh()
            self._gate()
        else:
            self._build()
            self.stale = True

    def tick(self, now: float) -> None:
        if self.stale or self.clock() - self.last_refresh >= REFRESH_INTERVAL:
            self.refresh()
            self._gate()

    def _gate(self) -> None:
        """The hook runs only while this namespace can end a VXLAN tunnel: it has a VXLAN
        device, or a UDP socket on a VXLAN port (a device moved to another namespace keeps
        its socket in the one it was made in: Docker's overlay networks).  Otherwise no
        sample can be one this host ends or starts, and the hook, with nothing to add, is
        not run at all."""
        if self.devices_here or self.ports & self.udp_ports():
            self.ctx.add_flow_hook(self.hook)
        else:
            self.ctx.remove_flow_hooks()

    def _build(self) -> None:
        self.devices = {ifindex: VxlanDevice(ifindex, info, self.fdb.get(ifindex) if self.fdb else None,
                                             self.sources.get(ifindex))
                        for ifindex, info in self.infos.items()}

    def refresh(self, clear_missed: bool = True) -> None:
        """Read the forwarding databases of the VXLAN devices and the local source addresses."""
        self.last_refresh = self.clock()
        self.stale = False
        if clear_missed:
            self.missed.clear()
        if not self.infos:
            self.fdb, self.sources, self.devices = {}, {}, {}
            self.close()
            return
        try:
            if self._ipr is None:
                self._ipr = self._ipr_factory() if self._ipr_factory else _iproute()
            messages = [m for ifindex in self.infos
                        for m in self._ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=ifindex)]
            fdb = parse_fdb(messages)
            self.fdb = {ifindex: fdb.get(ifindex, {}) for ifindex in self.infos}
            self.sources = {}
            self._build()      # with the new tables, to know the remotes
            for ifindex, device in self.devices.items():
                self.sources[ifindex] = self._route_sources(device, self.infos[ifindex])
        except Exception as e:  # a missing table costs accuracy, never the samples
            (log.debug if self.failed else log.info)(
                "VXLAN forwarding database: %s; outer addresses from the devices only", e)
            self.failed = True
        self._build()

    def _route_sources(self, device: VxlanDevice, info) -> Dict[int, bytes]:
        """The source address the kernel picks towards the first remote of each family
        (only for a family the device has no local address of)."""
        out: Dict[int, bytes] = {}
        for addr in device.destinations():
            size = len(addr)
            if size in device.local or size in out:
                continue
            kw = {"oif": info.link} if info.link else {}
            try:
                routes = self._ipr.route("get", dst=str(ipaddress.ip_address(addr)), **kw)
            except Exception as e:
                log.debug("route to %s: %s", ipaddress.ip_address(addr), e)
                continue
            finally:
                discard_stray_replies(self._ipr)    # a "get" leaves its ACK behind (0.8+)
            for msg in routes:
                src = _packed(msg.get_attr("RTA_PREFSRC"))
                if len(src) == size:
                    out[size] = src
                    break
        return out

    def close(self) -> None:
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:   # closing is best effort
                pass
            self._ipr = None

    # ------------------------------------------------------------ the hook
    def hook(self, sample: bytes, pkt: SampledPacket) -> bytes:
        """Every flow sample on its way out: tunnel records for a VXLAN input or output,
        decapsulation records for a VXLAN packet this host ends or starts."""
        devices = self.devices
        if devices:
            device = devices.get(pkt.input)
            if device is not None:
                return self._tunnel(sample, pkt, device, False)
            if pkt.output_format == 0:
                device = devices.get(pkt.output)
                if device is not None:
                    return self._tunnel(sample, pkt, device, True)
        if pkt.ip_protocol != IPPROTO_UDP or pkt.dst_port not in self.ports:
            return sample
        return self._decap(sample, pkt)

    def _tunnel(self, sample: bytes, pkt: SampledPacket, device: VxlanDevice, egress: bool) -> bytes:
        if pkt.header_protocol != _ETHERNET or pkt.l2 < 0:
            return sample
        l2 = pkt.l2
        mac = sample[l2:l2 + 6] if egress else sample[l2 + 6:l2 + 12]
        outer, vni, missed = device.egress(mac) if egress else device.ingress(mac)
        if missed and self._refresh_for(mac):
            device = self.devices.get(device.ifindex, device)
            outer, vni, _ = device.egress(mac) if egress else device.ingress(mac)
        self.records += 1
        vni_rec = vni_record(egress, vni)
        if outer is None:
            return append_records(sample, vni_rec, 1)
        if egress and outer.tos == TOS_INHERIT:
            outer = outer._replace(tos=pkt.tos)
        frame = pkt.frame_length
        inner = frame - FCS if frame >= FCS else 0
        length = inner + (OUTER_V4 if len(outer.dst) == 4 else OUTER_V6) if inner else 0
        return append_records(sample, tunnel_record(egress, outer, length) + vni_rec, 2)

    def _decap(self, sample: bytes, pkt: SampledPacket) -> bytes:
        hit = vxlan_in(sample, pkt, self.ports)
        if hit is None:
            return sample
        if pkt.input == INTERNAL:   # sent by this host: it was encapsulated here
            if hit.src not in self.local_addrs:
                return sample
            egress = False
        elif hit.dst in self.local_addrs:    # received for this host: decapsulated next
            egress = True
        else:
            return sample
        self.records += 1
        # the record's direction is the packet's after decapsulation; the VNI's, the side
        # that carries the tunnel: in on the way in (1027 + 1030), out on the way out
        return append_records(sample, decap_record(egress, hit.offset) + vni_record(not egress, hit.vni), 2)

    def _refresh_for(self, mac: bytes) -> bool:
        """A MAC missing from a table: read the tables again, at most once a second and once
        per MAC until the next full refresh."""
        if mac in self.missed or self.clock() - self.last_refresh < MISS_REFRESH_INTERVAL:
            return False
        if len(self.missed) >= MAX_MISSED:
            self.missed.clear()
        self.missed.add(mac)
        self.refresh(clear_missed=False)
        return True


def _iproute():
    from pyroute2 import IPRoute
    return IPRoute()
