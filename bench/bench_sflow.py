#!/usr/bin/env python3
"""Wire-format throughput: how fast samples are encoded and framed, and datagrams decoded.

    python3 bench/bench_sflow.py              # a few seconds per figure
    python3 bench/bench_sflow.py --seconds 1  # quicker
    python3 bench/bench_sflow.py --profile    # and where the time goes (cProfile, top 15)

Runs on one core (sched_setaffinity) and prints figures only; it asserts nothing.

1. flow samples/s: what a sampler does per sampled packet, as hsflowd sends it: an expanded
   flow sample (3) with extended_timestamp (1043) and a 128-byte sampled_header (1), built,
   encoded and added to a DatagramBuilder that fills 1400-byte datagrams.  Goal >= 300,000/s.
2. host counter samples/s: an expanded counters sample (4) for source 2:1 with the ten host
   records hsflowd sends (2000, 2001, 2003-2010), built, encoded and added.  Goal >= 50,000/s.
3. datagrams decoded/s: full datagrams from (1) and (2), and the real captures if present.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import time
import uuid
from ipaddress import IPv4Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hsflowd.sflow import (  # noqa: E402
    CountersSample, DatagramBuilder, ExtendedTimestamp, FlowSample, HostAdapter, HostAdapters,
    HostCpu, HostDescr, HostDiskIo, HostMemory, HostNetIo, Mib2IcmpGroup, Mib2IpGroup,
    Mib2TcpGroup, Mib2UdpGroup, SampledHeader, decode_datagram,
)
from hsflowd.sflow.samples import INTERNAL  # noqa: E402
from pinning import pin_one_core  # noqa: E402

GOALS = {"flow": 300_000, "host": 50_000}
VECTORS = os.environ.get("SFLOW_VECTORS", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "vectors"))


def timed(fn, seconds):
    """Run fn(n) in growing batches until `seconds` have passed; return (items, elapsed)."""
    fn(100)  # warm up
    done, start, batch = 0, time.perf_counter(), 1000
    while True:
        fn(batch)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done, elapsed
        batch = min(batch * 2, 200_000)


# ---------------------------------------------------------------- 1. flow samples

HEADERS = [bytes((i * 7 + j) & 0xFF for j in range(128)) for i in range(64)]


def flow_workload():
    sent = []
    builder = DatagramBuilder(IPv4Address("192.0.2.1"), 100000, sent.append)
    state = {"seq": 0}

    def run(n):
        seq = state["seq"]
        add = builder.add
        headers = HEADERS
        now = 1_795_651_202_705_602_000
        for i in range(seq, seq + n):
            add(FlowSample(
                sequence_number=i + 1, source_id_type=0, source_id_index=3, sampling_rate=400,
                sample_pool=400 * (i + 1), drops=0, input_format=0, input=3, output_format=0,
                output=INTERNAL,
                flow_records=[ExtendedTimestamp(nanoseconds=now + i),
                              SampledHeader(header_protocol=1, frame_length=1518, stripped=4,
                                            header=headers[i & 63])]).encode())
        state["seq"] = seq + n
        del sent[:-50]  # keep a few datagrams for the decoder, not millions
    return run, builder, sent


def flow_encode_only():
    """The same sample, built once: what encode() + add() alone cost."""
    builder = DatagramBuilder(IPv4Address("192.0.2.1"), 100000, lambda d: None)
    samples = [FlowSample(sequence_number=i + 1, source_id_type=0, source_id_index=3,
                          sampling_rate=400, sample_pool=400 * (i + 1), input=3, output=INTERNAL,
                          flow_records=[ExtendedTimestamp(nanoseconds=i),
                                        SampledHeader(frame_length=1518, header=HEADERS[i])])
               for i in range(64)]

    def run(n):
        add = builder.add
        for i in range(n):
            add(samples[i & 63].encode())
    return run


# ---------------------------------------------------------------- 2. host counter samples

def host_records(i):
    # in the order hsflowd puts them on the wire
    return [
        HostAdapters(adapters=[HostAdapter(ifIndex=2, mac_addresses=[b"\x02\xfc\x00\x00\x00\x01"]),
                               HostAdapter(ifIndex=3, mac_addresses=[b"\x02\xfc\x00\x00\x00\x02"])]),
        Mib2UdpGroup(udpInDatagrams=1887734 + i, udpNoPorts=6, udpInErrors=0,
                     udpOutDatagrams=1237318 + i),
        Mib2TcpGroup(tcpRtoAlgorithm=1, tcpRtoMin=200, tcpRtoMax=120000, tcpMaxConn=0xFFFFFFFF,
                     tcpActiveOpens=44 + i, tcpInSegs=2234 + i, tcpOutSegs=1436 + i),
        Mib2IcmpGroup(icmpInMsgs=60 + i, icmpInEchoReps=52, icmpOutDestUnreachs=58),
        Mib2IpGroup(ipForwarding=2, ipDefaultTTL=64, ipInReceives=38894610 + i,
                    ipInDelivers=38894610 + i, ipOutRequests=1238811 + i),
        HostDiskIo(disk_total=270553174016, disk_free=83185754112, part_max_used=6925,
                   reads=113726 + i, bytes_read=3458532352, read_time=53404, writes=36800,
                   bytes_written=3001982976 + i, write_time=13974),
        HostMemory(mem_total=25276502016, mem_free=24864694272 - i, mem_buffers=2097152,
                   mem_cached=300904448, page_in=3377473, page_out=2931624),
        HostCpu(load_one=0.07, load_five=0.29, load_fifteen=0.25, proc_total=86, cpu_num=2,
                cpu_speed=2596, uptime=2565 + i, cpu_user=204480 + i, cpu_system=205600,
                cpu_idle=4597480 + i, cpu_wio=6980, cpu_sintr=75670, interrupts=2526062 + i,
                contexts=8560809 + i, cpu_steal=1140),
        HostNetIo(bytes_in=123456789 + i, pkts_in=1000 + i, bytes_out=987654321 + i,
                  pkts_out=2000 + i),
        HostDescr(hostname="vm", uuid=uuid.UUID("6571e19b-6571-519b-a571-e19b6571e19b"),
                  machine_type=3, os_name=2, os_release="6.18.44-fc-v669"),
    ]


def host_workload():
    sent = []
    builder = DatagramBuilder(IPv4Address("192.0.2.1"), 100000, sent.append)
    state = {"seq": 0}

    def run(n):
        seq = state["seq"]
        add = builder.add
        for i in range(seq, seq + n):
            add(CountersSample(sequence_number=i + 1, source_id_type=2, source_id_index=1,
                               counters=host_records(i)).encode())
        state["seq"] = seq + n
        del sent[:-50]
    return run, builder, sent


def host_encode_only():
    builder = DatagramBuilder(IPv4Address("192.0.2.1"), 100000, lambda d: None)
    samples = [CountersSample(sequence_number=i + 1, source_id_type=2, source_id_index=1,
                              counters=host_records(i)) for i in range(16)]

    def run(n):
        add = builder.add
        for i in range(n):
            add(samples[i & 15].encode())
    return run


# ---------------------------------------------------------------- 3. decoding

def decode_workload(datagrams):
    def run(n):
        k = len(datagrams)
        for i in range(n):
            decode_datagram(datagrams[i % k])
    return run


def real_datagrams():
    try:
        from hsflowd.decode.capture import read_udp
    except ImportError:
        return []
    out = []
    for name in ("hsflowd-2.1.25.pcap", "ovs-3.1.0.pcap"):
        path = os.path.join(VECTORS, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                out += [p.payload for p in read_udp(f)]
    return out


# ---------------------------------------------------------------- report

def profile(label, fn, n):
    prof = cProfile.Profile()
    prof.enable()
    fn(n)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
    stats.print_stats(15)
    print(f"\n--- cProfile: {label}, {n:,} iterations, sorted by own time ---")
    text = out.getvalue()
    print(text[text.find("   ncalls"):].rstrip())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    ap.add_argument("--profile", action="store_true", help="also profile each workload")
    args = ap.parse_args(argv)

    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on "
          f"{platform.machine()}, {pin_one_core()}, {args.seconds:g} s per figure")

    def line(label, items, elapsed, unit, goal=None, extra=""):
        rate = items / elapsed
        tail = ""
        if goal:
            tail = f"  goal {goal:,}/s: {'met' if rate >= goal else 'NOT met'} ({rate / goal:.0%})"
        print(f"  {label:<44} {rate:>12,.0f} {unit}/s  ({1e6 / rate:6.2f} us each){tail}{extra}")
        return rate

    print("encoding (build records + encode + DatagramBuilder.add, 1400-byte datagrams):")
    run, builder, flow_sent = flow_workload()
    n, t = timed(run, args.seconds)
    last = decode_datagram(flow_sent[-1])
    sample_size = (len(flow_sent[-1]) - 28) // len(last.samples)
    line("flow samples (1043 + 128-byte header)", n, t, "samples", GOALS["flow"],
         f"  -> {builder.sequence_number / t:,.0f} datagrams/s, {sample_size} B/sample, "
         f"{len(last.samples)} per datagram")
    n, t = timed(flow_encode_only(), args.seconds / 2)
    line("  of which encode() + add() only", n, t, "samples")

    run, builder, host_sent = host_workload()
    n, t = timed(run, args.seconds)
    line("host counter samples (10 records)", n, t, "samples", GOALS["host"],
         f"  -> {builder.sequence_number / t:,.0f} datagrams/s")
    n, t = timed(host_encode_only(), args.seconds / 2)
    line("  of which encode() + add() only", n, t, "samples")

    print("decoding (decode_datagram):")
    for label, datagrams in [("flow datagrams (~1400 B)", flow_sent[-20:]),
                             ("host counter datagrams", host_sent[-20:]),
                             ("real captures (hsflowd + OVS)", real_datagrams())]:
        if not datagrams:
            print(f"  {label:<44} (no datagrams)")
            continue
        samples = sum(len(decode_datagram(d).samples) for d in datagrams) / len(datagrams)
        size = sum(len(d) for d in datagrams) / len(datagrams)
        n, t = timed(decode_workload(datagrams), args.seconds / 2)
        line(label, n, t, "datagrams",
             extra=f"  = {n * samples / t:,.0f} samples/s, {n * size / t / 1e6:.1f} MB/s")

    if args.profile:
        profile("flow samples", flow_workload()[0], 100_000)
        profile("host counter samples", host_workload()[0], 20_000)
        profile("decoding flow datagrams", decode_workload(flow_sent[-20:]), 20_000)


if __name__ == "__main__":
    main()
