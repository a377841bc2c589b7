"""The one walk through a sampled frame (hsflowd/frames.py), against hand-built frames:
offsets counted by hand, addresses and ports as written, every tag kind, IPv6 extension
headers, fragments, headers cut at every byte."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from hsflowd.frames import ETHERNET, IPV4, IPV6, append_records, walk_frame, walk_sample
from hsflowd.samplers.flow import FlowSampleBuilder

DST, SRC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
A4, B4 = ipaddress.ip_address("10.1.2.3").packed, ipaddress.ip_address("10.9.8.7").packed
A6, B6 = ipaddress.ip_address("2001:db8::1").packed, ipaddress.ip_address("2001:db8::2").packed


def ipv4(proto: int, payload: bytes, frag: int = 0, ihl: int = 5, tos: int = 0) -> bytes:
    options = bytes((ihl - 5) * 4)
    return struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, tos, 4 * ihl + len(payload), 1, frag, 64,
                       proto, 0, A4, B4) + options + payload


def ipv6(nh: int, payload: bytes, tclass: int = 0) -> bytes:
    return struct.pack(">IHBB", (6 << 28) | (tclass << 20), len(payload), nh, 64) + A6 + B6 + payload


def ports(sport: int, dport: int) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8, 0)


def ether(payload: bytes, etype: int, tags=()) -> bytes:
    out = DST + SRC
    for tpid, vid in tags:
        out += struct.pack(">HH", tpid, vid)
    return out + struct.pack(">H", etype) + payload


@pytest.mark.parametrize("tags", [(), ((0x8100, 5),), ((0x88A8, 5), (0x8100, 6)),
                                  ((0x9100, 7),), ((0x9100, 7), (0x8100, 8))])
def test_ethernet_ipv4_udp_behind_any_tags(tags):
    frame = ether(ipv4(17, ports(4000, 53)), 0x0800, tags)
    pkt = walk_frame(frame, 0, len(frame), ETHERNET)
    l3 = 14 + 4 * len(tags)
    assert (pkt.l2, pkt.ethertype, pkt.l3, pkt.ip_version) == (0, 0x0800, l3, 4)
    assert (pkt.src_ip, pkt.dst_ip, pkt.ip_protocol) == (A4, B4, 17)
    assert (pkt.l4, pkt.src_port, pkt.dst_port, pkt.fragment) == (l3 + 20, 4000, 53, False)


def test_ipv4_options_tos_and_fragments():
    pkt = walk_frame(*_whole(ether(ipv4(6, ports(1, 2), ihl=7, tos=0xB8), 0x0800)), ETHERNET)
    assert (pkt.l4, pkt.tos, pkt.src_port, pkt.dst_port) == (14 + 28, 0xB8, 1, 2)
    first = walk_frame(*_whole(ipv4(17, ports(1, 2), frag=0x2000)), IPV4)      # MF, offset 0
    assert (first.fragment, first.l4, first.dst_port) == (True, 20, 2)
    later = walk_frame(*_whole(ipv4(17, ports(1, 2), frag=0x0010)), IPV4)      # offset 128
    assert (later.fragment, later.l4, later.ip_protocol, later.dst_port) == (True, -1, 17, 0)


def test_ipv6_extension_headers_and_fragments():
    hop = bytes([60, 0]) + bytes(6)             # hop-by-hop, next: destination options
    dest = bytes([6, 1]) + bytes(14)            # destination options (16 bytes), next: TCP
    frame = ether(ipv6(0, hop + dest + ports(443, 40000), tclass=0x2E), 0x86DD)
    pkt = walk_frame(frame, 0, len(frame), ETHERNET)
    assert (pkt.l3, pkt.ip_version, pkt.src_ip, pkt.dst_ip) == (14, 6, A6, B6)
    assert (pkt.ip_protocol, pkt.l4, pkt.src_port, pkt.dst_port, pkt.tos) == \
        (6, 14 + 40 + 8 + 16, 443, 40000, 0x2E)
    ah = bytes([17, 4]) + bytes(22)             # AH: (4 + 2) * 4 = 24 bytes, next: UDP
    pkt = walk_frame(*_whole(ipv6(51, ah + ports(5, 6))), IPV6)
    assert (pkt.ip_protocol, pkt.l4, pkt.dst_port) == (17, 64, 6)
    frag0 = bytes([17, 0, 0, 1]) + bytes(4)     # fragment header, offset 0, M set
    pkt = walk_frame(*_whole(ipv6(44, frag0 + ports(5, 6))), IPV6)
    assert (pkt.fragment, pkt.ip_protocol, pkt.l4, pkt.dst_port) == (True, 17, 48, 6)
    later = bytes([17, 0, 0, 0x10]) + bytes(4)  # offset 2 (16 bytes)
    pkt = walk_frame(*_whole(ipv6(44, later + ports(5, 6))), IPV6)
    assert (pkt.fragment, pkt.ip_protocol, pkt.l4) == (True, 17, -1)


def test_what_is_not_ip():
    arp = ether(bytes(28), 0x0806)
    pkt = walk_frame(arp, 0, len(arp), ETHERNET)
    assert (pkt.l2, pkt.ethertype, pkt.l3, pkt.ip_version, pkt.src_ip) == (0, 0x0806, -1, 0, b"")
    v4_in_v6_etype = ether(ipv4(17, ports(1, 2)), 0x86DD)
    assert walk_frame(v4_in_v6_etype, 0, len(v4_in_v6_etype), ETHERNET).ip_version == 0
    assert walk_frame(b"\x45" + bytes(40), 0, 41, 2).l3 == -1     # protocol 2: not walked


def test_offsets_count_from_where_the_frame_starts_in_the_buffer():
    frame = ether(ipv4(17, ports(7, 8)), 0x0800, ((0x8100, 1),))
    buf = b"\xff" * 76 + frame
    pkt = walk_frame(buf, 76, len(buf), ETHERNET)
    assert (pkt.start, pkt.l2, pkt.l3, pkt.l4, pkt.dst_port) == (76, 76, 76 + 18, 76 + 38, 8)


def test_cut_at_every_byte_goes_as_far_as_it_can():
    """Every field found in a cut frame is the whole frame's; nothing past the cut is."""
    frames = [ether(ipv4(6, ports(1000, 2000) + bytes(12)), 0x0800, ((0x9100, 3), (0x8100, 4))),
              ether(ipv6(0, bytes([17, 0]) + bytes(6) + ports(3, 4)), 0x86DD)]
    for frame in frames:
        whole = walk_frame(frame, 0, len(frame), ETHERNET)
        for end in range(len(frame) + 1):
            pkt = walk_frame(frame, 0, end, ETHERNET)
            if end < 14:
                assert pkt.l2 == -1
                continue
            for field in ("l3", "ip_version", "src_ip", "dst_ip", "ip_protocol"):
                value = getattr(pkt, field)
                assert value in (getattr(whole, field), -1, 0, b""), (end, field)
            if pkt.l4 >= 0:
                assert pkt.l4 == whole.l4 and pkt.l4 <= end
            if pkt.dst_port:
                assert (pkt.src_port, pkt.dst_port) == (whole.src_port, whole.dst_port)
                assert pkt.l4 + 4 <= end


def test_random_bytes_never_raise():
    rng = random.Random(11)
    for _ in range(20000):
        n = rng.randrange(120)
        buf = bytes(rng.getrandbits(8) for _ in range(n))
        for protocol in (ETHERNET, IPV4, IPV6):
            pkt = walk_frame(buf, 0, n, protocol)
            assert pkt.l4 <= n and pkt.l3 <= n


def test_walk_sample_reads_the_fixed_part_and_the_header():
    out = []
    frame = ether(ipv4(17, ports(4789, 4789)), 0x0800, ((0x9100, 9),))
    FlowSampleBuilder(7, 10, 128, out.append).sample(frame, len(frame), 3, 0x3FFFFFFF, 1, 0)
    pkt = walk_sample(out[0])
    assert (pkt.ds_index, pkt.input, pkt.output_format, pkt.output) == (7, 3, 0, 0x3FFFFFFF)
    assert (pkt.header_protocol, pkt.frame_length, pkt.start, pkt.end) == (1, len(frame) + 4, 76,
                                                                           76 + len(frame))
    assert (pkt.l3, pkt.dst_port) == (76 + 18, 4789)
    # records appended after the header (a hook's) do not move it
    more = append_records(out[0], struct.pack(">II", 2210, 0), 1)
    assert walk_sample(more).l4 == pkt.l4
    assert walk_sample(b"\0\0\0\x04" + bytes(60)) is None       # a counter sample


def _whole(frame: bytes):
    return frame, 0, len(frame)
