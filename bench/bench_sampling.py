#!/usr/bin/env python3
"""Packet sampling throughput and cost: the agent as a real process, sampling a veth.

For N = 1, 10 and 100 (``pcap { dev = eth0 sampling = N }``) a peer namespace sends UDP
as fast as one Python sender can; the agent runs in the "host" namespace and sends its
datagrams to a counting receiver there.  Printed per run:

- samples/s turned into datagrams (flow samples the receiver counted, over the send time);
- lost in user space: samples the kernel accepted into the ring but dropped because the
  agent did not read in time (the flow samples' ``drops``), and sequence gaps;
- the agent's CPU time per sample (utime + stime from /proc/PID/stat over the run).

Needs root (it creates two network namespaces and removes them).  No asserts: figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from netns import Namespace, veth  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")

RECEIVER = r"""
import socket, struct, sys, signal
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
flows = drops = gaps = last_seq = 0
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
s.settimeout(0.2)
while not stop:
    try:
        d = s.recv(65535)
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    n = struct.unpack_from(">I", d, 24)[0]
    off = 28
    for _ in range(n):
        tag, length = struct.unpack_from(">II", d, off)
        if tag == 3:
            seq, _, _, _, _, dropped = struct.unpack_from(">IIIIII", d, off + 8)
            flows += 1
            drops = max(drops, dropped)
            if last_seq and seq != last_seq + 1:
                gaps += seq - last_seq - 1
            last_seq = seq
        off += 8 + length
print(flows, drops, gaps, flush=True)
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 64
dst = (sys.argv[1], 9999)
start = time.monotonic()
end = start + float(sys.argv[2])
pps = float(sys.argv[3])          # 0: as fast as this process can
n = 0
send = s.sendto
while time.monotonic() < end:
    for _ in range(1000):
        send(payload, dst)
    n += 1000
    if pps:
        ahead = n / pps - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
print(n, flush=True)
"""


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def run(rate: int, seconds: float, senders: int, pps: float) -> None:
    host, peer = Namespace(), Namespace()
    tmp = tempfile.mkdtemp(prefix="hsflowd-bench-")
    try:
        veth(host, "eth0", peer, "wire", "10.231.9.1/24", "10.231.9.2/24")
        conf = os.path.join(tmp, "hsflowd.conf")
        with open(conf, "w") as f:
            f.write("sflow {\n polling = 20\n collector { ip = 127.0.0.1 udpport = 16370 }\n"
                    f" pcap {{ dev = eth0 sampling = {rate} }}\n}}\n")
        rx = host.popen([sys.executable, "-c", RECEIVER, "16370"], stdout=subprocess.PIPE, text=True)
        agent = host.popen([sys.executable, "-m", "hsflowd", "-d", "-f", conf, "-p",
                            os.path.join(tmp, "pid"), "-o", os.path.join(tmp, "auto")],
                           stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(1.5)
        # the agent process is the child of `ip netns exec`, which execs: same pid
        before = cpu_ticks(agent.pid)
        procs = [peer.popen([sys.executable, "-c", SENDER, "10.231.9.1", str(seconds), str(pps / senders)],
                            stdout=subprocess.PIPE, text=True) for _ in range(senders)]
        sent = sum(int(p.communicate(timeout=seconds + 30)[0]) for p in procs)
        time.sleep(1.5)  # the last samples leave within a second
        used = (cpu_ticks(agent.pid) - before) / HZ
        agent.terminate()
        agent.wait(timeout=5)
        rx.terminate()
        flows, drops, gaps = (int(x) for x in rx.communicate(timeout=5)[0].split())
        per_sample = used / flows * 1e6 if flows else float("nan")
        print(f"N={rate:<4} sent {sent:>9,} packets in {seconds:.0f} s ({sent / seconds:>9,.0f}/s)  "
              f"samples {flows:>8,} ({flows / seconds:>9,.0f}/s)  expected {sent / rate:>9,.0f}  "
              f"lost in user space {drops + gaps:>5,}  agent CPU {used:5.2f} s = {per_sample:6.2f} us/sample")
    finally:
        host.delete()
        peer.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="1,10,100")
    parser.add_argument("--pps", type=float, default=0,
                        help="packets/s offered in all (0: as fast as the senders can)")
    parser.add_argument("--senders", type=int, default=1,
                        help="sender processes (one Python sender offers about 150-200k packets/s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_sampling needs root (network namespaces)")
    print(f"Python {sys.version.split()[0]}, pcap {{}} sampler (classic BPF + TPACKET_V3 ring), "
          f"{os.cpu_count()} CPUs; {args.senders} Python sender process(es) in a peer namespace")
    for rate in (int(r) for r in args.rates.split(",")):
        run(rate, args.seconds, args.senders, args.pps)


if __name__ == "__main__":
    main()
