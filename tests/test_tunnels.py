"""Tunnel structures for VXLAN (hsflowd.modules.tunnels): pure tests on hand-built bytes.

Headers are packed by hand here, field by field, and every expected record is written
out from RFC 7348 and sflow_tunnels.txt, not computed by the code under test.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import struct
from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest

from hsflowd.frames import walk_sample
from hsflowd.modules import tunnels
from hsflowd.frames import walk_frame
from hsflowd.modules.tunnels import (Dest, Outer, TunnelsModule, VxlanDevice, decap_record, parse_fdb,
                                     tunnel_record, vni_record, vxlan_in)


def find_vxlan(buf, start, end, protocol, ports):
    """The VXLAN packet in buf[start:end], through the walk the hook is handed."""
    return vxlan_in(buf, walk_frame(buf, start, end, protocol), ports)


def inner_tos(buf, start, end):
    return walk_frame(buf, start, end, 1).tos
from hsflowd.samplers.flow import FlowSampleBuilder
from hsflowd.sflow import (SAMPLES, ExtendedDecapsulateEgress, ExtendedDecapsulateIngress,
                           ExtendedIPv4TunnelEgress, ExtendedIPv4TunnelIngress, ExtendedIPv6TunnelEgress,
                           ExtendedIPv6TunnelIngress, ExtendedVniEgress, ExtendedVniIngress)
from hsflowd.sources.interfaces import Address, Interface, Vxlan, parse_vxlan

INTERNAL = 0x3FFFFFFF
LOCAL, REMOTE, OTHER = "10.232.0.1", "10.232.0.2", "10.232.0.9"
LOCAL6, REMOTE6 = "fd00:232::1", "fd00:232::2"
MAC_A = bytes.fromhex("02aa00000001")      # behind this host's VXLAN device
MAC_B = bytes.fromhex("02bb00000002")      # behind the remote VTEP
BROADCAST = b"\xff" * 6


def p4(text: str) -> bytes:
    return IPv4Address(text).packed


def p6(text: str) -> bytes:
    return IPv6Address(text).packed


# ---------------------------------------------------------------- packets, by hand

def inner_frame(dst=MAC_B, src=MAC_A, tos=0, payload=b"hello") -> bytes:
    """Ethernet + IPv4 (20) + UDP (8) + payload: the frame a VXLAN device carries."""
    udp = struct.pack(">HHHH", 7777, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(udp), 1, 0, 64, 17, 0,
                     p4("192.168.42.1"), p4("192.168.42.2"))
    return dst + src + b"\x08\x00" + ip + udp


def vxlan(vni: int, flags: int = 0x08) -> bytes:
    return struct.pack(">B3sI", flags, b"\0\0\0", vni << 8)


def outer_v4(inner: bytes, vni=4242, src=REMOTE, dst=LOCAL, dport=4789, frag=0, proto=17) -> bytes:
    """IPv4 + UDP + VXLAN around ``inner``, no Ethernet header."""
    udp = struct.pack(">HHHH", 51234, dport, 8 + 8 + len(inner), 0) + vxlan(vni) + inner
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, frag, 64, proto, 0, p4(src), p4(dst))
    return ip + udp


def outer_v6(inner: bytes, vni=4242, src=REMOTE6, dst=LOCAL6, dport=4789, hop_by_hop=False) -> bytes:
    udp = struct.pack(">HHHH", 51234, dport, 8 + 8 + len(inner), 0) + vxlan(vni) + inner
    ext = b""
    nh = 17
    if hop_by_hop:
        ext = bytes([17, 0]) + b"\x01\x04\0\0\0\0"      # next header UDP, 8 bytes, PadN
        nh = 0
    return struct.pack(">IHBB16s16s", 0x60000000, len(ext) + len(udp), nh, 64, p6(src), p6(dst)) + ext + udp


def ether(payload: bytes, etype=0x0800, tags=()) -> bytes:
    head = bytes.fromhex("020000000011") + bytes.fromhex("020000000022")
    for tpid, tci in tags:
        head += struct.pack(">HH", tpid, tci)
    return head + struct.pack(">H", etype) + payload


# ---------------------------------------------------------------- the records

def test_records_match_the_declarative_encoder():
    outer = Outer(p4(LOCAL), p4(REMOTE), 4789, 0x10)
    assert tunnel_record(True, outer, 100) == ExtendedIPv4TunnelEgress(
        length=100, protocol=17, src_ip=IPv4Address(LOCAL), dst_ip=IPv4Address(REMOTE),
        src_port=0, dst_port=4789, tcp_flags=0, tos=0x10).encode()
    assert tunnel_record(False, outer, 100) == ExtendedIPv4TunnelIngress(
        length=100, protocol=17, src_ip=IPv4Address(LOCAL), dst_ip=IPv4Address(REMOTE),
        src_port=0, dst_port=4789, tcp_flags=0, tos=0x10).encode()
    outer6 = Outer(p6(REMOTE6), p6(LOCAL6), 4790)
    assert tunnel_record(False, outer6, 120) == ExtendedIPv6TunnelIngress(
        length=120, protocol=17, src_ip=IPv6Address(REMOTE6), dst_ip=IPv6Address(LOCAL6),
        src_port=0, dst_port=4790, tcp_flags=0, priority=0).encode()
    assert tunnel_record(True, outer6, 120)[:4] == struct.pack(">I", ExtendedIPv6TunnelEgress.tag)
    assert vni_record(True, 4242) == ExtendedVniEgress(vni=4242).encode()
    assert vni_record(False, 4242) == ExtendedVniIngress(vni=4242).encode()
    assert decap_record(True, 50) == ExtendedDecapsulateEgress(inner_header_offset=50).encode()
    assert decap_record(False, 50) == ExtendedDecapsulateIngress(inner_header_offset=50).encode()
    # the tags themselves, from sflow_tunnels.txt
    assert [r.tag for r in (ExtendedIPv4TunnelEgress, ExtendedIPv4TunnelIngress, ExtendedIPv6TunnelEgress,
                            ExtendedIPv6TunnelIngress, ExtendedDecapsulateEgress,
                            ExtendedDecapsulateIngress, ExtendedVniEgress, ExtendedVniIngress)] \
        == list(range(1023, 1031))


# ---------------------------------------------------------------- VXLAN in a sampled header

PORTS = {4789}


def test_find_vxlan_ipv4_offsets_and_fields():
    pkt = ether(outer_v4(inner_frame()))
    hit = find_vxlan(pkt, 0, len(pkt), 1, PORTS)
    assert hit == (14 + 20 + 8 + 8, 4242, p4(REMOTE), p4(LOCAL))
    assert pkt[hit.offset:hit.offset + 12] == MAC_B + MAC_A
    # the same inside a longer buffer (the hook reads the sample in place)
    buf = b"x" * 76 + pkt + b"\0\0"
    assert find_vxlan(buf, 76, 76 + len(pkt), 1, PORTS) == hit
    # 802.1Q and QinQ tags: 4 bytes each
    tagged = ether(outer_v4(inner_frame()), tags=[(0x8100, 5)])
    assert find_vxlan(tagged, 0, len(tagged), 1, PORTS).offset == 54
    qinq = ether(outer_v4(inner_frame()), tags=[(0x88A8, 100), (0x8100, 5)])
    assert find_vxlan(qinq, 0, len(qinq), 1, PORTS).offset == 58
    # a raw IPv4 header (header_protocol 11): no Ethernet in front
    raw = outer_v4(inner_frame(), vni=0xABCDEF)
    assert find_vxlan(raw, 0, len(raw), 11, PORTS) == (36, 0xABCDEF, p4(REMOTE), p4(LOCAL))
    # IPv4 options: IHL 6
    opt = bytearray(outer_v4(inner_frame()))
    opt = bytes([0x46]) + bytes(opt[1:20]) + b"\x01\x01\x01\x00" + bytes(opt[20:])
    assert find_vxlan(opt, 0, len(opt), 11, PORTS).offset == 40


def test_find_vxlan_ipv6():
    pkt = ether(outer_v6(inner_frame()), etype=0x86DD)
    assert find_vxlan(pkt, 0, len(pkt), 1, PORTS) == (14 + 40 + 8 + 8, 4242, p6(REMOTE6), p6(LOCAL6))
    hbh = ether(outer_v6(inner_frame(), hop_by_hop=True), etype=0x86DD)
    assert find_vxlan(hbh, 0, len(hbh), 1, PORTS).offset == 14 + 40 + 8 + 8 + 8
    raw = outer_v6(inner_frame())
    assert find_vxlan(raw, 0, len(raw), 12, PORTS).offset == 56


def test_find_vxlan_refuses_what_is_not_vxlan():
    inner = inner_frame()
    assert find_vxlan(ether(outer_v4(inner, dport=4790)), 0, 200, 1, PORTS) is None
    assert find_vxlan(ether(outer_v4(inner, dport=4790)), 0, 200, 1, {4789, 4790}) is not None
    assert find_vxlan(ether(outer_v4(inner, proto=6)), 0, 200, 1, PORTS) is None
    assert find_vxlan(ether(outer_v4(inner, frag=100)), 0, 200, 1, PORTS) is None   # later fragment
    assert find_vxlan(ether(outer_v4(inner, frag=0x2000)), 0, 200, 1, PORTS) is not None  # MF, first
    no_i = bytearray(ether(outer_v4(inner)))
    no_i[14 + 20 + 8] = 0
    assert find_vxlan(bytes(no_i), 0, len(no_i), 1, PORTS) is None
    assert find_vxlan(ether(b"\0" * 60, etype=0x0806), 0, 74, 1, PORTS) is None     # ARP
    assert find_vxlan(ether(outer_v4(inner)), 0, 200, 2, PORTS) is None             # not Ethernet/IP
    v6_in_v4_frame = ether(outer_v6(inner))                                          # wrong version
    assert find_vxlan(v6_in_v4_frame, 0, len(v6_in_v4_frame), 1, PORTS) is None


def test_find_vxlan_on_cut_headers_and_noise():
    pkt = ether(outer_v4(inner_frame()))
    for end in range(len(pkt) + 1):
        hit = find_vxlan(pkt, 0, end, 1, PORTS)
        assert (hit is None) == (end < 50), end   # the VXLAN header must be whole
    pkt6 = ether(outer_v6(inner_frame(), hop_by_hop=True), etype=0x86DD)
    for end in range(len(pkt6) + 1):
        assert (find_vxlan(pkt6, 0, end, 1, PORTS) is None) == (end < 78), end
    rng = random.Random(7)
    for _ in range(3000):
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        for protocol in (1, 11, 12):
            hit = find_vxlan(noise, 0, len(noise), protocol, PORTS)
            assert hit is None or hit.offset <= len(noise)


def test_inner_tos():
    assert inner_tos(inner_frame(tos=0xB8), 0, 60) == 0xB8
    v6 = MAC_B + MAC_A + b"\x86\xdd" + struct.pack(">I", 0x6_2E_00000) + b"\0" * 36
    assert inner_tos(v6, 0, len(v6)) == 0x2E
    assert inner_tos(b"\0" * 10, 0, 10) == 0


# ---------------------------------------------------------------- the device and its table

def device(remote=REMOTE, local=LOCAL, fdb=None, learning=True, sources=None, port=4789, vni=4242):
    info = Vxlan(vni=vni, local=local, remote=remote, port=port, learning=learning)
    return VxlanDevice(7, info, fdb, sources)


def test_fixed_remote_before_the_table_is_read():
    dev = device()
    assert dev.egress(MAC_B) == (Outer(p4(LOCAL), p4(REMOTE), 4789, 0), 4242, True)
    assert dev.egress(BROADCAST) == (Outer(p4(LOCAL), p4(REMOTE), 4789, 0), 4242, False)
    assert dev.ingress(MAC_B) == (Outer(p4(REMOTE), p4(LOCAL), 4789, 0), 4242, True)
    assert device(learning=False).ingress(MAC_B)[2] is False


def test_forwarding_database_entries_win():
    fdb = {MAC_B: (Dest(p4(OTHER), 5555, 99),), tunnels.ZERO_MAC: (Dest(p4(REMOTE)),)}
    dev = device(fdb=fdb)
    # egress: the entry's VTEP, port and VNI; ingress: where the entry says MAC_B lives
    assert dev.egress(MAC_B) == (Outer(p4(LOCAL), p4(OTHER), 5555, 0), 99, False)
    assert dev.ingress(MAC_B) == (Outer(p4(OTHER), p4(LOCAL), 4789, 0), 4242, False)
    # an unknown MAC goes to the default remote
    assert dev.egress(MAC_A) == (Outer(p4(LOCAL), p4(REMOTE), 4789, 0), 4242, True)


def test_head_end_replication_has_no_single_outer_header():
    fdb = {tunnels.ZERO_MAC: (Dest(p4(REMOTE)), Dest(p4(OTHER)))}
    dev = device(remote="", fdb=fdb)
    assert dev.egress(BROADCAST) == (None, 4242, False)
    assert dev.egress(MAC_B) == (None, 4242, True)
    # a frame from a MAC the table does not have: from one of them, which is unknown
    assert dev.ingress(MAC_B) == (Outer(b"\0" * 4, p4(LOCAL), 4789, 0), 4242, True)


def test_no_local_address_uses_the_route_source_and_multicast_groups():
    dev = device(remote="239.1.1.1", local="", sources={4: p4(LOCAL)})
    assert dev.egress(BROADCAST)[0] == Outer(p4(LOCAL), p4("239.1.1.1"), 4789, 0)
    # a group is never a source: a frame from an unlearnt MAC came from an unknown VTEP
    assert dev.ingress(MAC_B)[0] == Outer(b"\0" * 4, p4(LOCAL), 4789, 0)
    # nothing known at all: VNI only
    assert device(remote="", local="").egress(MAC_B) == (None, 4242, True)
    assert device(remote="", local="").ingress(MAC_B) == (None, 4242, True)


def test_ipv6_underlay():
    dev = device(remote=REMOTE6, local=LOCAL6)
    assert dev.egress(MAC_B)[0] == Outer(p6(LOCAL6), p6(REMOTE6), 4789, 0)
    assert dev.ingress(MAC_B)[0] == Outer(p6(REMOTE6), p6(LOCAL6), 4789, 0)


class Msg(dict):
    """A pyroute2 message as far as the module reads it."""

    def __init__(self, ifindex=0, **attrs):
        super().__init__(ifindex=ifindex, index=ifindex)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


def test_parse_fdb():
    msgs = [Msg(7, NDA_LLADDR="00:00:00:00:00:00", NDA_DST=REMOTE, NDA_IFINDEX=3),
            Msg(7, NDA_LLADDR="00:00:00:00:00:00", NDA_DST=OTHER),
            Msg(7, NDA_LLADDR="02:bb:00:00:00:02", NDA_DST=REMOTE6, NDA_PORT=5555, NDA_VNI=99),
            Msg(3, NDA_LLADDR="33:33:00:00:00:01"),                  # a NIC's multicast entry
            Msg(9, NDA_LLADDR="02:bb:00:00:00:02", NDA_MASTER=8),    # a bridge's entry
            Msg(7, NDA_LLADDR="zz", NDA_DST=REMOTE)]
    assert parse_fdb(msgs) == {7: {tunnels.ZERO_MAC: (Dest(p4(REMOTE)), Dest(p4(OTHER))),
                                   MAC_B: (Dest(p6(REMOTE6), 5555, 99),)}}


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def test_parse_vxlan_from_link_info():
    # IFLA_VXLAN_ID 1, GROUP 2, LINK 3, LOCAL 4, TOS 6, LEARNING 7, PORT 15 (big-endian),
    # GROUP6 16, COLLECT_METADATA 25
    data = (nla(1, struct.pack("=I", 4242)) + nla(2, p4(REMOTE)) + nla(4, p4(LOCAL))
            + nla(3, struct.pack("=I", 3)) + nla(15, struct.pack(">H", 4790)) + nla(6, b"\x01")
            + nla(7, b"\x00") + nla(25, b"\x00"))
    assert parse_vxlan(data) == Vxlan(4242, LOCAL, REMOTE, 4790, 1, 3, False, False)
    data6 = nla(1, struct.pack("=I", 7)) + nla(16, p6(REMOTE6)) + nla(7, b"\x01")
    assert parse_vxlan(data6) == Vxlan(7, "", REMOTE6, 4789, 0, 0, True, False)
    assert parse_vxlan(nla(25, b"\x01")).external


# ---------------------------------------------------------------- the hook

class Ctx:
    log = logging.getLogger("hsflowd.test")

    def __init__(self):
        self.hooks = []

    def add_flow_hook(self, hook):
        self.hooks = [hook]

    def remove_flow_hooks(self):
        self.hooks = []


def run_hook(m, s):
    """What FlowHooks does: the walk, then the hook (bytes that are no flow sample never
    reach a hook)."""
    pkt = walk_sample(s)
    return s if pkt is None else m.hook(s, pkt)


class FakeIPRoute:
    def __init__(self, fdb_msgs=(), prefsrc=LOCAL):
        self.fdb_msgs = list(fdb_msgs)
        self.prefsrc = prefsrc
        self.dumps = 0
        self.routes = []

    def get_neighbours(self, family, ifindex):
        self.dumps += 1
        return [m for m in self.fdb_msgs if m["ifindex"] == ifindex]

    def route(self, op, dst, **kw):
        self.routes.append((dst, kw))
        return [Msg(RTA_PREFSRC=self.prefsrc)]

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


VX, UNDER = 7, 3


def interfaces(remote=REMOTE, local=LOCAL, link=UNDER, port=4789):
    return [Interface(UNDER, "under0", addresses=[Address(ip_interface(LOCAL + "/24")),
                                                  Address(ip_interface(LOCAL6 + "/64"))]),
            Interface(VX, "vx0", kind="vxlan", addresses=[Address(ip_interface("192.168.42.1/24"))],
                      vxlan=Vxlan(4242, local, remote, port, 0, link)),
            Interface(9, "vxe", kind="vxlan", vxlan=Vxlan(0, "", "", 4800, external=True))]


def module(ipr=None, ifaces=None):
    ipr = ipr or FakeIPRoute([Msg(VX, NDA_LLADDR="00:00:00:00:00:00", NDA_DST=REMOTE)])
    clock = Clock()
    m = TunnelsModule(Ctx(), clock=clock, ipr_factory=lambda: ipr)
    m.update(interfaces() if ifaces is None else ifaces)
    return m, ipr, clock


def sample(header: bytes, in_if: int, out_if: int, ds: int = VX, out_format: int = 0) -> bytes:
    out = []
    FlowSampleBuilder(ds, 10, 128, out.append).sample(header, len(header), in_if, out_if, 1, out_format)
    return out[0]


def decode(sample_bytes: bytes):
    tag, length = struct.unpack_from(">II", sample_bytes)
    assert length == len(sample_bytes) - 8
    s = SAMPLES.decode_one(tag, sample_bytes, 8, 8 + length)
    return s, {r.tag: r for r in s.flow_records}


def test_hook_on_the_vxlan_device():
    m, _ipr, _ = module()
    frame = inner_frame()
    # received: out of the tunnel, the outer header it came with
    s, recs = decode(run_hook(m, sample(frame, VX, INTERNAL)))
    assert [r.tag for r in s.flow_records] == [1, 1043, 1024, 1030]
    t = recs[1024]
    assert (t.length, t.protocol, str(t.src_ip), str(t.dst_ip), t.src_port, t.dst_port, t.tcp_flags, t.tos) \
        == (len(frame) + 20 + 8 + 8, 17, REMOTE, LOCAL, 0, 4789, 0, 0)
    assert recs[1030].vni == 4242
    # sent: into the tunnel, the outer header it will get
    s, recs = decode(run_hook(m, sample(frame, INTERNAL, VX)))
    assert [r.tag for r in s.flow_records] == [1, 1043, 1023, 1029]
    t = recs[1023]
    assert (str(t.src_ip), str(t.dst_ip), t.dst_port, t.length) == (LOCAL, REMOTE, 4789, len(frame) + 36)
    assert recs[1029].vni == 4242
    # the sample itself is untouched in front of the new records
    plain = sample(frame, INTERNAL, VX)
    hooked = run_hook(m, plain)
    assert hooked[8:48] == plain[8:48] and hooked[52:len(plain)] == plain[52:]
    assert m.records == 3


def test_hook_on_a_bridge_with_a_vxlan_port():
    m, _, _ = module()
    frame = inner_frame()
    _, recs = decode(run_hook(m, sample(frame, VX, 12, ds=11)))          # vx0 -> another port
    assert set(recs) == {1, 1043, 1024, 1030}
    _, recs = decode(run_hook(m, sample(frame, 12, VX, ds=11)))          # another port -> vx0
    assert set(recs) == {1, 1043, 1023, 1029}
    # flooded (output format 2, count 3): nothing to say about one output
    plain = sample(frame, 12, 3, ds=11, out_format=2)
    assert run_hook(m, plain) is plain


def test_hook_on_the_underlay():
    m, _, _ = module()
    received = ether(outer_v4(inner_frame(), src=REMOTE, dst=LOCAL))
    s, recs = decode(run_hook(m, sample(received, UNDER, INTERNAL, ds=UNDER)))
    assert [r.tag for r in s.flow_records] == [1, 1043, 1027, 1030]
    assert (recs[1027].inner_header_offset, recs[1030].vni) == (50, 4242)
    sent = ether(outer_v4(inner_frame(), src=LOCAL, dst=REMOTE))
    s, recs = decode(run_hook(m, sample(sent, INTERNAL, UNDER, ds=UNDER)))
    assert [r.tag for r in s.flow_records] == [1, 1043, 1028, 1029]
    assert (recs[1028].inner_header_offset, recs[1029].vni) == (50, 4242)
    six = ether(outer_v6(inner_frame(), vni=77, src=REMOTE6, dst=LOCAL6), etype=0x86DD)
    _, recs = decode(run_hook(m, sample(six, UNDER, INTERNAL, ds=UNDER)))
    assert (recs[1027].inner_header_offset, recs[1030].vni) == (70, 77)
    # an external device's port counts as VXLAN too
    other_port = ether(outer_v4(inner_frame(), dport=4800))
    assert set(decode(run_hook(m, sample(other_port, UNDER, INTERNAL, ds=UNDER)))[1]) == {1, 1043, 1027, 1030}


def test_hook_leaves_other_samples_alone():
    m, _, _ = module()
    for header, in_if, out_if in [
            (ether(outer_v4(inner_frame(), src=REMOTE, dst=OTHER)), UNDER, 0),   # passing through
            (ether(outer_v4(inner_frame(), src=OTHER, dst=REMOTE)), INTERNAL, UNDER),   # forwarded
            (ether(outer_v4(inner_frame(), dport=53)), UNDER, INTERNAL),         # other UDP
            (inner_frame(), UNDER, INTERNAL),                                     # plain IPv4
            (b"\x01\x02", UNDER, INTERNAL)]:                                      # a runt
        plain = sample(header, in_if, out_if, ds=UNDER)
        assert run_hook(m, plain) is plain
    for junk in (b"", b"\0" * 51, b"\0" * 52, b"\xff" * 200):
        assert run_hook(m, junk) is junk
    assert m.records == 0


def test_the_hook_on_whole_cut_and_damaged_headers():
    """Through the shared walk: VXLAN found behind tags and IPv6 options, nothing else;
    cut or damaged headers give the sample unchanged or decapsulation records, never an
    exception."""
    m, _, _ = module()
    inner = inner_frame()
    headers = [(ether(outer_v4(inner, src=REMOTE, dst=LOCAL)), True),
               (ether(outer_v4(inner, dport=53)), False), (inner_frame(), False),
               (ether(outer_v4(inner, proto=6)), False),
               (ether(outer_v4(inner, src=REMOTE, dst=LOCAL), tags=[(0x8100, 5)]), True),
               (ether(outer_v4(inner, src=REMOTE, dst=LOCAL), tags=[(0x9100, 5), (0x8100, 6)]), True),
               (ether(outer_v6(inner, src=REMOTE6, dst=LOCAL6), etype=0x86DD), True),
               (ether(outer_v6(inner, src=REMOTE6, dst=LOCAL6, hop_by_hop=True), etype=0x86DD), True),
               (ether(outer_v6(inner, dport=53), etype=0x86DD), False)]
    for header, vxlan in headers:
        s = sample(header, UNDER, INTERNAL, ds=UNDER)
        tags = [r.tag for r in decode(run_hook(m, s))[0].flow_records]
        assert tags == ([1, 1043, 1027, 1030] if vxlan else [1, 1043]), header.hex()
    rng = random.Random(3)
    for _ in range(4000):
        base = bytearray(rng.choice(headers)[0])
        for _ in range(rng.randrange(4)):
            base[rng.randrange(len(base))] = rng.getrandbits(8)
        header = bytes(base[:rng.randrange(len(base) + 1)])
        for in_if, out_if in ((UNDER, INTERNAL), (INTERNAL, UNDER)):
            s = sample(header, in_if, out_if, ds=UNDER)
            tags = [r.tag for r in decode(run_hook(m, s))[0].flow_records]
            assert tags in ([1, 1043], [1, 1043, 1027, 1030], [1, 1043, 1028, 1029]), header.hex()


def test_tables_are_read_on_change_on_a_miss_once_and_every_minute():
    ipr = FakeIPRoute([Msg(VX, NDA_LLADDR="00:00:00:00:00:00", NDA_DST=REMOTE)])
    m, _, clock = module(ipr, interfaces(local=""))      # no local address: the route source
    assert ipr.dumps == 1 and ipr.routes == [(REMOTE, {"oif": UNDER})]
    frame = inner_frame(dst=MAC_B)
    clock.now += 2
    run_hook(m, sample(frame, INTERNAL, VX))                   # MAC_B is not in the table: re-read
    assert ipr.dumps == 2
    clock.now += 2
    _, recs = decode(run_hook(m, sample(frame, INTERNAL, VX)))  # once per MAC
    assert ipr.dumps == 2
    assert (str(recs[1023].src_ip), str(recs[1023].dst_ip)) == (LOCAL, REMOTE)
    ipr.fdb_msgs.append(Msg(VX, NDA_LLADDR="02:bb:00:00:00:02", NDA_DST=OTHER))
    m.tick(clock.now)
    assert ipr.dumps == 2                                 # not yet a minute
    clock.now += 60
    m.tick(clock.now)
    assert ipr.dumps == 3
    _, recs = decode(run_hook(m, sample(frame, INTERNAL, VX)))
    assert str(recs[1023].dst_ip) == OTHER
    # an interface change: the devices at once, the tables at the next tick
    m.update(interfaces(remote=REMOTE6, local=LOCAL6))
    assert ipr.dumps == 3 and m.stale
    m.tick(clock.now)
    assert ipr.dumps == 4
    # no VXLAN device left: no table, no socket
    m.update([interfaces()[0]])
    m.tick(clock.now)
    assert m.devices == {} and m._ipr is None


def test_route_lookups_leave_no_acks_behind():
    """pyroute2 0.8+ queues the kernel's ACK of each "get" where nothing reads it."""
    import queue
    import types

    class Queued(FakeIPRoute):
        def __init__(self, *a):
            super().__init__(*a)
            self.asyncore = types.SimpleNamespace(msg_queue=types.SimpleNamespace(root=queue.Queue()))

        def route(self, op, dst, **kw):
            self.asyncore.msg_queue.root.put(b"ack")
            return super().route(op, dst, **kw)
    ipr = Queued([Msg(VX, NDA_LLADDR="00:00:00:00:00:00", NDA_DST=REMOTE6)])
    module(ipr, interfaces(local=""))
    assert ipr.routes and ipr.asyncore.msg_queue.root.empty()


def test_a_table_that_cannot_be_read_falls_back_to_the_device():
    class Broken(FakeIPRoute):
        def get_neighbours(self, family, ifindex):
            raise OSError("no")
    m, _, _ = module(Broken())
    _, recs = decode(run_hook(m, sample(inner_frame(), INTERNAL, VX)))
    assert (str(recs[1023].src_ip), str(recs[1023].dst_ip)) == (LOCAL, REMOTE)


def test_tos_inherit():
    ifaces = interfaces()
    ifaces[1].vxlan = ifaces[1].vxlan._replace(tos=1)
    m, _, _ = module(ifaces=ifaces)
    _, recs = decode(run_hook(m, sample(inner_frame(tos=0x28), INTERNAL, VX)))
    assert recs[1023].tos == 0x28


def test_enabled_with_pcap_or_epcap():
    from hsflowd.config import parse_config
    from hsflowd.modules import enabled_specs
    names = lambda text: [s.name for s in enabled_specs(parse_config(text))]  # noqa: E731
    collector = "collector { ip = 127.0.0.1 }"
    assert "tunnels" in names("sflow { %s pcap { dev = eth0 } }" % collector)
    assert "tunnels" in names("sflow { %s epcap { dev = eth0 } }" % collector)
    assert "tunnels" not in names("sflow { %s }" % collector)


# ---------------------------------------------------------------- the decoder

def tunnel_datagram() -> bytes:
    """A datagram whose flow sample has a VXLAN packet and all eight tunnel structures."""
    from hsflowd.sflow import Datagram, FlowSample, SampledHeader
    header = ether(outer_v4(inner_frame(), src=REMOTE, dst=LOCAL))
    outer4 = dict(length=97, protocol=17, src_ip=IPv4Address(REMOTE), dst_ip=IPv4Address(LOCAL),
                  src_port=0, dst_port=4789, tcp_flags=0, tos=0)
    outer6 = dict(length=117, protocol=17, src_ip=IPv6Address(REMOTE6), dst_ip=IPv6Address(LOCAL6),
                  src_port=0, dst_port=4789, tcp_flags=0, priority=0)
    records = [SampledHeader(frame_length=len(header) + 4, header=header),
               ExtendedIPv4TunnelEgress(**outer4), ExtendedIPv4TunnelIngress(**outer4),
               ExtendedIPv6TunnelEgress(**outer6), ExtendedIPv6TunnelIngress(**outer6),
               ExtendedDecapsulateEgress(inner_header_offset=50),
               ExtendedDecapsulateIngress(inner_header_offset=50),
               ExtendedVniEgress(vni=4242), ExtendedVniIngress(vni=4242)]
    return Datagram(agent_address=ipaddress.ip_address("10.0.0.1"), sub_agent_id=1, sequence_number=1,
                    uptime=5, samples=[FlowSample(sequence_number=1, source_id_type=0, source_id_index=3,
                                                  sampling_rate=10, sample_pool=10, drops=0,
                                                  input_format=0, input=3, output_format=0,
                                                  output=INTERNAL, flow_records=records)]).encode()


def test_the_decoder_shows_the_records_and_survives_any_damage_to_them(tmp_path):
    """Every form of ``hsflowd decode`` prints the tunnel structures, and a datagram cut or
    scrambled anywhere in them costs one line on stderr, never a traceback."""
    import json
    import subprocess
    import sys
    from test_decode_cmd import pcap_of

    good = tunnel_datagram()
    start = len(good) - (8 * 4 + 32 * 2 + 56 * 2 + 12 * 4)     # where the tunnel records begin
    rng = random.Random(11)
    bad = [good[:n] for n in range(start, len(good), 3)]
    for _ in range(300):
        damaged = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(start, len(good))] = rng.getrandbits(8)
        bad.append(bytes(damaged))
    path = tmp_path / "tunnels.pcap"
    pcap_of([good] + bad, path)
    for form in ([], ["-j"], ["-l"], ["-g"]):
        out = subprocess.run([sys.executable, "-m", "hsflowd", "decode", *form, "--pcap", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert all(": bad datagram (" in line for line in out.stderr.splitlines())
        if form == ["-j"]:
            first = json.loads(out.stdout.splitlines()[0])
            names = [r["struct"] for r in first["samples"][0]["flow_records"]]
            assert names[1:] == ["extended_ipv4_tunnel_egress", "extended_ipv4_tunnel_ingress",
                                 "extended_ipv6_tunnel_egress", "extended_ipv6_tunnel_ingress",
                                 "extended_decapsulate_egress", "extended_decapsulate_ingress",
                                 "extended_vni_egress", "extended_vni_ingress"]
            assert first["samples"][0]["flow_records"][0]["decoded"]["VXLAN_VNI"] == 4242
        if form == ["-g"]:      # sflowtool's names: out_ for egress, in_ for ingress
            for line in ("0:1027 out_decap_inner_header_offset 50", "0:1028 in_decap_inner_header_offset 50",
                         "0:1029 out_VNI 4242", "0:1030 in_VNI 4242", "0:1023 tunnel_ipv4_out_UDPDstPort 4789"):
                assert line in out.stdout


def test_the_hook_runs_before_tcps():
    """tcp's hook keeps samples and sends them later past the hooks after it: tunnels'
    records and docker's entities must already be on them, whatever order the hooks were
    added in (a module that starts late, reloads or is restarted adds its hook last)."""
    from hsflowd.modules.flowhooks import FlowHooks, Sink
    seen = []
    hooks = FlowHooks(Sink(lambda s: None))
    for owner in ("tcp", "docker", "tunnels"):
        hooks.set(owner, lambda s, p, owner=owner: seen.append(owner) or s)
    hooks.emit(sample(inner_frame(), 3, 4))
    assert seen == ["tunnels", "docker", "tcp"]
    hooks.set("tunnels", None)
    hooks.set("tunnels", lambda s, p: seen.append("tunnels") or s)   # restarted: added last
    seen.clear()
    hooks.emit(sample(inner_frame(), 3, 4))
    assert seen == ["tunnels", "docker", "tcp"]


def test_the_hook_runs_only_while_a_tunnel_can_end_here():
    """A VXLAN device here, or a UDP socket on a VXLAN port (a device moved to another
    namespace keeps its socket in the one it was made in: Docker's overlay networks):
    the hook; neither: no hook, and a sample costs nothing."""
    from hsflowd.sources.interfaces import Address, Interface
    clock, ports = Clock(), set()
    ctx = Ctx()
    m = TunnelsModule(ctx, clock=clock, ipr_factory=lambda: FakeIPRoute(), udp_ports=lambda: ports)
    plain = [Interface(UNDER, "eth0", addresses=[Address(ip_interface(LOCAL + "/24"))])]
    m.update(plain)
    assert ctx.hooks == []                          # nothing can end a tunnel here
    ports.add(4789)                                 # a moved device's socket stayed here
    clock.now += 61
    m.tick(clock.now)
    assert ctx.hooks == [m.hook]
    received = sample(ether(outer_v4(inner_frame(), src=REMOTE, dst=LOCAL)), UNDER, INTERNAL,
                      ds=UNDER)
    assert set(decode(ctx.hooks[0](received, walk_sample(received)))[1]) == {1, 1043, 1027, 1030}
    ports.clear()
    clock.now += 61
    m.tick(clock.now)
    assert ctx.hooks == []
    m.update(interfaces())                          # a VXLAN device of its own
    m.tick(clock.now + 1)
    assert ctx.hooks == [m.hook]
