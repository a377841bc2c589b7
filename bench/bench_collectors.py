"""Many collectors: the agent's CPU, log and memory with 1, 1,000 and 10,000 of them.

    sudo python3 bench/bench_collectors.py [--counts 1 1000 10000] [--first 10] [--steady 10]
                                           [--polling 1] [--listeners 5]

Each case starts ``python3 -m hsflowd -d`` as a real process whose config has COUNT
``collector { ip = 127.0.0.1 udpport = P }`` blocks, P running over loopback ports where
nothing listens (from 20000 up, below the ephemeral range, skipping ports in use).  Two
cases per count:

  refused    nothing listens on any of them: every datagram to every collector comes back
             as an ICMP port unreachable (ECONNREFUSED on the agent's error queue)
  listening  the same, with a UDP socket of this script on ``--listeners`` of the ports
             (the first, the last and some between), counting what arrives: delivery is
             proven, and compared with what ``hsflowd status`` says the agent sent them

Printed per case: CPU seconds (utime+stime, /proc/PID/stat) used from exec to ``--first``
seconds; CPU per second over the ``--steady`` seconds after that; the log lines the agent
wrote in that time (and how many of them tell of refusals); VmRSS and VmHWM; and from the
status socket at the end, how many collectors were sent datagrams and their error count.
In the listening case, also the time from exec to the first datagram at the first and at
the last listener (the last collector in the config is sent to last), and the start's CPU:
from exec to that first datagram at the last listener, plus ``--settle`` seconds.

Goal (issue 20): with 10,000 collectors, that start under 1 s of CPU, and about one log
line a minute for a steady state of refusals.  The figures are printed; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import selectors
import socket
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from agentproc import AgentProcess, config_text, proc_cpu_seconds, proc_memory_kb  # noqa: E402

FIRST_PORT = 20000
GOAL_CPU_S = 1.0


def ports_in_use() -> set:
    """Local UDP ports bound on this host now (/proc/net/udp and udp6)."""
    used = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    used.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return used


def free_ports(count: int) -> List[int]:
    used = ports_in_use()
    ports = [p for p in range(FIRST_PORT, 32768) if p not in used][:count]
    if len(ports) < count:
        raise SystemExit(f"only {len(ports)} free ports from {FIRST_PORT} below 32768")
    return ports


class Listeners:
    """UDP sockets on some of the collectors' ports, read by one thread that counts the
    datagrams each gets and when the first came."""

    def __init__(self, ports: List[int]):
        self.socks: Dict[int, socket.socket] = {}
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind(("127.0.0.1", port))
            s.setblocking(False)
            self.socks[port] = s
        self.counts = {port: 0 for port in ports}
        self.first: Dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for port, s in self.socks.items():
            sel.register(s, selectors.EVENT_READ, port)
        while not self.stop.is_set():
            for key, _ in sel.select(0.2):
                while True:
                    try:
                        key.fileobj.recv(65535)
                    except BlockingIOError:
                        break
                    self.counts[key.data] += 1
                    self.first.setdefault(key.data, time.monotonic())
        sel.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks.values():
            s.close()


class CpuTrace:
    """The agent's CPU seconds every 20 ms, read by a thread: what it had used at a moment
    found afterwards (when the last listener's first datagram came)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: List[tuple] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), proc_cpu_seconds(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return
            self.stop.wait(0.02)

    def at(self, t: float) -> Optional[float]:
        """CPU seconds at the first sample at or after ``t``."""
        return next((cpu for when, cpu in self.samples if when >= t), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def status(agent: AgentProcess) -> Optional[dict]:
    from hsflowd.control import control_path, query
    try:
        return query(control_path(str(agent.pidfile)), timeout=10.0)
    except (OSError, ValueError):
        return None


def sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def measure(count: int, listening: int, args, workdir: str) -> dict:
    ports = free_ports(count)
    picked = sorted({ports[round(i * (count - 1) / max(listening - 1, 1))]
                     for i in range(listening)}) if listening else []
    listeners = Listeners(picked) if picked else None
    name = f"c{count}{'l' if listening else 'r'}"
    agent = AgentProcess(workdir, config_text([("127.0.0.1", p) for p in ports],
                                              polling=args.polling), name=name)
    result = {"count": count, "listening": len(picked)}
    trace = None
    try:
        agent.start()
        trace = CpuTrace(agent.pid)
        sleep_until(agent.started + args.first)
        if not agent.alive():
            result["error"] = "the agent died: " + agent.stderr()[-500:]
            return result
        cpu0 = proc_cpu_seconds(agent.pid)
        t0 = time.monotonic()
        sleep_until(t0 + args.steady)
        cpu1 = proc_cpu_seconds(agent.pid)
        t1 = time.monotonic()
        rss, hwm = proc_memory_kb(agent.pid)
        log = agent.stderr().splitlines()
        result.update(first_cpu=cpu0, steady=(cpu1 - cpu0) / (t1 - t0), rss_kb=rss, hwm_kb=hwm,
                      log_lines=len(log), refusal_lines=sum("ECONNREFUSED" in l for l in log),
                      seconds=t1 - agent.started)
        s = status(agent)
        time.sleep(0.1)           # what was sent before the answer, read by the listeners
        got = dict(listeners.counts) if listeners is not None else {}
        if s is not None:
            cs = s["collectors"]
            result.update(sent_to=sum(1 for c in cs if c["datagrams"] > 0),
                          errors=sum(c["errors"] for c in cs),
                          failing=sum(1 for c in cs if c["errors"] > 0))
            if listeners is not None:
                by_port = {c["port"]: c["datagrams"] for c in cs}
                result["delivered"] = [(got[p], by_port.get(p)) for p in picked]
        if listeners is not None:
            result["first_at"] = [listeners.first.get(p, float("inf")) - agent.started
                                  for p in (picked[0], picked[-1])]
            last = listeners.first.get(picked[-1])
            if last is not None:
                result["start_cpu"] = trace.at(last + args.settle)
    finally:
        agent.stop()
        if trace is not None:
            trace.close()
        if listeners is not None:
            listeners.close()
    return result


def show(r: dict, args) -> None:
    case = f"{r['count']:>6} collectors, " + (f"{r['listening']} listening" if r["listening"]
                                                 else "none listening")
    if "error" in r:
        print(f"{case}: ERROR {r['error']}")
        return
    print(f"{case:<36} cpu {r['first_cpu']:6.2f} s in the first {args.first:g} s, then "
          f"{r['steady'] * 1000:6.1f} ms/s;  {r['log_lines']:>6} log lines "
          f"({r['refusal_lines']} of refusals) in {r['seconds']:.0f} s;  RSS "
          f"{r['rss_kb'] / 1024:5.1f} MB (peak {r['hwm_kb'] / 1024:5.1f})")
    if "sent_to" in r:
        print(f"{'':<36} status: {r['sent_to']} of {r['count']} collectors sent to, "
              f"{r['failing']} with errors, {r['errors']} errors")
    if "delivered" in r:
        pairs = ", ".join(f"{got}/{sent}" for got, sent in r["delivered"])
        print(f"{'':<36} received/sent at the listeners: {pairs};  first datagram at the "
              f"first listener {r['first_at'][0] * 1000:.0f} ms, at the last "
              f"{r['first_at'][1] * 1000:.0f} ms after exec")
    if r.get("start_cpu") is not None:
        print(f"{'':<36} start: cpu {r['start_cpu']:.2f} s from exec to the first datagram at "
              f"the last collector and {args.settle:g} s after"
              + (f";  goal < {GOAL_CPU_S:g} s: {'met' if r['start_cpu'] < GOAL_CPU_S else 'MISSED'}"
                 if r["count"] >= 10000 else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 1000, 10000])
    ap.add_argument("--first", type=float, default=10.0,
                    help="seconds from exec over which start-up CPU is measured (default 10)")
    ap.add_argument("--steady", type=float, default=10.0,
                    help="seconds of steady running measured after that (default 10)")
    ap.add_argument("--polling", type=int, default=1, help="polling= (default 1: a host "
                    "counter sample, so a datagram to every collector, every second)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of steady running counted in the start (default 3)")
    ap.add_argument("--listeners", type=int, default=5,
                    help="listening ports in the second case of each count (default 5)")
    args = ap.parse_args()
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, kernel "
          f"{platform.release()}; polling={args.polling}, first {args.first:g} s, "
          f"steady {args.steady:g} s")
    with tempfile.TemporaryDirectory(prefix="bench_collectors.") as workdir:
        os.chmod(workdir, 0o755)     # the agent, nobody once started, reads what is there
        for count in args.counts:
            show(measure(count, 0, args, workdir), args)
            show(measure(count, min(args.listeners, count), args, workdir), args)


if __name__ == "__main__":
    main()
