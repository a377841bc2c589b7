"""k8s {} and containerd {} end to end: a containerd of the test's own (tests/containerd_tools.py:
its socket, root and state in a temporary directory, stopped by PID), pods made as the kubelet
and a bridge CNI plugin make them, and the agent as a real process sending to a UDP receiver
on 127.0.0.1.  One containerd serves the whole module.

The life test follows one agent: two pods reported with hsflowd's names and UUIDs (the
expected UUID is libuuid's, computed by hand for this host UUID and agent address: see
test_containerd.py), their state and counters against their cgroups and their namespace's
/proc/net/dev; their veths tapped by a dynamic pcap {} and named after the pods; traffic
between them sampled on the bridge, marked with both data sources; a pod deleted (shut down,
then forgotten after forgetVMs) and one started later (reported within a polling interval);
reloads that turn markTraffic off and on; containerd killed and started again.  After each:
the agent idle, its threads and descriptors back.  Other tests: containerd {} (one data
source per container), k8s {} with docker {} and tcp {} on at once (and standing down when
dockerd's socket is there), and k8s {} with no containerd.

Tolerances (the agent reads a moment before the receiver's probe reads the same files):
CPU time 0..CPU_MS_SLACK ms behind, summed over a pod's containers; memory within MEM_SLACK
bytes per container; network counters 0..NET_PKTS_SLACK packets (1500 bytes each) behind;
times within a polling interval plus TIME_SLACK seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

import containerd_tools as ct
from daemons import start_or_skip
from parallel import ROOT_LINKS
from agentproc import (Held, agents, assert_holds, assert_idle, config_text, held,  # noqa: F401
                       measure_activity, receivers, records_by_tag, run_hsflowd, samples_from,
                       settled)
from hsflowd.sflow.flows import ExtendedEntities
from hsflowd.virt.dsindex import preferred_ds_index

# its node's bridge and veths are in the machine's namespace, as are dockerd's (tests/parallel.py)
pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.xdist_group(ROOT_LINKS)]

POLLING = 2
FORGET = 60                  # the smallest forgetVMs hsflowd's grammar allows
HOST_UUID = "8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10"
AGENT_IP = "192.0.2.2"       # agentIP: the address the pods' UUIDs hash in
WEB_UUID = "6573dc6c-3231-56b0-b7b3-ecf72d5bb81e"   # libuuid's, for k8s__web-0_default_u_a
CPU_MS_SLACK = 300
MEM_SLACK = 2 << 20
NET_PKTS_SLACK = 10
TIME_SLACK = 3.0
BURN = ("/bin/sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec /bin/sleep 100000")


@pytest.fixture(scope="module")
def containerd():
    c = start_or_skip("containerd", ct.why_not, ct.Containerd, ct.ContainerdUnavailable)
    yield c
    c.stop()


@pytest.fixture
def node(containerd):
    n = ct.Node(f"hsftk{os.getpid() % 10000}")
    yield n
    n.close(containerd)


def k8s_conf(port: int, ctd, bridge: str, k8s: str = "markTraffic = on", extra: str = "") -> str:
    return config_text([("127.0.0.1", port)], polling=POLLING, extra=f"""
uuid = {HOST_UUID}
agentIP = {AGENT_IP}
forgetVMs = {FORGET}
k8s {{ unixsock = {ctd.socket} {k8s} }}
pcap {{ dev = {bridge} sampling = 1 promisc = on }}
pcap {{ dynamic = on sampling = 100 }}
{extra}
""")


def pod_ds(name: str, namespace: str) -> tuple:
    """The data source hsflowd gives the pod: 3:N from its type-5 UUID."""
    from hsflowd.virt.dsindex import name_uuid
    import ipaddress
    u = name_uuid(uuid.UUID(HOST_UUID), f"k8s__{name}_{namespace}_u_a",
                  ipaddress.ip_address(AGENT_IP).packed)
    return 3, preferred_ds_index(u)


class Truth:
    """What a pod's sample should say, read by the test from its cgroups and namespace."""

    def __init__(self, ctd, pod):
        self.ctd, self.pod = ctd, pod
        self.ds = pod_ds(pod.name, pod.namespace)
        self.name = f"k8s__{pod.name}_{pod.namespace}_u_a"
        self.sandbox_pid = ctd.task_pid(pod.sandbox)

    def read(self) -> Dict:
        cpu_ns = memory = 0
        for name in [self.pod.sandbox] + self.pod.containers:
            cpu_ns += _cpu_ns(self.ctd.cgroup_file(name, "cpuacct", "cpuacct.usage",
                                                   "cpu.stat").read_text())
            memory += int(self.ctd.cgroup_file(name, "memory", "memory.usage_in_bytes",
                                               "memory.current").read_text())
        rx = tx = rxp = txp = 0
        for line in Path(f"/proc/{self.sandbox_pid}/net/dev").read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() != "lo":
                v = rest.split()
                rx, rxp, tx, txp = rx + int(v[0]), rxp + int(v[1]), tx + int(v[8]), txp + int(v[9])
        return {"cpu_ms": cpu_ns // 1_000_000, "memory": memory, "rx_bytes": rx,
                "rx_packets": rxp, "tx_bytes": tx, "tx_packets": txp}

    def inside(self, path: str) -> str:
        return self.pod.netns.run(["cat", path]).stdout.strip()


def _cpu_ns(text: str) -> int:
    """v1 cpuacct.usage (ns), or v2 cpu.stat's usage_usec."""
    if text.strip().isdigit():
        return int(text)
    return int(dict(line.split() for line in text.splitlines())["usage_usec"]) * 1000


def _cpu_ms(text: str) -> int:
    return _cpu_ns(text) // 1_000_000


def _wait(receiver, until, timeout: float):
    receiver.collect(timeout, until=lambda _got: until())
    return until()


def _samples(receiver, source, since: float = 0.0):
    return [s for r, s in samples_from(receiver.received, source) if r.at >= since]


def _flow_samples(receiver, since: float):
    for r in receiver.received:
        if r.at >= since:
            for s in r.datagram.samples:
                if hasattr(s, "flow_records"):
                    yield s


def _marked(receiver, since: float) -> set:
    pairs = set()
    for s in _flow_samples(receiver, since):
        e = next((x for x in s.flow_records if isinstance(x, ExtendedEntities)), None)
        if e is not None:
            pairs.add((e.src_dsIndex, e.dst_dsIndex))
    return pairs


def _ping(pod, ip: str, count: int = 5) -> None:
    out = pod.netns.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", ip], check=False).stdout
    assert " 0% packet loss" in out, out


def _status(agent) -> Dict:
    return json.loads(run_hsflowd("status", "--json", "-p", str(agent.pidfile)).stdout)


def _module(agent, name: str) -> Dict:
    return next(m for m in _status(agent)["modules"] if m["name"] == name)


def test_k8s_life_of_the_module(containerd, node, agents, receivers):  # noqa: F811
    truths: Dict[int, Dict] = {}
    watched: List[Truth] = []

    def probe(dg):
        for s in dg.samples:
            src = getattr(s, "source_id_type", None), getattr(s, "source_id_index", None)
            for t in watched:
                if t.ds == src and t.pod in node.pods:
                    try:
                        truths.setdefault(id(s), t.read())
                    except OSError:
                        pass

    web = node.make_pod(containerd, "web-0", "default", ("app",), BURN,
                        memory=64 << 20, cpus=0.5)
    db = node.make_pod(containerd, "db-0", "prod", ("db", "sidecar"))
    tw, td = Truth(containerd, web), Truth(containerd, db)
    watched += [tw, td]
    assert tw.ds != td.ds
    r = receivers(probe=probe)
    agent = agents(k8s_conf(r.port, containerd, node.bridge))

    # ---- 1. both pods: name, hsflowd's UUID, state, counters, adapters
    assert _wait(r, lambda: _samples(r, tw.ds) and _samples(r, td.ds), 15), agent.stderr()
    r.collect(POLLING + 0.5)
    for t in (tw, td):
        rec = records_by_tag(_samples(r, t.ds)[-1])
        assert list(rec) == [2000, 2002, 2104, 2101, 2102, 2103, 2001]
        assert rec[2000].hostname == t.name
        assert (rec[2002].container_type, rec[2002].container_index) == (2, 1)
        assert rec[2101].state == 1
        adapters = [(a.ifIndex, a.mac_addresses[0].hex()) for a in rec[2001].adapters]
        assert adapters == [(int(t.inside("/sys/class/net/eth0/ifindex")),
                             t.inside("/sys/class/net/eth0/address").replace(":", ""))]
    assert str(records_by_tag(_samples(r, tw.ds)[-1])[2000].uuid) == WEB_UUID
    web_rec = records_by_tag(_samples(r, tw.ds)[-1])
    # web-0: its app has 64 MiB and half a CPU.  Its sandbox has no limit, as the kubelet
    # makes it, and is no workload: the pod's limits are its app's (half a CPU: 1)
    assert (web_rec[2102].maxMemory, web_rec[2101].nrVirtCpu) == (64 << 20, 1)
    checked = 0
    for t in (tw, td):
        for s in _samples(r, t.ds):
            truth = truths.get(id(s))
            if truth is None:
                continue
            rec = records_by_tag(s)
            members = 1 + len(t.pod.containers)
            assert 0 <= truth["cpu_ms"] - rec[2101].cpuTime <= CPU_MS_SLACK, (t.name, truth)
            assert abs(truth["memory"] - rec[2102].memory) <= MEM_SLACK * members, (t.name, truth)
            net = rec[2104]
            assert 0 <= truth["rx_packets"] - net.rx_packets <= NET_PKTS_SLACK, (t.name, truth)
            assert 0 <= truth["tx_packets"] - net.tx_packets <= NET_PKTS_SLACK, (t.name, truth)
            assert 0 <= truth["rx_bytes"] - net.rx_bytes <= 1500 * NET_PKTS_SLACK
            assert 0 <= truth["tx_bytes"] - net.tx_bytes <= 1500 * NET_PKTS_SLACK
            checked += 1
    assert checked >= 2
    assert max(records_by_tag(s)[2101].cpuTime for s in _samples(r, tw.ds)) > 0
    assert _wait(r, lambda: any(records_by_tag(s)[2100].num_domains == 2
                                for s in _samples(r, (2, 1))), POLLING + TIME_SLACK)
    figures = _module(agent, "k8s")["k8s"]
    assert (figures["connected"], figures["guests"], figures["running"], figures["containers"]) \
        == (True, 2, 2, 5)
    # the pods' veths: tapped by the dynamic rule, polled, named after their pods (1005)
    for t in (tw, td):
        assert agent.wait_for_log(f"pcap: sampling {t.pod.veth} 1-in-100", 5), agent.stderr()
    veth_index = {int(Path(f"/sys/class/net/{t.pod.veth}/ifindex").read_text()): t.name
                  for t in (tw, td)}
    assert _wait(r, lambda: all(any(records_by_tag(s)[1005].name == name
                                    for s in _samples(r, (0, ifindex)))
                                for ifindex, name in veth_index.items()), POLLING + TIME_SLACK)

    # ---- 2. traffic between the pods, sampled on the bridge, carries both data sources
    t_ping = time.monotonic()
    _ping(web, db.ip)
    both = {(tw.ds[1], td.ds[1]), (td.ds[1], tw.ds[1])}
    assert _wait(r, lambda: both <= _marked(r, t_ping), 5), _marked(r, t_ping)

    # ---- 3. db-0 deleted: reported shut down; late-0 started: reported at once
    t_delete = time.monotonic()
    node.delete_pod(containerd, db)
    assert _wait(r, lambda: any(records_by_tag(s)[2101].state == 4
                                for s in _samples(r, td.ds, t_delete)), POLLING + TIME_SLACK)
    t_start = time.monotonic()
    late = node.make_pod(containerd, "late-0", "default")
    tl = Truth(containerd, late)
    assert _wait(r, lambda: _samples(r, tl.ds, t_start), POLLING + TIME_SLACK), agent.stderr()
    rest = assert_idle(agent.pid, 3, context=agent.stderr)

    # ---- 4. reloads: markTraffic off (no 2210), then on again
    before = settled(agent.pid)
    for mark, wanted in (("markTraffic = off", False), ("markTraffic = on", True)):
        agent.write_config(k8s_conf(r.port, containerd, node.bridge, mark))
        revisions = agent.stderr().count("configuration revision")
        agent.signal(signal.SIGHUP)
        assert _wait(r, lambda: agent.stderr().count("configuration revision") > revisions, 5)
        r.collect(1.5)       # samples taken before the reload, still on their way
        t_ping = time.monotonic()
        _ping(web, late.ip, 3)
        pair = {(tw.ds[1], tl.ds[1])}
        if wanted:
            assert _wait(r, lambda: pair <= _marked(r, t_ping), 5), _marked(r, t_ping)
        else:
            r.collect(1.5)
            assert list(_flow_samples(r, t_ping)) and not _marked(r, t_ping)
        assert_idle(agent.pid, 3, rest, context=agent.stderr)
        assert_holds(agent.pid, before)

    # ---- 5. containerd killed and started again: survived
    baseline = settled(agent.pid)
    containerd.kill()
    assert agent.wait_for_log("k8s {}: lost containerd", 5), agent.stderr()
    containerd.start()
    t_back = time.monotonic()
    assert _wait(r, lambda: agent.stderr().count("k8s {}: connected to containerd") >= 2, 15)
    again = node.make_pod(containerd, "again-0", "default")
    ta = Truth(containerd, again)
    assert _wait(r, lambda: _samples(r, ta.ds, t_back), POLLING + TIME_SLACK), agent.stderr()
    t_check = time.monotonic()
    for t in (tw, tl):    # their tasks lived on under their shims
        assert _wait(r, lambda t=t: any(records_by_tag(s)[2101].state == 1
                                        for s in _samples(r, t.ds, t_check)),
                     POLLING + TIME_SLACK), [records_by_tag(s)[2101].state
                                             for s in _samples(r, t.ds, t_back)]
    # the same threads and descriptors, and two more for again-0's veth (its tap: a
    # socket and the ring's)
    assert_holds(agent.pid, Held(baseline.threads, baseline.fds + 2))
    assert_idle(agent.pid, 3, rest, context=agent.stderr)

    # ---- 6. db-0 is forgotten forgetVMs after it stopped, not before
    until = t_delete + FORGET + POLLING + TIME_SLACK
    r.collect(max(0.0, until - time.monotonic()))
    times = [rr.at - t_delete for rr, _ in samples_from(r.received, td.ds) if rr.at >= t_delete]
    assert FORGET - POLLING - TIME_SLACK <= max(times) <= FORGET + POLLING + 1, times
    assert "pod k8s__db-0_prod_u_a forgotten" in agent.stderr()
    assert "Traceback" not in agent.stderr()
    assert agent.alive()


RESTARTS = 5
CRASH = ("/bin/sh", "-c", "sleep 1; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exit 1")


def _task_status(ctd, name: str) -> str:
    for line in ctd.ctr("task", "ls").stdout.splitlines()[1:]:
        words = line.split()
        if words and words[0] == name:
            return words[2]
    return ""


def test_k8s_a_crash_looping_container(containerd, node, agents, receivers):  # noqa: F811
    """A container that fails again and again, restarted as the kubelet restarts one: a new
    container in the pod each time, the one before deleted a moment after it exited.  The
    pod's CPU time never goes back and takes in what each of them used (read as it exits:
    each does its work in its last moments, after the last poll that saw it), and the agent
    keeps only the containers the pod has."""
    pod = node.make_pod(containerd, "crash-0", "default", ())      # its sandbox, for now
    t = Truth(containerd, pod)
    r = receivers()
    agent = agents(k8s_conf(r.port, containerd, node.bridge))
    assert _wait(r, lambda: _samples(r, t.ds), 10), agent.stderr()
    used_ns = 0
    for attempt in range(RESTARTS):
        name = f"{pod.sandbox}-app{attempt}"
        containerd.run(name, CRASH, annotations=pod.annotations("container", "app"),
                       netns=pod.netns.name)
        deadline = time.monotonic() + 20
        while _task_status(containerd, name) != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _task_status(containerd, name) == "STOPPED"
        used_ns += _cpu_ns(containerd.cgroup_file(name, "cpuacct", "cpuacct.usage",
                                                  "cpu.stat").read_text())
        time.sleep(0.3)
        containerd.remove(name)
    sandbox_ns = _cpu_ns(containerd.cgroup_file(pod.sandbox, "cpuacct", "cpuacct.usage",
                                                "cpu.stat").read_text())
    t_done = time.monotonic()
    r.collect(POLLING + 1)
    times = [records_by_tag(s)[2101].cpuTime for s in _samples(r, t.ds)]
    assert times == sorted(times), times
    final = [records_by_tag(s)[2101] for s in _samples(r, t.ds, t_done)]
    assert final and final[-1].state == 1
    truth_ms = (used_ns + sandbox_ns) // 1_000_000
    assert used_ns > 0 and 0 <= truth_ms - final[-1].cpuTime <= CPU_MS_SLACK, \
        (truth_ms, times)
    assert _module(agent, "k8s")["k8s"]["containers"] == 1, agent.stderr()
    assert "Traceback" not in agent.stderr()


def test_containerd_reports_each_container(containerd, node, agents, receivers):  # noqa: F811
    """containerd {}: a data source per container, CRI or not, named as hsflowd names them."""
    from hsflowd.virt.dsindex import name_uuid
    import ipaddress
    pod = node.make_pod(containerd, "web-1", "default", ("app",))
    containerd.run("plain1", namespace="default", memory=32 << 20)
    try:
        r = receivers()
        agent = agents(config_text([("127.0.0.1", r.port)], polling=POLLING, extra=f"""
uuid = {HOST_UUID}
agentIP = {AGENT_IP}
containerd {{ unixsock = {containerd.socket} }}
"""))
        plain = (3, preferred_ds_index(name_uuid(uuid.UUID(HOST_UUID), "plain1",
                                                  ipaddress.ip_address(AGENT_IP).packed)))
        app_id = pod.containers[0]
        app = (3, preferred_ds_index(name_uuid(uuid.UUID(HOST_UUID), app_id,
                                                ipaddress.ip_address(AGENT_IP).packed)))
        assert _wait(r, lambda: _samples(r, plain) and _samples(r, app), 10), agent.stderr()
        rec = records_by_tag(_samples(r, plain)[-1])
        assert rec[2000].hostname == "plain1" and rec[2101].state == 1
        assert rec[2102].maxMemory == 32 << 20
        assert rec[2001].adapters == []          # ctr's own namespace: loopback only
        assert records_by_tag(_samples(r, app)[-1])[2000].hostname == "k8s_app_web-1_default_u_a"
        cpu = _cpu_ms(containerd.cgroup_file("plain1", "cpuacct", "cpuacct.usage", "cpu.stat",
                                             "default").read_text())
        assert 0 <= cpu - records_by_tag(_samples(r, plain)[-1])[2101].cpuTime <= CPU_MS_SLACK
        t_stop = time.monotonic()
        containerd.remove("plain1", "default")
        assert _wait(r, lambda: any(records_by_tag(s)[2101].state == 4
                                    for s in _samples(r, plain, t_stop)), POLLING + TIME_SLACK)
        # virt_node counts the containers running: the pod's two
        assert _wait(r, lambda: any(records_by_tag(s)[2100].num_domains == 2
                                    for s in _samples(r, (2, 1), t_stop)), POLLING + TIME_SLACK)
        assert "Traceback" not in agent.stderr()
    finally:
        containerd.remove("plain1", "default")


def test_k8s_with_docker_and_tcp(containerd, node, agents, receivers, tmp_path):  # noqa: F811
    """k8s {} beside docker {} and tcp {}: with no dockerd socket it works and marks traffic;
    with one, it stands down (as hsflowd's does) and comes back when it goes."""
    a = node.make_pod(containerd, "a-0", "default")
    b = node.make_pod(containerd, "b-0", "default")
    ta, tb = Truth(containerd, a), Truth(containerd, b)
    docker_sock = tmp_path / "docker.sock"
    r = receivers()
    conf = k8s_conf(r.port, containerd, node.bridge, extra="docker { }\ntcp { }")
    agent = agents(conf, env={"DOCKER_HOST": f"unix://{docker_sock}"})
    assert _wait(r, lambda: _samples(r, ta.ds) and _samples(r, tb.ds), 10), agent.stderr()
    assert agent.wait_for_log(f"no Docker socket at {docker_sock}", 3)
    t_ping = time.monotonic()
    _ping(a, b.ip, 3)
    assert _wait(r, lambda: {(ta.ds[1], tb.ds[1])} <= _marked(r, t_ping), 5)
    names = {m["name"]: m for m in _status(agent)["modules"]}
    assert all(names[n]["running"] and not names[n]["error"] for n in ("k8s", "docker", "tcp"))
    rest = assert_idle(agent.pid, 3, context=agent.stderr)
    baseline = settled(agent.pid)
    # dockerd's socket appears: on the next revision k8s {} stands down, docker {} sends 2100
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(docker_sock))
    try:
        agent.signal(signal.SIGHUP)
        assert agent.wait_for_log("k8s {}: docker {} is on and dockerd's socket", 5)
        r.collect(1.5)          # what was on its way before (datagrams go out each second)
        t_down = time.monotonic()
        r.collect(POLLING + 1)
        assert not _samples(r, ta.ds, t_down), agent.stderr()[-3000:]
        assert all(records_by_tag(s)[2100].num_domains == 0 for s in _samples(r, (2, 1), t_down))
    finally:
        listener.close()
        docker_sock.unlink()
    agent.signal(signal.SIGHUP)
    t_up = time.monotonic()
    assert _wait(r, lambda: _samples(r, ta.ds, t_up), POLLING + TIME_SLACK + 2), agent.stderr()
    t_ping = time.monotonic()
    _ping(a, b.ip, 3)
    assert _wait(r, lambda: {(ta.ds[1], tb.ds[1])} <= _marked(r, t_ping), 5)
    assert_holds(agent.pid, baseline)
    assert_idle(agent.pid, 3, rest, context=agent.stderr)
    assert "Traceback" not in agent.stderr()


def test_k8s_without_containerd_costs_one_line(agents, receivers, tmp_path):  # noqa: F811
    r = receivers()
    missing = tmp_path / "no-containerd.sock"
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1,
                               extra=f"k8s {{ unixsock = {missing} }}"))
    got = r.collect(4)
    assert any(s for rr in got for s in rr.datagram.samples), agent.stderr()
    assert agent.stderr().count(f"no containerd socket at {missing}") == 1, agent.stderr()
    assert held(agent.pid).threads == 1
    assert measure_activity(agent.pid, 2).wakeups <= 5
