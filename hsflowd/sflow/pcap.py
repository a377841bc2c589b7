"""Reading sFlow datagrams out of capture files (pcap and pcapng), for ``hsflowd decode --pcap``.

Only what a capture of sFlow traffic needs: Ethernet (with VLAN tags), raw IP and Linux
"cooked" link types; IPv4 and IPv6; UDP.  Fragmented datagrams are skipped.
"""

from __future__ import annotations

import struct
from ipaddress import ip_address
from typing import BinaryIO, Iterator, NamedTuple, Optional, Tuple

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
    timestamp: float
    source: str       # "ip:port" of the sender
    destination_port: int
    payload: bytes


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


def read_frames(stream: BinaryIO) -> Iterator[Tuple[float, int, bytes]]:
    """(timestamp, linktype, frame) for each packet of a pcap or pcapng file."""
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
    while True:
        hdr = stream.read(16)
        if len(hdr) < 16:
            return
        sec, frac, caplen, _ = record.unpack(hdr)
        data = stream.read(caplen)
        if len(data) < caplen:
            return
        yield sec + frac * unit, linktype, data


def _read_pcapng(stream: BinaryIO, first: bytes) -> Iterator[Tuple[float, int, bytes]]:
    order = "<"
    interfaces = []  # (linktype, seconds per tick)
    block_type = struct.unpack("<I", first)[0]
    while True:
        raw_len = stream.read(4)
        if len(raw_len) < 4:
            return
        if block_type == _PCAPNG_SHB:
            bom = stream.read(4)
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(order + "I", raw_len)[0]
            body = bom + stream.read(length - 12)
            interfaces = []
        else:
            length = struct.unpack(order + "I", raw_len)[0]
            if length < 12:
                raise CaptureError("pcapng block too short")
            body = stream.read(length - 12)
        stream.read(4)  # trailing length
        if block_type == 1 and len(body) >= 8:  # interface description
            linktype = struct.unpack_from(order + "H", body)[0]
            interfaces.append((linktype, _if_tsresol(body[8:], order)))
        elif block_type == 6 and len(body) >= 20:  # enhanced packet
            iface, hi, lo, caplen = struct.unpack_from(order + "IIII", body)
            if iface < len(interfaces):
                linktype, tick = interfaces[iface]
                yield ((hi << 32) | lo) * tick, linktype, body[20: 20 + caplen]
        elif block_type == 3 and interfaces:  # simple packet
            yield 0.0, interfaces[0][0], body[4:]
        nxt = stream.read(4)
        if len(nxt) < 4:
            return
        block_type = struct.unpack(order + "I", nxt)[0]


def _if_tsresol(options: bytes, order: str) -> float:
    off = 0
    while off + 4 <= len(options):
        code, size = struct.unpack_from(order + "HH", options, off)
        if code == 0:
            break
        if code == 9 and size >= 1:
            v = options[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        off += 4 + size + (-size % 4)
    return 1e-6


def read_udp(stream: BinaryIO, port: Optional[int] = None) -> Iterator[UdpPayload]:
    """UDP payloads of a capture, optionally only those sent to ``port``."""
    for ts, linktype, frame in read_frames(stream):
        got = udp_of(frame, linktype)
        if got is None:
            continue
        src, dport, payload = got
        if port is None or dport == port:
            yield UdpPayload(ts, src, dport, payload)
