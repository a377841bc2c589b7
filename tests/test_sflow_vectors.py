"""Real datagrams from hsflowd 2.1.25 and Open vSwitch 3.1.0 against sflowtool 6.11's decode.

For every datagram in both captures: our decoder must read it, agree with sflowtool's JSON
(``*.sflowtool.json``, every value a string) field by field, and re-encoding what it read must
give back the same bytes except in XDR padding.
"""

from __future__ import annotations

import json
import os
import struct
from ipaddress import IPv4Address
from typing import Any, Dict, List

import pytest

from hsflowd.sflow import (
    AppResources, CountersSample, CountersSampleCompact, EthernetCounters, ExtendedSwitch,
    ExtendedTimestamp, FlowSample, FlowSampleCompact, HostAdapters, HostCpu, HostDescr,
    HostDiskIo, HostMemory, HostNetIo, IfCounters, Mib2IcmpGroup, Mib2IpGroup, Mib2TcpGroup,
    Mib2UdpGroup, OfPort, OvsDpStats, PortName, SampledHeader, UnknownRecord, decode_datagram,
    to_dict,
)
from hsflowd.decode.capture import read_udp

VECTORS = os.environ.get("SFLOW_VECTORS", os.path.join(os.path.dirname(__file__), "vectors"))
CAPTURES = {"hsflowd": "hsflowd-2.1.25", "ovs": "ovs-3.1.0"}
COUNTS = {"hsflowd": 20, "ovs": 16}  # datagrams in each capture (README)


def _path(name):
    path = os.path.join(VECTORS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found")
    return path


def read_pcap_payloads(path: str) -> List[bytes]:
    """UDP payloads of a classic pcap of Ethernet/IPv4/UDP frames, read here by hand so the
    test does not rest on hsflowd.decode.capture alone."""
    with open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B2C3D4, "little-endian microsecond pcap expected"
    assert struct.unpack_from("<I", data, 20)[0] == 1  # LINKTYPE_ETHERNET
    off, out = 24, []
    while off < len(data):
        _, _, caplen, _ = struct.unpack_from("<IIII", data, off)
        frame = data[off + 16: off + 16 + caplen]
        off += 16 + caplen
        assert frame[12:14] == b"\x08\x00" and frame[23] == 17  # IPv4, UDP
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl:]
        sport, dport, length = struct.unpack_from(">HHH", udp)
        assert dport in (6396, 6397)  # the captures used test collector ports, not 6343
        out.append(bytes(udp[8:length]))
    return out


def load_sflowtool_json(path: str) -> List[Dict[str, Any]]:
    """sflowtool -j writes one JSON object per datagram, one after the other."""
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


_cache: Dict[str, Any] = {}


def capture(which):
    if which not in _cache:
        base = CAPTURES[which]
        payloads = read_pcap_payloads(_path(base + ".pcap"))
        tool = load_sflowtool_json(_path(base + ".sflowtool.json"))
        _cache[which] = (payloads, tool)
    return _cache[which]


CASES = [(w, i) for w in CAPTURES for i in range(COUNTS[w])]


def test_captures_hold_what_the_readme_says():
    for which in CAPTURES:
        payloads, tool = capture(which)
        assert len(payloads) == len(tool) == COUNTS[which]


def test_package_pcap_reader_agrees():
    for which, base in CAPTURES.items():
        with open(_path(base + ".pcap"), "rb") as f:
            got = list(read_udp(f))
        assert [p.payload for p in got] == capture(which)[0]
        with open(_path(base + ".pcap"), "rb") as f:
            assert list(read_udp(f, port=6343)) == []


# ---------------------------------------------------------------- sflowtool's names for our fields

def s(v) -> str:
    return str(v)


def port(fmt: int, value: int) -> str:
    # sflowtool prints a single interface as its number, format 2 as "multiple N"
    assert fmt in (0, 2), f"interface format {fmt} is not in these captures"
    return str(value) if fmt == 0 else f"multiple {value}"


def mac_hex(raw: bytes) -> str:
    return raw.hex()


def expect_if_counters(r: IfCounters):
    names = ["ifIndex", "ifSpeed", "ifDirection", "ifStatus", "ifInOctets", "ifInUcastPkts",
             "ifInMulticastPkts", "ifInBroadcastPkts", "ifInDiscards", "ifInErrors",
             "ifInUnknownProtos", "ifOutOctets", "ifOutUcastPkts", "ifOutMulticastPkts",
             "ifOutBroadcastPkts", "ifOutDiscards", "ifOutErrors", "ifPromiscuousMode"]
    out = {n: s(getattr(r, n)) for n in names}
    out["networkType"] = s(r.ifType)
    return out


def expect_ethernet(r: EthernetCounters):
    names = ["dot3StatsAlignmentErrors", "dot3StatsFCSErrors", "dot3StatsSingleCollisionFrames",
             "dot3StatsMultipleCollisionFrames", "dot3StatsSQETestErrors",
             "dot3StatsDeferredTransmissions", "dot3StatsLateCollisions",
             "dot3StatsExcessiveCollisions", "dot3StatsInternalMacTransmitErrors",
             "dot3StatsCarrierSenseErrors", "dot3StatsFrameTooLongs",
             "dot3StatsInternalMacReceiveErrors", "dot3StatsSymbolErrors"]
    return {n: s(getattr(r, n)) for n in names}


def expect_host_descr(r: HostDescr):
    return {"hostname": r.hostname, "UUID": str(r.uuid), "machine_type": s(r.machine_type),
            "os_name": s(r.os_name), "os_release": r.os_release}


def expect_host_adapters(r: HostAdapters):
    return {"adaptor_list": [{"ifIndex": s(a.ifIndex), "MACs": s(len(a.mac_addresses)),
                              "mac_list": [mac_hex(m) for m in a.mac_addresses]}
                             for a in r.adapters]}


def expect_host_cpu(r: HostCpu):
    return {
        # sflowtool prints loads with three decimals
        "cpu_load_one": f"{r.load_one:.3f}", "cpu_load_five": f"{r.load_five:.3f}",
        "cpu_load_fifteen": f"{r.load_fifteen:.3f}",
        "cpu_proc_run": s(r.proc_run), "cpu_proc_total": s(r.proc_total),
        "cpu_num": s(r.cpu_num), "cpu_speed": s(r.cpu_speed), "cpu_uptime": s(r.uptime),
        "cpu_user": s(r.cpu_user), "cpu_nice": s(r.cpu_nice), "cpu_system": s(r.cpu_system),
        "cpu_idle": s(r.cpu_idle), "cpu_wio": s(r.cpu_wio), "cpuintr": s(r.cpu_intr),
        "cpu_sintr": s(r.cpu_sintr), "cpuinterrupts": s(r.interrupts),
        "cpu_contexts": s(r.contexts), "cpu_steal": s(r.cpu_steal),
        "cpu_guest": s(r.cpu_guest), "cpu_guest_nice": s(r.cpu_guest_nice),
    }


def expect_host_memory(r: HostMemory):
    names = ["mem_total", "mem_free", "mem_shared", "mem_buffers", "mem_cached", "swap_total",
             "swap_free", "page_in", "page_out", "swap_in", "swap_out"]
    return {n: s(getattr(r, n)) for n in names}


def expect_host_disk_io(r: HostDiskIo):
    # part_max_used is hundredths of a percent on the wire; sflowtool prints percent
    used = "unknown" if r.part_max_used == -1 else f"{r.part_max_used / 100:.2f}"
    return {"disk_total": s(r.disk_total), "disk_free": s(r.disk_free),
            "disk_partition_max_used": used, "disk_reads": s(r.reads),
            "disk_bytes_read": s(r.bytes_read), "disk_read_time": s(r.read_time),
            "disk_writes": s(r.writes), "disk_bytes_written": s(r.bytes_written),
            "disk_write_time": s(r.write_time)}


def expect_host_net_io(r: HostNetIo):
    names = ["bytes_in", "pkts_in", "errs_in", "drops_in", "bytes_out", "pkts_out", "errs_out",
             "drops_out"]
    return {f"nio_{n}": s(getattr(r, n)) for n in names}


def expect_same_names(r):
    return {name: s(getattr(r, name)) for name, _ in type(r)._layout.fields}


def expect_port_name(r: PortName):
    return {"ifName": r.name}


def expect_of_port(r: OfPort):
    return {"openflow_datapath_id": f"{r.datapath_id:016x}", "openflow_port": s(r.port_no)}


def expect_app_resources(r: AppResources):
    return {"user_time": s(r.user_time), "system_time": s(r.system_time),
            "memory_used": s(r.mem_used), "memory_max": s(r.mem_max),
            "files_open": s(r.fd_open), "files_max": s(r.fd_max),
            "connections_open": s(r.conn_open), "connections_max": s(r.conn_max)}


def expect_ovs_dp(r: OvsDpStats):
    return {"OVS_dp_hits": s(r.hits), "OVS_dp_misses": s(r.misses), "OVS_dp_lost": s(r.lost),
            "OVS_dp_mask_hits": s(r.mask_hits), "OVS_dp_flows": s(r.flows),
            "OVS_dp_masks": s(r.masks)}


def expect_sampled_header(r: SampledHeader):
    out = {"headerProtocol": s(r.header_protocol), "sampledPacketSize": s(r.frame_length),
           "strippedBytes": s(r.stripped), "headerLen": s(len(r.header)),
           "headerBytes": "-".join(f"{b:02X}" for b in r.header)}
    if r.header_protocol == 1 and len(r.header) >= 14:  # what sflowtool reads from the frame
        out.update(dstMAC=r.header[0:6].hex(), srcMAC=r.header[6:12].hex(),
                   ethernet_type=s(int.from_bytes(r.header[12:14], "big")))
    return out


def expect_switch(r: ExtendedSwitch):
    return {"in_vlan": s(r.src_vlan), "in_priority": s(r.src_priority),
            "out_vlan": s(r.dst_vlan), "out_priority": s(r.dst_priority)}


def expect_timestamp(r: ExtendedTimestamp):
    return {"timestamp_nS": s(r.nanoseconds)}


COUNTER_MAP = {
    IfCounters: expect_if_counters, EthernetCounters: expect_ethernet,
    HostDescr: expect_host_descr, HostAdapters: expect_host_adapters, HostCpu: expect_host_cpu,
    HostMemory: expect_host_memory, HostDiskIo: expect_host_disk_io,
    HostNetIo: expect_host_net_io, Mib2IpGroup: expect_same_names,
    Mib2IcmpGroup: expect_same_names, Mib2TcpGroup: expect_same_names,
    Mib2UdpGroup: expect_same_names, PortName: expect_port_name, OfPort: expect_of_port,
    AppResources: expect_app_resources, OvsDpStats: expect_ovs_dp,
}
FLOW_MAP = {SampledHeader: expect_sampled_header, ExtendedSwitch: expect_switch,
            ExtendedTimestamp: expect_timestamp}
# keys sflowtool adds from its own dissection of the sampled packet (IP, UDP, ICMP...)
DISSECTED = {"IPSize", "ip.tot_len", "srcIP", "dstIP", "IPProtocol", "IPTOS", "IPTTL", "IPID",
             "UDPSrcPort", "UDPDstPort", "UDPBytes", "ICMPType", "ICMPCode", "IP6_label",
             "IPV6_payloadLen", "srcIP6", "dstIP6", "IP6HeaderExtension", "TCPSrcPort",
             "TCPDstPort", "TCPFlags"}
NOT_FIELDS = {"counterBlock_tag", "flowBlock_tag", "flowSampleType", "extendedType"}


def tag_of(rec) -> str:
    return f"{rec.tag >> 12}:{rec.tag & 0xFFF}"


def compare_element(rec, element, table, seen):
    key = "counterBlock_tag" if table is COUNTER_MAP else "flowBlock_tag"
    assert element.get(key) == tag_of(rec)
    assert not isinstance(rec, UnknownRecord), f"{tag_of(rec)} was not decoded"
    want = table[type(rec)](rec)
    extra = set(element) - set(want) - NOT_FIELDS - DISSECTED
    assert not extra, f"{rec.sflow_name}: sflowtool shows {sorted(extra)} that we do not compare"
    for name, value in want.items():
        assert element[name] == value, f"{rec.sflow_name}.{name}"
    seen.add(type(rec))


def sample_header_fields(sample) -> Dict[str, str]:
    if isinstance(sample, (FlowSample, CountersSample)):
        source = f"{sample.source_id_type}:{sample.source_id_index}"
    else:
        source = f"{sample.source_id >> 24}:{sample.source_id & 0xFFFFFF}"
    out = {"sampleSequenceNo": s(sample.sequence_number), "sourceId": source}
    if isinstance(sample, FlowSample):
        out.update(meanSkipCount=s(sample.sampling_rate), samplePool=s(sample.sample_pool),
                   dropEvents=s(sample.drops),
                   inputPort=port(sample.input_format, sample.input),
                   outputPort=port(sample.output_format, sample.output))
    elif isinstance(sample, FlowSampleCompact):
        out.update(meanSkipCount=s(sample.sampling_rate), samplePool=s(sample.sample_pool),
                   dropEvents=s(sample.drops),
                   inputPort=port(sample.input >> 30, sample.input & 0x3FFFFFFF),
                   outputPort=port(sample.output >> 30, sample.output & 0x3FFFFFFF))
    return out


SAMPLE_TYPES = {FlowSample: ("0:3", "FLOWSAMPLE"), CountersSample: ("0:4", "COUNTERSSAMPLE"),
                FlowSampleCompact: ("0:1", "FLOWSAMPLE"),
                CountersSampleCompact: ("0:2", "COUNTERSSAMPLE")}

@pytest.mark.parametrize("which, index", CASES, ids=[f"{w}-{i}" for w, i in CASES])
def test_decode_matches_sflowtool(which, index):
    check_against_sflowtool(which, index, set())


def check_against_sflowtool(which, index, seen):
    payloads, tool = capture(which)
    payload, want = payloads[index], tool[index]
    dg = decode_datagram(payload)

    assert want["datagramSize"] == s(len(payload))
    assert want["datagramVersion"] == s(dg.version) == "5"
    assert want["agent"] == str(dg.agent_address)
    assert isinstance(dg.agent_address, IPv4Address)
    assert want["agentSubId"] == s(dg.sub_agent_id)
    assert want["packetSequenceNo"] == s(dg.sequence_number)
    assert want["sysUpTime"] == s(dg.uptime)
    assert want["samplesInPacket"] == s(len(dg.samples)) == s(len(want["samples"]))

    for sample, tool_sample in zip(dg.samples, want["samples"]):
        tag, kind = SAMPLE_TYPES[type(sample)]
        assert tool_sample["sampleType_tag"] == tag and tool_sample["sampleType"] == kind
        for name, value in sample_header_fields(sample).items():
            assert tool_sample[name] == value, f"{sample.sflow_name}.{name}"
        if isinstance(sample, (FlowSample, FlowSampleCompact)):
            records, table = sample.flow_records, FLOW_MAP
        else:
            records, table = sample.counters, COUNTER_MAP
        assert len(records) == len(tool_sample["elements"])
        for rec, element in zip(records, tool_sample["elements"]):
            compare_element(rec, element, table, seen)

    json.dumps(to_dict(dg))


def test_all_record_types_were_compared():
    seen = {which: set() for which in CAPTURES}
    for which in CAPTURES:
        for i in range(COUNTS[which]):
            check_against_sflowtool(which, i, seen[which])
    assert seen["hsflowd"] == {
        HostDescr, HostAdapters, HostCpu, HostMemory, HostDiskIo, HostNetIo, Mib2IpGroup,
        Mib2IcmpGroup, Mib2TcpGroup, Mib2UdpGroup, IfCounters, PortName, SampledHeader,
        ExtendedTimestamp}
    assert seen["ovs"] == {
        IfCounters, EthernetCounters, OfPort, PortName, AppResources, OvsDpStats,
        SampledHeader, ExtendedSwitch}


def test_hsflowd_sample_layout_is_as_documented():
    # hsflowd 2.1.25: host sample 2:1 with records in prepend order; interface samples with
    # if_counters and port_name; flow samples with extended_timestamp then sampled_header
    # (hsflowd prepends each element, so the one added last goes first)
    payloads, _ = capture("hsflowd")
    dg = decode_datagram(payloads[0])
    host = [x for x in dg.samples if (x.source_id_type, x.source_id_index) == (2, 1)][0]
    assert [r.tag for r in host.counters] == [2001, 2010, 2009, 2008, 2007, 2005, 2004, 2003,
                                              2006, 2000]
    flows = [x for p in payloads for x in decode_datagram(p).samples if isinstance(x, FlowSample)]
    assert len(flows) == 91
    for f in flows:
        assert [r.tag for r in f.flow_records] == [1043, 1]
        hdr = f.flow_records[1]
        assert hdr.stripped == 4 and hdr.header_protocol == 1
        # headerBytes = 64: short frames whole (plus the 4-byte FCS), longer ones cut
        assert hdr.frame_length == len(hdr.header) + 4 or len(hdr.header) == 64
        # host model: one side is the ifIndex, the other 0x3FFFFFFF "internal", format 0
        assert (f.input_format, f.output_format) == (0, 0)
        assert 0x3FFFFFFF in (f.input, f.output) and 22 in (f.input, f.output)


# ---------------------------------------------------------------- re-encoding

# hsflowd and Open vSwitch do not always clear XDR padding: hsflowd leaves a stray byte after
# the 6 bytes of a host_adapters MAC (offset 79 in most host samples: 0x58) and after the
# 7-byte port_name "hc30754" (0x01); OVS leaves 0xffff after an 86-byte sampled header and
# other bytes after odd-length headers.  The padding carries no information, and RFC 4506 says
# it must be zero, so our encoder writes zeros there.  Every byte that differs must therefore
# be zero in our encoding, and the decoder must ignore it (changing it changes nothing).
@pytest.mark.parametrize("which, index", CASES, ids=[f"{w}-{i}" for w, i in CASES])
def test_reencoding_gives_the_same_bytes_but_padding(which, index):
    payload = capture(which)[0][index]
    dg = decode_datagram(payload)
    ours = dg.encode()
    assert len(ours) == len(payload)
    diffs = [i for i in range(len(ours)) if ours[i] != payload[i]]
    assert len(diffs) <= 4
    for i in diffs:
        assert ours[i] == 0, f"byte {i}: we wrote {ours[i]:#x}, not padding"
        poked = bytearray(ours)
        poked[i] = 0xA5
        assert decode_datagram(bytes(poked)) == dg, f"byte {i} is not padding"
    assert decode_datagram(ours) == dg


def test_known_garbage_padding_positions():
    # pin the analysis in the comment above to concrete offsets
    hs, _ = capture("hsflowd")
    # datagram 1: 28 header + 8 sample tag/len + 16 counters-sample fixed part = 52 host_adapters
    # tag; 60 count, 64 ifIndex, 68 MAC count, 72..77 MAC, 78..79 padding
    assert hs[1][72:78] == bytes.fromhex("02fc00000001") and hs[1][78:80] == b"\x00\x58"
    ovs, _ = capture("ovs")
    dg = decode_datagram(ovs[1])
    assert len(dg.samples[0].flow_records[1].header) == 86  # 86 + 2 padding bytes 0xffff
    assert ovs[1][202:204] == b"\xff\xff"
