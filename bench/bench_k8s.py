"""k8s {}'s cost: 100 idle pods, the agent with and without k8s {}, at polling=30 and
polling=10: its CPU, its resident memory, and the containerd API calls it makes a minute.

    sudo python3 bench/bench_k8s.py [--pods N] [--seconds S] [--polling 30 10]

A containerd of the benchmark's own (tests/containerd_tools.py: private socket, root and
state) runs N pods as the kubelet makes them: a sandbox and one container, each a busybox
that only sleeps, sharing a network namespace with a veth on a bridge.  Each scenario
starts the agent as a real process, waits until every pod has been reported (with k8s {})
or the first datagram (without), then measures over the window: CPU (utime+stime of
/proc/PID/stat) as % of one core, VmRSS and VmHWM, the datagrams and 3:N samples received,
and containerd API calls as the module counts them (``hsflowd status``): at start (the
version, the event stream and the first list) and a minute over the window (lists every
refreshVMs, a spec fetched per container started).  The figures are printed; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from agentproc import (AgentProcess, Receiver, agent_env, config_text, hsflowd,  # noqa: E402
                       proc_cpu_seconds, proc_memory_kb, udp_socket)
from counting import Counting  # noqa: E402
import containerd_tools as ct  # noqa: E402


def module_calls(agent: AgentProcess) -> Optional[int]:
    proc = subprocess.run(hsflowd("status", "--json", "-p", str(agent.pidfile)),
                          capture_output=True, text=True, env=agent_env(), timeout=10)
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        return None
    for m in state.get("modules", []):
        if m.get("name") == "k8s" and "k8s" in m:
            return m["k8s"]["api_calls"]["total"]
    return None


def measure(ctd, pods: int, polling: int, with_k8s: bool, seconds: float, workdir: str) -> Dict:
    receiver = Receiver(udp_socket())
    counting = Counting(receiver)
    extra = f"k8s {{ unixsock = {ctd.socket} }}" if with_k8s else ""
    name = f"{'k8s' if with_k8s else 'plain'}{polling}"
    agent = AgentProcess(workdir, config_text([("127.0.0.1", receiver.port)], polling=polling,
                                              extra=extra), name=name)
    result = {"name": name, "polling": polling, "k8s": with_k8s}
    try:
        agent.start()
        deadline = time.monotonic() + max(2.5 * polling, 20)
        while time.monotonic() < deadline:
            if (counting.guests >= pods) if with_k8s else counting.datagrams:
                break
            time.sleep(0.2)
        result["reported"] = counting.guests
        result["ready_s"] = time.monotonic() - agent.started
        calls0 = module_calls(agent) if with_k8s else 0
        cpu0, t0, dg0, vs0 = proc_cpu_seconds(agent.pid), time.monotonic(), \
            counting.datagrams, counting.virt_samples
        time.sleep(seconds)
        cpu1, t1 = proc_cpu_seconds(agent.pid), time.monotonic()
        calls1 = module_calls(agent) if with_k8s else 0
        rss, hwm = proc_memory_kb(agent.pid)
        result.update(window_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_kb=rss, hwm_kb=hwm,
                      datagrams=counting.datagrams - dg0,
                      virt_samples=counting.virt_samples - vs0, calls_start=calls0,
                      calls_window=(calls1 - calls0) if None not in (calls0, calls1) else None,
                      threads=len(os.listdir(f"/proc/{agent.pid}/task")),
                      fds=len(os.listdir(f"/proc/{agent.pid}/fd")), alive=agent.alive())
    finally:
        agent.stop()
        counting.close()
        receiver.close()
    return result


def show(r: Dict) -> None:
    minutes = r["window_s"] / 60
    pct = 100.0 * r["cpu_s"] / r["window_s"]
    calls = "-" if r["calls_window"] is None else \
        f"{r['calls_start']} at start, {r['calls_window'] / minutes:4.1f}/min"
    print(f"{r['name']:<8} polling={r['polling']:<3} k8s {'on ' if r['k8s'] else 'off'} "
          f"cpu {pct:6.3f} % of one core   RSS {r['rss_kb'] / 1024:5.1f} MB (peak "
          f"{r['hwm_kb'] / 1024:5.1f})   containerd API calls: {calls}   "
          f"{r['virt_samples']} pod samples ({r['reported']} pods reported, ready in "
          f"{r['ready_s']:.1f} s), {r['datagrams']} datagrams, {r['threads']} threads, "
          f"{r['fds']} fds" + ("" if r["alive"] else "   (agent DIED)"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=120.0,
                    help="measurement window per scenario (default 120: two refreshVMs)")
    ap.add_argument("--polling", type=int, nargs="+", default=[30, 10])
    args = ap.parse_args()
    why = ct.why_not()
    if why:
        print(f"bench_k8s: skipped: {why}")
        return
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, kernel "
          f"{platform.release()}; {args.pods} idle pods (a sandbox and a container each), "
          f"window {args.seconds:g} s")
    ctd = ct.Containerd()
    node = None
    try:
        ctd.start()
        node = ct.Node(f"hsftb{os.getpid() % 10000}")
        t = time.monotonic()
        for i in range(args.pods):
            node.make_pod(ctd, f"pod-{i}", "bench")
        print(f"{args.pods} pods started in {time.monotonic() - t:.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_k8s.") as workdir:
            os.chmod(workdir, 0o755)
            results: List[Dict] = []
            for polling in args.polling:
                for with_k8s in (False, True):
                    r = measure(ctd, args.pods, polling, with_k8s, args.seconds, workdir)
                    show(r)
                    results.append(r)
    finally:
        if node is not None:
            node.close(ctd)
        ctd.stop()


if __name__ == "__main__":
    main()
