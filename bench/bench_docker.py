"""docker {}'s cost: 50 idle containers, the agent with and without docker {}, at polling=30
and polling=10: its CPU, its resident memory, and the Docker API calls it makes a minute.

    sudo python3 bench/bench_docker.py [--containers N] [--seconds S] [--polling 30 10]

A dockerd of the benchmark's own (tests/docker_tools.py: private socket, data and bridge,
``--debug``) runs N busybox containers that only sleep.  Each scenario starts the agent as
a real process (pointed at that dockerd with DOCKER_HOST), waits until every container has
been reported (with docker {}) or the first datagram (without), then measures over the
window: CPU (utime+stime of /proc/PID/stat) as % of one core, VmRSS and VmHWM, the
datagrams and 3:N samples received, and the API calls, counted twice: by the module
(``hsflowd status``) and by dockerd's own debug log ("Calling GET ...", the agent being its
only client during the window).  The figures are printed; nothing is asserted.
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

from counting import Counting  # noqa: E402
from agentproc import (AgentProcess, Receiver, agent_env, config_text,  # noqa: E402
                       hsflowd, proc_cpu_seconds, proc_memory_kb,
                       udp_socket)
import docker_tools  # noqa: E402


def api_calls_logged(log_path: str, offset: int) -> (int, int):
    """How many API requests dockerd's debug log shows after ``offset``; the new offset."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return data.count(b'msg="Calling '), offset + len(data)


def module_calls(agent: AgentProcess) -> Optional[int]:
    proc = subprocess.run(hsflowd("status", "--json", "-p", str(agent.pidfile)),
                          capture_output=True, text=True, env=agent_env(), timeout=10)
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        return None
    for m in state.get("modules", []):
        if m.get("name") == "docker":
            return m["docker"]["api_calls"]["total"]
    return None


def measure(dockerd, containers: int, polling: int, with_docker: bool, seconds: float,
            workdir: str) -> Dict:
    receiver = Receiver(udp_socket())
    counting = Counting(receiver)
    extra = "docker { }" if with_docker else ""
    name = f"{'docker' if with_docker else 'plain'}{polling}"
    agent = AgentProcess(workdir, config_text([("127.0.0.1", receiver.port)], polling=polling,
                                              extra=extra),
                         name=name, env={"DOCKER_HOST": dockerd.url})
    result = {"name": name, "polling": polling, "docker": with_docker}
    try:
        agent.start()
        deadline = time.monotonic() + max(2.5 * polling, 15)
        while time.monotonic() < deadline:
            if (counting.guests >= containers) if with_docker else counting.datagrams:
                break
            time.sleep(0.2)
        result["reported"] = counting.guests
        result["ready_s"] = time.monotonic() - agent.started
        calls0 = module_calls(agent) if with_docker else 0
        _, offset = api_calls_logged(dockerd.log, 0)
        cpu0, t0, dg0, vs0 = proc_cpu_seconds(agent.pid), time.monotonic(), \
            counting.datagrams, counting.virt_samples
        time.sleep(seconds)
        cpu1, t1 = proc_cpu_seconds(agent.pid), time.monotonic()
        logged, _ = api_calls_logged(dockerd.log, offset)
        calls1 = module_calls(agent) if with_docker else 0
        rss, hwm = proc_memory_kb(agent.pid)
        threads = len(os.listdir(f"/proc/{agent.pid}/task"))
        fds = len(os.listdir(f"/proc/{agent.pid}/fd"))
        result.update(window_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_kb=rss, hwm_kb=hwm,
                      datagrams=counting.datagrams - dg0,
                      virt_samples=counting.virt_samples - vs0,
                      calls_module=(calls1 - calls0) if calls0 is not None and calls1 is not None
                      else None, calls_logged=logged, threads=threads, fds=fds,
                      alive=agent.alive())
    finally:
        agent.stop()
        counting.close()
        receiver.close()
    return result


def sample_cost(dockerd, rounds: int = 20) -> float:
    """Seconds of CPU one container's counter sample costs, measured in this process: its
    cgroup files and /proc/PID/net/dev read and parsed, its records built and encoded (what
    the module does per container per poll), over every container, ``rounds`` times."""
    from hsflowd.sflow import CountersSample
    from hsflowd.sources import cgroups, vnic
    from hsflowd.virt.records import DiskIo, GuestReading, NetIo, guest_records
    mounts = cgroups.read_mounts()
    client = dockerd.client()
    pids = [client.inspect_container(c["Id"])["State"]["Pid"] for c in client.containers()]
    groups = [(pid, cgroups.Cgroup.of_process(pid, mounts)) for pid in pids]
    t0 = time.process_time()
    for _ in range(rounds):
        for pid, cg in groups:
            k = cg.read()
            net = vnic.sum_net_dev(vnic.read_net_dev(pid))
            records = guest_records(GuestReading(
                hostname="x", uuid=bytes(16), cpu_ns=k.cpu_ns, memory=k.memory or 0,
                max_memory=k.memory_limit or 0, disk=DiskIo(rd_bytes=k.rd_bytes),
                net=NetIo(**net._asdict())))
            CountersSample(sequence_number=1, source_id_type=3, source_id_index=100000,
                           counters=records).encode()
    return (time.process_time() - t0) / (rounds * len(groups))


def show(r: Dict) -> None:
    minutes = r["window_s"] / 60
    pct = 100.0 * r["cpu_s"] / r["window_s"]
    module = "-" if r["calls_module"] is None else f"{r['calls_module'] / minutes:5.1f}"
    print(f"{r['name']:<9} polling={r['polling']:<3} docker {'on ' if r['docker'] else 'off'} "
          f"cpu {pct:6.3f} % of one core   RSS {r['rss_kb'] / 1024:5.1f} MB (peak "
          f"{r['hwm_kb'] / 1024:5.1f})   API calls/min: module {module}, dockerd log "
          f"{r['calls_logged'] / minutes:5.1f}   {r['virt_samples']} container samples "
          f"({r['reported']} containers reported, ready in {r['ready_s']:.1f} s), "
          f"{r['datagrams']} datagrams, {r['threads']} threads, {r['fds']} fds"
          + ("" if r["alive"] else "   (agent DIED)"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0,
                    help="measurement window per scenario (default 120: two refreshVMs)")
    ap.add_argument("--polling", type=int, nargs="+", default=[30, 10])
    args = ap.parse_args()
    why = docker_tools.why_not()
    if why:
        print(f"bench_docker: skipped: {why}")
        return
    import docker
    import psutil
    print(f"Python {platform.python_version()}, docker-py {docker.__version__}, psutil "
          f"{psutil.__version__}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
          f"{args.containers} idle containers, window {args.seconds:g} s")
    dockerd = docker_tools.Dockerd(debug=True)
    try:
        dockerd.start()
        dockerd.import_busybox()
        t = time.monotonic()
        for i in range(args.containers):
            dockerd.run(f"{dockerd.tag}-{i}")
        print(f"{args.containers} containers started in {time.monotonic() - t:.1f} s")
        cost = sample_cost(dockerd)
        print(f"one container's counter sample costs {cost * 1000:.2f} ms of CPU (cgroup and "
              f"net/dev reads, records, encoding): {args.containers} containers at polling "
              + ", ".join(f"{p} = {100 * cost * args.containers / p:.2f} % of one core"
                          for p in args.polling), flush=True)
        dockerd.client().close()
        with tempfile.TemporaryDirectory(prefix="bench_docker.") as workdir:
            os.chmod(workdir, 0o755)
            results: List[Dict] = []
            for polling in args.polling:
                for with_docker in (False, True):
                    r = measure(dockerd, args.containers, polling, with_docker, args.seconds,
                                workdir)
                    show(r)
                    results.append(r)
    finally:
        dockerd.stop()


if __name__ == "__main__":
    main()
