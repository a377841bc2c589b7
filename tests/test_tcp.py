"""tcp { } without a network: which packets are looked up and how (packet_endpoints on
hand-made sampled headers), tcp_info -> extended_tcp_info, and the module's hold, budget,
coalescing and release with a stand-in for the kernel.  Real connections compared with
`ss -ti` are in test_tcp_e2e.py."""

from __future__ import annotations

import struct
import threading
import time
from ipaddress import ip_address, ip_interface
from types import SimpleNamespace

import pytest

from hsflowd.modules import AgentState, Context
from hsflowd.modules import tcp as tcpmod
from hsflowd.modules.flowhooks import FlowHooks, Sink
from hsflowd.modules.tcp import LOOKUPS_PER_SECOND, PER_CONNECTION, TcpModule
from hsflowd.sources.interfaces import local_addresses
from hsflowd.sflow import ExtendedSwitch, ExtendedTcpInfo, FlowSample, SampledHeader
from hsflowd.sflow.tlv import SAMPLES
from hsflowd.frames import walk_sample
from hsflowd.sources.tcpinfo import DIR_RECEIVED, DIR_SENT, endpoints, tcp_info_record

A4, B4 = ip_address("10.0.0.1").packed, ip_address("192.0.2.9").packed
A6, B6 = ip_address("2001:db8::1").packed, ip_address("2001:db8::9").packed


def packet_endpoints(sample: bytes):
    """What tcp's hook sees of an encoded sample: its walk's TCP endpoints."""
    pkt = walk_sample(sample)
    return endpoints(pkt) if pkt is not None else None


def tcp_header(sport=40000, dport=443):
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 1024, 0, 0)


def ipv4(payload, src=A4, dst=B4, proto=6, frag=0, ihl=5):
    options = bytes((ihl - 5) * 4)
    return struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(payload), 1,
                       frag, 64, proto, 0, src, dst) + options + payload


def ipv6(payload, src=A6, dst=B6, nh=6):
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), nh, 64, src, dst) + payload


def eth(payload, etype=0x0800, tags=()):
    out = bytes(6) + bytes.fromhex("020000000001")
    for tpid, vid in tags:
        out += struct.pack(">HH", tpid, vid)
    return out + struct.pack(">H", etype) + payload


def sample(header, protocol=1, first=None, seq=1):
    records = ([first] if first else []) + [
        SampledHeader(header_protocol=protocol, frame_length=len(header) + 4, header=header)]
    return FlowSample(sequence_number=seq, source_id_type=0, source_id_index=3, sampling_rate=1,
                      sample_pool=seq, input=3, output=0x3FFFFFFF,
                      flow_records=records).encode()


# ---------------------------------------------------------------- packet_endpoints

def test_endpoints_of_tcp_packets():
    assert packet_endpoints(sample(eth(ipv4(tcp_header())))) == (4, A4, B4, 40000, 443)
    tagged = eth(ipv4(tcp_header(1, 2)), 0x0800, tags=[(0x88A8, 10), (0x8100, 20)])
    assert packet_endpoints(sample(tagged)) == (4, A4, B4, 1, 2)
    assert packet_endpoints(sample(eth(ipv4(tcp_header(), ihl=7)))) == (4, A4, B4, 40000, 443)
    assert packet_endpoints(sample(eth(ipv6(tcp_header()), 0x86DD))) == (6, A6, B6, 40000, 443)
    # IPv6 extension headers: hop-by-hop (8 bytes) then a first fragment, then TCP
    chain = bytes([44, 0]) + bytes(6) + bytes([6, 0, 0, 0]) + bytes(4) + tcp_header()
    assert packet_endpoints(sample(eth(ipv6(chain, nh=0), 0x86DD)))[3:] == (40000, 443)
    assert packet_endpoints(sample(ipv4(tcp_header()), protocol=11)) == (4, A4, B4, 40000, 443)
    assert packet_endpoints(sample(ipv6(tcp_header()), protocol=12)) == (6, A6, B6, 40000, 443)
    # sampled_header after another record
    assert packet_endpoints(sample(eth(ipv4(tcp_header())), first=ExtendedSwitch()))[0] == 4


@pytest.mark.parametrize("data", [
    sample(eth(ipv4(tcp_header(), proto=17))),                     # UDP
    sample(eth(ipv4(tcp_header(), frag=0x0010))),                  # a later fragment
    sample(eth(ipv4(tcp_header()))[:14 + 20 + 3]),                 # ports cut off
    sample(eth(ipv4(tcp_header()))[:20]),                          # IP header cut off
    sample(eth(bytes(28), 0x0806)),                                # ARP
    sample(eth(ipv6(bytes([44, 0, 0, 8]) + bytes(4) + tcp_header(), nh=44), 0x86DD)),
    sample(eth(ipv6(tcp_header(), nh=17), 0x86DD)),
    sample(b"\x45" + bytes(40), protocol=7),                       # PPP: not read
    sample(eth(ipv4(tcp_header())), protocol=1)[:60],              # the sample cut short
    FlowSample(flow_records=[ExtendedSwitch()]).encode(),          # no sampled_header
    b"\x00\x00\x00\x04" + bytes(60),                               # a counters sample
    b"",
])
def test_no_endpoints(data):
    assert packet_endpoints(data) is None


def test_tcp_info_record():
    info = dict(snd_mss=1448, rcv_mss=536, unacked=1, lost=2, retrans=3, pmtu=1500, rtt=20500,
                rttvar=750, snd_cwnd=10, reordering=3, min_rtt=19000)
    assert tcp_info_record(info, DIR_SENT) == ExtendedTcpInfo(dirn=2, **info)
    assert tcp_info_record({"rtt": 5}, DIR_RECEIVED) == ExtendedTcpInfo(dirn=1, rtt=5)


def test_local_addresses():
    table = [SimpleNamespace(addresses=[SimpleNamespace(ip=ip_interface("10.0.0.1/24").ip)]),
             SimpleNamespace(addresses=[SimpleNamespace(ip=ip_address("2001:db8::1"))]),
             SimpleNamespace(addresses=[])]
    assert local_addresses(table) == {A4, A6}


# ---------------------------------------------------------------- the module

INFO = dict(snd_mss=1448, rcv_mss=536, unacked=0, lost=0, retrans=4, pmtu=1500, rtt=120,
            rttvar=60, snd_cwnd=10, reordering=3, min_rtt=30)


class Kernel:
    """Stands in for read_tcp_info: an answer per connection, optionally held back."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.asked = []
        self.go = threading.Event()
        self.go.set()

    def __call__(self, ds, conn):
        self.go.wait(5)
        self.asked.append(conn)
        return self.answers.get(conn, INFO)


def make(kernel, local=(A4, A6)):
    sent, watched = [], []
    hooks = FlowHooks(Sink(sent.append))
    ctx = Context("tcp", lambda name, fd, cb: watched.append(cb) or object(), lambda t: None,
                  hooks.emit, sent.append, lambda i: {}, None, hooks)
    module = TcpModule(ctx, read=kernel, open_diag=lambda: object())
    module.local = frozenset(local)
    return module, hooks, sent


def settle(module, sent, count, seconds=3.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(sent) < count:
        module._answers()
        time.sleep(0.005)
    return sent


def tcp_info_of(data):
    s = SAMPLES.classes[3].decode_body(data, 8)
    found = [r for r in s.flow_records if isinstance(r, ExtendedTcpInfo)]
    return found[0] if found else None


def test_samples_of_local_connections_get_2209_with_their_direction():
    kernel = Kernel()
    module, hooks, sent = make(kernel)
    try:
        out = sample(eth(ipv4(tcp_header(40000, 443), src=A4, dst=B4)), seq=1)
        back = sample(eth(ipv4(tcp_header(443, 40000), src=B4, dst=A4)), seq=2)
        other = sample(eth(ipv4(tcp_header(), src=B4, dst=ip_address("192.0.2.10").packed)))
        udp = sample(eth(ipv4(tcp_header(), proto=17)))
        for s in (out, back, other, udp):
            hooks.emit(s)
        assert sent == [other, udp]                    # not ours: straight through
        settle(module, sent, 4)
        got = {SAMPLES.classes[3].decode_body(d, 8).sequence_number: tcp_info_of(d)
               for d in sent[2:]}
        assert got == {1: tcp_info_record(INFO, DIR_SENT), 2: tcp_info_record(INFO, DIR_RECEIVED)}
        # both directions are one connection: one look-up, from the local end
        assert kernel.asked == [(4, A4, B4, 40000, 443)]
        # the record goes last, and the sample stays a whole one
        data = sent[2]
        assert data[:8] == struct.pack(">II", 3, len(data) - 8)
        assert module.status()["tcp"]["annotated"] == 2
    finally:
        module.close()


def test_unknown_sockets_and_failures_go_out_without_2209():
    conn = (6, A6, B6, 40000, 443)
    kernel = Kernel({conn: None})
    module, hooks, sent = make(kernel)
    try:
        data = sample(eth(ipv6(tcp_header()), 0x86DD))
        hooks.emit(data)
        assert settle(module, sent, 1) == [data]
        assert module.status()["tcp"]["not_found"] == 1

        def broken(ds, conn):
            raise OSError(105, "No buffer space available")
        module.read = broken
        hooks.emit(sample(eth(ipv4(tcp_header(1, 2)))))
        settle(module, sent, 2)
        assert tcp_info_of(sent[1]) is None and module.errors == 1
    finally:
        module.close()


def test_budget_coalescing_and_hold_limits():
    kernel = Kernel()
    kernel.go.clear()                                  # the kernel does not answer yet
    module, hooks, sent = make(kernel)
    try:
        for i in range(LOOKUPS_PER_SECOND + 10):       # that many connections at once
            hooks.emit(sample(eth(ipv4(tcp_header(10000 + i, 443)))))
        assert len(sent) == 10 and module.over_budget == 10 and module.held == 50
        for _ in range(PER_CONNECTION + 3):            # one connection, again and again:
            hooks.emit(sample(eth(ipv4(tcp_header(10000, 443)))))   # 16 wait for its answer
        assert len(sent) == 14 and module.held == 50 + PER_CONNECTION - 1
        assert len(kernel.asked) + module.requests.qsize() <= LOOKUPS_PER_SECOND
        module.tick(time.monotonic())                  # a new second: a new budget
        hooks.emit(sample(eth(ipv4(tcp_header(20000, 443)))))
        assert len(sent) == 14
        # nothing answers within a second: everything held goes out without 2209
        module.tick(time.monotonic() + tcpmod.HOLD_MAX)
        assert len(sent) == 14 + 50 + PER_CONNECTION - 1 + 1 and module.held == 0
        assert all(tcp_info_of(d) is None for d in sent)
        kernel.go.set()
        time.sleep(0.1)
        module._answers()                              # late answers find nothing to do
        assert module.held == 0
    finally:
        module.close()


def test_close_sends_what_it_holds_and_stops_its_thread():
    kernel = Kernel()
    kernel.go.clear()
    module, hooks, sent = make(kernel)
    hooks.emit(sample(eth(ipv4(tcp_header()))))
    assert sent == []
    worker = module.worker
    kernel.go.set()
    module.close()
    assert len(sent) == 1
    worker.join(2)
    assert not worker.is_alive()


def test_reconcile_reads_the_local_addresses():
    kernel = Kernel()
    module, hooks, sent = make(kernel, local=())
    try:
        table = [SimpleNamespace(addresses=[SimpleNamespace(ip=ip_address("10.0.0.1"))])]
        module.reconcile(AgentState(config=None, revision=1, interfaces=table,
                                    changed=frozenset({"interfaces"})))
        assert module.local == {A4}
    finally:
        module.close()
