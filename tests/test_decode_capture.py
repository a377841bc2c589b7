"""Capture files (hsflowd.decode.capture): every link type a capture of sFlow comes in, read
against tshark's dissection of the same file; times; and any bytes give datagrams or one
CaptureError, never another exception.
"""

from __future__ import annotations

import io
import shutil
import socket
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.decode.capture import CaptureError, read_udp, udp_of

TSHARK = shutil.which("tshark")
PAYLOAD = bytes.fromhex("00000005 00000001 c0000201".replace(" ", ""))
MAC = bytes.fromhex("020000000001")


def udp(payload=PAYLOAD, sport=40000, dport=6343) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(body: bytes, proto=17, frag=0, src="192.0.2.1") -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, frag, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton("192.0.2.2")) + body


def ipv6(body: bytes, nxt=17, src="2001:db8::1") -> bytes:
    return struct.pack(">IHBB16s16s", 6 << 28, len(body), nxt, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, "2001:db8::2")) + body


def ether(ip: bytes, ethertype=0x0800, tags=()) -> bytes:
    head = MAC + MAC
    for tpid, vid in tags:
        head += struct.pack(">HH", tpid, vid)
    return head + struct.pack(">H", ethertype) + ip


def sll(ip: bytes, ethertype=0x0800) -> bytes:
    """Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol."""
    return struct.pack(">HHH8sH", 0, 1, 6, MAC, ethertype) + ip


def sll2(ip: bytes, ethertype=0x0800) -> bytes:
    """Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, length, address."""
    return struct.pack(">HHiHBB8s", ethertype, 0, 2, 1, 0, 6, MAC) + ip


def null(ip: bytes, family=2) -> bytes:
    """BSD loopback (LINKTYPE_NULL): the address family in the writer's byte order."""
    return struct.pack("<I", family) + ip


def pcap(linktype: int, frames, order="<", nano=False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 1700000000 + i, 123456789 if nano else 123456,
                           len(frame), len(frame)) + frame
    return out


# (link type, frame, the sender read from it); None: no sFlow datagram in that frame
FRAMES = [
    ("ethernet", 1, ether(ipv4(udp())), "192.0.2.1:40000"),
    ("802.1Q", 1, ether(ipv4(udp()), tags=[(0x8100, 42)]), "192.0.2.1:40000"),
    ("QinQ", 1, ether(ipv4(udp()), tags=[(0x88A8, 100), (0x8100, 42)]), "192.0.2.1:40000"),
    ("ethernet-ipv6", 1, ether(ipv6(udp()), 0x86DD), "[2001:db8::1]:40000"),
    ("sll", 113, sll(ipv4(udp())), "192.0.2.1:40000"),
    ("sll-ipv6", 113, sll(ipv6(udp()), 0x86DD), "[2001:db8::1]:40000"),
    ("sll2", 276, sll2(ipv4(udp())), "192.0.2.1:40000"),
    ("raw", 101, ipv4(udp()), "192.0.2.1:40000"),
    ("raw-ipv6", 101, ipv6(udp()), "[2001:db8::1]:40000"),
    ("ipv4", 228, ipv4(udp()), "192.0.2.1:40000"),
    ("ipv6", 229, ipv6(udp()), "[2001:db8::1]:40000"),
    ("null", 0, null(ipv4(udp())), "192.0.2.1:40000"),
    ("null-ipv6", 0, null(ipv6(udp()), 30), "[2001:db8::1]:40000"),
    ("loop", 108, struct.pack(">I", 2) + ipv4(udp()), "192.0.2.1:40000"),
    ("tcp", 1, ether(ipv4(udp(), proto=6)), None),
    ("first-fragment", 1, ether(ipv4(udp(), frag=0x2000)), None),
    ("later-fragment", 1, ether(ipv4(udp(), frag=0x0010)), None),
    ("ipv6-fragment", 1, ether(ipv6(struct.pack(">BBHI", 17, 0, 1, 7) + udp(), 44), 0x86DD),
     None),
    ("arp", 1, ether(bytes(28), 0x0806), None),
    ("runt", 1, MAC, None),
    ("token-ring", 6, ether(ipv4(udp())), None),
]


@pytest.mark.parametrize("linktype, frame, sender", [f[1:] for f in FRAMES],
                         ids=[f[0] for f in FRAMES])
def test_link_types(linktype, frame, sender):
    got = list(read_udp(io.BytesIO(pcap(linktype, [frame]))))
    if sender is None:
        assert got == []
        return
    assert [(g.source, g.destination_port, g.payload) for g in got] == [(sender, 6343, PAYLOAD)]
    assert got[0].nanoseconds == 1_700_000_000_123_456_000


@pytest.mark.skipif(TSHARK is None, reason="tshark is not on PATH")
@pytest.mark.parametrize("linktype, frame, sender", [f[1:] for f in FRAMES if f[3]],
                         ids=[f[0] for f in FRAMES if f[3]])
def test_link_types_as_tshark_reads_them(tmp_path, linktype, frame, sender):
    path = tmp_path / "one.pcap"
    path.write_bytes(pcap(linktype, [frame]))
    fields = subprocess.run(
        [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|", "-e", "ip.src",
         "-e", "ipv6.src", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip().split("|")
    v4, v6, sport, dport, payload = fields
    (got,) = read_udp(io.BytesIO(path.read_bytes()))
    address = v4 or f"[{v6}]"
    assert got.source == f"{address}:{sport}" and got.destination_port == int(dport)
    assert got.payload.hex() == payload


def test_big_endian_nanosecond_pcap_keeps_every_digit():
    got = list(read_udp(io.BytesIO(pcap(1, [ether(ipv4(udp()))] * 2, order=">", nano=True))))
    assert [g.nanoseconds for g in got] == [1_700_000_000_123_456_789, 1_700_000_001_123_456_789]
    assert got[0].payload == PAYLOAD


def test_port_filter_and_a_datagram_cut_by_the_snap_length():
    frames = [ether(ipv4(udp(dport=6343))), ether(ipv4(udp(dport=6400))),
              ether(ipv4(udp()))[:-4]]
    data = pcap(1, frames)
    assert [g.destination_port for g in read_udp(io.BytesIO(data), port=6400)] == [6400]
    # the cut one comes out cut: the decoder says what is missing, rather than nothing
    assert [g.payload for g in read_udp(io.BytesIO(data))] == [PAYLOAD, PAYLOAD, PAYLOAD[:-4]]


FUZZ = settings(max_examples=400, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
GOOD = [pcap(1, [ether(ipv4(udp()))] * 3), pcap(113, [sll(ipv6(udp()), 0x86DD)] * 2)]


def pcapng_of(classic: bytes) -> bytes:
    """The same packets as pcapng: SHB, IDB (the classic file's link type), EPBs."""
    linktype = struct.unpack_from("<I", classic, 20)[0]
    out = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    out += struct.pack("<IIHHII", 1, 20, linktype, 0, 65535, 20)
    off = 24
    while off < len(classic):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", classic, off)
        frame = classic[off + 16: off + 16 + caplen] + bytes(-caplen % 4)
        ticks = sec * 1_000_000 + usec
        out += struct.pack("<IIIIIII", 6, 32 + len(frame), 0, ticks >> 32, ticks & 0xFFFFFFFF,
                           caplen, caplen) + frame + struct.pack("<I", 32 + len(frame))
        off += 16 + caplen
    return out


GOOD += [pcapng_of(g) for g in GOOD]


def test_the_pcapng_form_reads_the_same():
    for classic in GOOD[:2]:
        assert list(read_udp(io.BytesIO(pcapng_of(classic)))) == \
            list(read_udp(io.BytesIO(classic)))


@FUZZ
@given(st.sampled_from(GOOD), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                       max_size=6), st.integers(0, 400))
def test_damaged_captures_give_datagrams_or_one_error(good, changes, cut):
    data = bytearray(good[:len(good) - cut])
    for where, value in changes:
        if where < len(data):
            data[where] = value
    try:
        for got in read_udp(io.BytesIO(bytes(data))):
            assert isinstance(got.payload, bytes)
    except CaptureError as e:
        assert str(e) and "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_give_datagrams_or_one_error(data):
    try:
        list(read_udp(io.BytesIO(data)))
    except CaptureError:
        pass


def test_an_mpls_frame_that_ends_after_its_labels_is_no_datagram():
    """dpkt 1.9.8's Ethernet reads past the end of such a frame (an IndexError)."""
    assert udp_of(1, ether(struct.pack(">I", (16 << 12) | 0x100 | 64), 0x8847)) is None


@FUZZ
@given(st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276]),
       st.sampled_from([b"", MAC + MAC + b"\x88\x47", MAC + MAC + b"\x88\x47\x00\x01\x01\x40",
                        MAC + MAC + b"\x81\x00",
                        MAC + MAC + b"\x88\xa8", MAC + MAC + b"\x08\x00",
                        MAC + MAC + b"\x86\xdd", b"\x45", b"\x60"]),
       st.binary(max_size=100))
def test_any_frame_gives_a_datagram_or_none(linktype, head, rest):
    got = udp_of(linktype, head + rest)
    assert got is None or (isinstance(got[2], bytes) and 0 <= got[1] <= 65535)
