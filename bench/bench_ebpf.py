"""epcap {} cost: samples per second and agent CPU time per sample at 1-in-1, 1-in-10, 1-in-100.

    python bench/bench_ebpf.py [--seconds S] [--rates 1,10,100]     (as root)

Two test namespaces and a veth: a Python UDP sender in A blasts packets for S seconds at
the sampled veth in B; the sampler runs in a child process in B (this file with --agent),
reads the perf buffers in the agent's single-threaded select loop and frames every sample
into sFlow datagrams (a DatagramBuilder whose send() discards them).  The CPU time is the
agent process's own (user + system, from the first packet until its buffers are drained);
the tc program's cost is paid by the sending CPU in softirq and shows as a lower send rate
than the untapped run.  Prints one line per rate; exits 0, saying why, when bcc or root
is missing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

A_ADDR, B_ADDR, PORT = "10.252.0.1", "10.252.0.2", 9999
SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, dst, end, n = b"x" * 100, (sys.argv[1], %d), time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    for _ in range(1000):
        s.sendto(payload, dst)
    n += 1000
print(n)
""" % PORT


def agent(rate: int, ifname: str) -> None:
    """The child: tap ifname 1-in-rate, measure between "go" and the drain after "stop"."""
    import socket
    from hsflowd.samplers import Tap
    from hsflowd.samplers.ebpf import EbpfSampler, EbpfUnavailable
    from hsflowd.sflow.datagram import DatagramBuilder

    datagrams = [0]

    def send(data):
        datagrams[0] += 1

    builder = DatagramBuilder(ipaddress.ip_address(B_ADDR), 0, send)
    t0 = time.perf_counter()
    try:
        sampler = EbpfSampler(builder.add, lambda: iter(()))
    except EbpfUnavailable as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        return
    compile_s = time.perf_counter() - t0
    ifindex = socket.if_nametoindex(ifname)
    sampler.update({ifindex: Tap(ifindex, ifname, rate, 128)})
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((B_ADDR, PORT))
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()                                   # "go"
    cpu0, wall0, emitted0 = time.process_time(), time.monotonic(), sampler.emitted
    stopping, quiet_since, next_tick = False, None, wall0 + 1
    while True:
        ready, _, _ = select.select(sampler.fds() + [0], [], [], 0.05)
        got = 0
        for fd in ready:
            if fd == 0:
                stopping = True
                os.read(0, 100)
            else:
                got += sampler.read(fd)
        now = time.monotonic()
        if now >= next_tick:
            sampler.tick({})
            builder.flush()
            next_tick = now + 1
        if stopping:
            quiet_since = now if got or quiet_since is None else quiet_since
            if now - quiet_since > 0.2:
                break
    sampler.tick({})  # drains what is short of a wakeup
    builder.flush()
    wall, cpu, samples = quiet_since - wall0, time.process_time() - cpu0, sampler.emitted - emitted0
    t = sampler.tapped[ifindex]
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(json.dumps({"samples": samples, "wall": wall, "cpu": cpu, "seen": sampler.counters(ifindex)[0],
                      "drops": t.builder.drops, "lost": sampler.lost, "datagrams": datagrams[0],
                      "compile": compile_s, "rss": rss}), flush=True)
    sampler.close()


def measure(a, b, vb: str, rate: int, seconds: float) -> dict:
    child = b.popen([sys.executable, os.path.abspath(__file__), "--agent", str(rate), vb],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env=dict(os.environ, PYTHONPATH=ROOT))
    hello = json.loads(child.stdout.readline())
    if "unavailable" in hello:
        return hello
    child.stdin.write("go\n")
    child.stdin.flush()
    sent = int(a.run([sys.executable, "-c", SENDER, B_ADDR, str(seconds)]).stdout)
    child.stdin.write("stop\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait(10)
    result["sent"] = sent
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="traffic per rate (default 3)")
    ap.add_argument("--rates", default="1,10,100", help="sampling rates (default 1,10,100)")
    ap.add_argument("--agent", nargs=2, metavar=("RATE", "IFNAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.agent:
        agent(int(args.agent[0]), args.agent[1])
        return
    if os.geteuid() != 0:
        print("bench_ebpf: skipped, network namespaces and tc need root")
        return
    from netns import Namespace, unique, veth

    a, b = Namespace(), Namespace()
    try:
        for ns in (a, b):
            ns.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        va, vb = unique("a"), unique("b")
        veth(a, va, b, vb, A_ADDR + "/24", B_ADDR + "/24")
        a.run(["ip", "neigh", "replace", B_ADDR, "lladdr", b.mac(vb), "dev", va, "nud", "permanent"])
        b.run(["ip", "neigh", "replace", A_ADDR, "lladdr", a.mac(va), "dev", vb, "nud", "permanent"])
        sink = b.popen([sys.executable, "-c", "import socket, time\ns = socket.socket(2, 2)\n"
                        f"s.bind(('{B_ADDR}', {PORT}))\ntime.sleep(600)"])
        time.sleep(0.3)
        base = int(a.run([sys.executable, "-c", SENDER, B_ADDR, str(args.seconds)]).stdout)
        sink.kill()
        sink.wait()
        print(f"veth in a test namespace, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
              f"{args.seconds:g} s of 142-byte UDP frames per rate")
        print(f"untapped: sender {base / args.seconds / 1e3:.0f} kpps")
        for rate in (int(r) for r in args.rates.split(",")):
            r = measure(a, b, vb, rate, args.seconds)
            if "unavailable" in r:
                print(f"bench_ebpf: skipped, eBPF unavailable: {r['unavailable']}")
                return
            per = r["cpu"] / r["samples"] * 1e6 if r["samples"] else 0.0
            print(f"1-in-{rate:<4d} sender {r['sent'] / args.seconds / 1e3:4.0f} kpps, program saw "
                  f"{r['seen']}, {r['samples']} samples = {r['samples'] / r['wall']:7.0f} samples/s, "
                  f"agent CPU {r['cpu'] / r['wall'] * 100:3.0f}% = {per:5.1f} us/sample, "
                  f"lost {r['lost']} (program drops {r['drops']}), {r['datagrams']} datagrams, "
                  f"compile+load {r['compile']:.2f} s, RSS {r['rss'] / 2**20:.0f} MiB")
    finally:
        a.delete()
        b.delete()


if __name__ == "__main__":
    main()
