"""Reading sFlow datagrams out of capture files (pcap and pcapng), for ``hsflowd decode --pcap``.

Only what a capture of sFlow traffic needs: Ethernet (with VLAN tags), raw IP and Linux
"cooked" link types; IPv4 and IPv6; UDP.  Fragmented datagrams are skipped.
"""

from __future__ import annotations

import struct
from ipaddress import ip_address
from typing import BinaryIO, Iterator, List, NamedTuple, Optional, Tuple

_PCAP_MAGIC = {0xA1B2C3D4: ("<", 1e-6), 0xD4C3B2A1: (">", 1e-6),
               0xA1B23C4D: ("<", 1e-9), 0x4D3CB2A1: (">", 1e-9)}
_PCAPNG_SHB = 0x0A0D0D0A

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276


class CaptureError(ValueError):
    """The file is not a capture this reader understands."""


class UdpPayload(NamedTuple):
    timestamp: float  # seconds since the epoch, as the capture recorded it
    source: str       # "ip:port" of the sender
    destination_port: int
    payload: bytes
    nanoseconds: int = 0  # the same instant, exactly (sflowtool prints its microseconds)


class Frame(NamedTuple):
    nanoseconds: int  # capture time, nanoseconds since the epoch
    linktype: int
    data: bytes


def _ip_payload(frame: bytes, linktype: int) -> Optional[bytes]:
    """The IP packet inside one captured frame, or None."""
    if linktype == LINKTYPE_ETHERNET:
        off, ethertype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            ethertype = int.from_bytes(frame[off + 2: off + 4], "big")
            off += 4
        return frame[off:] if ethertype in (0x0800, 0x86DD) else None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame
    if linktype == LINKTYPE_LINUX_SLL:
        return frame[16:] if frame[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return frame[20:] if frame[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    return None


def udp_of(frame: bytes, linktype: int) -> Optional[Tuple[str, int, bytes]]:
    """(source "ip:port", destination port, UDP payload) of a frame, if it is unfragmented UDP."""
    ip = _ip_payload(frame, linktype)
    if not ip:
        return None
    version = ip[0] >> 4
    if version == 4 and len(ip) >= 20:
        ihl = (ip[0] & 0x0F) * 4
        flags_frag = int.from_bytes(ip[6:8], "big")
        if ip[9] != 17 or flags_frag & 0x3FFF:  # not UDP, or a fragment
            return None
        src = str(ip_address(ip[12:16]))
        total = int.from_bytes(ip[2:4], "big")
        udp = ip[ihl:total] if total else ip[ihl:]
    elif version == 6 and len(ip) >= 40:
        if ip[6] != 17:  # extension headers are not followed: sFlow never needs them
            return None
        src = f"[{ip_address(ip[8:24])}]"
        udp = ip[40: 40 + int.from_bytes(ip[4:6], "big")]
    else:
        return None
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack_from(">HHH", udp)
    return f"{src}:{sport}", dport, bytes(udp[8:length] if length >= 8 else udp[8:])


def read_frames(stream: BinaryIO) -> Iterator[Frame]:
    """Every packet of a pcap or pcapng file.  A file cut short ends the iteration."""
    head = stream.read(4)
    if len(head) < 4:
        raise CaptureError("file is empty or not a capture")
    magic = struct.unpack("<I", head)[0]
    if magic == _PCAPNG_SHB:
        yield from _read_pcapng(stream, head)
        return
    if magic not in _PCAP_MAGIC:
        raise CaptureError("not a pcap or pcapng file")
    order, unit = _PCAP_MAGIC[magic]
    rest = stream.read(20)
    if len(rest) < 20:
        raise CaptureError("pcap header truncated")
    linktype = struct.unpack(order + "HHiIII", rest)[5] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    ns_per_tick = round(unit * 1e9)
    while True:
        hdr = stream.read(16)
        if len(hdr) < 16:
            return
        sec, frac, caplen, _ = record.unpack(hdr)
        data = stream.read(caplen)
        if len(data) < caplen:
            return
        yield Frame(sec * 1_000_000_000 + frac * ns_per_tick, linktype, data)


class _Interface(NamedTuple):
    """What a pcapng Interface Description Block says about the packets that name it."""

    linktype: int
    units_per_second: int  # if_tsresol: timestamp ticks per second
    offset: int            # if_tsoffset: seconds to add to every timestamp


_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


def _read_pcapng(stream: BinaryIO, first: bytes) -> Iterator[Frame]:
    """Blocks are (type, total length, body, total length again); the Section Header Block
    sets the byte order of its section, so its length is read only after its byte-order magic."""
    order = "<"
    interfaces: List[_Interface] = []
    block_type = _PCAPNG_SHB
    while True:
        raw_len = stream.read(4)
        if len(raw_len) < 4:
            return
        if block_type == _PCAPNG_SHB:
            bom = stream.read(4)
            if len(bom) < 4:
                return
            if bom not in _BYTE_ORDER:
                raise CaptureError("pcapng section header has no byte-order magic")
            order = _BYTE_ORDER[bom]
            length = struct.unpack(order + "I", raw_len)[0]
            if length < 28 or length % 4:
                raise CaptureError(f"pcapng section header of {length} bytes")
            body = bom + stream.read(length - 16)
            interfaces = []
        else:
            length = struct.unpack(order + "I", raw_len)[0]
            if length < 12 or length % 4:
                raise CaptureError(f"pcapng block of {length} bytes")
            body = stream.read(length - 12)
        if len(body) < length - 12 or len(stream.read(4)) < 4:  # cut short, trailing length
            return
        if block_type == 1 and len(body) >= 8:  # interface description
            linktype = struct.unpack_from(order + "H", body)[0]
            interfaces.append(_if_options(linktype, body[8:], order))
        elif block_type == 6 and len(body) >= 20:  # enhanced packet
            iface, hi, lo, caplen = struct.unpack_from(order + "IIII", body)
            if iface < len(interfaces):
                link, per_second, offset = interfaces[iface]
                ticks = (hi << 32) | lo
                ns = ticks * 1_000_000_000 // per_second + offset * 1_000_000_000
                yield Frame(ns, link, body[20: 20 + caplen])
        elif block_type == 3 and interfaces and len(body) >= 4:  # simple packet: no time
            caplen = struct.unpack_from(order + "I", body)[0]
            yield Frame(0, interfaces[0].linktype, body[4: 4 + caplen])
        nxt = stream.read(4)
        if len(nxt) < 4:
            return
        block_type = struct.unpack(order + "I", nxt)[0]


def _if_options(linktype: int, options: bytes, order: str) -> _Interface:
    """if_tsresol (code 9, default microseconds) and if_tsoffset (code 14) of an IDB."""
    per_second, offset, off = 1_000_000, 0, 0
    while off + 4 <= len(options):
        code, size = struct.unpack_from(order + "HH", options, off)
        if code == 0:
            break
        value = options[off + 4: off + 4 + size]
        if code == 9 and size >= 1:
            v = value[0]
            per_second = 2 ** (v & 0x7F) if v & 0x80 else 10 ** min(v, 18)
        elif code == 14 and size >= 8:
            offset = struct.unpack(order + "q", value[:8])[0]
        off += 4 + size + (-size % 4)
    return _Interface(linktype, per_second, offset)


def read_udp(stream: BinaryIO, port: Optional[int] = None) -> Iterator[UdpPayload]:
    """UDP payloads of a capture, optionally only those sent to ``port``."""
    for ns, linktype, frame in read_frames(stream):
        got = udp_of(frame, linktype)
        if got is None:
            continue
        src, dport, payload = got
        if port is None or dport == port:
            yield UdpPayload(ns / 1e9, src, dport, payload, ns)
