"""Giving up root: the running agent's Uid and CapEff (/proc/PID/status) for several
configurations, and sampling that still works afterwards."""

from __future__ import annotations

import os
import time

import pytest

from agentproc import agents, config_text, receivers  # noqa: F401 (fixtures)
from lifecycle import Rig, wait_until

BITS = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
        "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def proc_status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def uid_and_caps(pid: int):
    s = proc_status(pid)
    uid = int(s["Uid"].split()[1])     # effective
    caps = int(s["CapEff"], 16)
    return uid, {name for name, bit in BITS.items() if caps >> bit & 1}, caps


def dropped(agent, timeout: float = 10.0):
    assert wait_until(lambda: "running as nobody" in agent.stderr() or "keeping root" in agent.stderr(),
                      timeout), agent.stderr()
    return uid_and_caps(agent.pid)


def test_counters_only_agent_runs_as_nobody_with_no_capability(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    uid, caps, raw = dropped(agent)
    assert uid == 65534 and raw == 0
    assert r.first(10.0) is not None
    # it can still read its config (reload) and answer status as nobody
    agent.write_config(config_text([("127.0.0.1", r.port)], polling=2))
    agent.signal(1)
    assert agent.wait_for_log("configuration revision 2", 10.0), agent.stderr()


def test_minus_p_keeps_root(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), args=("-d", "-P"))
    uid, _, raw = dropped(agent)
    assert uid == 0 and raw != 0
    assert "keeping root (-P)" in agent.stderr()


@pytest.mark.netns
@pytest.mark.parametrize("kind,expect", [
    ("pcap", {"CAP_NET_RAW"}),
    ("nflog", {"CAP_NET_ADMIN"}),
    ("epcap", {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW"}),
])
def test_samplers_keep_only_what_they_need_and_still_sample(netns, agents, kind, expect):
    if kind == "epcap":
        from test_lifecycle import needs
        needs("epcap")
    rig = Rig(netns, agents, kind, rate=10)
    try:
        uid, caps, raw = dropped(rig.agent)
        assert uid == 65534 and caps == expect, (caps, hex(raw))
        rig.check_sampling(rig.agent.started, 10)
        # a reload opens things again as nobody: a new rate, and the link made again
        t = rig.reload(rig.config(rate=20))
        rig.check_sampling(t, 20)
        rig.host.run("ip link del vh")
        time.sleep(0.5)
        rig.make_link()
        rig.check_sampling(time.monotonic(), 20, ds_index=rig.ifindex)
        assert "Traceback" not in rig.agent.stderr() and "failed in" not in rig.agent.stderr()
    finally:
        rig.close()


@pytest.mark.netns
def test_managed_iptables_rules_as_nobody(netns, agents):
    """The rule helper runs as a child with the agent's (ambient) capabilities."""
    host = netns()
    agent = agents(config_text([("127.0.0.1", 16397)], polling=1,
                               extra="agentIP = 127.0.0.1\n"
                                     "nflog { group = 11 probability = 0.5 iptables = on }"),
                   netns=host.name)
    uid, caps, _ = dropped(agent)
    assert uid == 65534 and caps == {"CAP_NET_ADMIN", "CAP_NET_RAW"}

    def rules():
        return host.run(["iptables-legacy", "-w", "-S"], check=False).stdout.count("hsflowd:nflog")

    assert wait_until(lambda: rules() == 2, 10), agent.stderr()
    assert agent.stop() == 0
    assert rules() == 0


def test_ovs_keeps_dac_override_only(agents, receivers):
    from ovs_helpers import OvsdbServer, missing_tools
    why = missing_tools()
    if why:
        pytest.skip(why)
    server = OvsdbServer().start()
    try:
        os.chmod(server.dir, 0o700)          # root only, as /var/run/openvswitch
        server.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy")
        r = receivers()
        agent = agents(config_text([("127.0.0.1", r.port)], polling=1,
                                   extra=f"agentIP = 127.0.0.1\novs {{ db = {server.remote} }}"))
        uid, caps, _ = dropped(agent)
        assert uid == 65534 and caps == {"CAP_DAC_OVERRIDE"}
        assert wait_until(lambda: len(server.sflow_rows()) == 1, 10), agent.stderr()
        assert agent.stop() == 0
        assert server.sflow_rows() == {}
    finally:
        server.cleanup()


@pytest.mark.netns
def test_namespace_collector_keeps_what_setns_needs(netns, agents):
    ns = netns()
    from agentproc import Receiver, udp_socket
    r = Receiver(udp_socket("127.0.0.1", ns.name))
    try:
        agent = agents(config_text([f"ip = 127.0.0.1 udpport = {r.port} namespace = {ns.name}"],
                                   polling=1))
        uid, caps, _ = dropped(agent)
        assert uid == 65534 and caps == {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"}
        assert r.first(10.0) is not None, agent.stderr()
    finally:
        r.close()
