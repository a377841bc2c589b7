"""nflog {} throughput: NFLOG messages turned into encoded flow samples, and CPU per sample.

    sudo python bench/bench_nflog.py [--seconds S] [--rates 20000,40000,...]

1. User space alone: NflogSampler.handle() on a hand-built batch of 100 messages, as one
   recv returns them (parse, sub-sample, encode), in microseconds per message.
2. Probability 1 (every packet logged): a peer namespace sends UDP at rising paced rates
   over a veth into a test namespace where the sampler runs; for each rate, the samples per
   second, the sampler's CPU per sample, and the loss: NFULA_SEQ gaps (the kernel had to
   drop because the socket was full) and messages received but not sampled (must be 0).
   The highest rate with no loss is what one core sustains.
3. Probability 0.1 and 0.01 at the sender's full rate: CPU time per sample, which now
   includes the per-batch wake-ups.

The sender is Python too, so it, not the kernel, caps the offered rate.  Every namespace and
process is removed at the end.  Figures only, no asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from hsflowd.config import NflogConfig  # noqa: E402
from hsflowd.samplers.nflog import NflogSampler  # noqa: E402
from netns import Namespace, veth  # noqa: E402

SAMPLER = r"""
import json, os, select, sys, time
sys.path.insert(0, %(root)r)
from hsflowd.config import NflogConfig
from hsflowd.samplers.nflog import NflogSampler
group, probability = int(sys.argv[1]), float(sys.argv[2])
emitted = [0]
def emit(sample):
    emitted[0] += 1
s = NflogSampler(NflogConfig(group=group, probability=probability), int(round(1 / probability)), 128, emit)
print("READY", flush=True)
while True:
    ready = select.select([0] + s.fds(), [], [], 0.05)[0]
    if 0 in ready:
        line = sys.stdin.readline().strip()
        if line != "stats":
            break
        end = time.time() + 0.3   # let in-flight and part-filled batches arrive
        while time.time() < end:
            for fd in select.select(s.fds(), [], [], 0.05)[0]:
                s.read(fd)
        print(json.dumps({"messages": s.messages, "samples": emitted[0], "drops": s.drops,
                          "overruns": s.overruns, "cpu": time.process_time()}), flush=True)
    for fd in ready:
        if fd != 0:
            s.read(fd)
s.close()
""" % {"root": ROOT}

SENDER = r"""
import socket, sys, time
dst, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, sent, burst = b"x" * 64, 0, 100
start = time.perf_counter()
end = start + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate and sent > (now - start) * rate:
        time.sleep(min(0.001, sent / rate - (now - start)))
        continue
    for _ in range(burst):
        s.sendto(payload, (dst, 9999))
    sent += burst
print(sent, time.perf_counter() - start)
"""


def message_batch(count: int) -> bytes:
    """``count`` NFULNL_MSG_PACKET messages like the kernel's for a 106-byte UDP packet on input."""
    import struct

    def attr(kind, value):
        n = 4 + len(value)
        return struct.pack("=HH", n, kind) + value + b"\0" * (-n & 3)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 92, 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    payload = ip + struct.pack(">HHHH", 7777, 9999, 72, 0) + b"x" * 64
    out = []
    for seq in range(count):
        body = (attr(1, struct.pack(">HBB", 0x0800, 1, 0)) + attr(4, struct.pack(">I", 7)) +
                attr(8, bytes(12)) + attr(15, struct.pack(">H", 1)) + attr(17, struct.pack(">H", 14)) +
                attr(16, bytes(12) + b"\x08\x00") + attr(3, struct.pack(">QQ", int(time.time()), 0)) +
                attr(12, struct.pack(">I", seq)) + attr(9, payload))
        body = struct.pack(">BBH", 2, 0, 5) + body
        out.append(struct.pack("=IHHII", 16 + len(body), 0x400, 0, 0, 0) + body)
    return b"".join(out)


def user_space(sampling: int, rounds: int = 1000, repeat: int = 5) -> float:
    """Seconds per message, the best of ``repeat`` runs (other processes only add time)."""
    sampler = NflogSampler(NflogConfig(group=5, probability=1.0), sampling, 128, lambda b: None,
                           random.Random(1), listen=False)
    batch = message_batch(100)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(rounds):
            sampler._next_seq = None  # the same batch again: not a sequence gap
            sampler.handle(batch)
        best = min(best, (time.perf_counter() - start) / (rounds * 100))
    return best


class Bench:
    def __init__(self):
        self.a, self.b = Namespace(), Namespace()
        veth(self.a, "vA", self.b, "vB", "10.231.8.1/24", "10.231.8.2/24")

    def sampler(self, group: int, probability: float):
        rule = f"-i vB -p udp --dport 9999 -m statistic --mode random --probability {probability}"
        self.b.run("iptables -F INPUT")
        self.b.run(f"iptables -A INPUT {rule} -j NFLOG --nflog-group {group}")
        proc = self.b.popen([sys.executable, "-c", SAMPLER, str(group), str(probability)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "READY"
        return proc

    @staticmethod
    def stats(proc) -> dict:
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def send(self, rate: int, seconds: float):
        out = self.a.run([sys.executable, "-c", SENDER, "10.231.8.2", str(rate), str(seconds)]).stdout
        sent, took = out.split()
        return int(sent), float(took)

    def run_phase(self, proc, rate, seconds):
        before = self.stats(proc)
        sent, took = self.send(rate, seconds)
        after = self.stats(proc)
        d = {k: after[k] - before[k] for k in after}
        return sent, took, d

    def close(self):
        self.a.delete()
        self.b.delete()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each phase (default 3)")
    ap.add_argument("--rates", default="10000,20000,40000,80000,160000,0",
                    help="packets/s offered at probability 1 (0: as fast as the sender goes)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}")
    print(f"user space only, batch of 100: {user_space(1) * 1e6:.2f} us per message sampled, "
          f"{user_space(10) * 1e6:.2f} us per message at 1-in-10 sub-sampling")

    bench = Bench()
    try:
        proc = bench.sampler(5, 1.0)
        print("\nprobability 1 (every packet logged):")
        print(f"{'offered/s':>10} {'samples/s':>10} {'us CPU/sample':>14} {'seq gaps':>9} "
              f"{'overruns':>9} {'unsampled':>10}")
        best, cpu_per_sample = 0, []
        for rate in (int(r) for r in args.rates.split(",")):
            sent, took, d = bench.run_phase(proc, rate, args.seconds)
            per_s = d["samples"] / took
            cpu = d["cpu"] / d["samples"] * 1e6 if d["samples"] else 0.0
            lost = d["messages"] - d["samples"]
            cpu_per_sample.append(cpu)
            print(f"{sent / took:10.0f} {per_s:10.0f} {cpu:14.2f} {d['drops']:9d} "
                  f"{d['overruns']:9d} {lost:10d}")
            if d["drops"] == 0 and lost == 0 and d["samples"] == sent:
                best = max(best, per_s)
        proc.stdin.close()
        proc.wait(timeout=10)
        print(f"highest rate with nothing lost: {best:.0f} samples/s (the sender's limit if the "
              f"last row lost nothing); at {min(cpu_per_sample):.2f} us of CPU each, one core "
              f"would turn about {1e6 / min(cpu_per_sample):.0f} messages/s into samples")

        for probability in (0.1, 0.01):
            proc = bench.sampler(6, probability)
            sent, took, d = bench.run_phase(proc, 0, args.seconds)
            cpu = d["cpu"] / d["samples"] * 1e6 if d["samples"] else 0.0
            print(f"\nprobability {probability}: {sent / took:.0f} packets/s offered, {d['samples']} samples "
                  f"({d['samples'] / took:.0f}/s), {cpu:.2f} us CPU per sample, "
                  f"{d['drops']} seq gaps, CPU {d['cpu'] / took * 100:.1f}% of one core")
            proc.stdin.close()
            proc.wait(timeout=10)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
