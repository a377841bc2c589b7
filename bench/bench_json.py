"""json { } throughput: applications' JSON messages per second on one core.

    sudo python3 bench/bench_json.py [--seconds S]

1. In-process: JsonModule.handle() on each kind of message (parse, records, encode), with
   the sample handed to a list: microseconds per message and messages/s.
2. The agent as a real process, pinned to one core (taskset), in a test namespace: a
   client pinned to the other core floods its loopback port with rtmetric messages (and
   then with transactions) for S seconds; the collector counts what comes out, the agent's
   CPU time is read from /proc.  Messages/s at the collector while the agent uses its core.

Figures only, no asserts.  The namespace and every process are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
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

from agentproc import (AgentFactory, Receiver, free_udp_port, proc_cpu_seconds,  # noqa: E402
                       udp_socket)
from hsflowd.config import parse_config  # noqa: E402
from hsflowd.modules import Context  # noqa: E402
from hsflowd.modules.jsonapp import JsonModule  # noqa: E402
from hsflowd.sflow import CountersSample, FlowSample, RtMetric  # noqa: E402
from netns import Namespace, veth  # noqa: E402

RTMETRIC = {"rtmetric": {"datasource": "web1",
                         "hits": {"type": "counter32", "value": 777},
                         "conns": {"type": "gauge32", "value": 12},
                         "load": {"type": "gaugeFloat", "value": 0.5},
                         "ver": {"type": "string", "value": "2.1.0"}}}
RTFLOW = {"rtflow": {"datasource": "web1", "sampling_rate": 10,
                     "src": {"type": "ip", "value": "10.1.2.3"},
                     "uri": {"type": "string", "value": "/index.html"},
                     "bytes": {"type": "int64", "value": 12345}}}
TRANSACTION = {"flow_sample": {"app_name": "shop", "service_port": 8080, "sampling_rate": 1,
                               "app_operation": {"operation": "checkout", "attributes": "cart=3",
                                                 "status_descr": "ok", "status": 0,
                                                 "req_bytes": 100, "resp_bytes": 2000,
                                                 "uS": 1500},
                               "extended_socket_ipv4": {"protocol": 6, "local_ip": "10.0.0.1",
                                                        "remote_ip": "10.0.0.2",
                                                        "local_port": 8080,
                                                        "remote_port": 40000}}}
COUNTERS = {"counter_sample": {"app_name": "shop", "service_port": 8080,
                               "app_operations": {"success": 10, "not_found": 2},
                               "app_resources": {"mem_used": 2 ** 33, "fd_open": 12},
                               "app_workers": {"workers_active": 3, "workers_max": 8}}}
KINDS = [("rtmetric (4 metrics)", RTMETRIC), ("rtflow (3 fields)", RTFLOW),
         ("flow_sample, every one sampled", TRANSACTION),
         ("flow_sample, 1 in 100 sampled", TRANSACTION), ("counter_sample", COUNTERS),
         ("bad JSON", b'{"rtmetric": {"x": ')]

CLIENT = r"""
import socket, sys, time
port, seconds, data = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
end, sent = time.perf_counter() + seconds, 0
while time.perf_counter() < end:
    for _ in range(200):
        try:
            s.sendto(data, ("127.0.0.1", port))
            sent += 1
        except OSError:
            pass
print(sent)
"""


def in_process(rounds: int = 20000):
    print("1. in-process JsonModule.handle(), one core")
    logging.getLogger("hsflowd").setLevel(logging.ERROR)     # the bad-JSON case logs
    for name, msg in KINDS:
        sent = []
        ctx = Context("json", lambda *a: object(), lambda t: None, lambda s: None, sent.append,
                      lambda i: {}, None, None)
        module = JsonModule(ctx, rng=random.Random(1))
        extra = "sampling = 100" if "1 in 100" in name else "sampling = 1"
        module.config = parse_config(f"sflow {{\n collector {{ ip = 192.0.2.1 }}\n {extra}\n"
                                     " json { udpport = 36343 }\n}\n")
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        module.handle(data, 0.0)
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for _ in range(rounds):
                module.handle(data, 0.0)
            best = min(best, (time.process_time() - start) / rounds)
        print(f"   {name:32s} {len(data):4d} bytes  {best * 1e6:6.1f} us/message  "
              f"{1 / best:9,.0f} messages/s")


def samples_in(received, cls, kind=None):
    n = 0
    for r in received:
        for s in r.datagram.samples:
            if isinstance(s, cls) and (kind is None or getattr(s, "source_id_type", 3) == 3):
                n += 1
    return n


def agent_process(seconds: float):
    ncpu = os.cpu_count() or 1
    print(f"2. the agent as a process on one core (taskset), flooded for {seconds:.0f} s by a "
          f"client on {'another core' if ncpu > 1 else 'the same core'}")
    ns, peer = Namespace(), Namespace()
    factory = AgentFactory()
    try:
        veth(ns, "va", peer, "vb", "10.231.9.1/24", "10.231.9.2/24")
        r = Receiver(udp_socket("127.0.0.1", ns.name))
        port = free_udp_port(netns=ns.name)
        agent = factory(f"sflow {{\n polling = 30\n sampling = 1\n json {{ udpport = {port} }}\n"
                        f" collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n}}\n",
                        netns=ns.name, start=False)
        agent.command = (lambda cmd=agent.command: ["taskset", "-c", "0"] + cmd())
        agent.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "json: listening" not in agent.stderr():
            time.sleep(0.05)
        client_cpu = "1" if ncpu > 1 else "0"
        for name, msg, cls in (("rtmetric", RTMETRIC, RtMetric),
                               ("flow_sample (every one sampled)", TRANSACTION, FlowSample),
                               ("counter_sample", COUNTERS, CountersSample)):
            r.drain()
            cpu0 = proc_cpu_seconds(agent.pid)
            t0 = time.monotonic()
            client = ns.popen(["taskset", "-c", client_cpu, sys.executable, "-c", CLIENT,
                               str(port), str(seconds), json.dumps(msg)],
                              stdout=subprocess.PIPE, text=True)
            got = r.collect(seconds + 1.5)
            sent = int(client.communicate(timeout=30)[0])
            elapsed = time.monotonic() - t0
            cpu = proc_cpu_seconds(agent.pid) - cpu0
            out = samples_in(got, cls, kind="app")
            print(f"   {name:32s} sent {sent / seconds:9,.0f}/s  out {out / seconds:9,.0f}/s  "
                  f"agent CPU {100 * cpu / elapsed:5.1f}% of one core  "
                  f"({cpu / max(out, 1) * 1e6:.1f} us per message)")
        rss = open(f"/proc/{agent.pid}/status").read().split("VmHWM:")[1].split()[0]
        print(f"   peak resident memory {int(rss) / 1024:.1f} MB")
    finally:
        factory.close()
        ns.delete()
        peer.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"bench_json: Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPU(s)")
    in_process()
    if os.geteuid() == 0:
        agent_process(args.seconds)
    else:
        print("2. skipped: namespaces need root")
    return 0


if __name__ == "__main__":
    sys.exit(main())
