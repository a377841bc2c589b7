"""sFlow datagrams out of capture files (pcap and pcapng), for ``hsflowd decode --pcap``.

dpkt reads the files (``dpkt.pcap.Reader``, ``dpkt.pcapng.Reader``) and the link headers of
Linux "cooked" SLL and SLL2 and BSD loopback; Ethernet with its VLAN tags, IP and UDP are
read by the walk the agent's flow hooks share (``frames``).  This file picks the reader,
takes each frame to its UDP datagram (``udp_of``), and turns what dpkt raises for a broken
file into one CaptureError.

What dpkt's readers decide:

* a file that ends inside a packet ends the list (what came before stands), as a capture
  still being written or stopped by ^C does; a classic pcap gives that last frame cut
  short, so its datagram is reported as bad rather than dropped;
* dpkt gives times as a float, which holds today's time to a quarter of a microsecond:
  they are kept to the microsecond, as sflowtool prints them (a nanosecond pcap's times
  come as a Decimal and are kept whole);
* a pcapng file's packets are all read with its first interface's link type and clock.
"""

from __future__ import annotations

import io
import socket
from decimal import Decimal
from typing import BinaryIO, Iterator, NamedTuple, Optional, Tuple

import dpkt

from ..frames import ETHERNET, IPV4, IPV6, UDP, walk_frame

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"   # a Section Header Block's type

# LINKTYPE_* values, as capture files carry them (tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276
LINK_LAYERS = {LINKTYPE_NULL: dpkt.loopback.Loopback, LINKTYPE_LOOP: dpkt.loopback.Loopback,
               LINKTYPE_LINUX_SLL: dpkt.sll.SLL, LINKTYPE_LINUX_SLL2: dpkt.sll2.SLL2}
RAW_IP = frozenset({LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})


class CaptureError(ValueError):
    """The file is not a capture that can be read."""


class UdpPayload(NamedTuple):
    timestamp: float  # seconds since the epoch, as the capture recorded it
    source: str       # "ip:port" of the sender
    destination_port: int
    payload: bytes
    nanoseconds: int = 0  # the same instant as an integer (sflowtool prints its microseconds)


def udp_of(linktype: int, frame: bytes) -> Optional[Tuple[str, int, bytes]]:
    """(sender "ip:port", destination port, UDP payload) of a frame that holds unfragmented
    UDP over IPv4 or IPv6; None for any other frame.  dpkt reads the link headers other
    than Ethernet; the agent's own walk (``frames``) reads Ethernet, its VLAN tags, IP and
    UDP.  A datagram cut short by the capture's snap length comes out cut: the decoder
    says what is missing."""
    if linktype == LINKTYPE_ETHERNET:
        pkt = walk_frame(frame, 0, len(frame), ETHERNET)
    else:
        if linktype in RAW_IP:
            start = 0
        elif linktype in LINK_LAYERS:
            try:
                start = LINK_LAYERS[linktype](frame).__hdr_len__
            except dpkt.UnpackError:   # shorter than its own link header: not a datagram
                return None
        else:
            return None
        version = frame[start] >> 4 if len(frame) > start else 0
        if version not in (4, 6):
            return None
        pkt = walk_frame(frame, start, len(frame), IPV4 if version == 4 else IPV6)
    if pkt.ip_protocol != UDP or pkt.fragment or pkt.l4 < 0 or pkt.l4 + 8 > len(frame):
        return None
    if pkt.ip_version == 4:
        sender = socket.inet_ntoa(pkt.src_ip)
    else:
        sender = f"[{socket.inet_ntop(socket.AF_INET6, pkt.src_ip)}]"
    ulen = (frame[pkt.l4 + 4] << 8) | frame[pkt.l4 + 5]
    body = frame[pkt.l4 + 8:pkt.l4 + ulen] if ulen >= 8 else frame[pkt.l4 + 8:]
    return f"{sender}:{pkt.src_port}", pkt.dst_port, bytes(body)


def _nanoseconds(ts) -> int:
    if isinstance(ts, Decimal):
        return int(ts * 1_000_000_000)
    return round(ts * 1_000_000) * 1000


def _open(stream: BinaryIO):
    """The file's kind, dpkt's reader for it and the stream it reads; CaptureError for a
    file with neither magic number or a header dpkt cannot read."""
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)
    magic = stream.peek(4)[:4]
    if not magic:
        raise CaptureError("the file is empty")
    kind = "pcapng" if magic == PCAPNG_MAGIC else "pcap"
    try:
        reader = (dpkt.pcapng.Reader if kind == "pcapng" else dpkt.pcap.Reader)(stream)
    except dpkt.NeedData:
        raise CaptureError(f"{kind} file header cut short") from None
    except (dpkt.UnpackError, ValueError) as e:
        if kind == "pcap":
            raise CaptureError("not a pcap or pcapng file") from None
        raise CaptureError(f"bad pcapng file: {e}") from None
    return kind, reader, stream


def read_udp(stream: BinaryIO, port: Optional[int] = None) -> Iterator[UdpPayload]:
    """UDP payloads of a capture, optionally only those sent to ``port``."""
    kind, reader, stream = _open(stream)
    linktype = reader.datalink() & 0x0FFFFFFF   # the upper bits carry FCS lengths
    frames, count = iter(reader), 0
    while True:
        try:
            ts, frame = next(frames)
        except StopIteration:
            return
        except (dpkt.UnpackError, ValueError) as e:   # ValueError: a negative block length
            if isinstance(e, dpkt.NeedData) and not stream.read(1):
                return    # the file ends inside a packet
            raise CaptureError(f"bad {kind} file after packet {count}: "
                               f"{e or 'a block is shorter than its length'}") from None
        count += 1
        got = udp_of(linktype, frame)
        if got is None:
            continue
        source, dport, payload = got
        if port is None or dport == port:
            ns = _nanoseconds(ts)
            yield UdpPayload(ns / 1e9, source, dport, payload, ns)
