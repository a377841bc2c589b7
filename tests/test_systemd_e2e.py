"""systemd {} against a real systemd: Debian 12's systemd 252 booted with systemd-nspawn
(tests/nspawn_tools.py, one container per session), services made with systemd-run, the
agent from this tree running inside as a transient service of its own, and a collector
socket in the container's network namespace.

One long test follows the module's life, because each step is a few seconds of polling:
the services reported (each one, its UUID and N, its counters against its cgroup and its
processes' /proc files, read by the test inside the container, not by the agent's code);
markTraffic on a veth inside the container (a web service's and a client service's
packets carry 2210); then a service stopped and started again, `systemctl daemon-reload`,
the agent reloaded (SIGHUP) and the system bus restarted, after each of which the agent
still reports the services, is idle again and has the threads and descriptors it had.
Another test, on the host: systemd {} with no system bus costs one line and no thread.

Inside nspawn on these test machines the services' v2 groups have cpu.stat only (the
memory and io controllers stay with the host's v1 hierarchies), so memory and disk come
from the processes, as the reference falls back to: the truth is read the same way, from
the processes the group lists.  Where a group has memory.current or io.stat, those are
the truth instead.  CPUQuota and MemoryMax are not enforced there; virt_cpu and
virt_memory must then say the host's CPUs and memory, not the unit's settings.

Tolerances (the agent reads a moment before the test does): CPU 0..CPU_MS_SLACK ms
behind, memory within MEM_SLACK, disk bytes exact for services whose processes stay.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Dict, List, Tuple

import pytest

from agentproc import (Receiver, activity_during, agents, assert_holds, assert_idle,  # noqa: F401
                       check_idle, config_text, held, receivers, records_by_tag, settled,
                       source_of)
from hsflowd.frames import ETHERNET, walk_frame
from hsflowd.sflow.flows import ExtendedEntities, SampledHeader
from hsflowd.virt.dsindex import preferred_ds_index

pytestmark = [pytest.mark.netns, pytest.mark.slow]

POLLING = 1
AGENT = "hsft-agent"
CONF = "etc/hsft-agent.conf"           # under the container's root
PIDFILE = "/run/hsft-agent.pid"
CPU_MS_SLACK = 600
MEM_SLACK = 3 << 20
NET = "10.231.77"
BUSY = "while :; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.2; done"
HOLD = "import time; b = b'x' * (24 << 20); time.sleep(100000)"
SINK = ("import socket\ns = socket.create_server(('{net}.2', 9000))\n"
        "while True:\n c, _ = s.accept()\n while c.recv(4096): pass\n")
CLIENT = ("import socket, time\ns = socket.create_connection(('{net}.2', 9000))\n"
          "while True:\n s.sendall(b'x' * 100)\n time.sleep(0.05)\n")

# Read inside the container: each active service's group and processes, as JSON
TRUTH = r'''
import json, os, subprocess
V2 = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None
names = [line.split()[0] for line in subprocess.run(
    ["systemctl", "list-units", "--type=service", "--state=active", "--no-legend", "--plain"],
    capture_output=True, text=True).stdout.splitlines() if line.strip()]
shown = subprocess.run(["systemctl", "show", "-p", "Id", "-p", "ControlGroup", *names],
                       capture_output=True, text=True).stdout.split("\n\n")
out = {"memtotal": int(read("/proc/meminfo").split()[1]) * 1024, "cpus": os.cpu_count(),
       "services": {}}
for block in shown:
    fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    cg = fields.get("ControlGroup", "")
    if "system.slice" not in cg:
        continue
    where = V2 + cg
    pids = []
    for here, _, _ in os.walk(where):
        pids += [int(p) for p in (read(here + "/cgroup.procs") or "").split()]
    if not pids:
        continue
    rss = rd = wr = 0
    for pid in pids:
        statm = read(f"/proc/{pid}/statm")
        rss += int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") if statm else 0
        io = dict(l.split(": ") for l in (read(f"/proc/{pid}/io") or "").splitlines())
        rd += int(io.get("read_bytes", 0))
        wr += int(io.get("write_bytes", 0))
    cpu = dict(l.split() for l in read(where + "/cpu.stat").splitlines())
    out["services"][fields["Id"]] = {
        "cgroup": cg, "pids": sorted(pids), "cpu_ms": int(cpu["usage_usec"]) // 1000,
        "rss": rss, "rd_bytes": rd, "wr_bytes": wr,
        "memory_current": read(where + "/memory.current"),
        "memory_max": read(where + "/memory.max"), "cpu_max": read(where + "/cpu.max"),
        "io_stat": read(where + "/io.stat")}
print(json.dumps(out))
'''


class Inside:
    """The container as this test uses it: its agent, its services, and the truth."""

    def __init__(self, machine, receiver: Receiver):
        self.m = machine
        self.r = receiver

    def truth(self) -> Dict:
        return json.loads(self.m.run("python3", "-c", TRUTH).stdout)

    def start(self, unit: str, *cmd: str, props: Tuple[str, ...] = ()) -> None:
        args = ["systemd-run", "--quiet", f"--unit={unit}"]
        for p in props:
            args += ["-p", p]
        self.m.run(*args, *cmd)

    def stop(self, unit: str) -> None:
        self.m.run("systemctl", "stop", unit, check=False)

    def agent_pid(self) -> int:
        inside = int(self.m.run("systemctl", "show", "-p", "MainPID", "--value", AGENT).stdout)
        return self.m.host_pid(inside)

    def log(self) -> str:
        """What this run of the agent logged (the journal may hold earlier ones)."""
        run = self.m.run("systemctl", "show", "-p", "InvocationID", "--value", AGENT).stdout
        return self.m.run("journalctl", f"_SYSTEMD_INVOCATION_ID={run.strip()}", "-o", "cat",
                          "--no-pager").stdout

    def wait_log(self, needle: str, timeout: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while self.log().count(needle) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.log().count(needle) >= count

    def status(self) -> Dict:
        out = self.m.run("env", "PYTHONPATH=/src", "python3", "-m", "hsflowd", "status", "-p",
                         PIDFILE, "--json").stdout
        return next(m for m in json.loads(out)["modules"] if m["name"] == "systemd")["systemd"]

    def cycle(self, seconds: float = POLLING * 2 + 0.5) -> Dict[str, Tuple[Tuple[int, int], object]]:
        """A polling cycle's worth of datagrams: hostname -> (source, its latest sample)
        of every 3:N, and the host sample under "" (the 2:1)."""
        self.r.drain()                  # what waited in the socket is from before
        since = time.monotonic()
        self.r.collect(seconds)
        latest = {}
        for got in self.r.received:
            if got.at < since:
                continue
            for s in got.datagram.samples:
                if not hasattr(s, "counters"):
                    continue
                source = source_of(s)
                if source == (2, 1):
                    latest[""] = (source, s)
                elif source[0] == 3:
                    latest[records_by_tag(s)[2000].hostname] = (source, s)
        return latest


def expected_uuid(host_uuid: uuid.UUID, name: str, agent_ip: str) -> uuid.UUID:
    """hsflowd's type-5 UUID, worked out here by hand: SHA-1 of the namespace (the host's
    UUID), the name and the agent address, with the version and variant bits set."""
    import hashlib
    raw = bytearray(hashlib.sha1(host_uuid.bytes + name.encode() +
                                 bytes(int(x) for x in agent_ip.split("."))).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


def check_services(box: Inside, latest, truth) -> None:
    """Every service with processes is reported, named and numbered as hsflowd would, with
    its cgroup's and processes' counters."""
    host_uuid = records_by_tag(latest[""][1])[2000].uuid
    assert set(latest) - {""} == set(truth["services"]), (sorted(latest), sorted(truth["services"]))
    assert records_by_tag(latest[""][1])[2100].num_domains == len(truth["services"])
    for name, facts in truth["services"].items():
        source, sample = latest[name]
        want = expected_uuid(host_uuid, name, "127.0.0.1")
        assert source == (3, preferred_ds_index(want.bytes)), name
        tags = [rec.tag if hasattr(rec, "tag") else rec.format for rec in sample.counters]
        assert tags == [2000, 2002, 2101, 2102, 2103], (name, tags)
        r = records_by_tag(sample)
        assert r[2000].uuid == want and r[2000].os_name == 2
        assert (r[2002].container_type, r[2002].container_index) == (2, 1)
        assert r[2101].state == 1
        assert 0 <= facts["cpu_ms"] - r[2101].cpuTime <= CPU_MS_SLACK, (name, facts, r[2101])
        cpu_max = facts["cpu_max"]
        quota = None if not cpu_max or cpu_max.startswith("max") else \
            int(cpu_max.split()[0]) / int(cpu_max.split()[1])
        assert r[2101].nrVirtCpu == (max(1, int(quota + 0.5)) if quota else truth["cpus"]), name
        memory = int(facts["memory_current"]) if facts["memory_current"] else facts["rss"]
        assert abs(r[2102].memory - memory) <= MEM_SLACK, (name, memory, r[2102])
        limit = facts["memory_max"]
        assert r[2102].maxMemory == (int(limit) if limit and limit.strip() != "max"
                                     else truth["memtotal"]), name
        if not facts["io_stat"] and name in ("hsft-idle.service", "hsft-limited.service"):
            assert (r[2103].rd_bytes, r[2103].wr_bytes) == (facts["rd_bytes"], facts["wr_bytes"])


def marked(receiver: Receiver, since: float) -> List[Tuple[object, ExtendedEntities]]:
    """(walk of the sampled header, its 2210 or None) of the packet samples since then."""
    out = []
    for got in receiver.received:
        if got.at < since:
            continue
        for s in got.datagram.samples:
            if not hasattr(s, "flow_records"):
                continue
            header = next((r for r in s.flow_records if isinstance(r, SampledHeader)), None)
            if header is None:
                continue
            pkt = walk_frame(bytes(header.header), 0, len(header.header), ETHERNET)
            ent = next((r for r in s.flow_records if isinstance(r, ExtendedEntities)), None)
            out.append((pkt, ent))
    return out


@pytest.fixture
def inside(booted_machine):
    """The agent's world in the booted container: a veth to a namespace of its own, a
    collector socket, the agent's config; everything the test starts is stopped after."""
    m = booted_machine
    m.sh("ip link add hsft0 type veth peer name hsft1 && ip netns add hsftpeer && "
         f"ip link set hsft1 netns hsftpeer && ip addr add {NET}.1/24 dev hsft0 && "
         f"ip link set hsft0 up && ip -n hsftpeer addr add {NET}.2/24 dev hsft1 && "
         "ip -n hsftpeer link set hsft1 up && ip -n hsftpeer link set lo up")
    sock = m.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    r = Receiver(sock)
    (m.root / CONF).write_text(config_text([("127.0.0.1", r.port)], polling=POLLING, extra="""
agentIP = 127.0.0.1
sampling.bps_ratio = 0
pcap { dev = hsft0 sampling = 1 }
systemd { markTraffic = on }
"""))
    box = Inside(m, r)
    yield box
    r.close()
    for unit in (AGENT, "hsft-limited", "hsft-busy", "hsft-idle", "hsft-web", "hsft-client",
                 "hsft-sink", "hsft-late"):
        box.stop(unit)
    m.run("systemctl", "reset-failed", check=False)
    m.sh("ip link del hsft0; ip netns del hsftpeer", check=False)
    (m.root / CONF).unlink(missing_ok=True)


def test_systemd_life_in_a_booted_container(inside):
    box = inside
    box.start("hsft-limited", "python3", "-c", HOLD, props=("CPUQuota=20%", "MemoryMax=64M"))
    box.start("hsft-busy", "sh", "-c", BUSY)
    box.start("hsft-idle", "sleep", "100000")
    box.start("hsft-web", "python3", "-m", "http.server", "8080", "--bind", f"{NET}.1")
    box.start("hsft-sink", "python3", "-c", SINK.format(net=NET),
              props=("NetworkNamespacePath=/run/netns/hsftpeer",))
    box.start(AGENT, "python3", "-m", "hsflowd", "-d", "-f", "/" + CONF, "-p", PIDFILE,
              "-o", "/run/hsft-agent.auto", props=("Environment=PYTHONPATH=/src",))

    # ---- every service, named, numbered and counted as it should be
    latest = box.cycle()
    check_services(box, latest, box.truth())
    assert "keeping root (a module needs it)" in box.log()       # dropPriv is off

    # ---- markTraffic: a web service's packets, and a client service's
    box.start("hsft-client", "python3", "-c", CLIENT.format(net=NET))
    assert box.wait_log("service hsft-client.service: data source", 5)
    get = ("import urllib.request\nfor _ in range({}): "
           f"urllib.request.urlopen('http://{NET}.1:8080/').read()")
    box.m.run("ip", "netns", "exec", "hsftpeer", "python3", "-c", get.format(1))
    # the first packets of a port not seen before go while it is looked up; the datagrams
    # that carry them leave within a second
    box.r.collect(1.5)
    since = time.monotonic()
    box.m.run("ip", "netns", "exec", "hsftpeer", "python3", "-c", get.format(10))
    box.r.collect(2)
    web = latest["hsft-web.service"][0][1]
    client_n = box.cycle(POLLING + 1)["hsft-client.service"][0][1]
    samples = marked(box.r, since)
    to_web = [e for p, e in samples if p.dst_port == 8080]
    from_web = [e for p, e in samples if p.src_port == 8080]
    from_client = [e for p, e in samples if p.dst_port == 9000]
    assert len(to_web) >= 40 and len(from_web) >= 40 and len(from_client) >= 20
    assert all(e is not None and (e.src_dsIndex, e.dst_dsIndex) == (0, web) for e in to_web)
    assert all(e is not None and (e.src_dsIndex, e.dst_dsIndex) == (web, 0) for e in from_web)
    assert all(e is not None and (e.src_dsIndex, e.dst_dsIndex) == (client_n, 0)
               for e in from_client[-10:])
    assert box.status()["marks"]["lookups"] <= 4       # the web's port, the client's socket
    box.stop("hsft-client")
    time.sleep(1)

    # ---- at rest: its threads and descriptors, and no list of the services per tick
    pid = box.agent_pid()
    base = settled(pid)
    lists = box.status()["dbus_calls"]["lists"]
    rest = assert_idle(pid, window=2, context=box.log)
    assert box.status()["dbus_calls"]["lists"] == lists

    def back_to_rest(what: str) -> Dict:
        """It reports every service, and while it does, it is idle again (a second after
        the event: a daemon-reload is a burst of signals)."""
        time.sleep(1)
        latest, activity = activity_during(pid, box.cycle)
        check_services(box, latest, box.truth())
        assert_holds(pid, base, context=lambda: what)
        check_idle(activity, rest, context=lambda: f"after {what}: {box.log()[-2000:]}")
        return latest

    # ---- a service stopped goes away, and comes back with its number when started again
    idle_n = latest["hsft-idle.service"][0]
    box.stop("hsft-idle")
    assert box.wait_log("service hsft-idle.service: stopped", 5)
    assert "hsft-idle.service" not in box.cycle()
    box.start("hsft-idle", "sleep", "100000")
    assert back_to_rest("a stop and a start")["hsft-idle.service"][0] == idle_n

    # ---- daemon-reload
    box.m.run("systemctl", "daemon-reload")
    back_to_rest("daemon-reload")

    # ---- the agent reloaded
    box.m.run("systemctl", "kill", "-s", "HUP", AGENT)
    assert box.wait_log("configuration revision 2", 5)
    back_to_rest("SIGHUP")

    # ---- the system bus restarted: found again, and signals followed again
    box.m.run("systemctl", "restart", "dbus")
    assert box.wait_log("lost the system bus", 5)
    assert box.wait_log("connected to systemd", 15, count=2)
    box.start("hsft-late", "sleep", "100000")
    assert box.wait_log("service hsft-late.service: data source", 10)   # refreshVMs is 60 s
    back_to_rest("the bus restarting")
    assert box.status()["connects"] == 2
    assert "Traceback" not in box.log()


def test_systemd_without_a_system_bus_costs_one_line(agents, receivers):  # noqa: F811
    """systemd {} where there is no bus: said once, no thread, the rest goes on."""
    r = receivers()
    missing = f"{agents.workdir}/no-bus"
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1,
                               extra="systemd { dropPriv = on }"),
                   env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={missing}"})
    got = r.collect(2.5)
    assert any(source_of(s) == (2, 1) for g in got for s in g.datagram.samples), agent.stderr()
    assert agent.stderr().count(f"no system bus at {missing}") == 1, agent.stderr()
    assert held(agent.pid).threads == 1
    assert_idle(agent.pid, window=2, context=agent.stderr)
    assert not [s for g in got for s in g.datagram.samples if source_of(s)[0] == 3]


def test_systemd_without_jeepney_says_how_to_get_it(agents, receivers, tmp_path):  # noqa: F811
    shim = tmp_path / "shim"
    (shim / "jeepney").mkdir(parents=True)
    (shim / "jeepney" / "__init__.py").write_text("raise ImportError('not here')\n")
    os.chmod(tmp_path, 0o755)
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1, extra="systemd { }"),
                   env={"PYTHONPATH": f"{shim}:{os.environ.get('PYTHONPATH', '')}"})
    assert agent.wait_for_log("apt install python3-jeepney", 5), agent.stderr()
    r.collect(2)
    assert agent.stderr().count("'jeepney' is not installed") == 1
    assert held(agent.pid).threads == 1 and agent.alive()
