#!/usr/bin/env python3
"""`hsflowd decode` against a real sflowtool, line for line: a developer's check.

    python3 tools/compare_sflowtool.py [--sflowtool PATH]      (or $SFLOWTOOL, or PATH)

sflowtool has no Debian package, so the test suite cannot count on one: it compares the
decoder with sflowtool's own output of the captures in tests/vectors, kept in the tree.
This script runs what needs a live sflowtool (build it from github.com/sflow/sflowtool:
./boot.sh && ./configure && make) on datagrams made here:

  headers   sampled headers of every kind the decoder reads (802.1Q and QinQ, IPv4
            fragments, IPv6, ICMP, VXLAN, LLC/SNAP, cut short ...): -g and -l identical
  app       the application structures (2202-2206), sockets (2100/2101), rtmetric,
            rtflow and extended_tcp_info: sflowtool reads every field under its name with
            no length error, and -g and -l are identical

Exit status: 0 all match, 1 a difference (shown as a diff), 2 no sflowtool.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from ipaddress import ip_address
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import struct  # noqa: E402

from hsflowd.sflow import (AppContext, AppInitiator, AppOperation, AppOperations,  # noqa: E402
                           AppParentContext, AppResources, AppTarget, AppWorkers,
                           CountersSample, Datagram, ExtendedSocketIPv4, ExtendedSocketIPv6,
                           ExtendedTcpInfo, FlowSample, HostParent, RtFlow, RtMetric,
                           SampledHeader, TypedField)
from test_decode_cmd import pcap_of  # noqa: E402
from test_decode_packet import eth, icmp, ipv4, ipv6, tcp, udp  # noqa: E402


# ---------------------------------------------------------------- headers

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


def header_datagrams() -> list:
    samples = [FlowSample(sequence_number=i + 1, source_id_type=0, source_id_index=3,
                          sampling_rate=10, sample_pool=10 * (i + 1), input=3, output=0x3FFFFFFF,
                          flow_records=[SampledHeader(header_protocol=proto,
                                                      frame_length=len(h) + 4, header=h)])
               for i, (proto, h) in enumerate(_headers())]
    return [Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=1,
                     sequence_number=i + 1, uptime=1000 * i, samples=[s]).encode()
            for i, s in enumerate(samples)]


# ---------------------------------------------------------------- application structures

def _samples():
    yield RtMetric(datasource="web1", metrics=[
        TypedField("m1", 1, 777), TypedField("m2", 0, "helloworld"), TypedField("m3", 6, 1.25),
        TypedField("m4", 5, 0.5), TypedField("m5", 2, 2 ** 40), TypedField("m6", 3, 5),
        TypedField("m7", 4, 6)])
    yield RtFlow(datasource="web1", sampling_rate=10, fields=[
        TypedField("f1", 4, 777), TypedField("f2", 1, bytes.fromhex("020304050607")),
        TypedField("f3", 2, ip_address("10.0.0.1")), TypedField("f4", 3, ip_address("::1")),
        TypedField("f5", 0, "x"), TypedField("f6", 5, 7), TypedField("f7", 6, 1.5),
        TypedField("f8", 7, 2.5)])
    yield FlowSample(sequence_number=1, source_id_type=3, source_id_index=150000, sampling_rate=10,
                     sample_pool=10, input=0x3FFFFFFF, flow_records=[
        ExtendedSocketIPv6(protocol=6, local_ip=ip_address("::1"), remote_ip=ip_address("::2"),
                           local_port=1, remote_port=2),
        ExtendedSocketIPv4(protocol=6, local_ip=ip_address("10.0.0.1"),
                           remote_ip=ip_address("10.0.0.2"), local_port=80, remote_port=5000),
        AppTarget(actor="tgt"), AppInitiator(actor="init"),
        AppParentContext(context=AppContext(application="papp", operation="pop", attributes="pat")),
        AppOperation(context=AppContext(application="app", operation="op", attributes="a=b"),
                     status_descr="fine", req_bytes=10, resp_bytes=20, uS=30, status=8)])
    yield CountersSample(sequence_number=1, source_id_type=3, source_id_index=150000, counters=[
        HostParent(container_type=2, container_index=1),
        AppWorkers(workers_active=1, workers_idle=2, workers_max=3, req_delayed=4, req_dropped=5),
        AppResources(user_time=1, system_time=2, mem_used=3, mem_max=4, fd_open=5, fd_max=6,
                     conn_open=7, conn_max=8),
        AppOperations(application="app", success=1, other=2, timeout=3, internal_error=4,
                      bad_request=5, forbidden=6, too_large=7, not_implemented=8, not_found=9,
                      unavailable=10, unauthorized=11)])
    yield FlowSample(sequence_number=2, source_id_type=0, source_id_index=3, sampling_rate=1,
                     sample_pool=1, input=3, output=0x3FFFFFFF, flow_records=[
        SampledHeader(frame_length=64, header=bytes(14)),
        ExtendedTcpInfo(dirn=1, snd_mss=2, rcv_mss=3, unacked=4, lost=5, retrans=6, pmtu=7, rtt=8,
                        rttvar=9, snd_cwnd=10, reordering=11, min_rtt=12)])


EXPECTED = """
rtmetric_datasource_name web1
rtmetric_counter32_m1 777
rtmetric_string_m2 helloworld
rtmetric_gaugeDouble_m3 1.250
rtmetric_gaugeFloat_m4 0.500
rtmetric_counter64_m5 1099511627776
rtmetric_gauge32_m6 5
rtmetric_gauge64_m7 6
rtflow_datasource_name web1
rtflow_sampling_rate 10
rtflow_sample_pool 0
rtflow_int32_f1 777
rtflow_mac_f2 020304050607
rtflow_ip_f3 10.0.0.1
rtflow_ip6_f4 0000:0000:0000:0000:0000:0000:0000:0001
rtflow_string_f5 x
rtflow_int64_f6 7
rtflow_float_f7 1.500
rtflow_double_f8 2.500
socket6_local_ip 0000:0000:0000:0000:0000:0000:0000:0001
socket6_remote_port 2
socket4_local_ip 10.0.0.1
socket4_remote_ip 10.0.0.2
socket4_local_port 80
socket4_remote_port 5000
actor_target tgt
actor_initiator init
server_context_application papp
server_context_operation pop
server_context_attributes pat
application app
operation op
attributes a=b
status_descr fine
request_bytes 10
response_bytes 20
duration_uS 30
status NOT_FOUND
parent_dsClass 2
parent_dsIndex 1
workers_active 1
requests_dropped 5
memory_max 4
connections_max 8
status_OK 1
errors_UNAUTHORIZED 11
tcpinfo_direction received
tcpinfo_send_mss 2
tcpinfo_retrans_pkts 6
tcpinfo_rtt_uS 8
tcpinfo_rtt_uS_min 12
"""


def app_datagrams() -> list:
    return [Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=1,
                     sequence_number=i + 1, uptime=5, samples=[s]).encode()
            for i, s in enumerate(_samples())]


# ---------------------------------------------------------------- comparing

ENV = {**os.environ, "TZ": "UTC"}


def run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)


def same_lines(sflowtool: str, pcap: Path, what: str) -> bool:
    ok = True
    for form in ("-g", "-l"):
        want = run([sflowtool, "-r", str(pcap), form]).stdout.splitlines()
        got = run([sys.executable, "-m", "hsflowd", "decode", form, "--pcap", str(pcap)])
        if got.returncode != 0 or got.stderr:
            print(f"{what} {form}: hsflowd decode failed ({got.returncode}): {got.stderr}")
            ok = False
            continue
        diff = list(difflib.unified_diff(want, got.stdout.splitlines(), "sflowtool",
                                         "hsflowd decode", lineterm=""))
        print(f"{what} {form}: " + ("identical" if not diff else f"{len(diff)} diff lines"))
        if diff:
            print("\n".join(diff))
            ok = False
    return ok


def reads_every_field(sflowtool: str, pcap: Path) -> bool:
    out = run([sflowtool, "-r", str(pcap)])
    problems = []
    if "length error" in out.stderr:
        problems.append("sflowtool: length error: " + out.stderr.strip())
    if "unknown_type" in out.stdout:
        problems.append("sflowtool: unknown_type in its output")
    lines = set(out.stdout.splitlines())
    problems += [f"missing: {line}" for line in EXPECTED.strip().splitlines() if line not in lines]
    print("app fields: " + ("every field read" if not problems else "\n  ".join(problems)))
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sflowtool", default=os.environ.get("SFLOWTOOL")
                        or shutil.which("sflowtool"))
    args = parser.parse_args()
    if not args.sflowtool:
        print("no sflowtool: put it on PATH, set $SFLOWTOOL or give --sflowtool", file=sys.stderr)
        return 2
    usage = run([args.sflowtool, "-h"])
    print(next((line for line in (usage.stdout + usage.stderr).splitlines()
                if " version: " in line), args.sflowtool))
    with tempfile.TemporaryDirectory() as tmp:
        headers, app = Path(tmp) / "headers.pcap", Path(tmp) / "app.pcap"
        pcap_of(header_datagrams(), headers)
        pcap_of(app_datagrams(), app)
        ok = same_lines(args.sflowtool, headers, "headers")
        ok &= reads_every_field(args.sflowtool, app)
        ok &= same_lines(args.sflowtool, app, "app")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
