"""The agent's own datagrams, as a real process sends them, read by Wireshark's dissector.

The agent samples a veth in a test namespace (1-in-1, polling every second) while 300 UDP
packets cross it; every datagram it sends is kept as it arrived, written to a pcap and read
back with ``tshark -T json``.  For each datagram, the samples tshark dissects are compared
with the agent's own decoder (hsflowd.sflow.decode_datagram), field by field: the interface
counter samples' ifIndex and octet and packet counters, the flow samples' sequence number,
pool, interfaces and sampled header (its bytes, and the Ethernet, IP and UDP fields tshark
reads from them, against the packets sent).

Wireshark 4.0 knows the header, counter records 1 and 2 and the flow sample with
sampled_header, and cannot skip an unknown counter record's body.  The agent puts what it
knows first in every sample (port_name, extended_timestamp last), so no datagram without the
host sample (2:1, every record of which tshark does not know) may come out malformed.  A
host sample is read as garbage inside, but tshark finds the next sample by the host
sample's length, so the interface counter sample that follows it in the same datagram is
compared too.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from agentproc import agents, config_text, receivers  # noqa: F401 (fixtures)
from netns import veth
from test_sflow_tshark import TSHARK, Tree, get, leaves, write_pcap
from test_sflow_tshark import parse as parse_tshark
from traffic import SampleReader, send_udp, sink

pytestmark = [pytest.mark.netns, pytest.mark.skipif(TSHARK is None, reason="tshark is not on PATH")]

HOST, PEER = "10.231.32.1", "10.231.32.2"
PACKETS = 300
PAYLOAD = 100
INTERNAL = 0x3FFFFFFF


def source(sample):
    return sample.source_id_type, sample.source_id_index


def test_tshark_reads_the_agents_datagrams(netns, agents, receivers, tmp_path):
    host, peer = netns(), netns()
    veth(host, "eth0", peer, "wire", f"{HOST}/24", f"{PEER}/24")
    sink(host, HOST, 9000)
    ours = receivers(netns=host.name)
    agent = agents(config_text([("127.0.0.1", ours.port)], polling=1,
                               extra="pcap { dev = eth0 sampling = 1 }"), netns=host.name)
    assert agent.wait_for_log("pcap: sampling eth0", 10), agent.stderr()
    reader = SampleReader(ours)
    reader.start()
    try:
        time.sleep(1.2)
        assert send_udp(peer, PEER, 7000, HOST, 9000, PACKETS, PAYLOAD, 1_000) == PACKETS
        time.sleep(2.5)
    finally:
        received = reader.stop()
    eth0 = host.ifindex("eth0")
    datagrams = [r.data for r in received]
    decoded = [r.datagram for r in received]
    path = tmp_path / "agent.pcap"
    write_pcap(path, datagrams)
    layers, raw = run_tshark_all(path)
    assert len(layers) == len(datagrams)

    counters = flows = 0
    for i, (ours_dg, theirs) in enumerate(zip(decoded, layers)):
        header, samples = parse_tshark(theirs)
        assert header["sflow_245.sequence_number"] == str(ours_dg.sequence_number)
        assert header["sflow_245.numsamples"] == str(len(ours_dg.samples))
        has_host = any(source(s) == (2, 1) for s in ours_dg.samples)
        if not has_host:
            assert "_ws.malformed" not in raw[i], f"datagram {i} is malformed for tshark"
        for ours_s, (fields, records) in zip(ours_dg.samples, samples):
            if source(ours_s) == (2, 1):
                continue                         # no host record is known to tshark
            if hasattr(ours_s, "counters"):
                counters += check_counters(ours_s, fields, records, eth0)
            else:
                flows += check_flow(ours_s, fields, records, eth0)
    assert counters >= 2, "no interface counter sample to compare"
    assert flows == PACKETS                      # 1-in-1: every packet the test sent


def run_tshark_all(path):
    """Per datagram: tshark's sflow layer, and every key of its whole dissection (to find
    tshark's "malformed" marker)."""
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "json", "-d", "udp.port==6343,sflow"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    packets = json.loads(out.stdout, object_pairs_hook=Tree)
    layers = [get(get(p, "_source"), "layers") for p in packets]
    return ([get(x, "sflow") for x in layers],
            [{k for k, _ in leaves(x)} | {k for k, _ in x} for x in layers])


def check_counters(ours, fields, records, eth0) -> int:
    assert fields["sflow_245.sampletype"] == "4"
    assert fields["sflow.counters_sample.source_id_index"] == str(ours.source_id_index) == str(eth0)
    assert fields["sflow.counters_sample.sequence_number"] == str(ours.sequence_number)
    by_tag = {r.tag: r for r in ours.counters}
    formats = [r["sflow_245.counters_record_format"] for r in records]
    assert formats[:2] == ["1", "2"], formats
    generic, theirs = by_tag[1], records[0]
    assert theirs["sflow_245.ifindex"] == str(generic.ifIndex) == str(eth0)
    for field, name in (("ifInOctets", "ifinoct"), ("ifOutOctets", "ifoutoct"),
                        ("ifInUcastPkts", "ifinpkt"), ("ifOutUcastPkts", "ifoutpkt"),
                        ("ifSpeed", "ifspeed"), ("ifInMulticastPkts", "ifinmcast")):
        assert theirs["sflow_245." + name] == str(getattr(generic, field)), field
    assert records[1]["sflow_245.dot3StatsFCSErrors"] == str(by_tag[2].dot3StatsFCSErrors)
    return 1


def check_flow(ours, fields, records, eth0) -> int:
    assert fields["sflow_245.sampletype"] == "3"
    for name, value in (("sequence_number", ours.sequence_number),
                        ("source_id_index", ours.source_id_index),
                        ("sampling_rate", ours.sampling_rate), ("sample_pool", ours.sample_pool),
                        ("dropped_packets", ours.drops), ("input_interface_value", ours.input),
                        ("output_interface_value", ours.output)):
        assert fields["sflow.flow_sample." + name] == str(value), name
    assert ours.source_id_index == eth0
    hdr = records[0]
    header = ours.flow_records[0]
    assert hdr["sflow_245.flow_record_format"] == "1"
    assert hdr["sflow_245.header.frame_length"] == str(header.frame_length)
    assert hdr["sflow_245.header.payload_stripped"] == str(header.stripped)
    shown = bytes.fromhex(hdr["sflow_245.header"].replace(":", ""))
    assert shown[:len(header.header)] == header.header
    # and what tshark reads inside it, for the packets the test sent
    if hdr.get("udp.dstport") == "9000":
        assert (hdr["ip.src"], hdr["ip.dst"], hdr["udp.srcport"]) == (PEER, HOST, "7000")
        assert header.frame_length == 14 + 20 + 8 + PAYLOAD + 4
        assert (ours.input, ours.output) == (eth0, INTERNAL)
        return 1
    return 0
