"""Memory that does not grow with interface churn.

1,000 veth pairs are made and deleted in batches of 50 beside the agent, then 500 tap
devices that a ``pcap { dev.pattern }`` rule taps as each appears (a ring opened and closed
each time).  The agent stays up, ends idle, its file descriptors back to their number, and
its resident memory within 5 MB of where it started.  bench/bench_memory.py prints the
same figures along the way, and the hour of sampling at 20,000 packets/s.
"""

from __future__ import annotations

import os
import time

import pytest

from agentproc import agents, assert_idle, config_text, proc_memory_kb  # noqa: F401
from agentproc import Receiver, udp_socket
from churn import churn, churn_taps
from lifecycle import wait_until
from netns import veth

pytestmark = [pytest.mark.netns, pytest.mark.slow]

RSS_MARGIN_KB = 5 * 1024


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
        start_fds = len(os.listdir(f"/proc/{pid}/fd"))
        churn(ns, 1000, 50, between=lambda done: time.sleep(0.1))
        opened = []

        def all_tapped(done):   # each ring is a socket and the descriptor mmap keeps of it
            opened.append(wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) - start_fds >= 100, 10))

        churn_taps(ns, 500, 50, between=all_tapped)
        assert all(opened), opened
        assert wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) == start_fds, 10)
        assert agent.alive(), agent.stderr()[-2000:]
        assert_idle(pid, rest=rest, context=agent.stderr)
        end_rss = proc_memory_kb(pid)[0]
        print(f"\nresident memory {start_rss} kB -> {end_rss} kB after 1,000 veth pairs "
              f"and 500 tapped tap devices")
        assert end_rss - start_rss <= RSS_MARGIN_KB
        assert "Traceback" not in agent.stderr()
    finally:
        r.close()
