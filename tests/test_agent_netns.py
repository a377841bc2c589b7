"""End-to-end inside test namespaces: the agent runs under ``ip netns exec NS python3 -m
hsflowd ...`` and sends to a UDP socket opened inside the same namespace; the interfaces it
reports are ones the test made there (veth, bridge, macvlan), never the host's.

The namespaces (``netns`` fixture) are deleted after each test, the agents stopped by PID
(``agents`` fixture, tests/agentproc.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from agentproc import (agents, config_text, free_udp_port, line_of,  # noqa: F401 (fixtures)
                       receivers, record_tags, records_by_tag, samples_from)
from netns import veth

HOST = (2, 1)
# a datagram due at the agent's first tick (about a second, bench/bench_agent.py's "first"):
# waited for up to five times that
START_BOUND = 5.0
SLOW_DNS = 30           # seconds a lookup takes in slow_dns's namespace (glibc's maximum)
TRACEBACK = "Traceback (most recent call last)"
STATS = ("rx_bytes", "rx_packets", "multicast", "tx_bytes", "tx_packets", "rx_dropped",
         "rx_errors", "tx_dropped", "tx_errors")


def links(ns) -> dict:
    """name -> `ip -j -d link` entry, read inside ``ns``."""
    return {l["ifname"]: l for l in json.loads(ns.run("ip -j -d link show").stdout)}


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def reference_adapters(ns) -> list:
    """(ifIndex, MAC) that hsflowd lists in host_adapters, from `ip link` (not from the
    agent's code): up, not loopback, a non-zero MAC, and not a veth (every veth has a peer,
    in this namespace or another)."""
    out = []
    for l in links(ns).values():
        kind = l.get("linkinfo", {}).get("info_kind", "")
        mac = mac_bytes(l.get("address", "")) if l.get("link_type") == "ether" else b""
        if ("UP" in l["flags"] and "LOOPBACK" not in l["flags"] and kind != "veth"
                and len(mac) == 6 and any(mac)):
            out.append((l["ifindex"], mac))
    return sorted(out)


# ---------------------------------------------------------------- host_adapters

def test_host_adapters_lists_what_hsflowd_lists(netns, agents, receivers):
    ns, other = netns(), netns()
    veth(ns, "vout", other, "vpeer", a_addr="10.201.0.1/24", b_addr="10.201.0.2/24")
    ns.run("ip link add vdown type veth peer name vdownp")      # a veth left down ...
    ns.run("ip link set vdownp up")                              # ... its peer up, both here
    ns.run("ip link add vsame type veth peer name vsamep")      # a pair, both here, both up
    ns.run("ip link set vsame up")
    ns.run("ip link set vsamep up")
    ns.run("ip link add br0 type bridge")
    ns.run("ip link set br0 up")
    ns.run("ip link add brdown type bridge")                     # down: left out
    ns.run("ip link add mv0 link vout type macvlan mode bridge")
    ns.run("ip link set mv0 up")
    ns.run("ip link add mvdown link vout type macvlan mode bridge")

    r = receivers(netns=ns.name)
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), netns=ns.name)
    first = r.first(2 * START_BOUND)
    assert first is not None, agent.stderr()
    (_, sample), = samples_from([first], HOST)
    adapters = records_by_tag(sample)[2001].adapters
    got = [(a.ifIndex, list(a.mac_addresses)) for a in adapters]

    expected = reference_adapters(ns)
    assert got == [(i, [m]) for i, m in expected]
    # and, spelled out: the bridge and the macvlan that are up, nothing else
    by_name = links(ns)
    assert sorted(i for i, _ in got) == sorted(by_name[n]["ifindex"] for n in ("br0", "mv0"))
    # the agent address is the veth's (the only address besides loopback)
    assert str(first.datagram.agent_address) == "10.201.0.1"
    assert first.datagram.sub_agent_id == 100001


# ---------------------------------------------------------------- interface counters

def read_stats(ns, dev: str) -> dict:
    base = f"/sys/class/net/{dev}/statistics/"
    values = ns.run(["cat"] + [base + s for s in STATS]).stdout.split()
    return dict(zip(STATS, map(int, values)))


def test_pcap_device_gets_interface_counters(netns, agents, receivers):
    ns, other = netns(), netns()
    veth(ns, "eth1", other, "eth1p", a_addr="10.202.0.1/24", b_addr="10.202.0.2/24")
    ns.run("ping -q -c 5 -i 0.05 10.202.0.2")         # counters that are not zero at start
    ns.popen(["ping", "-q", "-i", "0.2", "10.202.0.2"], stdout=subprocess.DEVNULL,
             stderr=subprocess.DEVNULL)                # and move while the agent runs
    ifindex = ns.ifindex("eth1")

    readings = []

    def probe(datagram):
        stats = read_stats(ns, "eth1")
        readings.append(stats)
        return stats

    r = receivers(netns=ns.name, probe=probe)
    before = read_stats(ns, "eth1")
    text = config_text([("127.0.0.1", r.port)], polling=1, extra="pcap { dev = eth1 }")
    agent = agents(text, netns=ns.name)
    got = r.collect(20, until=lambda got: len(list(samples_from(got, (0, ifindex)))) >= 3)
    assert got, agent.stderr()
    # a pcap block: hsflowd's packet agent, subAgentId itself
    assert {x.datagram.sub_agent_id for x in got} == {100000}

    samples = list(samples_from(got, (0, ifindex)))
    assert len(samples) >= 3, agent.stderr()
    # tolerance: the agent reads its counters a few ms before the test reads sysfs (after
    # the datagram arrived); ping sends 5 packets/s, so at most a few packets fall between
    tol_packets, tol_bytes = 3, 3 * 200
    lower = before
    for received, sample in samples:
        assert record_tags(sample) == [1, 2, 1005]
        recs = records_by_tag(sample)
        assert recs[1005].name == "eth1"
        c = recs[1]
        assert c.ifIndex == ifindex and c.ifType == 6
        assert c.ifSpeed == 10_000_000_000 and c.ifDirection == 1   # veth: 10G full duplex
        assert c.ifStatus == 3                                        # admin and oper up
        upper = received.extra
        sent = {"rx_bytes": c.ifInOctets, "rx_packets": c.ifInUcastPkts + c.ifInMulticastPkts,
                "multicast": c.ifInMulticastPkts, "tx_bytes": c.ifOutOctets,
                "tx_packets": c.ifOutUcastPkts, "rx_dropped": c.ifInDiscards,
                "rx_errors": c.ifInErrors, "tx_dropped": c.ifOutDiscards,
                "tx_errors": c.ifOutErrors}
        for name, value in sent.items():
            assert lower[name] <= value <= upper[name], (name, lower[name], value, upper[name])
            slack = tol_bytes if name.endswith("bytes") else tol_packets
            assert upper[name] - value <= slack, (name, value, upper[name])
        lower = upper
    first, last = records_by_tag(samples[0][1])[1], records_by_tag(samples[-1][1])[1]
    assert last.ifInOctets > 0 and last.ifOutUcastPkts >= 5
    assert last.ifOutOctets > first.ifOutOctets
    assert agent.alive() and TRACEBACK not in agent.stderr()


# ---------------------------------------------------------------- collectors that cannot work

def test_unreachable_collectors_leave_the_others_receiving(netns, agents, receivers):
    """No default route in the namespace: 2001:db8::1 and 198.51.100.1 get ENETUNREACH on
    every send, a closed port on 127.0.0.1 swallows the datagrams; the good collector gets
    every datagram, sequence numbers without gaps."""
    ns, other = netns(), netns()
    veth(ns, "eth1", other, "eth1p", a_addr="10.203.0.1/24", b_addr="10.203.0.2/24")
    r = receivers(netns=ns.name)
    closed = free_udp_port(netns=ns.name)
    text = config_text(["ip = 2001:db8::1 udpport = 6343", "ip = 198.51.100.1 udpport = 6343",
                        ("127.0.0.1", closed), ("127.0.0.1", r.port)], polling=1)
    agent = agents(text, netns=ns.name)
    got = r.collect(20, until=lambda got: len(got) >= 4)
    assert len(got) >= 4, agent.stderr()
    assert [x.datagram.sequence_number for x in got] == list(range(1, len(got) + 1))
    assert agent.alive()
    log = agent.stderr()
    for needle in ("2001:db8::1", "198.51.100.1"):
        label = f"[{needle}]" if ":" in needle else needle
        where = f"{label}:6343 ({agent.config_path}:{line_of(text, needle)})"
        lines = [l for l in log.splitlines() if where in l]
        # named once, in the tick's one summary line (the next is a minute later)
        assert len(lines) == 1 and "WARNING" in lines[0] and "ENETUNREACH" in lines[0], log
    assert TRACEBACK not in log


@pytest.fixture
def slow_dns(netns):
    """A namespace whose resolver (/etc/netns/NS/resolv.conf, which `ip netns exec`
    bind-mounts over /etc/resolv.conf) is an address nobody answers from: every lookup
    takes the resolver's whole timeout (SLOW_DNS), as at boot before the network is up."""
    ns, other = netns(), netns()
    etc = f"/etc/netns/{ns.name}"
    made_parent = not os.path.isdir("/etc/netns")
    os.makedirs(etc)
    try:
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write(f"nameserver 10.204.0.9\noptions timeout:{SLOW_DNS} attempts:1\n")
        veth(ns, "eth1", other, "eth1p", a_addr="10.204.0.1/24")
        yield ns
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        if made_parent:
            try:
                os.rmdir("/etc/netns")
            except OSError:
                pass


def test_slow_dns_for_one_collector_does_not_delay_the_others(slow_dns, agents, receivers):
    ns = slow_dns
    r = receivers(netns=ns.name)
    text = config_text([("127.0.0.1", r.port), "ip = collector.invalid"], polling=1)
    agent = agents(text, netns=ns.name)
    # the first datagram comes at the first tick (about a second), not after the lookup:
    # bounded at five times the one and a sixth of the other
    first = r.first(SLOW_DNS)
    assert first is not None, agent.stderr()
    assert first.at - agent.started < START_BOUND, agent.stderr()
    assert "collector.invalid" not in agent.stderr()    # the lookup was still going on


def test_ipv6_collector_is_named_unambiguously(netns, agents, receivers):
    ns = netns()
    r = receivers(netns=ns.name)
    agent = agents(config_text(["ip = 2001:db8::1 udpport = 6343", ("127.0.0.1", r.port)],
                               polling=1), netns=ns.name)
    assert r.first(2 * START_BOUND) is not None
    assert agent.wait_for_log("2001:db8::1", START_BOUND)
    assert "[2001:db8::1]:6343" in agent.stderr(), agent.stderr()


def test_datagrams_split_below_datagram_bytes(netns, agents, receivers):
    """A bridge with 8 veth ports, tapped by pcap: every second the host sample (~690 bytes)
    and 9 interface samples (~190 bytes each) go out, more than one 1400-byte datagram can
    carry; they are split, every datagram strictly under 1400 bytes, sequence numbers
    without gaps."""
    ns = netns()
    ns.run("ip link add brs type bridge")
    for i in range(8):
        ns.run(f"ip link add ps{i} type veth peer name pp{i}")
        ns.run(f"ip link set ps{i} master brs")
        ns.run(f"ip link set ps{i} up")
        ns.run(f"ip link set pp{i} up")
    ns.run("ip link set brs up")
    ns.run("ip addr add 10.205.0.1/24 dev brs")
    ports = {ns.ifindex(f"ps{i}") for i in range(8)} | {ns.ifindex("brs")}
    r = receivers(netns=ns.name)
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1,
                               extra="pcap { dev = brs }"), netns=ns.name)
    got = r.collect(20, until=lambda got: len(got) >= 6)
    assert len(got) >= 6, agent.stderr()
    sizes = [len(x.data) for x in got]
    assert max(sizes) < 1400 and max(sizes) > 1400 - 200, sizes   # full, but under the limit
    assert [x.datagram.sequence_number for x in got] == list(range(1, len(got) + 1))
    sources = {s for x in got for s in
               [(c.source_id_type, c.source_id_index) for c in x.datagram.samples
                if hasattr(c, "counters")]}
    assert {(0, i) for i in ports} | {HOST} <= sources
