"""The agent through its second day: reloads, link flaps, interfaces renamed, deleted and made
again, collectors that resolve late, signals in a row or during start-up.

Each sampler (pcap, epcap, nflog) goes through a sequence of events in one agent process;
after each event ``Rig.check`` asserts that samples come again at the configured rate
(lifecycle.FIRST_SAMPLE_WITHIN), that the agent is idle again (asleep between ticks, its CPU share back near
what it was at rest) and that its file descriptors and threads are back where they were
(see tests/lifecycle.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from agentproc import agents, assert_idle, config_text, receivers  # noqa: F401 (fixtures)
from lifecycle import HOST_IP, PEER_IP, Rig, sampler_body, wait_until
from netns import veth

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def ebpf_available() -> bool:
    from hsflowd.samplers.ebpf import EbpfUnavailable, load_bcc
    try:
        load_bcc()
    except EbpfUnavailable:
        return False
    return os.path.exists(f"/lib/modules/{os.uname().release}/build")


def needs(kind: str) -> None:
    if kind == "epcap" and not ebpf_available():
        pytest.skip("bcc or kernel headers missing (tests/ebpf_setup.sh)")


def tc_filters(ns, dev: str) -> str:
    return "".join(ns.run(["tc", "filter", "show", "dev", dev, hook], check=False).stdout
                   for hook in ("ingress", "egress"))


def is_promiscuous(ns, dev: str) -> bool:
    return bool(int(ns.run(["cat", f"/sys/class/net/{dev}/flags"]).stdout, 16) & 0x100)


# ---------------------------------------------------------------- one sampler, many events

@pytest.mark.parametrize("kind", ["pcap", "epcap", "nflog"])
def test_reloads_flaps_and_interface_churn(netns, agents, kind):
    needs(kind)
    rig = Rig(netns, agents, kind, rate=10)
    try:
        rig.check_sampling(rig.agent.started, 10)
        rig.settle()
        rig.check_idle()

        # a reload that changes the rate (the Ansible role's handler does this on every push)
        rig.check(rig.reload(rig.config(rate=20)), 20)
        # ... the header size
        t = rig.reload(rig.config(header=64))
        rig.check_sampling(t, 20, header_bytes=64)
        rig.check_idle()
        rig.check_resources()
        # ... promiscuous mode (not nflog: it has no tap of its own)
        if kind != "nflog":
            # epcap holds a socket of its own for promiscuous mode; pcap's ring does it
            rig.check(rig.reload(rig.config(promisc=True)), 20, extra_fds=kind == "epcap")
            assert is_promiscuous(rig.host, "vh")
            rig.check(rig.reload(rig.config(promisc=False)), 20)
            assert not is_promiscuous(rig.host, "vh")
        # ... the collectors
        other = rig.new_receiver()
        t = rig.reload(rig.config(receiver=other))
        rig.check_sampling(t, 20, receiver=other)
        rig.receiver.drain()
        rig.burst(2000)
        assert not rig.receiver.collect(1.5), "datagrams still go to the old collector"
        rig.receiver = other
        rig.check_idle()
        rig.check_resources()

        # the link goes down and up (this spun a core when the socket's error was not read)
        rig.host.run("ip link set vh down")
        time.sleep(0.5)
        rig.host.run("ip link set vh up")
        wait_until(lambda: "UP" in rig.host.run("ip -br link show vh").stdout, 5)
        rig.check(time.monotonic())

        # renamed away (dev = vh no longer matches) and back
        rig.host.run("ip link set vh down")
        rig.host.run("ip link set vh name vh-renamed")
        rig.host.run("ip link set vh-renamed up")
        time.sleep(1.0)
        rig.host.run("ip link set vh-renamed down")
        rig.host.run("ip link set vh-renamed name vh")
        rig.host.run("ip link set vh up")
        rig.check(time.monotonic())

        # deleted and made again under the same name: a new ifindex, a new data source
        rig.host.run("ip link del vh")
        time.sleep(1.0)
        rig.make_link()
        since = time.monotonic()
        rig.check_sampling(since, 20, ds_index=rig.ifindex)
        rig.check_idle()
        rig.check_resources()

        # and it still ends cleanly, leaving nothing behind
        assert rig.agent.stop() == 0
        assert "Traceback" not in rig.agent.stderr()
        if kind == "epcap":
            assert "hsflowd" not in tc_filters(rig.host, "vh")
            assert "clsact" not in rig.host.run("tc qdisc show dev vh").stdout
    finally:
        rig.close()


def test_two_hundred_sighups_in_a_row(netns, agents):
    rig = Rig(netns, agents, "pcap", rate=10)
    try:
        rig.check_sampling(rig.agent.started, 10)
        rig.settle()
        for i in range(200):
            rig.agent.write_config(rig.config(rate=10 if i % 2 else 20))
            rig.agent.signal(signal.SIGHUP)
            time.sleep(0.002)
        rig.agent.write_config(rig.config(rate=10))
        rig.agent.signal(signal.SIGHUP)
        rig.check(time.monotonic(), 10)
        assert "Traceback" not in rig.agent.stderr()
    finally:
        rig.close()


def test_counters_through_reloads_and_flaps(netns, agents):
    """Interface counter samples (0:ifIndex) and the host sample keep their schedule."""
    rig = Rig(netns, agents, "pcap", rate=100, polling=1)
    try:
        def sources(got):
            return {(s.source_id_type, s.source_id_index)
                    for r in got for s in r.datagram.samples if hasattr(s, "counters")}

        def both_come():
            """The host's and the interface's counter samples (due every second) both
            arrive; waited for up to ten times their period."""
            want = {(2, 1), (0, rig.ifindex)}
            return want <= sources(rig.receiver.collect(10, until=lambda g: want <= sources(g)))

        assert both_come()
        rig.settle()
        rig.reload(rig.config(rate=50))
        rig.receiver.drain()
        assert both_come()
        rig.host.run("ip link set vh down")
        rig.host.run("ip link set vh up")
        rig.receiver.drain()
        assert both_come()
        rig.check_idle()
        rig.check_resources()
    finally:
        rig.close()


# ---------------------------------------------------------------- collectors

def test_a_collector_name_that_resolves_later(netns, agents):
    """The name is not in the namespace's hosts file at start; once it is, datagrams flow
    (names are retried after 1, 2, 4 ... s).  When it moves, a reload follows it."""
    host = netns()
    rx_sock_ns = host.name
    etc = f"/etc/netns/{host.name}"
    os.makedirs(etc, exist_ok=True)
    try:
        with open(f"{etc}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n")
        from agentproc import Receiver, udp_socket
        r = Receiver(udp_socket("127.0.0.1", rx_sock_ns))
        agent = agents(config_text([f"ip = late-collector.test udpport = {r.port}"], polling=1,
                                   extra="agentIP = 127.0.0.1"), netns=host.name)
        assert agent.wait_for_log("cannot reach collector yet", 10.0), agent.stderr()
        assert r.collect(1.5) == []
        with open(f"{etc}/hosts", "r+") as f:     # in place: the agent's view is a bind mount
            f.seek(0, 2)
            f.write("127.0.0.1 late-collector.test\n")
        # retried 1, 2, 4 ... s after failing: the next try comes within about 4 s of this;
        # a name looked up only at reloads never comes
        first = r.first(30.0)
        assert first is not None, agent.stderr()

        # the name moves: a reload (the same file) looks it up again, as hsflowd does
        import socket
        from agentproc import in_netns

        def bound():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.2", r.port))
            return s
        r2 = Receiver(in_netns(host.name, bound))
        with open(f"{etc}/hosts", "r+") as f:
            f.truncate(0)
            f.write("127.0.0.1 localhost\n127.0.0.2 late-collector.test\n")
        agent.signal(signal.SIGHUP)
        assert agent.wait_for_log("late-collector.test:%d -> 127.0.0.2" % r.port, 5), agent.stderr()
        assert r2.first(10.0) is not None, agent.stderr()   # the next tick
        r.collect(1.0)                            # what was on its way before the move
        assert r.collect(1.5) == []
        r.close()
        r2.close()
    finally:
        for name in os.listdir(etc):
            os.unlink(os.path.join(etc, name))
        os.rmdir(etc)


# ---------------------------------------------------------------- signals during start-up

def test_sigterm_during_startup_leaves_nothing(netns, agents):
    """epcap compiles its eBPF program for a second or two: a SIGTERM then is seen, and the
    agent exits cleanly without tc filters or iptables rules of its own left behind."""
    needs("epcap")
    host, peer = netns(), netns()
    veth(host, "vh", peer, "vp", f"{HOST_IP}/24", f"{PEER_IP}/24")
    text = config_text([("127.0.0.1", 16399)], polling=1,
                       extra="epcap { dev = vh sampling = 10 }\n"
                             "nflog { group = 9 probability = 0.1 iptables = on }")
    for delay in (0.0, 0.5, 1.5):   # after the handlers are in: the interpreter's own
        agent = agents(text, netns=host.name)   # start-up is not the agent's to guard
        assert wait_until(agent.handles_signals, 15), agent.stderr()
        time.sleep(delay)
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0, agent.stderr()
        assert "Traceback" not in agent.stderr()
        assert "hsflowd" not in tc_filters(host, "vh"), delay
        rules = host.run(["iptables-legacy", "-w", "-S"], check=False).stdout
        assert "hsflowd:nflog" not in rules, (delay, rules)


def test_sighup_during_startup_is_a_reload_not_a_death(netns, agents):
    needs("epcap")
    host, peer = netns(), netns()
    veth(host, "vh", peer, "vp", f"{HOST_IP}/24", f"{PEER_IP}/24")
    agent = agents(config_text([("127.0.0.1", 16398)], polling=1,
                               extra="epcap { dev = vh sampling = 10 }"), netns=host.name)
    assert wait_until(agent.handles_signals, 15), agent.stderr()
    agent.signal(signal.SIGHUP)
    assert agent.wait_for_log("configuration revision 2", 15), agent.stderr()
    assert agent.alive()
    assert agent.stop() == 0


# ---------------------------------------------------------------- Open vSwitch

def test_ovsdb_server_killed_and_restarted(netns, agents, receivers):
    """The agent in a namespace of its own (ovsdb-server is a Unix socket, the same from
    any namespace): it is checked for idleness, and in the machine's namespace another
    test's links coming and going would wake it."""
    from ovs_helpers import OvsdbServer, missing_tools
    why = missing_tools()
    if why:
        pytest.skip(why)
    server = OvsdbServer().start()
    try:
        server.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy")
        host = netns()
        r = receivers(netns=host.name)
        agent = agents(config_text([("127.0.0.1", r.port)], polling=1,
                                   extra=f"agentIP = 127.0.0.1\nsampling = 256\n"
                                         f"ovs {{ db = {server.remote} }}"), netns=host.name)

        def row():
            rows = server.sflow_rows()
            return next(iter(rows.values())) if len(rows) == 1 else None

        assert wait_until(lambda: row() is not None, 10), agent.stderr()
        from lifecycle import Figures
        base = Figures(agent.pid)
        server.kill()
        time.sleep(1.0)
        server.start()           # an empty socket, the same database file: our row is there
        server.vsctl("clear", "bridge", "br0", "sflow")   # as if someone removed it meanwhile
        assert wait_until(lambda: row() is not None and server.bridge_sflow("br0") is not None, 15), \
            agent.stderr()
        time.sleep(1.0)
        assert_idle(agent.pid, context=agent.stderr)
        now = Figures(agent.pid)
        assert (now.fds, now.threads) == (base.fds, base.threads)
        assert agent.stop() == 0
        assert server.sflow_rows() == {} and server.bridge_sflow("br0") is None
    finally:
        server.cleanup()


def test_ovs_db_changed_by_reload_and_a_collector_that_resolves_later(netns, agents):
    """The row moves to the new ovsdb-server on reload (and leaves the old one); a collector
    name that resolves only later joins the row's targets."""
    from ovs_helpers import OvsdbServer, missing_tools
    why = missing_tools()
    if why:
        pytest.skip(why)
    first, second = OvsdbServer().start(), OvsdbServer().start()
    host = netns()
    etc = f"/etc/netns/{host.name}"
    os.makedirs(etc, exist_ok=True)
    try:
        with open(f"{etc}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n")
        for server in (first, second):
            server.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy")

        def text(server):
            return config_text(["ip = 127.0.0.1 udpport = 16381",
                                "ip = late-ovs-collector.test udpport = 16382"], polling=1,
                               extra=f"agentIP = 127.0.0.1\novs {{ db = {server.remote} }}")

        def targets(server):
            rows = list(server.sflow_rows().values())
            if len(rows) != 1:
                return None
            t = rows[0]["targets"]
            return sorted(t) if isinstance(t, list) else [t]

        agent = agents(text(first), netns=host.name)
        assert wait_until(lambda: targets(first) == ["127.0.0.1:16381"], 10), agent.stderr()
        with open(f"{etc}/hosts", "r+") as f:
            f.seek(0, 2)
            f.write("127.0.0.2 late-ovs-collector.test\n")
        assert wait_until(lambda: targets(first) == ["127.0.0.1:16381", "127.0.0.2:16382"], 12), \
            agent.stderr()
        agent.write_config(text(second))
        agent.signal(signal.SIGHUP)
        assert wait_until(lambda: targets(second) == ["127.0.0.1:16381", "127.0.0.2:16382"], 10), \
            agent.stderr()
        assert wait_until(lambda: first.sflow_rows() == {}, 10)
        assert agent.stop() == 0
        assert second.sflow_rows() == {}
    finally:
        first.cleanup()
        second.cleanup()
        for name in os.listdir(etc):
            os.unlink(os.path.join(etc, name))
        os.rmdir(etc)


def test_auto_file_follows_the_agent_address(netns, agents):
    host, peer = netns(), netns()
    veth(host, "vh", peer, "vp", "10.231.21.1/24", "10.231.21.2/24")
    agent = agents(config_text([("127.0.0.1", 16383)], polling=1), netns=host.name)

    def auto() -> str:
        try:
            return agent.auto()
        except FileNotFoundError:
            return ""

    assert wait_until(lambda: "agentIP=10.231.21.1" in auto(), 5), agent.stderr()
    host.run("ip addr add 203.0.113.7/32 dev vh")     # public beats RFC 1918 (hsflowd's ladder)
    assert wait_until(lambda: "agentIP=203.0.113.7" in auto(), 5), auto()
    text = auto()
    assert text.split("rev_start=")[1].split()[0] == text.split("rev_end=")[1].split()[0] == "2"
    host.run("ip addr del 203.0.113.7/32 dev vh")
    assert wait_until(lambda: "agentIP=10.231.21.1" in auto(), 5), auto()
