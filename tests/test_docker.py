"""docker {} end to end: a dockerd of the test's own (tests/docker_tools.py), busybox
containers, and the agent as a real process sending to a UDP receiver on 127.0.0.1.

One long test follows the module's life, because forgetVMs cannot be set below 60 s (its
range is hsflowd's) and everything else fits inside that wait: three containers reported
with the right identity, limits, state and counters; traffic between two of them sampled
on the bridge (dockerd's, in docker0's role) and marked with both data sources; one stopped (still reported, shut off, then
forgotten after forgetVMs), one started later (reported within a polling interval); a
SIGHUP that changes docker {}; dockerd killed and started again; and at the end the
agent idle with its threads and descriptors back where they were, then docker {} taken
out.  Another test: docker {} with no dockerd costs one log line and no thread.

Tolerances (the agent reads a moment before the receiver's probe reads the same files):
CPU time 0..CPU_MS_SLACK ms behind; memory within MEM_SLACK bytes; disk bytes 0..DISK_SLACK
behind; network counters 0..NET_PKTS_SLACK packets (and 1500 bytes each) behind; what is
due within a polling interval is waited for SOON (five polling intervals); forgetting
within a polling interval plus TIME_SLACK seconds of forgetVMs.  The cgroup files are v1's
where the host has them, v2's otherwise.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Dict, Optional

import psutil
import pytest

from agentproc import (agents, assert_holds, config_text, fd_targets, held,  # noqa: F401
                       proc_cpu_seconds, receivers, records_by_tag, run_hsflowd, samples_from,
                       settled, wait_until)
from hsflowd.sflow.flows import ExtendedEntities
from hsflowd.sources.cgroups import parse_cpuset
from hsflowd.virt.dsindex import preferred_ds_index

pytestmark = [pytest.mark.netns, pytest.mark.slow]

POLLING = 2
FORGET = 60                  # the smallest forgetVMs hsflowd's grammar allows
CPU_MS_SLACK = 300           # the burner is held to 0.5 CPU: 300 ms covers 600 ms of delay
MEM_SLACK = 2 << 20
NET_PKTS_SLACK = 10
DISK_SLACK = 1 << 20
TIME_SLACK = 3.0
SOON = 5 * POLLING
BURN = ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 100000"]


class Box:
    """One container as the test knows it: its id, data source, and where its truth is."""

    def __init__(self, dockerd, inspect: Dict):
        self.d = dockerd
        self.id = inspect["Id"]
        self.name = inspect["Name"].lstrip("/")
        self.hostname = inspect["Config"]["Hostname"]
        self.pid = inspect["State"]["Pid"]
        self.ds = (3, preferred_ds_index(bytes.fromhex(self.id[:32])))
        nets = inspect["NetworkSettings"]["Networks"]
        self.ip = next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), None)
        self.mac = next((n["MacAddress"] for n in nets.values() if n.get("MacAddress")), None)

    def cg(self, controller: str, v1_name: str, v2_name: str) -> str:
        return self.d.cgroup_file(self.id, controller, v1_name, v2_name).read_text()

    def cpus(self) -> int:
        try:
            return parse_cpuset(self.cg("cpuset", "cpuset.effective_cpus", "cpuset.cpus.effective"))
        except OSError:     # no cpuset controller in this v2 subtree: every CPU
            return os.cpu_count()

    def truth(self) -> Dict:
        """What the agent should have sent, read now (v1 files, or v2's)."""
        cpu = self.cg("cpuacct", "cpuacct.usage", "cpu.stat")
        cpu_ns = int(cpu) if cpu.strip().isdigit() else \
            int(dict(line.split() for line in cpu.splitlines())["usage_usec"]) * 1000
        out = {"cpu_ms": cpu_ns // 1_000_000,
               "memory": int(self.cg("memory", "memory.usage_in_bytes", "memory.current"))}
        disk = self.cg("blkio", "blkio.throttle.io_service_bytes_recursive", "io.stat")
        rd = wr = 0
        for line in disk.splitlines():
            words = line.split()
            if len(words) == 3 and words[1] in ("Read", "Write"):       # v1: MAJ:MIN Op N
                rd, wr = (rd + int(words[2]), wr) if words[1] == "Read" else (rd, wr + int(words[2]))
            for word in words[1:] if "=" in line else ():               # v2: key=N ...
                key, _, value = word.partition("=")
                rd += int(value) if key == "rbytes" else 0
                wr += int(value) if key == "wbytes" else 0
        out.update(rd_bytes=rd, wr_bytes=wr)
        devices = Path(f"/proc/{self.pid}/net/dev").read_text().splitlines()[2:]
        rx = tx = rxp = txp = 0
        for line in devices:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                continue
            v = rest.split()
            rx, rxp, tx, txp = rx + int(v[0]), rxp + int(v[1]), tx + int(v[8]), txp + int(v[9])
        out.update(rx_bytes=rx, rx_packets=rxp, tx_bytes=tx, tx_packets=txp)
        return out

    def inside(self, path: str) -> str:
        return self.d.exec(self.id, ["cat", path]).strip()


def _wait(receiver, until, timeout: float):
    """Collect datagrams until ``until()`` holds or ``timeout`` passes; its last value."""
    receiver.collect(timeout, until=lambda _got: until())
    return until()


def _samples(receiver, source, since: float = 0.0):
    return [s for r, s in samples_from(receiver.received, source) if r.at >= since]


def _latest(receiver, source):
    found = list(samples_from(receiver.received, source))
    return found[-1] if found else (None, None)


def _flow_samples(receiver, since: float):
    for r in receiver.received:
        if r.at < since:
            continue
        for s in r.datagram.samples:
            if hasattr(s, "flow_records"):
                yield s


def _entities(sample) -> Optional[ExtendedEntities]:
    return next((rec for rec in sample.flow_records if isinstance(rec, ExtendedEntities)), None)


def _ports(sample):
    return getattr(sample, "input") & 0x3FFFFFFF, getattr(sample, "output") & 0x3FFFFFFF


def _host_memory() -> int:
    return psutil.virtual_memory().total


def docker_conf(port: int, bridge: str, extra: str = "") -> str:
    # promisc: frames bridged between two ports reach the bridge's own taps only then
    return config_text([("127.0.0.1", port)], polling=POLLING, extra=f"""
docker {{ forgetVMs = {FORGET} {extra} }}
pcap {{ dev = {bridge} sampling = 1 promisc = on }}
""")


def test_docker_without_dockerd_costs_one_line(agents, receivers):  # noqa: F811
    """docker {} with nothing to talk to: said once, no thread, the rest goes on."""
    r = receivers()
    missing = f"{agents.workdir}/no-docker.sock"
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1, extra="docker { }"),
                   env={"DOCKER_HOST": f"unix://{missing}"})
    got = r.collect(4)
    assert any(s for rr in got for s in rr.datagram.samples), agent.stderr()
    log = agent.stderr()
    assert log.count(f"no Docker socket at {missing}") == 1, log
    assert held(agent.pid).threads == 1
    assert not [s for rr in got for s in rr.datagram.samples
                if getattr(s, "source_id_type", None) == 3]


# docker-py never closes the socket it could not connect: freed with the frame that held
# it, it says so with a ResourceWarning (Python's default filters hide it from the agent)
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_socket_that_refuses_leaves_no_descriptor(tmp_path):
    """A killed dockerd leaves its socket file behind, and a connection to it is refused.
    Each try's socket is closed with the try, not when the garbage collector next runs
    (docker-py's exception holds the frame that holds the socket: a cycle), which an idle
    agent may not do for hours.  The garbage collector is off here, as it may as well be."""
    pytest.importorskip("docker")
    from hsflowd.virt.dockerapi import DockerLink, Lost
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))                  # a socket file no one listens on
    gc.collect()
    gc.disable()
    try:
        before = held(os.getpid()).fds
        for _ in range(3):
            link = DockerLink(f"unix://{path}").start()
            said: list = []
            assert wait_until(lambda: said.extend(link.drain()) or
                              any(isinstance(m, Lost) for m in said), 10), said
            link.close()
        assert held(os.getpid()).fds == before, fd_targets(os.getpid())
    finally:
        gc.enable()


def test_docker_life_of_the_module(dockerd, agents, receivers):  # noqa: F811
    boxes: Dict[str, Box] = {}
    truths: Dict[int, Dict] = {}

    def probe(dg):
        # the truth of every container whose counters arrived, read as they arrive
        for s in dg.samples:
            src = getattr(s, "source_id_type", None), getattr(s, "source_id_index", None)
            for box in boxes.values():
                if box.ds == src and box.name not in stopped:
                    try:
                        truths.setdefault(id(s), box.truth())
                    except OSError:
                        pass
        return None

    stopped: set = set()
    a = boxes["a"] = Box(dockerd, dockerd.run(f"{dockerd.tag}-a"))
    b = boxes["b"] = Box(dockerd, dockerd.run(f"{dockerd.tag}-b", memory=64 << 20, cpus=0.5,
                                              hostname=f"{dockerd.tag}-h2", command=BURN))
    c = boxes["c"] = Box(dockerd, dockerd.run(f"{dockerd.tag}-c", network_mode="none"))
    assert len({x.ds for x in boxes.values()}) == 3, "two test containers' numbers collide"
    r = receivers(probe=probe)
    agent = agents(docker_conf(r.port, dockerd.bridge, "markTraffic = on"),
                   env={"DOCKER_HOST": dockerd.url})

    # ---- 1. every container reported: identity, limits, state, counters
    assert _wait(r, lambda: all(_samples(r, x.ds) for x in boxes.values()), 15), agent.stderr()
    # a second sample of each, for the counters
    assert _wait(r, lambda: all(len(_samples(r, x.ds)) >= 2 for x in boxes.values()), SOON)
    for box in (a, b, c):
        samples = _samples(r, box.ds)
        rec = records_by_tag(samples[-1])
        assert [t for t in rec] == [2000, 2002, 2104, 2101, 2102, 2103, 2001]
        assert rec[2000].hostname == box.name
        assert rec[2000].uuid.bytes == bytes.fromhex(box.id[:32])
        assert rec[2000].os_name == 2
        assert (rec[2002].container_type, rec[2002].container_index) == (2, 1)
        assert rec[2101].state == 1
    assert records_by_tag(_samples(r, a.ds)[-1])[2101].nrVirtCpu == a.cpus()
    assert records_by_tag(_samples(r, b.ds)[-1])[2101].nrVirtCpu == 1          # 0.5 CPU
    assert records_by_tag(_samples(r, a.ds)[-1])[2102].maxMemory == _host_memory()
    assert records_by_tag(_samples(r, b.ds)[-1])[2102].maxMemory == 64 << 20
    # host_adapters: the container's own interfaces (ifIndex in its namespace, MAC)
    adapters = records_by_tag(_samples(r, a.ds)[-1])[2001].adapters
    assert [(x.ifIndex, x.mac_addresses[0].hex()) for x in adapters] == \
        [(int(a.inside("/sys/class/net/eth0/ifindex")), a.mac.replace(":", ""))]
    assert records_by_tag(_samples(r, c.ds)[-1])[2001].adapters == []   # --network none
    # counters against the container's cgroup and its namespace's /proc/net/dev
    checked = 0
    for box in (a, b, c):
        for s in _samples(r, box.ds):
            truth = truths.get(id(s))
            if truth is None:
                continue
            rec = records_by_tag(s)
            assert 0 <= truth["cpu_ms"] - rec[2101].cpuTime <= CPU_MS_SLACK, (box.name, truth)
            assert abs(truth["memory"] - rec[2102].memory) <= MEM_SLACK, (box.name, truth)
            assert 0 <= truth["rd_bytes"] - rec[2103].rd_bytes <= DISK_SLACK, (box.name, truth)
            assert 0 <= truth["wr_bytes"] - rec[2103].wr_bytes <= DISK_SLACK, (box.name, truth)
            net = rec[2104]
            assert 0 <= truth["rx_packets"] - net.rx_packets <= NET_PKTS_SLACK
            assert 0 <= truth["tx_packets"] - net.tx_packets <= NET_PKTS_SLACK
            assert 0 <= truth["rx_bytes"] - net.rx_bytes <= 1500 * NET_PKTS_SLACK
            assert 0 <= truth["tx_bytes"] - net.tx_bytes <= 1500 * NET_PKTS_SLACK
            checked += 1
    assert checked >= 3
    assert max(records_by_tag(s)[2101].cpuTime for s in _samples(r, b.ds)) > 0
    assert _wait(r, lambda: any(records_by_tag(s)[2100].num_domains == 3
                                for s in _samples(r, (2, 1))), SOON)
    status = json.loads(run_hsflowd("status", "--json", "-p", str(agent.pidfile)).stdout)
    figures = next(m for m in status["modules"] if m["name"] == "docker")["docker"]
    assert (figures["connected"], figures["containers"], figures["running"]) == (True, 3, 3)
    assert figures["api_calls"]["inspect"] == 3 and figures["api_calls"]["list"] >= 1
    assert records_by_tag(_samples(r, (2, 1))[-1])[2100].memory == _host_memory()

    # ---- 2. traffic between a and b, sampled on the bridge, carries both data sources
    t_ping = time.monotonic()
    out = dockerd.exec(a.id, ["ping", "-c", "5", "-i", "0.2", "-W", "2", b.ip])
    assert " 0% packet loss" in out, out
    veth_a = int(a.inside("/sys/class/net/eth0/iflink"))
    veth_b = int(b.inside("/sys/class/net/eth0/iflink"))

    def marked():
        pairs = set()
        for s in _flow_samples(r, t_ping):
            e = _entities(s)
            if e is not None:
                pairs.add((e.src_dsIndex, e.dst_dsIndex, _ports(s)))
        return pairs

    assert _wait(r, lambda: {(a.ds[1], b.ds[1], (veth_a, veth_b)),
                             (b.ds[1], a.ds[1], (veth_b, veth_a))} <= marked(), SOON), marked()
    for s in _flow_samples(r, t_ping):
        e = _entities(s)
        if e is not None and e.src_dsIndex:
            assert e.src_dsClass == 3

    # ---- 3. c stops: still reported, shut off; d starts later: reported at once
    t_stop = time.monotonic()
    dockerd.stop_container(c.id)
    stopped.add(c.name)
    assert _wait(r, lambda: any(records_by_tag(s)[2101].state == 5
                                for s in _samples(r, c.ds, t_stop)), SOON)
    t_start = time.monotonic()
    d = boxes["d"] = Box(dockerd, dockerd.run(f"{dockerd.tag}-d"))
    assert _wait(r, lambda: _samples(r, d.ds, t_start), SOON), agent.stderr()
    first = next(rr.at for rr, _ in samples_from(r.received, d.ds))
    assert first - t_start <= SOON      # at once, not at the next list (refreshVMs)

    # ---- 4. SIGHUP: hostname = on, markTraffic = off
    agent.write_config(docker_conf(r.port, dockerd.bridge, "hostname = on"))
    t_hup = time.monotonic()
    agent.signal(signal.SIGHUP)
    assert _wait(r, lambda: any(records_by_tag(s)[2000].hostname == b.hostname
                                for s in _samples(r, b.ds, t_hup)), SOON)
    t_ping = time.monotonic()
    dockerd.exec(a.id, ["ping", "-c", "3", "-i", "0.2", "-W", "2", b.ip])
    assert _wait(r, lambda: list(_flow_samples(r, t_ping)), SOON)
    flows = list(_flow_samples(r, t_ping))
    assert flows and not any(_entities(s) for s in flows)

    # ---- 5. dockerd killed, then started again: survived
    baseline = settled(agent.pid)
    dockerd.kill()
    assert agent.wait_for_log("docker {}: lost dockerd", SOON), agent.stderr()
    time.sleep(1)
    dockerd.start()
    t_back = time.monotonic()
    assert _wait(r, lambda: agent.stderr().count("connected to dockerd") >= 2, 15), agent.stderr()
    e = boxes["e"] = Box(dockerd, dockerd.run(f"{dockerd.tag}-e"))
    assert _wait(r, lambda: _samples(r, e.ds, t_back), SOON), agent.stderr()
    # what dockerd did to the others on its way back (no live-restore: they were stopped)
    # is what the agent reports after its list and an inspect of each (one worker thread,
    # against a dockerd that has just started: seconds on a busy machine)
    states = dockerd.client().containers(all=True)
    running = {x["Id"] for x in states if x["State"] == "running"}
    for box in (a, b, d):
        want = 1 if box.id in running else (4, 5)
        assert _wait(r, lambda box=box, want=want: any(
            records_by_tag(s)[2101].state in ((want,) if isinstance(want, int) else want)
            for s in _samples(r, box.ds, time.monotonic() - 1)), 3 * SOON), \
            (box.name, want, [records_by_tag(s)[2101].state for s in _samples(r, box.ds, t_back)],
             dockerd.client().containers(all=True), agent.stderr()[-3000:])
    assert_holds(agent.pid, baseline, SOON, context=lambda: agent.stderr()[-3000:])
    cpu0, t0 = proc_cpu_seconds(agent.pid), time.monotonic()
    r.collect(3)
    assert (proc_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0) < 0.1   # idle

    # ---- 6. c is forgotten forgetVMs after it stopped, not before
    until = t_stop + FORGET + POLLING + TIME_SLACK
    r.collect(max(0.0, until - time.monotonic()))
    times = [rr.at - t_stop for rr, _ in samples_from(r.received, c.ds) if rr.at >= t_stop]
    assert max(times) >= FORGET - POLLING - TIME_SLACK, times
    assert max(times) <= FORGET + POLLING + 1, times
    assert f"container {c.name} forgotten" in agent.stderr()

    # ---- 7. docker {} taken out: its threads and descriptors go, 3:N and 2100 stop
    threads, fds = settled(agent.pid)
    agent.write_config(config_text([("127.0.0.1", r.port)], polling=POLLING,
                                   extra=f"pcap {{ dev = {dockerd.bridge} sampling = 1 "
                                         "promisc = on }"))
    revisions = agent.stderr().count("configuration revision")
    agent.signal(signal.SIGHUP)
    assert _wait(r, lambda: agent.stderr().count("configuration revision") > revisions, SOON)
    time.sleep(1.5)       # a datagram of the tick before the reload may still be on its way
    t_out = time.monotonic()
    r.collect(POLLING + 1.5)
    assert settled(agent.pid).threads == threads - 2
    assert settled(agent.pid).fds < fds
    assert not any(_samples(r, x.ds, t_out) for x in boxes.values())
    assert all(2100 not in records_by_tag(s) for s in _samples(r, (2, 1), t_out))
    assert "Traceback" not in agent.stderr()
    assert agent.alive()
