"""nflog {}: the NFLOG parser and sampler on hand-built messages, then on real traffic.

The real-traffic tests run the sampler in a child process inside a test namespace (the
HELPER script below), so NFLOG groups are bound and iptables rules added only there; the
root namespace's firewall is never touched.  Counts are checked against the binomial law:
K packets through a rule that keeps each with probability p give K*p samples with standard
deviation sqrt(K p (1-p)); we accept 4 of them (a false failure about once in 16,000 runs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsflowd.config import NflogConfig
from hsflowd.samplers.iptables import RULE_TAG, RuleManager, RuleSpec
from hsflowd.samplers.nflog import (NFULA_HWHEADER, NFULA_HWTYPE, NFULA_IFINDEX_INDEV,
                                    NFULA_IFINDEX_OUTDEV, NFULA_IFINDEX_PHYSINDEV, NFULA_PACKET_HDR,
                                    NFULA_PAYLOAD, NFULA_SEQ, NFULA_TIMESTAMP, PACKET_MSG, NflogSampler,
                                    config_message, nflog_rates, parse_batch)
from hsflowd.sflow import FlowSample
from netns import veth

INTERNAL = 0x3FFFFFFF
MAC = bytes.fromhex("02000000000a02000000000b0800")
MARK = b"hsflowd-nflog"


# ---------------------------------------------------------------- hand-built messages

def attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + b"\0" * (-n & 3)


def udp_packet(length: int = 100, version: int = 4) -> bytes:
    """An IP/UDP packet of ``length`` bytes whose header says so."""
    if version == 4:
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, 1, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    else:
        ip = struct.pack(">IHBB16s16s", 0x60000000, length - 40, 17, 64,
                         b"\x20" + bytes(15), b"\x21" + bytes(15))
    udp = struct.pack(">HHHH", 7777, 9999, length - len(ip), 0)
    return ip + udp + bytes(length - len(ip) - 8)


def message(payload: bytes = b"", seq=None, indev=0, outdev=0, physindev=0, hwheader=None,
            hwtype=1, timestamp_ns=None, family=2) -> bytes:
    """One NFULNL_MSG_PACKET as the kernel lays it out (attribute order of __build_packet_message)."""
    body = attr(NFULA_PACKET_HDR, struct.pack(">HBB", 0x0800, 1, 0))
    if indev:
        body += attr(NFULA_IFINDEX_INDEV, struct.pack(">I", indev))
    if outdev:
        body += attr(NFULA_IFINDEX_OUTDEV, struct.pack(">I", outdev))
    if physindev:
        body += attr(NFULA_IFINDEX_PHYSINDEV, struct.pack(">I", physindev))
    if hwheader is not None:
        body += attr(NFULA_HWTYPE, struct.pack(">H", hwtype)) + attr(NFULA_HWHEADER, hwheader)
    if timestamp_ns is not None:
        body += attr(NFULA_TIMESTAMP, struct.pack(">QQ", timestamp_ns // 10**9, timestamp_ns % 10**9 // 1000))
    if seq is not None:
        body += attr(NFULA_SEQ, struct.pack(">I", seq))
    if payload:
        body += attr(NFULA_PAYLOAD, payload)
    body = struct.pack(">BBH", family, 0, 5) + body
    return struct.pack("=IHHII", 16 + len(body), PACKET_MSG, 0, 0, 0) + body


def offline(probability=0.01, sampling=100, header_bytes=128, seed=1):
    out = []
    s = NflogSampler(NflogConfig(group=5, probability=probability), sampling, header_bytes, out.append,
                     random.Random(seed), listen=False)
    return s, out


def decode(sample: bytes):
    fs = FlowSample.decode_body(sample, 8)
    return fs, fs.flow_records[0]


# ---------------------------------------------------------------- rates, parsing, samples

@pytest.mark.parametrize("probability, sampling, rule_rate, k", [
    (0.01, 100, 100, 1), (0.01, 400, 100, 4), (None, 400, 400, 1), (0.0025, 100, 400, 1),
    (0.3, 10, 3, 4), (1.0, 1, 1, 1), (0.01, 150, 100, 2)])
def test_rates(probability, sampling, rule_rate, k):
    assert nflog_rates(probability, sampling) == (rule_rate, k)


def test_parse_reads_every_attribute():
    msg = message(udp_packet(), seq=7, indev=3, outdev=4, physindev=9, hwheader=MAC, hwtype=1,
                  timestamp_ns=1_700_000_000_123_456_000)
    (p,) = list(parse_batch(msg))
    assert (p.family, p.indev, p.outdev, p.physindev, p.physoutdev) == (2, 3, 4, 9, 0)
    assert (p.hwtype, bytes(p.hwheader), bytes(p.payload), p.seq) == (1, MAC, udp_packet(), 7)
    assert p.timestamp_ns == 1_700_000_000_123_456_000


def test_parse_masks_attribute_flags_and_answers_errors():
    msg = message(udp_packet(), seq=1)
    flagged = msg.replace(attr(NFULA_SEQ, struct.pack(">I", 1)),
                          struct.pack("=HH", 8, NFULA_SEQ | 0x4000) + struct.pack(">I", 1))
    error = struct.pack("=IHHIIi", 20, 2, 0, 42, 0, -16)
    p, e = list(parse_batch(flagged + error))
    assert p.seq == 1 and (e.seq, e.errno) == (42, 16)


def test_config_message_binds_and_sets_copy_range():
    msg = config_message(group=5, seq=1, copy_range=200)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, flags, seq) == (len(msg), 0x401, 0x05, 1)
    assert struct.unpack_from(">BBH", msg, 16) == (0, 0, 5)
    attrs, off = {}, 20
    while off < len(msg):
        n, kind = struct.unpack_from("=HH", msg, off)
        attrs[kind] = msg[off + 4:off + n]
        off += (n + 3) & ~3
    assert attrs[1] == b"\x01" and struct.unpack(">IBB", attrs[2]) == (200, 2, 0)
    assert struct.unpack(">H", attrs[6]) == (1,)   # NFULNL_CFG_F_SEQ


def test_ethernet_header_when_the_kernel_gives_one():
    s, out = offline()
    assert s.handle(message(udp_packet(100), seq=0, indev=3, hwheader=MAC)) == 1
    fs, h = decode(out[0])
    assert (fs.source_id_index, fs.input, fs.output, fs.sampling_rate) == (3, 3, INTERNAL, 100)
    assert (h.header_protocol, h.frame_length, h.stripped) == (1, 14 + 100 + 4, 4)
    assert h.header == MAC + udp_packet(100)[:114]


@pytest.mark.parametrize("version, protocol", [(4, 11), (6, 12)])
def test_ip_only_header_on_output(version, protocol):
    s, out = offline()
    s.handle(message(udp_packet(300, version), outdev=4))
    fs, h = decode(out[0])
    assert (fs.source_id_index, fs.input, fs.output) == (4, INTERNAL, 4)
    assert (h.header_protocol, h.frame_length, h.stripped) == (protocol, 300 + 18, 18)
    assert len(h.header) == 128


def test_frame_length_comes_from_the_ip_header_when_the_copy_was_cut():
    s, out = offline()
    s.handle(message(udp_packet(1500)[:128], indev=3, hwheader=MAC))
    assert decode(out[0])[1].frame_length == 14 + 1500 + 4


def test_bridge_port_and_forwarding():
    s, out = offline()
    s.handle(message(udp_packet(), indev=10, physindev=11, outdev=12, hwheader=MAC))
    fs, _ = decode(out[0])
    assert (fs.source_id_index, fs.input, fs.output) == (11, 11, 12)


def test_sequence_gaps_are_drops():
    s, out = offline()
    batch = b"".join(message(udp_packet(), seq=n, indev=3) for n in (1, 2, 5))
    assert s.handle(batch) == 3
    assert (s.messages, s.drops) == (3, 2)
    assert decode(out[-1])[0].drops == 2


def test_sequence_numbers_wrap_and_restart():
    s, _ = offline()
    s.handle(b"".join(message(udp_packet(), seq=n, indev=3) for n in (0xFFFFFFFE, 0xFFFFFFFF, 0, 1)))
    assert s.drops == 0
    s.handle(message(udp_packet(), seq=0, indev=3))  # behind us: a new kernel instance, not a loss
    s.handle(message(udp_packet(), seq=1, indev=3))
    assert s.drops == 0


def test_sub_sampling_keeps_one_in_k():
    s, out = offline(probability=0.01, sampling=400)
    batch = b"".join(message(udp_packet(), seq=n, indev=3) for n in range(40000))
    kept = s.handle(batch)
    # the skip is uniform in 1..7: mean 4, variance 4, so sd of the count ~ sqrt(40000*4/64) = 50
    assert abs(kept - 10000) <= 4 * 50
    fs, _ = decode(out[-1])
    assert (fs.sampling_rate, fs.sample_pool, fs.sequence_number) == (400, kept * 400, kept)


def test_reload_changes_rate_and_keeps_pool():
    s, out = offline()
    s.handle(message(udp_packet(), indev=3) * 10)
    s.update(NflogConfig(group=5, probability=0.1), 10, 128)
    s.handle(message(udp_packet(), indev=3))
    fs, _ = decode(out[-1])
    assert (fs.sampling_rate, fs.sample_pool) == (10, 10 * 100 + 10)


class FakeSocket:
    def __init__(self, results):
        self.results = list(results)

    def fileno(self):
        return 99

    def recv_into(self, buf):
        r = self.results.pop(0)
        if isinstance(r, Exception):
            raise r
        buf[:len(r)] = r
        return len(r)

    def close(self):
        pass


def test_enobufs_counted_once_as_overrun_and_the_gap_as_drops(caplog):
    s, out = offline()
    s.sock = FakeSocket([message(udp_packet(), seq=0, indev=3), OSError(105, "No buffer space"),
                         OSError(105, "No buffer space"), message(udp_packet(), seq=10, indev=3),
                         BlockingIOError()])
    with caplog.at_level(logging.WARNING, "hsflowd.samplers"):
        assert s.read(99) == 2
    assert (s.overruns, s.drops, len(out)) == (2, 9, 2)
    assert len([r for r in caplog.records if "dropped NFLOG messages" in r.message]) == 1


def test_kernel_errors_are_logged_not_raised(caplog):
    s, _ = offline()
    with caplog.at_level(logging.WARNING, "hsflowd.samplers"):
        s.handle(struct.pack("=IHHIIi", 20, 2, 0, 9, 0, -1))
    assert "refused" in caplog.text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_never_raises_on_garbage(data):
    s, _ = offline(sampling=100)
    list(parse_batch(data))
    s.handle(data)


PAYLOADS = [udp_packet(120), udp_packet(120, 6), udp_packet(1500)[:60], b"\x45", b"\x00" * 30]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(0, 400), st.integers(0, 255), st.sampled_from(PAYLOADS))
def test_parser_never_raises_on_damaged_messages(cut, where, value, payload):
    good = message(payload, seq=3, indev=2, hwheader=MAC, timestamp_ns=5)
    damaged = bytearray(good[:cut] if cut < len(good) else good)
    if damaged:
        damaged[where % len(damaged)] = value
    s, _ = offline(sampling=100)
    list(parse_batch(bytes(damaged)))
    s.handle(bytes(damaged) + good)


# ---------------------------------------------------------------- rule management, offline

CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
BROKEN = "import json; print(json.dumps({'error': \"ImportError: No module named 'iptc'\"}))"


def test_a_crashing_python_iptables_stays_in_the_child(caplog):
    rules = RuleManager(command=lambda spec: [sys.executable, "-c", CRASH])
    with caplog.at_level(logging.WARNING, "hsflowd.samplers"):
        rules.apply(RuleSpec(5, 0.01))
        rules.wait()
    assert rules.broken == "crashed (SIGSEGV)" and rules.installed is None
    assert "crashed (SIGSEGV)" in caplog.text


def test_rule_manager_gives_up_once(caplog):
    started = []

    def command(spec):
        started.append(spec)
        return [sys.executable, "-c", BROKEN]
    rules = RuleManager(command=command)
    with caplog.at_level(logging.WARNING, "hsflowd.samplers"):
        rules.apply(RuleSpec(5, 0.01))
        assert rules.busy          # it does not wait for the child
        rules.wait()
        rules.apply(RuleSpec(6, 0.01))
        rules.apply(None)
        rules.wait()
    assert len([r for r in caplog.records if "cannot manage" in r.message]) == 1
    assert "No module named" in caplog.text and started == [RuleSpec(5, 0.01)]


def test_a_change_asked_for_while_one_runs_is_made_after_it():
    made = []
    answer = "import json; print(json.dumps({'result': {'removed': 0, 'added': 2, 'errors': []}}))"

    def command(spec):
        made.append(spec)
        return [sys.executable, "-c", answer]
    rules = RuleManager(command=command)
    rules.apply(RuleSpec(5, 0.01))
    rules.apply(RuleSpec(6, 0.02))      # while the first child runs
    rules.apply(RuleSpec(7, 0.03))      # replaces the waiting one
    rules.wait()                        # both: the waiting one starts when the first ends
    assert made == [RuleSpec(5, 0.01), RuleSpec(7, 0.03)] and rules.installed == RuleSpec(7, 0.03)


# ---------------------------------------------------------------- real traffic, in namespaces

HELPER = r"""
import json, logging, os, select, sys, time
sys.path.insert(0, %(root)r)
params = json.loads(sys.argv[1])
if params.get("no_iptc"):             # as if python-iptables were not installed
    import atexit, shutil, tempfile     # (the rules are changed by a child interpreter)
    shim = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, shim, True)
    with open(os.path.join(shim, "iptc.py"), "w") as f:
        f.write("raise ImportError(\"No module named 'iptc'\")\n")
    os.environ["PYTHONPATH"] = shim + os.pathsep + os.environ.get("PYTHONPATH", "")
from hsflowd.config import NflogConfig
from hsflowd.samplers import nflog
if params.get("rcvbuf"):
    nflog.RCVBUF_BYTES = params["rcvbuf"]
logs = []
class Keep(logging.Handler):
    def emit(self, record):
        logs.append(record.levelname + " " + record.getMessage())
logging.getLogger("hsflowd").addHandler(Keep())
logging.getLogger("hsflowd").setLevel(logging.INFO)
def config(p):
    return NflogConfig(group=p["group"], probability=p.get("probability"),
                       manage_rule=p.get("manage", False), dev=p.get("dev"))
out = []
s = nflog.NflogSampler(config(params), params["sampling"], params.get("header_bytes", 128), out.append)
s.rules.wait()      # the agent does not wait for iptables; the test checks the rules next
print("READY", flush=True)
def settle():
    # what the test sent is in flight or in a part-filled kernel batch (flushed within 100 ms)
    end = time.time() + 0.4
    while time.time() < end:
        for fd in select.select(s.fds(), [], [], 0.05)[0]:
            s.read(fd)
pending, reading, stop = b"", True, False
while not stop:
    ready = select.select([0] + (s.fds() if reading else []), [], [], 0.05)[0]
    for fd in ready:
        if fd != 0:
            s.read(fd)
            continue
        pending += os.read(0, 4096)
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            cmd, _, arg = line.decode().partition(" ")
            if reading:
                settle()
            if cmd == "update":
                p = json.loads(arg)
                s.update(config(p), p["sampling"], p.get("header_bytes", 128))
                s.rules.wait()
            elif cmd in ("pause", "resume"):
                reading = cmd == "resume"
            elif cmd == "stop":
                stop = True
            print("DONE " + cmd, flush=True)
s.close()
print(json.dumps({"samples": [x.hex() for x in out], "messages": s.messages, "drops": s.drops,
                  "overruns": s.overruns, "logs": logs}), flush=True)
""" % {"root": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}

SENDER = r"""
import socket, sys
dst, port, count, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777))
for i in range(count):
    s.sendto(mark + b"%08d" % i, (dst, port))
"""


class Helper:
    """The sampler running in ``ns``; commands go to its stdin, its result comes back as JSON."""

    def __init__(self, ns, **params):
        self.proc = ns.popen([sys.executable, "-c", HELPER, json.dumps(params)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.expect("READY")

    def expect(self, word):
        line = self.proc.stdout.readline()
        assert line.strip() == word, f"{line!r}: {self.proc.stderr.read() if not line else ''}"

    def command(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        self.expect("DONE " + cmd.split()[0])

    def stop(self):
        self.command("stop")
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=10)
        result["decoded"] = [decode(bytes.fromhex(x)) for x in result["samples"]]
        return result


@pytest.fixture
def pair(netns):
    """Namespaces a (the peer, 10.231.9.1 on vA) and b (the host, 10.231.9.2 on vB)."""
    a, b = netns(), netns()
    veth(a, "vA", b, "vB", "10.231.9.1/24", "10.231.9.2/24")
    return a, b, b.ifindex("vB")


def send(ns, dst, count, port=9999):
    ns.run([sys.executable, "-c", SENDER, dst, str(port), str(count), MARK.decode()])


def within_4_sd(samples, packets, p):
    sd = math.sqrt(packets * p * (1 - p))
    return abs(samples - packets * p) <= 4 * sd


def rule_packets(ns, chain, tool="iptables"):
    out = ns.run([tool, "-L", chain, "-v", "-x", "-n"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if "NFLOG" in line)


def ours(result):
    """(flow sample, sampled_header, scapy packet) for the test's own UDP packets."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    out = []
    for fs, h in result["decoded"]:
        pkt = Ether(h.header) if h.header_protocol == 1 else IP(h.header)
        if MARK in h.header and UDP in pkt:
            out.append((fs, h, pkt))
    return out


def check_packet(pkt, src, dst):
    from scapy.layers.inet import IP, UDP
    assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (src, dst, 7777, 9999)
    assert re.fullmatch(MARK + rb"\d{8}", bytes(pkt[UDP].payload))


@pytest.mark.netns
def test_input_rule(pair):
    a, b, vb = pair
    b.run("iptables -A INPUT -i vB -p udp --dport 9999 -m statistic --mode random --probability 0.01 "
          "-j NFLOG --nflog-group 5")
    helper = Helper(b, group=5, probability=0.01, sampling=100)
    send(a, "10.231.9.2", 20000)
    result = helper.stop()
    got = ours(result)
    assert within_4_sd(len(got), 20000, 0.01), len(got)   # sd 14 samples: 200 +- 56
    assert result["messages"] == len(result["samples"]) == rule_packets(b, "INPUT")
    assert result["drops"] == 0
    for n, (fs, h, pkt) in enumerate(got, 1):
        assert (fs.source_id_index, fs.input, fs.output, fs.sampling_rate) == (vb, vb, INTERNAL, 100)
        assert (fs.sequence_number, fs.sample_pool) == (n, n * 100)
        assert (h.header_protocol, h.stripped, h.frame_length) == (1, 4, 14 + 20 + 8 + 21 + 4)
        check_packet(pkt, "10.231.9.1", "10.231.9.2")


@pytest.mark.netns
def test_sub_sampling(pair):
    a, b, vb = pair
    b.run("iptables -A INPUT -i vB -p udp --dport 9999 -m statistic --mode random --probability 0.01 "
          "-j NFLOG --nflog-group 5")
    helper = Helper(b, group=5, probability=0.01, sampling=400)
    send(a, "10.231.9.2", 40000)
    got = ours(helper.stop())
    # kernel coin then user-space skip: less variance than one 1/400 coin, so its sd (10) bounds it
    assert within_4_sd(len(got), 40000, 1 / 400), len(got)
    assert all(fs.sampling_rate == 400 for fs, _, _ in got)
    assert got[-1][0].sample_pool == 400 * len(got)


@pytest.mark.netns
def test_output_chain(pair):
    a, b, vb = pair
    b.run("iptables -A OUTPUT -o vB -p udp --dport 9999 -m statistic --mode random --probability 0.01 "
          "-j NFLOG --nflog-group 6")
    helper = Helper(b, group=6, probability=0.01, sampling=100)
    send(b, "10.231.9.1", 20000)
    got = ours(helper.stop())
    assert within_4_sd(len(got), 20000, 0.01), len(got)
    for fs, h, pkt in got:
        assert (fs.source_id_index, fs.input, fs.output) == (vb, INTERNAL, vb)
        assert (h.header_protocol, h.stripped, h.frame_length) == (11, 18, 20 + 8 + 21 + 18)
        check_packet(pkt, "10.231.9.2", "10.231.9.1")


def probability(rule):
    return round(float(re.search(r"--probability (\S+)", rule).group(1)), 6)


def tagged(ns):
    # -w: the legacy tools' lock (/run/xtables.lock) is the machine's, whatever the
    # namespace; without it a call fails at once while another test's holds it
    return [line for tool in ("iptables-legacy", "ip6tables-legacy")
            for line in ns.run([tool, "-w", "-S"]).stdout.splitlines() if RULE_TAG in line]


@pytest.mark.netns
def test_managed_rules(pair):
    a, b, vb = pair
    b.run(["iptables-legacy", "-w", "-A", "INPUT", "-m", "comment", "--comment", RULE_TAG,
           "-j", "NFLOG", "--nflog-group", "9"])                     # left by a crashed run
    b.run("iptables-legacy -w -A INPUT -p tcp --dport 22 -j ACCEPT")   # the operator's own
    helper = Helper(b, group=7, probability=0.05, sampling=20, manage=True, dev="vB")
    rules = tagged(b)
    assert len(rules) == 4 and not any("group 9" in r for r in rules), rules
    assert any(r.startswith("-A INPUT -i vB") and "--nflog-group 7" in r and probability(r) == 0.05
               for r in rules)
    assert any(r.startswith("-A OUTPUT -o vB") for r in rules)
    send(a, "10.231.9.2", 4000)
    helper.command('update {"group": 8, "probability": 0.1, "sampling": 10, "manage": true, "dev": "vB"}')
    rules = tagged(b)
    assert len(rules) == 4 and all("--nflog-group 8" in r and probability(r) == 0.1 for r in rules), rules
    send(a, "10.231.9.2", 2000)
    result = helper.stop()
    got = ours(result)
    first = [fs for fs, _, _ in got if fs.sampling_rate == 20]
    second = [fs for fs, _, _ in got if fs.sampling_rate == 10]
    assert len(first) + len(second) == len(got)
    assert within_4_sd(len(first), 4000, 0.05) and within_4_sd(len(second), 2000, 0.1)
    assert tagged(b) == []
    assert "--dport 22 -j ACCEPT" in b.run("iptables-legacy -w -S INPUT").stdout
    assert any("iptables-legacy -S" in line for line in result["logs"])


@pytest.mark.netns
def test_without_python_iptables(pair):
    a, b, vb = pair
    b.run("iptables -A INPUT -i vB -p udp --dport 9999 -j NFLOG --nflog-group 5")
    helper = Helper(b, group=5, probability=1.0, sampling=1, manage=True, no_iptc=True)
    helper.command('update {"group": 5, "probability": 0.5, "sampling": 1, "manage": true}')
    send(a, "10.231.9.2", 50)
    result = helper.stop()
    warnings = [line for line in result["logs"] if "cannot manage" in line]
    assert len(warnings) == 1 and "iptc" in warnings[0], result["logs"]
    assert len(ours(result)) == 50   # the operator's rule still feeds the sampler
    assert tagged(b) == []


@pytest.mark.netns
def test_kernel_drops_are_counted(pair):
    a, b, vb = pair
    b.run("iptables -A INPUT -i vB -p udp --dport 9999 -j NFLOG --nflog-group 5")
    helper = Helper(b, group=5, probability=1.0, sampling=1, rcvbuf=8192)
    helper.command("pause")
    send(a, "10.231.9.2", 3000)
    helper.command("resume")
    send(a, "10.231.9.2", 20)   # numbered after the gap, so the gap shows
    result = helper.stop()
    assert result["overruns"] >= 1 and result["drops"] > 0
    assert result["messages"] + result["drops"] == rule_packets(b, "INPUT") == 3020
    assert result["messages"] == len(result["samples"])
