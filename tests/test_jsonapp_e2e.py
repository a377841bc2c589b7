"""json { } end to end: the agent as a real process in a test namespace (it gives up root:
nobody, plus CAP_NET_BIND_SERVICE for a port under 1024), and an application that is a
process of its own (tests/jsonclient.py) sending hsflowd's JSON messages to it over
loopback.  The collector is a UDP socket in the same namespace; the structures are read
with this project's decoder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentproc import (agents, assert_holds, assert_idle, free_udp_port,  # noqa: F401
                       proc_memory_kb, receivers, samples_from, settled)
from hsflowd.sflow import (AppOperation, AppOperations, AppResources, AppWorkers,
                           CountersSample, FlowSample, HostParent, RtFlow, RtMetric)
from netns import veth

pytestmark = pytest.mark.netns

CLIENT = str(Path(__file__).with_name("jsonclient.py"))
HOST = (2, 1)


@pytest.fixture
def ns(netns):
    ns, peer = netns(), netns()
    veth(ns, "va", peer, "vb", a_addr="10.78.0.1/24", b_addr="10.78.0.2/24")
    return ns


def client(ns, host, port, messages, repeat=1, timeout=60):
    """Run the application: send each message (a dict, or bytes as they are)."""
    lines = b"\n".join(m if isinstance(m, bytes) else json.dumps(m).encode() for m in messages)
    out = ns.run([sys.executable, CLIENT, host, str(port), str(repeat)], input=lines.decode(
        "latin-1"), timeout=timeout, encoding="latin-1")
    return int(out.stdout)


def samples(received, cls):
    return [s for r in received for s in r.datagram.samples if isinstance(s, cls)]


RTMETRIC = {"rtmetric": {"datasource": "web1", "hits": {"type": "counter32", "value": 777},
                         "ver": {"type": "string", "value": "2.1"},
                         "load": {"type": "gaugeFloat", "value": 0.5}}}
RTFLOW = {"rtflow": {"datasource": "web1", "sampling_rate": 10,
                     "src": {"type": "ip", "value": "10.1.2.3"},
                     "mac": {"type": "mac", "value": "020304050607"},
                     "bytes": {"type": "int64", "value": 12345678901}}}
COUNTERS = {"counter_sample": {"app_name": "shop", "service_port": 8080,
                               "app_operations": {"success": 10, "not_found": 2},
                               "app_resources": {"mem_used": 2 ** 33, "fd_open": 12},
                               "app_workers": {"workers_active": 3, "workers_max": 8}}}
TRANSACTION = {"flow_sample": {"app_name": "shop", "service_port": 8080, "client": True,
                               "app_operation": {"operation": "checkout", "attributes": "cart=3",
                                                 "status_descr": "ok", "status": 0,
                                                 "req_bytes": 100, "resp_bytes": 2000,
                                                 "uS": 1500},
                               "extended_socket_ipv4": {"protocol": 6, "local_ip": "10.78.0.1",
                                                        "remote_ip": "10.78.0.2",
                                                        "local_port": 40000,
                                                        "remote_port": 443}}}


def test_messages_become_sflow(ns, agents, receivers):
    r = receivers(netns=ns.name)
    port = free_udp_port(netns=ns.name)
    agent = agents(f"sflow {{\n polling = 1\n sampling = 1\n json {{ udpport = {port} }}\n"
                   f" collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n}}\n", netns=ns.name)
    assert agent.wait_for_log(f"json: listening on 127.0.0.1 and ::1 port {port}", 10), \
        agent.stderr()
    assert "running as nobody with no capabilities" in agent.stderr()
    assert client(ns, "127.0.0.1", port, [RTMETRIC, RTFLOW, COUNTERS, b"{not json", b"[1]"]) == 5
    assert client(ns, "::1", port, [TRANSACTION]) == 1
    got = r.collect(10, until=lambda g: samples(g, RtMetric) and samples(g, RtFlow)
                    and any(s.source_id_type == 3 for s in samples(g, CountersSample))
                    and any(s.source_id_type == 3 for s in samples(g, FlowSample)))

    (metric,) = samples(got, RtMetric)
    assert metric.datasource == "web1"
    assert [(f.name, f.type, f.value) for f in metric.metrics] == [
        ("hits", 1, 777), ("ver", 0, "2.1"), ("load", 5, 0.5)]
    (flow,) = samples(got, RtFlow)
    assert (flow.datasource, flow.sampling_rate) == ("web1", 10)
    assert [(f.name, str(f.value) if f.type == 2 else f.value) for f in flow.fields] == [
        ("src", "10.1.2.3"), ("mac", bytes.fromhex("020304050607")), ("bytes", 12345678901)]

    (counters,) = [s for s in samples(got, CountersSample) if s.source_id_type == 3]
    assert (counters.source_id_index, counters.sequence_number) == (8080, 1)
    parent, workers, resources, ops = counters.counters
    assert parent == HostParent(container_type=2, container_index=1)
    assert isinstance(workers, AppWorkers) and (workers.workers_active, workers.workers_max) == \
        (3, 8)
    assert isinstance(resources, AppResources) and resources.mem_used == 2 ** 33
    assert isinstance(ops, AppOperations) and (ops.application, ops.success, ops.not_found) == \
        ("shop", 10, 2)

    (txn,) = [s for s in samples(got, FlowSample) if s.source_id_type == 3]
    assert (txn.source_id_index, txn.sampling_rate, txn.sample_pool) == (8080, 1, 1)
    assert (txn.input, txn.output) == (0x3FFFFFFF, 0)            # the client side
    sock, op = txn.flow_records
    assert (str(sock.local_ip), sock.remote_port) == ("10.78.0.1", 443)
    assert isinstance(op, AppOperation)
    assert (op.context.application, op.context.operation, op.context.attributes) == (
        "shop", "checkout", "cart=3")
    assert (op.status_descr, op.req_bytes, op.resp_bytes, op.uS, op.status) == (
        "ok", 100, 2000, 1500, 0)

    assert agent.wait_for_log("json: 2 bad message(s)", 10) or \
        agent.wait_for_log("json: 1 bad message(s)", 0), agent.stderr()
    assert "Traceback" not in agent.stderr()


def test_a_port_under_1024_keeps_cap_net_bind_service(ns, agents, receivers):
    r = receivers(netns=ns.name)
    agent = agents(f"sflow {{\n polling = 1\n json {{ udpport = 999 }}\n"
                   f" collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n}}\n", netns=ns.name)
    assert agent.wait_for_log("json: listening on 127.0.0.1 and ::1 port 999", 10), agent.stderr()
    assert "running as nobody with CAP_NET_BIND_SERVICE" in agent.stderr()
    client(ns, "127.0.0.1", 999, [RTMETRIC])
    assert samples(r.collect(10, until=lambda g: samples(g, RtMetric)), RtMetric)


def test_a_flood_costs_no_memory_and_stops_nothing(ns, agents, receivers):
    r = receivers(netns=ns.name)
    port = free_udp_port(netns=ns.name)
    agent = agents(f"sflow {{\n polling = 1\n sampling = 1\n json {{ udpport = {port} }}\n"
                   f" collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n}}\n", netns=ns.name)
    assert agent.wait_for_log("json: listening", 10), agent.stderr()
    client(ns, "127.0.0.1", port, [RTMETRIC, TRANSACTION])      # warm up, then measure
    time.sleep(1)
    r.drain()
    rss_before = proc_memory_kb(agent.pid)[0]
    many = [dict(TRANSACTION, flow_sample=dict(TRANSACTION["flow_sample"], app_name=f"a{i}"))
            for i in range(50)] + [RTMETRIC, COUNTERS, b"{bad"]
    flood = subprocess.Popen(ns.prefix() + [sys.executable, CLIENT, "127.0.0.1", str(port),
                                            "3000"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    flood.stdin.write(b"\n".join(m if isinstance(m, bytes) else json.dumps(m).encode()
                                 for m in many))
    flood.stdin.close()
    during = r.collect(6)
    flood.wait(60)
    with flood.stdout:
        sent = int(flood.stdout.read())
    assert sent == 3000 * len(many)
    # the host sample kept its 1 s schedule while the flood lasted: a loop starved by the
    # flood would send fewer, with a gap as long as the flood; 3 s is three ticks
    times = [x.at for x, _ in samples_from(during, HOST)]
    assert len(times) >= 4 and max(b - a for a, b in zip(times, times[1:])) < 3.0, times
    assert len(samples(during, RtMetric)) > 100
    rss_after = proc_memory_kb(agent.pid)[0]
    assert rss_after - rss_before < 20_000, (rss_before, rss_after)   # kB
    assert agent.alive() and "Traceback" not in agent.stderr()


def test_reloads_move_the_port_and_then_close_it(ns, agents, receivers):
    r = receivers(netns=ns.name)
    p1, p2 = free_udp_port(netns=ns.name), free_udp_port(netns=ns.name)
    base = f"sflow {{\n polling = 1\n collector {{ ip = 127.0.0.1  udpport = {r.port} }}\n"
    agent = agents(base + "}\n", netns=ns.name)
    assert r.first(10) is not None
    time.sleep(0.5)
    before = settled(agent.pid)

    agent.write_config(base + f" json {{ udpport = {p1} }}\n}}\n")
    agent.signal(signal.SIGHUP)
    assert agent.wait_for_log(f"port {p1}", 10), agent.stderr()
    client(ns, "127.0.0.1", p1, [RTMETRIC])
    assert samples(r.collect(10, until=lambda g: samples(g, RtMetric)), RtMetric)

    agent.write_config(base + f" json {{ udpport = {p2} }}\n}}\n")
    agent.signal(signal.SIGHUP)
    assert agent.wait_for_log(f"port {p2}", 10), agent.stderr()
    listening = ns.run(["ss", "-Hlun"]).stdout
    assert f":{p2} " in listening and f":{p1} " not in listening
    client(ns, "127.0.0.1", p2, [RTMETRIC])
    assert samples(r.collect(10, until=lambda g: samples(g, RtMetric)), RtMetric)

    agent.write_config(base + "}\n")
    agent.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f":{p2} " in ns.run(["ss", "-Hlun"]).stdout:
        time.sleep(0.1)
    assert f":{p2} " not in ns.run(["ss", "-Hlun"]).stdout
    assert_holds(agent.pid, before)
    assert_idle(agent.pid, 2.0, context=agent.stderr)   # a host sample a second, no more
