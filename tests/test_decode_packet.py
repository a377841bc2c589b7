"""Sampled headers decoded: Ethernet, 802.1Q, IPv4, IPv6, TCP, UDP, ICMP, VXLAN's inner packet,
cut-short headers, and the captures' headers against sflowtool's JSON decode of them.

With an sflowtool binary on PATH (or in $SFLOWTOOL), the -g output of generated datagrams
carrying these headers is also compared with sflowtool's, line for line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from ipaddress import ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.decode.packet import LAYERS, Field, Note, as_dict, decode_header
from hsflowd.sflow import Datagram, FlowSample, SampledHeader, decode_datagram

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")
FUZZ = settings(max_examples=400, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def eth(payload: bytes, ethertype: int = 0x0800, tags=()) -> bytes:
    head = MAC_B + MAC_A
    for tpid, vlan, prio in tags:
        head += struct.pack(">HH", tpid, (prio << 13) | vlan)
    return head + struct.pack(">H", ethertype) + payload


def ipv4(payload: bytes, proto: int, src="10.0.0.1", dst="10.0.0.2", ttl=63, tos=0x10,
         ident=0x1234, frag=0) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, frag, ttl, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def ipv6(payload: bytes, nxt: int, src="2001:db8::1", dst="2001:db8::2", flow=0x12345) -> bytes:
    return struct.pack(">IHBB16s16s", (6 << 28) | (0xB8 << 20) | flow, len(payload), nxt, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def tcp(sport=40000, dport=443, flags=0x18) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 2, 5 << 4, flags, 1000, 0, 0)


def udp(payload: bytes, sport=5000, dport=53) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(kind=8, code=0) -> bytes:
    return struct.pack(">BBHHH", kind, code, 0, 1, 1)


def fields(pkt):
    return {i.name: i.value for i in pkt.items if isinstance(i, Field)}


def names(pkt):
    return [i.name for i in pkt.items if isinstance(i, Field)]


# ---------------------------------------------------------------- what each layer gives

def test_tcp_over_a_vlan_tag():
    frame = eth(ipv4(tcp(flags=0x12), 6), tags=[(0x8100, 42, 5)])
    pkt = decode_header(1, len(frame) + 4, 4, frame)
    assert names(pkt) == ["dstMAC", "srcMAC", "decodedVLAN", "decodedPriority", "ethernet_type",
                          "IPSize", "ip.tot_len", "srcIP", "dstIP", "IPProtocol", "IPTOS",
                          "IPTTL", "IPID", "TCPSrcPort", "TCPDstPort", "TCPFlags"]
    f = fields(pkt)
    assert (f["decodedVLAN"], f["decodedPriority"], f["ethernet_type"]) == (42, 5, 0x0800)
    assert f["IPSize"] == 40 and f["ip.tot_len"] == 40 and f["IPID"] == 0x1234
    assert (f["srcIP"], f["dstIP"]) == (ip_address("10.0.0.1"), ip_address("10.0.0.2"))
    assert (f["TCPSrcPort"], f["TCPDstPort"], f["TCPFlags"]) == (40000, 443, 0x12)
    assert (pkt.vlan, pkt.protocol, pkt.tos, pkt.ttl, pkt.ip_offset) == (42, 6, 0x10, 63, 18)


def test_qinq_tags_are_numbered():
    frame = eth(ipv4(udp(b"x"), 17), tags=[(0x88A8, 100, 1), (0x8100, 200, 3)])
    f = fields(decode_header(1, len(frame) + 4, 4, frame))
    assert (f["decodedVLAN"], f["decodedVLAN.1"], f["decodedPriority.1"]) == (100, 200, 3)
    assert (f["UDPSrcPort"], f["UDPDstPort"], f["UDPBytes"]) == (5000, 53, 9)


def test_icmp_type_and_code_are_the_ports():
    frame = eth(ipv4(icmp(3, 1), 1))
    pkt = decode_header(1, len(frame) + 4, 4, frame)
    assert (fields(pkt)["ICMPType"], fields(pkt)["ICMPCode"]) == (3, 1)
    assert (pkt.src_port, pkt.dst_port) == (3, 1)


def test_ipv6_with_a_hop_by_hop_header():
    hop = bytes([6, 0]) + bytes(6)  # next header TCP, 8 bytes
    frame = eth(ipv6(hop + tcp(), 0), 0x86DD)
    pkt = decode_header(1, len(frame) + 4, 4, frame)
    f = fields(pkt)
    assert names(pkt)[3:] == ["IPSize", "IPTOS", "IP6_label", "IPV6_payloadLen", "IPTTL",
                              "srcIP6", "dstIP6", "IP6HeaderExtension", "IPProtocol",
                              "TCPSrcPort", "TCPDstPort", "TCPFlags"]
    assert (f["IPTOS"], f["IP6_label"], f["IPV6_payloadLen"]) == (0xB8, 0x12345, 28)
    assert f["srcIP6"] == ip_address("2001:db8::1") and f["IPProtocol"] == 6
    assert pkt.ip_offset is None  # sflowtool's -l uses the IPv4 offset only


def test_fragment_stops_at_the_ip_header():
    frame = eth(ipv4(udp(b"abc"), 17, frag=0x2000 | 10))
    f = fields(decode_header(1, 100, 4, frame))
    assert f["IPFragmentOffset"] == 10 and "UDPSrcPort" not in f


def test_vxlan_inner_packet():
    inner = eth(ipv4(tcp(sport=1111, dport=2222), 6, src="192.168.1.1", dst="192.168.1.2"))
    vxlan = struct.pack(">B3sI", 0x08, b"\0\0\0", 5000 << 8) + inner
    frame = eth(ipv4(udp(vxlan, dport=4789), 17))
    pkt = decode_header(1, len(frame) + 4, 4, frame)
    assert pkt.vni == 5000
    inner_fields = fields(pkt.inner)
    assert inner_fields["srcIP"] == ip_address("192.168.1.1")
    assert (inner_fields["TCPSrcPort"], inner_fields["TCPDstPort"]) == (1111, 2222)
    assert inner_fields["IPSize"] == 40  # the inner IP packet: UDP payload less VXLAN and Ethernet
    plain = as_dict(pkt)
    assert plain["VXLAN_VNI"] == 5000 and plain["inner"]["dstIP"] == "192.168.1.2"
    assert plain["srcMAC"] == "02:00:00:00:00:01"
    json.dumps(plain)


def test_snap_and_8022_and_vendor_oui():
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ipv4(udp(b""), 17)
    f = fields(decode_header(1, 100, 4, eth(snap, len(snap))))
    assert f["ethernet_type"] == 0x0800 and f["UDPDstPort"] == 53
    ip8022 = b"\x06\x06\x03" + ipv4(icmp(), 1)
    assert fields(decode_header(1, 100, 4, eth(ip8022, len(ip8022))))["ICMPType"] == 8
    vendor = b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + bytes(20)
    assert fields(decode_header(1, 100, 4, eth(vendor, len(vendor))))["VSNAP_OUI"] == "00-00-0C"


def test_other_header_protocols():
    raw = ipv4(udp(b"zz"), 17)
    f = fields(decode_header(11, len(raw), 0, raw))
    assert f["IPSize"] == len(raw) and f["UDPBytes"] == 10
    bad6 = bytes([0x45]) + bytes(60)
    pkt = decode_header(12, 61, 0, bad6)
    assert Note("header decode error: unexpected IP version: 4") in pkt.items
    assert decode_header(7, 10, 0, b"ppp").items == [Note("NO_DECODE headerProtocol=7")]
    assert decode_header(99, 10, 0, b"??").items == [Note("UNKNOWN headerProtocol=99")]
    wifi = bytes([0x08, 0x01]) + bytes(2) + MAC_A + MAC_B + bytes.fromhex("020000000003") + bytes(10)
    f = fields(decode_header(15, 60, 0, wifi))  # ToDS: BSSID, source, destination
    assert (f["srcMAC"], f["dstMAC"], f["txMAC"], f["rxMAC"]) == (
        MAC_B, bytes.fromhex("020000000003"), MAC_B, MAC_A)


def test_a_cut_header_decodes_as_far_as_it_goes():
    frame = eth(ipv4(tcp(), 6), tags=[(0x8100, 7, 0)])
    full = names(decode_header(1, 100, 4, frame))
    for n in range(len(frame) + 1):
        got = names(decode_header(1, 100, 4, frame[:n]))
        assert got == full[:len(got)], n
    # TCP: sflowtool needs 8 bytes for the ports; the flags come when there
    f = fields(decode_header(1, 100, 4, frame[:18 + 20 + 8]))
    assert (f["TCPSrcPort"], f["TCPDstPort"], f["TCPFlags"]) == (40000, 443, 0)
    assert "TCPSrcPort" not in fields(decode_header(1, 100, 4, frame[:18 + 20 + 7]))
    assert names(decode_header(1, 100, 4, frame[:13])) == []


TRANSPORTS = {"tcp": (6, tcp()), "udp": (17, udp(b"")), "icmp": (1, icmp())}


@FUZZ
@given(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=3),
       st.sampled_from(["ipv4", "ipv6"]), st.sampled_from(sorted(TRANSPORTS)), st.data())
def test_a_cut_header_says_which_layer_it_ends_in(tags, version, transport, data):
    """Each layer's bytes, as the decoder counts them (a tag is its TCI and the type after
    it, as dpkt's VLANtag8021Q); a cut anywhere names its layer."""
    proto, l4 = TRANSPORTS[transport]
    ip = ipv4(l4, proto) if version == "ipv4" else ipv6(l4, proto)
    frame = eth(ip, 0x0800 if version == "ipv4" else 0x86DD, [(t, 7, 0) for t in tags])
    layers = [("ethernet", 14), *[("vlan", 4)] * len(tags), (version, len(ip) - len(l4)), (transport, len(l4))]
    cut = data.draw(st.integers(0, len(frame)))
    end, expected = 0, None
    for layer, size in layers:
        end += size
        if cut < end:
            expected = layer
            break
    pkt = decode_header(1, 1500, 4, frame[:cut])
    assert pkt.truncated == expected
    assert as_dict(pkt).get("truncated") == expected


def test_a_cut_inner_packet_is_the_inner_packet_s():
    vx = struct.pack(">B3sI", 0x08, b"\0\0\0", 77 << 8) + eth(ipv4(tcp(), 6))
    frame = eth(ipv4(udp(vx, dport=4789), 17))
    got = as_dict(decode_header(1, 1500, 4, frame[:-10]))
    assert "truncated" not in got and got["VXLAN_VNI"] == 77
    assert got["inner"]["truncated"] == "tcp" and got["inner"]["TCPDstPort"] == 443
    assert as_dict(decode_header(1, 1500, 4, frame[:14 + 20 + 8 + 5]))["truncated"] == "vxlan"


# decode_header catches nothing but its own "the header ends here": any exception that gets
# out of it fails these tests, so an out-of-bounds slip cannot hide.

@FUZZ
@given(st.sampled_from([1, 11, 12, 15, 5, 77]), st.binary(max_size=200),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_any_bytes_decode_without_raising(protocol, header, frame_length, stripped):
    pkt = decode_header(protocol, frame_length, stripped, header)
    json.dumps(as_dict(pkt))
    assert pkt.truncated is None or pkt.truncated in LAYERS


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([0x0800, 0x86DD, 0x8100, 0x88A8, 0x0040]))
def test_any_bytes_after_an_ethernet_header(rest, ethertype):
    for frame in (eth(rest, ethertype), eth(ipv4(rest, 6)), eth(ipv6(rest, 0), 0x86DD),
                  eth(ipv4(udp(rest, dport=4789), 17))):
        pkt = decode_header(1, 1500, 4, frame)
        assert pkt.truncated is None or pkt.truncated in LAYERS


# ---------------------------------------------------------------- the captures vs sflowtool -j

def _sflowtool_json(path):
    with open(path) as f:
        text = f.read()
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def _as_sflowtool(name, value):
    """Our JSON value in sflowtool's string form, for comparison."""
    if name in ("dstMAC", "srcMAC"):
        return value.replace(":", "")
    if name in ("srcIP6", "dstIP6"):
        return ":".join(ip_address(value).exploded.split(":"))
    if name == "IPID":  # sflowtool prints the id's bytes swapped, as an x86 host reads them
        return str(((value & 0xFF) << 8) | (value >> 8))
    if name == "IP6_label":
        return f"0x{value:x}"
    return str(value)


@pytest.mark.parametrize("capture", ["hsflowd-2.1.25", "ovs-3.1.0"])
def test_capture_headers_match_sflowtool_field_by_field(capture):
    from hsflowd.decode.capture import read_udp
    pcap, tool = os.path.join(VECTORS, capture + ".pcap"), os.path.join(
        VECTORS, capture + ".sflowtool.json")
    if not os.path.exists(pcap):
        pytest.skip("vectors not here")
    with open(pcap, "rb") as f:
        datagrams = [decode_datagram(p.payload) for p in read_udp(f)]
    compared = 0
    for dg, want in zip(datagrams, _sflowtool_json(tool)):
        for sample, tool_sample in zip(dg.samples, want["samples"]):
            for rec, element in zip(getattr(sample, "flow_records", []),
                                    tool_sample.get("elements", [])):
                if not isinstance(rec, SampledHeader):
                    continue
                decoded = as_dict(decode_header(rec.header_protocol, rec.frame_length,
                                                rec.stripped, rec.header))
                skip = {"flowBlock_tag", "flowSampleType", "headerProtocol", "sampledPacketSize",
                        "strippedBytes", "headerLen", "headerBytes"}
                assert set(decoded) == set(element) - skip
                for name, value in decoded.items():
                    assert _as_sflowtool(name, value) == element[name], name
                compared += 1
    assert compared > 40


# ---------------------------------------------------------------- against a real sflowtool

SFLOWTOOL = os.environ.get("SFLOWTOOL") or shutil.which("sflowtool")


def _headers():
    vx = struct.pack(">B3sI", 0x08, b"\0\0\0", 77 << 8) + eth(ipv4(tcp(), 6))
    frames = [
        eth(ipv4(tcp(flags=0x02), 6), tags=[(0x8100, 42, 5)]),
        eth(ipv4(udp(b"q"), 17), tags=[(0x88A8, 100, 1), (0x8100, 200, 3)]),
        eth(ipv4(icmp(11, 0), 1, frag=0x2000)),
        eth(ipv4(icmp(0, 0), 1, frag=0x0010)),
        eth(ipv6(bytes([6, 0]) + bytes(6) + tcp(), 0), 0x86DD),
        eth(ipv6(bytes([58, 0]) + bytes(6) + icmp(128, 0), 60), 0x86DD),
        eth(ipv4(udp(vx, dport=4789), 17)),
        eth(b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ipv4(udp(b""), 17), 30),
        eth(b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + bytes(20), 28),
        eth(b"\x06\x06\x03" + ipv4(icmp(), 1), 31),
        eth(bytes(30), 0x0806),
        eth(ipv4(tcp(), 6))[:40],
        eth(ipv4(tcp(), 6))[:47],
        eth(ipv4(udp(b"x"), 17), tags=[(0x8100, 1, 0)])[:17],
    ]
    out = [(1, f) for f in frames]
    out += [(11, ipv4(udp(b"zz"), 17)), (12, ipv6(tcp(), 6)), (12, bytes([0x45]) + bytes(60)),
            (7, b"ppp"), (99, b"??")]
    return out


@pytest.mark.skipif(not SFLOWTOOL, reason="no sflowtool binary (set $SFLOWTOOL to compare)")
def test_generated_headers_match_a_real_sflowtool(tmp_path):
    from test_decode_cmd import pcap_of
    samples = [FlowSample(sequence_number=i + 1, source_id_type=0, source_id_index=3,
                          sampling_rate=10, sample_pool=10 * (i + 1), input=3, output=0x3FFFFFFF,
                          flow_records=[SampledHeader(header_protocol=proto,
                                                      frame_length=len(h) + 4, header=h)])
               for i, (proto, h) in enumerate(_headers())]
    datagrams = [Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=1,
                          sequence_number=i + 1, uptime=1000 * i, samples=[s]).encode()
                 for i, s in enumerate(samples)]
    path = tmp_path / "gen.pcap"
    pcap_of(datagrams, path)
    env = {**os.environ, "TZ": "UTC"}
    for form in ("-g", "-l"):
        want = subprocess.run([SFLOWTOOL, "-r", str(path), form], capture_output=True, text=True,
                              env=env, timeout=60).stdout
        got = subprocess.run([sys.executable, "-m", "hsflowd", "decode", form, "--pcap", str(path)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert got.returncode == 0 and got.stderr == ""
        assert got.stdout.splitlines() == want.splitlines()
