"""A sampling agent through the events every host sees, and the checks made after each.

``Rig`` builds two namespaces the test owns: "host", where the agent runs (its collector on
that namespace's loopback, a UDP sink on port 9999), and "peer", which sends known UDP
packets through the veth pair vh (host side, the sampled interface) and vp (peer side).

After every event a test calls ``rig.check(...)``, which asserts:

- samples keep coming at the configured rate: packets are sent until the first sample at
  that rate arrives (within FIRST_SAMPLE_WITHIN of the event), then a burst, whose samples
  all carry the rate and number within 4 standard deviations of packets / N (binomial,
  p = 1/N);
- the agent is idle again over IDLE_WINDOW with no traffic: asleep between ticks, its CPU share
  back near what it was at rest (agentproc.assert_idle says why not a fixed share);
- its file descriptors and threads are back to the counts it had after its first burst,
  and its resident memory within a stated margin.
"""

from __future__ import annotations

import math
import sys
import time
from typing import List, Optional

from agentproc import (Activity, AgentFactory, Held, Receiver, assert_holds, assert_idle,
                       config_text, proc_memory_kb, settled, udp_socket,
                       wait_until)  # noqa: F401 (wait_until: for the tests)
from netns import veth

HOST_IP, PEER_IP = "10.231.20.1", "10.231.20.2"
PORT = 9999
MARK = b"hsflowd-life"
NFLOG_GROUP = 7
# What an idle check watches: three ticks tell an idle agent (a wake-up a second, well under
# 1 % of a core) from the faults assert_idle names (a descriptor that spins: 100 %; a timer
# gone wild: hundreds of wake-ups a second); it runs after every event, so it adds up.
IDLE_WINDOW = 3.0
# Sampling resumes by itself after an event: at the next tick for a reload, on the netlink
# event for a link (about a second); at start-up after the interpreter, and epcap's compile
# (about two).  Five times the longer: the fault is sampling that never comes back.
FIRST_SAMPLE_WITHIN = 10.0
TRICKLE_PPS = 4000

SENDER = r"""
import socket, sys, time
dst, port, count, pps, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for i in range(count):
    s.sendto(mark + b"%08d" % i, (dst, port))
    if i % 100 == 99:
        ahead = start + (i + 1) / pps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
"""

SINK = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", %d))
while True:
    s.recv(65535)
""" % PORT


def sampler_body(kind: str, rate: int, header: int = 128, promisc: Optional[bool] = None,
                 dev: str = "vh") -> str:
    """The config lines (inside sflow { }) that sample ``dev`` 1-in-``rate``."""
    lines = [f"headerBytes = {header}"]
    p = "" if promisc is None else f" promisc = {'on' if promisc else 'off'}"
    if kind == "pcap":
        lines.append(f"pcap {{ dev = {dev} sampling = {rate}{p} }}")
    elif kind == "epcap":
        lines.append(f"epcap {{ dev = {dev} sampling = {rate}{p} }}")
    elif kind == "nflog":
        # the rule hands every packet over (probability 1): the agent keeps 1 in rate
        lines += [f"sampling = {rate}", f"nflog {{ group = {NFLOG_GROUP} probability = 1 }}"]
    else:
        raise ValueError(kind)
    return "\n".join(lines)


class Figures:
    """An agent process's file descriptors and threads between its polls (agentproc.settled),
    and its resident memory."""

    def __init__(self, pid: int):
        self.threads, self.fds = settled(pid, 0.5)
        self.rss_kb = proc_memory_kb(pid)[0]

    def __repr__(self) -> str:
        return f"fds={self.fds} threads={self.threads} rss={self.rss_kb} kB"


class Rig:
    def __init__(self, netns, agents: AgentFactory, kind: str, rate: int = 10,
                 extra: str = "", polling: int = 2, start: bool = True):
        self.kind = kind
        self.rate = rate
        self.extra = extra
        self.polling = polling
        self.host, self.peer = netns(), netns()
        self.make_link()
        self.sink = self.host.popen([sys.executable, "-c", SINK])
        self.receiver = Receiver(udp_socket("127.0.0.1", self.host.name))
        self.receivers: List[Receiver] = [self.receiver]
        if kind == "nflog":
            self.host.run(["iptables", "-A", "INPUT", "-i", "vh", "-p", "udp", "--dport", str(PORT),
                           "-j", "NFLOG", "--nflog-group", str(NFLOG_GROUP)])
        self.agent = agents(self.config(), netns=self.host.name, start=start)
        self.baseline: Optional[Figures] = None
        self.rest: Optional[Activity] = None

    def make_link(self) -> None:
        veth(self.host, "vh", self.peer, "vp", f"{HOST_IP}/24", f"{PEER_IP}/24")
        self.ifindex = self.host.ifindex("vh")

    def config(self, rate: Optional[int] = None, header: int = 128,
               promisc: Optional[bool] = None, receiver: Optional[Receiver] = None) -> str:
        self.rate = rate or self.rate
        r = receiver or self.receiver
        return config_text([("127.0.0.1", r.port)], polling=self.polling,
                           extra=sampler_body(self.kind, self.rate, header, promisc) + "\n" + self.extra)

    def new_receiver(self) -> Receiver:
        r = Receiver(udp_socket("127.0.0.1", self.host.name))
        self.receivers.append(r)
        return r

    def reload(self, text: str) -> float:
        self.agent.write_config(text)
        t = time.monotonic()
        self.agent.signal(1)   # SIGHUP
        return t

    # ------------------------------------------------------------ traffic and samples
    def burst(self, count: int = 10000, pps: float = 10000) -> None:
        self.peer.run([sys.executable, "-c", SENDER, HOST_IP, str(PORT), str(count), str(pps),
                       MARK.decode()])

    def our_samples(self, received, rate: Optional[int] = None):
        """(arrival, flow sample) for samples of our packets on the sampled interface."""
        from hsflowd.sflow import FlowSample
        out = []
        for r in received:
            for s in r.datagram.samples:
                if not isinstance(s, FlowSample):
                    continue
                header = s.flow_records[0]
                if MARK not in getattr(header, "header", b""):
                    continue
                if rate is not None and s.sampling_rate != rate:
                    continue
                out.append((r.at, s))
        return out

    def first_sample(self, since: float, rate: int, receiver: Receiver) -> float:
        """Trickle packets until a sample at ``rate`` arrives; its delay after ``since``."""
        count = int(TRICKLE_PPS * (FIRST_SAMPLE_WITHIN + 3.0))
        trickle = self.peer.popen([sys.executable, "-c", SENDER, HOST_IP, str(PORT), str(count),
                                   str(TRICKLE_PPS), MARK.decode()])
        try:
            deadline = since + FIRST_SAMPLE_WITHIN + 3.0
            while time.monotonic() < deadline:
                r = receiver.recv(0.1)
                if r is not None and self.our_samples([r], rate):
                    return r.at - since
            raise AssertionError(f"no sample at 1-in-{rate} within {deadline - since:.0f} s of "
                                 f"the event: {self.agent.stderr()[-3000:]}")
        finally:
            trickle.kill()
            trickle.wait()

    def check_sampling(self, since: float, rate: int, count: int = 10000,
                       receiver: Optional[Receiver] = None, ds_index: Optional[int] = None,
                       header_bytes: Optional[int] = None) -> list:
        """The first sample at ``rate`` within FIRST_SAMPLE_WITHIN of ``since``; then a
        burst of ``count`` packets, sampled at that rate."""
        r = receiver or self.receiver
        delay = self.first_sample(since, rate, r)
        assert delay <= FIRST_SAMPLE_WITHIN, f"the first sample came {delay:.2f} s after the event"
        time.sleep(0.3)      # the trickle's last packets have gone through
        r.collect(0.3)
        self.burst(count)
        got = r.collect(1.0)
        ours = self.our_samples(got, rate)
        p = 1 / rate
        sd = math.sqrt(count * p * (1 - p))
        n = len(ours)
        assert abs(n - count * p) <= 4 * sd, \
            f"{n} samples of {count} packets at 1-in-{rate}: expected {count * p:.0f} +- {4 * sd:.0f}"
        if ds_index is not None:
            assert {s.source_id_index for _, s in ours} == {ds_index}
        if header_bytes is not None:
            assert max(len(s.flow_records[0].header) for _, s in ours) <= header_bytes
        return ours

    # ------------------------------------------------------------ the agent's own figures
    def settle(self) -> Figures:
        """Figures once the agent is past its first burst (threads and caches made)."""
        self.baseline = Figures(self.agent.pid)
        return self.baseline

    def check_idle(self) -> Activity:
        """Idle again (see agentproc.assert_idle); the first call records the agent at rest,
        which later calls compare with."""
        time.sleep(1.0)   # blocks handed over, the tick after the traffic
        now = assert_idle(self.agent.pid, IDLE_WINDOW, self.rest,
                          context=lambda: self.agent.stderr()[-1500:])
        if self.rest is None:
            self.rest = now
        return now

    def check_resources(self, rss_margin_kb: int = 4096, extra_fds: int = 0) -> Figures:
        base = self.baseline
        assert_holds(self.agent.pid, Held(base.threads, base.fds + extra_fds))
        now = Figures(self.agent.pid)
        assert now.rss_kb - base.rss_kb <= rss_margin_kb, f"memory {base} -> {now}"
        return now

    def check(self, since: float, rate: Optional[int] = None, extra_fds: int = 0, **kw) -> None:
        assert self.agent.alive(), self.agent.stderr()[-3000:]
        self.check_sampling(since, rate or self.rate, **kw)
        self.check_idle()
        self.check_resources(extra_fds=extra_fds)

    def close(self) -> None:
        for r in self.receivers:
            r.close()

