"""One walk through a sampled packet, shared by everything that looks inside one.

The flow hooks (markTraffic's 2210, tcp's 2209, the tunnels' 1023-1030) and the capture
reader of ``hsflowd decode`` all need the same few things from a frame: its MACs, its IP
addresses, its transport protocol and ports.  ``walk_frame`` finds them once, through
Ethernet with any mix of 802.1Q, 802.1ad and 0x9100 tags, IPv4 (first fragments only for
ports) and IPv6 with its extension headers, down to the TCP, UDP or ICMP header; the
offsets it records let a reader go on from there (VXLAN's inner frame, a UDP payload).

``walk_sample`` does the same for an encoded flow sample on its way out: the fields of the
expanded flow sample a hook reads (data source, input, output) and the walk of its
sampled_header.  ``append_records`` adds records to such a sample.  The layouts are the
wire format's (sFlow v5, flow_sample_expanded and sampled_header); nothing here allocates
beyond the one ``SampledPacket`` and the address slices.
"""

from __future__ import annotations

import struct
from typing import Optional

ETHERNET, IPV4, IPV6 = 1, 11, 12              # sampled_header's header_protocol
FCS = 4          # an Ethernet frame's check sequence: on the wire, never in what is captured
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
MAX_TAGS = 4
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
_V6_EXTENSIONS = frozenset((0, 43, 60, 51))   # hop-by-hop, routing, destination, AH
_V6_FRAGMENT = 44
MAX_V6_HEADERS = 8

FLOW_SAMPLE_TAG = 3                           # expanded flow sample (enterprise 0, format 3)
SAMPLED_HEADER_TAG = 1
_WORD = struct.Struct(">I")
# tag, length, sequence, source class, source index, rate, pool, drops, input format,
# input, output format, output, record count
_FIXED = struct.Struct(">IIIIIIIIIIIII")
_RECORD = struct.Struct(">II")
_SAMPLED_HEADER = struct.Struct(">IIII")       # header_protocol, frame_length, stripped, length
_FIRST_RECORD = _FIXED.size                    # 52
# the fixed part, then a first record's tag and length and sampled_header's four words
_FIRST_HEADER = struct.Struct(">" + "I" * 19)
COUNT_OFFSET = 48
MAX_RECORDS = 16                              # walked looking for the sampled header
_U16 = struct.Struct(">H").unpack_from
_PORTS = struct.Struct(">HH").unpack_from
_IPV4_FIELDS = struct.Struct(">BB4xH xB2x4s4s").unpack_from   # ver/ihl, tos, frag, proto, src, dst
_IPV6_FIELDS = struct.Struct(">I2xB x16s16s").unpack_from     # ver/class/flow, next header, src, dst


class SampledPacket:
    """What a walk found.  Offsets index the buffer walked (for a flow sample: the
    encoded sample itself); -1 means "not there"; addresses are packed bytes (b"" if
    none).  ``end`` is where the captured bytes stop: a header cut short still has
    everything before the cut.  What a walk does not reach keeps the class's value (no
    slots: an instance holds only what was found, which is quicker to make)."""

    ds_index = input = output_format = output = 0
    header_protocol = frame_length = start = end = 0
    l2 = l3 = l4 = -1
    ethertype = ip_version = ip_protocol = tos = 0
    src_ip = dst_ip = b""
    fragment = False              # a piece of a fragmented IP packet (the first one too)
    src_port = dst_port = 0

    FIELDS = ("ds_index", "input", "output_format", "output", "header_protocol",
              "frame_length", "start", "end", "l2", "ethertype", "l3", "ip_version",
              "src_ip", "dst_ip", "ip_protocol", "tos", "fragment", "l4", "src_port",
              "dst_port")

    def __repr__(self) -> str:
        return "SampledPacket(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS) + ")"


def walk_frame(buf: bytes, start: int, end: int, protocol: int,
               pkt: Optional[SampledPacket] = None) -> SampledPacket:
    """Walk ``buf[start:end]``, a frame of ``protocol`` (Ethernet, or a bare IPv4/IPv6
    packet), into ``pkt`` (a new one if not given)."""
    if pkt is None:
        pkt = SampledPacket()
    pkt.header_protocol, pkt.start, pkt.end = protocol, start, end
    p = start
    if protocol == ETHERNET:
        if p + 14 > end:
            return pkt
        pkt.l2 = p
        etype = _U16(buf, p + 12)[0]
        p += 14
        if etype in VLAN_TPIDS:
            for _ in range(MAX_TAGS):
                if p + 4 > end:
                    pkt.ethertype = etype
                    return pkt
                etype = _U16(buf, p + 2)[0]
                p += 4
                if etype not in VLAN_TPIDS:
                    break
        pkt.ethertype = etype
        if etype == ETH_IPV4:
            version = 4
        elif etype == ETH_IPV6:
            version = 6
        else:
            return pkt
    elif protocol == IPV4:
        version = 4
    elif protocol == IPV6:
        version = 6
    else:
        return pkt
    if version == 4:
        if p + 20 > end:
            return pkt
        vihl, tos, frag, nh, src, dst = _IPV4_FIELDS(buf, p)
        if vihl >> 4 != 4:
            return pkt
        pkt.l3, pkt.ip_version, pkt.tos, pkt.ip_protocol = p, 4, tos, nh
        pkt.src_ip, pkt.dst_ip = src, dst
        if frag & 0x3FFF:
            pkt.fragment = True                    # more fragments, or an offset
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or frag & 0x1FFF:
            return pkt                             # a later fragment has no ports
        t = p + ihl
    else:
        if p + 40 > end:
            return pkt
        word, nh, pkt.src_ip, pkt.dst_ip = _IPV6_FIELDS(buf, p)
        if word >> 28 != 6:
            return pkt
        pkt.l3, pkt.ip_version, pkt.tos = p, 6, (word >> 20) & 0xFF
        t = p + 40
        if nh in _V6_EXTENSIONS or nh == _V6_FRAGMENT:
            for _ in range(MAX_V6_HEADERS):
                if nh in _V6_EXTENSIONS:
                    if t + 2 > end:
                        break
                    # AH counts its length in 4-byte words (less 2), the others in 8-byte ones
                    size = (buf[t + 1] + 2) * 4 if nh == 51 else (buf[t + 1] + 1) * 8
                    nh, t = buf[t], t + size
                elif nh == _V6_FRAGMENT:
                    if t + 8 > end:
                        break
                    pkt.fragment = True
                    if _U16(buf, t + 2)[0] & 0xFFF8:
                        pkt.ip_protocol = buf[t]
                        return pkt                 # a later fragment
                    nh, t = buf[t], t + 8
                else:
                    break
            else:
                pkt.ip_protocol = nh
                return pkt
            if nh in _V6_EXTENSIONS or nh == _V6_FRAGMENT:
                pkt.ip_protocol = nh               # cut inside the extension headers
                return pkt
        pkt.ip_protocol = nh
    if t > end:
        return pkt
    pkt.l4 = t
    if (nh == TCP or nh == UDP) and t + 4 <= end:
        pkt.src_port, pkt.dst_port = _PORTS(buf, t)
    return pkt


def walk_sample(sample: bytes) -> Optional[SampledPacket]:
    """The fields of an encoded expanded flow sample that hooks read, and the walk of its
    sampled_header (``start:end`` are its bytes in ``sample``); None if ``sample`` is not
    an expanded flow sample.  A sample without a sampled_header walks nothing
    (header_protocol 0)."""
    size = len(sample)
    if size >= _FIRST_HEADER.size:
        # the samplers put the sampled_header first: one read finds it
        (tag, _length, _seq, _ds_class, ds_index, _rate, _pool, _drops, _in_format, input_if,
         out_format, output_if, count, rtag, rlength, protocol, frame, _stripped, n) = \
            _FIRST_HEADER.unpack_from(sample)
        if tag != FLOW_SAMPLE_TAG:
            return None
        pkt = SampledPacket()
        pkt.ds_index, pkt.input, pkt.output_format, pkt.output = ds_index, input_if, out_format, output_if
        if count and rtag == SAMPLED_HEADER_TAG and rlength >= 16:
            pkt.frame_length = frame
            start = _FIRST_HEADER.size
            return walk_frame(sample, start, min(start + n, _FIRST_RECORD + 8 + rlength, size),
                              protocol, pkt)
    elif size >= _FIXED.size:
        (tag, _length, _seq, _ds_class, ds_index, _rate, _pool, _drops, _in_format, input_if,
         out_format, output_if, count) = _FIXED.unpack_from(sample)
        if tag != FLOW_SAMPLE_TAG:
            return None
        pkt = SampledPacket()
        pkt.ds_index, pkt.input, pkt.output_format, pkt.output = ds_index, input_if, out_format, output_if
    else:
        return None
    off = _FIRST_RECORD
    for _ in range(min(count, MAX_RECORDS)):
        if off + 8 > size:
            break
        rtag, length = _RECORD.unpack_from(sample, off)
        if rtag == SAMPLED_HEADER_TAG and length >= 16 and off + 24 <= size:
            protocol, frame, _stripped, n = _SAMPLED_HEADER.unpack_from(sample, off + 8)
            start = off + 24
            pkt.frame_length = frame
            return walk_frame(sample, start, min(start + n, off + 8 + length, size), protocol, pkt)
        off += 8 + length
    return pkt


def append_records(sample: bytes, records: bytes, count: int) -> bytes:
    """``sample`` (an encoded flow sample) with ``count`` encoded records (tag, length and
    body each) added at the end: its length and record count grow to match."""
    length = _WORD.unpack_from(sample, 4)[0] + len(records)
    n = _WORD.unpack_from(sample, COUNT_OFFSET)[0] + count
    return b"".join((sample[:4], _WORD.pack(length), sample[8:COUNT_OFFSET], _WORD.pack(n),
                     sample[COUNT_OFFSET + 4:], records))


__all__ = ["FCS", "SampledPacket", "walk_frame", "walk_sample", "append_records", "ETHERNET", "IPV4",
           "IPV6", "TCP", "UDP", "ICMP", "ICMPV6", "VLAN_TPIDS"]
