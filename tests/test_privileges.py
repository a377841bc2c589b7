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
# capabilities(7); written out here rather than taken from hsflowd.privileges
ROOT_KEEPS = (1 << 1 | 1 << 2 | 1 << 10 | 1 << 12 | 1 << 13 | 1 << 19 | 1 << 21
              | 1 << 38 | 1 << 39)   # DAC_OVERRIDE, DAC_READ_SEARCH, NET_BIND_SERVICE,
                                     # NET_ADMIN, NET_RAW, SYS_PTRACE, SYS_ADMIN, PERFMON, BPF


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


def sets(pid: int) -> dict:
    """The capability sets and no_new_privs of a process, as numbers."""
    s = proc_status(pid)
    out = {k: int(s[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    out["NoNewPrivs"] = int(s["NoNewPrivs"])
    out["Uid"] = int(s["Uid"].split()[1])
    return out


def test_nothing_is_left_for_a_child_to_inherit(agents, receivers):
    """Outside systemd the agent does what the unit's CapabilityBoundingSet= and
    NoNewPrivileges= do: a counters-only agent can never get a capability back."""
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    dropped(agent)
    got = sets(agent.pid)
    assert got == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0,
                   "NoNewPrivs": 1, "Uid": 65534}, got
    # every thread, not only the main one (capabilities belong to a thread)
    for tid in os.listdir(f"/proc/{agent.pid}/task"):
        with open(f"/proc/{agent.pid}/task/{tid}/status") as f:
            assert "CapBnd:\t0000000000000000" in f.read(), tid


def test_a_bounding_set_set_from_outside_is_kept(agents, receivers):
    """Under systemd or in a container the agent may start without CAP_SETPCAP, which cutting
    the bounding set takes: it starts, drops to nobody with nothing, and says no more."""
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), start=False)
    inner = agent.command
    unit = "-all,+setuid,+setgid,+net_raw,+net_admin,+sys_admin,+dac_override"
    agent.command = lambda: ["setpriv", "--bounding-set", unit, "--"] + inner()
    agent.start()
    dropped(agent)
    got = sets(agent.pid)
    assert got["Uid"] == 65534 and got["CapEff"] == got["CapAmb"] == got["CapInh"] == 0
    assert got["CapBnd"] == (1 << 6 | 1 << 7 | 1 << 12 | 1 << 13 | 1 << 21 | 1 << 1), hex(got["CapBnd"])
    assert got["NoNewPrivs"] == 1
    assert r.first(10.0) is not None, agent.stderr()
    assert "WARNING" not in agent.stderr() and "ERROR" not in agent.stderr(), agent.stderr()


def test_root_kept_where_a_container_withheld_some(agents, receivers):
    """systemd-nspawn, like most container runtimes, gives root no CAP_NET_ADMIN or CAP_BPF:
    an agent that keeps root keeps what it has of MOST, and runs."""
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), args=("-d", "-P"),
                   start=False)
    inner = agent.command
    agent.command = lambda: ["setpriv", "--bounding-set", "-all,+setpcap,+net_raw,+sys_ptrace,+kill",
                             "--"] + inner()
    agent.start()
    dropped(agent)
    got = sets(agent.pid)
    assert got["Uid"] == 0 and got["CapEff"] == got["CapBnd"] == 1 << 13 | 1 << 19, got
    assert r.first(10.0) is not None, agent.stderr()


def test_minus_p_keeps_root(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), args=("-d", "-P"))
    uid, _, raw = dropped(agent)
    assert uid == 0 and raw != 0
    assert "keeping root (-P)" in agent.stderr()
    # root, but with no more than any module may use: no CAP_SYS_MODULE, CAP_KILL, CAP_SETUID
    got = sets(agent.pid)
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == ROOT_KEEPS, {k: hex(v) for k, v in got.items()}
    assert got["CapAmb"] == got["CapInh"] == 0 and got["NoNewPrivs"] == 1
    assert r.first(10.0) is not None, agent.stderr()


def test_a_reload_cannot_get_back_what_was_given_up(agents, receivers):
    """A counters-only agent has nothing; a reload that turns pcap on is refused with one
    line, the rest runs on, and a restart is what it takes."""
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    dropped(agent)
    agent.write_config(config_text([("127.0.0.1", r.port)], polling=1,
                                   extra="pcap { dev = lo }"))
    agent.signal(1)
    assert agent.wait_for_log("configuration revision 2", 10.0), agent.stderr()
    line = ("the pcap module needs CAP_NET_RAW, which the agent gave up at start: it is not "
            "run; restart hsflowd to use it")
    assert agent.stderr().count(line) == 1, agent.stderr()
    r.drain()
    assert r.first(10.0) is not None, agent.stderr()     # counters still go out
    assert "failed in" not in agent.stderr() and "Traceback" not in agent.stderr()
    assert sets(agent.pid)["CapEff"] == 0


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


def helper_child(agent_pid: int, timeout: float):
    """The status of the agent's iptables helper, read while it runs (after its execve)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tid in os.listdir(f"/proc/{agent_pid}/task"):
            try:
                with open(f"/proc/{agent_pid}/task/{tid}/children") as f:
                    kids = f.read().split()
            except OSError:
                continue
            for kid in kids:
                try:
                    with open(f"/proc/{kid}/cmdline", "rb") as f:
                        if b"hsflowd.samplers.iptables" in f.read():
                            return sets(int(kid))
                except (OSError, KeyError):
                    pass
        time.sleep(0.002)
    return None


@pytest.mark.netns
def test_managed_iptables_rules_as_nobody(netns, agents):
    """The rule helper is the one child given a capability, explicitly, and only the two it
    needs; the agent itself keeps none to pass on."""
    host = netns()

    def conf(probability):
        return config_text([("127.0.0.1", 16397)], polling=1,
                           extra="agentIP = 127.0.0.1\n"
                                 f"nflog {{ group = 11 probability = {probability} iptables = on }}")

    agent = agents(conf(0.5), netns=host.name)
    uid, caps, _ = dropped(agent)
    assert uid == 65534 and caps == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    both = 1 << 12 | 1 << 13
    got = sets(agent.pid)
    assert got["CapBnd"] == both and got["CapAmb"] == 0 and got["CapInh"] == 0, got
    assert got["NoNewPrivs"] == 1

    def rules():
        return host.run(["iptables-legacy", "-w", "-S"], check=False).stdout.count("hsflowd:nflog")

    assert wait_until(lambda: rules() == 2, 10), agent.stderr()
    # each reload with a new probability runs the helper again: catch one while it runs
    child = None
    for n in range(2, 8):
        agent.write_config(conf(round(0.5 - n / 100, 2)))
        agent.signal(1)
        child = helper_child(agent.pid, 10.0)
        if child is not None:
            break
    assert child is not None, "never saw the iptables helper run"
    assert child["Uid"] == 65534 and child["NoNewPrivs"] == 1
    assert child["CapEff"] == child["CapPrm"] == child["CapAmb"] == both, child
    assert child["CapBnd"] == both
    # and once it is done the agent has nothing ambient or inheritable again
    assert wait_until(lambda: sets(agent.pid)["CapAmb"] == 0 and sets(agent.pid)["CapInh"] == 0, 10)
    # a reload that turns nflog off removes the rules as the module closes, as nobody
    agent.write_config(config_text([("127.0.0.1", 16397)], polling=1, extra="agentIP = 127.0.0.1"))
    agent.signal(1)
    assert wait_until(lambda: rules() == 0, 10), agent.stderr()
    assert "close failed" not in agent.stderr(), agent.stderr()
    agent.write_config(conf(0.5))
    agent.signal(1)
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


def test_checking_the_code_is_readable_imports_nothing():
    """Whether nobody can read the agent's libraries is found from where they are, not by
    importing them: pyroute2 is 8 MB of resident memory a counters-only agent never needs."""
    import subprocess
    import sys
    probe = ("import sys\nfrom hsflowd.privileges import unreadable_code\n"
             "print(unreadable_code(65534, 65534), 'pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         timeout=60)
    assert out.stdout.split() == ["None", "False"], out.stdout + out.stderr


def test_no_user_to_become_keeps_root_and_says_so():
    """A minimal image may have no nobody: the agent stays root (cut to MOST), with a line."""
    import subprocess
    import sys
    probe = ("import logging, os\nlogging.basicConfig(format='%(levelname)s %(message)s')\n"
             "from hsflowd.privileges import drop\n"
             "kept = drop(set(), user='hsft-no-such-user')\n"
             "print(os.geteuid(), 'root' in kept)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         timeout=60)
    assert out.stdout.split() == ["0", "True"], out.stdout + out.stderr
    assert "WARNING keeping root: there is no user hsft-no-such-user to become" in out.stderr
