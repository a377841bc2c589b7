"""End-to-end: the agent as a real process (``python3 -m hsflowd -d -f CONFIG -p PID -o AUTO``)
sending to UDP sockets on 127.0.0.1 in this network namespace; what arrives is decoded with
hsflowd.sflow.decode_datagram and compared with /proc and psutil read at the moment it
arrived.  Tests that need interfaces of their own are in test_agent_netns.py.

Every process is started through the ``agents`` fixture (tests/agentproc.py), which stops it
by its PID even when the test fails.  Timing figures are generous bounds, not benchmarks
(bench/bench_agent.py measures): a bound is at least five times what it measures on a quiet
machine, and says what fault it guards against.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from agentproc import (AgentFactory, Receiver, agents, assert_period,  # noqa: F401 (fixtures)
                       config_text, free_udp_port, line_of, pid_alive, receivers, record_tags,
                       records_by_tag, run_hsflowd, samples_from, udp_socket, wait_until)

HOST = (2, 1)
HOST_RECORDS = [2001, 2010, 2009, 2008, 2007, 2005, 2004, 2003, 2006, 2000]   # hsflowd's order
MACHINE_TYPES = {"x86_64": 3, "i686": 2, "i386": 2, "aarch64": 11}   # sFlow machine_type enum

# tolerances, per field family (the agent reads a few milliseconds before the probe does)
CPU_MS_SLACK = 1000        # ms of CPU time (all CPUs together) between the two reads
MEM_BYTES_SLACK = 64 << 20
PAGES_SLACK = 100_000      # pgpgin/pgpgout (kB) between the two reads
MIB2_SLACK = 2000          # packets/segments/datagrams between the two reads
LOAD_SLACK = 0.5           # one 5 s loadavg update moves load_one by < 8% of the run queue
# The first datagram goes out at the agent's first tick, not a polling interval later; how
# soon (goal: 1 s) is bench/bench_agent.py's "first" figure.  A test only bounds it at five
# times that, so a busy machine cannot fail it; a wait for a sample due at the next tick
# (about a second) uses the same bound.
START_BOUND = 5.0

TRACEBACK = "Traceback (most recent call last)"


# ---------------------------------------------------------------- helpers

def parse_snmp(text: str) -> dict:
    """/proc/net/snmp as {"Ip": {"InReceives": n, ...}, ...} (independent of hsflowd's parser)."""
    out: dict = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        section, names = names.split(":", 1)
        _, values = values.split(":", 1)
        out[section] = dict(zip(names.split(), (int(v) for v in values.split())))
    return out


def read_vmstat() -> dict:
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (line.split() for line in f)}


def host_probe(_datagram) -> dict:
    """Everything the host sample is compared with, read right after it arrived."""
    with open("/proc/net/snmp") as f:
        snmp = parse_snmp(f.read())
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()
    return {
        "cpu_count": psutil.cpu_count(), "online": os.sysconf("SC_NPROCESSORS_ONLN"),
        "times": psutil.cpu_times(), "vm": psutil.virtual_memory(), "swap": psutil.swap_memory(),
        "load": os.getloadavg(), "proc_total": int(loadavg[3].split("/")[1]),
        "snmp": snmp, "vmstat": read_vmstat(), "boot": psutil.boot_time(), "now": time.time(),
    }


def one_error_line(stderr: str, path) -> str:
    """The one line of ``stderr`` naming ``path:LINE:``; fails if there are more or none."""
    lines = [l for l in stderr.splitlines() if re.search(re.escape(str(path)) + r":\d+: ", l)]
    assert len(lines) == 1, stderr
    return lines[0]


# ---------------------------------------------------------------- one run, several checks

@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    """One agent at polling=1, datagramBytes=1400, and its first five datagrams, each with
    /proc and psutil as read right after it arrived."""
    workdir = tmp_path_factory.mktemp("run1")
    receiver = Receiver(udp_socket(), probe=host_probe)
    factory = AgentFactory(workdir)
    try:
        run = SimpleNamespace()
        run.receiver = receiver
        run.agent = factory(config_text([("127.0.0.1", receiver.port)], polling=1), name="run1")
        run.first = receiver.first(2 * START_BOUND)
        more = receiver.collect(15, until=lambda got: len(got) >= 4) if run.first else []
        run.received = ([run.first] if run.first else []) + more
        run.alive = run.agent.alive()
        run.auto = run.agent.auto()
        run.stderr = run.agent.stderr()
        yield run
    finally:
        factory.close()
        receiver.close()


def test_first_datagram_at_start_up(run1):
    assert run1.first is not None, run1.stderr
    assert run1.first.at - run1.agent.started < START_BOUND
    dg = run1.first.datagram
    assert dg.version == 5 and dg.sequence_number == 1
    assert dg.uptime < START_BOUND * 1000
    assert run1.alive and TRACEBACK not in run1.stderr


def test_counters_only_agent_is_sub_agent_100001(run1):
    # no pcap/nflog block: hsflowd's poll agent, subAgentId + 1
    assert {r.datagram.sub_agent_id for r in run1.received} == {100001}


def test_host_sample_records_and_descr(run1):
    samples = list(samples_from(run1.received, HOST))
    assert len(samples) >= 3
    for _, sample in samples:
        assert record_tags(sample) == HOST_RECORDS
    descr = records_by_tag(samples[0][1])[2000]
    u = os.uname()
    assert descr.hostname == u.nodename
    assert descr.os_release == u.release
    assert descr.os_name == 2                       # linux
    if platform.machine() in MACHINE_TYPES:
        assert descr.machine_type == MACHINE_TYPES[platform.machine()]


def test_host_cpu_against_proc(run1):
    fields = {"cpu_user": "user", "cpu_nice": "nice", "cpu_system": "system", "cpu_idle": "idle",
              "cpu_wio": "iowait", "cpu_intr": "irq", "cpu_sintr": "softirq",
              "cpu_steal": "steal", "cpu_guest": "guest", "cpu_guest_nice": "guest_nice"}
    checked = 0
    for r, sample in samples_from(run1.received, HOST):
        cpu = records_by_tag(sample)[2003]
        p = r.extra
        assert cpu.cpu_num == p["cpu_count"] == p["online"]
        assert abs(cpu.load_one - p["load"][0]) <= LOAD_SLACK
        assert abs(cpu.proc_total - p["proc_total"]) <= 20
        assert abs(cpu.uptime - (p["now"] - p["boot"])) <= 2
        for ours, theirs in fields.items():
            now_ms = round(getattr(p["times"], theirs) * 1000)
            sent = getattr(cpu, ours)
            # the agent read first: at most a little behind, never ahead (10 ms: one jiffy)
            assert -10 <= now_ms - sent <= CPU_MS_SLACK, (ours, sent, now_ms)
        checked += 1
    assert checked >= 3


def test_host_memory_against_proc(run1):
    checked = 0
    for r, sample in samples_from(run1.received, HOST):
        mem = records_by_tag(sample)[2004]
        p = r.extra
        assert mem.mem_total == p["vm"].total
        assert mem.swap_total == p["swap"].total
        for sent, now in ((mem.mem_free, p["vm"].free), (mem.mem_buffers, p["vm"].buffers),
                          (mem.mem_cached, p["vm"].cached), (mem.swap_free, p["swap"].free)):
            assert abs(sent - now) <= MEM_BYTES_SLACK, (sent, now)
        for name, key in (("page_in", "pgpgin"), ("page_out", "pgpgout"),
                          ("swap_in", "pswpin"), ("swap_out", "pswpout")):
            now = p["vmstat"][key] & 0xFFFFFFFF
            assert 0 <= (now - getattr(mem, name)) % (1 << 32) <= PAGES_SLACK, name
        checked += 1
    assert checked >= 3


MIB2 = {2007: ("Ip", "ip"), 2008: ("Icmp", "icmp"), 2009: ("Tcp", "tcp"), 2010: ("Udp", "udp")}
MIB2_GAUGES = {"ipForwarding", "ipDefaultTTL", "tcpRtoAlgorithm", "tcpRtoMin", "tcpRtoMax",
               "tcpMaxConn"}


def test_host_mib2_against_proc_net_snmp(run1):
    checked = 0
    for r, sample in samples_from(run1.received, HOST):
        recs = records_by_tag(sample)
        snmp = r.extra["snmp"]
        for tag, (section, prefix) in MIB2.items():
            rec = recs[tag]
            for kernel_name, now in snmp[section].items():
                name = prefix + kernel_name.replace("ParmProbs", "ParamProbs")
                if not hasattr(rec, name):
                    continue     # e.g. Icmp OutRateLimit* (kernel extras, not in the structure)
                sent = getattr(rec, name)
                now &= 0xFFFFFFFF
                if name in MIB2_GAUGES:
                    assert sent == now, name
                elif name == "tcpCurrEstab":
                    assert abs(sent - now) <= 50
                else:
                    assert 0 <= (now - sent) % (1 << 32) <= MIB2_SLACK, (name, sent, now)
                checked += 1
    assert checked > 50


def test_sequence_uptime_and_size(run1):
    dgs = [r.datagram for r in run1.received]
    assert [d.sequence_number for d in dgs] == list(range(1, len(dgs) + 1))
    uptimes = [d.uptime for d in dgs]
    assert uptimes == sorted(uptimes) and len(set(uptimes)) == len(uptimes)
    assert all(len(r.data) < 1400 for r in run1.received)
    # counter sample sequence numbers of the host source too
    seqs = [s.sequence_number for _, s in samples_from(run1.received, HOST)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_polling_one_second(run1):
    times = [r.at for r, _ in samples_from(run1.received, HOST)]
    assert len(times) >= 4
    assert_period(times, 1.0)


def test_auto_file_format(run1):
    lines = run1.auto.splitlines()
    agent_ip = str(run1.first.datagram.agent_address)
    assert lines[0] == "# WARNING: Do not edit this file. It is generated automatically by hsflowd."
    assert lines[1] == "rev_start=1" and lines[-1] == "rev_end=1"
    assert lines[2:8] == [f"hostname={os.uname().nodename}", "sampling=400", "header=128",
                          "datagram=1400", "polling=1",
                          f"collector=127.0.0.1 {run1.receiver.port}"]
    assert lines[8] == f"agentIP={agent_ip}"
    rest = lines[9:-1]
    # agent=DEV when the elected address is on a device, then ds_index=1
    assert rest[-1] == "ds_index=1"
    assert all(re.fullmatch(r"agent=\S+", l) for l in rest[:-1]) and len(rest) <= 2


# ---------------------------------------------------------------- datagram size, polling

def test_datagram_bytes_200_drops_the_host_sample_and_keeps_running(agents, receivers):
    """datagramBytes=200 (the smallest allowed): the host sample alone is ~690 bytes, so no
    datagram can carry it.  The agent keeps the limit (nothing goes out larger) and drops
    the sample: the collector receives nothing at all, and the agent keeps running."""
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1, extra="datagramBytes = 200"))
    got = r.collect(3.0)
    assert all(len(x.data) < 200 for x in got)
    assert got == []
    assert agent.alive() and TRACEBACK not in agent.stderr()
    assert agent.stop() == 0


def test_datagram_bytes_200_warns_about_dropped_samples(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1, extra="datagramBytes = 200"))
    r.collect(2.0)
    warnings = [l for l in agent.stderr().splitlines() if "WARNING" in l and "dropped" in l]
    # one line, at most once a minute, naming the file, the size and the setting to change
    assert len(warnings) == 1, agent.stderr()
    assert "over datagramBytes=200; raise datagramBytes" in warnings[0]
    assert str(agent.config_path) in warnings[0]


def test_polling_interval_honoured(agents, receivers):
    """polling=2: one host sample every 2 s; polling=0: no counter samples (no datagrams)."""
    r2, r0 = receivers(), receivers()
    agents(config_text([("127.0.0.1", r2.port)], polling=2), name="poll2")
    agent0 = agents(config_text([("127.0.0.1", r0.port)], polling=0), name="poll0")
    got2 = r2.collect(15.0, until=lambda got: len(got) >= 3)
    times = [x.at for x, _ in samples_from(got2, HOST)]
    assert len(times) == 3, times              # at ~0.2 s, ~2.2 s, ~4.2 s
    assert_period(times, 2.0)
    # nothing more before the next 2 s are up (a window of half the period, so that a
    # late third sample cannot bring the fourth inside it)
    assert r2.collect(1.0) == []
    assert r0.drain() == []                    # polling=0: nothing in those ~6 s
    assert agent0.alive()
    assert "polling=0" in agent0.auto().splitlines()


# ---------------------------------------------------------------- reload

def test_reload_moves_traffic_to_the_new_collector(agents, receivers):
    old, new = receivers(), receivers()
    agent = agents(config_text([("127.0.0.1", old.port)], polling=1))
    assert old.first(START_BOUND) is not None
    agent.write_config(config_text([("127.0.0.1", new.port)], polling=1))
    agent.signal(signal.SIGHUP)
    # the new collector from the next tick on (about a second after the signal)
    assert new.first(START_BOUND) is not None
    assert wait_until(lambda: "rev_start=2" in agent.auto(), START_BOUND)
    lines = agent.auto().splitlines()
    assert lines[1] == "rev_start=2" and lines[-1] == "rev_end=2"
    assert f"collector=127.0.0.1 {new.port}" in lines
    assert f"collector=127.0.0.1 {old.port}" not in lines
    old.drain()
    more = new.collect(15, until=lambda got: len(got) >= 2)
    assert len(more) >= 2
    assert old.drain() == []                   # nothing more for the old collector
    assert agent.alive()


def test_bad_reload_keeps_the_running_config(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    assert r.first(START_BOUND) is not None
    # a collector block with a key and no value ("=" is a separator, as in hsflowd, so
    # "polling = = 2" would be valid)
    broken = config_text([("127.0.0.1", r.port + 1), "ip = 127.0.0.2 udpport = "], polling=1)
    agent.write_config(broken)
    # `hsflowd reload -p PIDFILE`, as an operator would
    res = run_hsflowd("reload", "-p", str(agent.pidfile))
    assert res.returncode == 0, res.stderr
    assert agent.wait_for_log(f"{agent.config_path}:", START_BOUND)
    line = one_error_line(agent.stderr(), agent.config_path)
    assert f"{agent.config_path}:{line_of(broken, '127.0.0.2')}: " in line
    r.drain()
    got = r.collect(15, until=lambda got: len(got) >= 2)
    assert len(got) >= 2                        # the old collector still gets everything
    seqs = [x.datagram.sequence_number for x in r.received]
    assert seqs == list(range(1, len(seqs) + 1))
    assert agent.alive() and TRACEBACK not in agent.stderr()
    assert "rev_start=1" in agent.auto()        # no new revision


# ---------------------------------------------------------------- collectors that fail

def test_unresolvable_collector_name_is_a_warning(agents, receivers):
    r = receivers()
    text = config_text(["ip = collector.invalid udpport = 6343", ("127.0.0.1", r.port)],
                       polling=1)
    agent = agents(text)
    # that the name does not hold up the other collector is test_agent_netns.py's
    # test_slow_dns_...: here the answer is quick (NXDOMAIN), and only its warning is checked
    first = r.first(2 * START_BOUND)
    assert first is not None, agent.stderr()
    got = [first] + r.collect(2.1)
    assert [x.datagram.sequence_number for x in got] == list(range(1, len(got) + 1))
    assert agent.alive()
    where = f"{agent.config_path}:{line_of(text, 'collector.invalid')}:"
    warned = [l for l in agent.stderr().splitlines() if where in l]
    assert warned and "WARNING" in warned[0] and "collector.invalid" in warned[0]
    assert TRACEBACK not in agent.stderr()
    res = run_hsflowd("check", "-f", str(agent.config_path))
    assert res.returncode == 0, res.stderr


def test_closed_port_collector_does_not_disturb_the_others(agents, receivers):
    r = receivers()
    closed = free_udp_port()
    agent = agents(config_text([("127.0.0.1", closed), ("127.0.0.1", r.port)], polling=1))
    got = r.collect(15, until=lambda got: len(got) >= 3)
    assert len(got) >= 3
    assert [x.datagram.sequence_number for x in got] == list(range(1, len(got) + 1))
    assert agent.alive()


# ---------------------------------------------------------------- check, bad files

BROKEN = "sflow {\n  polling = 1\n  collector { ip = 127.0.0.1 udpport = 6343 }\n  bogus = 3\n}\n"


def test_check_prints_the_effective_config(tmp_path):
    path = tmp_path / "good.conf"
    path.write_text(config_text([("127.0.0.1", 6400)], polling=7))
    res = run_hsflowd("check", "-f", str(path))
    assert res.returncode == 0, res.stderr
    assert "polling = 7" in res.stdout and "udpport = 6400" in res.stdout
    assert "datagramBytes = 1400" in res.stdout


def test_ignored_settings_are_said_once_with_the_reason(agents, receivers, tmp_path):
    """By the agent (at start, not again on reload) and by hsflowd check."""
    r = receivers()
    text = config_text([("127.0.0.1", r.port)], polling=1,
                       extra="checkAdaptors = 10\nmodules = /etc/hsflowd/modules\ndropmon { }")
    said = [f"{line_of(text, 'checkAdaptors')}: 'checkAdaptors' is ignored: this agent follows "
            "interface changes through netlink events, so it needs no periodic check",
            f"{line_of(text, 'modules')}: 'modules' is ignored: every module is built in, so "
            "there are no module files to load",
            "dropmon {} is not supported yet"]
    agent = agents(text)
    assert r.first(START_BOUND) is not None
    agent.signal(signal.SIGHUP)
    assert agent.wait_for_log("configuration revision 2", START_BOUND)
    for text_said in said:
        assert sum(text_said in line for line in agent.stderr().splitlines()) == 1, text_said
    res = run_hsflowd("check", "-f", str(agent.config_path))
    assert res.returncode == 0, res.stderr
    for text_said in said:
        assert sum(text_said in line for line in res.stderr.splitlines()) == 1, text_said
    assert "checkAdaptors =" not in res.stdout and "modules =" not in res.stdout


def test_devices_the_host_lacks_are_said_once(agents, receivers):
    """agent=, pcap { dev= } and collector { dev= } naming no interface: a warning each,
    at start and not again on reload, the same from hsflowd check; the agent runs, and a
    collector pinned to a device that exists (lo) gets its datagrams."""
    r = receivers()
    text = config_text([f"ip = 127.0.0.1 udpport = {r.port} dev = lo",
                        f"ip = 127.0.0.1 udpport = {free_udp_port()} dev = nosuchdev0"],
                       polling=1, extra="agent = nosuchdev0\npcap { dev = nosuchdev0 }")
    agent = agents(text)
    path = agent.config_path
    said = [f"{path}:{line_of(text, 'dev = nosuchdev0 }')}: collector {{ dev = nosuchdev0 }}: "
            "no such interface now; nothing is sent to 127.0.0.1 until it appears",
            f"{path}:{line_of(text, 'agent =')}: agent = nosuchdev0: no interface has that "
            "name or alias now; the agent address is elected without it until one does",
            f"{path}:{line_of(text, 'pcap')}: pcap {{ dev = nosuchdev0 }}: no such interface "
            "now; it is tapped when it appears"]
    assert r.first(START_BOUND) is not None, agent.stderr()
    agent.signal(signal.SIGHUP)
    assert agent.wait_for_log("configuration revision 2", START_BOUND)
    log = agent.stderr().splitlines()
    for warning in said:
        assert [line.split(" ", 2)[2] for line in log if warning in line] == \
            [f"WARNING {warning}"], agent.stderr()
    assert "dev = lo" not in agent.stderr()
    res = run_hsflowd("check", "-f", str(path))
    assert res.returncode == 0 and "nosuchdev0" in res.stdout
    assert res.stderr.splitlines() == [f"warning: {warning}" for warning in said]
    assert TRACEBACK not in agent.stderr()


def test_check_broken_file(tmp_path):
    path = tmp_path / "broken.conf"
    path.write_text(BROKEN)
    res = run_hsflowd("check", "-f", str(path))
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(f"{path}:4: ")


@pytest.mark.parametrize("verb", [None, "start"])
def test_start_with_broken_file_exits_with_one_line(tmp_path, verb):
    path = tmp_path / "broken.conf"
    path.write_text(BROKEN)
    pidfile, auto = tmp_path / "x.pid", tmp_path / "x.auto"
    args = (["-d"] if verb is None else [verb]) + ["-f", str(path), "-p", str(pidfile),
                                                    "-o", str(auto)]
    res = run_hsflowd(*args)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(f"{path}:4: ") and TRACEBACK not in res.stderr
    assert not pidfile.exists() and not auto.exists()


# ---------------------------------------------------------------- daemon verbs and signals

def test_daemon_verbs(agents, receivers):
    r = receivers()
    work = agents.workdir   # readable by nobody: the daemon reads its config again on reload
    conf, pidfile, auto = work / "d.conf", work / "d.pid", work / "d.auto"
    conf.write_text(config_text([("127.0.0.1", r.port)], polling=1))
    opts = ["-f", str(conf), "-p", str(pidfile), "-o", str(auto)]
    t0 = time.monotonic()
    res = run_hsflowd("start", *opts)
    assert res.returncode == 0, res.stderr
    pid = int(pidfile.read_text().split()[0])
    agents.adopt_pid(pid)                       # stopped by PID whatever happens below
    assert pid_alive(pid)
    first = r.first(2 * START_BOUND)
    assert first is not None and first.at - t0 < 2 * START_BOUND   # two start-ups: `start`'s
    # the pidfile is locked by the daemon
    fd = os.open(pidfile, os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert exc.value.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    res = run_hsflowd("status", "-p", str(pidfile))
    assert res.returncode == 0 and "running" in res.stdout and str(pid) in res.stdout
    res = run_hsflowd("start", *opts)
    assert res.returncode == 1 and "already running" in res.stderr
    assert pid_alive(pid) and int(pidfile.read_text().split()[0]) == pid
    res = run_hsflowd("reload", "-p", str(pidfile))
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: "rev_start=2" in auto.read_text(), START_BOUND)
    t1 = time.monotonic()
    res = run_hsflowd("stop", "-p", str(pidfile))
    stopped_in = time.monotonic() - t1
    assert res.returncode == 0, res.stderr    # gone within `stop`'s 10 s
    assert not pid_alive(pid)
    # `stop` returns once the agent is gone: its own start-up and the agent's exit (goal
    # 1 s, bench_agent.py's "first" prints it), about a second; an agent that waits out a
    # thread's timeout instead of stopping takes far longer
    assert stopped_in < START_BOUND
    # as nobody it may not remove the file from a root-owned directory: it empties it
    assert not pidfile.exists() or pidfile.read_text() == ""
    res = run_hsflowd("status", "-p", str(pidfile))
    assert res.returncode == 3 and "not running" in res.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_foreground_agent(agents, receivers, signum):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    assert r.first(START_BOUND) is not None
    t0 = time.monotonic()
    agent.signal(signum)
    code = agent.wait(2 * START_BOUND)
    assert code == 0, agent.stderr()
    # gone within a second of the signal (bench_agent.py's "first" prints it): five times
    # that here, far below what waiting out a thread's timeout would take
    assert time.monotonic() - t0 < START_BOUND
    assert not agent.pidfile.exists() or agent.pidfile.read_text() == ""   # see test_daemon_verbs
    assert TRACEBACK not in agent.stderr()


def test_daemon_with_relative_paths(tmp_path, agents, receivers):
    r = receivers()
    stem = f"hsflowd-e2e-{os.getpid()}"
    (tmp_path / f"{stem}.conf").write_text(config_text([("127.0.0.1", r.port)], polling=1))
    rel = ["-f", f"{stem}.conf", "-p", f"{stem}.pid", "-o", str(tmp_path / f"{stem}.auto")]
    strays = [f"/{stem}.pid"]
    try:
        res = run_hsflowd("start", *rel, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        for pidfile in (tmp_path / f"{stem}.pid", f"/{stem}.pid"):
            if os.path.exists(pidfile):
                agents.adopt_pid(int(Path(pidfile).read_text().split()[0]))
        assert r.first(2 * START_BOUND) is not None
        res = run_hsflowd("status", "-p", f"{stem}.pid", cwd=tmp_path)
        assert res.returncode == 0, res.stdout
    finally:
        agents.close()
        for path in strays:
            if os.path.exists(path):
                os.unlink(path)
