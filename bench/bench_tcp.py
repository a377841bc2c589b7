"""tcp { }: what it costs per sampled TCP packet, with and without it.

    sudo python3 bench/bench_tcp.py [--seconds S] [--rate N]

1. In-process, the flow hook on encoded samples (no hook at all is the "without" figure):
   a UDP packet, a TCP packet of no local connection, a local one over the look-up budget;
   then what a looked-up sample adds: the DiagSocket look-up (on the module's thread in the
   agent), with 10 and with 1,000 other TCP connections open (the kernel's filtered dump
   walks them), and the answer appended to the sample.
2. The agent as a process in a test namespace, ``pcap { sampling = 1 }`` on a veth carrying
   a paced TCP request/response stream (N exchanges a second, about 3N packets), with and
   without ``tcp { }``: the agent's CPU per sampled packet, and how many samples got 2209.

Figures only, no asserts.  Connections use loopback and test namespaces; everything is
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from agentproc import AgentFactory, Receiver, in_netns, proc_cpu_seconds, udp_socket  # noqa: E402
from hsflowd.modules import Context  # noqa: E402
from hsflowd.frames import append_records  # noqa: E402
from hsflowd.modules.flowhooks import FlowHooks, Sink  # noqa: E402
from hsflowd.modules.tcp import TcpModule  # noqa: E402
from hsflowd.sflow import ExtendedTcpInfo, FlowSample, SampledHeader  # noqa: E402
from hsflowd.sources.tcpinfo import open_diag_socket, read_tcp_info, tcp_info_record  # noqa: E402
from netns import Namespace, veth  # noqa: E402


def header(src: str, dst: str, sport: int, dport: int, proto: int = 6) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x10, 1024, 0, 0) + bytes(40)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return (bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + tcp)[:128]


def sample(h: bytes) -> bytes:
    return FlowSample(sequence_number=1, source_id_type=0, source_id_index=2, sampling_rate=1,
                      sample_pool=1, input=2, output=0x3FFFFFFF,
                      flow_records=[SampledHeader(frame_length=len(h) + 4, header=h)]).encode()


def loopback_connections(n: int):
    """n connections 127.0.0.2 -> 127.0.0.1 (the first is the one looked up)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(n + 10)
    made = []
    for _ in range(n):
        c = socket.socket()
        c.bind(("127.0.0.2", 0))
        c.connect(server.getsockname())
        made += [c, server.accept()[0]]
    return server, made


def in_process(rounds: int = 20000):
    print("1. in-process, per sampled packet (best of 3)")
    sent = []
    hooks = FlowHooks(Sink(sent.append))
    plain = sample(header("127.0.0.2", "127.0.0.1", 1000, 2000))

    def timed(fn, n=rounds):
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for _ in range(n):
                fn()
            best = min(best, (time.process_time() - start) / n)
        return best

    print(f"   without tcp {{ }} (no flow hook)           "
          f"{timed(lambda: hooks.emit(plain)) * 1e6:7.2f} us")
    ctx = Context("tcp", lambda name, fd, cb: object(), lambda t: None, hooks.emit, sent.append,
                  lambda i: {}, None, hooks)
    module = TcpModule(ctx)
    module.local = frozenset({socket.inet_aton("127.0.0.2")})
    try:
        udp = sample(header("127.0.0.2", "127.0.0.1", 1000, 2000, proto=17))
        foreign = sample(header("192.0.2.1", "192.0.2.2", 1000, 2000))
        for label, data in (("a UDP packet", udp), ("TCP, not a local connection", foreign),
                            ("TCP, local, over the look-up budget", plain)):
            module.budget = 0
            cost = timed(lambda d=data: hooks.emit(d))
            print(f"   with: {label:36s}{cost * 1e6:7.2f} us")
        info = dict(snd_mss=1448, rcv_mss=536, unacked=0, lost=0, retrans=0, pmtu=1500, rtt=50,
                    rttvar=25, snd_cwnd=10, reordering=3, min_rtt=20)
        answer = timed(lambda: append_records(plain, tcp_info_record(info, 2).encode(), 1))
        print(f"   with: the answer appended to a sample     {answer * 1e6:7.2f} us")
        ds = open_diag_socket()
        for count in (10, 1000):
            server, conns = loopback_connections(count)
            try:
                c = conns[0]
                (local, lport), (remote, rport) = c.getsockname(), c.getpeername()
                key = (4, socket.inet_aton(local), socket.inet_aton(remote), lport, rport)
                assert read_tcp_info(ds, key) is not None
                n = 300
                start_cpu, start = time.process_time(), time.perf_counter()
                for _ in range(n):
                    read_tcp_info(ds, key)
                cpu = (time.process_time() - start_cpu) / n
                wall = (time.perf_counter() - start) / n
                print(f"   with: the look-up (DiagSocket), {count:4d} TCP sockets open: "
                      f"{cpu * 1e6:5.0f} us CPU, {wall * 1e6:5.0f} us")
            finally:
                for s in conns:
                    s.close()
                server.close()
        ds.close()
    finally:
        module.close()


ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(); print('ready', flush=True)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
"""


def agent_process(seconds: float, rate: int):
    print(f"2. the agent as a process, pcap sampling=1 on a veth, {rate} TCP exchanges/s for "
          f"{seconds:.0f} s")
    a, b = Namespace(), Namespace()
    factory = AgentFactory()
    try:
        veth(a, "va", b, "vb", "10.231.10.1/24", "10.231.10.2/24")
        server = b.popen([sys.executable, "-c", ECHO, "10.231.10.2"], stdout=subprocess.PIPE)
        server.stdout.readline()
        conn = in_netns(a.name, lambda: socket.create_connection(("10.231.10.2", 5001)))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        results = {}
        for tcp in (False, True):
            r = Receiver(udp_socket("127.0.0.1", a.name))
            agent = factory("sflow {\n polling = 30\n pcap { dev = va  sampling = 1 }\n"
                            + (" tcp { }\n" if tcp else "")
                            + f" collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n}}\n",
                            netns=a.name)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "pcap: sampling va" not in agent.stderr():
                time.sleep(0.05)
            time.sleep(1)
            r.drain()
            cpu0 = proc_cpu_seconds(agent.pid)
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < seconds:
                conn.sendall(b"x" * 100)
                conn.recv(65536)
                n += 1
                pause = start + n / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            time.sleep(1.5)
            cpu = proc_cpu_seconds(agent.pid) - cpu0
            got = r.drain()
            flows = [s for x in got for s in x.datagram.samples if isinstance(s, FlowSample)]
            with_2209 = sum(any(isinstance(rec, ExtendedTcpInfo) for rec in s.flow_records)
                            for s in flows)
            results[tcp] = (cpu, len(flows))
            label = "with tcp { }   " if tcp else "without tcp { }"
            print(f"   {label}  {len(flows) / seconds:7.0f} samples/s  agent CPU "
                  f"{100 * cpu / (seconds + 1.5):5.1f}% of one core  "
                  f"{cpu / max(len(flows), 1) * 1e6:6.1f} us per sample  "
                  f"({with_2209} with 2209)")
            agent.stop()
            r.close()
        (c0, n0), (c1, n1) = results[False], results[True]
        print(f"   tcp {{ }} adds {(c1 / max(n1, 1) - c0 / max(n0, 1)) * 1e6:.1f} us per sampled "
              f"TCP packet in the agent (look-ups included, at most 50/s)")
        conn.close()
    finally:
        factory.close()
        a.delete()
        b.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args()
    print(f"bench_tcp: Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPU(s)")
    in_process()
    if os.geteuid() == 0:
        agent_process(args.seconds, args.rate)
    else:
        print("2. skipped: namespaces need root")
    return 0


if __name__ == "__main__":
    sys.exit(main())
