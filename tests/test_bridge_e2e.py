"""``pcap { dev = <bridge> }`` as docker0's users expect: the traffic between its ports too.

A Linux bridge hands its own device only the frames for the host, unless the device is
promiscuous: then every frame it forwards from one port to another is passed up once as
well (and counted in the bridge's rx counters).  So a bridge is tapped in promiscuous mode
unless its rule says ``promisc = off``.  Here "host" holds a bridge named docker0 and two
container-like namespaces hang off it by veths; traffic goes both ways between the
containers, from a container to the host and from the host to a container, 20,000 UDP
packets each, sampled 1-in-10 with no promisc setting.  Checked:

- each flow's samples x N within 4 standard deviations of the packets sent
  (sd = sqrt(K (N - 1)), tests/traffic.py);
- the ports, by hsflowd's bridge model: a container's port is the host side of its veth,
  the host itself is "internal" (0x3FFFFFFF);
- the pool against the bridge's own counters, which count what the tap sees;
- the bridge is promiscuous while the agent runs and not after; with ``promisc = off`` the
  traffic between containers is not seen, the host's still is.
"""

from __future__ import annotations

import json
import time

import pytest

from agentproc import agents, config_text, receivers  # noqa: F401 (fixtures)
from netns import veth
from traffic import (SampleReader, five_tuple, flow_samples, four_sigma, link_counters,
                     send_udp, sink)

pytestmark = pytest.mark.netns

N = 10
INTERNAL = 0x3FFFFFFF
BRIDGE, C1, C2 = "172.31.7.1", "172.31.7.2", "172.31.7.3"
PACKETS = 20_000


def docker_like(netns):
    """host with docker0 (BRIDGE) and two containers c1, c2 on ports veth1, veth2."""
    host, c1, c2 = netns(), netns(), netns()
    host.run("ip link add docker0 type bridge")
    host.run(f"ip addr add {BRIDGE}/24 dev docker0")
    host.run("ip link set docker0 up")
    for ns, port, addr in ((c1, "veth1", C1), (c2, "veth2", C2)):
        veth(host, port, ns, "eth0", None, f"{addr}/24")
        host.run(f"ip link set {port} master docker0")
    sink(host, BRIDGE, 9000)
    sink(c1, C1, 9000)
    sink(c2, C2, 9000)
    return host, c1, c2


def promiscuity(ns, ifname: str) -> int:
    return json.loads(ns.run(["ip", "-j", "-d", "link", "show", ifname]).stdout)[0]["promiscuity"]


def run_agent(agents, receivers, host, rule: str):
    ours = receivers(netns=host.name)
    agent = agents(config_text([("127.0.0.1", ours.port)], polling=20, extra=rule),
                   netns=host.name)
    assert agent.wait_for_log("pcap: sampling docker0", 10), agent.stderr()
    reader = SampleReader(ours)
    reader.start()
    return agent, reader


def by_flow(samples) -> dict:
    out: dict = {}
    for s in samples:
        out.setdefault(five_tuple(s), []).append(s)
    return out


def test_bridge_samples_what_it_forwards_between_ports(netns, agents, receivers):
    host, c1, c2 = docker_like(netns)
    agent, reader = run_agent(agents, receivers, host, f"pcap {{ dev = docker0 sampling = {N} }}")
    try:
        assert promiscuity(host, "docker0") == 1
        before = link_counters(host, "docker0")
        flows = {"c1 -> c2": (c1, C1, 7001, C2), "c2 -> c1": (c2, C2, 7002, C1),
                 "c1 -> host": (c1, C1, 7003, BRIDGE), "host -> c2": (host, BRIDGE, 7004, C2)}
        for ns, src, sport, dst in flows.values():
            assert send_udp(ns, src, sport, dst, 9000, PACKETS, 64, 40_000) == PACKETS
        time.sleep(2.5)                          # a tick, and the samples' datagrams
        after = link_counters(host, "docker0")
    finally:
        received = reader.stop()
        assert agent.stop() == 0
    assert promiscuity(host, "docker0") == 0     # the socket's membership went with it

    docker0, veth1, veth2 = (host.ifindex(n) for n in ("docker0", "veth1", "veth2"))
    samples = flow_samples(received)
    assert {s.source_id_index for s in samples} == {docker0}
    seen = by_flow(samples)
    ports = {"c1 -> c2": (veth1, veth2), "c2 -> c1": (veth2, veth1),
             "c1 -> host": (veth1, INTERNAL), "host -> c2": (INTERNAL, veth2)}
    for name, (_, src, sport, dst) in flows.items():
        ours = seen.get((src, dst, "udp", sport, 9000), [])
        bound = four_sigma(PACKETS, N)
        assert abs(len(ours) * N - PACKETS) <= bound, (f"{name}: {len(ours)} samples of "
                                                       f"{PACKETS} packets, expected "
                                                       f"{PACKETS // N} +- {bound / N:.0f}")
        assert {(s.input_format, s.input, s.output_format, s.output) for s in ours} == \
            {(0, ports[name][0], 0, ports[name][1])}, name
        # 14 Ethernet + 20 IP + 8 UDP + 64, and the FCS
        assert {s.flow_records[0].frame_length for s in ours} == {14 + 20 + 8 + 64 + 4}
    # the bridge counts what its tap sees (the forwarded frames as received, in promiscuous
    # mode): the pool follows it
    carried = sum(after[k] - before[k] for k in ("rx_packets", "tx_packets"))
    assert carried >= 4 * PACKETS
    pool = max(s.sample_pool for s in samples)
    assert abs(pool - carried) <= 0.05 * carried, (pool, carried)


def test_promisc_off_sees_only_the_hosts_traffic(netns, agents, receivers):
    host, c1, c2 = docker_like(netns)
    agent, reader = run_agent(agents, receivers, host,
                              "pcap { dev = docker0 sampling = 1 promisc = off }")
    try:
        assert promiscuity(host, "docker0") == 0
        assert send_udp(c1, C1, 7001, C2, 9000, 500, 64, 20_000) == 500
        assert send_udp(c1, C1, 7003, BRIDGE, 9000, 500, 64, 20_000) == 500
        time.sleep(1.5)
    finally:
        received = reader.stop()
        assert agent.stop() == 0
    seen = by_flow(flow_samples(received))
    assert (C1, C2, "udp", 7001, 9000) not in seen
    assert len(seen[(C1, BRIDGE, "udp", 7003, 9000)]) == 500      # N = 1: every packet
