"""tcp { } end to end: real TCP connections between two test namespaces, the agent (as
nobody, with only pcap's CAP_NET_RAW) sampling every packet of one end, and the
extended_tcp_info it adds compared with what `ss -ti` says of the same socket.

Retransmits come from an iptables rule in the peer's namespace that drops every ninth
segment for a while; the last exchange goes through undisturbed, and once the connection
is quiet the last sample's tcp_info and `ss -ti` must agree field by field."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from ipaddress import ip_address

import pytest

from agentproc import (agents, assert_holds, in_netns, receivers,  # noqa: F401
                       settled)
from hsflowd.sflow import ExtendedTcpInfo, FlowSample
from hsflowd.frames import walk_sample
from hsflowd.sources.tcpinfo import endpoints
from netns import veth

pytestmark = [pytest.mark.netns, pytest.mark.slow]

A4, B4 = "10.79.0.1", "10.79.0.2"
A6, B6 = "fd79::1", "fd79::2"
PORT = 5001

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print('ready', flush=True)
while True:
    c, _ = s.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
"""


def packet_endpoints(sample: bytes):
    """What tcp's hook sees of an encoded sample: its walk's TCP endpoints."""
    pkt = walk_sample(sample)
    return endpoints(pkt) if pkt is not None else None


@pytest.fixture
def pair(netns):
    a, b = netns(), netns()
    veth(a, "va", b, "vb", a_addr=f"{A4}/24", b_addr=f"{B4}/24")
    for ns, dev, addr in ((a, "va", A6), (b, "vb", B6)):
        ns.run(["ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
    for ns, host in ((b, B4), (b, B6)):
        server = ns.popen([sys.executable, "-c", ECHO, host, str(PORT)], stdout=subprocess.PIPE)
        assert server.stdout.readline().strip() == b"ready"
    return a, b


def connect(ns, host):
    return in_netns(ns.name, lambda: socket.create_connection((host, PORT), timeout=10))


def exchange(conn, data: bytes) -> None:
    conn.sendall(data)
    got = 0
    while got < len(data):
        got += len(conn.recv(65536))


def ss_info(ns, local_port: int) -> dict:
    """`ss -ti` of the socket on ``local_port``: its tcp_info fields, in tcp_info's units."""
    out = ns.run(["ss", "-Htin", "sport", f"= :{local_port}"]).stdout
    def num(pattern, default=0, scale=1):
        m = re.search(pattern, out)
        return round(float(m.group(1)) * scale) if m else default
    rtt = re.search(r"\brtt:([\d.]+)/([\d.]+)", out)
    return {"rtt": round(float(rtt.group(1)) * 1000), "rttvar": round(float(rtt.group(2)) * 1000),
            "snd_mss": num(r"\bmss:(\d+)"), "rcv_mss": num(r"\brcvmss:(\d+)"),
            "pmtu": num(r"\bpmtu:(\d+)"), "snd_cwnd": num(r"\bcwnd:(\d+)"),
            "retrans": num(r"\bretrans:\d+/(\d+)"), "lost": num(r"\blost:(\d+)"),
            "unacked": num(r"\bunacked:(\d+)"), "reordering": num(r"\breordering:(\d+)", 3),
            "min_rtt": num(r"\bminrtt:([\d.]+)", 0, 1000)}


def tcp_samples(received, local: str, local_port: int):
    """(sequence number, direction of the packet, extended_tcp_info or None) of the flow
    samples of one connection; direction 2 when the packet left ``local``, 1 otherwise."""
    me = ip_address(local).packed
    out = []
    for r in received:
        for s in r.datagram.samples:
            if not isinstance(s, FlowSample):
                continue
            ends = packet_endpoints(s.encode())
            if ends is None or local_port not in ends[3:]:
                continue
            info = [rec for rec in s.flow_records if isinstance(rec, ExtendedTcpInfo)]
            out.append((s.sequence_number, 2 if ends[1] == me else 1, info[0] if info else None))
    return sorted(out, key=lambda t: t[0])


def agent_config(r_port: int, tcp: bool = True) -> str:
    return ("sflow {\n  polling = 10\n  pcap { dev = va  sampling = 1 }\n"
            + ("  tcp { }\n" if tcp else "")
            + f"  collector {{ ip = 127.0.0.1  udpport = {r_port} }}\n}}\n")


def check_against_ss(a, received, host, conn):
    local_port = conn.getsockname()[1]
    rows = tcp_samples(received, host, local_port)
    annotated = [(d, info) for _, d, info in rows if info is not None]
    assert len(annotated) >= 2, rows
    assert all(info.dirn == d for d, info in annotated)       # sent / received, per packet
    assert {d for d, _ in annotated} == {1, 2}
    want = ss_info(a, local_port)
    last = rows[-1][2]
    assert last is not None, rows[-3:]
    got = {name: getattr(last, name) for name in want}
    assert got == want
    return last


def test_tcp_info_matches_ss(pair, agents, receivers):
    a, b = pair
    r = receivers(netns=a.name)
    agent = agents(agent_config(r.port), netns=a.name)
    assert agent.wait_for_log("pcap: sampling va", 5), agent.stderr()
    assert "running as nobody with CAP_NET_RAW\n" in agent.stderr()

    conn = connect(a, B4)
    b.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(PORT), "-m", "statistic",
           "--mode", "nth", "--every", "9", "--packet", "4", "-j", "DROP"])
    for _ in range(40):
        exchange(conn, os.urandom(8000))
    b.run(["iptables", "-F", "INPUT"])
    time.sleep(1.2)                     # a new look-up budget, nothing held
    r.drain()
    exchange(conn, b"x")                # the last exchange: its samples see the final state
    time.sleep(1.0)
    got = r.collect(2.5)
    last = check_against_ss(a, got, A4, conn)
    assert last.retrans > 0             # the drops made retransmits, and 2209 says so
    conn6 = connect(a, B6)
    for _ in range(3):
        exchange(conn6, b"hello")
    time.sleep(1.0)
    check_against_ss(a, r.collect(2.5), A6, conn6)
    conn.close()
    conn6.close()
    assert "Traceback" not in agent.stderr()


def test_reloads_turn_tcp_on_and_off_and_leave_nothing(pair, agents, receivers):
    a, b = pair
    r = receivers(netns=a.name)
    agent = agents(agent_config(r.port, tcp=False), netns=a.name)
    assert agent.wait_for_log("pcap: sampling va", 5), agent.stderr()
    conn = connect(a, B4)
    port = conn.getsockname()[1]
    exchange(conn, b"warm")
    time.sleep(1.5)
    before = settled(agent.pid)

    def annotated(seconds=2.0):
        exchange(conn, b"ping")
        return [info for _, _, info in tcp_samples(r.collect(seconds), A4, port)]

    assert all(info is None for info in annotated())
    agent.write_config(agent_config(r.port, tcp=True))
    agent.signal(signal.SIGHUP)
    time.sleep(1.2)
    assert any(info is not None for info in annotated())
    assert settled(agent.pid).threads == before.threads + 1     # its look-up thread
    agent.write_config(agent_config(r.port, tcp=False))
    agent.signal(signal.SIGHUP)
    time.sleep(1.2)
    assert all(info is None for info in annotated())
    assert_holds(agent.pid, before)
    conn.close()
