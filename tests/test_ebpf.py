"""epcap {} sampling through bcc: tc programs on a veth between two test namespaces.

The sampler runs in a child process inside the sampled namespace (this file run as a
script: ``python tests/test_ebpf.py agent``), driven by JSON lines on stdin and answering
on stdout, so the test process never enters a namespace.  Namespace B is sampled, A sends;
IPv6 is off and ARP entries are static, so the veth carries only the test's UDP packets and
the program's packet count must equal what was sent.

Statistical bound: with n packets sampled 1-in-N, the number of samples is binomial with
mean n/N and standard deviation sqrt(n (1/N)(1 - 1/N)); the tests accept 4 standard
deviations (for n = 20000, N = 10: 2000 +- 170), which fails by chance about once in 16,000.

Every test skips, saying why, when bcc is missing or cannot compile here (no kernel
headers: run tests/ebpf_setup.sh).
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

A_ADDR, B_ADDR = "10.251.0.1", "10.251.0.2"
PORT, SPORT = 9999, 40000

# a UDP sender: count packets of payload "hsft" + 8-digit number, padded to size
SENDER = r"""
import socket, sys, time
dst, count, size, pace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", %d))
for i in range(count):
    s.sendto((b"hsft%%08d" %% i).ljust(size, b"."), (dst, %d))
    if pace and i %% pace == pace - 1:
        time.sleep(0.002)
""" % (SPORT, PORT)


# ---------------------------------------------------------------- the agent side (child)

def agent_main() -> None:
    """Run an EbpfSampler and obey JSON commands: update, sink, run (until "stop"), close."""
    from hsflowd.samplers import Tap
    from hsflowd.samplers.ebpf import EbpfSampler, EbpfUnavailable
    from hsflowd.sflow import FlowSample

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    out: list = []
    try:
        sampler = EbpfSampler(out.append, lambda: iter(()))
    except EbpfUnavailable as e:
        reply({"unavailable": str(e)})
        return
    reply({"ready": True, "fds": len(sampler.fds())})
    pending, base, sinks, names = b"", {}, [], {}

    def counters(name):
        d = f"/sys/class/net/{name}/statistics/"
        try:
            return sum(int(open(d + f).read()) for f in ("rx_packets", "tx_packets"))
        except OSError:
            return 0

    def decode(raw):
        fs = FlowSample.decode_body(raw, 8, len(raw))
        h = fs.flow_records[0]
        return {"seq": fs.sequence_number, "ds": fs.source_id_index, "rate": fs.sampling_rate,
                "pool": fs.sample_pool, "drops": fs.drops, "input": fs.input,
                "output_format": fs.output_format, "output": fs.output,
                "frame_length": h.frame_length, "stripped": h.stripped, "header": h.header.hex(),
                "ts": fs.flow_records[1].nanoseconds}

    def run():
        nonlocal pending
        stopping, quiet_since, next_tick = False, None, time.monotonic() + 1
        while True:
            ready, _, _ = select.select(sampler.fds() + [0], [], [], 0.05)
            got = 0
            for fd in ready:
                if fd == 0:
                    pending += os.read(0, 4096)
                    stopping = stopping or b"stop" in pending
                    pending = pending.split(b"\n", 1)[1] if b"\n" in pending else pending
                else:
                    got += sampler.read(fd)
            now = time.monotonic()
            if now >= next_tick:  # as the agent does, once a second
                sampler.tick({})
                next_tick = now + 1
            if stopping:
                quiet_since = now if got or quiet_since is None else quiet_since
                if now - quiet_since > 0.3:
                    break
        sampler.tick({})
        taps = {str(i): {"pool": t.builder.sample_pool, "drops": t.builder.drops,
                         "seen": sampler.counters(i)[0], "counters": counters(names[i]) - base[i]}
                for i, t in sampler.tapped.items()}
        reply({"samples": [decode(s) for s in out], "taps": taps, "lost": sampler.lost})
        out.clear()

    while True:
        while b"\n" not in pending:
            chunk = os.read(0, 4096)
            if not chunk:
                sampler.close()
                return
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        cmd = json.loads(line)
        if cmd["op"] == "update":
            taps = {t["ifindex"]: Tap(**t) for t in cmd["taps"]}
            for i, t in taps.items():
                if i not in sampler.tapped:
                    names[i], base[i] = t.name, counters(t.name)
            sampler.update(taps)
            reply({"tapped": sorted(sampler.tapped), "failed": {i: f.why for i, f in sampler.failed.items()}})
        elif cmd["op"] == "sink":  # a bound socket: no ICMP unreachable, never read
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((cmd["addr"], PORT))
            sinks.append(s)
            reply({"ok": True})
        elif cmd["op"] == "run":
            run()
        elif cmd["op"] == "close":
            sampler.close()
            sampler.close()  # twice: must be harmless
            reply({"closed": True})
            return


if __name__ == "__main__" and sys.argv[1:2] == ["agent"]:
    agent_main()
    sys.exit(0)


# ---------------------------------------------------------------- the test side

import pytest  # noqa: E402

from netns import run, unique, veth  # noqa: E402

INTERNAL = 0x3FFFFFFF


class Agent:
    """The child process running the sampler in a namespace."""

    def __init__(self, ns, python=sys.executable):
        self.proc = ns.popen([python, os.path.abspath(__file__), "agent"], cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.hello = self.receive(60)

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout=30.0):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"agent gave no answer: {self.proc.stderr.read()}")
        return json.loads(line)

    def call(self, **cmd):
        self.send(**cmd)
        return self.receive()

    def tap(self, *taps, promisc=False):
        """taps: (ifindex, name, rate) or (ifindex, name, rate, header_bytes)."""
        return self.call(op="update", taps=[
            {"ifindex": t[0], "name": t[1], "sampling_rate": t[2],
             "header_bytes": t[3] if len(t) > 3 else 128, "promisc": promisc} for t in taps])

    def sample(self, traffic):
        """Run the select loop while ``traffic()`` runs; the samples and tap figures."""
        self.send(op="run")
        traffic()
        return self.call(op="stop")


class Pair:
    """Namespace A sends, namespace B is sampled; one veth, nothing else on the wire."""

    def __init__(self, netns):
        self.a, self.b = netns(), netns()
        for ns in (self.a, self.b):
            ns.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        self.va, self.vb = unique("a"), unique("b")
        veth(self.a, self.va, self.b, self.vb, A_ADDR + "/24", B_ADDR + "/24")
        self.a.run(["ip", "neigh", "replace", B_ADDR, "lladdr", self.b.mac(self.vb), "dev", self.va,
                    "nud", "permanent"])
        self.b.run(["ip", "neigh", "replace", A_ADDR, "lladdr", self.a.mac(self.va), "dev", self.vb,
                    "nud", "permanent"])
        self.ifindex = self.b.ifindex(self.vb)
        self.mac_a = bytes.fromhex(self.a.mac(self.va).replace(":", ""))
        self.mac_b = bytes.fromhex(self.b.mac(self.vb).replace(":", ""))

    def send_raw_to_b(self, frame: bytes, count: int):
        """Frames as given, from A's veth (an AF_PACKET socket: no stack in between)."""
        code = ("import socket, sys\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)\n"
                "s.bind((sys.argv[1], 0))\nfor _ in range(int(sys.argv[3])):\n"
                "    s.send(bytes.fromhex(sys.argv[2]))")
        return lambda: self.a.run([sys.executable, "-c", code, self.va, frame.hex(), str(count)])

    def send_to_b(self, count, size=150, pace=0):
        return lambda: self.a.run([sys.executable, "-c", SENDER, B_ADDR, str(count), str(size), str(pace)])

    def send_from_b(self, count, size=150, pace=0):
        return lambda: self.b.run([sys.executable, "-c", SENDER, A_ADDR, str(count), str(size), str(pace)])

    @staticmethod
    def wait_bound(ns, port, timeout=10.0):
        """Until a UDP socket is bound to port in ns (else the kernel answers ICMP unreachable)."""
        deadline = time.monotonic() + timeout
        while f":{port} " not in ns.run(["ss", "-Hunl"]).stdout + " ":
            assert time.monotonic() < deadline, f"nothing bound to UDP port {port}"
            time.sleep(0.02)

    def tc(self, what, *args):
        return self.b.run(["tc", what, "show", "dev", self.vb] + list(args)).stdout


@pytest.fixture(scope="session")
def bcc_reason():
    """Why bcc cannot work here (None if it can): one compile, in a child process."""
    code = ("from hsflowd.samplers.ebpf import load_bcc, compile_program, EbpfUnavailable\n"
            "try:\n    compile_program(load_bcc())\nexcept EbpfUnavailable as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    return (proc.stdout.strip() or proc.stderr.strip()[-300:]) or None


@pytest.fixture
def pair(request, netns, bcc_reason):
    request.node.add_marker(pytest.mark.netns)
    if bcc_reason:
        print(f"eBPF unavailable: {bcc_reason}")
        pytest.skip(f"eBPF unavailable: {bcc_reason}")
    return Pair(netns)


def within(samples, packets, rate):
    """samples is within 4 standard deviations of packets / rate."""
    p = 1 / rate
    return abs(samples - packets * p) <= 4 * math.sqrt(packets * p * (1 - p)) + 1e-9


def parse(sample):
    from scapy.layers.l2 import Ether
    return Ether(bytes.fromhex(sample["header"]))


def check_udp(sample, macs, src, dst, size, count, header_bytes=128):
    """The sampled header is one of the packets sent: addresses, ports, payload bytes."""
    from scapy.layers.inet import IP, UDP
    pkt = parse(sample)
    assert (bytes.fromhex(pkt.src.replace(":", "")), bytes.fromhex(pkt.dst.replace(":", ""))) == macs
    assert pkt[IP].src == src and pkt[IP].dst == dst
    assert pkt[UDP].sport == SPORT and pkt[UDP].dport == PORT
    frame = 14 + 20 + 8 + size
    assert sample["frame_length"] == frame + 4 and sample["stripped"] == 4
    header = bytes.fromhex(sample["header"])
    assert len(header) == min(frame, header_bytes)
    payload = header[42:]
    number = int(payload[4:12])
    assert 0 <= number < count
    assert payload == (b"hsft%08d" % number).ljust(size, b".")[: len(payload)]
    return number


# ---------------------------------------------------------------- without namespaces

def test_import_failure_is_one_line(monkeypatch, tmp_path):
    from hsflowd.samplers import ebpf
    monkeypatch.setitem(sys.modules, "bcc", None)           # "import bcc" raises ImportError
    monkeypatch.setattr(ebpf, "BCC_DIST", str(tmp_path / "nowhere"))
    with pytest.raises(ebpf.EbpfUnavailable, match="bcc is not installed") as e:
        ebpf.EbpfSampler(lambda s: None, lambda: iter(()))
    assert "\n" not in str(e.value)


def test_broken_bcc_package_is_one_line(monkeypatch, tmp_path):
    from hsflowd.samplers import ebpf
    (tmp_path / "__init__.py").write_text("raise OSError('libbcc.so.0: cannot open shared object file')\n")
    monkeypatch.setitem(sys.modules, "bcc", None)
    monkeypatch.setattr(ebpf, "BCC_DIST", str(tmp_path))
    with pytest.raises(ebpf.EbpfUnavailable, match="cannot import bcc from .*libbcc.so.0"):
        ebpf.load_bcc()
    assert sys.modules.get("bcc") is None                  # nothing half-imported left behind


def test_missing_headers_message():
    from hsflowd.samplers.ebpf import _why
    text = ("modprobe: FATAL: Module kheaders not found in directory /lib/modules/x\n"
            "Unable to find kernel headers. Try rebuilding kernel with CONFIG_IKHEADERS=m ...\n"
            "chdir(/lib/modules/x/build): No such file or directory\n")
    why = _why(text, Exception("Failed to compile BPF module <text>"))
    assert why.startswith("no kernel headers for ") and "linux-headers" in why


@pytest.mark.parametrize("fault", ["headers", "syntax", "verifier"])
def test_compile_failure_is_one_line(fault, bcc_reason, monkeypatch, tmp_path, capfd):
    if bcc_reason:
        pytest.skip(f"eBPF unavailable: {bcc_reason}")
    from hsflowd.samplers import ebpf
    if fault == "headers":        # an empty kernel source tree: as on a machine without headers
        monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
        expected = "no kernel headers"
    else:
        bad = {"syntax": "int tc_ingress( { return 0; }",
               "verifier": "#include <uapi/linux/bpf.h>\n"
                           "int tc_ingress(struct __sk_buff *skb) { return *(int *)(long)skb->data; }\n"
                           "int tc_egress(struct __sk_buff *skb) { return 0; }\n"}[fault]
        (tmp_path / "bad.c").write_text(bad)
        monkeypatch.setattr(ebpf, "PROGRAM_PATH", str(tmp_path / "bad.c"))
        expected = {"syntax": "error:", "verifier": "verifier: "}[fault]
    with pytest.raises(ebpf.EbpfUnavailable) as e:
        ebpf.EbpfSampler(lambda s: None, lambda: iter(()))
    message = str(e.value)
    print(message)
    assert expected in message and "\n" not in message
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out.strip() == message  # bcc's noise went into it


# ---------------------------------------------------------------- on a veth

def test_ingress_one_in_ten(pair):
    agent = Agent(pair.b)
    assert agent.tap((pair.ifindex, pair.vb, 10))["tapped"] == [pair.ifindex]
    agent.call(op="sink", addr=B_ADDR)
    count = 20000
    t0 = time.time_ns()
    got = agent.sample(pair.send_to_b(count))
    samples, tap = got["samples"], got["taps"][str(pair.ifindex)]
    n = len(samples)
    print(f"{n} samples of {count} packets at 1-in-10; pool {tap['pool']}, program saw {tap['seen']}, "
          f"interface counters {tap['counters']}")
    assert within(n, count, 10)
    numbers = {check_udp(s, (pair.mac_a, pair.mac_b), A_ADDR, B_ADDR, 150, count) for s in samples}
    assert len(numbers) == n                                  # each a different packet
    for s in samples:
        assert s["ds"] == pair.ifindex and s["rate"] == 10 and s["drops"] == 0
        assert (s["input"], s["output_format"], s["output"]) == (pair.ifindex, 0, INTERNAL)
        assert t0 - 10**9 < s["ts"] < time.time_ns() + 10**9
    assert [s["seq"] for s in samples] == list(range(1, n + 1))
    assert tap["seen"] == count and tap["counters"] == count  # only our packets crossed
    pools = [s["pool"] for s in samples]
    assert pools == sorted(pools) and pools[0] >= 10
    slack = 4 * math.sqrt(count * 0.1 * 0.9) * 10
    assert abs(pools[-1] - count) <= slack and abs(n * 10 - count) <= slack
    # the pool counts from the first tick's count (a baseline); the samples before it are
    # N each, so the pool is the samples' own count when all the traffic came before it
    assert abs(tap["pool"] - count) <= slack
    assert tap["drops"] == 0 and got["lost"] == 0
    assert agent.call(op="close") == {"closed": True}


def test_egress_direction(pair):
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 10, 64))
    pair.a.popen([sys.executable, "-c", "import socket, time\ns = socket.socket(2, 2)\n"
                  f"s.bind(('{A_ADDR}', {PORT}))\ntime.sleep(600)"])
    pair.wait_bound(pair.a, PORT)
    count = 20000
    got = agent.sample(pair.send_from_b(count, size=100))
    samples = got["samples"]
    assert within(len(samples), count, 10)
    for s in samples:
        check_udp(s, (pair.mac_b, pair.mac_a), B_ADDR, A_ADDR, 100, count, header_bytes=64)
        assert (s["input"], s["output_format"], s["output"]) == (INTERNAL, 0, pair.ifindex)
    assert got["taps"][str(pair.ifindex)]["seen"] == count


def test_every_packet_at_rate_one(pair):
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 1))
    agent.call(op="sink", addr=B_ADDR)
    count = 3000
    got = agent.sample(pair.send_to_b(count, size=40, pace=50))
    samples = got["samples"]
    numbers = [check_udp(s, (pair.mac_a, pair.mac_b), A_ADDR, B_ADDR, 40, count) for s in samples]
    assert sorted(numbers) == list(range(count))
    assert [s["seq"] for s in samples] == list(range(1, count + 1))
    assert all(s["rate"] == 1 for s in samples) and samples[-1]["pool"] == count
    assert got["taps"][str(pair.ifindex)]["pool"] == count


def test_rate_change_takes_effect(pair):
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 10))
    agent.call(op="sink", addr=B_ADDR)
    first = agent.sample(pair.send_to_b(10000))["samples"]
    filters = pair.tc("filter", "ingress")
    assert agent.tap((pair.ifindex, pair.vb, 2))["tapped"] == [pair.ifindex]
    got = agent.sample(pair.send_to_b(10000))
    second = got["samples"]
    assert within(len(first), 10000, 10) and within(len(second), 10000, 2)
    assert {s["rate"] for s in second} == {2}
    assert second[0]["seq"] == first[-1]["seq"] + 1          # the same sampler goes on
    assert pair.tc("filter", "ingress") == filters            # retuned, not re-attached
    assert got["taps"][str(pair.ifindex)]["seen"] == 20000


def test_removing_a_tap_removes_only_our_tc_objects(pair):
    va2, vb2 = unique("a"), unique("b")
    veth(pair.a, va2, pair.b, vb2)
    b2 = pair.b.ifindex(vb2)
    pair.b.run(["tc", "qdisc", "add", "dev", vb2, "clsact"])  # someone else's qdisc and filter
    pair.b.run(["tc", "filter", "add", "dev", vb2, "ingress", "prio", "7", "protocol", "all",
                "u32", "match", "u32", "0", "0", "classid", "1:1"])
    agent = Agent(pair.b)
    assert agent.tap((pair.ifindex, pair.vb, 10), (b2, vb2, 10))["tapped"] == sorted([pair.ifindex, b2])
    for dev in (pair.vb, vb2):
        assert "hsflowd_epcap_in" in pair.b.run(["tc", "filter", "show", "dev", dev, "ingress"]).stdout
        assert "hsflowd_epcap_out" in pair.b.run(["tc", "filter", "show", "dev", dev, "egress"]).stdout

    agent.tap((pair.ifindex, pair.vb, 10))                    # vb2 no longer sampled
    ingress2 = pair.b.run(["tc", "filter", "show", "dev", vb2, "ingress"]).stdout
    assert "hsflowd" not in ingress2 and "u32" in ingress2
    assert pair.b.run(["tc", "filter", "show", "dev", vb2, "egress"]).stdout.strip() == ""
    assert "clsact" in pair.b.run(["tc", "qdisc", "show", "dev", vb2]).stdout

    agent.tap()                                               # nothing sampled
    assert pair.tc("filter", "ingress").strip() == "" and pair.tc("filter", "egress").strip() == ""
    assert "clsact" not in pair.tc("qdisc")


def test_vanished_and_missing_interfaces(pair):
    agent = Agent(pair.b)
    got = agent.tap((pair.ifindex, pair.vb, 10), (99999, "nosuchdev", 10))
    assert got["tapped"] == [pair.ifindex] and list(got["failed"]) == ["99999"]
    pair.b.run(["ip", "link", "del", pair.vb])               # its filters go with it
    assert agent.tap() == {"tapped": [], "failed": {}}
    assert agent.call(op="close") == {"closed": True}


def test_close_leaves_nothing_of_ours(pair):
    va2, vb2 = unique("a"), unique("b")
    veth(pair.a, va2, pair.b, vb2)
    b2 = pair.b.ifindex(vb2)
    pair.b.run(["tc", "qdisc", "add", "dev", vb2, "clsact"])  # already there, and empty
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 10), (b2, vb2, 10))
    assert agent.call(op="close") == {"closed": True}
    assert agent.proc.wait(10) == 0
    assert "clsact" not in pair.tc("qdisc")
    for dev in (pair.vb, vb2):
        for hook in ("ingress", "egress"):
            assert pair.b.run(["tc", "filter", "show", "dev", dev, hook]).stdout.strip() == ""
    assert "clsact" in pair.b.run(["tc", "qdisc", "show", "dev", vb2]).stdout


def test_a_foreign_filter_keeps_our_qdisc(pair):
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 10))
    pair.b.run(["tc", "filter", "add", "dev", pair.vb, "egress", "prio", "7", "protocol", "all",
                "u32", "match", "u32", "0", "0", "classid", "1:1"])
    agent.call(op="close")
    assert "clsact" in pair.tc("qdisc") and "u32" in pair.tc("filter", "egress")
    assert "hsflowd" not in pair.tc("filter", "ingress") + pair.tc("filter", "egress")


def test_filters_left_by_a_killed_agent_are_replaced(pair):
    dead = Agent(pair.b)
    dead.tap((pair.ifindex, pair.vb, 10))
    dead.proc.kill()
    dead.proc.wait(10)
    assert "hsflowd_epcap_in" in pair.tc("filter", "ingress")   # tc keeps the program alive
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 10))
    assert pair.tc("filter", "ingress").count("hsflowd_epcap_in") == 1
    assert pair.tc("filter", "egress").count("hsflowd_epcap_out") == 1
    agent.call(op="sink", addr=B_ADDR)
    assert within(len(agent.sample(pair.send_to_b(5000))["samples"]), 5000, 10)
    agent.call(op="close")
    assert "hsflowd" not in pair.tc("filter", "ingress") + pair.tc("filter", "egress")


def test_vlan_tag_is_put_back(pair):
    """The kernel moves an 802.1Q tag out of the frame before tc: the sample has it again."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    frame = bytes(Ether(src=pair.mac_a, dst=pair.mac_b) / Dot1Q(vlan=100, prio=5) /
                  IP(src=A_ADDR, dst=B_ADDR) / UDP(sport=SPORT, dport=PORT) / (b"v" * 60))
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 1))
    samples = agent.sample(pair.send_raw_to_b(frame, 50))["samples"]
    assert len(samples) == 50
    for s in samples:
        assert bytes.fromhex(s["header"]) == frame and s["frame_length"] == len(frame) + 4
        assert parse(s)[Dot1Q].vlan == 100 and parse(s)[Dot1Q].prio == 5
        assert (s["input"], s["output"]) == (pair.ifindex, INTERNAL)


def test_promiscuous_and_other_host(pair):
    """promisc=on holds the device promiscuous while tapped; a frame for another host's MAC
    arrives as PACKET_OTHERHOST and gets output 0 (unknown), as hsflowd's host model says."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    frame = bytes(Ether(src=pair.mac_a, dst="02:00:00:00:00:99") / IP(src=A_ADDR, dst="10.251.0.99") /
                  UDP(sport=SPORT, dport=PORT) / (b"o" * 60))
    agent = Agent(pair.b)
    agent.tap((pair.ifindex, pair.vb, 1), promisc=True)
    assert "promiscuity 1 " in pair.b.run(["ip", "-d", "link", "show", pair.vb]).stdout
    samples = agent.sample(pair.send_raw_to_b(frame, 20))["samples"]
    assert len(samples) == 20
    assert all((s["input"], s["output"]) == (pair.ifindex, 0) for s in samples)
    agent.tap()
    assert "promiscuity 0 " in pair.b.run(["ip", "-d", "link", "show", pair.vb]).stdout


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no Debian python3")
def test_debian_python_and_pyroute2(pair):
    """Debian's own python3: bcc imports as is, pyroute2 is python3-pyroute2 (0.7 in Debian 12)."""
    probe = run(["/usr/bin/python3", "-c", "import bcc, pyroute2, psutil"], check=False)
    if probe.returncode:
        pytest.skip(f"Debian python3 lacks a module: {probe.stderr.strip().splitlines()[-1]}")
    agent = Agent(pair.b, python="/usr/bin/python3")
    assert agent.hello.get("ready"), agent.hello
    agent.tap((pair.ifindex, pair.vb, 10))
    agent.call(op="sink", addr=B_ADDR)
    got = agent.sample(pair.send_to_b(10000))
    assert within(len(got["samples"]), 10000, 10)
    assert all(s["input"] == pair.ifindex and s["output"] == INTERNAL for s in got["samples"])
    agent.call(op="close")
    assert pair.tc("filter", "ingress").strip() == "" and "clsact" not in pair.tc("qdisc")


# ---------------------------------------------------------------- the perf ring, by hand

def _ring_with(records, size=256, tail=0):
    """A PerfRing over memory laid out as the kernel lays it out: the metadata page (only
    data_head and data_tail matter), then ``size`` bytes of ring; ``records`` (bytes each,
    8-aligned) written one after another from ``tail``, wrapping at the end."""
    import mmap as _mmap
    from hsflowd.samplers.perfring import PerfRing
    mem = bytearray(_mmap.PAGESIZE + size)
    pos = tail
    for rec in records:
        for b in rec:
            mem[_mmap.PAGESIZE + pos % size] = b
            pos += 1
    struct.pack_into("=QQ", mem, 1024, pos, tail)
    ring = PerfRing.__new__(PerfRing)
    ring.mm, ring.start, ring.size, ring.lost, ring.cpu = mem, _mmap.PAGESIZE, size, 0, 0
    ring.damaged = 0
    return ring, mem


def _sample_record(raw: bytes) -> bytes:
    body = struct.pack("=I", len(raw)) + raw
    body += bytes(-(8 + len(body)) % 8)
    return struct.pack("=IHH", 9, 0, 8 + len(body)) + body


def test_perf_ring_records_in_place_across_the_end_and_lost():
    raws = [bytes(range(i, i + 20)) for i in (1, 50, 100)]
    lost = struct.pack("=IHHQQ", 2, 0, 24, 7, 42)          # PERF_RECORD_LOST: 42 records
    records = [_sample_record(raws[0]), lost, _sample_record(raws[1]), _sample_record(raws[2])]
    # start near the end of a 256-byte ring: the third sample wraps around it
    ring, mem = _ring_with(records, tail=192)
    got = [bytes(buf[off:off + 20]) for buf, off in ring.records()]
    assert got == raws
    assert ring.lost == 42
    head, tail = struct.unpack_from("=QQ", mem, 1024)
    assert tail == head == 192 + sum(len(r) for r in records)      # all of it given back
    assert list(ring.records()) == []                               # nothing new: nothing


# ---------------------------------------------------------------- the drain, by hand

_INTERNAL = 0x3FFFFFFF


class _FakeRing:
    def __init__(self, records):
        self._records = records

    def records(self):
        for rec in self._records:
            yield rec, 0


def _meta(ifindex, length, data, egress=0, pkttype=0, tci=0, vproto=0, vlan=0):
    return struct.pack("=QIIIHHBBB5x", 5, ifindex, length, len(data), tci, vproto, egress,
                       pkttype, vlan) + data


def test_ebpf_drain_puts_the_vlan_tag_back_and_frames_raw_ip():
    """Without bcc: the eBPF drain's VLAN re-insertion (TPID from the record, in network
    order), direction, and a raw-IP tap's header protocol."""
    from hsflowd.samplers import Tap
    from hsflowd.samplers.ebpf import EbpfSampler
    from hsflowd.samplers.ports import PortMap
    from hsflowd.samplers.flow import FlowSampleBuilder
    from hsflowd.samplers.taps import Tapped
    from hsflowd.sflow import SAMPLES
    out = []
    s = EbpfSampler.__new__(EbpfSampler)
    s.emit, s.writer, s.ports, s.interfaces = out.append, (lambda: None), PortMap(), (lambda: [])
    s.clock_offset, s.emitted, s._damaged_said = 0, 0, 0
    eth = Tapped(Tap(3, "eth0", 1, 128), FlowSampleBuilder(3, 1, 128, out.append))
    tun = Tapped(Tap(4, "tun0", 1, 128), FlowSampleBuilder(4, 1, 128, out.append), None, False)
    s.tapped = {3: eth, 4: tun}
    frame = bytes.fromhex("020000000001020000000002") + b"\x08\x00" + bytes(46)
    ip = b"\x45" + bytes(39)
    vproto = struct.unpack("=H", b"\x88\xa8")[0]        # the kernel's __be16, as stored
    s._drain([_FakeRing([_meta(3, 60, frame, tci=0x2005, vproto=vproto, vlan=1),
                         _meta(3, 60, frame, egress=1),
                         _meta(4, 40, ip, egress=1)])])
    got = [SAMPLES.decode_one(struct.unpack_from(">I", x)[0], x, 8, len(x)) for x in out]
    # raw IP is framed at once, the Ethernet batch after the rings: order across taps only
    by_ds = {(g.source_id_index, g.sequence_number): g for g in got}
    tagged = by_ds[(3, 1)].flow_records[0]
    assert tagged.header[12:16] == bytes.fromhex("88a82005") and tagged.frame_length == 68
    assert (by_ds[(3, 2)].input, by_ds[(3, 2)].output) == (_INTERNAL, 3)
    raw = by_ds[(4, 1)]
    assert (raw.input, raw.output) == (_INTERNAL, 4)
    assert (raw.flow_records[0].header_protocol, raw.flow_records[0].stripped,
            raw.flow_records[0].frame_length) == (11, 18, 58)


def test_perf_ring_moves_past_what_no_record_looks_like():
    """A header no record has (size under 8): what the ring holds is given back and
    counted, rather than the walk stopping at the same place for ever (the ring would fill
    and that CPU's samples be lost for good)."""
    import mmap as _mmap
    from hsflowd.samplers.perfring import PerfRing
    size = 256
    mem = bytearray(_mmap.PAGESIZE + size)
    good = struct.pack("=IHHI", 9, 0, 16, 4) + b"abcd"
    mem[_mmap.PAGESIZE + 16:_mmap.PAGESIZE + 32] = good           # a bad header at 0, then one
    struct.pack_into("=QQ", mem, 1024, 32, 0)
    ring = PerfRing.__new__(PerfRing)
    ring.mm, ring.start, ring.size, ring.lost, ring.cpu = mem, _mmap.PAGESIZE, size, 0, 0
    ring.damaged = 0
    for _ in range(3):
        list(ring.records())
    tail = struct.unpack_from("=Q", mem, 1032)[0]
    assert tail == 32, "the ring never moves past the record again"
    assert (ring.lost, ring.damaged) == (1, 1)
