"""Collectors: real UDP sockets, in the root namespace (loopback only) and in test namespaces."""

from __future__ import annotations

import json
import re
import logging
import os
import socket
import subprocess
import sys

import pytest

from hsflowd.collectors import Collectors, Destination
from netns import veth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(65535)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def receive_all(sock, expect):
    got = []
    for _ in range(expect):
        got.append(sock.recv(65535))
    return got


def test_every_collector_gets_every_datagram(udp_collector):
    sock1, port1 = udp_collector
    sock2 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock2.bind(("::1", 0))
    sock2.settimeout(5)
    port2 = sock2.getsockname()[1]
    c = Collectors([Destination("127.0.0.1", port1), Destination("::1", port2),
                    Destination("localhost", port1)])
    try:
        for i in range(10):
            c.send(b"datagram %d" % i)
        assert receive_all(sock1, 20).count(b"datagram 9") == 2   # 127.0.0.1 and localhost
        assert receive_all(sock2, 10)[-1] == b"datagram 9"
        assert [d.stats.sent for d in c.destinations] == [10, 10, 10]
    finally:
        c.close()
        sock2.close()


def test_a_name_that_does_not_resolve_is_retried_and_never_fatal(udp_collector, caplog):
    sock, port = udp_collector
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="hsflowd.collectors"):
        c = Collectors([Destination("collector.invalid", 6343, where="/etc/hsflowd.conf:3"),
                        Destination("127.0.0.1", port)], clock=clock)
    try:
        assert c.destinations[0].sock is None
        assert "/etc/hsflowd.conf:3: collector collector.invalid:6343: cannot reach collector yet" in caplog.text
        c.send(b"x")
        assert sock.recv(100) == b"x"        # the other collector is not held up
        c.destinations[0].host = "127.0.0.1"  # as if DNS now answered
        c.destinations[0].port = port
        c.tick()                              # too soon: not retried yet
        assert c.destinations[0].sock is None
        clock.now += 1.1                      # 1 s after the first failure (then 2, 4 ... 60)
        c.tick()
        assert c.destinations[0].sock is not None
        c.send(b"y")
        assert receive_all(sock, 2) == [b"y", b"y"]
    finally:
        c.close()


def test_a_reload_looks_names_up_again(monkeypatch, caplog):
    """resolve_again (a reload with the same collectors): a name that now resolves elsewhere
    is followed from the next tick; one that no longer resolves keeps its address."""
    import concurrent.futures
    import hsflowd.collectors as collectors_module
    answers = ["127.0.0.1", "127.0.0.2", socket.gaierror(socket.EAI_NONAME, "Name or service not known")]

    def resolve(host, port):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return socket.AF_INET, (answer, port)

    monkeypatch.setattr(collectors_module, "_resolve", resolve)
    c = Collectors([Destination("collector.test", 6343)])
    try:
        d = c.destinations[0]
        assert d.address == ("127.0.0.1", 6343)
        c.resolve_again()
        concurrent.futures.wait([d.pending], timeout=5)
        assert c.tick() is True and d.address == ("127.0.0.2", 6343)
        c.resolve_again()
        concurrent.futures.wait([d.pending], timeout=5)
        with caplog.at_level(logging.WARNING, logger="hsflowd.collectors"):
            assert c.tick() is False
        assert d.address == ("127.0.0.2", 6343) and d.sender is not None
        assert "looking its name up again failed" in caplog.text
    finally:
        c.close()


@pytest.mark.netns
def test_unreachable_collector_costs_a_counted_error_and_a_readable_log(netns, tmp_path):
    """In a namespace with no default route, 192.0.2.1 is unreachable: sendto fails at once."""
    ns = netns()
    script = r"""
import logging, socket, sys, json
sys.path.insert(0, sys.argv[1])
from hsflowd.collectors import Collectors, Destination
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
rx.settimeout(2)
now = [0.0]
c = Collectors([Destination("192.0.2.1", 6343), Destination("127.0.0.1", rx.getsockname()[1])],
               clock=lambda: now[0])
got = 0
for i in range(1000):
    c.send(b"d")
    got += rx.recv(10) == b"d"
    now[0] += 0.1                 # 100 s of sending, ten datagrams a tick
    if i % 10 == 9:
        c.tick()
print(json.dumps({"errors": c.destinations[0].stats.errors, "sent_ok": c.destinations[1].stats.sent,
                  "received": got, "last": c.destinations[0].stats.last_error}))
"""
    out = ns.run([sys.executable, "-c", script, ROOT]).stdout.splitlines()
    result = json.loads(out[-1])
    logs = out[:-1]
    assert result == {"errors": 1000, "sent_ok": 1000, "received": 1000,
                      "last": "ENETUNREACH Network is unreachable"}
    # one line at first, then at most one a minute: 100 s of errors -> 2 lines, the first
    # of the first second's 10 errors, the second of the 600 of the minute after it
    assert len(logs) == 2, logs
    assert logs[0].startswith("1 of 2 collectors had errors in the last 1 s (10 in all;")
    assert "send failed: ENETUNREACH Network is unreachable: 192.0.2.1:6343" in logs[0]
    assert logs[1].startswith("1 of 2 collectors had errors in the last 60 s (600 in all;")


@pytest.mark.netns
def test_namespace_collector_sends_from_inside_that_namespace(netns):
    ns = netns()
    rx = ns.popen([sys.executable, "-c", RECEIVER, "127.0.0.1", "16399", "2"],
                  stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    c = Collectors([Destination("127.0.0.1", 16399, namespace=ns.name)])
    try:
        for _ in range(5):
            c.send(b"hello")
    finally:
        c.close()
    assert rx.stdout.readline().strip() == "5"  # arrived on the namespace's own loopback
    rx.wait(timeout=5)


@pytest.mark.netns
def test_dev_pins_the_outgoing_interface(netns, tmp_path):
    """dev=X makes the datagram leave through X (IP_UNICAST_IF), even when the route says otherwise."""
    here, a, b = netns(), netns(), netns()
    veth(here, "la", a, "ra", "10.231.6.1/24", "10.231.6.2/24")
    veth(here, "lb", b, "rb", "10.231.7.1/24", "10.231.7.2/24")
    # the collector address is on a's subnet; b answers for it too, so we can see which way it went
    b.run("ip addr add 10.231.6.2/32 dev rb")
    here.run("ip neigh add 10.231.6.2 lladdr %s dev lb" % b.mac("rb"))
    script = r"""
import sys
sys.path.insert(0, sys.argv[1])
from hsflowd.collectors import Collectors, Destination
c = Collectors([Destination("10.231.6.2", 16398, dev=sys.argv[2] or None)])
for _ in range(3):
    c.send(b"x")
c.close()
"""
    for dev, expect_a, expect_b in (("", 3, 0), ("lb", 0, 3)):
        ra = a.popen([sys.executable, "-c", RECEIVER, "10.231.6.2", "16398", "1.5"],
                     stdout=subprocess.PIPE, text=True)
        rb = b.popen([sys.executable, "-c", RECEIVER, "10.231.6.2", "16398", "1.5"],
                     stdout=subprocess.PIPE, text=True)
        assert ra.stdout.readline().strip() == "ready" and rb.stdout.readline().strip() == "ready"
        here.run([sys.executable, "-c", script, ROOT, dev])
        assert (int(ra.stdout.readline()), int(rb.stdout.readline())) == (expect_a, expect_b), dev
        ra.wait(timeout=5)
        rb.wait(timeout=5)


def test_dev_interface_deleted_and_made_again(netns):
    """dev=X pins the socket to X's ifindex: when X is deleted and made again (a new ifindex)
    the socket is made again too, and datagrams go out through the new X."""
    here, b = netns(), netns()
    veth(here, "lb", b, "rb", "10.231.7.1/24", "10.231.7.2/24")
    receiver = b.popen([sys.executable, "-c", RECEIVER, "0.0.0.0", "16397", "3"],
                       stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "ready"
    script = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from hsflowd.collectors import Collectors, Destination
c = Collectors([Destination("10.231.7.2", 16397, dev="lb")])
for _ in range(3):
    c.send(b"x")
print("sent", flush=True)
sys.stdin.readline()
for _ in range(30):           # 3 s: the socket is made again at the next tick
    c.send(b"y")
    c.tick()
    time.sleep(0.1)
print(c.destinations[0].stats.sent, flush=True)
c.close()
"""
    sender = here.popen([sys.executable, "-c", script, ROOT], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "sent"
        here.run("ip link del lb")
        veth(here, "lb", b, "rb", "10.231.7.1/24", "10.231.7.2/24")
        sender.stdin.write("go\n")
        sender.stdin.flush()
        sent = int(sender.stdout.readline())
        assert sender.wait(timeout=10) == 0
        received = int(receiver.stdout.readline())
    finally:
        for p in (sender, receiver):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sent >= 3 + 25, sent            # a lost datagram or two while the socket is remade
    assert received == sent, (received, sent)


# ---------------------------------------------------------------- many collectors that fail

REFUSED = ("the network refused datagrams", "ECONNREFUSED Connection refused (nothing listens "
                                            "on the port?)")
SUMMARY = re.compile(r"(\d+) of (\d+) collectors had errors in the last (\d+) s \((\d+) in all")


def test_a_steady_state_of_failing_collectors_is_one_line_a_minute():
    """2,000 collectors refusing every second for three minutes: a line at the first tick,
    then one a minute; one that starts failing is told at the next tick, with them."""
    from hsflowd.collectors import ErrorLog
    clock = FakeClock()
    start = clock.now
    ds = [Destination("127.0.0.1", 20000 + i, where=f"/etc/hsflowd.conf:{3 + i}")
          for i in range(2001)]
    failing, late = ds[:2000], ds[2000]
    errors = ErrorLog(clock)
    lines = []
    for second in range(200):
        for d in failing:
            errors.add(d, REFUSED)
        if second == 150:
            errors.add(late, ("send failed", "ENETUNREACH Network is unreachable"))
        clock.now += 1
        line = errors.flush(clock.now, len(ds))
        if line is not None:
            lines.append((clock.now - start, line))
    assert [at for at, _ in lines] == [1, 61, 121, 151], [at for at, _ in lines]
    first = lines[0][1]
    assert SUMMARY.match(first).groups() == ("2000", "2001", "1", "2000")
    assert first.endswith("the network refused datagrams: ECONNREFUSED Connection refused "
                          "(nothing listens on the port?): 127.0.0.1:20000 (/etc/hsflowd.conf:3), "
                          "127.0.0.1:20001 (/etc/hsflowd.conf:4), 127.0.0.1:20002 "
                          "(/etc/hsflowd.conf:5) and 1997 more"), first
    # a minute of them: the errors of seconds 1..60 (each collector's, once a second)
    assert SUMMARY.match(lines[1][1]).groups() == ("2000", "2001", "60", str(60 * 2000))
    # the new one comes at once, with the 30 s of the others' since the last line
    new = lines[3][1]
    assert SUMMARY.match(new).groups() == ("2001", "2001", "30", str(30 * 2000 + 1))
    assert new.endswith("; send failed: ENETUNREACH Network is unreachable: 127.0.0.1:22000 "
                        "(/etc/hsflowd.conf:2003)"), new


def test_no_errors_no_line_and_a_line_again_after_a_quiet_minute():
    from hsflowd.collectors import ErrorLog
    clock = FakeClock()
    d = Destination("192.0.2.1", 6343)
    errors = ErrorLog(clock)
    assert errors.flush(clock.now, 1) is None
    errors.add(d, REFUSED)
    clock.now += 1
    assert SUMMARY.match(errors.flush(clock.now, 1)).groups() == ("1", "1", "1", "1")
    clock.now += 30
    errors.add(d, REFUSED)                      # within the minute: counted, not told
    clock.now += 1
    assert errors.flush(clock.now, 1) is None
    clock.now += 100                            # quiet; then it fails again: the line
                                                # has both, the first 102 s ago
    errors.add(d, REFUSED)
    clock.now += 1
    assert SUMMARY.match(errors.flush(clock.now, 1)).groups() == ("1", "1", "102", "2")


@pytest.mark.netns
def test_refusing_collectors_among_good_ones_are_counted_and_summarised(netns):
    """2,000 ports where nothing listens between two that do, in a namespace of the test's
    own (its ICMP counters are ours alone; icmp_ratemask=0: every refusal is answered, so
    every datagram to them comes back).  The good ones receive every datagram; each
    refusing collector has exactly one error per datagram, all of them the kernel's,
    whether read at once after its own send or after the next send failed for it (the
    second good one, once it stops listening); the log has a line for the first tick, one
    when the second good one starts refusing, and one a minute later, and they count them."""
    ns = netns()
    ns.run("sysctl -q -w net.ipv4.icmp_ratemask=0")
    script = r"""
import json, logging, socket, sys
sys.path.insert(0, sys.argv[1])
from hsflowd.collectors import Collectors, Destination
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)

def unreachables():
    lines = open("/proc/net/snmp").read().splitlines()
    icmp = [l.split()[1:] for l in lines if l.startswith("Icmp:")]
    return int(dict(zip(*icmp))["InDestUnreachs"])

good = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    good.append(s)
ports = [p for p in range(20000, 22002) if p not in {s.getsockname()[1] for s in good}][:2000]
dests = ([Destination("127.0.0.1", good[0].getsockname()[1])]
         + [Destination("127.0.0.1", p) for p in ports[:1000]]
         + [Destination("127.0.0.1", good[1].getsockname()[1])]
         + [Destination("127.0.0.1", p) for p in ports[1000:]])

def drain(s):
    n = 0
    while True:
        try:
            s.recv(100)
        except BlockingIOError:
            return n
        n += 1

now = [0.0]
c = Collectors(dests, clock=lambda: now[0])
before = unreachables()
received = [0, 0]
for i in range(5):
    if i == 3:                 # the second good one stops listening
        received[1] = drain(good[1])
        good[1].close()
    c.send(b"d%d" % i)
    now[0] += 1
    c.tick()
now[0] += 60
c.send(b"d5")
c.tick()
received[0] = drain(good[0])
print(json.dumps({"status": c.status(), "unreachables": unreachables() - before,
                  "received": received}))
"""
    out = ns.run([sys.executable, "-c", script, ROOT]).stdout.splitlines()
    result = json.loads(out[-1])
    logs = out[:-1]
    status = result["status"]
    good = [status[0], status[1001]]
    refusing = status[1:1001] + status[1002:]
    assert result["received"] == [6, 3]
    assert [(c["datagrams"], c["errors"]) for c in good] == [(6, 0), (6, 3)]
    assert all((c["datagrams"], c["errors"]) == (6, 6) for c in refusing), \
        [c for c in refusing if (c["datagrams"], c["errors"]) != (6, 6)][:3]
    assert all(c["last_error"] == "ECONNREFUSED Connection refused" for c in refusing)
    assert sum(c["errors"] for c in status) == result["unreachables"] == 12003
    # the first tick's (one datagram to 2,000); at the tick after the second good one's
    # first refusal, all since the first line (datagrams 1 to 3: 3 x 2,000 + 1); a minute
    # after that, the rest (two datagrams to 2,001)
    assert len(logs) == 3, logs
    assert SUMMARY.match(logs[0]).groups() == ("2000", "2002", "1", "2000"), logs[0]
    assert SUMMARY.match(logs[1]).groups() == ("2001", "2002", "3", "6001"), logs[1]
    assert SUMMARY.match(logs[2]).groups() == ("2001", "2002", "61", "4002"), logs[2]
    assert f"127.0.0.1:{refusing[0]['port']}, 127.0.0.1:{refusing[1]['port']}, " \
           f"127.0.0.1:{refusing[2]['port']} and 1997 more" in logs[0]
