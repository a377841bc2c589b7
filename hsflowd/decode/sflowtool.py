"""sflowtool's output forms, byte for byte: ``-l`` (a FLOW or CNTR line per sample) and
``-g`` (every field on its own line, after the time, agent and sample it belongs to).

Operators' scripts parse these, so the names, the order and the number formats are
sflowtool 6.11's (src/sflowtool.c): ``%d`` where it prints signed, MACs as bare hex, IPv6 as
eight full groups, the IP id byte-swapped as an x86 host prints it, loads with three
decimals.  A datagram is walked sample by sample, so one that breaks part-way still shows
the samples before the break, as sflowtool does.

What ``-g`` cannot match: records this decoder does not know (it skips them as sflowtool
skips unknown ones, where sflowtool may know them), and records longer than their
structure (accepted here, refused by sflowtool).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Callable, Dict, List, Optional, Tuple

from ..sflow import counters as C
from ..sflow import flows as F
from ..sflow import samples as S
from ..sflow.custom import RTFLOW_TYPES, RTMETRIC_TYPES, RtFlow, RtMetric
from ..sflow.drops import drop_reason_name
from ..sflow.tlv import SAMPLES, UnknownRecord
from ..sflow.xdr import Address, DecodeError, read_u32

HEX_MAX = 682  # sflowtool's 2048-byte string buffer holds this many "XX-" bytes
_ADDRESS = Address()


# ---------------------------------------------------------------- sflowtool's value formats

def fmt_address(addr) -> str:
    if isinstance(addr, IPv4Address):
        return str(addr)
    if isinstance(addr, IPv6Address):
        raw = addr.packed.hex()
        return ":".join(raw[i:i + 4] for i in range(0, 32, 4))
    return "-"


def fmt_tag(tag: int) -> str:
    return f"{tag >> 12}:{tag & 0xFFF}"


def fmt_time(seconds: int) -> str:
    """ISO 8601 local time, as strftime's %Y-%m-%dT%H:%M:%S%z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def signed(n: int) -> int:
    """A value sflowtool prints with %d: its low 32 bits, as a signed int."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def fmt_percentage(hundredths: int) -> str:
    hundredths &= 0xFFFFFFFF
    if hundredths == 0xFFFFFFFF:
        return "unknown"
    return f"{_f32(_f32(hundredths) / 100.0):.2f}"  # sflowtool divides in float


def fmt_string(text: str, maximum: int) -> str:
    """What sflowtool keeps of a string: up to the first NUL, at most maximum - 1 bytes."""
    raw = text.encode("utf-8", "surrogateescape").split(b"\0", 1)[0][:maximum - 1]
    return raw.decode("utf-8", "surrogateescape")


def fmt_port(value: int, fmt: int) -> str:
    """sflowtool's printInOutPort: the interface format says how to read the value."""
    return {0: f"{value}", 1: f"dropCode {value}", 2: f"multiple {value}",
            3: f"format==3 {value}"}.get(fmt, "")


def fmt_uuid(u) -> str:
    h = u.bytes.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fmt_field(value) -> str:
    """A decoded header field (hsflowd.decode.packet) as sflowtool prints it."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (IPv4Address, IPv6Address)):
        return fmt_address(value)
    return str(value)


def _reason(code: int) -> str:
    # sflowtool's table has host-sflow's dev_hdr at 33 and tc_egress at 36 (see drops.py)
    moved = {33: "dev_hdr", 36: "tc_egress", 332: None, 366: None}
    name = moved[code] if code in moved else drop_reason_name(code)
    return name or "NotFound"


# ---------------------------------------------------------------- the walk

@dataclass
class SampleState:
    """What sflowtool remembers about the sample being read (its ``sample->s``)."""

    ds_class: int = 0
    ds_index: int = 0
    sample_type: int = 0
    element_type: int = 0
    input_port: int = 0
    output_port: int = 0
    sampling_rate: int = 0
    eth_src: bytes = bytes(6)
    eth_dst: bytes = bytes(6)
    eth_type: int = 0
    in_vlan: int = 0
    out_vlan: int = 0
    ip_src: object = None
    ip_dst: object = None
    protocol: int = 0
    tos: int = 0
    ttl: int = 0
    src_port: int = 0
    dst_port: int = 0
    tcp_flags: int = 0
    packet_size: int = 0
    stripped: int = 0
    ip_offset: int = 0
    if_counters: Optional[C.IfCounters] = None


@dataclass
class Received:
    """Where and when a datagram came from; pcap input has no source and no read time."""

    source_ip: object = None          # IPv4Address/IPv6Address, or None ("-")
    read_ns: int = 0                  # receive time (socket input)
    pcap_ns: int = 0                  # capture time (pcap input)


class Printer:
    """Collects one datagram's output lines in one of sflowtool's forms ("g", "l" or "text")."""

    def __init__(self, mode: str, received: Received):
        self.mode = mode
        self.out: List[str] = []
        stamp = received.pcap_ns or received.read_ns
        self.time_text = fmt_time(stamp // 1_000_000_000) if mode == "g" else ""
        self.agent = "-"
        self.sub_agent = 0
        self.sequence = 0
        self.s = SampleState()
        self.prefix = ""

    def context(self) -> str:
        s = self.s
        return (f"{self.time_text} {self.agent} {self.sub_agent} {self.sequence} "
                f"{s.ds_class}:{s.ds_index} {fmt_tag(s.sample_type)} {fmt_tag(s.element_type)} ")

    def field(self, name: str, value) -> None:
        if self.mode == "l":
            return
        line = f"{self.prefix}{name} {value}"
        self.out.append(self.context() + line if self.mode == "g" else line)

    def note(self, text: str) -> None:
        if self.mode != "l":
            self.out.append(self.context() + text if self.mode == "g" else text)

    def fields(self, record, names: List[Tuple[str, str]]) -> None:
        for attr, name in names:
            self.field(name, getattr(record, attr))


def datagram_lines(data: bytes, mode: str, received: Received) -> Tuple[List[str], Optional[str]]:
    """sflowtool's lines for one datagram, and the error that stopped the walk (or None)."""
    p = Printer(mode, received)
    p.note("startDatagram =================================")
    p.field("datagramSourceIP", fmt_address(received.source_ip))
    p.field("datagramSize", len(data))
    read_s, read_us = divmod(received.read_ns // 1000, 1_000_000)
    p.field("unixSecondsUTC", read_s)
    p.field("unixSecondsUTC_uS", read_us)
    p.field("localtime", fmt_time(read_s))
    if received.pcap_ns:
        pcap_s, pcap_us = divmod(received.pcap_ns // 1000, 1_000_000)
        p.field("pcapTimestamp", fmt_time(pcap_s))
        p.field("pcapTimestamp_uS", pcap_us)
    error = None
    try:
        _walk(p, data)
    except DecodeError as e:
        error = str(e)
    p.note("endDatagram   =================================")
    return p.out, error


def _walk(p: Printer, data: bytes) -> None:
    end = len(data)
    version = read_u32(data, 0, end, "datagram version")
    p.field("datagramVersion", version)
    if version != S.VERSION:
        raise DecodeError(f"datagram version {version}, expected {S.VERSION}")
    agent, off = _ADDRESS.decode(data, 4, end)
    p.agent = fmt_address(agent)
    p.sub_agent = read_u32(data, off, end, "sub_agent_id")
    p.field("agentSubId", p.sub_agent)
    p.sequence = read_u32(data, off + 4, end, "sequence_number")
    uptime = read_u32(data, off + 8, end, "uptime")
    count = read_u32(data, off + 12, end, "sample count")
    off += 16
    p.field("agent", p.agent)
    p.field("packetSequenceNo", p.sequence)
    p.field("sysUpTime", uptime)
    p.field("samplesInPacket", count)
    for i in range(count):
        if off >= end:
            raise DecodeError(f"the datagram ends after sample {i} of {count}")
        tag = read_u32(data, off, end, "sample tag")
        p.s = SampleState(sample_type=tag)
        p.note("startSample ----------------------")
        p.field("sampleType_tag", fmt_tag(tag))
        length = read_u32(data, off + 4, end, "sample length")
        off += 8
        if off + length > end:
            raise DecodeError(f"sample {fmt_tag(tag)} says {length} bytes but only "
                              f"{end - off} are left")
        sample = SAMPLES.decode_one(tag, data, off, off + length)
        body, off = data[off:off + length], off + length
        _SAMPLE_WRITERS.get(type(sample), _unknown_sample)(p, sample, body)
        p.note("endSample   ----------------------")


# ---------------------------------------------------------------- samples

def record_lengths(body: bytes, fixed: int) -> List[int]:
    """The declared length of each record in a sample body whose records start at ``fixed``
    (host_cpu's fields depend on it); the sample has decoded, so the framing is sound."""
    count, off, out = int.from_bytes(body[fixed:fixed + 4], "big"), fixed + 4, []
    for _ in range(count):
        length = int.from_bytes(body[off + 4:off + 8], "big")
        out.append(length)
        off += 8 + length
    return out


def _unknown_sample(p: Printer, sample: UnknownRecord, body: bytes) -> None:
    p.note(f"skipping unknown sample: {fmt_tag(sample.tag)} len={len(sample.data)}")


def _flow_sample(p: Printer, sample, body: bytes) -> None:
    s = p.s
    p.field("sampleType", "FLOWSAMPLE")
    if isinstance(sample, S.FlowSampleCompact):
        s.ds_class, s.ds_index = S.split_source_id(sample.source_id)
        in_fmt, s.input_port = S.split_interface(sample.input)
        out_fmt, s.output_port = S.split_interface(sample.output)
    else:
        s.ds_class, s.ds_index = sample.source_id_type, sample.source_id_index
        in_fmt, s.input_port = sample.input_format, sample.input
        out_fmt, s.output_port = sample.output_format, sample.output
    s.sampling_rate = sample.sampling_rate
    p.field("sampleSequenceNo", sample.sequence_number)
    p.field("sourceId", f"{s.ds_class}:{s.ds_index}")
    p.field("meanSkipCount", sample.sampling_rate)
    p.field("samplePool", sample.sample_pool)
    p.field("dropEvents", sample.drops)
    p.field("inputPort", fmt_port(s.input_port, in_fmt))
    p.field("outputPort", fmt_port(s.output_port, out_fmt))
    _flow_elements(p, sample.flow_records)
    if p.mode == "l":
        p.out.append(flow_line(p.agent, s))


def _counters_sample(p: Printer, sample, body: bytes) -> None:
    s = p.s
    p.field("sampleType", "COUNTERSSAMPLE")
    p.field("sampleSequenceNo", sample.sequence_number)
    if isinstance(sample, S.CountersSampleCompact):
        s.ds_class, s.ds_index = S.split_source_id(sample.source_id)
        lengths = record_lengths(body, 8)
    else:
        s.ds_class, s.ds_index = sample.source_id_type, sample.source_id_index
        lengths = record_lengths(body, 12)
    p.field("sourceId", f"{s.ds_class}:{s.ds_index}")
    for record, length in zip(sample.counters, lengths):
        s.element_type = record.tag
        p.field("counterBlock_tag", fmt_tag(record.tag))
        if isinstance(record, C.HostCpu):
            _host_cpu(p, record, length)
            continue
        write = _COUNTER_WRITERS.get(type(record))
        if write is None:
            p.note(f"skipping unknown counters_sample_element: {fmt_tag(record.tag)} "
                   f"len={len(record.data)}")
        else:
            write(p, record)
    if p.mode == "l":
        p.out.append(counters_line(p.agent, s.if_counters))


def _discard_sample(p: Printer, sample: S.DiscardedPacket, body: bytes) -> None:
    s = p.s
    p.field("sampleType", "DISCARD")
    s.ds_class, s.ds_index = sample.source_id_type, sample.source_id_index
    p.field("sampleSequenceNo", sample.sequence_number)
    p.field("sourceId", f"{s.ds_class}:{s.ds_index}")
    p.field("dropEvents", sample.drops)
    s.input_port, s.output_port = sample.inputifindex, sample.outputifindex
    p.field("inputPort", fmt_port(s.input_port, 0))
    p.field("outputPort", fmt_port(s.output_port, 0))
    p.field("discardCode", sample.reason)
    p.field("discardReason", _reason(sample.reason))
    p.prefix = "discarded_"
    _flow_elements(p, sample.discard)
    p.prefix = ""


def _typed_fields(p: Printer, prefix: str, fields, types) -> None:
    """rtmetric's and rtflow's fields: <prefix><type>_<name> <value>, as sflowtool prints."""
    for f in fields:
        type_name = types[f.type][0]
        value = f.value
        if type_name == "string":
            value = fmt_string(value, 255)
        elif type_name == "mac":
            value = value.hex()
        elif type_name in ("ip", "ip6"):
            value = fmt_address(value)
        elif type_name in ("gaugeFloat", "gaugeDouble", "float", "double"):
            value = f"{value:.3f}"
        p.field(f"{prefix}{type_name}_{fmt_string(f.name, 64)}", value)


def _rtmetric(p: Printer, sample, body: bytes) -> None:
    p.field("sampleType", "RTMETRIC")
    if sample.datasource:
        p.field("rtmetric_datasource_name", fmt_string(sample.datasource, 64))
    _typed_fields(p, "rtmetric_", sample.metrics, RTMETRIC_TYPES)


def _rtflow(p: Printer, sample, body: bytes) -> None:
    p.field("sampleType", "RTFLOW")
    if sample.datasource:
        p.field("rtflow_datasource_name", fmt_string(sample.datasource, 64))
    p.field("rtflow_sampling_rate", sample.sampling_rate)
    p.field("rtflow_sample_pool", sample.sample_pool)
    _typed_fields(p, "rtflow_", sample.fields, RTFLOW_TYPES)


_SAMPLE_WRITERS: Dict[type, Callable] = {
    S.FlowSample: _flow_sample, S.FlowSampleCompact: _flow_sample,
    S.CountersSample: _counters_sample, S.CountersSampleCompact: _counters_sample,
    S.DiscardedPacket: _discard_sample, RtMetric: _rtmetric, RtFlow: _rtflow,
}


def flow_line(agent: str, s: SampleState) -> str:
    return (f"FLOW,{agent},{signed(s.input_port)},{signed(s.output_port)},"
            f"{s.eth_src.hex()},{s.eth_dst.hex()},0x{s.eth_type & 0xFFFFFFFF:04x},"
            f"{signed(s.in_vlan)},{signed(s.out_vlan)},"
            f"{fmt_address(s.ip_src)},{fmt_address(s.ip_dst)},{signed(s.protocol)},"
            f"0x{s.tos & 0xFFFFFFFF:02x},{signed(s.ttl)},{signed(s.src_port)},"
            f"{signed(s.dst_port)},0x{s.tcp_flags & 0xFFFFFFFF:02x},{signed(s.packet_size)},"
            f"{signed(s.packet_size - s.stripped - s.ip_offset)},{signed(s.sampling_rate)}")


_CNTR_FIELDS = ("ifIndex ifType ifSpeed ifDirection ifStatus ifInOctets ifInUcastPkts "
                "ifInMulticastPkts ifInBroadcastPkts ifInDiscards ifInErrors ifInUnknownProtos "
                "ifOutOctets ifOutUcastPkts ifOutMulticastPkts ifOutBroadcastPkts ifOutDiscards "
                "ifOutErrors ifPromiscuousMode").split()


def counters_line(agent: str, counters: Optional[C.IfCounters]) -> str:
    """sflowtool prints one for every counter sample: zeros when it had no if_counters."""
    values = [getattr(counters, n) for n in _CNTR_FIELDS] if counters else [0] * 19
    return "CNTR," + agent + "," + ",".join(str(v) for v in values)


# ---------------------------------------------------------------- flow records

def _flow_elements(p: Printer, records) -> None:
    for record in records:
        p.s.element_type = record.tag
        p.field("flowBlock_tag", fmt_tag(record.tag))
        write = _FLOW_WRITERS.get(type(record))
        if write is None:
            p.note(f"skipping unknown flow_sample_element: {fmt_tag(record.tag)} "
                   f"len={len(record.data)}")
        else:
            write(p, record)


def _sampled_header(p: Printer, r: F.SampledHeader) -> None:
    from .packet import Field, decode_header
    s = p.s
    p.field("flowSampleType", "HEADER")
    p.field("headerProtocol", r.header_protocol)
    p.field("sampledPacketSize", r.frame_length)
    p.field("strippedBytes", r.stripped)
    p.field("headerLen", len(r.header))
    p.field("headerBytes", "-".join(f"{b:02X}" for b in r.header[:HEX_MAX]))
    s.packet_size, s.stripped = r.frame_length, r.stripped
    pkt = decode_header(r.header_protocol, r.frame_length, r.stripped, r.header)
    for item in pkt.items:
        if not isinstance(item, Field):
            p.note(item.text)
        elif item.name == "IPID":  # sflowtool prints the id's two bytes swapped (x86 order)
            p.field("IPID", ((item.value & 0xFF) << 8) | (item.value >> 8))
        elif item.name == "IP6_label":
            p.field("IP6_label", f"0x{item.value:x}")
        else:
            p.field(item.name, fmt_field(item.value))
    for attr in ("eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst", "protocol", "tos",
                 "ttl", "src_port", "dst_port", "tcp_flags", "ip_offset"):
        value = getattr(pkt, attr)
        if value is not None:
            setattr(s, attr, value)
    if pkt.vlan is not None:
        s.in_vlan = pkt.vlan


def _sampled_ethernet(p: Printer, r: F.SampledEthernet, prefix: str = "") -> None:
    s = p.s
    p.field("flowSampleType", prefix + "ETHERNET")
    s.eth_src, s.eth_dst, s.eth_type = r.src_mac, r.dst_mac, r.type
    outer, p.prefix = p.prefix, p.prefix + prefix
    p.field("ethernet_type", r.type)
    p.field("ethernet_len", r.length)
    p.field("ethernet_src", r.src_mac.hex())
    p.field("ethernet_dst", r.dst_mac.hex())
    p.prefix = outer


def _sampled_ip(p: Printer, r, prefix: str = "") -> None:
    s = p.s
    v6 = isinstance(r, F.SampledIPv6)
    p.field("flowSampleType", prefix + ("IPV6" if v6 else "IPV4"))
    outer, p.prefix = p.prefix, p.prefix + prefix
    s.packet_size = r.length
    p.field("sampledPacketSize", r.length)
    p.field("IPSize", r.length)
    s.ip_src, s.ip_dst, s.protocol = r.src_ip, r.dst_ip, r.protocol
    p.field("srcIP6" if v6 else "srcIP", fmt_address(r.src_ip))
    p.field("dstIP6" if v6 else "dstIP", fmt_address(r.dst_ip))
    p.field("IPProtocol", r.protocol)
    if v6:
        p.field("priority", r.priority)
    else:
        s.tos = r.tos
        p.field("IPTOS", r.tos)
    s.src_port, s.dst_port = r.src_port, r.dst_port
    if r.protocol == 1:
        p.field("ICMPType", r.dst_port)
    elif r.protocol == 6:
        s.tcp_flags = r.tcp_flags
        p.field("TCPSrcPort", r.src_port)
        p.field("TCPDstPort", r.dst_port)
        p.field("TCPFlags", r.tcp_flags)
    elif r.protocol == 17:
        p.field("UDPSrcPort", r.src_port)
        p.field("UDPDstPort", r.dst_port)
    p.prefix = outer


def _switch(p: Printer, r: F.ExtendedSwitch) -> None:
    p.field("extendedType", "SWITCH")
    p.s.in_vlan, p.s.out_vlan = r.src_vlan, r.dst_vlan
    p.field("in_vlan", r.src_vlan)
    p.field("in_priority", r.src_priority)
    p.field("out_vlan", r.dst_vlan)
    p.field("out_priority", r.dst_priority)


def _router(p: Printer, r: F.ExtendedRouter) -> None:
    p.field("extendedType", "ROUTER")
    p.field("nextHop", fmt_address(r.nexthop))
    p.field("srcSubnetMask", r.src_mask_len)
    p.field("dstSubnetMask", r.dst_mask_len)


def _prefixed(name: str, value_of: Callable, direction: str) -> Callable:
    """extended_decapsulate / extended_vni: sflowtool names them with an in_/out_ prefix."""
    def write(p: Printer, r) -> None:
        p.field("extendedType", direction + name)
        p.field(direction + {"decap": "decap_inner_header_offset", "VNI": "VNI"}[name],
                value_of(r))
    return write


def _tunnel(write: Callable, prefix: str) -> Callable:
    return lambda p, r: write(p, r, prefix)


def _linux_reason(p: Printer, r: F.ExtendedLinuxReason) -> None:
    p.field("extendedType", "linux_reason")
    if r.reason:
        p.field("linux_drop_reason", fmt_string(r.reason, 64))


def _timestamp(p: Printer, r: F.ExtendedTimestamp) -> None:
    p.field("extendedType", "timestamp")
    p.field("timestamp_nS", r.nanoseconds)


def _socket(prefix: str) -> Callable:
    """extended_socket_ipv4/6 and the proxy ones; the plain ones are the FLOW line's IPs."""
    def write(p: Printer, r) -> None:
        p.field("extendedType", prefix)
        p.field(f"{prefix}_ip_protocol", r.protocol)
        if not prefix.startswith("proxy"):
            p.s.ip_src, p.s.ip_dst = r.local_ip, r.remote_ip
        p.field(f"{prefix}_local_ip", fmt_address(r.local_ip))
        p.field(f"{prefix}_remote_ip", fmt_address(r.remote_ip))
        p.field(f"{prefix}_local_port", r.local_port)
        p.field(f"{prefix}_remote_port", r.remote_port)
    return write


def _text_fields(p: Printer, pairs) -> None:
    """Strings sflowtool prints only when they are not empty (name, value, its buffer)."""
    for name, value, size in pairs:
        if value:
            p.field(name, fmt_string(value, size))


_APP_STATUS = ("SUCCESS", "OTHER", "TIMEOUT", "INTERNAL_ERROR", "BAD_REQUEST", "FORBIDDEN",
               "TOO_LARGE", "NOT_IMPLEMENTED", "NOT_FOUND", "UNAVAILABLE",
               "UNATHORIZED")   # sic: sflowtool's spelling


def _app_operation(p: Printer, r: F.AppOperation) -> None:
    p.field("flowSampleType", "applicationOperation")
    c = r.context
    _text_fields(p, (("application", c.application, 32), ("operation", c.operation, 32),
                     ("attributes", c.attributes, 255), ("status_descr", r.status_descr, 32)))
    p.field("request_bytes", r.req_bytes)
    p.field("response_bytes", r.resp_bytes)
    p.field("duration_uS", r.uS)
    p.field("status", _APP_STATUS[r.status] if r.status < len(_APP_STATUS)
            else f"<out-of-range={r.status}>")


def _app_parent(p: Printer, r: F.AppParentContext) -> None:
    c = r.context
    _text_fields(p, (("server_context_application", c.application, 32),
                     ("server_context_operation", c.operation, 32),
                     ("server_context_attributes", c.attributes, 255)))


def _tcp_info(p: Printer, r: F.ExtendedTcpInfo) -> None:
    p.field("tcpinfo_direction", {0: "unknown", 1: "received", 2: "sent"}.get(r.dirn,
                                                                              "<bad value>"))
    p.fields(r, [("snd_mss", "tcpinfo_send_mss"), ("rcv_mss", "tcpinfo_receive_mss"),
                 ("unacked", "tcpinfo_unacked_pkts"), ("lost", "tcpinfo_lost_pkts"),
                 ("retrans", "tcpinfo_retrans_pkts"), ("pmtu", "tcpinfo_path_mtu"),
                 ("rtt", "tcpinfo_rtt_uS"), ("rttvar", "tcpinfo_rtt_uS_var"),
                 ("snd_cwnd", "tcpinfo_send_congestion_win"),
                 ("reordering", "tcpinfo_reordering"), ("min_rtt", "tcpinfo_rtt_uS_min")])


def _entities(p: Printer, r: F.ExtendedEntities) -> None:
    p.field("extendedType", "entities")
    p.fields(r, [("src_dsClass", "entities_src_class"), ("src_dsIndex", "entities_src_index"),
                 ("dst_dsClass", "entities_dst_class"), ("dst_dsIndex", "entities_dst_index")])


_FLOW_WRITERS: Dict[type, Callable] = {
    F.SampledHeader: _sampled_header,
    F.SampledEthernet: _sampled_ethernet,
    F.SampledIPv4: _sampled_ip,
    F.SampledIPv6: _sampled_ip,
    F.ExtendedSwitch: _switch,
    F.ExtendedRouter: _router,
    F.ExtendedL2TunnelEgress: _tunnel(_sampled_ethernet, "tunnel_l2_out_"),
    F.ExtendedL2TunnelIngress: _tunnel(_sampled_ethernet, "tunnel_l2_in_"),
    F.ExtendedIPv4TunnelEgress: _tunnel(_sampled_ip, "tunnel_ipv4_out_"),
    F.ExtendedIPv4TunnelIngress: _tunnel(_sampled_ip, "tunnel_ipv4_in_"),
    F.ExtendedIPv6TunnelEgress: _tunnel(_sampled_ip, "tunnel_ipv6_out_"),
    F.ExtendedIPv6TunnelIngress: _tunnel(_sampled_ip, "tunnel_ipv6_in_"),
    F.ExtendedDecapsulateEgress: _prefixed("decap", lambda r: r.inner_header_offset, "out_"),
    F.ExtendedDecapsulateIngress: _prefixed("decap", lambda r: r.inner_header_offset, "in_"),
    F.ExtendedVniEgress: _prefixed("VNI", lambda r: r.vni, "out_"),
    F.ExtendedVniIngress: _prefixed("VNI", lambda r: r.vni, "in_"),
    F.ExtendedLinuxReason: _linux_reason,
    F.ExtendedTimestamp: _timestamp,
    F.ExtendedSocketIPv4: _socket("socket4"),
    F.ExtendedSocketIPv6: _socket("socket6"),
    F.ExtendedProxySocketIPv4: _socket("proxy_socket4"),
    F.ExtendedProxySocketIPv6: _socket("proxy_socket6"),
    F.AppOperation: _app_operation,
    F.AppParentContext: _app_parent,
    F.AppInitiator: lambda p, r: _text_fields(p, (("actor_initiator", r.actor, 64),)),
    F.AppTarget: lambda p, r: _text_fields(p, (("actor_target", r.actor, 64),)),
    F.ExtendedTcpInfo: _tcp_info,
    F.ExtendedEntities: _entities,
}


# ---------------------------------------------------------------- counter records

def _same(*names: str) -> List[Tuple[str, str]]:
    return [(n, n) for n in names]


def _table(names: List[Tuple[str, str]]) -> Callable:
    return lambda p, r: p.fields(r, names)


def _if_counters(p: Printer, r: C.IfCounters) -> None:
    p.s.if_counters = r
    p.fields(r, [("ifIndex", "ifIndex"), ("ifType", "networkType")] +
             _same(*_CNTR_FIELDS[2:]))


def _lacp(p: Printer, r: C.LagPortStats) -> None:
    p.field("actorSystemID", r.dot3adAggPortActorSystemID.hex())
    p.field("partnerSystemID", r.dot3adAggPortPartnerOperSystemID.hex())
    p.field("attachedAggID", r.dot3adAggPortAttachedAggID)
    state = r.dot3adAggPortState.to_bytes(4, "big")  # four state bytes, in wire order
    for name, byte in zip(("actorAdmin", "actorOper", "partnerAdmin", "partnerOper"), state):
        p.field(name + "PortState", byte)
    p.fields(r, [("dot3adAggPortStats" + n, n if n.startswith("LACP") else n[0].lower() + n[1:])
                 for n in ("LACPDUsRx", "MarkerPDUsRx", "MarkerResponsePDUsRx", "UnknownRx",
                           "IllegalRx", "LACPDUsTx", "MarkerPDUsTx", "MarkerResponsePDUsTx")])


def _sfp(p: Printer, r: C.Sfp) -> None:
    p.field("sfp_module_id", r.module_id)
    p.field("sfp_module_total_lanes", r.module_num_lanes)
    p.field("sfp_module_supply_voltage", r.module_supply_voltage)
    p.field("sfp_module_temperature", r.module_temperature & 0xFFFFFFFF)  # printed %u
    p.field("sfp_module_active_lanes", len(r.lanes))
    # sflowtool's lane names: some keep a literal "%u" from its source (as it prints them)
    names = ("index", "tx_bias_current_uA", "tx_power_uW.%u", "tx_power_min_uW.%u",
             "tx_power_max_uW.%u", "tx_wavelength_nM.%u", "rx_power_uW.%u",
             "rx_power_min_uW.%u", "rx_power_max_uW.%u", "rx_wavelength_nM.%u")
    for number, lane in enumerate(r.lanes):
        values = [getattr(lane, n) for n, _ in type(lane)._layout.fields]
        for name, value in zip(names, values):
            p.field(f"sfp_lane_{name}.{number}", value)


def _processor(p: Printer, r: C.Processor) -> None:
    p.field("5s_cpu", fmt_percentage(r.cpu_5s))
    p.field("1m_cpu", fmt_percentage(r.cpu_1m))
    p.field("5m_cpu", fmt_percentage(r.cpu_5m))
    p.field("total_memory_bytes", r.total_memory)
    p.field("free_memory_bytes", r.free_memory)


def _of_port(p: Printer, r: C.OfPort) -> None:
    p.field("openflow_datapath_id", f"{r.datapath_id:016x}")
    p.field("openflow_port", r.port_no)


def _port_name(p: Printer, r: C.PortName) -> None:
    if r.name:
        p.field("ifName", fmt_string(r.name, 255))


def _host_descr(p: Printer, r: C.HostDescr) -> None:
    if r.hostname:
        p.field("hostname", fmt_string(r.hostname, 64))
    p.field("UUID", fmt_uuid(r.uuid))
    p.field("machine_type", r.machine_type)
    p.field("os_name", r.os_name)
    if r.os_release:
        p.field("os_release", fmt_string(r.os_release, 32))


def _adapters(p: Printer, r: C.HostAdapters) -> None:
    for i, adapter in enumerate(r.adapters):
        p.field(f"adaptor_{i}_ifIndex", adapter.ifIndex)
        p.field(f"adaptor_{i}_MACs", len(adapter.mac_addresses))
        for j, mac in enumerate(adapter.mac_addresses):
            p.field(f"adaptor_{i}_MAC_{j}", mac.hex())


def _host_cpu(p: Printer, r: C.HostCpu, length: int) -> None:
    for attr in ("load_one", "load_five", "load_fifteen"):
        p.field("cpu_" + attr, f"{getattr(r, attr):.3f}")
    p.fields(r, [("proc_run", "cpu_proc_run"), ("proc_total", "cpu_proc_total"),
                 ("cpu_num", "cpu_num"), ("cpu_speed", "cpu_speed"), ("uptime", "cpu_uptime"),
                 ("cpu_user", "cpu_user"), ("cpu_nice", "cpu_nice"),
                 ("cpu_system", "cpu_system"), ("cpu_idle", "cpu_idle"), ("cpu_wio", "cpu_wio"),
                 ("cpu_intr", "cpuintr"), ("cpu_sintr", "cpu_sintr"),
                 ("interrupts", "cpuinterrupts"), ("contexts", "cpu_contexts")])
    if length > 68:  # the three fields added in December 2014
        p.fields(r, _same("cpu_steal", "cpu_guest", "cpu_guest_nice"))


def _disk(p: Printer, r: C.HostDiskIo) -> None:
    p.field("disk_total", r.disk_total)
    p.field("disk_free", r.disk_free)
    p.field("disk_partition_max_used", fmt_percentage(r.part_max_used))
    p.fields(r, [("reads", "disk_reads"), ("bytes_read", "disk_bytes_read"),
                 ("read_time", "disk_read_time"), ("writes", "disk_writes"),
                 ("bytes_written", "disk_bytes_written"), ("write_time", "disk_write_time")])


def _all_fields(prefix: str, renames: Dict[str, str] = None) -> Callable:
    """Every field in layout order, named prefix + (renamed) field name."""
    renames = renames or {}

    def write(p: Printer, r) -> None:
        for name, _ in type(r)._layout.fields:
            p.field(prefix + renames.get(name, name), getattr(r, name))
    return write


def _app_operations(p: Printer, r: C.AppOperations) -> None:
    _text_fields(p, (("application", r.application, 32),))
    p.fields(r, [("success", "status_OK")] + [(name, "errors_" + name.upper())
                                             for name in F.APP_STATUS_FIELDS[1:]])


_NET_IO = _all_fields("nio_")
_COUNTER_WRITERS: Dict[type, Callable] = {
    C.IfCounters: _if_counters,
    C.EthernetCounters: _all_fields(""),
    C.VlanCounters: _all_fields("", {"vlan_id": "in_vlan"}),
    C.LagPortStats: _lacp,
    C.Sfp: _sfp,
    C.Processor: _processor,
    C.OfPort: _of_port,
    C.PortName: _port_name,
    C.HostDescr: _host_descr,
    C.HostAdapters: _adapters,
    C.HostParent: _table([("container_type", "parent_dsClass"),
                          ("container_index", "parent_dsIndex")]),
    C.HostMemory: _all_fields(""),
    C.HostDiskIo: _disk,
    C.HostNetIo: _NET_IO,
    C.Mib2IpGroup: _all_fields(""),
    C.Mib2IcmpGroup: _all_fields(""),
    C.Mib2TcpGroup: _all_fields(""),
    C.Mib2UdpGroup: _all_fields(""),
    C.VirtNode: _all_fields("vnode_"),
    C.VirtCpu: _table([("state", "vcpu_state"), ("cpuTime", "vcpu_cpu_mS"),
                       ("nrVirtCpu", "vcpu_cpuCount")]),
    C.VirtMemory: _all_fields("vmem_"),
    C.VirtDiskIo: _all_fields("vdsk_"),
    C.VirtNetIo: _table([(a, "vnio_" + b) for a, b in (
        ("rx_bytes", "bytes_in"), ("rx_packets", "pkts_in"), ("rx_errs", "errs_in"),
        ("rx_drop", "drops_in"), ("tx_bytes", "bytes_out"), ("tx_packets", "pkts_out"),
        ("tx_errs", "errs_out"), ("tx_drop", "drops_out"))]),
    C.AppResources: _table([("user_time", "user_time"), ("system_time", "system_time"),
                            ("mem_used", "memory_used"), ("mem_max", "memory_max"),
                            ("fd_open", "files_open"), ("fd_max", "files_max"),
                            ("conn_open", "connections_open"),
                            ("conn_max", "connections_max")]),
    C.OvsDpStats: _all_fields("OVS_dp_"),
    C.AppOperations: _app_operations,
    C.AppWorkers: _table([("workers_active", "workers_active"), ("workers_idle", "workers_idle"),
                          ("workers_max", "workers_max"), ("req_delayed", "requests_delayed"),
                          ("req_dropped", "requests_dropped")]),
}
