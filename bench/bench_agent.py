"""The running agent's cost: CPU time, resident memory and time to the first datagram.

    sudo python3 bench/bench_agent.py [--seconds N] [--veths N] [--starts N] [--only NAME ...]

Each scenario starts ``python3 -m hsflowd -d`` as a real process with its own config file,
sending to a UDP socket of this script; the agent's CPU time is utime+stime from
/proc/PID/stat, its memory VmRSS and VmHWM (peak) from /proc/PID/status.  CPU is measured
over the window that starts once the first datagram has arrived (start-up is reported on
its own), so "% of one core" is the steady cost.

Scenarios (``--only`` picks some):
  polling1      host sample every second, this namespace
  polling30     the default polling=30, this namespace
  veth          polling=30 inside a test namespace holding N veth pairs (peers in the same
                namespace; the N "vb*" ends are ports of bridge "brb"), no pcap block
  veth-pcap     the same plus ``pcap { dev.pattern = ^brb$ }``: the bridge is tapped and
                its N ports polled (a pattern never selects a veth itself: as in hsflowd,
                pattern and speed matches skip veths, so the bridge is what selects them)
  veth-pcap1    veth-pcap at polling=1 (N interface samples a second)
  veth-tap1     polling=30 with ``pcap { dev = vp0 }``: one tapped veth among the 2N+1
                links (what a packet sampler costs when the host has many links)
  first         time from process start to the first datagram, and from SIGTERM to the
                process's exit, medians of --starts starts

Goals: under 0.5% of one core and under 40 MB resident at polling=30; the first datagram
within 1 s; gone within 1 s of SIGTERM.  The figures are printed; nothing is asserted.  Namespaces need root.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from counting import Counting  # noqa: E402
from agentproc import (AgentProcess, Receiver, config_text,  # noqa: E402
                       proc_cpu_seconds, proc_memory_kb, udp_socket)
from netns import Namespace, is_root  # noqa: E402

GOAL_CPU_PERCENT = 0.5
GOAL_RSS_MB = 40.0
GOAL_FIRST_S = 1.0
GOAL_STOP_S = 1.0


def veth_namespace(count: int) -> Namespace:
    """A namespace with ``count`` veth pairs vbI/vpI, the vb ends in bridge brb, all up,
    and an address for the agent (on brb).  Made with one `ip -batch`."""
    ns = Namespace()
    lines = ["link add brb type bridge"]
    for i in range(count):
        lines.append(f"link add vb{i} type veth peer name vp{i}")
        lines.append(f"link set vb{i} master brb")
    for i in range(count):
        lines.append(f"link set vb{i} up")
        lines.append(f"link set vp{i} up")
    lines += ["link set brb up", "address add 10.250.0.1/24 dev brb"]
    batch = "\n".join(lines) + "\n"
    try:
        ns.run(["ip", "-batch", "-"], input=batch)
    except BaseException:
        ns.delete()
        raise
    return ns


def measure(name: str, config_extra: str, polling: int, seconds: float, workdir: str,
            ns: Namespace = None) -> dict:
    sock = udp_socket(netns=ns.name if ns else None)
    receiver = Receiver(sock)
    counting = Counting(receiver)
    agent = AgentProcess(workdir, config_text([("127.0.0.1", receiver.port)], polling=polling,
                                              extra=config_extra),
                         name=name, netns=ns.name if ns else None)
    result = {"name": name, "polling": polling}
    try:
        agent.start()
        if not counting.first.wait(10.0):
            result["error"] = "no datagram within 10 s: " + agent.stderr()[-500:]
            return result
        result["first_s"] = counting.first_at - agent.started
        cpu0 = proc_cpu_seconds(agent.pid)
        t0 = time.monotonic()
        result["startup_cpu_s"] = cpu0
        time.sleep(seconds)
        cpu1 = proc_cpu_seconds(agent.pid)
        t1 = time.monotonic()
        rss, hwm = proc_memory_kb(agent.pid)
        result.update(window_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_kb=rss, hwm_kb=hwm,
                      datagrams=counting.datagrams, samples=counting.samples,
                      if_sources=len([s for s in counting.sources if s[0] == 0]),
                      alive=agent.alive())
    finally:
        agent.stop()
        counting.close()
        receiver.close()
    return result


def first_datagram(starts: int, workdir: str) -> tuple:
    """(seconds to the first datagram, seconds from SIGTERM to exit), one of each a start."""
    times, stops = [], []
    for i in range(starts):
        receiver = Receiver(udp_socket())
        agent = AgentProcess(workdir, config_text([("127.0.0.1", receiver.port)], polling=None),
                             name=f"first{i}")
        try:
            agent.start()
            r = receiver.first(10.0)
            times.append(r.at - agent.started if r else float("inf"))
            receiver.first(2.0)               # past start-up: a second tick
            t = time.monotonic()
            agent.signal(signal.SIGTERM)
            stops.append(time.monotonic() - t if agent.wait(10.0) is not None else float("inf"))
        finally:
            agent.stop()
            receiver.close()
    return times, stops


def show(result: dict, goals: bool) -> None:
    name = result["name"]
    if "error" in result:
        print(f"{name:<12} ERROR {result['error']}")
        return
    pct = 100.0 * result["cpu_s"] / result["window_s"]
    rss_mb, hwm_mb = result["rss_kb"] / 1024, result["hwm_kb"] / 1024
    line = (f"{name:<12} polling={result['polling']:<3} cpu {result['cpu_s']:7.3f} s over "
            f"{result['window_s']:5.1f} s = {pct:6.3f} % of one core   RSS {rss_mb:5.1f} MB  "
            f"peak {hwm_mb:5.1f} MB   start-up cpu {result['startup_cpu_s']:.2f} s, first "
            f"datagram {result['first_s'] * 1000:.0f} ms   {result['datagrams']} datagrams, "
            f"{result['samples']} samples, {result['if_sources']} interface sources")
    if not result["alive"]:
        line += "   (agent DIED)"
    print(line)
    if goals:
        print(f"{'':<12} goal < {GOAL_CPU_PERCENT} % of one core: "
              f"{'met' if pct < GOAL_CPU_PERCENT else 'MISSED'};  goal < {GOAL_RSS_MB:.0f} MB "
              f"resident: {'met' if max(rss_mb, hwm_mb) < GOAL_RSS_MB else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="measurement window per scenario (default 60)")
    ap.add_argument("--veths", type=int, default=200, help="veth pairs for the veth scenarios")
    ap.add_argument("--starts", type=int, default=5, help="starts for the first-datagram median")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds to let a new namespace settle (IPv6 DAD on every new link "
                    "makes a burst of netlink address events) before an agent starts there")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    choices=["polling1", "polling30", "veth", "veth-pcap", "veth-pcap1",
                             "veth-tap1", "first"],
                    help="run only these scenarios")
    args = ap.parse_args()
    wanted = set(args.only or ["polling1", "polling30", "veth", "veth-pcap", "veth-pcap1",
                               "veth-tap1", "first"])

    import psutil
    print(f"Python {platform.python_version()}, psutil {psutil.__version__}, "
          f"{os.cpu_count()} CPUs, kernel {platform.release()}; window {args.seconds:g} s")
    with tempfile.TemporaryDirectory(prefix="bench_agent.") as workdir:
        if "polling1" in wanted:
            show(measure("polling1", "", 1, args.seconds, workdir), goals=False)
        if "polling30" in wanted:
            show(measure("polling30", "", 30, args.seconds, workdir), goals=True)
        veth_wanted = wanted & {"veth", "veth-pcap", "veth-pcap1", "veth-tap1"}
        if veth_wanted:
            if not is_root():
                print("veth scenarios skipped: namespaces need root")
            else:
                t = time.monotonic()
                ns = veth_namespace(args.veths)
                print(f"namespace {ns.name}: {args.veths} veth pairs in bridge brb, made in "
                      f"{time.monotonic() - t:.1f} s; settling for {args.settle:g} s")
                time.sleep(args.settle)
                try:
                    pcap = "pcap { dev.pattern = ^brb$ }"
                    if "veth" in veth_wanted:
                        show(measure("veth", "", 30, args.seconds, workdir, ns), goals=True)
                    if "veth-pcap" in veth_wanted:
                        show(measure("veth-pcap", pcap, 30, args.seconds, workdir, ns), goals=True)
                    if "veth-pcap1" in veth_wanted:
                        show(measure("veth-pcap1", pcap, 1, args.seconds, workdir, ns), goals=False)
                    if "veth-tap1" in veth_wanted:
                        show(measure("veth-tap1", "pcap { dev = vp0 }", 30, args.seconds,
                                     workdir, ns), goals=True)
                finally:
                    ns.delete()
        if "first" in wanted:
            times, stops = first_datagram(args.starts, workdir)
            for what, got, goal in (("from process start to the first datagram", times,
                                     GOAL_FIRST_S),
                                    ("from SIGTERM to the process's exit", stops, GOAL_STOP_S)):
                med = statistics.median(got)
                print(f"{'first':<12} time {what}: median {med * 1000:.0f} ms of {len(got)} "
                      f"starts ({', '.join(f'{t * 1000:.0f}' for t in got)} ms); goal < "
                      f"{goal:g} s: {'met' if med < goal else 'MISSED'}")


if __name__ == "__main__":
    main()
