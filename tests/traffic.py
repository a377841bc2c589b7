"""Known traffic for the end-to-end tests, and what the kernel says crossed an interface.

Everything runs inside namespaces the test made (tests/netns.py):

- ``send_udp``: a Python sender, paced, with IP_RECVERR so that a packet the veth could not
  hand over (its peer's backlog full: ENOBUFS) is retried, not silently lost; it prints how
  many it sent.  ``sink`` binds the ports so that no ICMP error answers the traffic.
- ``TcpFlow``: a real TCP connection between two namespaces carrying a known number of
  bytes, paced in the application; segmentation offloads off (``no_offloads``) so every
  packet on the veth is one MSS-sized segment, as on a wire.
- ``FlowCounters``: iptables rules in INPUT with no target, one per flow, in the namespace
  that receives it: the packets and bytes that arrived, the ground truth.  iptables counts
  IP bytes; a collector counts sFlow's frame_length, the Ethernet frame plus its 4-byte FCS,
  so ``frame_bytes`` adds 18 a packet.
- ``link_counters``: /sys/class/net/X/statistics as seen in the namespace.
- ``SampleReader``: a thread that keeps reading an agentproc.Receiver while traffic runs.

The bounds: a flow of K packets sampled 1-in-N gives k ~ Binomial(K, 1/N) samples; scaled
by N the estimate has sd sqrt(K (N - 1)) packets, and about s sqrt(K (N - 1)) bytes for
packets of s bytes.  ``four_sigma`` is the tolerance the tests allow.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

FCS_AND_ETHERNET = 14 + 4

UDP_SENDER = r"""
import errno, socket, sys, time
src, sport, dst, dport, count, size, pps = sys.argv[1:8]
sport, dport, count, size, pps = int(sport), int(dport), int(count), int(size), float(pps)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 11, 1)   # IP_RECVERR: report ENOBUFS instead of losing it
s.bind((src, sport))
payload = (b"hsflowd-traffic" * (size // 15 + 1))[:size]
addr = (dst, dport)
start = time.monotonic()
sent = retries = 0
while sent < count:
    try:
        s.sendto(payload, addr)
    except OSError as e:
        if e.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
            raise
        retries += 1
        time.sleep(0.0002)
        continue
    sent += 1
    if pps and sent % 200 == 0:
        ahead = sent / pps - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
print(sent, retries, flush=True)
"""

SINK = r"""
import socket, sys, time
socks = []
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(port)))
    socks.append(s)
print("ready", flush=True)
time.sleep(3600)
"""

TCP_SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
buf = bytearray(1 << 20)
total = 0
while True:
    n = c.recv_into(buf)
    if not n:
        break
    total += n
c.close()
print(total, flush=True)
"""

TCP_CLIENT = r"""
import socket, struct, sys, time
src, sport, dst, dport, total, rate = sys.argv[1:7]
total, rate = int(total), float(rate)
s = socket.socket()
s.bind((src, int(sport)))
s.connect((dst, int(dport)))
chunk = b"t" * 65536
sent, start = 0, time.monotonic()
while sent < total:
    n = min(len(chunk), total - sent)
    s.sendall(chunk[:n])
    sent += n
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
s.shutdown(socket.SHUT_WR)
s.recv(1)                                   # the server closes after reading everything
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
retrans = struct.unpack_from("I", info, 100)[0]   # tcpi_total_retrans
print(sent, retrans, flush=True)
"""


def send_udp(ns, src: str, sport: int, dst: str, dport: int, count: int, size: int,
             pps: float = 50_000, timeout: float = 120) -> int:
    """Send ``count`` UDP datagrams of ``size`` payload bytes; the number sent."""
    out = ns.run([sys.executable, "-c", UDP_SENDER, src, str(sport), dst, str(dport),
                  str(count), str(size), str(pps)], timeout=timeout).stdout.split()
    return int(out[0])


def start_udp(ns, src: str, sport: int, dst: str, dport: int, count: int, size: int,
              pps: float = 50_000):
    """The sender as a process that runs while the test does something else."""
    import subprocess
    return ns.popen([sys.executable, "-c", UDP_SENDER, src, str(sport), dst, str(dport),
                     str(count), str(size), str(pps)], stdout=subprocess.PIPE, text=True)


def sink(ns, addr: str, *ports: int):
    """A process that binds these UDP ports and never reads (killed with the namespace)."""
    import subprocess
    proc = ns.popen([sys.executable, "-c", SINK, addr, *map(str, ports)],
                    stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def no_offloads(ns, ifname: str) -> None:
    """One packet on the veth is one segment on a wire: no TSO/GSO/GRO aggregates."""
    ns.run(["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"])


class TcpFlow:
    """``total`` bytes from client to server over one connection, paced at ``rate`` B/s."""

    def __init__(self, server_ns, server: str, port: int, client_ns, client: str,
                 client_port: int, total: int, rate: float):
        import subprocess
        self.server = server_ns.popen([sys.executable, "-c", TCP_SERVER, server, str(port)],
                                      stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == "ready"
        self.client = client_ns.popen([sys.executable, "-c", TCP_CLIENT, client, str(client_port),
                                       server, str(port), str(total), str(rate)],
                                      stdout=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 120) -> Tuple[int, int, int]:
        """(bytes sent, bytes received, retransmissions)."""
        sent, retrans = map(int, self.client.communicate(timeout=timeout)[0].split())
        received = int(self.server.communicate(timeout=timeout)[0].split()[-1])
        return sent, received, retrans


class FlowCounters:
    """Per-flow packet and byte counters: iptables rules without a target in INPUT."""

    def __init__(self):
        self.rules: Dict[str, Tuple[object, List[str]]] = {}

    def add(self, name: str, ns, proto: str, src: str, sport: int, dst: str, dport: int) -> None:
        match = ["-p", proto, "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(dport),
                 "-m", "comment", "--comment", name]
        ns.run(["iptables", "-w", "-I", "INPUT"] + match)
        self.rules[name] = (ns, match)

    def read(self) -> Dict[str, Tuple[int, int]]:
        """name -> (packets, IP bytes)."""
        out = {}
        for ns in {id(ns): ns for ns, _ in self.rules.values()}.values():
            text = ns.run(["iptables-save", "-c", "-t", "filter"]).stdout
            for line in text.splitlines():
                if not line.startswith("[") or "--comment" not in line:
                    continue
                counts, _, rest = line.partition("] ")
                packets, nbytes = map(int, counts[1:].split(":"))
                name = rest.split("--comment", 1)[1].split()[0].strip('"')
                if name in self.rules:
                    out[name] = (packets, nbytes)
        return out


def frame_bytes(packets: int, ip_bytes: int) -> int:
    """What a collector counts for these packets: Ethernet frame + FCS (sFlow frame_length)."""
    return ip_bytes + FCS_AND_ETHERNET * packets


def four_sigma(packets: int, rate: int, size: float = 1.0) -> float:
    """4 standard deviations of the estimate N x samples of ``packets`` packets of ``size``
    bytes each (1: the packet count) sampled 1-in-``rate``."""
    return 4 * size * math.sqrt(packets * (rate - 1))


def link_counters(ns, ifname: str) -> Dict[str, int]:
    names = ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped")
    paths = [f"/sys/class/net/{ifname}/statistics/{n}" for n in names]
    values = ns.run(["cat", *paths]).stdout.split()
    return dict(zip(names, map(int, values)))


class SampleReader(threading.Thread):
    """Reads an agentproc.Receiver until stopped; ``received`` grows meanwhile."""

    def __init__(self, receiver):
        super().__init__(daemon=True)
        self.receiver = receiver
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.receiver.recv(0.2)
            except OSError:      # the socket was closed under us: the test is over
                return

    def stop(self) -> list:
        if self.is_alive():
            self.stopping.set()
            self.join(timeout=5)
            self.receiver.drain()
        return self.receiver.received


def flow_samples(received) -> List[object]:
    """The flow samples of these datagrams, in arrival order."""
    return [s for r in received for s in r.datagram.samples if hasattr(s, "flow_records")]


def five_tuple(sample) -> Optional[Tuple[str, str, str, int, int]]:
    """(src, dst, proto, sport, dport) of a flow sample's Ethernet/IPv4 header, else None."""
    import socket
    import struct
    header = sample.flow_records[0].header
    if len(header) < 14 + 20 or header[12:14] != b"\x08\x00":
        return None
    ip = header[14:]
    ihl = (ip[0] & 15) * 4
    proto = {6: "tcp", 17: "udp"}.get(ip[9])
    if proto is None or len(ip) < ihl + 4:
        return None
    sport, dport = struct.unpack_from(">HH", ip, ihl)
    return (socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), proto, sport, dport)


def wait_until(check, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()
