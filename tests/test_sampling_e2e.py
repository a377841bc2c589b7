"""Packet sampling end to end: the agent as a real process in a test namespace, real traffic.

Each topology is built in namespaces the test creates: "host" (where the agent runs, its
collector on that namespace's loopback) and one or more peers.  A known number of UDP
packets, each carrying a marker and its number, crosses the sampled interface; the test
decodes what the collector received and checks:

- samples x N is within 4 standard deviations of the packets sent (binomial with p = 1/N:
  sd = sqrt(K p (1-p)); the bound is on the count of samples of *our* packets);
- every sampled header is one of the packets sent (addresses, ports, payload bytes);
- input and output interfaces follow hsflowd's host or bridge model;
- the sample pool is within 5% of the packets the interface carried.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from netns import veth

pytestmark = pytest.mark.netns

INTERNAL = 0x3FFFFFFF
MARK = b"hsflowd-e2e"
PORT = 9999
N = 10
PACKETS = 20000


def kernel_has(option: str) -> bool:
    try:
        out = subprocess.run(["sh", "-c", "zcat /proc/config.gz"], capture_output=True, text=True).stdout
    except OSError:
        return True
    if not out:
        return True  # no config to read: try, and let the test fail if the kernel refuses
    return f"{option}=y" in out or f"{option}=m" in out


class AgentRun:
    """The agent and a decoder both running in one namespace; datagrams land in a file."""

    def __init__(self, ns, tmp_path, config_body: str):
        self.ns = ns
        self.out = tmp_path / "datagrams.json"
        conf = tmp_path / "hsflowd.conf"
        port = 16343
        conf.write_text("sflow {\n  polling = 1\n  collector { ip = 127.0.0.1 udpport = %d }\n%s\n}\n"
                        % (port, config_body))
        self.log = open(tmp_path / "agent.log", "w")
        with open(self.out, "w") as out:
            self.decoder = ns.popen([sys.executable, "-m", "hsflowd", "decode", "--json", "--port",
                                     str(port)], stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        self.agent = ns.popen([sys.executable, "-m", "hsflowd", "-dd", "-f", str(conf),
                               "-p", str(tmp_path / "pid"), "-o", str(tmp_path / "auto")],
                              stdout=self.log, stderr=self.log)
        self.logfile = tmp_path / "agent.log"
        deadline = time.time() + 10
        while time.time() < deadline and not self.datagrams():
            time.sleep(0.1)
        assert self.datagrams(), f"no datagram from the agent: {self.logfile.read_text()}"

    def datagrams(self):
        try:
            return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError):
            return []

    def flow_samples(self):
        return [s for d in self.datagrams() for s in d["samples"] if s["struct"] == "flow_sample_expanded"]

    def stop(self):
        self.agent.terminate()
        self.agent.wait(timeout=5)
        time.sleep(0.3)
        self.decoder.terminate()
        self.decoder.wait(timeout=5)
        self.log.close()
        return self.agent.returncode


SENDER = r"""
import socket, sys
dst, count, mark = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777))
for i in range(count):
    s.sendto(mark + b"%08d" % i, (dst, %(port)d))
""".replace("%(port)d", str(PORT))


def send(ns, dst: str, count: int = PACKETS) -> None:
    ns.run([sys.executable, "-c", SENDER, dst, str(count), MARK.decode()])


def our_samples(samples):
    """(sample, scapy packet) for the samples of the test's packets."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    out = []
    for s in samples:
        header = next(r for r in s["flow_records"] if r["struct"] == "sampled_header")
        raw = bytes.fromhex(header["header"])
        if MARK not in raw:
            continue
        pkt = Ether(raw)
        # not the ICMP errors that quote our packets: only the UDP packets themselves
        if IP in pkt and pkt[IP].proto == 17:
            out.append((s, header, pkt))
    return out


def check_count(count: int, sent: int, rate: int) -> None:
    p = 1 / rate
    sd = math.sqrt(sent * p * (1 - p))
    assert abs(count - sent * p) <= 4 * sd, \
        f"{count} samples of {sent} packets at 1-in-{rate}: expected {sent * p:.0f} +- {4 * sd:.0f}"


def check_headers(pairs, src: str, dst: str) -> None:
    from scapy.layers.inet import IP, UDP

    for sample, header, pkt in pairs:
        assert pkt[IP].src == src and pkt[IP].dst == dst
        assert pkt[UDP].sport == 7777 and pkt[UDP].dport == PORT
        payload = bytes(pkt[UDP].payload)
        assert payload.startswith(MARK) and payload[len(MARK):].isdigit()
        assert header["header_protocol"] == 1 and header["stripped"] == 4
        # frame on the wire: 14 Ethernet + 20 IP + 8 UDP + payload, + 4 FCS
        assert header["frame_length"] == 14 + 20 + 8 + len(MARK) + 8 + 4
        assert sample["sampling_rate"] == N


def link_packets(ns, ifname: str) -> int:
    stats = "/sys/class/net/%s/statistics/" % ifname
    rx = int(ns.run(["cat", stats + "rx_packets"]).stdout)
    tx = int(ns.run(["cat", stats + "tx_packets"]).stdout)
    return rx + tx


def check_pool(samples, packets: int) -> None:
    pool = max(s["sample_pool"] for s in samples)
    assert abs(pool - packets) <= 0.05 * packets, f"sample_pool {pool} vs {packets} packets"


# ---------------------------------------------------------------- a NIC (veth as eth0)

def test_nic_host_model(netns, tmp_path):
    host, peer = netns(), netns()
    veth(host, "eth0", peer, "wire", "10.231.0.1/24", "10.231.0.2/24")
    run_ = AgentRun(host, tmp_path, f"  pcap {{ dev = eth0 sampling = {N} }}")
    try:
        send(peer, "10.231.0.1")            # received by the host
        send(host, "10.231.0.2")            # sent by the host
        time.sleep(2.5)                     # a tick re-anchors the pool; samples wait <= 1 s
        packets = link_packets(host, "eth0")
    finally:
        assert run_.stop() == 0
    eth0 = host.ifindex("eth0")
    samples = run_.flow_samples()
    assert all(s["source_id_type"] == 0 and s["source_id_index"] == eth0 for s in samples)
    pairs = our_samples(samples)
    received = [p for p in pairs if p[2]["IP"].dst == "10.231.0.1"]
    sent = [p for p in pairs if p[2]["IP"].dst == "10.231.0.2"]
    check_count(len(received), PACKETS, N)
    check_count(len(sent), PACKETS, N)
    check_headers(received, "10.231.0.2", "10.231.0.1")
    check_headers(sent, "10.231.0.1", "10.231.0.2")
    assert {(s["input"], s["output"]) for s, _, _ in received} == {(eth0, INTERNAL)}
    assert {(s["input"], s["output"]) for s, _, _ in sent} == {(INTERNAL, eth0)}
    check_pool(samples, packets)
    seqs = [s["sequence_number"] for s in samples]
    assert seqs == list(range(1, len(seqs) + 1))
    # every sampled interface also gets interface counter samples
    counters = [s for d in run_.datagrams() for s in d["samples"]
                if s["struct"] == "counters_sample_expanded" and s["source_id_type"] == 0]
    assert counters and {s["source_id_index"] for s in counters} == {eth0}


# ---------------------------------------------------------------- docker0: bridge + veths to containers

def test_bridge_like_docker0(netns, tmp_path):
    host, c1, c2 = netns(), netns(), netns()
    host.run("ip link add docker0 type bridge")
    host.run("ip addr add 172.31.0.1/24 dev docker0")
    host.run("ip link set docker0 up")
    for ns, port, addr in ((c1, "veth1", "172.31.0.2/24"), (c2, "veth2", "172.31.0.3/24")):
        veth(host, port, ns, "eth0", None, addr)
        host.run(f"ip link set {port} master docker0")
    # promiscuous: the bridge device sees container-to-container traffic too
    run_ = AgentRun(host, tmp_path, f"  pcap {{ dev = docker0 sampling = {N} promisc = on }}")
    try:
        send(c1, "172.31.0.1")              # container -> host
        send(c1, "172.31.0.3")              # container -> container, bridged
        time.sleep(2.5)
        packets = link_packets(host, "docker0")
    finally:
        assert run_.stop() == 0
    docker0, veth1, veth2 = (host.ifindex(n) for n in ("docker0", "veth1", "veth2"))
    samples = run_.flow_samples()
    assert {s["source_id_index"] for s in samples} == {docker0}
    pairs = our_samples(samples)
    to_host = [p for p in pairs if p[2]["IP"].dst == "172.31.0.1"]
    across = [p for p in pairs if p[2]["IP"].dst == "172.31.0.3"]
    check_count(len(to_host), PACKETS, N)
    check_count(len(across), PACKETS, N)
    check_headers(to_host, "172.31.0.2", "172.31.0.1")
    check_headers(across, "172.31.0.2", "172.31.0.3")
    # the container's veth as the bridge port: its peer in this namespace, from the FDB
    assert {(s["input"], s["output"]) for s, _, _ in to_host} == {(veth1, INTERNAL)}
    assert {(s["input"], s["output"]) for s, _, _ in across} == {(veth1, veth2)}
    check_pool(samples, packets)
    # vport defaults on for a bridge: its ports get counter samples too
    polled = {s["source_id_index"] for d in run_.datagrams() for s in d["samples"]
              if s["struct"] == "counters_sample_expanded" and s["source_id_type"] == 0}
    assert {docker0, veth1, veth2} <= polled


# ---------------------------------------------------------------- macvlan (bridge mode)

def test_macvlan_parent(netns, tmp_path):
    host, outside, c1 = netns(), netns(), netns()
    veth(host, "eth0", outside, "wire", None, "10.231.2.9/24")
    host.run("ip link add link eth0 name mv1 type macvlan mode bridge")
    host.run(f"ip link set mv1 netns {c1.name}")
    c1.run("ip addr add 10.231.2.2/24 dev mv1")
    c1.run("ip link set mv1 up")
    run_ = AgentRun(host, tmp_path, f"  pcap {{ dev = eth0 sampling = {N} }}")
    try:
        send(c1, "10.231.2.9")              # container -> outside, out through eth0
        send(outside, "10.231.2.2")         # outside -> container, in through eth0
        time.sleep(2.5)
        packets = link_packets(host, "eth0")
    finally:
        assert run_.stop() == 0
    eth0 = host.ifindex("eth0")
    pairs = our_samples(run_.flow_samples())
    out = [p for p in pairs if p[2]["IP"].dst == "10.231.2.9"]
    into = [p for p in pairs if p[2]["IP"].dst == "10.231.2.2"]
    check_count(len(out), PACKETS, N)
    check_count(len(into), PACKETS, N)
    check_headers(out, "10.231.2.2", "10.231.2.9")
    check_headers(into, "10.231.2.9", "10.231.2.2")
    # the container is part of the host: sent = from internal, received = to internal
    assert {(s["input"], s["output"]) for s, _, _ in out} == {(INTERNAL, eth0)}
    assert {(s["input"], s["output"]) for s, _, _ in into} == {(eth0, INTERNAL)}
    check_pool(run_.flow_samples(), packets)


# ---------------------------------------------------------------- ipvlan (L2 and L3)

@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_ipvlan_parent(netns, tmp_path, mode):
    if not kernel_has("CONFIG_IPVLAN"):
        pytest.skip("this kernel has no ipvlan (CONFIG_IPVLAN is not set in /proc/config.gz)")
    host, outside, c1 = netns(), netns(), netns()
    veth(host, "eth0", outside, "wire", None, "10.231.3.9/24")
    host.run(f"ip link add link eth0 name ipv1 type ipvlan mode {mode}")
    host.run(f"ip link set ipv1 netns {c1.name}")
    c1.run("ip addr add 10.231.3.2/24 dev ipv1")
    c1.run("ip link set ipv1 up")
    if mode == "l3":
        outside.run("ip route add 10.231.3.2/32 dev wire")
    run_ = AgentRun(host, tmp_path, f"  pcap {{ dev = eth0 sampling = {N} }}")
    try:
        send(c1, "10.231.3.9")
        send(outside, "10.231.3.2")
        time.sleep(2.5)
    finally:
        assert run_.stop() == 0
    eth0 = host.ifindex("eth0")
    pairs = our_samples(run_.flow_samples())
    out = [p for p in pairs if p[2]["IP"].dst == "10.231.3.9"]
    into = [p for p in pairs if p[2]["IP"].dst == "10.231.3.2"]
    check_count(len(out), PACKETS, N)
    check_count(len(into), PACKETS, N)
    # children share the parent's MAC: only the kernel's direction can tell these apart
    assert {(s["input"], s["output"]) for s, _, _ in out} == {(INTERNAL, eth0)}
    assert {(s["input"], s["output"]) for s, _, _ in into} == {(eth0, INTERNAL)}


# ---------------------------------------------------------------- interfaces that come and go

def test_dev_appears_later_and_disappears(netns, tmp_path):
    host, peer = netns(), netns()
    run_ = AgentRun(host, tmp_path, "  pcap { dev = late0 sampling = 1 }")
    try:
        time.sleep(1)
        veth(host, "late0", peer, "wire", "10.231.4.1/24", "10.231.4.2/24")
        time.sleep(1.5)                      # netlink event -> the tap opens, no restart
        send(peer, "10.231.4.1", 200)
        time.sleep(1.5)
        host.run("ip link del late0")
        time.sleep(1.5)
        log = run_.logfile.read_text()
        assert run_.agent.poll() is None, log
    finally:
        assert run_.stop() == 0
    assert "pcap: sampling late0" in log and "pcap: stopped sampling late0" in log
    pairs = our_samples(run_.flow_samples())
    # N = 1 takes every packet
    assert len(pairs) == 200


# ---------------------------------------------------------------- a device with no link header

TUN_WRITER = r"""
import fcntl, os, socket, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"tun0", IFF_TUN | IFF_NO_PI))
os.system("ip addr add 10.231.10.1/24 dev tun0 && ip link set tun0 up")
print("ready", flush=True)
sys.stdin.readline()          # wait until the agent samples tun0
mark = sys.argv[1].encode()
for i in range(int(sys.argv[2])):
    payload = mark + b"%08d" % i
    udp = struct.pack(">HHHH", 7777, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     socket.inet_aton("10.231.10.2"), socket.inet_aton("10.231.10.1"))
    os.write(fd, ip + udp)    # the kernel receives it on tun0, as from a VPN peer
time.sleep(3)
"""


def test_tun_device_raw_ip(netns, tmp_path):
    """A tun device carries bare IP packets: sampled as IPv4 headers (protocol 11), with the
    missing Ethernet header counted as stripped, as hsflowd reports them."""
    host = netns()
    writer = host.popen([sys.executable, "-c", TUN_WRITER, MARK.decode(), "300"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    run_ = AgentRun(host, tmp_path, "  pcap { dev = tun0 sampling = 1 }")
    try:
        time.sleep(1)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        time.sleep(2.5)
        tun0 = host.ifindex("tun0")
    finally:
        assert run_.stop() == 0
    ours = []
    for s in run_.flow_samples():
        header = next(r for r in s["flow_records"] if r["struct"] == "sampled_header")
        if MARK.hex() in header["header"]:
            ours.append((s, header))
    assert len(ours) == 300                      # N = 1: every packet
    for s, header in ours:
        raw = bytes.fromhex(header["header"])
        assert header["header_protocol"] == 11 and raw[0] >> 4 == 4
        assert header["stripped"] == 18          # FCS + the Ethernet header it never had
        assert header["frame_length"] == len(raw) + 18
        assert (s["input"], s["output"]) == (tun0, INTERNAL)


def test_one_interface_failing_does_not_stop_the_others(netns, tmp_path):
    """Two sampled interfaces; one is deleted under the agent: the other keeps sampling."""
    host, p1, p2 = netns(), netns(), netns()
    veth(host, "eth0", p1, "wire", "10.231.11.1/24", "10.231.11.2/24")
    veth(host, "eth1", p2, "wire", "10.231.12.1/24", "10.231.12.2/24")
    run_ = AgentRun(host, tmp_path, "  pcap { dev = eth0 sampling = 1 }\n  pcap { dev = eth1 sampling = 1 }")
    try:
        send(p1, "10.231.11.1", 100)
        time.sleep(0.3)                          # the ring hands a block over within 100 ms
        p1.delete()                              # eth0's peer goes: eth0 goes with it
        time.sleep(1.5)
        send(p2, "10.231.12.1", 100)
        time.sleep(1.5)
        alive = run_.agent.poll() is None
    finally:
        assert run_.stop() == 0
    assert alive
    by_source = {}
    for s, _, _ in our_samples(run_.flow_samples()):
        by_source[s["source_id_index"]] = by_source.get(s["source_id_index"], 0) + 1
    assert sorted(by_source.values()) == [100, 100]
