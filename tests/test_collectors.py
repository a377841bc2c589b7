"""Collectors: real UDP sockets, in the root namespace (loopback only) and in test namespaces."""

from __future__ import annotations

import json
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
    now[0] += 0.1                 # 100 s of sending
print(json.dumps({"errors": c.destinations[0].stats.errors, "sent_ok": c.destinations[1].stats.sent,
                  "received": got, "last": c.destinations[0].stats.last_error}))
"""
    out = ns.run([sys.executable, "-c", script, ROOT]).stdout.splitlines()
    result = json.loads(out[-1])
    logs = out[:-1]
    assert result == {"errors": 1000, "sent_ok": 1000, "received": 1000,
                      "last": "ENETUNREACH Network is unreachable"}
    # one line at first, then at most one a minute: 100 s of errors -> 2 lines
    assert len(logs) == 2, logs
    assert "send failed: ENETUNREACH" in logs[0]
    assert "more since last report" in logs[1]


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
