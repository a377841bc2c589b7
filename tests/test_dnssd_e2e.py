"""DNS-SD end to end: the agent as a real process in a test namespace whose resolv.conf
points at a real dnsmasq there (tests/dnshelp.py), and collectors that are UDP sockets in
the same namespace.  The records change, dnsmasq stops and starts again, the records go
away, and reloads change and then drop dns-sd { }; each time the test checks where the
datagrams go and at which polling interval, the .auto file, and at the end that the agent
holds no more descriptors or threads than before.

Records have a TTL of 10 s, the shortest re-query hsflowd allows, so each change takes
10-13 s to show: the whole life is one test of about 75 s.
"""

from __future__ import annotations

import signal
import time

import pytest

from agentproc import (agents, assert_idle, assert_period, held, receivers,  # noqa: F401
                       samples_from, settled, wait_until)
from dnshelp import NamespaceDns, have_dnsmasq
from netns import veth

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not have_dnsmasq(), reason="no dnsmasq (apt install dnsmasq)")]

pytest.importorskip("dns.resolver")

HOST = (2, 1)
SUB = 100001          # the DNS-SD agent: counters only
LEGACY_SUB = 8        # the agent with the legacy spelling: subAgentId = 7, counters only
C = "c.example.test"
HOSTS = {C: "127.0.0.1"}


@pytest.fixture
def dns_ns(netns):
    ns, peer = netns(), netns()
    veth(ns, "va", peer, "vb", a_addr="10.77.0.1/24", b_addr="10.77.0.2/24")
    dns = NamespaceDns(ns, search="example.test")
    yield ns, dns
    dns.close()


def host_times(received, sub=SUB):
    """Arrival times of the host samples (2:1) from one agent (by its sub-agent id)."""
    return [r.at for r, _ in samples_from([r for r in received
                                           if r.datagram.sub_agent_id == sub], HOST)]


def from_agent(received, sub=SUB):
    return [r for r in received if r.datagram.sub_agent_id == sub]


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def test_dns_sd_life(dns_ns, agents, receivers):
    ns, dns = dns_ns
    r0, r1, r2, r3 = (receivers(netns=ns.name) for _ in range(4))
    dns.start(srv=[(C, r1.port)], txt=["txtvers=1", "polling=2"], hosts=HOSTS)
    # the file's collector (r0) and polling are not used while DNS-SD is on, as in hsflowd
    agent = agents("sflow {\n  dns-sd { domain = .example.test  startDelay = 0 }\n"
                   f"  collector {{ ip = 127.0.0.1  udpport = {r0.port} }}\n"
                   "  polling = 1\n}\n", netns=ns.name)
    # the legacy spelling, with the domain from resolv.conf's search list; its first query
    # comes a random 1..30 s after start
    legacy = agents("sflow {\n  DNSSD = on\n  subAgentId = 7\n}\n", netns=ns.name)

    # A: SRV -> r1, TXT polling=2
    got = r1.collect(10, until=lambda g: len(host_times(g)) >= 3)
    times = host_times(got)
    assert len(times) >= 3, agent.stderr()
    assert_period(times, 2.0)
    auto = agent.auto()
    assert f"collector={C} {r1.port}\n" in auto and "polling=2\n" in auto
    assert f"{r0.port}" not in auto
    base = settled(agent.pid)

    # B: the records change: -> r2, polling=1
    dns.start(srv=[(C, r2.port)], txt=["polling=1"], hosts=HOSTS)
    got = r2.collect(15, until=lambda g: len(host_times(g)) >= 4)
    times = host_times(got)
    assert len(times) >= 4, agent.stderr()
    assert_period(times[1:], 1.0)
    time.sleep(1.2)
    r1.drain()
    time.sleep(2)
    assert from_agent(r1.drain()) == []          # nothing goes to the old collector

    # C: dnsmasq stopped: the last good settings hold
    dns.stop()
    got = r2.collect(13)
    assert agent.wait_for_log("keeping the last settings", 1), agent.stderr()
    times = host_times(got)
    # a tick held up by a query (up to 5 s) would leave a gap that long: 3 s is three ticks
    assert len(times) >= 11 and max(gaps(times)) < 3.0, gaps(times)

    # D: started again, with other records: -> r3
    dns.start(srv=[(C, r3.port)], txt=["polling=1"], hosts=HOSTS)
    got = r3.collect(15, until=lambda g: len(host_times(g)) >= 2)
    assert len(host_times(got)) >= 2, agent.stderr()
    # the legacy agent (search domain) found the same records: by now it has asked
    got += r3.collect(15, until=lambda g: host_times(g, LEGACY_SUB))
    assert host_times(got, LEGACY_SUB), legacy.stderr()

    # E: no SRV record any more: sampling, polling and sending stop; .auto holds no settings
    dns.start(srv=[], txt=["polling=1"], hosts=HOSTS)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "collector=" in agent.auto():
        time.sleep(0.2)
    assert agent.auto().splitlines()[2:] == [agent.auto().splitlines()[1].replace("start",
                                                                                   "end")]
    time.sleep(1.2)
    for r in (r1, r2, r3):
        r.drain()
    time.sleep(2.5)
    assert all(from_agent(r.drain()) == [] for r in (r1, r2, r3))
    assert r0.drain() == []                     # the file's collector never got anything
    assert agent.wait_for_log("sampling, polling and sending are off", 0)

    # F: a reload that changes the module's settings: another domain, asked at once
    dns.start(srv=[(C, r1.port)], txt=["polling=1"], hosts=HOSTS, domain="other.test")
    agent.write_config("sflow {\n  dns-sd { domain = other.test  startDelay = 0 }\n}\n")
    agent.signal(signal.SIGHUP)
    got = r1.collect(15, until=lambda g: len(host_times(g)) >= 2)
    assert len(host_times(got)) >= 2, agent.stderr()
    assert f"collector={C} {r1.port}\n" in agent.auto()

    # G: a reload without dns-sd: the file's collector; nothing of DNS-SD is left
    agent.write_config(f"sflow {{\n  polling = 1\n  collector {{ ip = 127.0.0.1  "
                       f"udpport = {r0.port} }}\n}}\n")
    agent.signal(signal.SIGHUP)
    got = r0.collect(15, until=lambda g: len(host_times(g)) >= 2)
    assert len(host_times(got)) >= 2, agent.stderr()
    queries = dns.queries()
    assert settled(agent.pid, 3) == base
    assert dns.queries() == queries              # no query since dns-sd went
    assert_idle(agent.pid, 3.0, context=agent.stderr)   # a host sample a second, no more
    assert "Traceback" not in agent.stderr() + legacy.stderr()


def test_stops_at_once_with_a_query_in_flight(dns_ns, agents, receivers):
    ns, dns = dns_ns                      # resolv.conf points at 127.0.0.1, where no one answers
    agent = agents("sflow {\n  dns-sd { domain = .example.test  startDelay = 0 }\n}\n",
                   netns=ns.name)
    assert agent.wait_for_log("configuration revision 1", 10), agent.stderr()
    assert agent.wait_for_log("looking up", 10), agent.stderr()
    # the first round (a thread of its own, from the next tick) waits up to 5 s for its
    # answer ...
    assert wait_until(lambda: held(agent.pid).threads > 1, 10), agent.stderr()
    assert "DNS-SD:" not in agent.stderr().split("looking up", 1)[1]
    start = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    # ... and stopping waits for none of it (a tenth of a second; bench_agent.py's "first"
    # prints the exit time): half of those 5 s is far above that, and below the wait
    assert time.monotonic() - start < 2.5, agent.stderr()
