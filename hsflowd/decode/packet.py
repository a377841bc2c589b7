"""A sampled packet header, read the way sflowtool reads it: Ethernet, 802.1Q, IPv4, IPv6,
TCP, UDP, ICMP, and VXLAN's inner packet.

The result is the list of fields sflowtool prints for a sampled_header (``dstMAC``,
``decodedVLAN``, ``ethernet_type``, ``IPSize``, ``srcIP``, ``TCPFlags``...), in its order and
under its names, plus the flow key it keeps for ``-l`` (addresses, protocol, ports).  The
rules are sflowtool's own (src/sflowtool.c, decodeLinkLayer and after), so that ``-g`` can
match it line for line: how many bytes each layer needs before it is read, which VLAN tag
types are followed, the 802.2/SNAP forms, the IPv6 extension headers skipped.  A header cut
short is read as far as it goes, and ``truncated`` names the layer it ends in; nothing here
raises on any bytes (the fuzz tests fail on any exception).

The layouts of the headers themselves (where each field is, how wide) are dpkt's: its
declarative header classes are read header by header, not as a whole packet, because dpkt's
own dissector takes different turns (it trims to the IP total length, follows two VLAN tags
at most, guesses ISL and MPLS payloads).  dpkt rather than scapy, measured on the captures'
155 headers (bench/bench_decode.py): this whole decode runs at about 98,000 headers a second,
while scapy's Ether() alone, reading two fields, runs at 32,000 (and a first, cold pass at
7,000); dpkt imports in 25 ms where scapy takes 180 ms and logs warnings.

VXLAN (UDP port 4789) is this decoder's addition: sflowtool stops at the outer UDP header, so
``-g`` and ``-l`` do not show the inner packet; JSON and text do, under ``inner``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Dict, List, NamedTuple, Optional, Union

import dpkt

Address = Union[IPv4Address, IPv6Address]
Value = Union[int, str, bytes, IPv4Address, IPv6Address]

VXLAN_PORT = 4789
MAX_INNER = 2  # VXLAN inside VXLAN inside VXLAN is not followed further

# sampled_header.header_protocol values sflowtool knows but does not decode
NO_DECODE = frozenset({2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 16, 17, 18})
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200, 0x9300})
IPV6_SKIPPED = frozenset({0, 43, 44, 51, 60})  # hop-by-hop, routing, fragment, AH, dest. options
TRANSPORT = {1: "icmp", 6: "tcp", 17: "udp"}   # the layer names ``truncated`` uses, and:
LAYERS = frozenset({"ethernet", "vlan", "llc", "802.11", "ipv4", "ipv6", "ipv6 extension",
                    "vxlan", *TRANSPORT.values()})


class Field(NamedTuple):
    """One ``name value`` line, as sflowtool names it."""

    name: str
    value: Value


class Note(NamedTuple):
    """A line sflowtool prints with no field name (``NO_DECODE headerProtocol=5``)."""

    text: str


# ---------------------------------------------------------------- dpkt headers, read alone

class _HeaderOnly:
    """Mixin: unpack this layer's fixed header and leave the rest as bytes."""

    def unpack(self, buf):
        dpkt.Packet.unpack(self, buf)

    def _unpack_data(self, buf):  # dpkt's Ethernet would dissect the payload from __init__
        pass


class _Ether(_HeaderOnly, dpkt.ethernet.Ethernet):
    pass


class _VlanTag(_HeaderOnly, dpkt.ethernet.VLANtag8021Q):
    pass


class _IPv4(_HeaderOnly, dpkt.ip.IP):
    pass


class _IPv6(_HeaderOnly, dpkt.ip6.IP6):
    pass


class _TCP(_HeaderOnly, dpkt.tcp.TCP):
    pass


class _UDP(_HeaderOnly, dpkt.udp.UDP):
    pass


class _ICMP(_HeaderOnly, dpkt.icmp.ICMP):
    pass


class _VXLAN(dpkt.Packet):
    """RFC 7348: flags (0x08 = VNI valid), 24 reserved bits, VNI, 8 reserved bits."""

    __hdr__ = (("flags", "B", 0x08), ("_reserved", "3s", b"\0\0\0"), ("_vni_reserved", "I", 0))

    @property
    def vni(self) -> int:
        return self._vni_reserved >> 8


# ---------------------------------------------------------------- the result

@dataclass
class SampledPacket:
    """The fields read from one sampled header, and the flow key sflowtool keeps.

    Key attributes are None when the decode did not reach them (sflowtool then keeps what an
    earlier record of the same sample set).
    """

    items: List[Union[Field, Note]] = field(default_factory=list)
    eth_src: Optional[bytes] = None
    eth_dst: Optional[bytes] = None
    eth_type: Optional[int] = None
    vlan: Optional[int] = None
    ip_offset: Optional[int] = None  # where the IPv4 header starts (sflowtool: offsetToIPV4)
    ip_src: Optional[Address] = None
    ip_dst: Optional[Address] = None
    protocol: Optional[int] = None
    tos: Optional[int] = None
    ttl: Optional[int] = None
    src_port: Optional[int] = None
    dst_port: Optional[int] = None
    tcp_flags: Optional[int] = None
    vni: Optional[int] = None
    inner: Optional["SampledPacket"] = None
    truncated: Optional[str] = None  # the layer (LAYERS) the header ends in, if it ends in one

    def add(self, name: str, value: Value) -> None:
        self.items.append(Field(name, value))


def decode_header(protocol: int, frame_length: int, stripped: int, header: bytes,
                  depth: int = 0) -> SampledPacket:
    """What sflowtool reads from sampled_header's bytes (the fields after ``headerBytes``)."""
    pkt = SampledPacket()
    try:
        _decode(pkt, protocol, frame_length, stripped, bytes(header), depth)
    except _Cut as cut:
        pkt.truncated = cut.layer
    return pkt


class _Cut(Exception):
    """The header ends inside ``layer``: the decode stops there, with what it has read."""

    def __init__(self, layer: str):
        super().__init__(layer)
        self.layer = layer


def _need(h: bytes, end: int, layer: str) -> None:
    """Each header is checked here before it is read: ``end`` bytes of ``h``, or the decode
    stops (only sflowtool's look-ahead, ``_byte``, reads past the end, as zeros)."""
    if end > len(h):
        raise _Cut(layer)


def _decode(pkt, protocol, frame_length, stripped, h, depth):
    version, offset = None, 0
    if protocol == 1:
        version, offset = _ethernet(pkt, h)
    elif protocol == 11:
        version = 4
    elif protocol == 12:
        version = 6
    elif protocol == 15:
        _ieee80211(pkt, h)
    elif protocol in NO_DECODE:
        pkt.items.append(Note(f"NO_DECODE headerProtocol={protocol}"))
    else:
        pkt.items.append(Note(f"UNKNOWN headerProtocol={protocol}"))
    if version is None:
        return
    if version == 4:
        pkt.ip_offset = offset
    # the size of the original IP packet; sflowtool's arithmetic is 32-bit, printed signed
    pkt.add("IPSize", _signed32(frame_length - stripped - offset))
    if version == 4:
        _ipv4(pkt, h, offset, depth)
    else:
        _ipv6(pkt, h, offset, depth)


def _signed32(n: int) -> int:
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def _byte(h: bytes, i: int) -> int:
    return h[i] if 0 <= i < len(h) else 0


def _ethernet(pkt: SampledPacket, h: bytes):
    """(IP version, offset of the IP header) or (None, 0); adds the link-layer fields."""
    _need(h, 14, "ethernet")
    eth = _Ether(h[:14])
    pkt.add("dstMAC", eth.dst)
    pkt.add("srcMAC", eth.src)
    pkt.eth_dst, pkt.eth_src = eth.dst, eth.src
    type_len, ptr, depth = eth.type, 14, 0
    while type_len in VLAN_TPIDS:
        _need(h, ptr + 4, "vlan")
        tag = _VlanTag(h[ptr:ptr + 4])
        suffix = f".{depth}" if depth else ""
        pkt.add("decodedVLAN" + suffix, tag.id)
        pkt.add("decodedPriority" + suffix, tag.pri)
        pkt.vlan = tag.id
        type_len, ptr, depth = tag.type, ptr + 4, depth + 1
    if len(h) < 20:  # sflowtool: too short for IP, IPX or SNAP after all
        if type_len in (0x0800, 0x86DD) or type_len <= 1500:
            raise _Cut("ipv4" if type_len == 0x0800 else "ipv6" if type_len == 0x86DD else "llc")
        return None, 0
    if type_len in (0x0200, 0x0201, 0x0600):  # a raw IPX packet: nothing to decode
        ipx_len = (_byte(h, ptr + 2) << 8) | _byte(h, ptr + 3)
        if _byte(h, ptr) == 0xFF and _byte(h, ptr + 1) == 0xFF and 30 <= ipx_len <= 576:
            return None, 0
    if type_len <= 1500:  # 802.3 length: an 802.2 LLC header follows
        if (_byte(h, ptr), _byte(h, ptr + 1), _byte(h, ptr + 2)) == (0xAA, 0xAA, 0x03):
            oui = bytes(_byte(h, ptr + 3 + i) for i in range(3))
            if oui != b"\0\0\0":
                pkt.add("VSNAP_OUI", "-".join(f"{b:02X}" for b in oui))
                return None, 0
            type_len = (_byte(h, ptr + 6) << 8) | _byte(h, ptr + 7)  # RFC 2895: an Ethertype
            ptr += 8
        elif _byte(h, ptr) == 0x06 and _byte(h, ptr + 1) == 0x06 and _byte(h, ptr + 2) & 1:
            type_len, ptr = 0x0800, ptr + 3  # IP straight over 802.2
        else:
            return None, 0
    pkt.eth_type = type_len
    pkt.add("ethernet_type", type_len)
    if type_len == 0x0800:
        _need(h, ptr + 20, "ipv4")
        if h[ptr] >> 4 != 4 or h[ptr] & 15 < 5:
            return None, 0
        return 4, ptr
    if type_len == 0x86DD:
        _need(h, ptr + 1, "ipv6")
        if h[ptr] >> 4 == 6:
            return 6, ptr
    return None, 0


def _ieee80211(pkt: SampledPacket, h: bytes) -> None:
    """An 802.11 data frame's addresses, chosen by its ToDS/FromDS bits (as sflowtool)."""
    _need(h, 24, "802.11")
    fc = h[0] | (h[1] << 8)
    if (fc >> 2) & 3 != 2:  # management or control: no addresses decoded
        return
    to_ds, from_ds = (fc >> 8) & 1, (fc >> 9) & 1
    addr = [h[4:10], h[10:16], h[16:22]]
    if to_ds:
        dst = addr[2]
        src = bytes(_byte(h, 24 + i) for i in range(6)) if from_ds else addr[1]
    else:
        dst = addr[0]
        src = addr[2] if from_ds else addr[1]
    pkt.add("srcMAC", src)
    pkt.add("dstMAC", dst)
    pkt.add("txMAC", addr[1])
    pkt.add("rxMAC", addr[0])
    pkt.eth_src = pkt.eth_dst = src  # sflowtool copies the source into both
    if to_ds and from_ds:
        _need(h, 30, "802.11")  # the fourth address, read as zeros where it is missing


def _ipv4(pkt: SampledPacket, h: bytes, off: int, depth: int) -> None:
    _need(h, off + 20, "ipv4")
    ip = _IPv4(h[off:off + 20])
    pkt.ip_src, pkt.ip_dst = IPv4Address(ip.src), IPv4Address(ip.dst)
    pkt.protocol, pkt.tos, pkt.ttl = ip.p, ip.tos, ip.ttl
    pkt.add("ip.tot_len", ip.len)
    pkt.add("srcIP", pkt.ip_src)
    pkt.add("dstIP", pkt.ip_dst)
    pkt.add("IPProtocol", ip.p)
    pkt.add("IPTOS", ip.tos)
    pkt.add("IPTTL", ip.ttl)
    pkt.add("IPID", ip.id)
    fragment = ip._flags_offset & 0x1FFF
    if fragment:
        pkt.add("IPFragmentOffset", fragment)
        return
    end = off + (ip._v_hl & 0x0F) * 4
    _need(h, end, "ipv4")   # its options
    _layer4(pkt, h, end, depth)


def _ipv6(pkt: SampledPacket, h: bytes, off: int, depth: int) -> None:
    _need(h, off + 40, "ipv6")
    version = h[off] >> 4
    if version != 6:  # only a raw IPv6 header (protocol 12) can get here so
        pkt.items.append(Note(f"header decode error: unexpected IP version: {version}"))
        return
    ip6 = _IPv6(h[off:off + 40])
    pkt.tos, pkt.ttl = ip6.fc, ip6.hlim
    pkt.ip_src, pkt.ip_dst = IPv6Address(ip6.src), IPv6Address(ip6.dst)
    pkt.add("IPTOS", ip6.fc)
    pkt.add("IP6_label", ip6.flow)
    pkt.add("IPV6_payloadLen", ip6.plen if ip6.plen else "<jumbo>")
    pkt.add("IPTTL", ip6.hlim)
    pkt.add("srcIP6", pkt.ip_src)
    pkt.add("dstIP6", pkt.ip_dst)
    next_header, ptr = ip6.nxt, off + 40
    while next_header in IPV6_SKIPPED:
        pkt.add("IP6HeaderExtension", next_header)
        _need(h, ptr + 2, "ipv6 extension")
        # sflowtool counts every extension's length in 8-byte units (AH's is in 4-byte ones)
        next_header, ptr = h[ptr], ptr + 8 * (h[ptr + 1] + 1)
        _need(h, ptr, "ipv6 extension")
    pkt.protocol = next_header
    pkt.add("IPProtocol", next_header)
    _layer4(pkt, h, ptr, depth)


def _layer4(pkt: SampledPacket, h: bytes, ptr: int, depth: int) -> None:
    layer = TRANSPORT.get(pkt.protocol)
    if layer is None:
        return
    _need(h, ptr + 8, layer)  # sflowtool reads no transport header from fewer than 8 bytes
    if pkt.protocol == 1:
        icmp = _ICMP(h[ptr:ptr + 4])
        pkt.add("ICMPType", icmp.type)
        pkt.add("ICMPCode", icmp.code)
        pkt.src_port, pkt.dst_port = icmp.type, icmp.code
    elif pkt.protocol == 6:
        # a TCP header cut short after the ports: the rest reads as zero
        tcp = _TCP(h[ptr:ptr + 20].ljust(20, b"\0"))
        pkt.src_port, pkt.dst_port, pkt.tcp_flags = tcp.sport, tcp.dport, tcp._off_flags & 0xFF
        pkt.add("TCPSrcPort", tcp.sport)
        pkt.add("TCPDstPort", tcp.dport)
        pkt.add("TCPFlags", pkt.tcp_flags)
        _need(h, ptr + 20, "tcp")
    elif pkt.protocol == 17:
        udp = _UDP(h[ptr:ptr + 8])
        pkt.src_port, pkt.dst_port = udp.sport, udp.dport
        pkt.add("UDPSrcPort", udp.sport)
        pkt.add("UDPDstPort", udp.dport)
        pkt.add("UDPBytes", udp.ulen)
        if udp.dport == VXLAN_PORT:
            _vxlan(pkt, h[ptr + 8:], udp.ulen, depth)


def _vxlan(pkt: SampledPacket, payload: bytes, udp_length: int, depth: int) -> None:
    if depth >= MAX_INNER:
        return
    _need(payload, 8, "vxlan")
    vx = _VXLAN(payload[:8])
    if not vx.flags & 0x08:  # no valid VNI: not VXLAN after all
        return
    pkt.vni = vx.vni
    # the inner IP packet is the UDP payload less the VXLAN and inner Ethernet headers
    pkt.inner = decode_header(1, max(udp_length - 16, 0), 0, payload[8:], depth + 1)


# ---------------------------------------------------------------- JSON and text

def as_dict(pkt: SampledPacket) -> Dict[str, Any]:
    """The decoded fields under sflowtool's names, as JSON values (MACs as aa:bb:..., IP
    addresses as Python writes them); a name met twice gives a list; VXLAN adds
    ``VXLAN_VNI`` and the inner packet under ``inner``; a header cut short, ``truncated``."""
    out: Dict[str, Any] = {}
    for item in pkt.items:
        if isinstance(item, Note):
            out.setdefault("notes", []).append(item.text)
            continue
        value = item.value
        if isinstance(value, bytes):
            value = ":".join(f"{b:02x}" for b in value)
        elif isinstance(value, (IPv4Address, IPv6Address)):
            value = str(value)
        if item.name in out:
            before = out[item.name]
            out[item.name] = (before if isinstance(before, list) else [before]) + [value]
        else:
            out[item.name] = value
    if pkt.vni is not None:
        out["VXLAN_VNI"] = pkt.vni
    if pkt.inner is not None:
        out["inner"] = as_dict(pkt.inner)
    if pkt.truncated is not None:
        out["truncated"] = pkt.truncated
    return out


def add_decoded(plain: Dict[str, Any], datagram) -> None:
    """Put each sampled_header's decode, as ``decoded``, into ``to_dict(datagram)``."""
    from ..sflow.flows import SampledHeader
    for plain_sample, sample in zip(plain.get("samples", []), datagram.samples):
        for key in ("flow_records", "discard"):
            records = getattr(sample, key, None)
            if not records:
                continue
            for plain_record, record in zip(plain_sample[key], records):
                if isinstance(record, SampledHeader):
                    plain_record["decoded"] = as_dict(decode_header(
                        record.header_protocol, record.frame_length, record.stripped,
                        record.header))
