"""Our datagrams as Wireshark's sFlow dissector reads them.

tshark (packet-sflow.c) is an independent decoder.  The datagrams are written to a pcap as
Ethernet/IPv4/UDP to port 6343 and read back with ``tshark -T json``; every value tshark
shows must be what was encoded.  tshark knows samples 1-4, flow records 1-4 and 1001-1016
and counter records 1-7 and 1001; it skips unknown flow records and samples but cannot skip
more than one unknown counter record, so no host records (2000+) are sent to it.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from ipaddress import IPv4Address, IPv6Address

import pytest

from hsflowd.sflow import (
    CountersSample, CountersSampleCompact, DiscardedPacket, EthernetCounters, ExtendedRouter,
    ExtendedSwitch, ExtendedTimestamp, FlowSample, FlowSampleCompact, IfCounters, LagPortStats,
    Processor, SampledEthernet, SampledHeader, SampledIPv4, SampledIPv6, VlanCounters,
)
from hsflowd.sflow.samples import INTERNAL, Datagram

TSHARK = shutil.which("tshark")
if TSHARK is None:
    print("test_sflow_tshark: skipped, `tshark` is not on PATH (apt-get install tshark)")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not on PATH")


# ---------------------------------------------------------------- pcap writing

def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(payload: bytes, dport: int = 6343) -> bytes:
    """Ethernet / IPv4 (198.51.100.1 -> 198.51.100.2) / UDP 40000 -> dport, by hand."""
    udp = struct.pack(">HHHH", 40000, dport, 8 + len(payload), 0) + payload  # checksum 0: none
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     IPv4Address("198.51.100.1").packed, IPv4Address("198.51.100.2").packed)
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("020000000002 020000000001 0800") + ip + udp


def write_pcap(path, payloads):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for i, payload in enumerate(payloads):
            frame = udp_frame(payload)
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)


# ---------------------------------------------------------------- reading tshark's JSON

class Tree(list):
    """A JSON object as its (key, value) pairs: tshark repeats keys within one object."""


def run_tshark(path):
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "json", "-d", "udp.port==6343,sflow"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    packets = json.loads(out.stdout, object_pairs_hook=Tree)
    layers = [get(get(p, "_source"), "layers") for p in packets]
    # the keys of each packet's whole dissection, to look for tshark's "malformed" marker
    raw = {f"t{4 if i == 0 else 6}": {k for k, _ in leaves(x)} | {k for k, _ in x}
           for i, x in enumerate(layers)}
    return [get(x, "sflow") for x in layers], raw


def get(tree, key):
    for k, v in tree:
        if k == key:
            return v
    raise KeyError(key)


def leaves(tree):
    for k, v in tree:
        if isinstance(v, Tree):
            yield from leaves(v)
        else:
            yield k, v


def is_record(tree):
    return any(k in ("sflow_245.flow_record_format", "sflow_245.counters_record_format")
               for k, _ in tree)


def flat(tree, skip_records=False):
    """Leaves of a subtree as a dict (first occurrence of a key wins)."""
    out = {}
    for k, v in tree:
        if isinstance(v, Tree):
            if skip_records and is_record(v):
                continue
            for kk, vv in flat(v).items():
                out.setdefault(kk, vv)
        else:
            out.setdefault(k, v)
    return out


def parse(sflow):
    header = {k: v for k, v in sflow if not isinstance(v, Tree)}
    samples = []
    for _, sample in sflow:
        if isinstance(sample, Tree):
            records = [flat(r) for _, r in sample if isinstance(r, Tree) and is_record(r)]
            samples.append((flat(sample, skip_records=True), records))
    return header, samples


# ---------------------------------------------------------------- what we send

def real_packet() -> bytes:
    scapy = pytest.importorskip("scapy.all")
    pkt = (scapy.Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")
           / scapy.IP(src="10.1.2.3", dst="10.4.5.6", ttl=61)
           / scapy.UDP(sport=51234, dport=5353) / scapy.Raw(b"sflow test payload!"))
    return bytes(pkt)


IF_COUNTERS = IfCounters(
    ifIndex=3, ifType=6, ifSpeed=25_000_000_000, ifDirection=1, ifStatus=1,
    ifInOctets=0x123456789A, ifInUcastPkts=1001, ifInMulticastPkts=1002, ifInBroadcastPkts=1003,
    ifInDiscards=1004, ifInErrors=1005, ifInUnknownProtos=0xFFFFFFFF,
    ifOutOctets=0xABCDEF0123, ifOutUcastPkts=2001, ifOutMulticastPkts=2002,
    ifOutBroadcastPkts=2003, ifOutDiscards=2004, ifOutErrors=2005, ifPromiscuousMode=1)
ETHERNET = EthernetCounters(
    dot3StatsAlignmentErrors=11, dot3StatsFCSErrors=12, dot3StatsSingleCollisionFrames=13,
    dot3StatsMultipleCollisionFrames=14, dot3StatsSQETestErrors=15,
    dot3StatsDeferredTransmissions=16, dot3StatsLateCollisions=17,
    dot3StatsExcessiveCollisions=18, dot3StatsInternalMacTransmitErrors=19,
    dot3StatsCarrierSenseErrors=20, dot3StatsFrameTooLongs=21,
    dot3StatsInternalMacReceiveErrors=22, dot3StatsSymbolErrors=0xFFFFFFFF)
IF_NAMES = {  # our field -> tshark's
    "ifIndex": "sflow_245.ifindex", "ifType": "sflow_245.iftype", "ifSpeed": "sflow_245.ifspeed",
    "ifDirection": "sflow_245.ifdirection", "ifInOctets": "sflow_245.ifinoct",
    "ifInUcastPkts": "sflow_245.ifinpkt", "ifInMulticastPkts": "sflow_245.ifinmcast",
    "ifInBroadcastPkts": "sflow_245.ifinbcast", "ifInDiscards": "sflow_245.ifindisc",
    "ifInErrors": "sflow_245.ifinerr", "ifInUnknownProtos": "sflow_245.ifinunk",
    "ifOutOctets": "sflow_245.ifoutoct", "ifOutUcastPkts": "sflow_245.ifoutpkt",
    "ifOutMulticastPkts": "sflow_245.ifoutmcast", "ifOutBroadcastPkts": "sflow_245.ifoutbcast",
    "ifOutDiscards": "sflow_245.ifoutdisc", "ifOutErrors": "sflow_245.ifouterr",
    "ifPromiscuousMode": "sflow_245.ifpromisc",
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    pkt = real_packet()
    flow = FlowSample(
        sequence_number=7, source_id_type=0, source_id_index=3, sampling_rate=400,
        sample_pool=8000, drops=2, input_format=0, input=3, output_format=0, output=INTERNAL,
        # hsflowd sends the timestamp first, but tshark 4.0 does not consume the body of a
        # flow record it does not know (1043), so a record after it is read from the wrong
        # place ("Malformed Packet": the same happens with hsflowd-2.1.25.pcap itself).  As
        # the last record, the timestamp is harmless: the sample length bounds it.
        flow_records=[SampledHeader(header_protocol=1, frame_length=len(pkt) + 4, stripped=4,
                                    header=pkt),
                      ExtendedTimestamp(nanoseconds=1_795_651_202_705_602_000)])
    flow2 = FlowSample(
        sequence_number=8, source_id_type=0, source_id_index=4, sampling_rate=1000,
        sample_pool=5000, drops=0, input_format=0, input=4, output_format=2, output=7,
        flow_records=[
            SampledIPv4(length=60, protocol=6, src_ip=IPv4Address("10.0.0.1"),
                        dst_ip=IPv4Address("10.0.0.2"), src_port=8080, dst_port=80),
            SampledIPv6(length=80, protocol=17, src_ip=IPv6Address("2001:db8::1"),
                        dst_ip=IPv6Address("2001:db8::2"), src_port=53, dst_port=49152,
                        priority=3),
            SampledEthernet(length=1518, src_mac=bytes.fromhex("020000000001"),
                            dst_mac=bytes.fromhex("020000000002"), type=0x86DD),
            ExtendedSwitch(src_vlan=10, src_priority=3, dst_vlan=20, dst_priority=5),
            ExtendedRouter(nexthop=IPv4Address("192.0.2.254"), src_mask_len=24, dst_mask_len=16),
            ExtendedRouter(nexthop=IPv6Address("2001:db8::fe"), src_mask_len=64,
                           dst_mask_len=48)])
    counters = CountersSample(sequence_number=9, source_id_type=0, source_id_index=3,
                              counters=[IF_COUNTERS, ETHERNET])
    counters2 = CountersSample(sequence_number=10, source_id_type=0, source_id_index=5, counters=[
        VlanCounters(vlan_id=100, octets=2 ** 33 + 1, ucastPkts=7, multicastPkts=8,
                     broadcastPkts=9, discards=10),
        Processor(cpu_5s=150, cpu_1m=250, cpu_5m=350, total_memory=2 ** 33, free_memory=2 ** 32),
        LagPortStats(dot3adAggPortActorSystemID=bytes.fromhex("0200000000aa"),
                     dot3adAggPortPartnerOperSystemID=bytes.fromhex("0200000000bb"),
                     dot3adAggPortAttachedAggID=16, dot3adAggPortState=0x0F000000,
                     dot3adAggPortStatsLACPDUsRx=33, dot3adAggPortStatsMarkerPDUsRx=34,
                     dot3adAggPortStatsMarkerResponsePDUsRx=35, dot3adAggPortStatsUnknownRx=36,
                     dot3adAggPortStatsIllegalRx=37, dot3adAggPortStatsLACPDUsTx=38,
                     dot3adAggPortStatsMarkerPDUsTx=39, dot3adAggPortStatsMarkerResponsePDUsTx=40)])
    compact_flow = FlowSampleCompact(sequence_number=11, source_id=0x020003E8, sampling_rate=5,
                                     sample_pool=55, drops=1, input=3, output=0x40000102,
                                     flow_records=[ExtendedSwitch(src_vlan=1, src_priority=2,
                                                                  dst_vlan=3, dst_priority=4)])
    compact_counters = CountersSampleCompact(sequence_number=12, source_id=0x00000007,
                                             counters=[ETHERNET])
    dg4 = Datagram(agent_address=IPv4Address("192.0.2.1"), sub_agent_id=100000,
                   sequence_number=42, uptime=12_345_678,
                   samples=[flow, counters, flow2, counters2, compact_flow, compact_counters])
    # IPv6 agent; a discard sample first (tshark does not know type 5 and must skip it)
    if6 = IfCounters(ifIndex=0x3FFFFFFE, ifSpeed=10 ** 9, ifStatus=2, ifDirection=2,
                     ifInOctets=1, ifOutOctets=2 ** 64 - 1)
    dg6 = Datagram(agent_address=IPv6Address("2001:db8::1"), sub_agent_id=100001,
                   sequence_number=0xFFFFFFFF, uptime=0,
                   samples=[DiscardedPacket(sequence_number=1, source_id_type=0,
                                            source_id_index=3, reason=258,
                                            discard=[SampledHeader(header=pkt[:20])]),
                            CountersSample(sequence_number=1, source_id_type=0,
                                           source_id_index=0x3FFFFFFE, counters=[if6])])
    path = tmp_path_factory.mktemp("tshark") / "sflow.pcap"
    write_pcap(path, [dg4.encode(), dg6.encode()])
    layers, raw = run_tshark(path)
    assert len(layers) == 2
    return {"dg4": dg4, "dg6": dg6, "pkt": pkt, "if6": if6, "raw": raw,
            "t4": parse(layers[0]), "t6": parse(layers[1])}


def test_no_malformed_packets(decoded):
    for which in ("t4", "t6"):
        assert "_ws.malformed" not in decoded["raw"][which], f"tshark: {which} is malformed"


def test_datagram_header_ipv4(decoded):
    header, samples = decoded["t4"]
    assert header["sflow_245.version"] == "5"
    assert header["sflow_245.agenttype"] == "1"
    assert header["sflow_245.agent"] == "192.0.2.1"
    assert header["sflow_245.sub_agent_id"] == "100000"
    assert header["sflow_245.sequence_number"] == "42"
    assert header["sflow_245.sysuptime"] == "12345678"
    assert header["sflow_245.numsamples"] == "6" == str(len(samples))


def test_datagram_header_ipv6(decoded):
    header, samples = decoded["t6"]
    assert header["sflow_245.version"] == "5"
    assert header["sflow_245.agenttype"] == "2"
    assert header["sflow_245.agent.v6"] == "2001:db8::1"
    assert header["sflow_245.sub_agent_id"] == "100001"
    assert header["sflow_245.sequence_number"] == "4294967295"
    assert header["sflow_245.sysuptime"] == "0"
    assert header["sflow_245.numsamples"] == "2" == str(len(samples))


def test_flow_sample_with_sampled_header(decoded):
    fields, records = decoded["t4"][1][0]
    assert fields["sflow_245.sampletype"] == "3"
    expect = {"sequence_number": "7", "source_id_type": "0", "source_id_index": "3",
              "sampling_rate": "400", "sample_pool": "8000", "dropped_packets": "2",
              "input_interface_format": "0", "input_interface_value": "3",
              "output_interface.format": "0", "output_interface_value": "1073741823",
              "flow_record": "2"}
    for name, value in expect.items():
        assert fields["sflow.flow_sample." + name] == value, name
    assert [r["sflow_245.flow_record_format"] for r in records] == ["1", "1043"]
    assert records[1]["sflow_5.flow_data_length"] == "8"  # unknown to tshark, not decoded
    hdr = records[0]
    pkt = decoded["pkt"]
    assert hdr["sflow_245.header_protocol"] == "1"
    assert hdr["sflow_245.header.frame_length"] == str(len(pkt) + 4)
    assert hdr["sflow_245.header.payload_stripped"] == "4"
    assert hdr["sflow_245.header.sampled_header_length"] == str(len(pkt))
    # tshark shows the opaque with its XDR padding
    shown = bytes.fromhex(hdr["sflow_245.header"].replace(":", ""))
    assert shown[:len(pkt)] == pkt and shown[len(pkt):] == bytes(-len(pkt) % 4)
    # and hands the bytes on to its Ethernet, IP and UDP dissectors
    assert hdr["eth.src"] == "00:11:22:33:44:55" and hdr["eth.dst"] == "66:77:88:99:aa:bb"
    assert hdr["ip.src"] == "10.1.2.3" and hdr["ip.dst"] == "10.4.5.6"
    assert hdr["ip.ttl"] == "61" and hdr["ip.proto"] == "17"
    assert hdr["udp.srcport"] == "51234" and hdr["udp.dstport"] == "5353"


def test_flow_sample_with_other_flow_records(decoded):
    fields, records = decoded["t4"][1][2]
    assert fields["sflow.flow_sample.sequence_number"] == "8"
    assert fields["sflow.flow_sample.source_id_index"] == "4"
    assert fields["sflow.flow_sample.sampling_rate"] == "1000"
    assert fields["sflow.flow_sample.sample_pool"] == "5000"
    # format 2: multiple outputs, 7 interfaces
    assert fields["sflow.flow_sample.output_interface.format"] == "2"
    assert fields["sflow.flow_sample.output_interface_value"] == "7"
    ipv4, ipv6, eth, switch, router4, router6 = records
    assert (ipv4["sflow_245.ip.length"], ipv4["sflow.ip_protocol"]) == ("60", "6")
    assert (ipv4["sflow_245.ipv4_src"], ipv4["sflow_245.ipv4_dst"]) == ("10.0.0.1", "10.0.0.2")
    assert (ipv4["sflow_245.ip.source_port"], ipv4["sflow.ip.destination_port"]) == ("8080", "80")
    assert (ipv6["sflow_245.ip.length"], ipv6["sflow.ip_protocol"]) == ("80", "17")
    assert ipv6["sflow_245.ipv6_src"] == "2001:db8::1"
    assert ipv6["sflow_245.ipv6_dst"] == "2001:db8::2"
    assert ipv6["sflow_245.ip.source_port"] == "53"
    assert ipv6["sflow.ip.destination_port"] == "49152"
    assert ipv6["sflow_245.ipv6_priority"] == "3"
    assert eth["sflow_245.ethernet.length"] == "1518"
    assert eth["sflow_245.ethernet.source_mac_address"] == "02:00:00:00:00:01"
    assert eth["sflow_245.ethernet.destination_mac_address"] == "02:00:00:00:00:02"
    assert eth["sflow_245.ethernet.packet_type"] == str(0x86DD)
    assert (switch["sflow_245.vlan.in"], switch["sflow_245.pri.in"]) == ("10", "3")
    assert (switch["sflow_245.vlan.out"], switch["sflow_245.pri.out"]) == ("20", "5")
    assert router4["sflow_245.nexthop"] == "192.0.2.254"
    assert (router4["sflow_245.nexthop.src_mask"], router4["sflow_245.nexthop.dst_mask"]) == (
        "24", "16")
    assert router6["sflow_245.nexthop.v6"] == "2001:db8::fe"
    assert (router6["sflow_245.nexthop.src_mask"], router6["sflow_245.nexthop.dst_mask"]) == (
        "64", "48")


def check_if_counters(record, rec: IfCounters):
    assert record["sflow_245.counters_record_format"] == "1"
    assert record["sflow_5.flow_data_length"] == "88"
    for ours, theirs in IF_NAMES.items():
        assert record[theirs] == str(getattr(rec, ours)), ours
    # ifStatus: bit 0 admin up, bit 1 oper up
    assert record["sflow_245.ifadmin_status"] == str(rec.ifStatus & 1)
    assert record["sflow_245.ifoper_status"] == str(rec.ifStatus >> 1 & 1)


def check_ethernet(record, rec: EthernetCounters):
    assert record["sflow_245.counters_record_format"] == "2"
    assert record["sflow_5.flow_data_length"] == "52"
    for name, _ in type(rec)._layout.fields:
        assert record["sflow_245." + name] == str(getattr(rec, name)), name


def test_counters_sample_if_and_ethernet(decoded):
    fields, records = decoded["t4"][1][1]
    assert fields["sflow_245.sampletype"] == "4"
    assert fields["sflow.counters_sample.sequence_number"] == "9"
    assert fields["sflow.counters_sample.source_id_type"] == "0"
    assert fields["sflow.counters_sample.source_id_index"] == "3"
    assert fields["sflow.counters_sample.counters_records"] == "2"
    check_if_counters(records[0], IF_COUNTERS)
    check_ethernet(records[1], ETHERNET)


def test_counters_sample_vlan_processor_lag(decoded):
    fields, (vlan, cpu, lag) = decoded["t4"][1][3]
    assert fields["sflow.counters_sample.source_id_index"] == "5"
    assert vlan["sflow_245.vlan_id"] == "100" and vlan["sflow_245.octets"] == str(2 ** 33 + 1)
    assert [vlan["sflow_245." + n] for n in ("ucastPkts", "multicastPkts", "broadcastPkts",
                                             "discards")] == ["7", "8", "9", "10"]
    assert [cpu["sflow_5." + n] for n in ("cpu_5s", "cpu_1m", "cpu_5m")] == ["150", "250", "350"]
    assert cpu["sflow_5.total_memory"] == str(2 ** 33)
    assert cpu["sflow_5.free_memory"] == str(2 ** 32)
    assert lag["sflow.lag_port.actor_system_id"] == "02:00:00:00:00:aa"
    assert lag["sflow.lag_port.partner_oper_system_id"] == "02:00:00:00:00:bb"
    assert lag["sflow.lag_port.padding"] == "00:00"
    assert lag["sflow.lag_port.attached_agg_id"] == "16"
    assert lag["sflow.lag_port.state"] == "0x0f000000"
    names = ["lacpdus.rx", "marker_pdus.rx", "marker_response_pdus.rx", "unknown.rx",
             "illegal.rx", "lacpdus.tx", "marker_pdus.tx", "marker_response_pdus.tx"]
    assert [lag["sflow.lag_port." + n] for n in names] == [str(v) for v in range(33, 41)]


def test_compact_samples(decoded):
    fields, (switch,) = decoded["t4"][1][4]
    assert fields["sflow_245.sampletype"] == "1"
    assert fields["sflow.flow_sample.sequence_number"] == "11"
    assert fields["sflow.flow_sample.source_id_class"] == "2"
    assert fields["sflow.flow_sample.index"] == "1000"
    assert fields["sflow.flow_sample.sampling_rate"] == "5"
    assert fields["sflow.flow_sample.sample_pool"] == "55"
    assert fields["sflow.flow_sample.dropped_packets"] == "1"
    assert fields["sflow.flow_sample.input_interface"] == "3"
    # 0x40000102: format 1 (discarded), reason 258 (ACL)
    assert fields["sflow.flow_sample.output_interface"] == "0x40000102"
    assert fields["sflow.flow_sample.output_interface_format"] == "1"
    assert fields["sflow.flow_sample.output_interface_value"] == "258"
    assert [switch["sflow_245." + n] for n in ("vlan.in", "pri.in", "vlan.out", "pri.out")] == [
        "1", "2", "3", "4"]
    fields, (eth,) = decoded["t4"][1][5]
    assert fields["sflow_245.sampletype"] == "2"
    assert fields["sflow.counters_sample.sequence_number"] == "12"
    assert fields["sflow.counters_sample.source_id_index"] == "7"
    check_ethernet(eth, ETHERNET)


def test_ipv6_agent_with_skipped_discard_sample(decoded):
    _, samples = decoded["t6"]
    (discard, _), (fields, (record,)) = samples
    assert discard["sflow_245.sampletype"] == "5"  # unknown to tshark 4.0, skipped by length
    assert fields["sflow_245.sampletype"] == "4"
    assert fields["sflow.counters_sample.source_id_index"] == str(0x3FFFFFFE)
    check_if_counters(record, decoded["if6"])
    assert record["sflow_245.ifoutoct"] == "18446744073709551615"
