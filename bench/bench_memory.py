"""The agent's resident memory: with many interfaces, through interface churn, and through
long sampling.

    sudo python3 bench/bench_memory.py veths [--pairs 500] [--bridge] [--hold 60] [--later 120]
    sudo python3 bench/bench_memory.py churn [--pairs 1000] [--taps 500]
    sudo python3 bench/bench_memory.py sampling [--minutes 60] [--pps 20000]

veths: what an interface costs, and whether it is given back.  The agent in a test
namespace that has one addressed link (a stable agent address) and the churn scenario's
config; ``--pairs`` veth pairs (both ends in the namespace: two interfaces a pair) are
made in batches of 50, live ``--hold`` seconds through the counter polls (``--polling``),
and are deleted.  Printed: resident memory before, with the pairs (the growth per
interface and per pair), after deletion once the agent's trim has run (35 s), and
``--later`` seconds after that.  With ``--bridge`` the pairs' a ends are ports of a
bridge that ``pcap { dev = br0 }`` samples, so each is polled as well (a Kubernetes
node's cni0 and its pods' veths).

churn: the agent in a test namespace with ``pcap { dev.pattern = ^ct sampling = 100 }`` and
``pcap { speed = 1G- }``; veth pairs are made and deleted in batches of 50 (the interface
table's churn: a pattern or a speed never picks a veth, as in hsflowd), then tap devices
that the pattern rule taps as each appears (a ring opened and closed each time).  Resident
memory and descriptors are printed after every batch.

sampling: ``pcap { dev = vh sampling = 1 }`` on a veth that carries ``--pps`` UDP packets a
second from a peer namespace: every packet is a sample.  Resident memory is printed each
minute; the figure to watch is the change after the first minutes.

Figures are printed; nothing is asserted (tests/test_memory.py asserts bounds on both).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from agentproc import (AgentFactory, Receiver, config_text, proc_cpu_seconds,  # noqa: E402
                       proc_memory_kb, udp_socket)
from churn import add_pairs, churn, churn_taps, delete_pairs  # noqa: E402
from lifecycle import SENDER, SINK  # noqa: E402
from netns import Namespace, is_root, veth  # noqa: E402


def figures(pid: int) -> str:
    rss, hwm = proc_memory_kb(pid)
    return f"rss {rss / 1024:6.1f} MB (peak {hwm / 1024:.1f})  fds {len(os.listdir(f'/proc/{pid}/fd'))}"


class Drain(threading.Thread):
    """Reads the collector socket so it never fills."""

    def __init__(self, receiver: Receiver):
        super().__init__(daemon=True)
        self.sock = receiver.sock
        self.sock.settimeout(0.5)
        self.datagrams = 0
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                self.sock.recv(65535)
                self.datagrams += 1
            except OSError:
                pass


def rss_kb(pid: int) -> int:
    return proc_memory_kb(pid)[0]


def bench_veths(args, factory: AgentFactory, ns: Namespace) -> None:
    for cmd in ("ip link add d0a type veth peer name d0b", "ip addr add 10.231.41.1/24 dev d0a",
                "ip link set d0a up", "ip link set d0b up"):
        ns.run(cmd)
    rules = "pcap { dev.pattern = ^ct sampling = 100 }\npcap { speed = 1G- }"
    if args.bridge:
        ns.run("ip link add br0 type bridge")
        ns.run("ip link set br0 up")
        rules = "pcap { dev = br0 sampling = 100 }"
    r = Receiver(udp_socket("127.0.0.1", ns.name))
    drain = Drain(r)
    drain.start()
    agent = factory(config_text([("127.0.0.1", r.port)], polling=args.polling, extra=rules),
                    netns=ns.name)
    time.sleep(10)
    pid = agent.pid
    before = rss_kb(pid)
    interfaces = 2 * args.pairs

    def line(what: str, kb: int) -> str:
        grown = kb - before
        return (f"{what:28s} rss {kb / 1024:6.1f} MB  {grown / 1024:+6.1f} MB  "
                f"{grown / interfaces:5.1f} KB an interface, {grown / args.pairs:5.1f} KB a pair")

    print(f"{'before':28s} rss {before / 1024:6.1f} MB  fds {len(os.listdir(f'/proc/{pid}/fd'))}")
    add_pairs(ns, args.pairs, master="br0" if args.bridge else "")
    time.sleep(args.hold)
    print(line(f"with {args.pairs} pairs, {args.hold:.0f} s", rss_kb(pid)), flush=True)
    delete_pairs(ns, args.pairs)
    time.sleep(35)      # MemoryTrim runs at most every 30 s
    print(line("deleted, after the trim", rss_kb(pid)), flush=True)
    time.sleep(args.later)
    print(line(f"{args.later:.0f} s later", rss_kb(pid)))
    print(f"peak rss {proc_memory_kb(pid)[1] / 1024:.1f} MB, datagrams {drain.datagrams}")
    drain.stop = True


def bench_churn(args, factory: AgentFactory, ns: Namespace) -> None:
    r = Receiver(udp_socket("127.0.0.1", ns.name))
    drain = Drain(r)
    drain.start()
    agent = factory(config_text([("127.0.0.1", r.port)], polling=5,
                                extra="pcap { dev.pattern = ^ct sampling = 100 }\npcap { speed = 1G- }"),
                    netns=ns.name)
    time.sleep(3)
    pid = agent.pid
    print(f"start               {figures(pid)}")
    t0 = time.monotonic()

    def after(kind, batch):
        def show(done):
            if (done + batch) % args.report == 0:
                print(f"{kind} {done + batch:5d}        {figures(pid)}", flush=True)
        return show

    churn(ns, args.pairs, 50, between=lambda d: (time.sleep(0.1), after("veth pairs", 50)(d)))
    churn_taps(ns, args.taps, 50, between=lambda d: (time.sleep(1.0), after("taps      ", 50)(d)))
    took = time.monotonic() - t0
    time.sleep(5)
    print(f"end (5 s later)     {figures(pid)}")
    c0 = proc_cpu_seconds(pid)
    time.sleep(5)
    print(f"idle CPU after: {(proc_cpu_seconds(pid) - c0) / 5 * 100:.2f} % of one core; "
          f"churn took {took:.0f} s")
    drain.stop = True


def bench_sampling(args, factory: AgentFactory, ns: Namespace) -> None:
    peer = Namespace()
    try:
        veth(ns, "vh", peer, "vp", "10.231.40.1/24", "10.231.40.2/24")
        sink = ns.popen([sys.executable, "-c", SINK])
        r = Receiver(udp_socket("127.0.0.1", ns.name))
        drain = Drain(r)
        drain.start()
        agent = factory(config_text([("127.0.0.1", r.port)], polling=30,
                                    extra="pcap { dev = vh sampling = 1 }"), netns=ns.name)
        time.sleep(2)
        seconds = int(args.minutes * 60)
        sender = peer.popen([sys.executable, "-c", SENDER, "10.231.40.1", "9999",
                             str(args.pps * seconds), str(args.pps), "hsflowd-bench"])
        pid = agent.pid
        print(f"minute   0  {figures(pid)}", flush=True)
        c0, t0 = proc_cpu_seconds(pid), time.monotonic()
        for minute in range(1, int(args.minutes) + 1):
            time.sleep(60)
            cpu = (proc_cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
            print(f"minute {minute:3d}  {figures(pid)}  CPU {cpu:.1f} %  datagrams {drain.datagrams}",
                  flush=True)
        sender.kill()
        drain.stop = True
        sink.kill()
    finally:
        peer.delete()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=["veths", "churn", "sampling"])
    p.add_argument("--pairs", type=int, help="veths: 500, churn: 1000")
    p.add_argument("--bridge", action="store_true")
    p.add_argument("--hold", type=float, default=60)
    p.add_argument("--later", type=float, default=120)
    p.add_argument("--polling", type=int, default=20)
    p.add_argument("--taps", type=int, default=500)
    p.add_argument("--report", type=int, default=100)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--pps", type=int, default=20000)
    args = p.parse_args()
    if not is_root():
        sys.exit("needs root (network namespaces)")
    factory = AgentFactory()
    ns = Namespace()
    try:
        if args.scenario == "veths":
            args.pairs = args.pairs or 500
            bench_veths(args, factory, ns)
        elif args.scenario == "churn":
            args.pairs = args.pairs or 1000
            bench_churn(args, factory, ns)
        else:
            bench_sampling(args, factory, ns)
    finally:
        factory.close()
        ns.delete()


if __name__ == "__main__":
    main()
