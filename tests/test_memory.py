"""Memory that scales with the interfaces and does not grow with interface churn.

500 veth pairs live together as ports of a sampled bridge (a Kubernetes node's cni0 and its
pods), each port polled: the agent grows by less than 15 KB an interface (both ends of a
pair count; about 3 KB is measured) and, once they are deleted and the agent has trimmed,
is back within 5 MB of where it was (about 2.5 MB is measured: Python's arenas of small
objects go back only when empty; docs/design.md).

1,000 veth pairs are made and deleted in batches of 50 beside the agent, then 500 tap
devices that a ``pcap { dev.pattern }`` rule taps as each appears (a ring opened and closed
each time).  The agent stays up, ends idle, its file descriptors back to their number, and
its resident memory within 5 MB of where it started.  bench/bench_memory.py prints the
same figures along the way, and the hour of sampling at 20,000 packets/s.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from agentproc import (agents, assert_holds, assert_idle, config_text,  # noqa: F401
                       proc_memory_kb, settled)
from agentproc import Receiver, counter_samples, source_of, udp_socket
from churn import add_pairs, churn, churn_taps, delete_pairs
from lifecycle import wait_until
from netns import veth

pytestmark = [pytest.mark.netns, pytest.mark.slow]

RSS_MARGIN_KB = 5 * 1024
PAIRS = 500
PER_INTERFACE_KB = 15


def test_five_hundred_veth_pairs_cost_little_and_are_given_back(netns, agents):
    ns = netns()
    for cmd in ("ip link add d0a type veth peer name d0b", "ip addr add 10.231.31.1/24 dev d0a",
                "ip link set d0a up", "ip link set d0b up", "ip link add br0 type bridge",
                "ip link set br0 up"):
        ns.run(cmd)
    r = Receiver(udp_socket("127.0.0.1", ns.name))
    try:
        agent = agents(config_text([("127.0.0.1", r.port)], polling=5,
                                   extra="pcap { dev = br0 sampling = 100 }"), netns=ns.name)
        assert r.first(5.0) is not None
        r.collect(6.0)          # a polling interval: what start-up allocates is in place
        pid = agent.pid
        before = proc_memory_kb(pid)[0]
        add_pairs(ns, PAIRS, master="br0")
        ports = {link["ifindex"] for link in json.loads(
            ns.run(["ip", "-j", "link", "show", "master", "br0"]).stdout)}
        assert len(ports) == PAIRS
        polled = set()

        def all_polled(got) -> bool:    # every port's counters sent: the agent has them all
            polled.update(source_of(s)[1] for g in got[-1:] for s in counter_samples(g.datagram))
            return ports <= polled

        r.collect(60.0, until=all_polled)
        assert ports <= polled, f"{len(ports - polled)} ports never polled"
        grown = proc_memory_kb(pid)[0] - before
        per_interface = grown / (2 * PAIRS)
        delete_pairs(ns, PAIRS)
        # the next trim runs within 30 s of the burst; RSS is read, not timed
        given_back = wait_until(lambda: proc_memory_kb(pid)[0] - before <= RSS_MARGIN_KB, 90)
        kept = proc_memory_kb(pid)[0] - before
        print(f"\n{PAIRS} veth pairs on a sampled bridge: {grown} kB ({per_interface:.1f} kB an "
              f"interface); {kept} kB kept after they were deleted")
        assert per_interface < PER_INTERFACE_KB
        assert given_back, f"{kept} kB kept after the pairs were deleted"
        assert agent.alive() and "Traceback" not in agent.stderr(), agent.stderr()[-2000:]
    finally:
        r.close()


def test_thousand_veth_pairs_and_five_hundred_taps(netns, agents):
    ns, peer = netns(), netns()
    veth(ns, "d0a", peer, "d0b", "10.231.30.1/24", "10.231.30.2/24")
    r = Receiver(udp_socket("127.0.0.1", ns.name))
    try:
        agent = agents(config_text([("127.0.0.1", r.port)], polling=5,
                                   extra="pcap { dev.pattern = ^ct sampling = 100 }\n"
                                         "pcap { speed = 1G- }"), netns=ns.name)
        assert r.first(10.0) is not None
        pid = agent.pid
        rest = assert_idle(pid, 3.0, context=agent.stderr)
        start_rss = proc_memory_kb(pid)[0]
        start = settled(pid)
        start_fds = start.fds
        churn(ns, 1000, 50, between=lambda done: time.sleep(0.1))
        opened = []

        def all_tapped(done):   # each ring is a socket and the descriptor mmap keeps of it
            opened.append(wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) - start_fds >= 100, 10))

        churn_taps(ns, 500, 50, between=all_tapped)
        assert all(opened), opened
        assert_holds(pid, start, 10)
        assert agent.alive(), agent.stderr()[-2000:]
        assert_idle(pid, rest=rest, context=agent.stderr)
        end_rss = proc_memory_kb(pid)[0]
        print(f"\nresident memory {start_rss} kB -> {end_rss} kB after 1,000 veth pairs "
              f"and 500 tapped tap devices")
        assert end_rss - start_rss <= RSS_MARGIN_KB
        assert "Traceback" not in agent.stderr()
    finally:
        r.close()
