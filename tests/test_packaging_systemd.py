"""The packaged unit under a real systemd: the .deb of this tree (``make deb``) installed
with dpkg into the Debian root the session boots with systemd-nspawn (conftest.py's
``booted_machine``), then `systemctl start hsflowd`, as an operator would.

Checked: the agent runs as nobody with the capabilities its modules need and the unit's
bounding set (as far as the container's own allows: nspawn gives no CAP_BPF or
CAP_PERFMON); packet sampling on a veth (pcap), host and interface counters, nflog's own
iptables rule, tcp {} and systemd {} all work inside the sandbox; `systemctl status` is
healthy and the journal files the agent's lines at their priorities; `systemctl reload`
is a SIGHUP that keeps sampling, and so is the Ansible role's handler (ansible-playbook
on this host, its modules run inside the container through nsenter: the "local"
connection with an interpreter that enters the container); `systemctl stop` leaves no
iptables rule, tc filter, pid file or socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Set

import pytest

from agentproc import Receiver, records_by_tag, source_of
from hsflowd.samplers.iptables import RULE_TAG
from hsflowd.sflow.flows import ExtendedEntities, ExtendedTcpInfo, SampledHeader
from test_packaging import UNIT, copy_tree, need, run

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NET = "10.231.78"
DEV = "hsftp0"
# capability numbers, <linux/capability.h>
CAP_NAMES = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
             "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
             "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
             "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
             "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
             "CHECKPOINT_RESTORE").split()
CONFIG = """sflow {{
  polling = 1
  sampling.bps_ratio = 0
  collector {{ ip = 127.0.0.1 udpport = {port} }}
  collector {{ ip = 127.0.0.1 udpport = {refused} }}
  pcap {{ dev = {dev} sampling = 1 }}
  nflog {{ group = 5 probability = 1 iptables = on dev = {dev} }}
  tcp {{ }}
  systemd {{ dropPriv = on markTraffic = on }}
}}
"""


SINK = ("import socket\ns = socket.create_server(('{net}.2', 9000))\n"
        "while True:\n c, _ = s.accept()\n while c.recv(4096): pass\n")
CLIENT = ("import socket, time\ns = socket.create_connection(('{net}.2', 9000))\n"
          "while True:\n s.sendall(b'x' * 100)\n time.sleep(0.05)\n")


def caps(hexmask: str) -> Set[str]:
    mask = int(hexmask, 16)
    return {f"CAP_{name}" for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1}


def status_fields(machine, pid: int) -> Dict[str, str]:
    text = machine.read(f"/proc/{pid}/status")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


class Packaged:
    """The installed agent in the booted container, and its collector."""

    def __init__(self, machine, receiver: Receiver):
        self.m = machine
        self.r = receiver

    def systemctl(self, *args: str, check: bool = True):
        return self.m.run("systemctl", *args, "hsflowd", check=check)

    def pid(self) -> int:
        return int(self.m.run("systemctl", "show", "-p", "MainPID", "--value", "hsflowd").stdout)

    def journal(self, *args: str) -> str:
        invocation = self.m.run("systemctl", "show", "-p", "InvocationID", "--value",
                                "hsflowd").stdout.strip()
        return self.m.run("journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat",
                          "--no-pager", *args).stdout

    def wait_journal(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.journal() and time.monotonic() < deadline:
            time.sleep(0.2)
        return needle in self.journal()

    def next_revision(self) -> str:
        """The log line the next reload will write (the tests may run in any order)."""
        done = re.findall(r"configuration revision (\d+)", self.journal())
        return f"configuration revision {int(done[-1]) + 1 if done else 1}:"

    def traffic(self, requests: int = 10) -> None:
        """Requests from the peer namespace to the web service inside."""
        self.m.run("ip", "netns", "exec", "hsftpp", "python3", "-c",
                   f"import urllib.request\nfor _ in range({requests}): "
                   f"urllib.request.urlopen('http://{NET}.1:8080/').read()")

    def samples(self, seconds: float):
        """(counter samples by source, flow samples) arriving within ``seconds``."""
        self.r.drain()
        got = self.r.collect(seconds)
        counters, flows = {}, []
        for g in got:
            for s in g.datagram.samples:
                if hasattr(s, "counters"):
                    counters[source_of(s)] = s
                elif hasattr(s, "flow_records"):
                    flows.append(s)
        return counters, flows


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """This tree as a .deb (make deb, in a copy of the tree)."""
    need("dpkg-buildpackage", "make")
    base = tmp_path_factory.mktemp("deb")
    tree = copy_tree(base / "src")
    missing = run(["dpkg-checkbuilddeps", "packaging/debian/control"], cwd=tree, check=False)
    if missing.returncode != 0:
        pytest.skip(f"deb build dependencies: {missing.stderr.strip()}")
    run(["make", "deb"], cwd=tree)
    return next((tree / "dist").glob("hsflowd_*_all.deb"))


@pytest.fixture(scope="module")
def packaged(booted_machine, deb):
    """The .deb installed and the agent started with `systemctl start`; a veth to a
    namespace of its own with a web service on it; stopped and purged at the end."""
    m = booted_machine
    shutil.copy(deb, m.shared / deb.name)
    m.run("dpkg", "-i", str(m.shared / deb.name))
    m.sh(f"ip link add {DEV} type veth peer name hsftp1 && ip netns add hsftpp && "
         f"ip link set hsftp1 netns hsftpp && ip addr add {NET}.1/24 dev {DEV} && "
         f"ip link set {DEV} up && ip -n hsftpp addr add {NET}.2/24 dev hsftp1 && "
         "ip -n hsftpp link set hsftp1 up")
    m.run("systemd-run", "--quiet", "--unit=hsftp-web", "python3", "-m", "http.server", "8080",
          "--bind", f"{NET}.1")
    m.run("systemd-run", "--quiet", "--unit=hsftp-sink", "-p",
          "NetworkNamespacePath=/run/netns/hsftpp", "python3", "-c", SINK.format(net=NET))
    sock = m.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    refused = m.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()                 # nothing listens there: the agent warns about it
    r = Receiver(sock)
    (m.root / "etc/hsflowd.conf").write_text(CONFIG.format(port=r.port, refused=port, dev=DEV))
    box = Packaged(m, r)
    box.systemctl("start")
    assert box.wait_journal("started (pid", 10), box.journal()
    yield box
    r.close()
    box.systemctl("stop", check=False)
    m.run("dpkg", "--purge", "hsflowd", check=False)
    m.run("systemctl", "stop", "hsftp-web", "hsftp-sink", "hsftp-client", check=False)
    m.sh(f"ip link del {DEV}; ip netns del hsftpp", check=False)
    (m.shared / deb.name).unlink(missing_ok=True)


def test_the_agent_runs_as_nobody_with_what_its_modules_need(packaged):
    m = packaged.m
    assert packaged.systemctl("is-active").stdout.strip() == "active"
    fields = status_fields(m, packaged.pid())
    assert fields["Uid"].split()[0] == "65534" and fields["Gid"].split()[0] == "65534"
    # pcap: CAP_NET_RAW; nflog { iptables=on }: CAP_NET_ADMIN and CAP_NET_RAW; tcp {} and
    # systemd { dropPriv=on }: nothing
    assert caps(fields["CapEff"]) == caps(fields["CapPrm"]) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    unit = set(re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M).group(1).split())
    container = caps(status_fields(m, 1)["CapBnd"])       # what nspawn left systemd
    assert caps(fields["CapBnd"]) == unit & container
    assert unit - container <= {"CAP_BPF", "CAP_PERFMON"}
    assert fields["NoNewPrivs"].strip() == "1"


def test_status_is_healthy_and_the_journal_has_the_priorities(packaged):
    status = packaged.systemctl("status", "--no-pager")
    assert "Active: active (running)" in status.stdout
    assert packaged.wait_journal("the network refused datagrams", 30)
    warnings = packaged.journal("-p", "warning")
    assert "the network refused datagrams" in warnings
    assert "started (pid" not in warnings and "running as nobody" not in warnings
    assert "running as nobody with CAP_NET_ADMIN, CAP_NET_RAW" in packaged.journal("-p", "info")
    assert packaged.journal("-p", "err") == ""


def test_sampling_counters_tcp_and_systemd_work_in_the_sandbox(packaged):
    m = packaged.m
    ifindex = int(m.read(f"/sys/class/net/{DEV}/ifindex"))
    m.run("systemd-run", "--quiet", "--unit=hsftp-client", "python3", "-c",
          CLIENT.format(net=NET))
    assert packaged.wait_journal("service hsftp-client.service: data source", 30)
    packaged.traffic(1)      # its port is looked up, for the packets after these
    packaged.r.collect(1.5)
    packaged.traffic()
    counters, flows = packaged.samples(2.5)
    assert (2, 1) in counters and 2100 in records_by_tag(counters[(2, 1)])
    assert records_by_tag(counters[(0, ifindex)])[1].ifIndex == ifindex
    services = {records_by_tag(s)[2000].hostname: source for source, s in counters.items()
                if source[0] == 3}
    assert {"hsflowd.service", "hsftp-web.service", "hsftp-client.service",
            "dbus.service"} <= set(services)
    mine = [s for s in flows if s.source_id_index == ifindex]

    def to_port(port: int):
        raw = port.to_bytes(2, "big")
        return [s for s in mine if any(isinstance(r, SampledHeader) and
                                       raw in (bytes(r.header)[34:36], bytes(r.header)[36:38])
                                       for r in s.flow_records)]
    http, client = to_port(8080), to_port(9000)
    assert len(http) >= 20 and len(client) >= 20
    # tcp {}: the client service's connection lives long enough to be looked up
    assert sum(any(isinstance(r, ExtendedTcpInfo) for r in s.flow_records) for s in client) >= 10
    # systemd { markTraffic=on }: the web's packets and the client's
    for group, service in ((http, "hsftp-web.service"), (client, "hsftp-client.service")):
        marked = [r for s in group for r in s.flow_records if isinstance(r, ExtendedEntities)]
        n = services[service][1]
        assert len(marked) >= 10 and all(n in (e.src_dsIndex, e.dst_dsIndex) for e in marked)
    rules = m.run("iptables-legacy", "-S").stdout
    assert RULE_TAG in rules, rules
    assert "Traceback" not in packaged.journal()
    m.run("systemctl", "stop", "hsftp-client")


def test_systemctl_reload_is_a_sighup_that_keeps_sampling(packaged):
    pid = packaged.pid()
    text = (packaged.m.root / "etc/hsflowd.conf").read_text()
    (packaged.m.root / "etc/hsflowd.conf").write_text(re.sub(r"polling = \d+", "polling = 2", text))
    revision = packaged.next_revision()
    done = packaged.systemctl("reload", check=False)
    assert done.returncode == 0, done.stderr
    assert packaged.wait_journal(revision, 30), packaged.journal()
    assert packaged.pid() == pid
    packaged.traffic()
    _, flows = packaged.samples(1.5)
    assert flows
    assert "polling=2" in packaged.m.read("/etc/hsflowd.auto")


ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or str(
    Path(sys.executable).parent / "ansible-playbook")


@pytest.mark.skipif(not os.path.exists(ANSIBLE_PLAYBOOK), reason="ansible-playbook not found")
def test_the_ansible_roles_reload_handler_works_under_systemd(packaged):
    """The role, its modules run inside the container: a changed configuration makes the
    handler `systemctl reload hsflowd` (state: reloaded), and the agent reads it."""
    from test_ansible import PLAYBOOK, ROLES
    m = packaged.m
    work = m.shared / "ansible"
    work.mkdir(exist_ok=True)
    python = work / "python-in-container"
    python.write_text(f"#!/bin/sh\nexec nsenter -t {m.init} -a -- /usr/bin/python3 \"$@\"\n")
    python.chmod(0o755)
    (work / "site.yml").write_text(PLAYBOOK)
    settings = {
        "hsflowd_install_method": "none", "hsflowd_service_manager": "auto",
        "hsflowd_collectors": [{"ip": "127.0.0.1", "port": packaged.r.port}],
        "hsflowd_polling": 3, "hsflowd_sampling_bps_ratio": 0,
        "hsflowd_pcap": [{"dev": DEV, "sampling": 1}],
        "hsflowd_extra_config": ["tcp { }", "systemd { dropPriv = on markTraffic = on }"]}
    (work / "vars.json").write_text(json.dumps(settings))
    environ = {**os.environ, "LC_ALL": "C.UTF-8", "ANSIBLE_ROLES_PATH": str(ROLES),
               "ANSIBLE_HOME": str(work / "home"), "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
               # the files it hands its modules must be where the container sees them
               "ANSIBLE_REMOTE_TEMP": str(work / "remote"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    pid = packaged.pid()
    revision = packaged.next_revision()
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={python}", "-e", f"@{work / 'vars.json'}",
         str(work / "site.yml")],
        capture_output=True, text=True, env=environ, stdin=subprocess.DEVNULL, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "RUNNING HANDLER [hsflowd : Reload hsflowd through systemd]" in output, output[-4000:]
    assert packaged.wait_journal(revision, 30), packaged.journal()
    assert packaged.pid() == pid
    assert "polling = 3" in m.read("/etc/hsflowd.conf")
    packaged.traffic()
    _, flows = packaged.samples(1.5)
    assert flows


def test_systemctl_stop_leaves_nothing_behind(packaged):
    m = packaged.m
    packaged.systemctl("stop")
    assert packaged.systemctl("is-active", check=False).stdout.strip() == "inactive"
    assert RULE_TAG not in m.run("iptables-legacy-save").stdout
    assert RULE_TAG not in m.run("iptables-nft-save", check=False).stdout
    assert m.run("tc", "filter", "show", "dev", DEV, "ingress").stdout == ""
    assert "clsact" not in m.run("tc", "qdisc", "show", "dev", DEV).stdout
    for path in ("/run/hsflowd.pid", "/run/hsflowd.sock"):
        assert m.run("test", "-e", path, check=False).returncode != 0, path
    assert "hsflowd.service: Deactivated successfully" in m.run(
        "journalctl", "-u", "hsflowd", "-o", "cat", "-n", "5").stdout
