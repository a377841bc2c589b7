"""The agent's samples in collectors nobody here wrote: pmacct's sfacctd and nfdump's sfcapd.

One run, in namespaces the test makes: "host" (the agent, sampling its eth0 1-in-10, and
the collectors on its loopback) and "peer", joined by a veth.  Known traffic crosses eth0
at the same time: three UDP flows of 60,000 packets (two into the host, one out, different
sizes) and one TCP connection from peer to host carrying about 55,000 full-size segments,
whose ACKs are a fifth flow the other way.  The ground truth is the kernel's: iptables
counters in the receiving namespace, per flow (tests/traffic.py).

Each collector must report every flow's packets and bytes within 4 standard deviations of
the sampling error of what was sent: k ~ Binomial(K, 1/10) samples of a K-packet flow,
scaled by 10, has sd sqrt(9 K) packets (1.2 % at K = 60,000, so the bound is 4.9 %), and
about s sqrt(9 K) bytes for packets of s bytes (s: the flow's mean frame size; the UDP
flows have one size, the TCP segments all but a few).  Bytes are what both collectors
count: frame_length, the Ethernet frame plus the 4-byte FCS.

sfacctd runs with ``sfacctd_renormalize: true``: it weights each sample by
delta(sample_pool) / delta(sequence_number), so a pool that jumped at counter polls made it
over-count the flow that followed; sfcapd scales by the stated rate.  So the veth carries
100,000 packets before the agent starts, and no pool step may exceed 4N.  Where a
collector's socket dropped nothing, its figures must also be exactly what the samples we
decoded ourselves make, weighted its way: then every difference from what was sent is
sampling error.  Both start here and are stopped by their PIDs (tests/collector_tools.py).
"""

from __future__ import annotations

import pytest

from agentproc import agents, config_text, receivers  # noqa: F401 (fixtures)
from collector_tools import Sfacctd, Sfcapd, missing, socket_drops
from netns import veth
from traffic import (FlowCounters, SampleReader, TcpFlow, five_tuple, flow_samples, four_sigma,
                     frame_bytes, link_counters, no_offloads, send_udp, sink, start_udp)

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(bool(missing()), reason="no " + ", ".join(missing()) +
                                 " (apt-get install pmacct nfdump nfdump-sflow)")]

N = 10
HOST, PEER = "10.231.30.1", "10.231.30.2"
UDP_PACKETS = 60_000
TCP_BYTES = 80_000_000       # about 55,000 segments of 1,448 bytes
# name: (from peer?, source port, destination port, payload bytes)
UDP_FLOWS = {"udp-in-64": (True, 7001, 9001, 64), "udp-in-512": (True, 7002, 9002, 512),
             "udp-out-1200": (False, 7003, 9003, 1200)}
TCP_PORTS = (7004, 9004)     # client (peer), server (host)
PRELOAD = 100_000            # packets the veth carries before the agent starts


def renormalized(samples) -> dict:
    """5-tuple -> (packets, bytes) as sfacctd_renormalize weights the agent's samples: by
    delta(sample_pool) / delta(sequence_number) since the data source's previous sample (the
    first one by its sampling rate)."""
    out, previous = {}, {}
    for s in sorted(samples, key=lambda s: s.sequence_number):
        last = previous.get(s.source_id_index)
        weight = (s.sampling_rate if last is None else
                  (s.sample_pool - last.sample_pool) // (s.sequence_number - last.sequence_number))
        previous[s.source_id_index] = s
        add(out, s, weight)
    return out


def scaled(samples) -> dict:
    """5-tuple -> (packets, bytes) as sfcapd counts the samples: N each."""
    out: dict = {}
    for s in samples:
        add(out, s, s.sampling_rate)
    return out


def add(out: dict, sample, weight: int) -> None:
    key = five_tuple(sample)
    packets, nbytes = out.get(key, (0, 0))
    out[key] = (packets + weight, nbytes + weight * sample.flow_records[0].frame_length)


def test_sfacctd_and_sfcapd_count_what_was_sent(netns, agents, receivers, tmp_path):
    host, peer = netns(), netns()
    veth(host, "eth0", peer, "wire", f"{HOST}/24", f"{PEER}/24")
    no_offloads(host, "eth0")
    no_offloads(peer, "wire")
    counters = FlowCounters()
    for name, (inbound, sport, dport, _) in UDP_FLOWS.items():
        src, dst, where = (PEER, HOST, host) if inbound else (HOST, PEER, peer)
        counters.add(name, where, "udp", src, sport, dst, dport)
    counters.add("tcp-data", host, "tcp", PEER, TCP_PORTS[0], HOST, TCP_PORTS[1])
    counters.add("tcp-acks", peer, "tcp", HOST, TCP_PORTS[1], PEER, TCP_PORTS[0])
    sink(host, HOST, 9000, 9001, 9002)
    sink(peer, PEER, 9003)
    # the veth has a past: a pool that started from its lifetime count would jump by it
    assert send_udp(peer, PEER, 7000, HOST, 9000, PRELOAD, 16, 0) == PRELOAD

    ours = receivers(netns=host.name)
    pmacct = Sfacctd(tmp_path, ours.port + 1, host).start()
    nfdump = Sfcapd(tmp_path, ours.port + 2, host).start()
    reader = SampleReader(ours)
    try:
        agent = agents(config_text([("127.0.0.1", ours.port), ("127.0.0.1", pmacct.port),
                                    ("127.0.0.1", nfdump.port)], polling=5,
                                   extra=f"pcap {{ dev = eth0 sampling = {N} }}"),
                       netns=host.name)
        assert agent.wait_for_log("pcap: sampling eth0", 10), agent.stderr()
        reader.start()
        before = link_counters(host, "eth0")
        tcp = TcpFlow(host, HOST, TCP_PORTS[1], peer, PEER, TCP_PORTS[0], TCP_BYTES, 30e6)
        senders = {name: start_udp(*((peer, PEER, sport, HOST, dport) if inbound else
                                     (host, HOST, sport, PEER, dport)), UDP_PACKETS, size, 25_000)
                   for name, (inbound, sport, dport, size) in UDP_FLOWS.items()}
        sent = {name: int(p.communicate(timeout=120)[0].split()[0]) for name, p in senders.items()}
        tcp_sent, tcp_received, retrans = tcp.wait()
        after = link_counters(host, "eth0")
        truth = counters.read()
        pm = pmacct.settle()                     # the agent flushes within a second
        lost = {who: socket_drops(host, c.port)
                for who, c in (("pmacct", pmacct), ("nfdump", nfdump))}
        received = reader.stop()
    finally:
        reader.stop()
        nfdump.stop()                            # sfcapd writes its file as it stops
        pmacct.stop()
    nf = nfdump.flows()
    assert agent.alive(), agent.stderr()

    assert sent == {name: UDP_PACKETS for name in UDP_FLOWS}
    assert tcp_sent == tcp_received == TCP_BYTES
    # what the agent's tap saw on its way out was delivered (nothing dropped behind it)
    assert after["tx_dropped"] == before["tx_dropped"]
    samples = flow_samples(received)
    assert max(s.drops for s in samples) == 0, "the agent lost samples: not the collectors' fault"
    # what sfacctd_renormalize weights a sample by: no jump, from the first sample on, though
    # the veth carried PRELOAD packets before the agent started
    pools = [s.sample_pool for s in sorted(samples, key=lambda s: s.sequence_number)]
    assert pools[0] <= 4 * N
    assert max(b - a for a, b in zip(pools, pools[1:])) <= 4 * N

    keys = {name: ((PEER, HOST) if inbound else (HOST, PEER)) + ("udp", sport, dport)
            for name, (inbound, sport, dport, _) in UDP_FLOWS.items()}
    keys["tcp-data"] = (PEER, HOST, "tcp") + TCP_PORTS
    keys["tcp-acks"] = (HOST, PEER, "tcp") + TCP_PORTS[::-1]
    # what each collector should make of exactly the samples the agent sent (our decode)
    expect = {"pmacct": renormalized(samples), "nfdump": scaled(samples)}

    rows, failures = [], []
    for name, key in keys.items():
        packets, ip_bytes = truth[name]
        nbytes = frame_bytes(packets, ip_bytes)
        bound_p = four_sigma(packets, N)
        bound_b = four_sigma(packets, N, nbytes / packets)
        got = {"pmacct": pm.get(key, (0, 0)), "nfdump": nf.get(key, (0, 0))}
        rows.append(f"{name:<13} {packets:>9,} {nbytes:>12,}"
                    + "".join(f" | {p:>9,} {b:>12,}" for p, b in got.values())
                    + f" | {bound_p:>6,.0f} {bound_b:>10,.0f}")
        for who, (p, b) in got.items():
            if abs(p - packets) > bound_p or abs(b - nbytes) > bound_b:
                failures.append(f"{who} {name}: {p:,} packets, {b:,} bytes; sent {packets:,}, "
                                f"{nbytes:,}")
            if not lost[who] and (p, b) != expect[who].get(key, (0, 0)):
                failures.append(f"{who} {name}: {p:,} packets, {b:,} bytes, where the samples "
                                f"it received make {expect[who].get(key)}")
    table = "\n".join([f"{'flow':<13} {'sent pkts':>9} {'sent bytes':>12} | {'pmacct':>9}"
                       f" {'bytes':>12} | {'nfdump':>9} {'bytes':>12} | 4 sigma: pkts, bytes"]
                      + rows)
    print("\n" + table + f"\ndatagrams the collectors' sockets dropped: {lost}, "
          f"TCP segments retransmitted: {retrans}")
    # the truth is what iptables counted on the wire, retransmissions included: a
    # retransmitted segment (a slow machine) is one more packet to find, not an error
    assert truth["tcp-data"][0] >= 50_000
    assert not failures, "\n".join(failures) + "\n" + table
