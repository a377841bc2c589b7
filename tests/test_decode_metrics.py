"""sFlow-RT metrics from known counter sequences, built with the project's own encoder, and
--summary's cluster statistics; the numbers are worked out by hand in each test."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import ip_address

import pytest

from hsflowd.decode.metrics import MetricsTable, quantile, summary
from hsflowd.sflow import (
    CountersSample, Datagram, HostCpu, HostDescr, HostDiskIo, HostMemory, HostNetIo, IfCounters,
    PortName, UNKNOWN32,
)

GIB = 1 << 30


def host(seq, uptime_ms, *, user, idle, system=0, load=1.5, cpus=4, agent="10.0.0.1",
         mem_free=2 * GIB, bytes_in=0, reads=0):
    records = [
        HostDescr(hostname=f"h{agent[-1]}", machine_type=3, os_name=2, os_release="6.1"),
        HostCpu(load_one=load, load_five=1.0, load_fifteen=0.5, proc_run=2, proc_total=100,
                cpu_num=cpus, cpu_speed=2000, uptime=1000, cpu_user=user, cpu_system=system,
                cpu_idle=idle, interrupts=1000 * seq, contexts=5000 * seq),
        HostMemory(mem_total=8 * GIB, mem_free=mem_free, mem_buffers=GIB // 2,
                   mem_cached=GIB // 2, swap_total=GIB, swap_free=GIB),
        HostDiskIo(disk_total=100 * GIB, disk_free=25 * GIB, part_max_used=8050, reads=reads,
                   bytes_read=4096 * reads),
        HostNetIo(bytes_in=bytes_in, pkts_in=UNKNOWN32),
    ]
    return Datagram(agent_address=ip_address(agent), sub_agent_id=1, sequence_number=seq,
                    uptime=uptime_ms,
                    samples=[CountersSample(sequence_number=seq, source_id_type=2,
                                            source_id_index=1, counters=records)])


def interface(seq, uptime_ms, in_octets, out_octets, *, discards=0, errors=0, speed=10**9,
              ucast=0, agent="10.0.0.1"):
    ifc = IfCounters(ifIndex=3, ifSpeed=speed, ifDirection=1, ifStatus=3, ifInOctets=in_octets,
                     ifInUcastPkts=ucast, ifInMulticastPkts=0, ifInBroadcastPkts=0,
                     ifInDiscards=discards, ifInErrors=errors, ifInUnknownProtos=UNKNOWN32,
                     ifOutOctets=out_octets, ifOutUcastPkts=0, ifOutMulticastPkts=UNKNOWN32)
    return Datagram(agent_address=ip_address(agent), sub_agent_id=1, sequence_number=seq,
                    uptime=uptime_ms,
                    samples=[CountersSample(sequence_number=seq, source_id_type=0,
                                            source_id_index=3, counters=[ifc, PortName(name="eth0")])])


def rows_after(*datagrams, now=100.0):
    table = MetricsTable()
    for i, d in enumerate(datagrams):
        table.add(Datagram.decode(d.encode()), arrival=float(i))  # through the wire and back
    return {r["datasource"]: r for r in table.rows(now=min(now, 50.0))}


def test_host_metrics_from_two_samples():
    first = host(1, 10_000, user=1000, idle=9000, bytes_in=0, reads=0)
    # 20 s later: 1600 ms user + 400 ms system + 6000 ms idle = 8000 ms of CPU time
    second = host(2, 30_000, user=2600, idle=15000, system=400, bytes_in=2_000_000, reads=500)
    m = rows_after(first, second)["2.1"]
    assert m["host_name"] == "h1" and m["os_name"] == "linux" and m["machine_type"] == "x86_64"
    assert m["load_one"] == 1.5 and m["load_one_per_cpu"] == 0.375 and m["cpu_num"] == 4
    assert m["cpu_user"] == pytest.approx(20.0)          # 1600 / 8000
    assert m["cpu_system"] == pytest.approx(5.0)         # 400 / 8000
    assert m["cpu_idle"] == pytest.approx(75.0)          # 6000 / 8000
    assert m["cpu_utilization"] == pytest.approx(25.0)
    assert m["interrupts"] == pytest.approx(50.0)        # 1000 more in 20 s
    # used = 8 - 2 - 0.5 - 0.5 = 5 GiB of 8
    assert m["mem_used"] == 5 * GIB and m["mem_utilization"] == pytest.approx(62.5)
    assert m["disk_utilization"] == pytest.approx(75.0) and m["part_max_used"] == 80.5
    assert m["disk_reads"] == pytest.approx(25.0) and m["disk_bytes_read"] == pytest.approx(102400.0)
    assert m["bytes_in"] == pytest.approx(100_000.0)     # 2 MB in 20 s
    assert "pkts_in" not in m                            # all ones: unknown, no metric


def test_interface_utilization_discards_errors():
    first = interface(1, 0, in_octets=10**9, out_octets=0)
    # 10 s: 125,000,000 bytes in = 100 Mbit/s on a 1 Gbit/s link = 10 %
    second = interface(2, 10_000, in_octets=10**9 + 125_000_000, out_octets=12_500_000,
                       discards=30, errors=5, ucast=1000)
    m = rows_after(first, second)["3"]
    assert m["ifname"] == "eth0" and m["ifindex"] == 3 and m["ifspeed"] == 10**9
    assert m["ifadminstatus"] == "up" and m["ifoperstatus"] == "up"
    assert m["ifdirection"] == "full-duplex" and m["iftype"] == "ethernetCsmacd"
    assert m["ifinoctets"] == pytest.approx(12_500_000.0)
    assert m["ifinutilization"] == pytest.approx(10.0)
    assert m["ifoututilization"] == pytest.approx(1.0)
    assert m["ifindiscards"] == pytest.approx(3.0) and m["ifinerrors"] == pytest.approx(0.5)
    assert m["ifinpkts"] == pytest.approx(100.0)
    assert "ifinunknownprotos" not in m and "ifoutpkts" not in m  # a counter was unknown


def test_counter_wrap_and_agent_restart():
    # a 32-bit counter wraps: from 2^32 - 100 to 100 is 200 discards in 10 s
    before = interface(1, 0, 0, 0, discards=2**32 - 100)
    after = interface(2, 10_000, 0, 0, discards=100)
    assert rows_after(before, after)["3"]["ifindiscards"] == pytest.approx(20.0)
    # the sequence number went back: the agent restarted, no rate from the old counters
    restarted = interface(1, 5_000, 0, 0, discards=5)
    assert "ifindiscards" not in rows_after(before, after, restarted)["3"]


def test_summary_across_agents():
    datagrams = []
    for n, load in enumerate([1.0, 2.0, 3.0, 4.0, 10.0]):
        datagrams.append(host(1, 0, user=0, idle=0, load=load, agent=f"10.0.0.{n + 1}"))
    table = MetricsTable()
    for d in datagrams:
        table.add(d, arrival=0.0)
    rows = table.rows(now=5.0)
    assert len(rows) == 5
    stats = {s["metric"]: s for s in summary(rows, 5.0)}
    load = stats["load_one"]
    assert (load["min"], load["q1"], load["med"], load["q3"], load["max"]) == (1, 2, 3, 4, 10)
    assert load["sum"] == 20 and load["count"] == 5
    assert "host_name" not in stats  # strings have no statistics
    assert quantile([1.0, 2.0], 0.5) == 1.5 and quantile([7.0], 0.25) == 7.0


def test_sources_not_heard_from_drop_out():
    table = MetricsTable(timeout=30)
    table.add(host(1, 0, user=0, idle=0), arrival=0.0)
    assert len(table.rows(now=20.0)) == 1 and table.rows(now=31.0) == []


def test_metrics_command_on_a_capture(tmp_path):
    from test_decode_cmd import pcap_of
    datagrams = [interface(i + 1, 1000 * i, 125_000 * i, 0).encode() for i in range(25)]
    datagrams.append(b"junk")
    path = tmp_path / "c.pcap"
    pcap_of(datagrams, path)   # one datagram a second
    out = subprocess.run([sys.executable, "-m", "hsflowd", "decode", "--summary", "--interval",
                          "10", "--pcap", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "bad datagram (4 bytes)" in out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    rows = [r for r in lines if "agent" in r]
    stats = [r for r in lines if "metric" in r]
    assert [r["time"] for r in rows] == [1700000010, 1700000020, 1700000030]
    assert all(r["ifinutilization"] == pytest.approx(0.1) for r in rows)  # 1 Mbit/s of 1 Gbit/s
    assert any(s["metric"] == "ifinoctets" and s["sum"] == pytest.approx(125_000) for s in stats)


def test_summary_needs_metrics():
    out = subprocess.run([sys.executable, "-m", "hsflowd", "decode", "-l", "--summary"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
